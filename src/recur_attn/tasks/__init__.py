"""LightningModules: loss, metrics and logging for one family of jobs."""

from recur_attn.tasks.base import BaseTask
from recur_attn.tasks.captioning import CaptioningTask
from recur_attn.tasks.charlm import CharLMTask
from recur_attn.tasks.density import DensityTask
from recur_attn.tasks.seq2seq import Seq2SeqTask
from recur_attn.tasks.sequence import SequenceTask

__all__ = ["BaseTask", "CaptioningTask", "CharLMTask", "DensityTask", "Seq2SeqTask", "SequenceTask"]
