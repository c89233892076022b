"""Attention maps as heatmaps: source tokens along x, target tokens along y."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_attention(weights, src_tokens: Sequence[str], tgt_tokens: Sequence[str], title: str | None = None,
                   path: str | Path | None = None):
    """weights (T, S) (rows: target tokens, columns: source tokens) -> a matplotlib Figure.

    Saved as PNG to ``path`` when given. The caller closes the figure
    (``matplotlib.pyplot.close(fig)``).
    """
    w = np.asarray(weights, dtype=float)
    if w.ndim != 2 or w.shape != (len(tgt_tokens), len(src_tokens)):
        raise ValueError(f"weights must be (T={len(tgt_tokens)}, S={len(src_tokens)}), got {w.shape}")
    S, T = len(src_tokens), len(tgt_tokens)
    fig, ax = plt.subplots(figsize=(max(3.0, 0.32 * S + 1.5), max(2.5, 0.32 * T + 1.2)))
    im = ax.imshow(w, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(S))
    ax.set_xticklabels([_label(t) for t in src_tokens], rotation=90, fontsize=8)
    ax.set_yticks(range(T))
    ax.set_yticklabels([_label(t) for t in tgt_tokens], fontsize=8)
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    if title:
        ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
    return fig


def _label(tok: str) -> str:
    return "␣" if tok == " " else tok.replace("▁", "_")
