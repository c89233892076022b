"""Tests of the synthetic long-lag DataModules (recur_attn.data.longlag)."""

from __future__ import annotations

import pytest
import torch

from recur_attn.data import AddingDataModule, CopyDataModule, ParityDataModule, TemporalOrderDataModule

SMALL = dict(n_train=300, n_val=100, n_test=100, batch_size=32)

FACTORIES = {
    "adding_modern": lambda **kw: AddingDataModule(seq_len=50, variant="modern", **kw),
    "adding_hochreiter": lambda **kw: AddingDataModule(seq_len=50, variant="hochreiter", **kw),
    "copy": lambda **kw: CopyDataModule(n_symbols=5, vocab=6, delay=20, **kw),
    "copy_blanks": lambda **kw: CopyDataModule(n_symbols=5, vocab=6, delay=20, score_blanks=True, **kw),
    "temporal2": lambda **kw: TemporalOrderDataModule(seq_len=100, n_relevant=2, **kw),
    "temporal3": lambda **kw: TemporalOrderDataModule(seq_len=60, n_relevant=3, **kw),
    "parity_seq": lambda **kw: ParityDataModule(k_bits=12, as_sequence=True, **kw),
    "parity_vec": lambda **kw: ParityDataModule(k_bits=12, as_sequence=False, **kw),
}


def full_split(dm, split: str = "train") -> dict[str, torch.Tensor]:
    """The whole split as one batch, as the model sees it."""
    if not dm.datasets:
        dm.setup("fit")
    ds = dm.datasets[split]
    return ds.__getitems__(list(range(len(ds))))


def make(name: str, n: int, seed: int = 0):
    dm = FACTORIES[name](n_train=n, n_val=10, n_test=10, seed=seed)
    dm.setup("fit")
    return dm, full_split(dm)


# ---------------------------------------------------------------- generic properties
@pytest.mark.parametrize("name", list(FACTORIES))
def test_deterministic_given_seed(name):
    a, b, c = (FACTORIES[name](seed=s, **SMALL) for s in (3, 3, 4))
    for dm in (a, b, c):
        dm.setup("fit")
    for split in ("train", "val", "test"):
        ta, tb, tc = (full_split(dm, split) for dm in (a, b, c))
        assert ta.keys() == tb.keys()
        for k in ta:
            assert torch.equal(ta[k], tb[k]), (split, k)
        assert not torch.equal(ta["x"], tc["x"]), split
    # the splits are different draws
    tr, va = full_split(a, "train"), full_split(a, "val")
    assert not torch.equal(tr["x"][:10], va["x"][:10])
    # the shuffled training order is seeded too
    for k, v in next(iter(a.train_dataloader())).items():
        assert torch.equal(v, next(iter(b.train_dataloader()))[k])


@pytest.mark.parametrize("name", list(FACTORIES))
def test_batches_and_dims(name):
    dm = FACTORIES[name](seed=0, **SMALL)
    assert dm.hparams["seed"] == 0 and dm.hparams["batch_size"] == 32
    dm.setup("fit")
    dims = dm.dims
    assert dims["target"] in ("regression", "classification", "per_step_classification")
    assert dims["readout"] in ("last", "all")
    seen = 0
    for batch in dm.val_dataloader():
        x, y = batch["x"], batch["y"]
        B = x.shape[0]
        seen += B
        assert x.dtype == torch.float32
        if name == "parity_vec":
            assert set(batch) == {"x", "y"}
            assert x.shape == (B, dims["input_size"])
        else:
            assert set(batch) == {"x", "y", "lengths"}
            assert x.shape == (B, dims["max_len"], dims["input_size"])
            assert batch["lengths"].dtype == torch.int64 and batch["lengths"].shape == (B,)
            assert int(batch["lengths"].max()) <= x.shape[1]
        if dims["target"] == "regression":
            assert y.dtype == torch.float32 and y.shape == (B,)
        elif dims["target"] == "classification":
            assert y.dtype == torch.int64 and y.shape == (B,)
            assert 0 <= int(y.min()) and int(y.max()) < dims["output_size"]
        else:
            assert y.dtype == torch.int64 and y.shape == x.shape[:2]
            scored = y[y != -100]
            assert 0 <= int(scored.min()) and int(scored.max()) < dims["output_size"]
    assert seen == 100
    # single-item access (default collate path) agrees with the batched one
    ds = dm.datasets["train"]
    one, many = ds[7], ds.__getitems__([7])
    for k in one:
        assert torch.equal(one[k], many[k][0])


def test_worker_loader_matches():
    dm = FACTORIES["copy"](seed=1, num_workers=1, **SMALL)
    dm.setup("fit")
    plain = FACTORIES["copy"](seed=1, **SMALL)
    plain.setup("fit")
    for b1, b2 in zip(dm.val_dataloader(), plain.val_dataloader()):
        for k in b1:
            assert torch.equal(b1[k], b2[k])


# ---------------------------------------------------------------- adding problem
def test_adding_modern_properties():
    T = 50
    dm, d = make("adding_modern", 2000)
    x, y, lengths = d["x"], d["y"], d["lengths"]
    values, markers = x[..., 0], x[..., 1]
    assert values.min() >= 0 and values.max() <= 1
    assert set(markers.unique().tolist()) == {0.0, 1.0}
    assert torch.all(markers.sum(1) == 2)
    assert torch.all(markers[:, : T // 2].sum(1) == 1) and torch.all(markers[:, T // 2 :].sum(1) == 1)
    torch.testing.assert_close(y, (values * markers).sum(1))
    assert torch.all(lengths == T)


def test_adding_modern_mean_predictor_mse():
    dm = AddingDataModule(seq_len=100, n_train=100_000, n_val=1, n_test=1, seed=5)
    d = dm.generate(100_000, torch.Generator().manual_seed(5))
    y = d["y"].double()
    assert abs(y.var().item() - 1 / 6) < 0.003
    assert abs(((y - 1.0) ** 2).mean().item() - 1 / 6) < 0.003  # the constant predictor 1


def test_adding_hochreiter_properties():
    T = 50
    dm, d = make("adding_hochreiter", 4000)
    x, y, lengths = d["x"], d["y"], d["lengths"]
    n, max_len, _ = x.shape
    assert max_len == T + T // 10
    assert lengths.min() == T and lengths.max() == T + T // 10  # both ends reached
    values, markers = x[..., 0], x[..., 1]
    steps = torch.arange(max_len)[None, :]
    pad = steps >= lengths[:, None]
    assert torch.all(values[pad] == 0) and torch.all(markers[pad] == 0)
    assert values.min() >= -1 and values.max() <= 1 and values.min() < -0.99
    assert set(markers.unique().tolist()) <= {-1.0, 0.0, 1.0}
    ones = markers == 1
    assert torch.all(ones.sum(1) == 2)
    first = ones.float().argmax(1)  # the earlier marked step
    last = max_len - 1 - ones.flip(1).float().argmax(1)
    assert torch.all(first < T // 2) and torch.all(last < T // 2)
    # one marked step is among the first ten; the other may come before or after it
    assert torch.all(first < 10)
    assert torch.any(last >= 10) and torch.any(last < 10)
    # -1 at the first step (unless marked) and at the last true step, nowhere else
    rows = torch.arange(n)
    first_marked = ones[:, 0]
    assert torch.all(markers[~first_marked, 0] == -1)
    assert torch.all(markers[rows, lengths - 1] == -1)
    assert torch.all((markers == -1).sum(1) == 2 - first_marked.long())
    # X1 := 0 when the first step is marked (about 1 in 10 sequences)
    assert 450 < int(first_marked.sum()) < 650  # P = 1/10 + 9/10 * 1/(T//2 - 1) ~ 0.14
    assert torch.all(values[first_marked, 0] == 0)
    X1, X2 = values[rows, first], values[rows, last]
    torch.testing.assert_close(y, 0.5 + (X1 + X2) / 4)
    assert y.min() >= 0 and y.max() <= 1


# ---------------------------------------------------------------- copy task
@pytest.mark.parametrize("score_blanks", [False, True])
def test_copy_targets(score_blanks):
    S, V, D = 5, 6, 20
    dm, d = make("copy_blanks" if score_blanks else "copy", 500)
    x, y = d["x"], d["y"]
    T = D + 2 * S
    assert x.shape == (500, T, V + 2) and torch.all(d["lengths"] == T)
    assert torch.all(x.sum(-1) == 1)  # one-hot
    sym = x.argmax(-1)
    blank, delim = V, V + 1
    symbols = sym[:, :S]
    assert torch.all(symbols < V)
    assert torch.all(sym[:, S + D - 1] == delim)
    rest = torch.cat([sym[:, S : S + D - 1], sym[:, S + D :]], dim=1)
    assert torch.all(rest == blank)
    assert torch.equal(y[:, T - S :], symbols)
    fill = V if score_blanks else -100
    assert torch.all(y[:, : T - S] == fill)
    assert dm.dims["output_size"] == V + int(score_blanks)
    # the symbols to copy are uniform over the vocabulary
    counts = torch.bincount(symbols.flatten(), minlength=V)
    assert counts.min() > 0.7 * counts.float().mean()


# ---------------------------------------------------------------- temporal order
@pytest.mark.parametrize("name,T,windows", [
    ("temporal2", 100, [(10, 20), (50, 60)]),
    ("temporal3", 60, [(6, 12), (20, 26), (40, 46)]),  # (10,20),(33,43),(66,76) * 60/100, rounded
])
def test_temporal_order(name, T, windows):
    dm, d = make(name, 3000)
    x, y, lengths = d["x"], d["y"], d["lengths"]
    n, max_len, F = x.shape
    assert F == 8 and max_len == T + T // 10
    assert lengths.min() == T and lengths.max() == T + T // 10
    steps = torch.arange(max_len)[None, :]
    inside = steps < lengths[:, None]
    assert torch.all(x.sum(-1) == inside.float())  # one-hot inside, zeros past the end
    sym = torch.where(inside, x.argmax(-1), -1)
    rows = torch.arange(n)
    X, Y, B, E = 4, 5, 6, 7
    assert torch.all(sym[:, 0] == E) and torch.all(sym[rows, lengths - 1] == B)
    relevant = (sym == X) | (sym == Y)
    k = len(windows)
    assert torch.all(relevant.sum(1) == k)
    # everything else is a distractor a-d
    middle = inside.clone()
    middle[:, 0] = False
    middle[rows, lengths - 1] = False
    assert torch.all(sym[middle & ~relevant] < 4)
    pos = relevant.nonzero()[:, 1].view(n, k)  # sorted per row
    expected = torch.zeros(n, dtype=torch.long)
    for j, (lo, hi) in enumerate(windows):
        assert pos[:, j].min() == lo and pos[:, j].max() == hi
        expected = 2 * expected + (sym[rows, pos[:, j]] == Y).long()
    assert torch.equal(y, expected)
    assert dm.dims["output_size"] == 2**k
    counts = torch.bincount(y, minlength=2**k)
    assert counts.min() > 0.7 * n / 2**k


def test_temporal_order_class_names():
    dm, d = make("temporal2", 200)
    sym = d["x"].argmax(-1)
    for i in range(20):
        rel = [TemporalOrderDataModule.SYMBOLS[s] for s in sym[i].tolist() if s in (4, 5)][:2]
        assert ["XX", "XY", "YX", "YY"][int(d["y"][i])] == "".join(rel)


# ---------------------------------------------------------------- parity
@pytest.mark.parametrize("as_sequence", [True, False])
def test_parity_labels(as_sequence):
    dm, d = make("parity_seq" if as_sequence else "parity_vec", 1000)
    x, y = d["x"], d["y"]
    bits = x.squeeze(-1) if as_sequence else x
    assert bits.shape == (1000, 12)
    assert set(bits.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(y, bits.long().sum(1) % 2)
    # an explicit XOR fold, independent of the sum
    fold = torch.zeros(1000, dtype=torch.long)
    for j in range(12):
        fold = fold ^ bits[:, j].long()
    assert torch.equal(y, fold)
    assert 400 < int(y.sum()) < 600
    if as_sequence:
        assert torch.all(d["lengths"] == 12)
        assert dm.dims["input_size"] == 1
    else:
        assert "lengths" not in d and dm.dims["input_size"] == 12 and dm.dims["sequence"] is False


# ---------------------------------------------------------------- bad arguments
@pytest.mark.parametrize("factory,match", [
    (lambda: AddingDataModule(variant="classic"), "valid choices: 'modern', 'hochreiter'"),
    (lambda: AddingDataModule(seq_len=1), "seq_len"),
    (lambda: AddingDataModule(seq_len=19, variant="hochreiter"), "seq_len"),
    (lambda: AddingDataModule(n_train=0), "n_train"),
    (lambda: AddingDataModule(n_val=-1), "n_val"),
    (lambda: AddingDataModule(n_test=0), "n_test"),
    (lambda: AddingDataModule(batch_size=0), "batch_size"),
    (lambda: AddingDataModule(num_workers=-1), "num_workers"),
    (lambda: AddingDataModule(seq_len=100.5), "seq_len"),
    (lambda: CopyDataModule(n_symbols=0), "n_symbols"),
    (lambda: CopyDataModule(vocab=1), "vocab"),
    (lambda: CopyDataModule(delay=0), "delay"),
    (lambda: CopyDataModule(score_blanks="yes"), "score_blanks"),
    (lambda: TemporalOrderDataModule(n_relevant=4), "valid choices: 2, 3"),
    (lambda: TemporalOrderDataModule(seq_len=10), "seq_len"),
    (lambda: ParityDataModule(k_bits=0), "k_bits"),
    (lambda: ParityDataModule(as_sequence="no"), "as_sequence"),
])
def test_bad_arguments(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()


def test_loader_before_setup_raises():
    with pytest.raises(RuntimeError, match="setup"):
        ParityDataModule(**SMALL).train_dataloader()
