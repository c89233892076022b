"""Image captioning (Show, Attend and Tell): loss, BLEU, attention localisation
and per-word attention pictures.

Batches come from :mod:`recur_attn.data.captions` (``images``, ``captions``,
``lengths``, ``index``, and for the shapes scenes ``boxes`` / ``objects``); the
network is a :class:`~recur_attn.models.captioner.ShowAttendTell`.

Logged: ``train/loss`` (NLL + lambda * doubly stochastic penalty, + REINFORCE
terms for hard attention), ``train/nll``, ``{val,test}/loss``,
``{val,test}/nll``, ``{val,test}/bleu1..bleu4`` (torchmetrics' BLEUScore over
all reference captions of each image; validation decodes with
``val_beam_size``, test with ``beam_size``) and, when the batches carry boxes
and the network attends, ``{val,test}/loc``: the fraction of object words
(the colour and the shape word of a phrase that names an object of the
image) whose attention peak (the centre of the arg-max grid cell) lies in that
object's box, with ``{val,test}/loc_chance``: the fraction of grid-cell
centres inside those boxes (what a uniformly random peak would score).

At the end of every validation epoch the first ``num_overlays`` validation
images are captioned and drawn with the attention of every word (Xu et al.
2015, Fig. 2 style) into ``<default_root_dir>/attention/`` as PNG, and logged to
TensorBoard and wandb when those loggers are in use.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.text import BLEUScore

from recur_attn.tasks.base import BaseTask

log = logging.getLogger(__name__)

__all__ = ["CaptioningTask", "attention_figure", "attention_localisation"]

COLOUR_WORDS = ("red", "green", "blue", "yellow", "magenta", "cyan")  # recur_attn.data.captions.COLOURS
SHAPE_WORDS = ("circle", "square", "triangle")  # recur_attn.data.captions.SHAPES


def attention_localisation(tokens: Tensor, alphas: Tensor, boxes: Tensor, objects: Tensor, itos: Sequence[str],
                           grid: int, image_size: int) -> tuple[int, int, float]:
    """Score the attention of decoded shapes captions.

    tokens (B, T) and alphas (B, T, L=grid^2) of the emitted words; boxes
    (B, M, 4) (x0, y0, x1, y1, x1/y1 exclusive) and objects (B, M, 2) (colour,
    shape index; -1 when absent). A phrase "<colour> <shape>" that names an
    object of the image contributes two object words; each is a hit when the
    centre of its attention's arg-max cell lies inside the object's box.
    Returns (hits, words, chance_sum) with chance_sum the summed fraction of
    cell centres inside the box of each scored word.
    """
    B, T = tokens.shape
    cell = image_size / grid
    centres = (torch.arange(grid, dtype=torch.float) + 0.5) * cell  # (G,)
    cy, cx = centres.repeat_interleave(grid), centres.repeat(grid)  # row-major (L,)
    hits = words = 0
    chance = 0.0
    toks = tokens.tolist()
    peaks = alphas.argmax(-1).cpu()  # (B, T)
    for b in range(B):
        objs = {(int(c), int(s)): k for k, (c, s) in enumerate(objects[b].tolist()) if c >= 0}
        for t in range(1, T):
            w_prev, w = itos[toks[b][t - 1]], itos[toks[b][t]]
            if w_prev not in COLOUR_WORDS or w not in SHAPE_WORDS:
                continue
            k = objs.get((COLOUR_WORDS.index(w_prev), SHAPE_WORDS.index(w)))
            if k is None:  # a phrase naming no object of the image: nothing to localise
                continue
            x0, y0, x1, y1 = boxes[b, k].tolist()
            inside = (cx >= x0) & (cx < x1) & (cy >= y0) & (cy < y1)  # (L,)
            for tt in (t - 1, t):
                p = int(peaks[b, tt])
                hits += int(inside[p])
                words += 1
                chance += float(inside.float().mean())
    return hits, words, chance


def attention_figure(image: Tensor, words: Sequence[str], alphas: Tensor, grid: int, title: str | None = None):
    """A matplotlib figure: the image, then one panel a word with its attention
    (upsampled bilinearly from the grid) over the image. image (3, H, W) in
    [0, 1]; alphas (len(words), grid^2)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    H, W = image.shape[1:]
    n = len(words) + 1
    cols = min(n, 6)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.0 * cols, 2.2 * rows), squeeze=False)
    img = image.permute(1, 2, 0).clamp(0, 1).cpu().numpy()
    for ax in axes.flat:
        ax.axis("off")
    axes.flat[0].imshow(img)
    axes.flat[0].set_title(title or "image", fontsize=8)
    if len(words):
        maps = alphas.reshape(-1, 1, grid, grid).float().cpu()
        up = torch.nn.functional.interpolate(maps, size=(H, W), mode="bilinear", align_corners=False)[:, 0]
        for k, w in enumerate(words):
            ax = axes.flat[k + 1]
            ax.imshow(img)
            a = up[k]
            ax.imshow((a / a.max().clamp_min(1e-12)).numpy(), cmap="gray", alpha=0.6, extent=(0, W, H, 0))
            ax.set_title(w, fontsize=9)
    fig.tight_layout()
    return fig


class CaptioningTask(BaseTask):
    """Trains a Show-Attend-Tell network.

    Args:
        net, optimizer, scheduler, scheduler_monitor, scheduler_interval, compile:
            see :class:`~recur_attn.tasks.base.BaseTask`.
        beam_size: beams for the test captions (and the overlays).
        val_beam_size: beams for the validation captions (1: greedy, quicker).
        length_penalty: GNMT's alpha for the beam ranking.
        max_decode_len: the longest caption decoded.
        num_overlays: validation images drawn with their attention each epoch (0: none).
    """

    def __init__(self, net: nn.Module, optimizer: Callable[..., torch.optim.Optimizer],
                 scheduler: Callable[..., Any] | None = None, beam_size: int = 3, val_beam_size: int = 1,
                 length_penalty: float = 1.0, max_decode_len: int = 20, num_overlays: int = 4,
                 scheduler_monitor: str = "val/loss", scheduler_interval: str = "epoch",
                 compile: bool = False) -> None:
        super().__init__(net, optimizer, scheduler, scheduler_monitor, scheduler_interval, compile)
        for name, v in (("beam_size", beam_size), ("val_beam_size", val_beam_size),
                        ("max_decode_len", max_decode_len)):
            if int(v) < 1:
                raise ValueError(f"{name} must be >= 1, got {v!r}")
        self.save_hyperparameters(logger=False, ignore=["net", "optimizer", "scheduler"])
        self.beam_size, self.val_beam_size = int(beam_size), int(val_beam_size)
        self.length_penalty, self.max_decode_len = float(length_penalty), int(max_decode_len)
        self.num_overlays = int(num_overlays)
        self.train_loss = MeanMetric()
        # the loss's parts, epoch means through metrics (a run resumed mid-epoch keeps their states: BaseTask)
        self.train_parts = nn.ModuleDict({k: MeanMetric() for k in ("nll", "doubly_stochastic", "reinforce", "entropy")})
        self.losses = nn.ModuleDict({s: MeanMetric() for s in ("val", "test")})
        self.nlls = nn.ModuleDict({s: MeanMetric() for s in ("val", "test")})
        self.bleu = nn.ModuleDict({f"{s}_{n}": BLEUScore(n_gram=n) for s in ("val", "test") for n in (1, 2, 3, 4)})
        self.val_bleu4_best = MaxMetric()
        self._loc: dict[str, list[float]] = {}
        self.itos: list[str] | None = None
        self.image_info: dict[str, Any] = {}

    # ---- set-up and checkpoints ---------------------------------------------
    def setup(self, stage: str) -> None:
        super().setup(stage)
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is not None and getattr(dm, "vocab", None) is not None:
            self.itos = list(dm.vocab.itos)
            self.image_info = {"image_size": int(dm.image_size), "mean": list(dm.mean), "std": list(dm.std)}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        net = getattr(self.net, "_orig_mod", self.net)
        checkpoint["captioning"] = {"net_config": dict(net.config), "itos": self.itos, **self.image_info}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        info = checkpoint.get("captioning") or {}
        self.itos = info.get("itos", self.itos)

    # ---- steps ----------------------------------------------------------------
    def _forward_loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        out = self.net(batch["images"], batch["captions"], batch["lengths"])
        return self.net.loss(out)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        res = self._forward_loss(batch)
        self.train_loss(res["loss"].detach())
        self.log("train/loss", self.train_loss, on_step=True, on_epoch=True, prog_bar=True)
        for k, m in self.train_parts.items():
            if k in res:
                m(res[k].detach())
                self.log(f"train/{k}", m, on_step=True, on_epoch=True)
        return res["loss"]

    def _decode(self, images: Tensor, beam: int) -> dict[str, Tensor]:
        if beam == 1:
            return self.net.greedy(images, max_len=self.max_decode_len)
        return self.net.beam_search(images, beam_size=beam, max_len=self.max_decode_len,
                                    length_penalty=self.length_penalty)

    def _words(self, ids: Sequence[int]) -> list[str]:
        if self.itos is None:
            raise ValueError("CaptioningTask has no vocabulary: train with a caption data module, or load a "
                             "checkpoint written by this task")
        out = []
        for i in ids:
            if i == 2:  # <end>
                break
            if i > 2:
                out.append(self.itos[i])
        return out

    def _eval_step(self, batch: dict[str, Tensor], split: str) -> None:
        res = self._forward_loss(batch)
        self.losses[split](res["loss"])
        self.nlls[split](res["nll"])
        dec = self._decode(batch["images"], self.val_beam_size if split == "val" else self.beam_size)
        refs_all = self.trainer.datamodule.references(split)
        preds = [" ".join(self._words(row)) for row in dec["tokens"].tolist()]
        refs = [[" ".join(r) for r in refs_all[i]] for i in batch["index"].tolist()]
        for n in (1, 2, 3, 4):
            self.bleu[f"{split}_{n}"].update(preds, refs)
        if "boxes" in batch and getattr(self.net, "attention_kind", "soft") != "mean":
            hits, words, chance = attention_localisation(dec["tokens"], dec["alphas"], batch["boxes"],
                                                         batch["objects"], self.itos, self.net.encoder.grid,
                                                         batch["images"].shape[-1])
            acc = self._loc.setdefault(split, [0.0, 0.0, 0.0])
            acc[0] += hits
            acc[1] += words
            acc[2] += chance

    def _eval_epoch_end(self, split: str) -> None:
        self.log(f"{split}/loss", self.losses[split].compute(), prog_bar=split == "val")
        self.log(f"{split}/nll", self.nlls[split].compute())
        self.losses[split].reset()
        self.nlls[split].reset()
        for n in (1, 2, 3, 4):
            m = self.bleu[f"{split}_{n}"]
            value = m.compute()
            self.log(f"{split}/bleu{n}", value, prog_bar=(n == 4))
            m.reset()
            if split == "val" and n == 4 and not self.trainer.sanity_checking:
                self.val_bleu4_best(value)
                self.log("val/bleu4_best", self.val_bleu4_best.compute())
        counts = torch.tensor(self._loc.pop(split, [0.0, 0.0, 0.0]), dtype=torch.float64, device=self.device)
        # summed over the processes under DDP (a no-op on one device); every rank must call it
        hits, words, chance = self.trainer.strategy.reduce(counts, reduce_op="sum").tolist()
        if words:
            self.log(f"{split}/loc", hits / words, prog_bar=True)
            self.log(f"{split}/loc_chance", chance / words)

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")
        if self.num_overlays and not self.trainer.sanity_checking and self.trainer.is_global_zero:
            self.log_overlays()

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    # ---- pictures ---------------------------------------------------------------
    def unnormalize(self, images: Tensor) -> Tensor:
        mean = torch.tensor(self.image_info.get("mean", (0.0, 0.0, 0.0)), device=images.device)[:, None, None]
        std = torch.tensor(self.image_info.get("std", (1.0, 1.0, 1.0)), device=images.device)[:, None, None]
        return images * std + mean

    @torch.no_grad()
    def log_overlays(self) -> list[Path]:
        """Caption the first ``num_overlays`` validation images, save the attention
        pictures as PNG and log them to TensorBoard / wandb. Returns the paths."""
        import matplotlib.pyplot as plt
        from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger

        ds = self.trainer.datamodule.dataset("val")
        n = min(self.num_overlays, len(ds))
        if n == 0:
            return []
        items = [ds[i] for i in range(n)]
        images = torch.stack([it["images"] for it in items]).to(self.device)
        dec = self._decode(images, self.beam_size)
        out_dir = Path(self.trainer.default_root_dir) / "attention"
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        step = self.global_step
        for i in range(n):
            L = int(dec["lengths"][i])
            words = [self.itos[t] if t > 2 else "<end>" for t in dec["tokens"][i, :L].tolist()]
            fig = attention_figure(self.unnormalize(images[i]), words, dec["alphas"][i, :L], self.net.encoder.grid,
                                   title=f"val {i}, step {step}")
            path = out_dir / f"val{i}_step{step:06d}.png"
            fig.savefig(path, dpi=80)
            paths.append(path)
            for lg in self.loggers:
                if isinstance(lg, TensorBoardLogger):
                    lg.experiment.add_figure(f"attention/val{i}", fig, global_step=step)
                elif isinstance(lg, WandbLogger):
                    lg.log_image(key=f"attention/val{i}", images=[str(path)], step=step)
            plt.close(fig)
        return paths
