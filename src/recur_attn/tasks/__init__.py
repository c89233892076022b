"""LightningModules: loss, metrics and logging for one family of jobs."""

from recur_attn.tasks.base import BaseTask
from recur_attn.tasks.sequence import SequenceTask

__all__ = ["BaseTask", "SequenceTask"]
from recur_attn.tasks.seq2seq import Seq2SeqTask  # noqa: E402

__all__ += ["Seq2SeqTask"]
from recur_attn.tasks.density import DensityTask  # noqa: E402
from recur_attn.tasks.charlm import CharLMTask  # noqa: E402

__all__ += ["DensityTask", "CharLMTask"]
