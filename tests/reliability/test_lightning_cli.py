"""recur-attn-cli (LightningCLI): typed constructors everywhere, and a fast_dev_run fit."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest
import pytorch_lightning as pl
from jsonargparse import ArgumentParser

import recur_attn.data
import recur_attn.tasks


def _classes(package, base):
    found = {}
    for info in pkgutil.iter_modules(package.__path__):
        mod = importlib.import_module(f"{package.__name__}.{info.name}")
        for _, obj in inspect.getmembers(mod, inspect.isclass):
            if issubclass(obj, base) and obj.__module__.startswith("recur_attn.") and not obj.__name__.startswith("_"):
                found[f"{obj.__module__}.{obj.__name__}"] = obj
    return found


TASKS = _classes(recur_attn.tasks, pl.LightningModule)
DATA = _classes(recur_attn.data, pl.LightningDataModule)


@pytest.mark.parametrize("name", sorted(TASKS) + sorted(DATA))
def test_constructor_arguments_are_typed(name):
    cls = {**TASKS, **DATA}[name]
    sig = inspect.signature(cls.__init__)
    untyped = [p.name for p in list(sig.parameters.values())[1:]
               if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.annotation is inspect.Parameter.empty]
    assert not untyped, f"{name}.__init__ has untyped arguments {untyped} (jsonargparse needs the types)"
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls, "obj", fail_untyped=True)


def test_cli_fit_fast_dev_run(tmp_path, monkeypatch):
    from recur_attn.cli.lightning_cli import cli_main
    from recur_attn.utils.checkpoint import AtomicCheckpointIO

    monkeypatch.chdir(tmp_path)
    cli = cli_main([
        "fit", "--model=SequenceTask", "--data=AddingDataModule", "--data.seq_len=8", "--data.n_train=32",
        "--data.n_val=16", "--data.n_test=16", "--data.batch_size=8", "--model.net=SequenceModel",
        "--model.net.input_size=2", "--model.net.output_size=1", "--model.net.hidden_size=4",
        "--model.net.cell=cifg", "--model.optimizer=torch.optim.Adam", "--model.optimizer.lr=0.01",
        "--trainer.fast_dev_run=true", "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false", f"--trainer.default_root_dir={tmp_path}",
    ])
    assert cli.trainer.global_step == 1
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    assert "train/loss" in cli.trainer.callback_metrics


def test_cli_rejects_wrong_type(tmp_path, monkeypatch, capsys):
    from recur_attn.cli.lightning_cli import cli_main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        cli_main(["fit", "--model=SequenceTask", "--data=AddingDataModule", "--data.seq_len=eight",
                  "--model.net=SequenceModel", "--model.net.input_size=2", "--model.net.output_size=1",
                  "--model.optimizer=torch.optim.Adam", "--trainer.fast_dev_run=true"])
    assert "seq_len" in capsys.readouterr().err
