"""Batched beam search and greedy decoding over any step function.

A decoder is given to the search as one function::

    log_probs, state = step(tokens, state)
    # tokens (N,) long: the last token of each hypothesis
    # log_probs (N, V): log p(next token | hypothesis)
    # state: a tensor, or a tuple / list / dict of them (None allowed), each
    #        with the hypotheses along dim 0

The search runs all B sentences and all K beams of each at once (N = B*K).
It repeats the initial state K times (``repeat_interleave``: rows b*K..b*K+K-1
belong to sentence b) and reorders it with ``index_select`` along dim 0 after
every step. Anything the step function needs that does not change while
decoding (encoder outputs, image features) should be captured by the step
function already repeated with :func:`repeat_beams`, so it is not reordered.

Scores are sums of log-probabilities; hypotheses are ranked by the score
divided by the length penalty of Wu et al. (2016, GNMT)::

    lp(L) = ((5 + L) / 6) ** alpha        (alpha = 0: no normalisation)

where L counts the generated tokens including the end token. A hypothesis that
has emitted ``eos_id`` keeps its score and is continued with ``pad_id`` at no
cost. The search stops when every beam of every sentence has ended or after
``max_len`` tokens; the beams that have not ended by then are returned too
(``finished`` tells which did), so there is always a result. When K exceeds
the number of hypotheses there are (K > V at the first step), the extra
beams have score -inf, count as ended and come last.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

StepFn = Callable[[Tensor, Any], tuple[Tensor, Any]]


def map_state(state: Any, fn: Callable[[Tensor], Tensor]) -> Any:
    """Apply ``fn`` to every tensor of a nested tuple / list / dict (None kept)."""
    if state is None:
        return None
    if isinstance(state, Tensor):
        return fn(state)
    if isinstance(state, tuple):
        return tuple(map_state(s, fn) for s in state)
    if isinstance(state, list):
        return [map_state(s, fn) for s in state]
    if isinstance(state, dict):
        return {k: map_state(v, fn) for k, v in state.items()}
    raise ValueError(f"decoder state may hold tensors, tuples, lists, dicts and None; "
                     f"got {type(state).__name__}")


def repeat_beams(state: Any, beam_size: int) -> Any:
    """Rows (B, ...) -> (B*K, ...): each row repeated K times, consecutively."""
    return map_state(state, lambda t: t.repeat_interleave(beam_size, dim=0))


def reorder_state(state: Any, index: Tensor) -> Any:
    """Select rows ``index`` (N,) along dim 0 of every tensor of the state."""
    return map_state(state, lambda t: t.index_select(0, index))


def length_penalty(lengths: Tensor, alpha: float) -> Tensor:
    """GNMT's lp(L) = ((5 + L) / 6) ** alpha."""
    if alpha == 0:
        return torch.ones_like(lengths, dtype=torch.float)
    return ((5.0 + lengths.float()) / 6.0) ** alpha


@dataclass
class BeamResult:
    """Hypotheses of a beam search, best first within each sentence.

    tokens (B, K, L) long: generated tokens, the end token included, pad after;
    lengths (B, K): tokens up to and including the end token (all L if none);
    scores (B, K): log-probability / lp(length), the ranking key, descending;
    log_probs (B, K): the summed log-probabilities;
    finished (B, K) bool: whether the hypothesis emitted the end token.
    """

    tokens: Tensor
    lengths: Tensor
    scores: Tensor
    log_probs: Tensor
    finished: Tensor

    def best(self) -> Tensor:
        """(B, L) tokens of the best hypothesis of each sentence."""
        return self.tokens[:, 0]


@torch.no_grad()
def beam_search(step: StepFn, state: Any, batch_size: int, beam_size: int, *, bos_id: int,
                eos_id: int, pad_id: int, max_len: int, alpha: float = 0.0,
                device: torch.device | str | None = None) -> BeamResult:
    """Beam search for ``batch_size`` sentences at once; see the module docstring.

    ``state`` holds the initial decoder state for the B sentences (dim 0 = B).
    """
    if beam_size < 1 or max_len < 1:
        raise ValueError(f"beam_size and max_len must be >= 1, got {beam_size} and {max_len}")
    B, K = batch_size, beam_size
    state = repeat_beams(state, K)
    tokens = torch.full((B * K,), bos_id, dtype=torch.long, device=device)
    scores = torch.zeros(B, K, device=device)
    scores[:, 1:] = float("-inf")  # all beams start identical: keep one alive
    lengths = torch.zeros(B, K, dtype=torch.long, device=device)
    finished = torch.zeros(B, K, dtype=torch.bool, device=device)
    history = torch.zeros(B, K, 0, dtype=torch.long, device=device)
    offsets = torch.arange(B, device=device).unsqueeze(1) * K  # (B, 1)
    cont: Tensor | None = None
    for t in range(max_len):
        logp, state = step(tokens, state)  # (B*K, V)
        V = logp.shape[-1]
        logp = logp.float().view(B, K, V)
        if cont is None:
            cont = torch.full((V,), float("-inf"), device=logp.device)
            cont[pad_id] = 0.0  # an ended hypothesis continues with pad, free
        logp = torch.where(finished.unsqueeze(-1), cont, logp)
        cand = scores.unsqueeze(-1) + logp  # (B, K, V)
        new_len = lengths + (~finished).long()  # (B, K)
        norm = cand / length_penalty(new_len, alpha).unsqueeze(-1)  # (B, K, V)
        _, idx = norm.view(B, K * V).topk(K, dim=1)  # (B, K), sorted
        beam, tok = idx // V, idx % V
        scores = cand.view(B, K * V).gather(1, idx)
        lengths = new_len.gather(1, beam)
        # a beam whose score is -inf (K larger than the hypotheses there are) is dead: ended
        finished = finished.gather(1, beam) | (tok == eos_id) | torch.isneginf(scores)
        history = torch.cat([history.gather(1, beam.unsqueeze(-1).expand(-1, -1, t)),
                             tok.unsqueeze(-1)], dim=-1)  # (B, K, t+1)
        state = reorder_state(state, (offsets + beam).view(-1))
        tokens = tok.view(-1)
        if bool(finished.all()):
            break
    norm_scores = scores / length_penalty(lengths, alpha)
    order = norm_scores.argsort(dim=1, descending=True, stable=True)
    return BeamResult(
        tokens=history.gather(1, order.unsqueeze(-1).expand_as(history)),
        lengths=lengths.gather(1, order),
        scores=norm_scores.gather(1, order),
        log_probs=scores.gather(1, order),
        finished=finished.gather(1, order),
    )


@torch.no_grad()
def greedy_search(step: StepFn, state: Any, batch_size: int, *, bos_id: int, eos_id: int,
                  pad_id: int, max_len: int,
                  device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """Greedy decoding: (tokens (B, L) with pad after the end token, lengths (B,))."""
    tokens = torch.full((batch_size,), bos_id, dtype=torch.long, device=device)
    finished = torch.zeros(batch_size, dtype=torch.bool, device=device)
    lengths = torch.zeros(batch_size, dtype=torch.long, device=device)
    out = []
    for _ in range(max_len):
        logp, state = step(tokens, state)  # (B, V)
        tok = logp.argmax(dim=-1)
        tok = torch.where(finished, torch.full_like(tok, pad_id), tok)
        lengths = lengths + (~finished).long()
        finished = finished | (tok == eos_id)
        out.append(tok)
        tokens = tok
        if bool(finished.all()):
            break
    return torch.stack(out, dim=1), lengths
