"""fast_dev_run of each Grid LSTM experiment through the real train entry point."""

from __future__ import annotations

import pytest

from recur_attn.cli.train import train

from conftest import set_paths

QUIET = [
    "debug=fdr",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "callbacks.rich_progress_bar=null",
    "callbacks.model_summary=null",
    "extras.print_config=false",
    "logger=csv",
]

EXPERIMENTS = {
    "grid_parity": ["data.k_bits=6", "data.n_train=64", "data.n_val=32", "data.n_test=32",
                    "data.batch_size=16", "model.net.hidden_size=8", "model.net.depth=2"],
    "grid_parity_ff": ["experiment=grid_parity", "model=grid_ff_relu", "data.k_bits=6", "data.n_train=64",
                       "data.n_val=32", "data.n_test=32", "data.batch_size=16", "model.net.grid_hidden_size=8",
                       "model.net.depth=2"],
    "grid_addition": ["hydra.mode=RUN", "data.max_digits=3", "data.n_train=64", "data.n_val=16", "data.n_test=16",
                      "data.batch_size=8", "model.net.hidden_size=8"],
    "grid_addition_lstm": ["experiment=grid_addition", "hydra.mode=RUN", "model=seq_classifier", "data.max_digits=3",
                           "data.n_train=64", "data.n_val=16", "data.n_test=16", "data.batch_size=8",
                           "model.net.hidden_size=8", "model.net.num_layers=2"],
    "grid_fashion_mnist": ["data=digits", "data.batch_size=8", "data.n_val=100", "data.n_train=200", "model.net.patch_size=4", "model.net.hidden_size=4",
                           "model.net.depth=1"],
}


SLOW = {"grid_parity_ff", "grid_addition_lstm"}  # the baselines' variants of an experiment already run


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n
                                  for n in sorted(EXPERIMENTS)])
def test_experiment_fast_dev_run(hydra_compose, tmp_path, name):
    overrides = [o for o in EXPERIMENTS[name] if o != "hydra.mode=RUN"]  # composed, not launched: one job
    if not any(o.startswith("experiment=") for o in overrides):
        overrides = [f"experiment={name}", *overrides]
    cfg = set_paths(hydra_compose("train", [*overrides, *QUIET]), tmp_path)
    metrics, objects = train(cfg)
    assert "test/acc" in metrics and 0.0 <= metrics["test/acc"] <= 1.0
    assert objects["trainer"].global_step == 1
