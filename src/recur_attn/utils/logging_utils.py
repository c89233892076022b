"""Hyperparameter logging for every logger of a run."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf


def log_hyperparameters(cfg: DictConfig, model: Any, trainer: Any) -> None:
    """Send the composed config and the parameter counts to every logger."""
    if not trainer.logger:
        return
    hparams: dict[str, Any] = {}
    resolved = OmegaConf.to_container(cfg, resolve=True)
    for key in ("model", "data", "trainer", "callbacks", "task_name", "tags", "ckpt_path", "seed"):
        if key in resolved:
            hparams[key] = resolved[key]
    hparams["model/params/total"] = sum(p.numel() for p in model.parameters())
    hparams["model/params/trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    for lg in trainer.loggers:
        lg.log_hyperparams(hparams)
