"""Networks for a job (plain nn.Module): built from layers, configured by Hydra."""

from recur_attn.models.captioner import ImageEncoder, ShowAttendTell, SmallCNN
from recur_attn.models.charlm import CharLM
from recur_attn.models.density import DensityModel
from recur_attn.models.grid import (
    FeedForwardNet,
    GridCharLM,
    GridDensityModel,
    GridLSTM1D,
    GridLSTM2D,
    GridLSTM3D,
    GridSequenceModel,
)
from recur_attn.models.seq2seq import Seq2Seq
from recur_attn.models.sequence import SequenceModel

__all__ = ["CharLM", "DensityModel", "FeedForwardNet", "GridCharLM", "GridDensityModel", "GridLSTM1D",
           "GridLSTM2D", "GridLSTM3D", "GridSequenceModel", "ImageEncoder", "Seq2Seq", "SequenceModel",
           "ShowAttendTell", "SmallCNN"]
