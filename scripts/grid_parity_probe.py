"""Quick plain-torch probe of k-bit parity with a 1-D Grid LSTM or a feed-forward net.

Fresh random bit strings every step (an unlimited number of samples), a fixed
10k test set, stop at test accuracy >= 0.99 or when the time budget is spent.
Prints one JSON line per run. Used to find the training settings of
``experiment=grid_parity``; the Hydra experiment is the reproducible version.

    .venv/bin/python scripts/grid_parity_probe.py --model grid --k 32 --hidden 64 --depth 6 --lr 1e-3
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch.nn import functional as F

from recur_attn.models.grid import FeedForwardNet, GridLSTM1D, count_parameters


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="grid", choices=["grid", "tanh", "relu"])
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--depth", type=int, default=6)
    ap.add_argument("--untied", action="store_true")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--opt", default="adam", choices=["adam", "rmsprop", "sgd"])
    ap.add_argument("--encoding", default="01", choices=["01", "pm1"])
    ap.add_argument("--input-act", default="identity")
    ap.add_argument("--init-memory", default="zeros")
    ap.add_argument("--every-layer", action="store_true")
    ap.add_argument("--forget-bias", type=float, default=None)
    ap.add_argument("--init-scale", type=float, default=1.0, help="multiply all initial weights")
    ap.add_argument("--scale-what", default="all", choices=["all", "proj", "block", "head"],
                    help="which parameters --init-scale multiplies")
    ap.add_argument("--match-params", type=int, default=0, help="FF nets: parameter count to match")
    ap.add_argument("--sym-init", type=float, default=0.0,
                    help="grid: input projection rows start all-equal, a_j ~ U(-c, c) (c = this value)")
    ap.add_argument("--train-dist", default="uniform", choices=["uniform", "count"],
                    help="count: the number of ones is uniform in 0..k (tests always use uniform strings)")
    ap.add_argument("--budget", type=float, default=120.0, help="seconds")
    ap.add_argument("--eval-every", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    if a.model == "grid":
        net = GridLSTM1D(a.k, 2, hidden_size=a.hidden, depth=a.depth, tied=not a.untied,
                         input_activation=a.input_act, init_memory=a.init_memory,
                         input_every_layer=a.every_layer, forget_bias=a.forget_bias)
    else:
        kw = {"num_params": a.match_params} if a.match_params else {"hidden_size": a.hidden}
        net = FeedForwardNet(a.k, 2, depth=a.depth, activation=a.model, **kw)
    if a.init_scale != 1.0:
        with torch.no_grad():
            if a.scale_what == "all":
                params = list(net.parameters())
            else:
                params = list(getattr(net, a.scale_what if a.model == "grid" else "layers").parameters())
            for p in params:
                p.mul_(a.init_scale)
    if a.sym_init:
        first = net.proj if a.model == "grid" else net.layers[0]
        with torch.no_grad():
            a_j = torch.empty(first.out_features, 1).uniform_(-a.sym_init, a.sym_init)
            first.weight.copy_(a_j.expand(-1, a.k))
            first.bias.uniform_(-a.sym_init * a.k / 2, a.sym_init * a.k / 2)
    opt = {"adam": lambda: torch.optim.Adam(net.parameters(), lr=a.lr),
           "rmsprop": lambda: torch.optim.RMSprop(net.parameters(), lr=a.lr),
           "sgd": lambda: torch.optim.SGD(net.parameters(), lr=a.lr, momentum=0.9)}[a.opt]()
    g = torch.Generator().manual_seed(1000 + a.seed)

    def sample(n, dist="uniform"):
        if dist == "count":
            ones = torch.randint(0, a.k + 1, (n, 1), generator=g)
            ranks = torch.rand(n, a.k, generator=g).argsort(1).argsort(1)
            bits = (ranks < ones).long()
        else:
            bits = torch.randint(0, 2, (n, a.k), generator=g)
        x = bits.float() if a.encoding == "01" else bits.float() * 2 - 1
        return x, bits.sum(1) % 2

    xt, yt = sample(10_000)
    t0 = time.time()
    step, acc, best, solved_at = 0, 0.0, 0.0, None
    curve = []
    while time.time() - t0 < a.budget:
        x, y = sample(a.batch, a.train_dist)
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % a.eval_every == 0:
            with torch.no_grad():
                acc = (net(xt).argmax(1) == yt).float().mean().item()
            best = max(best, acc)
            curve.append((step, round(time.time() - t0, 1), round(loss.item(), 4), round(acc, 4)))
            if acc >= 0.99:
                solved_at = time.time() - t0
                break
    print(json.dumps({**vars(a), "params": count_parameters(net), "steps": step, "acc": acc, "best": best,
                      "solved": solved_at is not None,
                      "time_s": round(solved_at if solved_at else time.time() - t0, 1),
                      "curve": curve[-5:]}), flush=True)


if __name__ == "__main__":
    main()
