"""Show, Attend and Tell: image-caption models (Xu et al. 2015).

An :class:`ImageEncoder` turns an image into L annotation vectors a_1..a_L
(a grid of CNN features), and :class:`ShowAttendTell` decodes a caption from
them with any cell of the zoo. One decoder step t (the paper's eqs. 4-7, with
the additive attention of Bahdanau et al. 2014):

    e_ti    = v^T tanh(W h_{t-1} + U a_i)          U a_i computed once per image
    alpha_t = softmax_i(e_ti)                       # (B, L)
    beta_t  = sigma(f_beta(h_{t-1}))                # gating scalar, (B, 1)
    z_t     = beta_t * sum_i alpha_ti a_i           # soft attention, (B, D)
    (h_t, c_t) = cell([E y_{t-1}; z_t], (h_{t-1}, c_{t-1}))
    p(y_t | a, y_<t) ~ exp(L_o(E y_{t-1} + L_h h_t + L_z z_t))   # deep output
    h_0 = tanh(f_init,h(mean_i a_i)), c_0 = tanh(f_init,c(mean_i a_i))

The loss is the negative log likelihood of the caption plus the doubly
stochastic regulariser lambda * sum_i (1 - sum_t alpha_ti)^2 (eq. 14).

Hard attention (``attention="hard"``, section 4.1): a location s_t ~
Multinoulli(alpha_t) is sampled and z_t = beta_t * a_{s_t}. Its gradient is
REINFORCE (eq. 12): the surrogate loss adds
``- lambda_r (log p(y | s, a) - b) * sum_t log p(s_t)`` with a moving-average
baseline b (b <- 0.9 b + 0.1 log p(y | s, a)) and subtracts the entropy
bonus ``lambda_e * sum_t H[s_t]``. At decoding time the hard decoder attends to
the most probable location (argmax alpha_t).

``attention="mean"`` is the baseline without attention: z_t = beta_t * mean_i a_i.

Speed: all steps of a padded batch run in one loop over the longest caption,
padding handled by masks. Everything that does not depend on h_{t-1} leaves
the loop: the key projection U a (once per image), the embedding's share of
the cell's input projection, and the deep output with its (B, T, V)
vocabulary projection (one GEMM after the loop). Per step remain the
attention over L locations and the cell's recurrent GEMMs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recur_attn.cells import RecurrentCell, build_cell
from recur_attn.layers.attention import AdditiveAttention
from recur_attn.models.beam import beam_search, greedy_search

__all__ = [
    "ATTENTION_KINDS", "BACKBONES", "ImageEncoder", "ShowAttendTell", "SmallCNN", "TorchvisionBackbone",
    "build_encoder", "doubly_stochastic_penalty",
]

PAD, START, END = 0, 1, 2
ATTENTION_KINDS = ("soft", "hard", "mean")
BACKBONES = ("small", "resnet18", "resnet34", "resnet50", "resnet101", "vgg16")


def _plain(x: Any) -> Any:
    """Mappings/sequences (OmegaConf containers included) -> dicts/lists of primitives."""
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, Sequence) and not isinstance(x, str):
        return [_plain(v) for v in x]
    return x


# --------------------------------------------------------------------------- encoders
class SmallCNN(nn.Module):
    """A small CNN for CPU experiments: blocks of conv3x3-BN-ReLU, each but the
    last followed by a 2x2 max-pool. Output (B, C_last, H', W')."""

    def __init__(self, channels: Sequence[int] = (32, 64, 128), in_channels: int = 3) -> None:
        super().__init__()
        channels = [int(c) for c in channels]
        if not channels or any(c <= 0 for c in channels):
            raise ValueError(f"channels must be a non-empty list of positive ints, got {channels!r}")
        layers: list[nn.Module] = []
        c_in = in_channels
        for k, c in enumerate(channels):
            layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
            if k < len(channels) - 1:
                layers.append(nn.MaxPool2d(2))
            c_in = c
        self.body = nn.Sequential(*layers)
        self.out_channels = channels[-1]

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class TorchvisionBackbone(nn.Module):
    """A torchvision ResNet (18/34/50/101) cut before its global pooling, or
    VGG-16's convolutional part cut before its last max-pool (conv5_3, the
    paper's 14x14x512 at 224x224 input).

    Weights come from ``weights_path`` (a state dict of the torchvision model,
    e.g. ``resnet101-63fe2227.pth``, loaded with ``weights_only=True``) or are
    random; nothing is downloaded. ``fine_tune=False`` freezes the whole
    backbone (and keeps its batch-norm statistics fixed); ``fine_tune=True``
    trains its last ``fine_tune_blocks`` blocks (ResNet: layer4, layer3, ...;
    VGG-16: conv5, conv4, ...) and keeps the rest frozen.
    """

    def __init__(self, arch: str = "resnet101", weights_path: str | None = None, fine_tune: bool = False,
                 fine_tune_blocks: int = 2) -> None:
        super().__init__()
        import torchvision

        if arch not in BACKBONES[1:]:
            raise ValueError(f"unknown backbone {arch!r}; valid choices: {', '.join(BACKBONES[1:])}")
        model = getattr(torchvision.models, arch)(weights=None)
        if weights_path is not None:
            try:
                state = torch.load(weights_path, map_location="cpu", weights_only=True)
            except FileNotFoundError:
                raise ValueError(f"weights_path {weights_path!r} does not exist (put the torchvision "
                                 f"state dict of {arch} there; nothing is downloaded)") from None
            if isinstance(state, Mapping) and "state_dict" in state:
                state = state["state_dict"]
            model.load_state_dict(state)
        if arch.startswith("resnet"):
            stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)
            blocks = [stem, model.layer1, model.layer2, model.layer3, model.layer4]
            self.out_channels = model.fc.in_features
        else:  # vgg16: five conv blocks, each ending in a max-pool; drop the last pool
            feats = list(model.features.children())[:-1]
            pools = [i for i, m in enumerate(feats) if isinstance(m, nn.MaxPool2d)]
            bounds = [0] + [i + 1 for i in pools] + [len(feats)]
            blocks = [nn.Sequential(*feats[s:e]) for s, e in zip(bounds[:-1], bounds[1:])]
            self.out_channels = 512
        self.blocks = nn.ModuleList(blocks)
        self.arch = arch
        n_ft = int(fine_tune_blocks) if fine_tune else 0
        if not 0 <= n_ft <= len(blocks):
            raise ValueError(f"fine_tune_blocks must be in 0..{len(blocks)}, got {fine_tune_blocks}")
        self.frozen = [True] * (len(blocks) - n_ft) + [False] * n_ft
        for blk, frozen in zip(self.blocks, self.frozen):
            for p in blk.parameters():
                p.requires_grad_(not frozen)

    def train(self, mode: bool = True) -> TorchvisionBackbone:
        super().train(mode)
        for blk, frozen in zip(self.blocks, self.frozen):
            if frozen:
                blk.eval()  # frozen blocks keep their batch-norm statistics
        return self

    def forward(self, x: Tensor) -> Tensor:
        for blk, frozen in zip(self.blocks, self.frozen):
            if frozen:
                with torch.no_grad():
                    x = blk(x)
            else:
                x = blk(x)
        return x


class ImageEncoder(nn.Module):
    """Backbone + adaptive average pooling to a ``grid`` x ``grid`` map, flattened
    to L = grid^2 annotation vectors: images (B, 3, H, W) -> (B, L, D)."""

    def __init__(self, backbone: nn.Module, grid: int = 14, coords: bool = False) -> None:
        super().__init__()
        if int(grid) <= 0:
            raise ValueError(f"grid must be a positive integer, got {grid!r}")
        self.backbone = backbone
        self.grid = int(grid)
        self.pool = nn.AdaptiveAvgPool2d(self.grid)
        self.coords = bool(coords)
        self.out_channels = backbone.out_channels + (2 if self.coords else 0)
        g = (torch.arange(self.grid, dtype=torch.float) + 0.5) / self.grid * 2 - 1  # cell centres in [-1, 1]
        xy = torch.stack([g.repeat(self.grid), g.repeat_interleave(self.grid)], -1)  # (L, 2): x, y row-major
        self.register_buffer("xy", xy, persistent=False)

    @property
    def num_locations(self) -> int:
        return self.grid * self.grid

    def forward(self, images: Tensor) -> Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        f = self.pool(self.backbone(images))  # (B, D, G, G)
        a = f.flatten(2).transpose(1, 2)  # (B, L, D), row-major over the grid
        if self.coords:  # (x, y) of each cell appended to its annotation (CoordConv-style, Liu et al. 2018)
            a = torch.cat([a, self.xy.to(a.dtype).expand(a.shape[0], -1, -1)], -1)  # (B, L, D+2)
        return a


def build_encoder(name: str = "small", grid: int = 14, weights_path: str | None = None, fine_tune: bool = False,
                  fine_tune_blocks: int = 2, channels: Sequence[int] | None = None, coords: bool = False
                  ) -> ImageEncoder:
    """``name``: one of BACKBONES. ``channels`` applies to "small" only (which is
    always trained: ``fine_tune`` must stay false there); ``weights_path``,
    ``fine_tune`` and ``fine_tune_blocks`` to the torchvision backbones.
    ``coords`` appends each grid cell's (x, y) in [-1, 1] to its annotation."""
    if name not in BACKBONES:
        raise ValueError(f"unknown encoder {name!r}; valid choices: {', '.join(BACKBONES)}")
    if name == "small":
        if weights_path is not None:
            raise ValueError("encoder 'small' has no pretrained weights; weights_path must be null")
        if fine_tune:
            raise ValueError("encoder 'small' is always trained; fine_tune applies to torchvision backbones")
        return ImageEncoder(SmallCNN(channels or (32, 64, 128)), grid, coords)
    if channels is not None:
        raise ValueError(f"channels applies to encoder 'small' only, not {name!r}")
    return ImageEncoder(TorchvisionBackbone(name, weights_path, fine_tune, fine_tune_blocks), grid, coords)


# --------------------------------------------------------------------------- decoder
def doubly_stochastic_penalty(alphas: Tensor, mask: Tensor) -> Tensor:
    """sum_i (1 - sum_t alpha_ti)^2 for each caption, counting only unmasked
    steps: alphas (B, T, L), mask (B, T) bool -> (B,)."""
    attn_sum = (alphas * mask.unsqueeze(-1).to(alphas.dtype)).sum(1)  # (B, L)
    return ((1.0 - attn_sum) ** 2).sum(-1)


class ShowAttendTell(nn.Module):
    """Encoder + attention decoder of Xu et al. 2015 (see the module docstring).

    Args:
        vocab_size: V, including the specials <pad>=0, <start>=1, <end>=2.
        encoder: keyword arguments of :func:`build_encoder` (name, grid, ...).
        cell, cell_kwargs: the decoder's cell from the zoo (``recur_attn.cells``).
        embed_size, hidden_size, attention_size: m, H and the attention's size.
        attention: "soft", "hard" or "mean" (no attention: the mean annotation).
        dropout: on the deep output's input (and on the embeddings).
        doubly_stochastic: lambda of the regulariser (0 turns it off).
        reinforce_weight, entropy_weight, baseline_decay: lambda_r, lambda_e and
            the moving-average decay of the hard-attention baseline.
    """

    def __init__(self, vocab_size: int, encoder: Mapping[str, Any] | None = None, cell: str = "lstm",
                 cell_kwargs: Mapping[str, Any] | None = None, embed_size: int = 512, hidden_size: int = 512,
                 attention_size: int = 512, attention: str = "soft", dropout: float = 0.5,
                 doubly_stochastic: float = 1.0, reinforce_weight: float = 1.0, entropy_weight: float = 0.01,
                 baseline_decay: float = 0.9) -> None:
        super().__init__()
        if attention not in ATTENTION_KINDS:
            raise ValueError(f"unknown attention {attention!r}; valid choices: {', '.join(ATTENTION_KINDS)}")
        if int(vocab_size) <= END + 1:
            raise ValueError(f"vocab_size must exceed the 3 specials, got {vocab_size!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if float(doubly_stochastic) < 0:
            raise ValueError(f"doubly_stochastic (lambda) must be >= 0, got {doubly_stochastic!r}")
        encoder = _plain(encoder or {})
        cell_kwargs = _plain(cell_kwargs or {})
        #: everything needed to rebuild this network (the caption CLI uses it)
        self.config = dict(vocab_size=int(vocab_size), encoder=encoder, cell=cell, cell_kwargs=cell_kwargs,
                           embed_size=embed_size, hidden_size=hidden_size, attention_size=attention_size,
                           attention=attention, dropout=dropout, doubly_stochastic=doubly_stochastic,
                           reinforce_weight=reinforce_weight, entropy_weight=entropy_weight,
                           baseline_decay=baseline_decay)
        self.encoder = build_encoder(**encoder)
        D, m, H, V = self.encoder.out_channels, int(embed_size), int(hidden_size), int(vocab_size)
        self.vocab_size, self.embed_size, self.hidden_size, self.feature_size = V, m, H, D
        self.attention_kind = attention
        self.doubly_stochastic = float(doubly_stochastic)
        self.reinforce_weight = float(reinforce_weight)
        self.entropy_weight = float(entropy_weight)
        self.baseline_decay = float(baseline_decay)

        self.embedding = nn.Embedding(V, m, padding_idx=PAD)
        self.attention = AdditiveAttention(query_size=H, key_size=D, attention_size=int(attention_size))
        self.f_beta = nn.Linear(H, 1)
        self.cell: RecurrentCell = build_cell(cell, input_size=m + D, hidden_size=H, **cell_kwargs)
        self.init_state = nn.ModuleList(nn.Linear(D, s) for s in self.cell.state_sizes())
        self.L_h = nn.Linear(H, m)
        self.L_z = nn.Linear(D, m)
        self.L_o = nn.Linear(m, V)
        self.dropout = nn.Dropout(float(dropout))
        self.register_buffer("baseline", torch.zeros(()))  # hard attention's moving average of log p(y|s,a)
        self.register_buffer("baseline_started", torch.zeros((), dtype=torch.bool))
        # the cell's input projection is linear in [E y; z]: split it to hoist E y out of the loop
        self._split_input = (type(self.cell).input_projection is RecurrentCell.input_projection)

    # ---- pieces shared by training and decoding ------------------------------
    @property
    def num_locations(self) -> int:
        return self.encoder.num_locations

    def encode(self, images: Tensor) -> Tensor:
        return self.encoder(images)  # (B, L, D)

    def initial_state(self, a: Tensor) -> tuple[Tensor, ...]:
        mean = a.mean(1)  # (B, D)
        return tuple(torch.tanh(f(mean)) for f in self.init_state)

    def _attend(self, h_prev: Tensor, a: Tensor, keys_proj: Tensor | None, sample: bool, hard_argmax: bool):
        """-> z (B, D), alpha (B, L), log p(s_t) (B,) or None, entropy (B,) or None."""
        beta = torch.sigmoid(self.f_beta(h_prev))  # (B, 1)
        B, L, _ = a.shape
        if self.attention_kind == "mean":
            alpha = a.new_full((B, L), 1.0 / L)
            return beta * a.mean(1), alpha, None, None
        ctx, alpha = self.attention(h_prev, a, keys_proj=keys_proj)  # (B, D), (B, L)
        if self.attention_kind == "soft":
            return beta * ctx, alpha, None, None
        if sample:
            s = torch.multinomial(alpha.detach(), 1).squeeze(1)  # (B,)
        elif hard_argmax:
            s = alpha.argmax(-1)
        else:
            return beta * ctx, alpha, None, None
        z = a[torch.arange(B, device=a.device), s]  # (B, D)
        log_alpha = torch.log(alpha.clamp_min(1e-12))
        logp_s = log_alpha.gather(1, s[:, None]).squeeze(1)
        entropy = -(alpha * log_alpha).sum(-1)
        return beta * z, alpha, logp_s, entropy

    def _cell_input(self, p: dict, emb_t: Tensor | None, xw_e_t: Tensor | None, z: Tensor,
                    w_z: Tensor | None) -> Tensor:
        if self._split_input:
            return xw_e_t + F.linear(z, w_z)  # (B, G*H)
        return self.cell.input_projection(p, torch.cat([emb_t, z], -1))

    # ---- training: teacher forcing -------------------------------------------
    def forward(self, images: Tensor, captions: Tensor, lengths: Tensor | None = None,
                features: Tensor | None = None) -> dict[str, Tensor]:
        """Teacher-forced pass.

        images (B, 3, H, W) (or ``features`` (B, L, D) to skip the encoder);
        captions (B, T+1) long: <start> w_1 .. w_n <end> <pad>...;
        lengths (B,) true lengths including <start> and <end> (default: count
        of non-pad tokens). Returns dict with logits (B, T, V), targets (B, T),
        mask (B, T) bool, alphas (B, T, L) and, for hard attention, logp_s and
        entropy (B, T).
        """
        a = self.encode(images) if features is None else features  # (B, L, D)
        if captions.dim() != 2:
            raise ValueError(f"captions must be (B, T), got {tuple(captions.shape)}")
        if lengths is None:
            lengths = (captions != PAD).sum(1)
        inputs, targets = captions[:, :-1], captions[:, 1:]  # (B, T)
        B, T = inputs.shape
        mask = torch.arange(T, device=captions.device)[None, :] < (lengths.to(captions.device) - 1)[:, None]
        emb = self.dropout(self.embedding(inputs))  # (B, T, m)
        keys_proj = self.attention.project_keys(a) if self.attention_kind != "mean" else None  # once per image
        p = self.cell.params()
        w_z = None
        if self._split_input:
            xw_e = F.linear(emb, p["weight_ih"][:, :self.embed_size], p.get("bias_ih"))  # (B, T, G*H)
            # sliced once: a slice per step would scatter a full-size gradient back every step
            w_z = p["weight_ih"][:, self.embed_size:].contiguous()  # (G*H, D)
        state = self.initial_state(a)
        sample = self.attention_kind == "hard" and self.training
        hs, zs, alphas, logps, ents = [], [], [], [], []
        for t in range(T):
            h_prev = state[0]
            z, alpha, logp_s, ent = self._attend(h_prev, a, keys_proj, sample=sample, hard_argmax=not self.training)
            xw = self._cell_input(p, emb[:, t], xw_e[:, t] if self._split_input else None, z, w_z)
            h, state = self.cell.step(p, xw, state, t)
            hs.append(h), zs.append(z), alphas.append(alpha)
            if logp_s is not None:
                logps.append(logp_s), ents.append(ent)
        h_all, z_all = torch.stack(hs, 1), torch.stack(zs, 1)  # (B, T, H), (B, T, D)
        o = emb + self.L_h(h_all) + self.L_z(z_all)  # (B, T, m)
        logits = self.L_o(self.dropout(o))  # (B, T, V): one GEMM for all steps
        out = {"logits": logits, "targets": targets, "mask": mask, "alphas": torch.stack(alphas, 1)}
        if logps:
            out["logp_s"], out["entropy"] = torch.stack(logps, 1), torch.stack(ents, 1)
        return out

    def loss(self, out: dict[str, Tensor]) -> dict[str, Tensor]:
        """Mean NLL per token + lambda * mean over images of the doubly stochastic
        penalty (soft and hard attention); for hard attention (when training)
        also the REINFORCE and entropy terms, and the baseline update."""
        logits, targets, mask = out["logits"], out["targets"], out["mask"]
        n_tok = mask.sum().clamp_min(1)
        B, T, V = logits.shape
        tok_nll = F.cross_entropy(logits.reshape(B * T, V), targets.reshape(B * T),
                                  reduction="none").view(B, T) * mask  # (B, T)
        nll = tok_nll.sum() / n_tok
        res = {"nll": nll}
        loss = nll
        if self.attention_kind != "mean" and self.doubly_stochastic > 0:
            reg = doubly_stochastic_penalty(out["alphas"], mask).mean()
            res["doubly_stochastic"] = reg
            loss = loss + self.doubly_stochastic * reg
        if "logp_s" in out:
            m = mask.to(logits.dtype)
            log_lik = -tok_nll.sum(1).detach()  # (B,) log p(y | s, a), the reward
            advantage = log_lik - self.baseline
            logp_s = (out["logp_s"] * m).sum(1)  # (B,)
            entropy = (out["entropy"] * m).sum(1)
            reinforce = -(advantage * logp_s).sum() / n_tok
            ent_bonus = entropy.sum() / n_tok
            loss = loss + self.reinforce_weight * reinforce - self.entropy_weight * ent_bonus
            res["reinforce"], res["entropy"] = reinforce, ent_bonus
            with torch.no_grad():
                d = self.baseline_decay if bool(self.baseline_started) else 0.0  # starts at the first mean
                self.baseline.mul_(d).add_((1 - d) * log_lik.mean())
                self.baseline_started.fill_(True)
        res["loss"] = loss
        return res

    # ---- decoding -------------------------------------------------------------
    def start_decoding(self, images: Tensor | None = None, features: Tensor | None = None) -> dict[str, Any]:
        """Per-image state for step-wise decoding: annotations, key projection, cell state."""
        a = self.encode(images) if features is None else features
        kp = self.attention.project_keys(a) if self.attention_kind != "mean" else None
        return {"a": a, "keys_proj": kp, "state": self.initial_state(a)}

    def decode_step(self, tokens: Tensor, dec: dict[str, Any]) -> tuple[Tensor, dict[str, Any], Tensor]:
        """One step: tokens (N,) = y_{t-1} -> log p(y_t) (N, V), new decoder dict, alpha_t (N, L)."""
        p = self.cell.params()
        state = dec["state"]
        emb = self.embedding(tokens)  # (N, m)
        z, alpha, _, _ = self._attend(state[0], dec["a"], dec["keys_proj"], sample=False,
                                      hard_argmax=self.attention_kind == "hard")
        xw_e = w_z = None
        if self._split_input:
            xw_e = F.linear(emb, p["weight_ih"][:, :self.embed_size], p.get("bias_ih"))
            w_z = p["weight_ih"][:, self.embed_size:]
        xw = self._cell_input(p, emb, xw_e, z, w_z)
        h, state = self.cell.step(p, xw, state, dec.get("t", 0))
        logits = self.L_o(emb + self.L_h(h) + self.L_z(z))  # (N, V)
        logits[:, PAD] = float("-inf")  # never emitted: <pad> and <start>
        logits[:, START] = float("-inf")
        new = dict(dec, state=state, t=dec.get("t", 0) + 1)
        return torch.log_softmax(logits, -1), new, alpha

    def _search_step(self, a: Tensor, keys_proj: Tensor | None):
        """A step function for :mod:`recur_attn.models.beam` over the cell state;
        ``a``/``keys_proj`` already have one row a hypothesis."""
        def step(tokens: Tensor, state):
            logp, dec, _ = self.decode_step(tokens, {"a": a, "keys_proj": keys_proj, "state": state})
            return logp, dec["state"]
        return step

    def attention_of(self, a: Tensor, tokens: Tensor, lengths: Tensor) -> Tensor:
        """The attention that produced each token of decoded captions: a (B, L, D),
        tokens (B, T) (no <start>), lengths (B,) -> alphas (B, T, L), 0 after
        each caption's end. Decoding is deterministic given the tokens (no
        dropout in eval mode; hard attention takes the argmax location), so a
        teacher-forced pass over the emitted tokens gives the weights the
        search saw."""
        was = self.training
        self.eval()
        try:
            start = torch.full_like(tokens[:, :1], START)
            out = self.forward(None, torch.cat([start, tokens], 1), lengths + 1, features=a)
        finally:
            self.train(was)
        return out["alphas"] * out["mask"][..., None]

    @torch.no_grad()
    def greedy(self, images: Tensor | None = None, max_len: int = 20, features: Tensor | None = None
               ) -> dict[str, Tensor]:
        """Greedy decoding of a batch. Returns tokens (B, T) (words then <end>,
        <pad> after), lengths (B,) (words + <end>; T when no <end>), and
        alphas (B, T, L): the attention that produced every emitted token."""
        dec = self.start_decoding(images, features)
        a = dec["a"]
        tokens, lengths = greedy_search(self._search_step(a, dec["keys_proj"]), dec["state"], a.shape[0],
                                        bos_id=START, eos_id=END, pad_id=PAD, max_len=int(max_len),
                                        device=a.device)
        return {"tokens": tokens, "lengths": lengths, "alphas": self.attention_of(a, tokens, lengths)}

    @torch.no_grad()
    def beam_search(self, images: Tensor | None = None, beam_size: int = 3, max_len: int = 20,
                    length_penalty: float = 1.0, features: Tensor | None = None) -> dict[str, Tensor]:
        """Batched beam search (:func:`recur_attn.models.beam.beam_search`): all
        B images x K beams at once, hypotheses ranked by log p / lp(length)
        (GNMT's length penalty with alpha=``length_penalty``), a result even
        when no beam ended. Returns the best hypothesis of each image with the
        keys of :meth:`greedy` plus its summed ``logprob``. Beam 1 equals greedy."""
        K = int(beam_size)
        dec = self.start_decoding(images, features)
        a, kp = dec["a"], dec["keys_proj"]
        B = a.shape[0]
        # fixed during the search: repeated once and captured, not reordered every step
        step = self._search_step(a.repeat_interleave(K, 0), None if kp is None else kp.repeat_interleave(K, 0))
        res = beam_search(step, dec["state"], B, K, bos_id=START, eos_id=END, pad_id=PAD, max_len=int(max_len),
                          alpha=float(length_penalty), device=a.device)
        tokens, lengths = res.tokens[:, 0], res.lengths[:, 0]
        return {"tokens": tokens, "lengths": lengths, "alphas": self.attention_of(a, tokens, lengths),
                "logprob": res.log_probs[:, 0]}
