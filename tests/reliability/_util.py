"""Composing the real Hydra config into a given folder, with small fast settings."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = str(ROOT / "conf")

# adding problem, T=12, 80 training sequences in batches of 16: 5 batches an epoch
FAST = [
    "data=adding", "model=seq_regressor", "data.seq_len=12", "data.n_train=80", "data.n_val=32",
    "data.n_test=32", "data.batch_size=16", "model.net.hidden_size=8", "trainer.max_epochs=-1",
    "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
    "callbacks.rich_progress_bar=null", "callbacks.model_summary=null", "extras.print_config=false",
    "num_threads=1", "logger=csv",
]
# 13 steps over 3 epochs, validation every 4 steps, a step checkpoint every 3, dropout between 2 layers
RESUME = FAST + [
    "trainer.max_steps=13", "trainer.val_check_interval=4", "callbacks.step_checkpoint.every_n_train_steps=3",
    "model.net.num_layers=2", "model.net.dropout=0.3",
]


def compose_into(out_dir: Path, overrides: list[str], config_name: str = "train") -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        cfg = compose(config_name=config_name, return_hydra_config=True, overrides=overrides)
    out_dir = Path(out_dir)
    with open_dict(cfg):
        cfg.paths.root_dir = str(ROOT)
        cfg.paths.log_dir = str(out_dir / "logs")
        cfg.paths.output_dir = str(out_dir)
        cfg.paths.work_dir = str(out_dir)
        cfg.hydra.runtime.output_dir = str(out_dir)
        cfg.hydra.job.num = 0
    HydraConfig().set_config(cfg)
    return cfg


class Crash(Exception):
    """Stands for a kill: raised before the training step `at_step` runs."""


class CrashAt(pl.Callback):
    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.at_step:
            raise Crash(f"crash before step {self.at_step}")


class RecordBatches(pl.Callback):
    """(global step, batch index, sum of the targets, a digest of the global torch RNG state) per step.

    The RNG state is read, not drawn from, so recording does not change the run."""

    def __init__(self) -> None:
        self.rows: list[tuple] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        digest = hashlib.sha1(torch.get_rng_state().numpy().tobytes()).hexdigest()[:12]
        self.rows.append((trainer.global_step, batch_idx, float(batch["y"].sum()), digest))


def run_train(out_dir: Path, overrides: list[str], extra_callbacks=()):
    """recur_attn.cli.train.train on the composed config, with extra callbacks appended."""
    import recur_attn.cli.train as T

    cfg = compose_into(out_dir, overrides)
    orig = T.instantiate_callbacks
    T.instantiate_callbacks = lambda c: orig(c) + list(extra_callbacks)
    try:
        metrics, objects = T.train(cfg)
    finally:
        T.instantiate_callbacks = orig
        GlobalHydra.instance().clear()
    weights = {k: v.detach().clone() for k, v in objects["model"].state_dict().items()}
    return metrics, weights, objects


class CrashInValidation(pl.Callback):
    """Stands for a kill during the validation that follows global step `at_step`."""

    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_validation_start(self, trainer, pl_module):
        if not trainer.sanity_checking and trainer.global_step == self.at_step:
            raise Crash(f"crash in the validation at step {self.at_step}")
