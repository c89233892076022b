"""ResumableDataLoader on its own: state, skip, next epoch, bad state."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from recur_attn.data.resumable import ResumableDataLoader


def _loader(seed=3, n=23, bs=4):
    ds = TensorDataset(torch.arange(n))
    return ResumableDataLoader(ds, batch_size=bs, shuffle=True, generator=torch.Generator().manual_seed(seed))


def _epochs(loader, k):
    return [[b[0].tolist() for b in loader] for _ in range(k)]


@pytest.mark.parametrize("consumed", [0, 1, 3, 6])
def test_resume_mid_epoch_gives_the_remaining_batches(consumed):
    ref = _epochs(_loader(), 3)  # 6 batches an epoch (the last one short)
    a = _loader()
    it = iter(a)
    [next(it) for _ in range(consumed)]  # the checkpoint is taken after `consumed` batches
    state = a.state_dict()
    assert state["consumed"] == consumed and state["epoch_complete"] is (consumed == 6)
    b = _loader(seed=999)  # a fresh process: the generator's own seed does not matter
    b.load_state_dict(state)
    rest = [x[0].tolist() for x in b]
    assert rest == (ref[0][consumed:] if consumed < 6 else ref[1])
    assert _epochs(b, 1)[0] == (ref[1] if consumed < 6 else ref[2])  # and the epochs after it


def test_resume_in_a_later_epoch():
    ref = _epochs(_loader(), 3)
    a = _loader()
    _epochs(a, 1)
    it = iter(a)
    next(it), next(it)
    b = _loader(seed=5)
    b.load_state_dict(a.state_dict())
    assert [x[0].tolist() for x in b] == ref[1][2:]
    assert _epochs(b, 1)[0] == ref[2]


def test_unsized_prefetch_accounting_and_bad_state():
    with pytest.raises(ValueError, match="unknown state"):
        _loader().load_state_dict({"consumed": 3})
    a = _loader()
    a.load_state_dict({**_loader().state_dict(), "consumed": 99, "epoch_complete": False})
    with pytest.raises(ValueError, match="cannot resume at batch 99: the loader has only 6 batches"):
        iter(a)
