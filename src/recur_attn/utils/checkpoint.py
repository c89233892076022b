"""Crash-safe checkpoint files, loaded without running pickled code.

Writing (:class:`AtomicCheckpointIO`, a Lightning ``CheckpointIO`` plugin that the
trainer configs install through ``trainer.plugins``): the checkpoint is serialised to
a temporary file in the target's own folder, flushed and ``fsync``-ed, then moved
over the target with ``os.replace`` (atomic on POSIX and Windows within one file
system), and the folder is ``fsync``-ed.  A process killed at any point leaves either
the previous checkpoint or the new one under the target name, never a truncated
file; a stale ``.tmp`` file may remain next to it and is ignored.

Reading (:func:`load_checkpoint`, and the plugin's ``load_checkpoint``): always
``torch.load(weights_only=True)``.  A checkpoint that carries a pickled object
(a class instance, a function, an ``nn.Module``) is refused with a
:class:`UnsafeCheckpointError` that names the file and the offending global,
instead of executing its ``__reduce__``.  Lightning checkpoints written by this
project hold only tensors, numbers, strings, lists, tuples and dicts (the tasks
do not save their optimizer partials, the RNG callback stores its states as
tensors), so nothing beyond :data:`SAFE_GLOBALS` needs allowing.  A truncated or
random file gives a :class:`CorruptCheckpointError` (a ``ValueError``) naming it.
"""

from __future__ import annotations

import io
import os
import pickle
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

__all__ = [
    "SAFE_GLOBALS",
    "AtomicCheckpointIO",
    "CorruptCheckpointError",
    "UnsafeCheckpointError",
    "atomic_save",
    "load_checkpoint",
]


class UnsafeCheckpointError(ValueError):
    """The checkpoint holds pickled objects that ``weights_only=True`` refuses."""


class CorruptCheckpointError(ValueError):
    """The file is not a readable torch checkpoint (truncated, random bytes, wrong format)."""


def _safe_globals() -> list[Any]:
    """Globals beyond torch's defaults that plain Lightning checkpoints may carry."""
    out: list[Any] = []
    # Lightning's hyper-parameter container (a dict subclass) when a module saves hparams
    try:
        from lightning_fabric.utilities.data import AttributeDict

        out.append(AttributeDict)
    except ImportError:  # pragma: no cover - old lightning
        pass
    try:
        from pytorch_lightning.utilities.parsing import AttributeDict as PLAttributeDict

        out.append(PLAttributeDict)
    except ImportError:  # pragma: no cover
        pass
    return list({id(o): o for o in out}.values())


SAFE_GLOBALS: list[Any] = _safe_globals()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` so that a crash leaves the old file or the new one, whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)


def _unsafe_global_names(path: Path) -> list[str]:
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception:
        return []


def load_checkpoint(path: str | os.PathLike | io.BytesIO, map_location: Any = "cpu",
                    extra_safe_globals: list[Any] | None = None) -> dict[str, Any]:
    """Load a checkpoint with ``torch.load(weights_only=True)``; clear errors otherwise.

    Raises:
        FileNotFoundError: no such file.
        UnsafeCheckpointError: the file carries pickled objects (it could run code).
        CorruptCheckpointError: truncated, random or not a torch checkpoint, or not a mapping.
    """
    name = "<in-memory checkpoint>" if isinstance(path, io.BytesIO) else str(path)
    if not isinstance(path, io.BytesIO):
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"checkpoint {name}: no such file")
    allowed = SAFE_GLOBALS + list(extra_safe_globals or [])
    try:
        with torch.serialization.safe_globals(allowed):
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        if "Weights only load failed" in msg or "Unsupported global" in msg or "GLOBAL" in msg:
            names = [] if isinstance(path, io.BytesIO) else _unsafe_global_names(Path(path))
            what = f" ({', '.join(names)})" if names else ""
            raise UnsafeCheckpointError(
                f"checkpoint {name} carries pickled Python objects{what} that are not plain weights; "
                f"refusing to load it with weights_only=True because unpickling could run code. "
                f"If you wrote this file yourself and trust it, load it with "
                f"torch.load(..., weights_only=False) and re-save its tensors."
            ) from None
        raise CorruptCheckpointError(f"checkpoint {name} is not a readable torch checkpoint: {msg.splitlines()[0]}") from None
    except FileNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001 - torch's readers raise RuntimeError, EOFError, struct.error, ...
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise CorruptCheckpointError(
            f"checkpoint {name} is truncated or corrupt (not a readable torch checkpoint): "
            f"{type(e).__name__}: {first[:300]}"
        ) from None
    if not isinstance(obj, Mapping):
        raise CorruptCheckpointError(
            f"checkpoint {name} holds a {type(obj).__name__}, not a mapping (a Lightning checkpoint is a dict "
            f"with a 'state_dict')"
        )
    return dict(obj)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning ``CheckpointIO``: atomic, fsync-ed writes; ``weights_only=True`` reads.

    Install with ``Trainer(plugins=[AtomicCheckpointIO()])`` (``conf/trainer/default.yaml``
    does).  ``allow_pickle=True`` loads with ``weights_only=False``: only for files you
    wrote yourself with code that stores objects.
    """

    def __init__(self, allow_pickle: bool = False) -> None:
        super().__init__()
        self.allow_pickle = bool(allow_pickle)

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(
                f"{type(self).__name__}.save_checkpoint does not take storage_options, got {storage_options!r}"
            )
        atomic_save(checkpoint, path)

    def load_checkpoint(self, path: Any, map_location: Any = lambda storage, loc: storage,
                        weights_only: bool | None = None) -> dict[str, Any]:
        if self.allow_pickle and weights_only is not True:
            return super().load_checkpoint(path, map_location=map_location, weights_only=False)
        if weights_only is False:
            raise UnsafeCheckpointError(
                f"checkpoint {path}: weights_only=False was asked, but {type(self).__name__} only loads with "
                f"weights_only=True (set allow_pickle=True on the plugin to load trusted pickles)"
            )
        return load_checkpoint(path, map_location=map_location)
