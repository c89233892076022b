"""Figures of what a trained recurrent network does inside (matplotlib, Agg backend).

* :func:`plot_gate_heatmaps` -- each gate, the cell state and the hidden state of one
  example as units x steps images (the seed's walk-through: forget gate, input gate
  and candidate, cell update, output gate).
* :func:`informative_units` / :func:`marker_jump_ratio` -- which units carry the
  target: correlation of the final state with the target, and (adding problem) how
  much more a unit's cell state moves at the marked steps than elsewhere.
* :func:`plot_unit_trajectories` -- those units' state over time for a few examples.
* :func:`plot_gradient_flow` -- ||dL/dh_t|| (and ||dL/dc_t||) against t, log scale,
  for several models on one figure.
* :func:`char_features`, :func:`find_char_units`, :func:`char_html` -- for
  character models: units found by their correlation with quote marks, position in
  the line and bracket depth, and the text coloured by one unit's activation.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

__all__ = [
    "GATE_TITLES",
    "plot_gate_heatmaps",
    "informative_units",
    "marker_jump_ratio",
    "plot_unit_trajectories",
    "plot_unit_walkthrough",
    "plot_gradient_flow",
    "char_features",
    "find_char_units",
    "char_html",
    "plot_char_activations",
]

#: what each recorded quantity is, for panel titles
GATE_TITLES = {
    "i": "input gate i_t",
    "f": "forget gate f_t",
    "g": "candidate g_t = tanh(...)",
    "o": "output gate o_t",
    "d": "depth gate d_t",
    "r": "reset gate r_t",
    "z": "update gate z_t",
    "n": "candidate n_t",
    "tick": "module ticks (1 = updated)",
    "c": "cell state c_t",
    "h": "hidden state h_t",
}
#: quantities in [0, 1] (sigmoid gates and ticks); everything else is drawn on a diverging scale
UNIT_INTERVAL = {"i", "f", "o", "d", "r", "z", "tick"}
#: unbounded states, drawn with each unit (row) scaled to its own range
ROW_SCALED = {"c", "h"}
#: panel order of the heatmaps: the walk-through's (forget, input & candidate, cell update, output)
PANEL_ORDER = ("f", "i", "g", "d", "c", "o", "r", "z", "n", "tick", "h")


def _np(x) -> np.ndarray:
    if isinstance(x, Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=float)


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)  # (bbox_inches="tight" would draw everything twice)
    plt.close(fig)
    return path


def _mark_steps(ax, steps: Sequence[int], color: str = "k") -> None:
    for s in steps:
        ax.axvline(s, color=color, ls="--", lw=0.8, alpha=0.8)


def plot_gate_heatmaps(record: Mapping[str, Tensor], example: int, path: str | Path, *,
                       inputs: Tensor | None = None, markers: Sequence[int] = (), length: int | None = None,
                       unit_order: Sequence[int] | None = None, title: str = "") -> Path:
    """One image per recorded quantity (gates, then c and h): units (rows) x steps (columns).

    Args:
        record: one (layer, direction) entry of ``Recurrent.recording()``, batch-first
            tensors (B, T, H).
        example: the batch row to draw.
        inputs: (T, F) inputs of that example, drawn as line plots on top.
        markers: steps to mark with dashed lines (e.g. the adding problem's markers).
        length: the example's true length (steps past it are cut off).
        unit_order: the units to draw, in this order (e.g. the most informative
            first); default: all, in their own order.
    """
    names = [k for k, v in record.items() if isinstance(v, Tensor) and v.dim() == 3]
    names.sort(key=lambda k: PANEL_ORDER.index(k) if k in PANEL_ORDER else len(PANEL_ORDER))
    if not names:
        raise ValueError("plot_gate_heatmaps: the record holds no (B, T, H) tensors")
    B = record[names[0]].shape[0]
    if not 0 <= example < B:
        raise ValueError(f"plot_gate_heatmaps: example {example} outside the batch of {B}")
    T = length or record[names[0]].shape[1]
    rows = len(names) + (inputs is not None)
    fig, axes = plt.subplots(rows, 1, figsize=(10, 1.0 + 1.9 * rows), sharex=True, squeeze=False)
    axes = axes[:, 0]
    k = 0
    if inputs is not None:
        x = _np(inputs)[:T]
        ax = axes[0]
        for j in range(x.shape[1]):
            ax.plot(np.arange(T), x[:, j], lw=0.9, label=f"x[{j}]")
        ax.set_ylabel("input")
        ax.legend(loc="upper right", fontsize=7, ncol=min(4, x.shape[1]))
        ax.set_xlim(-0.5, T - 0.5)
        _mark_steps(ax, markers)
        # an invisible colour bar keeps this panel as wide as the images below it
        cb = fig.colorbar(matplotlib.cm.ScalarMappable(), ax=ax, fraction=0.025, pad=0.01)
        cb.ax.set_visible(False)
        k = 1
    for name in names:
        a = _np(record[name][example])[:T].T  # (H, T)
        if unit_order is not None:
            a = a[list(unit_order)]
        ax = axes[k]
        k += 1
        extra = ""
        if name in UNIT_INTERVAL:
            im = ax.imshow(a, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest",
                           extent=(-0.5, T - 0.5, a.shape[0] - 0.5, -0.5))
        else:
            if name in ROW_SCALED:
                # units differ by orders of magnitude: scale each row to its own largest |value|
                a = a / np.maximum(np.abs(a).max(1, keepdims=True), 1e-12)
                extra = " (each row scaled to its own max |value|)"
            m = max(float(np.abs(a).max()), 1e-6)
            im = ax.imshow(a, aspect="auto", cmap="RdBu_r", vmin=-m, vmax=m, interpolation="nearest",
                           extent=(-0.5, T - 0.5, a.shape[0] - 0.5, -0.5))
        cb = fig.colorbar(im, ax=ax, fraction=0.025, pad=0.01)
        cb.ax.tick_params(labelsize=7)
        ax.set_ylabel("unit")
        shown = list(unit_order) if unit_order is not None else list(range(a.shape[0]))
        ticks = list(range(0, len(shown), max(1, len(shown) // 8)))
        ax.set_yticks(ticks, [str(shown[j]) for j in ticks], fontsize=7)
        ax.set_title(GATE_TITLES.get(name, name) + extra, fontsize=9, loc="left")
        _mark_steps(ax, markers, color="w" if name in UNIT_INTERVAL else "k")
    axes[-1].set_xlabel("step t")
    height = fig.get_figheight()
    fig.subplots_adjust(left=0.07, right=0.92, bottom=0.45 / height, top=1 - 0.85 / height, hspace=0.3)
    if title:
        fig.suptitle(title, fontsize=10, y=1 - 0.1 / height, va="top")
    return _save(fig, path)


def _final(states: Tensor, lengths: Tensor | None) -> Tensor:
    """(B, T, H) -> (B, H): the state at each sequence's last true step."""
    B, T = states.shape[:2]
    last = torch.full((B,), T - 1, dtype=torch.long) if lengths is None else lengths.long().cpu() - 1
    return states.detach().cpu()[torch.arange(B), last]


def _corr_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each column of a (N, H) with each column of b (N, K) -> (H, K); 0 where constant."""
    a = a - a.mean(0)
    b = b - b.mean(0)
    na = np.sqrt((a ** 2).sum(0))
    nb = np.sqrt((b ** 2).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        c = (a.T @ b) / np.outer(na, nb)
    return np.nan_to_num(c, nan=0.0, posinf=0.0, neginf=0.0)


def informative_units(states: Tensor, target: Tensor, lengths: Tensor | None = None,
                      k: int = 4) -> tuple[list[int], np.ndarray]:
    """The k units whose state at each sequence's end correlates most with the target.

    states (B, T, H); target (B,) or (B, O) float (regression: Pearson correlation;
    with several outputs the largest over them), or (B,) int64 class labels
    (correlation with each class's one-hot column, the largest |r| over classes).
    Returns (units sorted by |r| descending, the signed r of every unit (H,)).
    """
    final = _np(_final(states, lengths))  # (B, H)
    if final.shape[0] < 3:
        raise ValueError(f"informative_units needs at least 3 examples, got {final.shape[0]}")
    if not target.is_floating_point():
        y = torch.nn.functional.one_hot(target.long().cpu()).double().numpy()  # (B, C)
    else:
        y = _np(target).reshape(final.shape[0], -1)  # (B, O)
    r = _corr_columns(final, y)  # (H, K)
    best = r[np.arange(r.shape[0]), np.abs(r).argmax(1)]  # (H,) signed
    order = np.argsort(-np.abs(best), kind="stable")
    return [int(u) for u in order[:k]], best


def marker_jump_ratio(states: Tensor, marker_steps: Tensor) -> np.ndarray:
    """How much more each unit moves at the marked steps than at the others.

    states (B, T, H); marker_steps (B, T) bool (True at the adding problem's markers).
    Returns (H,): mean |s_t - s_{t-1}| over marked steps / over unmarked steps
    (s_{-1} = 0). A unit that writes at the markers and holds in between scores >> 1.
    """
    s = states.detach().cpu().double()
    delta = (s - torch.cat([torch.zeros_like(s[:, :1]), s[:, :-1]], 1)).abs()  # (B, T, H)
    m = marker_steps.cpu().bool()
    if not bool(m.any()) or bool(m.all()):
        raise ValueError("marker_jump_ratio: marker_steps must mark some steps and leave others")
    at = delta[m].mean(0)  # (H,)
    off = delta[~m].mean(0).clamp(min=1e-12)
    return (at / off).numpy()


def plot_unit_trajectories(states: Tensor, units: Sequence[int], path: str | Path, *,
                           examples: Sequence[int] = (0,), markers: Sequence[Sequence[int]] | None = None,
                           captions: Sequence[str] | None = None, lengths: Tensor | None = None,
                           state_name: str = "c", unit_labels: Sequence[str] | None = None,
                           title: str = "") -> Path:
    """The state of ``units`` over time, one panel per example.

    states (B, T, H); markers[i]: steps to mark in example i's panel; captions[i]:
    text above it (e.g. the target); unit_labels: legend text per unit.
    """
    if not units:
        raise ValueError("plot_unit_trajectories: no units to draw")
    s = _np(states)
    n = len(examples)
    fig, axes = plt.subplots(n, 1, figsize=(10, 0.6 + 2.2 * n), sharex=True, squeeze=False)
    for row, b in enumerate(examples):
        ax = axes[row, 0]
        T = int(lengths[b]) if lengths is not None else s.shape[1]
        for j, u in enumerate(units):
            label = unit_labels[j] if unit_labels is not None else f"unit {u}"
            ax.plot(np.arange(T), s[b, :T, u], lw=1.2, label=label)
        if markers is not None:
            _mark_steps(ax, markers[row])
        ax.axhline(0.0, color="0.7", lw=0.5)
        ax.set_ylabel(f"{state_name}_t")
        ax.set_title(captions[row] if captions is not None else f"example {b}", fontsize=9, loc="left")
        if row == 0:
            ax.legend(loc="upper left", fontsize=7, ncol=min(4, len(units)))
    axes[-1, 0].set_xlabel("step t")
    height = fig.get_figheight()
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.45 / height, top=1 - 0.6 / height, hspace=0.35)
    if title:
        fig.suptitle(title, fontsize=10, y=1 - 0.08 / height, va="top")
    return _save(fig, path)


#: the panels of the walk-through: (quantities drawn together, y label)
WALKTHROUGH_PANELS = (
    (("f",), "forget gate"),
    (("i", "g", "i*g"), "write"),
    (("d",), "depth gate"),
    (("c",), "cell state"),
    (("o",), "output gate"),
    (("r", "z"), "reset / update"),
    (("n",), "candidate"),
    (("h",), "output"),
)
WALKTHROUGH_LABELS = {"f": "f_t (keep)", "i": "i_t (write gate)", "g": "g_t (candidate)",
                      "i*g": "i_t * g_t (written)", "c": "c_t", "o": "o_t", "h": "h_t = o_t * tanh(c_t)",
                      "d": "d_t", "r": "r_t", "z": "z_t", "n": "n_t"}


def plot_unit_walkthrough(record: Mapping[str, Tensor], unit: int, example: int, path: str | Path, *,
                          inputs: Tensor | None = None, markers: Sequence[int] = (), length: int | None = None,
                          title: str = "") -> Path:
    """One unit of one example, gate by gate, as line plots over time: the seed's
    walk-through (forget gate; input gate, candidate and what they write; the cell
    state; the output gate and the output) told by a trained unit.
    """
    seqs = {k: v[example, :, unit] for k, v in record.items() if isinstance(v, Tensor) and v.dim() == 3}
    if "i" in seqs and "g" in seqs:
        seqs["i*g"] = seqs["i"] * seqs["g"]
    panels = [(names, label) for names, label in WALKTHROUGH_PANELS if any(n in seqs for n in names)]
    if not panels:
        raise ValueError("plot_unit_walkthrough: the record holds no gate or state of a known name")
    T = length or next(iter(seqs.values())).shape[0]
    rows = len(panels) + (inputs is not None)
    fig, axes = plt.subplots(rows, 1, figsize=(9, 0.8 + 1.35 * rows), sharex=True, squeeze=False)
    axes = axes[:, 0]
    k = 0
    if inputs is not None:
        x = _np(inputs)[:T]
        for j in range(x.shape[1]):
            axes[0].plot(np.arange(T), x[:, j], lw=0.9, label=f"x[{j}]")
        axes[0].set_ylabel("input", fontsize=8)
        axes[0].legend(loc="upper right", fontsize=7, ncol=x.shape[1])
        _mark_steps(axes[0], markers)
        k = 1
    for names, label in panels:
        ax = axes[k]
        k += 1
        for n in names:
            if n in seqs:
                ax.plot(np.arange(T), _np(seqs[n])[:T], lw=1.3, label=WALKTHROUGH_LABELS.get(n, n))
        if all(n in UNIT_INTERVAL for n in names if n in seqs):
            ax.set_ylim(-0.05, 1.05)
        else:
            ax.axhline(0.0, color="0.7", lw=0.5)
        ax.set_ylabel(label, fontsize=8)
        ax.legend(loc="upper left", fontsize=7, ncol=3)
        _mark_steps(ax, markers)
    axes[-1].set_xlabel("step t")
    axes[-1].set_xlim(-0.5, T - 0.5)
    height = fig.get_figheight()
    fig.subplots_adjust(left=0.1, right=0.98, bottom=0.45 / height, top=1 - 0.55 / height, hspace=0.15)
    if title:
        fig.suptitle(title, fontsize=10, y=1 - 0.08 / height, va="top")
    return _save(fig, path)


def plot_gradient_flow(curves: Sequence[tuple[str, Tensor, Tensor | None]], path: str | Path, *,
                       title: str = "", ylabel: str = "mean over the batch") -> Path:
    """||dL/dh_t|| (solid) and ||dL/dc_t|| (dashed) against t, log scale, one colour per model.

    curves: (label, h_curve (T,), c_curve (T,) or None) per model.
    """
    if not curves:
        raise ValueError("plot_gradient_flow: no curves")
    fig, ax = plt.subplots(figsize=(8, 4.5))
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.12, top=0.92)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for j, (label, h, c) in enumerate(curves):
        color = colors[j % len(colors)]
        h = _np(h)
        floor = 1e-30  # log scale: exact zeros (no gradient at all) are drawn at the floor
        ax.semilogy(np.arange(len(h)), np.maximum(h, floor), color=color, lw=1.5, label=f"{label}: ||dL/dh_t||")
        if c is not None:
            c = _np(c)
            ax.semilogy(np.arange(len(c)), np.maximum(c, floor), color=color, lw=1.5, ls="--",
                        label=f"{label}: ||dL/dc_t||")
    ax.set_xlabel("step t (the loss is read at the end)")
    ax.set_ylabel(f"gradient norm ({ylabel})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or "gradient flow through time", fontsize=10)
    return _save(fig, path)


# ---------------------------------------------------------------------------- characters
def char_features(text: str) -> dict[str, np.ndarray]:
    """Per-character features a unit may track (Karpathy, Johnson & Fei-Fei 2015):

    * ``inside_quotes``: 1 between an opening and a closing double quote (the quotes included);
    * ``line_position``: characters since the last newline;
    * ``bracket_depth``: open (, [ and { minus closed ones so far (never below 0).
    """
    n = len(text)
    quote = np.zeros(n)
    line = np.zeros(n)
    depth = np.zeros(n)
    inside, pos, d = False, 0, 0
    for k, ch in enumerate(text):
        if ch == '"':
            inside = not inside
            quote[k] = 1.0
        else:
            quote[k] = float(inside)
        line[k] = pos
        pos = 0 if ch == "\n" else pos + 1
        if ch in "([{":
            d += 1
        depth[k] = d
        if ch in ")]}":
            d = max(0, d - 1)
    return {"inside_quotes": quote, "line_position": line, "bracket_depth": depth}


def find_char_units(acts: Tensor, features: Mapping[str, np.ndarray]) -> dict[str, tuple[int, float]]:
    """For each feature, the unit whose activation correlates most with it.

    acts (N, H) activations at each of N characters. Features constant over the text
    (e.g. no quote mark in it) are left out. Returns {feature: (unit, signed r)}.
    """
    a = _np(acts)
    out = {}
    for name, f in features.items():
        f = np.asarray(f, dtype=float)
        if f.shape[0] != a.shape[0]:
            raise ValueError(f"feature {name!r} has {f.shape[0]} values for {a.shape[0]} characters")
        if np.ptp(f) == 0:
            continue
        r = _corr_columns(a, f[:, None])[:, 0]
        u = int(np.abs(r).argmax())
        out[name] = (u, float(r[u]))
    return out


def _rgb(v: float) -> str:
    """v in [-1, 1] -> a blue (negative) / white / red (positive) background."""
    v = float(np.clip(v, -1.0, 1.0))
    if v >= 0:
        g = int(255 * (1 - v))
        return f"rgb(255,{g},{g})"
    g = int(255 * (1 + v))
    return f"rgb({g},{g},255)"


def char_html(text: str, sections: Sequence[tuple[str, np.ndarray]], title: str = "") -> str:
    """An HTML page: the text once per section, each character's background coloured by
    the section's activation in [-1, 1] (blue negative, red positive).

    sections: (heading, activations (len(text),)).
    """
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title or 'unit activations')}</title>",
        "<style>body{font-family:sans-serif;max-width:72em;margin:2em auto}"
        "pre{font-family:monospace;font-size:13px;line-height:1.5;white-space:pre-wrap}"
        "span{padding:1px 0}</style></head><body>",
        f"<h1>{html.escape(title or 'unit activations')}</h1>",
        "<p>Background: the value shown, blue = -1, white = 0, red = +1 (hover for the number).</p>",
    ]
    for heading, acts in sections:
        acts = np.asarray(acts, dtype=float)
        if acts.shape[0] != len(text):
            raise ValueError(f"section {heading!r}: {acts.shape[0]} activations for {len(text)} characters")
        parts.append(f"<h2>{html.escape(heading)}</h2><pre>")
        for ch, v in zip(text, acts):
            shown = "\u21b5\n" if ch == "\n" else html.escape(ch)
            parts.append(f"<span style='background:{_rgb(v)}' title='{v:+.3f}'>{shown}</span>")
        parts.append("</pre>")
    parts.append("</body></html>")
    return "".join(parts)


def plot_char_activations(text: str, acts: np.ndarray, path: str | Path, *, title: str = "",
                          width: int = 80) -> Path:
    """The text as a PNG (monospace, wrapped at ``width`` columns, newlines kept), each
    character on a background coloured by its activation in [-1, 1] (blue / white / red):
    :func:`char_html` for places that show images but not HTML (e.g. a README).
    """
    acts = np.asarray(acts, dtype=float)
    if acts.shape[0] != len(text):
        raise ValueError(f"plot_char_activations: {acts.shape[0]} activations for {len(text)} characters")
    cells, row, col = [], 0, 0  # (row, col, char, activation)
    for ch, v in zip(text, acts):
        if col >= width:
            row, col = row + 1, 0
        cells.append((row, col, "\u21b5" if ch == "\n" else ch, v))
        if ch == "\n":
            row, col = row + 1, 0
        else:
            col += 1
    rows = row + 1
    fig = plt.figure(figsize=(0.11 * width + 0.4, 0.22 * rows + 0.6))
    ax = fig.add_axes((0.01, 0.01, 0.98, 1 - 0.45 / fig.get_figheight()))
    ax.set_xlim(0, width)
    ax.set_ylim(rows, 0)
    ax.axis("off")
    cmap = plt.get_cmap("bwr")
    for r, c, ch, v in cells:
        ax.add_patch(matplotlib.patches.Rectangle((c, r), 1, 1, color=cmap((np.clip(v, -1, 1) + 1) / 2), lw=0))
        if not ch.isspace():
            ax.text(c + 0.5, r + 0.55, ch, ha="center", va="center", fontsize=8, family="monospace")
    if title:
        fig.suptitle(title, fontsize=9, y=1 - 0.05 / fig.get_figheight(), va="top")
    return _save(fig, path)
