"""Print the composed config as a rich tree and save it next to the run."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import rich
import rich.syntax
import rich.tree
from omegaconf import DictConfig, OmegaConf

DEFAULT_FIELDS = ("data", "model", "callbacks", "logger", "trainer", "paths", "extras")


def print_config_tree(cfg: DictConfig, fields: Sequence[str] = DEFAULT_FIELDS,
                      resolve: bool = False, save_to: str | Path | None = None) -> None:
    tree = rich.tree.Tree("CONFIG", style="dim", guide_style="dim")
    order = [f for f in fields if f in cfg] + [f for f in cfg if f not in fields]
    for field in order:
        branch = tree.add(str(field), style="dim", guide_style="dim")
        node = cfg[field]
        text = OmegaConf.to_yaml(node, resolve=resolve) if isinstance(node, DictConfig) else str(node)
        branch.add(rich.syntax.Syntax(text, "yaml"))
    rich.print(tree)
    if save_to is not None:
        with open(save_to, "w") as f:
            rich.print(tree, file=f)
