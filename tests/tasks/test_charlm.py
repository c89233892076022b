"""TBPTT in CharLMTask: the state is carried across batches, detached, and reset where flagged."""

from functools import partial

import pytest
import torch

from recur_attn.models.charlm import CharLM
from recur_attn.tasks.charlm import CharLMTask


def make_task(cell):
    torch.manual_seed(0)
    net = CharLM(vocab_size=7, cell=cell, embedding_size=5, hidden_size=6, num_layers=2).double().eval()
    return CharLMTask(net, optimizer=partial(torch.optim.SGD, lr=0.1))


def batch(x, reset):
    return {"x": x, "y": torch.roll(x, -1, 1), "reset": torch.tensor(reset)}


@pytest.mark.parametrize("cell", ["lstm", "gru", "cifg"])
def test_state_is_carried_across_batches(cell):
    task = make_task(cell)
    g = torch.Generator().manual_seed(1)
    stream = torch.randint(0, 7, (3, 12), generator=g)  # 3 rows, 12 characters each
    whole, _ = task.net(stream)  # (3, 12, 7): the net over the whole rows at once
    for k, chunk in enumerate(stream.split(4, dim=1)):  # three TBPTT chunks of 4
        bt = batch(chunk, [k == 0] * 3)
        _, ce = task.step_with_state(bt, "train")
        state = task.states["train"]
        for s in (state if isinstance(state, tuple) else (state,)):
            assert not s.requires_grad  # detached between chunks
        expected = torch.nn.functional.cross_entropy(
            whole[:, 4 * k : 4 * k + 4].reshape(-1, 7), bt["y"].reshape(-1), reduction="none")
        # chunked with a carried state == the whole rows at once (fails if the state were reset every batch)
        torch.testing.assert_close(ce, expected)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_loss_uses_the_carried_state_and_reset_zeroes_rows(cell):
    task = make_task(cell)
    g = torch.Generator().manual_seed(2)
    a, b = torch.randint(0, 7, (2, 2, 5), generator=g)  # two consecutive chunks, 2 rows
    task.step_with_state(batch(a, [True, True]), "train")
    loss_carried, ce_carried = task.step_with_state(batch(b, [True, False]), "train")
    # row 0 was reset: as if chunk b started fresh; row 1 continues chunk a
    fresh, _ = task.net(b)
    cont, _ = task.net(torch.cat([a, b], 1))
    y = torch.roll(b, -1, 1)
    ce0 = torch.nn.functional.cross_entropy(fresh[0], y[0], reduction="none")
    ce1 = torch.nn.functional.cross_entropy(cont[1, 5:], y[1], reduction="none")
    torch.testing.assert_close(ce_carried, torch.cat([ce0, ce1]))
    # resetting every batch would give a different loss for row 1
    assert not torch.allclose(ce1, torch.nn.functional.cross_entropy(fresh[1], y[1], reduction="none"))
    # gradients stop at the chunk boundary: backward works without retaining the graph of chunk a
    task.net.train()
    loss, _ = task.step_with_state(batch(a, [False, False]), "train")
    loss.backward()


def test_each_split_keeps_its_own_state_and_epochs_start_fresh():
    task = make_task("lstm")
    x = torch.randint(0, 7, (2, 4))
    task.step_with_state(batch(x, [True, True]), "train")
    task.step_with_state(batch(x, [True, True]), "val")
    assert task.states["train"] is not task.states["val"]
    task.on_validation_epoch_start()
    assert "val" not in task.states and "train" in task.states
    task.on_train_epoch_start()
    assert "train" not in task.states


def test_padding_targets_are_ignored():
    task = make_task("gru")
    x = torch.randint(0, 7, (1, 6))
    y = torch.roll(x, -1, 1)
    y[0, 3:] = -100
    _, ce = task.step_with_state({"x": x, "y": y, "reset": torch.tensor([True])}, "test")
    assert ce.shape == (3,)


def test_generate_is_reproducible_and_greedy_at_zero_temperature():
    task = make_task("lstm")
    prime = torch.tensor([1, 2, 3])
    s1 = task.net.generate(prime, 20, temperature=0.8, generator=torch.Generator().manual_seed(0))
    s2 = task.net.generate(prime, 20, temperature=0.8, generator=torch.Generator().manual_seed(0))
    assert s1.shape == (20,) and torch.equal(s1, s2)
    greedy = task.net.generate(prime, 3, temperature=0)
    logits, _ = task.net(prime[None])
    assert greedy[0] == logits[0, -1].argmax()
