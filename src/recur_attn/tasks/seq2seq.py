"""Sequence-to-sequence training: teacher forcing, decoding, exact match, BLEU, attention maps.

Batches as :mod:`recur_attn.data.translation` documents them. The net is a
:class:`~recur_attn.models.Seq2Seq` (or anything with its ``forward``,
``greedy``, ``beam_search`` and ``align``).

Logged:
  ``train/loss``, ``val/loss``, ``test/loss``: token cross-entropy (teacher forcing);
  ``{val,test}/acc``: exact match, the fraction of sentences decoded exactly
  (greedy, or beam search with ``beam_size`` > 1), with ``val/acc_best``;
  ``{val,test}/bleu4``: corpus BLEU-4 on the detokenised strings (torchmetrics'
  SacreBLEUScore, 13a tokenisation), on the 0-100 scale, with ``val/bleu4_best``.

Each validation epoch the first ``num_attention_plots`` examples of the first
validation batch (a fixed set: the validation loader does not shuffle) are
decoded and their attention maps saved as
``{output dir}/attention/epoch=NNN-ex=I.png`` and sent to the TensorBoard and
wandb loggers when present. The test pass writes ``test_predictions.tsv``
(source, reference, hypothesis, source length in words) beside them, which
``scripts/plot_bleu_vs_length.py`` reads.

Checkpoints carry what ``recur-attn-translate`` needs: the net's
constructor arguments and the tokenizers (``checkpoint["seq2seq"]``).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.text import SacreBLEUScore

from recur_attn.tasks.base import BaseTask

METRICS = ("acc", "bleu4")


def strip_ids(ids: Sequence[int], eos_id: int, pad_id: int) -> list[int]:
    """Token ids up to (not including) the first eos; pads dropped."""
    out = []
    for i in ids:
        i = int(i)
        if i == eos_id:
            break
        if i != pad_id:
            out.append(i)
    return out


class Seq2SeqTask(BaseTask):
    """Args:
        net, optimizer, scheduler, scheduler_monitor, scheduler_interval, compile: see BaseTask.
        metrics: a subset of ("acc", "bleu4").
        beam_size: 1 = greedy decoding for the metrics, else beam search.
        alpha: the beam search's length penalty exponent.
        max_len: the longest decoded output; null: 2 * source length + 10.
        label_smoothing: of the training cross-entropy.
        num_attention_plots: attention maps drawn each validation epoch (0: none).
    """

    def __init__(self, net: nn.Module, optimizer: Callable[..., torch.optim.Optimizer],
                 scheduler: Callable[..., Any] | None = None, metrics: Sequence[str] = ("acc",),
                 beam_size: int = 1, alpha: float = 0.0, max_len: int | None = None,
                 label_smoothing: float = 0.0, num_attention_plots: int = 3,
                 scheduler_monitor: str = "val/loss", scheduler_interval: str = "epoch",
                 compile: bool = False) -> None:
        super().__init__(net, optimizer, scheduler, scheduler_monitor, scheduler_interval, compile)
        metrics = [str(m) for m in metrics]  # a plain list (not Hydra's ListConfig) in the hparams
        # the partials are not saved: checkpoints stay loadable with weights_only=True
        self.save_hyperparameters(logger=False, ignore=["net", "optimizer", "scheduler"])
        metrics = tuple(metrics)
        bad = [m for m in metrics if m not in METRICS]
        if bad:
            raise ValueError(f"unknown metrics {bad}; valid: {', '.join(METRICS)}")
        if int(beam_size) < 1:
            raise ValueError(f"beam_size must be >= 1, got {beam_size}")
        self.metric_names = metrics
        self.beam_size, self.alpha = int(beam_size), float(alpha)
        self.max_len = None if max_len is None else int(max_len)
        self.label_smoothing = float(label_smoothing)
        self.num_attention_plots = int(num_attention_plots)
        for split in ("train", "val", "test"):
            setattr(self, f"{split}_loss", MeanMetric())
        self.val_acc, self.test_acc = MeanMetric(), MeanMetric()
        self.val_bleu, self.test_bleu = SacreBLEUScore(n_gram=4, tokenize="13a"), SacreBLEUScore(n_gram=4, tokenize="13a")
        self.val_acc_best, self.val_bleu_best = MaxMetric(), MaxMetric()
        self._plot_batch: dict[str, Tensor] | None = None
        self._test_rows: list[tuple[int, str, str, str]] = []

    # ---- helpers -------------------------------------------------------------
    @property
    def pad_id(self) -> int:
        return int(self.net.pad_id)

    @property
    def eos_id(self) -> int:
        return int(self.net.eos_id)

    def _tokenizers(self):
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        src, tgt = getattr(dm, "src_tokenizer", None), getattr(dm, "tgt_tokenizer", None)
        if src is None or tgt is None:
            raise ValueError("Seq2SeqTask needs a data module with `src_tokenizer` and `tgt_tokenizer` "
                             "(recur_attn.data.translation) for BLEU, attention maps and checkpoints")
        return src, tgt

    def forward(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor):
        return self.net(src, src_lengths, tgt_in)

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        logits, _ = self.net(batch["src"], batch["src_lengths"], batch["tgt_in"])  # (B, T, V)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["tgt_out"].reshape(-1),
                               ignore_index=self.pad_id, label_smoothing=self.label_smoothing)

    def decode(self, src: Tensor, src_lengths: Tensor) -> Tensor:
        """(B, L) decoded ids (eos, then pad)."""
        max_len = self.max_len if self.max_len is not None else int(src_lengths.max()) * 2 + 10
        return self.net.generate(src, src_lengths, beam_size=self.beam_size, max_len=max_len, alpha=self.alpha)

    # ---- steps ---------------------------------------------------------------
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self.loss(batch)
        n = batch["src"].shape[0]
        self.train_loss(loss.detach(), n)
        self.log("train/loss", self.train_loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=n)
        return loss

    def _eval_step(self, batch: dict[str, Tensor], split: str) -> None:
        n = batch["src"].shape[0]
        loss = self.loss(batch)
        getattr(self, f"{split}_loss")(loss, n)
        self.log(f"{split}/loss", getattr(self, f"{split}_loss"), on_epoch=True, prog_bar=True, batch_size=n)
        hyp = self.decode(batch["src"], batch["src_lengths"])
        hyps = [strip_ids(h, self.eos_id, self.pad_id) for h in hyp.tolist()]
        refs = [strip_ids(r, self.eos_id, self.pad_id) for r in batch["tgt_out"].tolist()]
        if "acc" in self.metric_names:
            exact = torch.tensor([float(h == r) for h, r in zip(hyps, refs)], device=self.device)
            getattr(self, f"{split}_acc")(exact)
        need_text = "bleu4" in self.metric_names or split == "test"
        if need_text:
            src_tok, tgt_tok = self._tokenizers()
            hyp_txt = [tgt_tok.decode(h) for h in hyps]
            ref_txt = [tgt_tok.decode(r) for r in refs]
            if "bleu4" in self.metric_names:
                getattr(self, f"{split}_bleu").update(hyp_txt, [[r] for r in ref_txt])
            if split == "test":
                for b in range(n):
                    s = src_tok.decode(batch["src"][b, : int(batch["src_lengths"][b])].tolist())
                    self._test_rows.append((int(batch["index"][b]), s, ref_txt[b], hyp_txt[b]))

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        if batch_idx == 0 and self.num_attention_plots > 0:
            k = self.num_attention_plots
            self._plot_batch = {key: v[:k].detach() for key, v in batch.items()}
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    # ---- epoch ends ------------------------------------------------------------
    def on_train_start(self) -> None:
        super().on_train_start()  # the best-so-far metrics (clean, or from a resumed checkpoint)
        # Lightning's sanity check runs validation first
        for m in (self.val_loss, self.val_acc, self.val_bleu):
            m.reset()

    def _epoch_metrics(self, split: str) -> None:
        if "acc" in self.metric_names:
            acc = getattr(self, f"{split}_acc").compute()
            self.log(f"{split}/acc", acc, prog_bar=True)
            getattr(self, f"{split}_acc").reset()
            if split == "val":
                self.val_acc_best(acc)
                self.log("val/acc_best", self.val_acc_best.compute())
        if "bleu4" in self.metric_names:
            bleu = getattr(self, f"{split}_bleu").compute() * 100.0
            self.log(f"{split}/bleu4", bleu, prog_bar=True)
            getattr(self, f"{split}_bleu").reset()
            if split == "val":
                self.val_bleu_best(bleu)
                self.log("val/bleu4_best", self.val_bleu_best.compute())

    def on_validation_epoch_end(self) -> None:
        self._epoch_metrics("val")
        if self._plot_batch is not None and not self.trainer.sanity_checking:
            self.plot_attention_maps(self._plot_batch)

    def on_test_epoch_start(self) -> None:
        self._test_rows = []

    def on_test_epoch_end(self) -> None:
        self._epoch_metrics("test")
        out = self.output_dir()
        if out is not None and self._test_rows and self.trainer.is_global_zero:
            out.mkdir(parents=True, exist_ok=True)
            with open(out / "test_predictions.tsv", "w", encoding="utf-8", newline="") as f:
                w = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
                w.writerow(["index", "src_words", "source", "reference", "hypothesis"])
                for i, s, r, h in sorted(self._test_rows):
                    w.writerow([i, len(s.split()), s, r, h])

    # ---- attention maps --------------------------------------------------------
    def output_dir(self) -> Path | None:
        if self._trainer is None:
            return None
        return Path(self.trainer.default_root_dir)

    @torch.no_grad()
    def plot_attention_maps(self, batch: dict[str, Tensor]) -> list[Path]:
        """Decode the examples of ``batch``, draw their attention maps, save and log them."""
        if getattr(self.net, "attention", None) is None:
            return []
        import matplotlib.pyplot as plt

        from recur_attn.utils.attention_plot import plot_attention

        src_tok, tgt_tok = self._tokenizers()
        src, lengths = batch["src"], batch["src_lengths"]
        hyp = self.decode(src, lengths)  # (k, L)
        att = self.net.align(src, lengths, hyp)  # (k, L, S)
        out_dir = self.output_dir()
        paths = []
        step, epoch = self.global_step, self.current_epoch
        for i in range(src.shape[0]):
            s_ids = src[i, : int(lengths[i])].tolist()
            h_ids = hyp[i].tolist()
            n = len(strip_ids(h_ids, self.eos_id, self.pad_id)) + (1 if self.eos_id in h_ids else 0)
            n = max(n, 1)
            fig = plot_attention(att[i, :n, : len(s_ids)].float().cpu().numpy(), src_tok.tokens(s_ids),
                                 tgt_tok.tokens(h_ids[:n]), title=f"epoch {epoch}: {tgt_tok.decode(h_ids)}")
            path = None
            if out_dir is not None:
                path = out_dir / "attention" / f"epoch={epoch:03d}-ex={i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                fig.savefig(path, dpi=100)
                paths.append(path)
            for lg in self.loggers:
                name = type(lg).__name__
                if name == "TensorBoardLogger":
                    lg.experiment.add_figure(f"attention/val{i}", fig, global_step=step)
                elif name == "WandbLogger" and path is not None:
                    lg.log_image(key=f"attention/val{i}", images=[str(path)], step=step)
            plt.close(fig)
        return paths

    # ---- checkpoints -----------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        net = getattr(self.net, "_orig_mod", self.net)
        info: dict[str, Any] = {"net_config": dict(getattr(net, "config", {}))}
        try:
            src_tok, tgt_tok = self._tokenizers()
            info["src_tokenizer"], info["tgt_tokenizer"] = src_tok.to_dict(), tgt_tok.to_dict()
        except (ValueError, RuntimeError):
            pass  # saved without a data module: no tokenizers to store
        checkpoint["seq2seq"] = info
