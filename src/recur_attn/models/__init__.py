"""Networks for a job (plain nn.Module): built from layers, configured by Hydra."""

from recur_attn.models.sequence import SequenceModel

__all__ = ["SequenceModel"]
