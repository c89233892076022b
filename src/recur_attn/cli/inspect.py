"""``recur-attn-inspect``: figures of what trained recurrent networks do inside.

    recur-attn-inspect --ckpt logs/<task>/runs/<time>/checkpoints/last.ckpt --out inspect/
    recur-attn-inspect --ckpt RUN_A/checkpoints/last.ckpt --ckpt RUN_B/checkpoints/last.ckpt \\
        --out inspect/ --examples 3 --label "tanh RNN" --label LSTM

Each checkpoint must lie in a run folder of ``recur-attn-train``
(``<run>/checkpoints/x.ckpt`` next to ``<run>/.hydra/config.yaml``): the run's data
and model configs rebuild the data module and the network, and the weights are
loaded with ``weights_only=True``. On the first batch of the chosen split (fixed
examples: the data are seeded) it writes, per checkpoint ``<k>_<cell>/``:

* ``gates_ex<i>_l<layer>.png``: each gate, c_t and h_t of example i as units x steps
  (units sorted by how much their final state tells about the target);
* ``walkthrough_unit<u>.png``: the most informative units (``--walkthroughs``, 2; for the
  adding problem those of the 4 most informative that move most at the markers) of example 0, gate
  by gate (forget gate; input gate, candidate and what they write; cell state;
  output gate and output) -- the LSTM walk-through told by a trained unit;
* ``units.png``: the trajectories of the most informative units (adding problem:
  ranked by the correlation of their final cell state with the target, with the
  ratio of their movement at the two marked steps to elsewhere);
* for character models, ``units.html`` (and ``chars_<feature>.png``): the text coloured
  by the units that correlate most with quote marks, position in the line and bracket depth;

and for all checkpoints together ``gradient_flow.png`` (||dL/dh_t||, ||dL/dc_t||
against t, log scale), ``summary.json`` and an ``index.html`` linking everything.
"""

from __future__ import annotations

import argparse
import html
import json
import logging
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning import LightningDataModule, LightningModule

from recur_attn.analysis import figures as F
from recur_attn.analysis.gradient_flow import GradientFlow, find_recurrent, gradient_flow
from recur_attn.cli.common import build_data_and_model

log = logging.getLogger(__name__)

SPLITS = ("test", "val", "train")


@dataclass
class Loaded:
    ckpt: Path
    run_dir: Path
    cfg: DictConfig
    datamodule: LightningDataModule
    task: LightningModule


def run_dir_of(ckpt: Path) -> Path:
    """The run folder of a checkpoint: ``<run>/checkpoints/x.ckpt`` -> ``<run>``."""
    run = ckpt.resolve().parent.parent
    if not (run / ".hydra" / "config.yaml").is_file():
        raise ValueError(
            f"{ckpt}: expected the run's Hydra config at {run / '.hydra' / 'config.yaml'} (the checkpoint must "
            f"lie in <run>/checkpoints/ of a recur-attn-train run)"
        )
    return run


def _concrete_paths(cfg: DictConfig, run: Path) -> None:
    """Replace the ``${hydra:...}`` interpolations of ``cfg.paths`` (which only resolve inside
    a Hydra app) by the run's values from ``.hydra/hydra.yaml``."""
    if "paths" not in cfg:
        return
    cwd, out = os.getcwd(), str(run)
    hy = run / ".hydra" / "hydra.yaml"
    if hy.is_file():
        rt = OmegaConf.load(hy).hydra.runtime
        cwd = str(rt.get("cwd", cwd))
    with open_dict(cfg):
        for key, value in (("root_dir", os.environ.get("PROJECT_ROOT", cwd)), ("work_dir", cwd),
                           ("output_dir", out)):
            if key in cfg.paths:
                node = OmegaConf.to_container(cfg.paths, resolve=False)[key]
                if isinstance(node, str) and "${" in node:
                    cfg.paths[key] = value


def load_checkpoint(ckpt: str | Path, trust_checkpoint: bool = False) -> Loaded:
    """Rebuild the data module and the task of a run and load the checkpoint's weights."""
    ckpt = Path(ckpt).expanduser()
    if not ckpt.is_file():
        raise FileNotFoundError(f"--ckpt {ckpt}: no such checkpoint file")
    run = run_dir_of(ckpt)
    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    _concrete_paths(cfg, run)
    datamodule, task = build_data_and_model(cfg)
    try:
        data = torch.load(ckpt, map_location="cpu", weights_only=not trust_checkpoint)
    except pickle.UnpicklingError as e:
        raise ValueError(
            f"{ckpt}: cannot be loaded with weights_only=True ({e}); if you trust the file, pass --trust-checkpoint"
        ) from e
    if "state_dict" not in data:
        raise ValueError(f"{ckpt}: not a Lightning checkpoint (no 'state_dict'; keys: {sorted(data)})")
    task.load_state_dict(data["state_dict"])
    task.eval()
    return Loaded(ckpt=ckpt, run_dir=run, cfg=cfg, datamodule=datamodule, task=task)


def first_batch(dm: LightningDataModule, split: str) -> dict[str, torch.Tensor]:
    dm.prepare_data()
    dm.setup("test" if split == "test" else "fit")
    loader = getattr(dm, f"{split}_dataloader")()
    return next(iter(loader))


def is_char_model(loaded: Loaded) -> bool:
    return hasattr(loaded.datamodule, "vocab") and hasattr(loaded.task, "step_with_state")


def batch_loss_fn(task: LightningModule, batch: dict[str, torch.Tensor]):
    """A closure running the task's loss on ``batch`` (one forward of its network)."""
    if hasattr(task, "model_step"):
        return lambda: task.model_step(batch)[0]
    if hasattr(task, "step_with_state"):
        def loss():
            task.states.pop("inspect", None)  # start from a zero state
            return task.step_with_state(batch, "inspect")[0]
        return loss
    raise ValueError(f"{type(task).__name__}: no model_step or step_with_state to compute a loss with")


def _fmt(v: torch.Tensor) -> str:
    return f"{v.item():.3f}" if v.is_floating_point() and v.numel() == 1 else str(v.tolist())


def _label(k: int, loaded: Loaded) -> str:
    cell = OmegaConf.select(loaded.cfg, "model.net.cell", default=None) or "model"
    return f"{k}_{cell}"


def _marker_steps(batch: dict[str, torch.Tensor], dm: LightningDataModule) -> torch.Tensor | None:
    """(B, T) bool at the adding problem's two marked steps, None for other data."""
    from recur_attn.data.longlag import AddingDataModule

    if isinstance(dm, AddingDataModule):
        return batch["x"][..., 1] == 1.0
    return None


def sequence_target(y: torch.Tensor) -> torch.Tensor:
    """The target the units are correlated with: y itself, or for per-step labels (B, T)
    the label of each sequence's last labelled step (labels -100 are not scored)."""
    if y.dim() == 2 and not y.is_floating_point():
        labelled = y != -100
        if not bool(labelled.any(1).all()):
            raise ValueError("a sequence of the batch has no labelled step (all -100)")
        T = y.shape[1]
        last = T - 1 - labelled.flip(1).long().argmax(1)  # (B,) index of the last labelled step
        return y[torch.arange(y.shape[0]), last]
    return y


def inspect_sequence(loaded: Loaded, batch, flow: GradientFlow, out: Path, n_examples: int,
                     max_units: int = 32, walkthroughs: int = 2, label: str = "") -> dict[str, Any]:
    """Gate heatmaps and unit trajectories of a sequence model; returns the summary entry."""
    rnn = find_recurrent(loaded.task)
    records = flow.records
    lengths = batch.get("lengths")
    x, y = batch["x"], batch["y"]
    B = x.shape[0]
    H = rnn.hidden_size
    n_examples = min(n_examples, B)
    top = [r for r in records if r["layer"] == rnn.num_layers - 1 and r["direction"] == 0][0]
    state_name = "c" if "c" in top else "h"
    states = top[state_name]  # (B, T, H)
    target = sequence_target(y)
    units, r = F.informative_units(states, target, lengths, k=min(4, rnn.hidden_size))
    order = list(np.argsort(-np.abs(r), kind="stable"))
    markers = _marker_steps(batch, loaded.datamodule)
    jump = F.marker_jump_ratio(states, markers) if markers is not None else None
    with torch.no_grad():
        pred = loaded.task(x, lengths)
    files, entry = [], {"state": state_name, "units": units,
                        "corr_final_state_target": [round(float(r[u]), 4) for u in units]}
    if jump is not None:
        entry["marker_jump_ratio"] = [round(float(jump[u]), 2) for u in units]
        entry["median_jump_ratio_all_units"] = round(float(np.median(jump)), 2)
    marks = [torch.nonzero(markers[b]).flatten().tolist() if markers is not None else [] for b in range(B)]
    for b in range(n_examples):
        T = int(lengths[b]) if lengths is not None else x.shape[1]
        for rec in records:
            suffix = f"l{rec['layer']}" + ("_rev" if rec["direction"] else "")
            path = out / f"gates_ex{b}_{suffix}.png"
            caption = f"target {_fmt(target[b])}"
            F.plot_gate_heatmaps(rec, b, path, inputs=x[b], markers=marks[b], length=T,
                                 unit_order=order[:max_units] if rec is top else list(range(min(H, max_units))),
                                 title=f"{label}: layer {rec['layer']}, example {b} {caption}"
                                       + (f"\nrows: the {min(H, max_units)} units with the largest "
                                          f"|corr(final {state_name}, target)|, largest first" if rec is top else ""))
            files.append(path)
    # the walk-through follows the informative units that also write at the markers and hold
    walk_units = sorted(units, key=lambda u: -jump[u])[:walkthroughs] if jump is not None else units[:walkthroughs]
    entry["walkthrough_units"] = walk_units
    for u in walk_units:
        T0 = int(lengths[0]) if lengths is not None else x.shape[1]
        path = out / f"walkthrough_unit{u}.png"
        F.plot_unit_walkthrough(top, u, 0, path, inputs=x[0], markers=marks[0], length=T0,
                                title=f"{label}: unit {u} of layer {top['layer']}, example 0"
                                      + f" (target {_fmt(target[0])})")
        files.append(path)
    captions = []
    for b in range(n_examples):
        c = f"example {b}: target {_fmt(target[b])}"
        if y.dim() == 1 and y.is_floating_point():
            c += f", prediction {pred.reshape(B, -1)[b, 0].item():.3f}"
        captions.append(c)
    labels = [f"unit {u} (r={r[u]:+.2f}" + (f", jump x{jump[u]:.0f})" if jump is not None else ")") for u in units]
    path = out / "units.png"
    F.plot_unit_trajectories(states, units, path, examples=range(n_examples), markers=marks[:n_examples],
                             captions=captions, lengths=lengths, state_name=state_name, unit_labels=labels,
                             title=f"{label}: the units whose final {state_name} correlates most "
                                   f"with the target")
    files.insert(0, path)
    entry["files"] = [str(p.relative_to(out.parent)) for p in files]
    return entry


def inspect_chars(loaded: Loaded, out: Path, split: str, n_chunks: int = 4, n_chars: int = 600,
                  label: str = "") -> dict[str, Any]:
    """Units of a character model that track quotes, line position, bracket depth -> units.html."""
    dm, task = loaded.datamodule, loaded.task
    dm.prepare_data()
    dm.setup("test" if split == "test" else "fit")
    net = task.net
    rnn = find_recurrent(net)
    xs, valid, state = [], [], None
    loader = iter(getattr(dm, f"{split}_dataloader")())
    with torch.no_grad(), rnn.recording() as recs:
        for _ in range(n_chunks):
            try:
                batch = next(loader)
            except StopIteration:
                break
            state = net.reset_state(state, batch["reset"]) if "reset" in batch else state
            _, state = net(batch["x"], state)
            xs.append(batch["x"])
            # padding past a document's end has no target: leave it out of the text
            valid.append(batch["y"] != -100 if "y" in batch else torch.ones_like(batch["x"], dtype=torch.bool))
    if not xs:
        raise ValueError(f"the {split} split of {type(dm).__name__} is empty")
    top = [r for r in recs if r["layer"] == rnn.num_layers - 1 and r["direction"] == 0]
    name = "c" if "c" in top[0] else "h"
    acts_all = torch.cat([r[name] for r in top], 1)  # (B, K*T, H)
    ids = torch.cat(xs, 1)  # (B, K*T)
    keep = torch.cat(valid, 1)  # (B, K*T)
    rows = [b for b in range(ids.shape[0]) if bool(keep[b].any())]
    texts = [dm.vocab.decode(ids[b][keep[b]].tolist()) for b in rows]
    acts = [acts_all[b][keep[b]] for b in rows]  # each (N_b, H)
    feats = [F.char_features(t) for t in texts]
    all_feats = {k: np.concatenate([f[k] for f in feats]) for k in feats[0]}
    found = F.find_char_units(torch.cat(acts, 0), all_feats)
    text0 = texts[0][:n_chars]
    sections = []
    for feat, (u, corr) in found.items():
        a = acts[0][: len(text0), u]
        lo, hi = float(a.min()), float(a.max())
        shown = 2 * (a - lo) / max(hi - lo, 1e-12) - 1  # min -> blue, max -> red (units saturate otherwise)
        sections.append((f"{feat}: unit {u} (r = {corr:+.2f}; colour: {name} from {lo:.2f} (blue) to {hi:.2f} (red))",
                         shown.numpy()))
    page = F.char_html(text0, sections, title=f"{label}: units of layer {rnn.num_layers - 1}")
    path = out / "units.html"
    path.write_text(page, encoding="utf-8")
    files = [path]
    for (feat, (u, corr)), (_, shown) in zip(found.items(), sections):
        files.append(F.plot_char_activations(text0, shown, out / f"chars_{feat}.png",
                                             title=f"{label}: unit {u}, r = {corr:+.2f} with {feat} "
                                                   f"(background: its {name}, lowest blue, highest red)"))
    return {"state": name, "char_units": {k: {"unit": u, "r": round(c, 4)} for k, (u, c) in found.items()},
            "files": [str(p.relative_to(out.parent)) for p in files]}


def write_index(out: Path, summary: dict[str, Any]) -> Path:
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>recur-attn-inspect</title>",
             "<style>body{font-family:sans-serif;max-width:80em;margin:2em auto}img{max-width:100%;"
             "border:1px solid #ccc;margin:0.5em 0}code{background:#eee}</style></head><body>",
             "<h1>recur-attn-inspect</h1>"]
    if summary.get("gradient_flow"):
        parts.append("<h2>Gradient flow through time</h2><p>Norm of dLoss/dh_t (solid) and dLoss/dc_t (dashed) "
                     "against t on one batch, mean over its examples.</p>")
        parts.append(f"<img src='{html.escape(summary['gradient_flow'])}' alt='gradient flow'>")
    for label, entry in summary["checkpoints"].items():
        parts.append(f"<h2>{html.escape(entry.get('label', label))} <small>({html.escape(label)})</small></h2>"
                     f"<p><code>{html.escape(entry['ckpt'])}</code><br>"
                     f"loss on the batch: {entry['loss']:.4g}</p>")
        info = {k: v for k, v in entry.items() if k not in ("files", "ckpt", "loss", "label")}
        parts.append(f"<pre>{html.escape(json.dumps(info, indent=1))}</pre><ul>")
        for f in entry["files"]:
            if f.endswith(".png"):
                parts.append(f"<li><a href='{html.escape(f)}'>{html.escape(f)}</a><br>"
                             f"<img src='{html.escape(f)}' alt='{html.escape(f)}'></li>")
            else:
                parts.append(f"<li><a href='{html.escape(f)}'>{html.escape(f)}</a></li>")
        parts.append("</ul>")
    parts.append("</body></html>")
    path = out / "index.html"
    path.write_text("".join(parts), encoding="utf-8")
    return path


def inspect(ckpts: list[str], out: str | Path, examples: int = 3, split: str = "test",
            labels: list[str] | None = None, trust_checkpoint: bool = False, max_units: int = 32,
            walkthroughs: int = 2) -> dict[str, Any]:
    """Write the figures of every checkpoint and the combined gradient-flow plot; returns the summary."""
    if not ckpts:
        raise ValueError("give at least one --ckpt")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    if examples < 1:
        raise ValueError(f"--examples must be >= 1, got {examples}")
    if max_units < 1:
        raise ValueError(f"--units must be >= 1, got {max_units}")
    if not 0 <= walkthroughs <= 4:
        raise ValueError(f"--walkthroughs must be in [0, 4] (the informative units found), got {walkthroughs}")
    if labels is not None and len(labels) != len(ckpts):
        raise ValueError(f"{len(labels)} --label for {len(ckpts)} --ckpt: give one per checkpoint, or none")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"checkpoints": {}}
    curves = []
    for k, ck in enumerate(ckpts):
        loaded = load_checkpoint(ck, trust_checkpoint)
        name = _label(k, loaded)
        sub = out / name
        sub.mkdir(parents=True, exist_ok=True)
        batch = first_batch(loaded.datamodule, split)
        rnn = find_recurrent(loaded.task)
        flow = gradient_flow(rnn, batch_loss_fn(loaded.task, batch))
        label = labels[k] if labels else f"{name} ({loaded.run_dir.name})"
        if is_char_model(loaded):
            entry = inspect_chars(loaded, sub, split, label=label)
        else:
            entry = inspect_sequence(loaded, batch, flow, sub, examples, max_units, walkthroughs, label)
        entry = {"label": label, "ckpt": str(loaded.ckpt), "cell": rnn.cell_name, "loss": flow.loss, **entry}
        h = flow.curve("h")
        c = flow.curve("c") if "c" in flow.layers[-1] else None
        entry["grad_norm_h_first_last"] = [float(h[0]), float(h[-1])]
        if c is not None:
            entry["grad_norm_c_first_last"] = [float(c[0]), float(c[-1])]
        curves.append((label, h, c))
        summary["checkpoints"][name] = entry
        log.info("inspected %s -> %s", ck, sub)
    path = F.plot_gradient_flow(curves, out / "gradient_flow.png",
                                title="gradient flow through time: last layer, mean over one batch")
    summary["gradient_flow"] = str(path.relative_to(out))
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    write_index(out, summary)
    return summary


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="recur-attn-inspect", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", action="append", required=True, help="a checkpoint of a recur-attn-train run (repeatable)")
    p.add_argument("--out", required=True, help="output folder (index.html, PNGs)")
    p.add_argument("--examples", type=int, default=3, help="examples to draw per checkpoint (default 3)")
    p.add_argument("--units", type=int, default=32, help="units (rows) per gate heatmap (default 32)")
    p.add_argument("--walkthroughs", type=int, default=2,
                   help="gate-by-gate walk-through figures, one per most informative unit (default 2)")
    p.add_argument("--split", default="test", choices=SPLITS, help="split whose first batch is used")
    p.add_argument("--label", action="append", help="legend label per --ckpt, in the same order")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="load with full pickle (weights_only=False) -- only for files you trust")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    summary = inspect(args.ckpt, args.out, args.examples, args.split, args.label, args.trust_checkpoint,
                      args.units, args.walkthroughs)
    print(f"wrote {Path(args.out) / 'index.html'} ({len(summary['checkpoints'])} checkpoint(s))")


if __name__ == "__main__":
    main()
