"""A training DataLoader that resumes mid-epoch at the exact batch.

Lightning saves, in every checkpoint, the ``state_dict()`` of each training loader that
has one (``fit_loop.state_dict()["combined_loader"]``) and calls ``load_state_dict()``
on the new loader before it asks for its iterator when fitting resumes.
:class:`ResumableDataLoader` (a ``torch.utils.data.DataLoader``) provides both:

* the state of its shuffling ``generator`` when the current epoch's iterator was
  made (the iterator draws the workers' base seed and then the epoch's permutation
  from it), and
* the number of batches of this epoch the training loop has consumed (and, once the epoch is done,
  the generator's state for the next one).

On resume the generator is put back to that state, the iterator is rebuilt (same
permutation, same worker seeds), and the consumed batches are skipped: by advancing
the index sampler without loading anything (``num_workers=0``) or by drawing and
dropping them (worker processes).  The next batch is the one the interrupted run
would have trained on next, so a run resumed from a step checkpoint sees the same
batches as one that was never stopped.  When the checkpoint was taken after the
epoch's last batch, the next iterator starts the following epoch from the
generator's state after this epoch's draws.

Counting: Lightning's training fetcher (``_PrefetchDataFetcher``) reads one batch
ahead of the step being trained only when the loader has no length; a sized loader
is read batch by batch.  So at a checkpoint the consumed count is the number of
batches handed out (minus :data:`LIGHTNING_PREFETCH` for an unsized loader that is
not exhausted).  ``tests/reliability`` checks the resulting batches against an
uninterrupted run.

Under DDP Lightning swaps the sampler for a ``DistributedSampler`` (a permutation
from ``(seed, epoch)``); skipping by the consumed count still applies.

Limit: with ``num_workers > 0`` and ``persistent_workers=True`` torch draws the workers'
base seed from the generator only when the first epoch's iterator is built, not at later
epochs, while a resumed process builds a new iterator (and draws it) at any epoch; so a
run resumed after its first epoch sees another permutation.  Use
``persistent_workers=False`` (or ``num_workers=0``) where exact resume matters.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader
from torch.utils.data.dataloader import _SingleProcessDataLoaderIter

__all__ = ["LIGHTNING_PREFETCH", "ResumableDataLoader"]

#: batches Lightning's training data fetcher holds ahead of the running step (unsized loaders)
LIGHTNING_PREFETCH = 1
_VERSION = 2


class _CountingIterator(Iterator):
    def __init__(self, loader: ResumableDataLoader, it: Iterator, already: int) -> None:
        self.loader = loader
        self.it = it
        self.loader._yielded = already
        self.loader._exhausted = False

    def __iter__(self) -> _CountingIterator:
        return self

    def __next__(self) -> Any:
        try:
            batch = next(self.it)
        except StopIteration:
            self.loader._exhausted = True
            raise
        self.loader._yielded += 1
        return batch

    def __len__(self) -> int:
        return len(self.it)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> Any:  # _shutdown_workers etc. of the torch iterator
        return getattr(self.it, name)


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` with ``state_dict`` / ``load_state_dict`` for exact mid-epoch resume.

    Takes the arguments of ``torch.utils.data.DataLoader``.  Shuffle with
    ``shuffle=True, generator=torch.Generator().manual_seed(s)`` (without a generator
    the permutation would come from the global RNG and could not be replayed).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._start_state: torch.Tensor | None = None
        self._yielded = 0
        self._exhausted = False
        self._pending: dict[str, Any] | None = None

    # -- state --------------------------------------------------------------------------
    def _generator_state(self) -> torch.Tensor | None:
        return None if self.generator is None else self.generator.get_state().clone()

    def _len_or_none(self) -> int | None:
        try:
            return len(self)
        except TypeError:
            return None

    def state_dict(self) -> dict[str, Any]:
        n = self._len_or_none()
        if self._exhausted or n is not None:
            consumed = self._yielded
        else:
            consumed = max(self._yielded - LIGHTNING_PREFETCH, 0)
        complete = self._exhausted or (n is not None and consumed >= n)
        return {
            "version": _VERSION,
            "epoch_start_generator_state": self._start_state,
            # when the epoch is done: the generator as the next epoch's iterator will find it
            # (the sampler may draw again when it runs out, e.g. for a short last batch)
            "next_epoch_generator_state": self._generator_state() if complete else None,
            "consumed": int(consumed),
            "epoch_complete": bool(complete),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not isinstance(state_dict, dict) or state_dict.get("version") != _VERSION:
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: unknown state {state_dict!r:.200}; expected a dict with "
                f"version={_VERSION} written by this class"
            )
        self._pending = dict(state_dict)

    # -- iteration ----------------------------------------------------------------------
    def __iter__(self) -> Iterator:  # type: ignore[override]
        pending, self._pending = self._pending, None
        skip = 0
        if pending is not None and self.generator is not None:
            if pending["epoch_complete"]:
                # the next epoch: continue from the generator as the finished epoch left it
                if pending["next_epoch_generator_state"] is not None:
                    self.generator.set_state(pending["next_epoch_generator_state"])
            elif pending["epoch_start_generator_state"] is not None:
                self.generator.set_state(pending["epoch_start_generator_state"])
        if pending is not None and not pending["epoch_complete"]:
            skip = int(pending["consumed"])
        self._start_state = self._generator_state()
        it = super().__iter__()
        if skip:
            n = self._len_or_none()
            if n is not None and skip > n:
                raise ValueError(f"cannot resume at batch {skip}: the loader has only {n} batches an epoch")
            if isinstance(it, _SingleProcessDataLoaderIter):
                for _ in range(skip):  # advance the indices only: nothing is loaded
                    next(it._sampler_iter)
                it._num_yielded += skip
            else:
                for _ in range(skip):
                    next(it)
        return _CountingIterator(self, it, skip)
