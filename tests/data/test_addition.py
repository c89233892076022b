"""Integer addition as character sequences."""

from __future__ import annotations

import pytest
import torch

from recur_attn.data.addition import VOCAB, AdditionDataModule, decode, sequence_accuracy


@pytest.mark.parametrize("reverse", [False, True])
def test_sums_targets_and_lengths(reverse):
    dm = AdditionDataModule(max_digits=15, n_train=300, n_val=50, n_test=50, batch_size=16, reverse=reverse)
    dm.setup()
    ds = dm.datasets["test"]
    tok, y, lengths = ds.tensors["tokens"], ds.tensors["y"], ds.tensors["lengths"]
    assert tok.shape[1] == dm.max_len == 48
    for j in range(len(ds)):
        n = int(lengths[j])
        s = decode(tok[j, :n])
        a, rest = s.split("+")
        b, total = rest.split("=")
        if reverse:
            a, b, total = a[::-1], b[::-1], total[::-1]
        assert int(a) + int(b) == int(total)
        assert 1 <= len(a) <= 15 and 1 <= len(b) <= 15
        scored = y[j] != -100
        eq = s.index("=")
        # scored steps: from "=" to the last input step; their labels spell the sum and "."
        assert torch.equal(scored.nonzero().flatten(), torch.arange(eq, n))
        assert "".join(VOCAB[int(t)] for t in y[j][scored]) == s[eq + 1:] + "."
        assert torch.all(tok[j, n:] == -1)
    b = next(iter(dm.train_dataloader()))
    assert b["x"].shape == (16, 48, len(VOCAB)) and b["y"].shape == (16, 48)
    assert torch.all(b["x"].sum(-1) <= 1)


def test_held_out_sums_are_not_in_training():
    dm = AdditionDataModule(max_digits=2, n_train=3000, n_val=500, n_test=500)
    dm.setup()

    def pairs(split):
        ds = dm.datasets[split]
        return {decode(ds.tensors["tokens"][j, : int(ds.tensors["lengths"][j])]).split("=")[0]
                for j in range(len(ds))}

    train = pairs("train")
    assert not (pairs("val") & train) and not (pairs("test") & train)
    assert dm.dims["target"] == "per_step_classification" and dm.dims["readout"] == "all"


def test_sequence_accuracy_needs_every_scored_step():
    y = torch.tensor([[-100, 1, 2], [-100, 0, 0]])
    logits = torch.zeros(2, 3, 3)
    logits[0, 1, 1] = logits[0, 2, 2] = 1  # all right
    logits[1, 1, 0] = logits[1, 2, 1] = 1  # last one wrong
    logits[0, 0, 2] = 5  # unscored step: ignored
    assert float(sequence_accuracy(logits, y)) == 0.5


def test_bad_arguments():
    with pytest.raises(ValueError, match="min_digits"):
        AdditionDataModule(max_digits=3, min_digits=4)
    with pytest.raises(ValueError, match="max_digits"):
        AdditionDataModule(max_digits=18)


def test_count_balanced_parity_changes_only_the_training_counts():
    from recur_attn.data.parity_counts import CountBalancedParityDataModule
    from recur_attn.data.longlag import ParityDataModule

    k = 20
    dm = CountBalancedParityDataModule(k_bits=k, n_train=4000, n_val=300, n_test=300, seed=5)
    dm.setup()
    x, y = dm.datasets["train"].tensors["x"], dm.datasets["train"].tensors["y"]
    counts = x.sum(1).long()
    assert torch.equal(y, counts % 2)
    hist = torch.bincount(counts, minlength=k + 1).float()
    assert hist.min() > 4000 / (k + 1) * 0.6  # uniform: the extreme counts 0 and k occur too
    ref = ParityDataModule(k_bits=k, as_sequence=False, n_train=4000, n_val=300, n_test=300, seed=5)
    ref.setup()
    for split in ("val", "test"):
        torch.testing.assert_close(dm.datasets[split].tensors["x"], ref.datasets[split].tensors["x"])
    assert ref.datasets["train"].tensors["x"].sum(1).min() > 0  # binomial: 0 ones essentially never
    with pytest.raises(ValueError, match="valid choices"):
        CountBalancedParityDataModule(train_counts="beta")
