"""Where the Hydra config tree lives.

The configs are in ``conf/`` at the repository root (DESIGN.md). The entry
points find it, in this order: the ``RECUR_ATTN_CONFIG_DIR`` environment
variable; ``conf/`` at the root of the source checkout this package was
imported from (an editable install, ``pip install -e .``, or ``PYTHONPATH=src``);
``conf/`` in the current directory.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "RECUR_ATTN_CONFIG_DIR"


def config_dir() -> str:
    tried: list[str] = []
    env = os.environ.get(ENV_VAR)
    if env:
        p = Path(env).expanduser().resolve()
        if (p / "train.yaml").is_file():
            return str(p)
        raise FileNotFoundError(f"{ENV_VAR}={env} has no train.yaml; point it at the project's conf/ folder")
    # src/recur_attn/utils/paths.py -> repository root is parents[3]
    here = Path(__file__).resolve()
    candidates = [here.parents[3] / "conf", Path.cwd() / "conf"]
    for c in candidates:
        tried.append(str(c))
        if (c / "train.yaml").is_file():
            return str(c)
    raise FileNotFoundError(
        "cannot find the recur-attn config tree (conf/train.yaml); looked in "
        + ", ".join(tried)
        + f". Install the project in editable mode (pip install -e .) from its checkout, run from the "
        f"repository root, or set {ENV_VAR}=/path/to/recur-attn/conf"
    )
