"""``recur-attn-cli``: Lightning's own CLI (``LightningCLI``) over every task and data module.

For users who prefer Lightning's CLI to Hydra.  Any LightningModule of
``recur_attn.tasks`` and any LightningDataModule of ``recur_attn.data`` can be
chosen by class name; their constructor arguments are typed, so jsonargparse
checks them and ``--help`` lists them::

    recur-attn-cli fit --model=SequenceTask --data=AddingDataModule \\
        --data.seq_len=50 --model.net=SequenceModel --model.net.cell=gru \\
        --model.optimizer=Adam --model.optimizer.lr=0.003 --trainer.max_epochs=3
    recur-attn-cli fit --config my_run.yaml          # the same, as a YAML file
    recur-attn-cli fit --print_config ...            # the full, typed config
    recur-attn-cli test --ckpt_path=path/to/last.ckpt --config my_run.yaml

Unlike the Hydra entry point, the CLI does not fill the network's sizes from the data
module's ``dims``: give them (``--model.net.input_size=2 --model.net.output_size=1``;
the data module's docstring lists its ``dims``).  The trainer gets the project's
atomic, ``weights_only=True`` checkpoint plugin unless ``--trainer.plugins`` says
otherwise.
"""

from __future__ import annotations

import importlib

from jsonargparse import Namespace
from pytorch_lightning import LightningDataModule, LightningModule
from pytorch_lightning.cli import LightningCLI

# modules whose LightningModules / DataModules the CLI offers by class name
TASK_MODULES = ("recur_attn.tasks",)
DATA_MODULES = ("recur_attn.data",)


def _import_all() -> None:
    """Import the packages so that their classes are registered as subclasses."""
    for name in TASK_MODULES + DATA_MODULES + ("recur_attn.models",):
        importlib.import_module(name)


class RecurAttnCLI(LightningCLI):
    """LightningCLI with every task / data module selectable by class name; the trainer gets
    the project's atomic, ``weights_only=True`` checkpoint plugin unless ``--trainer.plugins`` is set."""

    def before_instantiate_classes(self) -> None:
        cfg = self.config.get(self.subcommand) if self.subcommand else self.config
        trainer = cfg.get("trainer") if cfg is not None else None
        if trainer is not None and not trainer.get("plugins"):
            trainer["plugins"] = [Namespace(class_path="recur_attn.utils.checkpoint.AtomicCheckpointIO",
                                            init_args=Namespace(allow_pickle=False))]


def cli_main(args: list[str] | None = None, run: bool = True) -> RecurAttnCLI:
    _import_all()
    return RecurAttnCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=args,
        run=run,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
        seed_everything_default=12345,  # as conf/train.yaml: the same numbers unless --seed_everything says otherwise
        parser_kwargs={"parser_mode": "omegaconf"},
    )


def main() -> None:
    """Console script ``recur-attn-cli``."""
    cli_main()


if __name__ == "__main__":
    main()
