"""The real Hydra tree composes for every data x model/cell pair, and its groups are sound."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf, open_dict

from recur_attn.cells import CELLS
from recur_attn.models import SequenceModel
from recur_attn.utils import check_no_missing, fill_from_data, validate_model_config

from conftest import CONF_DIR, DATA_MODEL, FAST_DATA

CONF = Path(CONF_DIR)
CELL_FILES = sorted(p.stem for p in (CONF / "model" / "cell").glob("*.yaml"))


def test_cell_group_has_every_cell():
    assert CELL_FILES == sorted(CELLS)
    assert len(CELL_FILES) == 19


def test_data_group_has_the_longlag_tasks():
    data = {p.stem for p in (CONF / "data").glob("*.yaml")}
    assert {"adding", "adding_hochreiter", "copy", "temporal_order", "parity"} <= data


@pytest.fixture
def composer(hydra_compose):
    return lambda overrides, hydra=False: hydra_compose("train", overrides, hydra)


def _build_net(cfg, dm):
    validate_model_config(cfg.model)
    filled = fill_from_data(cfg.model, dm.dims, "model")
    assert filled["model.net.input_size"] == dm.dims["input_size"]
    assert filled["model.net.output_size"] == dm.dims["output_size"]
    check_no_missing(cfg.model, "model", dm.dims)
    assert cfg.model.target == dm.dims["target"]
    net = hydra.utils.instantiate(cfg.model.net)
    assert isinstance(net, SequenceModel)
    assert net.readout == dm.dims["readout"]
    return net


@pytest.fixture(scope="module")
def data_cfgs(hydra_compose):
    """data name -> (composed config with the lstm, data module)."""
    out = {}
    for data in sorted(FAST_DATA):
        cfg = hydra_compose("train", [f"data={data}", f"model={DATA_MODEL[data]}", *FAST_DATA[data],
                                      "model.net.hidden_size=8"])
        out[data] = (cfg, hydra.utils.instantiate(cfg.data))
    return out


def test_every_data_and_cell_pair_builds(data_cfgs, cell_nodes):
    assert sorted(cell_nodes) == CELL_FILES
    """Each data config (composed by Hydra) with each cell's composed net values: the net builds.

    (model/cell is `@package model.net`, so composing data X with cell Y gives data X's
    config with Y's `cell` and `cell_kwargs`; the full Hydra cross product is the slow test.)
    """
    for data, (base, dm) in data_cfgs.items():
        for cell, node in cell_nodes.items():
            cfg = base.copy()
            with open_dict(cfg):
                cfg.model.net.cell = node.cell
                cfg.model.net.cell_kwargs = node.cell_kwargs
            net = _build_net(cfg, dm)
            assert net.rnn.cell_name == cell


@pytest.mark.slow
@pytest.mark.parametrize("data", sorted(FAST_DATA))
def test_every_data_and_cell_composes_with_hydra(composer, data):
    dm = None
    for cell in CELL_FILES:
        cfg = composer([f"data={data}", f"model={DATA_MODEL[data]}", f"model/cell={cell}",
                        *FAST_DATA[data], "model.net.hidden_size=8"])
        assert cfg.model.net.cell == cell
        dm = dm or hydra.utils.instantiate(cfg.data)
        assert _build_net(cfg, dm).rnn.cell_name == cell


def test_forget_bias_reaches_lstm_like_cells_only(composer):
    cfg = composer(["model/cell=cifg", "forget_bias=1.0"])
    assert cfg.model.net.cell_kwargs.forget_bias == 1.0
    cfg = composer(["model/cell=gru", "forget_bias=1.0"])
    assert "forget_bias" not in cfg.model.net.cell_kwargs
    cfg = composer(["model/cell=lstm"])
    assert cfg.model.net.cell_kwargs.forget_bias is None


def test_unknown_cell_group_option_lists_valid_names(composer):
    with pytest.raises(ConfigCompositionException) as err:
        composer(["model/cell=lstmm"])
    msg = str(err.value)
    assert "lstmm" in msg
    for name in ("cifg", "gru_cho", "clockwork", "dglstm"):
        assert name in msg


def test_unknown_cell_key_rejected_with_valid_names(composer):
    cfg = composer(["model.net.cell=lstmm"])
    with pytest.raises(ValueError, match="model.net.cell='lstmm'.*valid names: .*cifg.*rnn_tanh"):
        validate_model_config(cfg.model)


@pytest.mark.parametrize("key,value", [("hidden_size", 0), ("hidden_size", -3), ("num_layers", 0)])
def test_nonpositive_sizes_rejected_naming_the_key(composer, key, value):
    cfg = composer([f"model.net.{key}={value}"])
    with pytest.raises(ValueError, match=rf"model\.net\.{key} must be a positive integer, got {value}"):
        validate_model_config(cfg.model)


def test_unknown_experiment_fails_at_composition(composer):
    with pytest.raises(ConfigCompositionException, match="adding_lstm_vs_rnn"):
        composer(["experiment=no_such_experiment"])


def test_groups_compose(composer):
    cfg = composer(["trainer=gpu", "logger=tensorboard", "callbacks=none"])
    assert cfg.trainer.accelerator == "gpu" and "tensorboard" in cfg.logger and not cfg.callbacks
    cfg = composer(["trainer=ddp"])
    assert cfg.trainer.strategy == "ddp"


def test_experiment_and_search_configs(composer, hydra_compose):
    cfg = composer(["experiment=adding_lstm_vs_rnn"], True)
    assert cfg.hydra.mode.name == "MULTIRUN"
    assert cfg.hydra.sweeper.params["model/cell"] == "rnn_tanh,lstm"
    assert cfg.forget_bias == 1.0 and cfg.model.net.hidden_size == 128
    assert cfg.model.optimizer.lr == 0.003 and cfg.data.seq_len == 100 and cfg.data.variant == "modern"
    cfg = composer(["experiment=adding_lstm"], True)
    assert cfg.hydra.mode is None or cfg.hydra.mode.name == "RUN"
    assert cfg.forget_bias == 1.0 and cfg.trainer.max_steps == 2000 and cfg.model.net.cell == "lstm"
    cfg = composer(["hparams_search=adding_optuna"], True)
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper")
    assert cfg.optimized_metric == "val/loss_best"
    for launcher in ("local", "slurm"):  # the project's presets over the plugins' joblib / submitit_slurm
        cfg = composer([f"hydra/launcher={launcher}"], True)
        assert "Launcher" in cfg.hydra.launcher._target_
    cfg = hydra_compose("eval", ["ckpt_path=x.ckpt"])
    assert cfg.ckpt_path == "x.ckpt"


def test_wandb_logger_is_offline_by_default(composer):
    cfg = composer(["logger=wandb"])
    assert cfg.logger.wandb.offline is True
    cfg = composer(["logger=many"])
    assert set(cfg.logger) == {"csv", "tensorboard", "wandb"}


def test_ddp_cpu_uses_gloo(composer):
    cfg = composer(["trainer=ddp_cpu", "trainer.max_steps=3"])
    assert cfg.trainer.max_steps == 3
    assert cfg.trainer.strategy.process_group_backend == "gloo"
    assert cfg.trainer.accelerator == "cpu" and cfg.trainer.devices == 2
    assert OmegaConf.select(cfg, "trainer.strategy._target_").endswith("DDPStrategy")
