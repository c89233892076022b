"""Shared fixtures: the real Hydra config, composed like lightning-hydra-template's tests.

``cfg_train``: conf/train.yaml composed (once a session, then copied) with small, fast
settings (tiny data, hidden size 8, 4 steps, CPU, no progress bar), writing into tmp_path.
``make_cfg(data=..., cell=..., overrides=[...])``: the same for any long-lag data set and
cell; the overrides are Hydra override strings (composed anew) or a dict of dotted keys
(applied to a copy, cheap). ``compose_eval(overrides)``: conf/eval.yaml likewise.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf, open_dict

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = str(ROOT / "conf")

torch.set_num_threads(1)

# small data for the long-lag data sets of conf/data (the keys each one has)
FAST_DATA = {
    "adding": ["data.seq_len=12"],
    "adding_hochreiter": ["data.seq_len=20"],
    "copy": ["data.delay=6", "data.n_symbols=3", "data.vocab=4"],
    "temporal_order": ["data.seq_len=20"],
    "parity": ["data.k_bits=6"],
}
FAST_COMMON = [
    "data.n_train=64",
    "data.n_val=32",
    "data.n_test=32",
    "data.batch_size=16",
    "model.net.hidden_size=8",
    "trainer.max_steps=4",
    "trainer.val_check_interval=2",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "callbacks.rich_progress_bar=null",
    "callbacks.model_summary=null",
    "extras.print_config=false",
    "num_threads=1",
]
DATA_MODEL = {
    "adding": "seq_regressor",
    "adding_hochreiter": "seq_regressor",
    "copy": "seq_classifier",
    "temporal_order": "seq_classifier",
    "parity": "seq_classifier",
}


def fast_overrides(data: str = "adding", extra: list[str] | None = None) -> list[str]:
    return [f"data={data}", f"model={DATA_MODEL[data]}", *FAST_DATA[data], *FAST_COMMON, *(extra or [])]


def load_script(name: str):
    """scripts/<name>.py as a module (the scripts are not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def set_paths(cfg: DictConfig, out: Path) -> DictConfig:
    with open_dict(cfg):
        cfg.paths.root_dir = str(ROOT)
        cfg.paths.log_dir = str(out / "logs")
        cfg.paths.output_dir = str(out)
        cfg.paths.work_dir = str(out)
    return cfg


@pytest.fixture(scope="session")
def hydra_compose():
    """compose(config_name, overrides) on the project's conf/; results cached for the session."""
    cache: dict = {}

    def run(config_name: str, overrides: list[str], return_hydra_config: bool = False) -> DictConfig:
        key = (config_name, tuple(overrides), return_hydra_config)
        if key not in cache:
            GlobalHydra.instance().clear()
            with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
                cache[key] = compose(config_name=config_name, overrides=list(overrides),
                                     return_hydra_config=return_hydra_config)
        return cache[key].copy()

    yield run
    GlobalHydra.instance().clear()


@pytest.fixture(scope="session")
def cell_nodes(hydra_compose) -> dict[str, DictConfig]:
    """cell name -> the `model.net` values its conf/model/cell/<name>.yaml composes to."""
    names = sorted(p.stem for p in (Path(CONF_DIR) / "model" / "cell").glob("*.yaml"))
    return {n: hydra_compose(f"model/cell/{n}", []).model.net for n in names}


@pytest.fixture
def make_cfg(hydra_compose, cell_nodes, tmp_path):
    def make(data: str = "adding", cell: str | None = None, overrides=None) -> DictConfig:
        extra = overrides if isinstance(overrides, list) else []
        cfg = hydra_compose("train", fast_overrides(data, extra))
        if cell is not None:
            with open_dict(cfg):
                cfg.model.net.cell = cell_nodes[cell].cell
                cfg.model.net.cell_kwargs = cell_nodes[cell].cell_kwargs
        if isinstance(overrides, dict):
            for k, v in overrides.items():
                OmegaConf.update(cfg, k, v, force_add=True)
        return set_paths(cfg, tmp_path)

    return make


@pytest.fixture
def cfg_train(make_cfg) -> DictConfig:
    return make_cfg()


@pytest.fixture
def compose_eval(hydra_compose, tmp_path):
    def make(overrides: list[str] | None = None) -> DictConfig:
        ov = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
              "extras.print_config=false", *(overrides or [])]
        return set_paths(hydra_compose("eval", ov), tmp_path / "eval")

    return make
