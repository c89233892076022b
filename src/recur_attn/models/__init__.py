"""Networks for a job (plain nn.Module): built from layers, configured by Hydra."""

from recur_attn.models.sequence import SequenceModel

__all__ = ["SequenceModel"]
from recur_attn.models.seq2seq import Seq2Seq  # noqa: E402

__all__ += ["Seq2Seq"]
from recur_attn.models.density import DensityModel  # noqa: E402
from recur_attn.models.charlm import CharLM  # noqa: E402

__all__ += ["DensityModel", "CharLM"]
from recur_attn.models.grid import FeedForwardNet, GridLSTM1D, GridLSTM2D, GridLSTM3D, GridSequenceModel  # noqa: E402

__all__ += ["FeedForwardNet", "GridLSTM1D", "GridLSTM2D", "GridLSTM3D", "GridSequenceModel"]
