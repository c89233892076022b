"""Fast fused whole-sequence kernels for every cell of the zoo (``Recurrent(impl="fused")``).

:func:`forward_fused` runs a :class:`~recur_attn.layers.Recurrent` (stacked,
bidirectional, padded) with one hand-written :class:`torch.autograd.Function`
per layer and direction, from the family modules :mod:`.lstm`, :mod:`.gru`,
:mod:`.rnn`. :func:`supports` says which cells have a kernel. The backward
passes overwrite their saved buffers and run once; forwards inside
:func:`reusable_backward` allow ``retain_graph=True`` and gradcheck.
"""

from .common import reusable_backward
from .driver import FUSED_CELLS, forward_fused, supports

__all__ = ["FUSED_CELLS", "forward_fused", "reusable_backward", "supports"]
