"""Config helpers: fill a network's sizes from the data, validate before training.

The network configs leave the sizes that only the data knows as ``???``
(OmegaConf's mandatory value), e.g.::

    net:
      _target_: recur_attn.models.SequenceModel
      input_size: ???
      output_size: ???

:func:`fill_from_data` fills every such key, anywhere under the given node,
whose *name* is a key of the data module's ``dims`` mapping (``input_size``,
``output_size``, ``target``, ``readout``, ``vocab_size``, ...). Keys that are set
explicitly are left alone; :func:`check_no_missing` then names every ``???``
that is still open.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict


def _walk_missing(node: Any, prefix: str) -> Iterable[tuple[DictConfig, str, str]]:
    """Yield (parent node, key, dotted path) for every ``???`` value under node."""
    if isinstance(node, DictConfig):
        for key in node.keys():
            path = f"{prefix}.{key}" if prefix else str(key)
            if OmegaConf.is_missing(node, key):
                yield node, str(key), path
                continue
            child = node._get_node(key)
            # Do not resolve interpolations here: only walk real containers.
            if isinstance(child, (DictConfig, ListConfig)):
                yield from _walk_missing(child, path)
    elif isinstance(node, ListConfig):
        for i in range(len(node)):
            child = node._get_node(i)
            if isinstance(child, (DictConfig, ListConfig)):
                yield from _walk_missing(child, f"{prefix}[{i}]")


def missing_keys(node: DictConfig, prefix: str = "") -> list[str]:
    """Dotted paths of every ``???`` value under ``node``."""
    return [path for _, _, path in _walk_missing(node, prefix)]


def fill_from_data(node: DictConfig, dims: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Fill, in place, every ``???`` key under ``node`` whose name is in ``dims``.

    Returns {dotted path: value} of what was filled (for logging).
    """
    if not isinstance(dims, Mapping):
        raise TypeError(f"the data module's dims must be a mapping, got {type(dims).__name__}")
    filled: dict[str, Any] = {}
    for parent, key, path in list(_walk_missing(node, prefix)):
        if key in dims:
            value = dims[key]
            with open_dict(parent):
                parent[key] = value
            filled[path] = value
    return filled


def check_no_missing(node: DictConfig, prefix: str, dims: Mapping[str, Any] | None = None,
                     source: str = "the data module") -> None:
    """Raise a ValueError naming every ``???`` left under ``node``."""
    left = missing_keys(node, prefix)
    if not left:
        return
    have = sorted(dims) if dims else []
    names = sorted({p.rsplit(".", 1)[-1] for p in left})
    raise ValueError(
        f"config keys still unset (???): {', '.join(left)}. They are filled from {source}'s "
        f"`dims` by key name, which provides {have or 'nothing'} and not {names}. "
        f"Set them on the command line, e.g. {left[0]}=<value>."
    )


def check_consistent(node: DictConfig, dims: Mapping[str, Any], keys: Iterable[str],
                     prefix: str = "") -> None:
    """Raise when an explicitly set key of ``node`` disagrees with ``dims``."""
    for key in keys:
        if key in node and key in dims and not OmegaConf.is_missing(node, key):
            value = node[key]
            if value != dims[key]:
                path = f"{prefix}.{key}" if prefix else key
                raise ValueError(
                    f"{path}={value!r} but the data gives {key}={dims[key]!r}; "
                    f"pick a model for a {dims[key]!r} {key} or leave {path} as ??? to take it from the data"
                )


def validate_model_config(node: DictConfig, prefix: str = "model") -> None:
    """Checks that need no data, on every mapping under ``node`` (the task, its net,
    an encoder, ...): a ``cell`` key must name a cell of ``recur_attn.cells.CELLS``;
    ``hidden_size`` and ``num_layers`` must be positive integers; ``dropout`` in [0, 1).
    Values still ``???`` or interpolations that point at ``???`` are skipped.
    """
    if isinstance(node, ListConfig):
        for i in range(len(node)):
            child = node._get_node(i)
            if isinstance(child, (DictConfig, ListConfig)):
                validate_model_config(child, f"{prefix}[{i}]")
        return
    if not isinstance(node, DictConfig):
        return
    for key in node.keys():
        child = node._get_node(key)
        if isinstance(child, (DictConfig, ListConfig)):
            validate_model_config(child, f"{prefix}.{key}")
    if "_target_" in node and "cell" in node and not OmegaConf.is_missing(node, "cell"):
        from recur_attn.cells import CELLS  # cells sit below utils' users (the cli)

        cell = node.cell
        if cell not in CELLS:
            raise ValueError(
                f"{prefix}.cell={cell!r} is not a known cell; valid names: {', '.join(sorted(CELLS))} "
                f"(or choose one with model/cell=<name>)"
            )
    for key in ("hidden_size", "num_layers"):
        if key in node and not OmegaConf.is_missing(node, key):
            value = node[key]
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{prefix}.{key} must be a positive integer, got {value!r}")
    if "dropout" in node and not OmegaConf.is_missing(node, "dropout"):
        p = node.dropout
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
            raise ValueError(f"{prefix}.dropout must be a number in [0, 1), got {p!r}")
