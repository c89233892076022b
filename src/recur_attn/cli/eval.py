"""``recur-attn-eval``: evaluate a checkpoint on the test (or validation) split.

    recur-attn-eval ckpt_path=logs/train/runs/<time>/checkpoints/last.ckpt

When the checkpoint lies in a run folder made by ``recur-attn-train``
(``<run>/checkpoints/x.ckpt`` next to ``<run>/.hydra/config.yaml``), the model and
data configs of that run are used (``use_run_config=false`` to compose them from
the command line instead: ``data=... model=...``). Metrics are printed and written
to ``metrics.json`` in this eval run's folder. The checkpoint is loaded with
``weights_only=True``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf, open_dict

from recur_attn.cli.common import apply_extras, build_data_and_model, to_float_dict, write_json
from recur_attn.utils import config_dir, instantiate_loggers

log = logging.getLogger(__name__)

SPLITS = ("test", "val")


def run_config_for(ckpt: Path) -> Path | None:
    cand = ckpt.resolve().parent.parent / ".hydra" / "config.yaml"
    return cand if cand.is_file() else None


def evaluate(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    if OmegaConf.is_missing(cfg, "ckpt_path"):
        raise ValueError("ckpt_path is required: recur-attn-eval ckpt_path=<run>/checkpoints/last.ckpt")
    ckpt = Path(str(cfg.ckpt_path)).expanduser()
    if not ckpt.is_file():
        raise FileNotFoundError(f"ckpt_path={cfg.ckpt_path!r}: no such checkpoint file")
    split = cfg.get("split", "test")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if cfg.get("use_run_config", True):
        run_cfg_path = run_config_for(ckpt)
        if run_cfg_path is not None:
            run_cfg = OmegaConf.load(run_cfg_path)
            log.info("using the data and model configs of the run: %s", run_cfg_path)
            with open_dict(cfg):
                cfg.data = run_cfg.data
                cfg.model = run_cfg.model
                for key in ("forget_bias", "seed"):
                    if key in run_cfg:
                        cfg[key] = run_cfg[key]
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    datamodule, model = build_data_and_model(cfg)
    loggers = instantiate_loggers(cfg.get("logger"))
    trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer, logger=loggers or False)
    if split == "test":
        trainer.test(model=model, datamodule=datamodule, ckpt_path=str(ckpt), weights_only=True)
    else:
        trainer.validate(model=model, datamodule=datamodule, ckpt_path=str(ckpt), weights_only=True)
    metrics = to_float_dict(trainer.callback_metrics)
    if trainer.is_global_zero:
        write_json(Path(cfg.paths.output_dir) / "metrics.json", {"ckpt_path": str(ckpt), **metrics})
    return metrics, {"cfg": cfg, "datamodule": datamodule, "model": model, "trainer": trainer}


def _main(cfg: DictConfig) -> None:
    apply_extras(cfg)
    evaluate(cfg)


def main() -> None:
    os.environ.setdefault("PROJECT_ROOT", os.getcwd())
    hydra.main(version_base="1.3", config_path=config_dir(), config_name="eval")(_main)()


if __name__ == "__main__":
    main()
