"""Build callbacks and loggers from their config groups (lightning-hydra-template style)."""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig
from pytorch_lightning import Callback
from pytorch_lightning.loggers import Logger

log = logging.getLogger(__name__)


def _instantiate_group(cfg: DictConfig | None, what: str) -> list:
    objs: list = []
    if not cfg:
        return objs
    if not isinstance(cfg, DictConfig):
        raise TypeError(f"the {what} config must be a mapping of name -> config")
    for name, conf in cfg.items():
        if isinstance(conf, DictConfig) and "_target_" in conf:
            log.info("instantiating %s <%s>", what, conf._target_)
            objs.append(hydra.utils.instantiate(conf))
    return objs


def instantiate_callbacks(cfg: DictConfig | None) -> list[Callback]:
    return _instantiate_group(cfg, "callback")


def instantiate_loggers(cfg: DictConfig | None) -> list[Logger]:
    return _instantiate_group(cfg, "logger")
