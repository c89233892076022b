"""Invalid configs fail before training starts, with a message naming the key and the
valid choices; every Lightning Trainer argument is reachable as trainer.<name>=..."""

from __future__ import annotations

import inspect

import pytest
import pytorch_lightning as pl
from hydra.errors import ConfigCompositionException, MissingConfigException

from recur_attn.cells import CELLS
from tests.reliability._util import FAST, compose_into, run_train


def _no_training_happened(out):
    ck = out / "checkpoints"
    assert not ck.exists() or not any(ck.iterdir())
    assert not (out / "metrics.json").exists()


def test_unknown_cell_names_key_and_choices(tmp_path):
    with pytest.raises(ValueError) as info:
        run_train(tmp_path, FAST + ["model.net.cell=lstmm"])
    msg = str(info.value)
    assert "model.net.cell='lstmm' is not a known cell" in msg
    assert all(name in msg for name in CELLS)
    _no_training_happened(tmp_path)


def test_unknown_cell_group_option_lists_choices(tmp_path):
    with pytest.raises(MissingConfigException) as info:
        compose_into(tmp_path, FAST + ["model/cell=lstmm"])
    msg = str(info.value)
    assert "model/cell" in msg and "lstmm" in msg and "cifg" in msg and "gru" in msg


@pytest.mark.parametrize("value", [0, -3])
def test_nonpositive_hidden_size(tmp_path, value):
    with pytest.raises(ValueError, match=rf"model\.net\.hidden_size must be a positive integer, got {value}"):
        run_train(tmp_path, FAST + [f"model.net.hidden_size={value}"])
    _no_training_happened(tmp_path)


def test_nonexistent_experiment_lists_choices(tmp_path):
    with pytest.raises(MissingConfigException) as info:
        compose_into(tmp_path, FAST + ["experiment=adding_lstm_vs_gru_typo"])
    msg = str(info.value)
    assert "experiment" in msg and "adding_lstm_vs_gru_typo" in msg and "adding_lstm_vs_rnn" in msg


def test_nonexistent_data_lists_choices(tmp_path):
    with pytest.raises(MissingConfigException) as info:
        compose_into(tmp_path, ["data=addding"])
    assert "addding" in str(info.value) and "adding" in str(info.value) and "jsb" in str(info.value)


def test_missing_data_path_names_file(tmp_path):
    missing = tmp_path / "nowhere" / "jsb.json"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        run_train(tmp_path / "run", ["data=jsb", "model=density", f"data.path={missing}",
                                      "extras.print_config=false", "callbacks.rich_progress_bar=null"])
    _no_training_happened(tmp_path / "run")


def test_missing_caption_json_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"dataset_flickr8k\.json does not exist.*nothing is downloaded"):
        run_train(tmp_path / "run", ["data=karpathy", "model=captioner", f"paths.data_dir={tmp_path}",
                                      "extras.print_config=false", "callbacks.rich_progress_bar=null"])
    _no_training_happened(tmp_path / "run")


def test_unknown_trainer_key_is_refused(tmp_path):
    with pytest.raises(ConfigCompositionException, match="trainer.max_stepz"):
        compose_into(tmp_path, FAST + ["trainer.max_stepz=3"])


def test_every_trainer_argument_is_reachable(tmp_path):
    """trainer.<name>=... works (no `+`) for every argument of pl.Trainer; logger and
    callbacks come from their own config groups."""
    cfg = compose_into(tmp_path, FAST)
    params = [p for p in inspect.signature(pl.Trainer.__init__).parameters if p not in ("self", "logger", "callbacks")]
    missing = [p for p in params if p not in cfg.trainer]
    assert not missing, f"conf/trainer/default.yaml lacks {missing}"
    cfg = compose_into(tmp_path, FAST + ["trainer.detect_anomaly=true", "trainer.limit_val_batches=2",
                                         "trainer.accumulate_grad_batches=2"])
    assert cfg.trainer.detect_anomaly is True and cfg.trainer.accumulate_grad_batches == 2
