"""``recur-attn-train`` (or ``python -m recur_attn.cli.train``): the Hydra train entry point.

    recur-attn-train                                  # adding problem T=100, LSTM
    recur-attn-train model/cell=gru data=temporal_order model=seq_classifier
    recur-attn-train experiment=adding_lstm_vs_rnn    # a multirun
    recur-attn-train -m model/cell=lstm,cifg hydra/launcher=joblib

The run folder (``logs/<task_name>/runs/<time>``) gets ``.hydra/`` (the composed config),
``checkpoints/`` (``last.ckpt`` and the best by ``optimized_metric``), the logger
output (``csv/``, ``tensorboard/``, ``wandb/``) and ``metrics.json``: the final
validation and test metrics.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig

from recur_attn.cli.common import (
    apply_extras,
    build_data_and_model,
    config_summary,
    to_float_dict,
    write_json,
)
from recur_attn.utils import config_dir, instantiate_callbacks, instantiate_loggers, log_hyperparameters

log = logging.getLogger(__name__)


def resolve_ckpt_path(ckpt_path: str | None, trainer: pl.Trainer | None = None) -> str | None:
    """None, "best"/"hpc" (Lightning's own), "last" or an existing file.

    "last" is resolved here to the ``last.ckpt`` of this run's checkpoint folder, and a
    missing one is an error: Lightning would warn and silently train from scratch.
    """
    if ckpt_path in (None, "", "best", "hpc"):
        return ckpt_path or None
    if ckpt_path == "last":
        dirs = [Path(cb.dirpath) for cb in (trainer.checkpoint_callbacks if trainer else [])
                if getattr(cb, "dirpath", None)]
        for d in dirs:
            if (d / "last.ckpt").is_file():
                return str(d / "last.ckpt")
        where = ", ".join(str(d) for d in dirs) or "(no checkpoint callback)"
        raise FileNotFoundError(
            f"ckpt_path=last: no last.ckpt in {where}. Each run gets a new folder; resume a run "
            f"with `hydra.run.dir=<its folder> ckpt_path=last` or `ckpt_path=<folder>/checkpoints/last.ckpt`"
        )
    p = Path(str(ckpt_path)).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"ckpt_path={ckpt_path!r}: no such checkpoint file")
    return str(p)


def get_metric_value(metrics: dict[str, float], name: str | None) -> float | None:
    if not name:
        return None
    if name not in metrics:
        raise KeyError(
            f"optimized_metric={name!r} was not logged; the run logged: {', '.join(sorted(metrics))}"
        )
    return metrics[name]


def _finish_wandb(loggers: list) -> None:
    from pytorch_lightning.loggers import WandbLogger

    if any(isinstance(lg, WandbLogger) for lg in loggers):
        import wandb

        wandb.finish()


def train(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Train (and test) the model the config describes.

    Returns (metrics, objects): every final scalar metric (``val/...`` of the last
    validation, ``test/...`` of the best checkpoint), and the built objects.
    Also writes ``metrics.json`` in ``cfg.paths.output_dir``.
    """
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    datamodule, model = build_data_and_model(cfg)
    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    loggers = instantiate_loggers(cfg.get("logger"))
    trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    objects = {"cfg": cfg, "datamodule": datamodule, "model": model, "callbacks": callbacks,
               "logger": loggers, "trainer": trainer}
    metrics: dict[str, float] = {}
    info: dict[str, Any] = config_summary(cfg)
    try:
        if loggers:
            log_hyperparameters(cfg, model, trainer)
        if cfg.get("train", True):
            t0 = time.perf_counter()
            trainer.fit(model=model, datamodule=datamodule, ckpt_path=resolve_ckpt_path(cfg.get("ckpt_path"), trainer))
            info["time/fit_s"] = round(time.perf_counter() - t0, 2)
            info["global_step"] = trainer.global_step
            info["epoch"] = trainer.current_epoch
            metrics.update(to_float_dict(trainer.callback_metrics))
        if cfg.get("test", True):
            ckpt = None
            cb = trainer.checkpoint_callback
            if cfg.get("train", True) and cb is not None and getattr(cb, "best_model_path", ""):
                ckpt = cb.best_model_path
            elif not cfg.get("train", True):
                ckpt = resolve_ckpt_path(cfg.get("ckpt_path"), trainer)
            if ckpt is None:
                log.warning("no best checkpoint: testing the current weights")
            info["test_ckpt"] = ckpt
            t0 = time.perf_counter()
            trainer.test(model=model, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
            info["time/test_s"] = round(time.perf_counter() - t0, 2)
            metrics.update(to_float_dict(trainer.callback_metrics))
        if trainer.is_global_zero:
            write_json(Path(cfg.paths.output_dir) / "metrics.json", {**info, **metrics})
    finally:
        _finish_wandb(loggers)
    return metrics, objects


def _main(cfg: DictConfig) -> float | None:
    apply_extras(cfg)
    metrics, _ = train(cfg)
    return get_metric_value(metrics, cfg.get("optimized_metric"))


def main() -> None:
    """Console script entry: finds the config tree (see recur_attn.utils.paths) and runs Hydra."""
    os.environ.setdefault("PROJECT_ROOT", os.getcwd())
    hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")(_main)()


if __name__ == "__main__":
    main()
