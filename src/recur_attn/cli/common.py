"""What the train and eval entry points share: set-up, building the data and the model."""

from __future__ import annotations

import json
import logging
import math
import warnings
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning import LightningDataModule, LightningModule
from pytorch_lightning.utilities import rank_zero_only

from recur_attn.utils import (
    check_consistent,
    check_no_missing,
    fill_from_data,
    print_config_tree,
    validate_model_config,
)

log = logging.getLogger(__name__)


def apply_extras(cfg: DictConfig) -> None:
    """Threads, warnings and the printed config tree (rank zero only)."""
    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg.num_threads))
    extras = cfg.get("extras") or {}
    if extras.get("ignore_warnings"):
        warnings.filterwarnings("ignore")
    if extras.get("print_config"):
        out = Path(cfg.paths.output_dir) if cfg.get("paths") else None
        _print_tree(cfg, out / "config_tree.log" if out is not None and out.is_dir() else None)


@rank_zero_only
def _print_tree(cfg: DictConfig, save_to: Path | None) -> None:
    print_config_tree(cfg, resolve=True, save_to=save_to)


def build_data_and_model(cfg: DictConfig) -> tuple[LightningDataModule, LightningModule]:
    """Validate the model config, build the data module, fill the model's ``???`` keys
    from ``datamodule.dims`` (by key name, anywhere under ``cfg.model``), build the model.

    Data modules whose ``dims`` are only known after loading may set ``dims = None``
    until ``setup()``; they are then prepared and set up here first.
    """
    if "model" not in cfg or "data" not in cfg:
        raise ValueError("the config needs a `data` and a `model` group (e.g. data=adding model=seq_regressor)")
    validate_model_config(cfg.model, "model")
    log.info("instantiating data <%s>", cfg.data.get("_target_"))
    datamodule: LightningDataModule = hydra.utils.instantiate(cfg.data)
    dims = getattr(datamodule, "dims", None)
    if dims is None:
        datamodule.prepare_data()
        datamodule.setup("fit")
        dims = getattr(datamodule, "dims", None)
    if dims is None:
        raise ValueError(f"data module {type(datamodule).__name__} has no `dims` after setup()")
    filled = fill_from_data(cfg.model, dims, "model")
    if filled:
        log.info("from the data (%s.dims): %s", type(datamodule).__name__, filled)
    check_no_missing(cfg.model, "model", dims, f"{type(datamodule).__name__}")
    check_consistent(cfg.model, dims, ["target"], "model")
    validate_model_config(cfg.model, "model")
    log.info("instantiating model <%s>", cfg.model.get("_target_"))
    model: LightningModule = hydra.utils.instantiate(cfg.model)
    return datamodule, model


def to_float_dict(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        if isinstance(v, torch.Tensor):
            if v.numel() != 1:
                continue
            v = v.item()
        if isinstance(v, (int, float)):
            out[k] = float(v)
    return out


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write atomically (a crash leaves the previous file or none, never half of one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")

    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return str(v)
        return v

    with open(tmp, "w") as f:
        json.dump({k: clean(v) for k, v in data.items()}, f, indent=2, sort_keys=True, default=str)
    tmp.replace(path)


def config_summary(cfg: DictConfig) -> dict[str, Any]:
    """A few config values worth having next to the metrics in metrics.json."""
    out: dict[str, Any] = {"task_name": cfg.get("task_name"), "seed": cfg.get("seed")}
    for key in ("data._target_", "model._target_", "model.net._target_", "model.net.cell",
                "model.net.hidden_size", "model.net.num_layers", "data.seq_len"):
        v = OmegaConf.select(cfg, key, default=None)
        if v is not None:
            out[key] = v
    return out
