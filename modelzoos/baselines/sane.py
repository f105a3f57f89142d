"""SANE-style weight-space learning (Schürholt et al. 2024): fixed-size tokens, windows, per-token latents.

Pipeline (SANE 2024; docs/baselines.md), scaled down for CPUs:

- tokens: every output row of every weight (bias appended) chunked into tokens of ``token_size``,
  zero-padded and masked (``transforms.chunk_tokens``), with 3-part positions (global index n, layer l,
  row k). Position encoding as SANE's: [emb(n) + emb(l) ‖ emb(k)], added to the projected token;
- model: Linear(token → d_model) + positions → pre-norm GELU transformer blocks (no final norm, dropout
  0) → Linear(d_model → latent) per token; the decoder mirrors it back to tokens. Contrastive head:
  flatten the window's latents → Linear → 30 → LayerNorm → ReLU → Linear → 30 → LayerNorm → ReLU;
- training on random windows (``transforms.RandomWindow``, the same window for both views, cut in the
  DataLoader workers, so a ResNet-18 row of 11M floats travels as two windows of ``window`` tokens):
  γ · NT-Xent + (1 − γ) · masked MSE with γ = 0.5 (SANE: 0.05); views = a random permutation and
  multiplicative noise w · (1 + 0.1 ε) each; as in SANE the target is the view itself; batches of
  ``models_per_batch`` whole training runs (``hyperrep.train_loader``, the hyper-representation's: every
  stored epoch of 4 models, so a quarter of NT-Xent's negatives are other epochs of the same run; where they
  exceed its byte budget, on streaming sources, or with ``models_per_batch=0``, SANE's shuffled rows, for
  which γ 0.5 was not measured with per-tensor statistics: set ``gamma=0.05`` there);
- standardisation: per tensor (``normalisation="tensor"``, a bias apart from its weight, as the
  hyper-representation's) or per layer (``"layer"``, SANE's: ``data.LayerStats``, the same layers as the
  tokens), on a subset of the training rows (``stats_rows``), streaming-friendly instead of SANE's full
  dataset pass;
- model embedding = per layer, the mean and std of its token latents (``embedding="moments"``, default, as
  the hyper-representation's pooling), or SANE's mean of all token latents of the whole sequence
  (``"mean"``), encoded ``embed_window`` consecutive tokens at a time (bounded memory for long models):
  ``EMBEDDINGS``.

Deviations: no re-basin alignment to a reference model (permutation augmentation instead, which SANE's
released configs effectively switch off: both of their views are the aligned model); Adam at a constant
lr instead of AdamW + OneCycle; far smaller model (d_model 64 vs 1024); and four defaults chosen on
validation over three seeds on the digits zoos (BENCHMARKS.md): the per-layer moments embedding (the mean of
48 token latents loses the within-layer spreads that s(W) relies on), per-tensor statistics (biases start at
0 and carry much of the training state, which a layer's statistics bury under its weights' scale), γ 0.5 and
whole-run batches. ``normalisation="layer"``, ``gamma=0.05``, ``models_per_batch=0`` and ``embedding="mean"``
give SANE's recipe back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch
from torch import nn

from modelzoos.baselines.data import LayerStats, ZooSource
from modelzoos.baselines.hyperrep import layer_sums, masked_mse, moments, nt_xent, train_loader, train_loop
from modelzoos.loading import WEIGHTS
from modelzoos.transforms import (
    GaussianNoise,
    Permutation,
    PermutationSpec,
    RandomWindow,
    Tokenizer,
    Tokens,
    chunk_tokens,
)

MAX_TOKEN = 288  # SANE's ResNet-18 token size; the default token size is min(longest row, MAX_TOKEN)
TABLE_LIMIT = 1 << 20  # above this many weights, permutations are drawn on the fly (no table)


@dataclass(frozen=True)
class SaneConfig:
    """Sizes and training of the SANE baseline (defaults: digits CNN-s in ~1-3 min on 2 cores)."""

    token_size: int = 0  # 0: the longest row of the layout, at most MAX_TOKEN
    window: int = 32  # tokens per training window (SANE: 64 CNN, 256 ResNet-18); capped at the sequence
    d_model: int = 64
    heads: int = 4
    layers: int = 2  # blocks in the encoder, and again in the decoder
    latent: int = 16  # per token
    projection: int = 30
    gamma: float = 0.5  # weight of NT-Xent (SANE: 0.05)
    temperature: float = 0.1
    noise: float = 0.1  # multiplicative σ
    permutations: int = 1000  # precomputed table (long rows: drawn on the fly)
    epochs: int = 40
    batch_size: int = 64
    models_per_batch: int = 4  # batches of whole runs, as the hyper-representation's (small models, map-style
    # sources; hyperrep.train_loader); 0: shuffled rows (SANE)
    lr: float = 1e-3
    weight_decay: float = 3e-9
    normalisation: str = "tensor"  # data.NORMALISATIONS: "tensor", "layer" (SANE) or "none"
    stats_rows: int = 512  # training rows used for the standardisation
    embed_window: int = 512  # tokens per encoder pass when embedding a whole model
    embedding: str = "moments"  # EMBEDDINGS: per-layer "moments" of the token latents, or their "mean" (SANE)
    seed: int = 42


# How the token latents of a whole model become its embedding, from their per-layer sums, sums of squares
# [B, layers, latent] and counts [layers, 1] (``hyperrep.layer_sums``, accumulated over encoder passes).
EMBEDDINGS: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "mean": lambda sums, squares, counts: sums.sum(1) / counts.sum(),  # SANE: [B, latent]
    "moments": moments,  # per layer, mean and std of its tokens' latents: [B, 2 · layers · latent]
}


@dataclass(frozen=True)
class WindowViews:
    """``(weights [B, D], rng) → Tokens`` of two views cut to one window: values float32 [B, 2, W, L], mask
    bool [B, 2, W, L], positions int64 [B, 2, W, 3] (the same window for both views). Runs in DataLoader
    workers (``transforms.Augment`` hands the three arrays on as ``weights``, ``mask``, ``positions``)."""

    tokenizer: Tokenizer
    permutation: Permutation
    noise: GaussianNoise
    window: RandomWindow

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> Tokens:
        views = [self.tokenizer.tokenize(self.noise(self.permutation(x, rng), rng)) for _ in range(2)]
        # One window for both views: cut them side by side along the token length.
        both = Tokens(np.concatenate([v.values for v in views], -1), np.concatenate([v.mask for v in views], -1),
                      views[0].positions)
        cut, length = self.window(both, rng), self.tokenizer.token_size
        halves = [(cut.values[..., part], cut.mask[..., part]) for part in (slice(0, length), slice(length, None))]
        return Tokens(np.stack([v for v, _ in halves], 1), np.stack([m for _, m in halves], 1),
                      np.stack([cut.positions] * 2, 1))


def _blocks(d: int, heads: int, layers: int) -> nn.TransformerEncoder:
    block = nn.TransformerEncoderLayer(d, heads, 4 * d, dropout=0.0, activation="gelu", batch_first=True,
                                       norm_first=True)
    return nn.TransformerEncoder(block, layers, enable_nested_tensor=False)


class SaneAE(nn.Module):
    """Token windows [B, W, L] with positions [B, W, 3] → per-token latents [B, W, latent] → tokens."""

    def __init__(self, tokenizer: Tokenizer, config: SaneConfig, window: int) -> None:
        super().__init__()
        d, half = config.d_model, config.d_model // 2
        tables = tokenizer.positions.max(0) + 1  # global tokens, layers, rows
        self.pos_n, self.pos_l = nn.Embedding(int(tables[0]), half), nn.Embedding(int(tables[1]), half)
        self.pos_k = nn.Embedding(int(tables[2]), d - half)
        self.inp, self.out = nn.Linear(tokenizer.token_size, d), nn.Linear(d, tokenizer.token_size)
        self.encoder, self.decoder = _blocks(d, config.heads, config.layers), _blocks(d, config.heads, config.layers)
        self.to_latent, self.from_latent = nn.Linear(d, config.latent), nn.Linear(config.latent, d)
        p = config.projection
        self.head = nn.Sequential(nn.Linear(window * config.latent, p), nn.LayerNorm(p), nn.ReLU(),
                                  nn.Linear(p, p), nn.LayerNorm(p), nn.ReLU())
        for emb in (self.pos_n, self.pos_l, self.pos_k):
            nn.init.normal_(emb.weight, std=0.02)

    def positions(self, pos: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.pos_n(pos[..., 0]) + self.pos_l(pos[..., 1]), self.pos_k(pos[..., 2])], -1)

    def encode(self, values: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return self.to_latent(self.encoder(self.inp(values) + self.positions(pos)))

    def decode(self, latents: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return self.out(self.decoder(self.from_latent(latents) + self.positions(pos)))


@dataclass
class Sane:
    """A trained SANE model: ``embed`` maps flat weights [B, D] to the embedding of ``config.embedding``."""

    model: SaneAE
    tokenizer: Tokenizer
    stats: LayerStats
    config: SaneConfig
    history: list[dict[str, float]] = field(repr=False)
    device: torch.device

    @cached_property
    def groups(self) -> torch.Tensor:
        """int32 [T, L]: the standardisation group of every token entry (``LayerStats.token_groups``)."""
        return self.stats.token_groups(self.tokenizer)

    @torch.no_grad()
    def embed(self, weights: torch.Tensor) -> torch.Tensor:
        """Un-augmented flat weights [B, D] → the embedding of ``config.embedding`` (CPU): [B, latent] for the
        mean of all token latents, [B, 2 · layers · latent] for their per-layer moments."""
        self.model.eval()
        tokens = self.tokenizer.tokenize(weights.to(self.device))
        layers = int(self.tokenizer.positions[:, 1].max()) + 1
        sums = None
        for start in range(0, self.tokenizer.num_tokens, self.config.embed_window):
            part = slice(start, start + self.config.embed_window)
            pos, mask = tokens.positions[..., part, :], tokens.mask[..., part, :]
            values = self.stats.standardize_tokens(tokens.values[..., part, :], self.groups[part], mask)
            chunk = layer_sums(self.model.encode(values, pos), pos[0, :, 1], layers)
            sums = chunk if sums is None else tuple(a + b for a, b in zip(sums, chunk, strict=True))
        return EMBEDDINGS[self.config.embedding](*sums).cpu()


def train_sane(source: ZooSource, config: SaneConfig = SaneConfig(), *, device: str | torch.device = "cpu",
               progress: bool = True) -> Sane:
    """Train the SANE baseline on the training split of ``source`` (module docstring)."""
    if config.embedding not in EMBEDDINGS:
        raise ValueError(f"embedding must be one of {', '.join(EMBEDDINGS)}, got {config.embedding!r}")
    device = torch.device(device)
    torch.manual_seed(config.seed)
    layout, zoo = source.layout, source.info.zoo
    longest = max(e.numel // e.shape[0] for e in layout.entries) + 1  # a row and its bias
    tokenizer = chunk_tokens(layout, config.token_size or min(longest, MAX_TOKEN))
    window = min(config.window, tokenizer.num_tokens)
    stats = LayerStats.of(source, config.normalisation, max_rows=config.stats_rows).to(device)
    groups = stats.token_groups(tokenizer)  # [T, L]: the standardisation group of every token entry
    table = config.permutations if layout.size <= TABLE_LIMIT else None
    views = WindowViews(tokenizer, Permutation(PermutationSpec.of(layout, zoo.architecture), table, config.seed),
                        GaussianNoise(config.noise, multiplicative=True), RandomWindow(window))
    model = SaneAE(tokenizer, config, window).to(device)
    loader = train_loader(source, config.models_per_batch, config.batch_size, views, config.seed)

    def losses(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        values, mask, pos = (batch[k].to(device).flatten(0, 1) for k in (WEIGHTS, "mask", "positions"))  # [2B, W, …]
        values = stats.standardize_tokens(values, groups[pos[..., 0]], mask)
        latents = model.encode(values, pos)
        rec = masked_mse(model.decode(latents, pos), values, mask)
        l1, l2 = latents.view(len(batch[WEIGHTS]), 2, -1).unbind(1)
        return rec, nt_xent(model.head(l1), model.head(l2), config.temperature)

    history = train_loop(model, loader, losses, n_epochs=config.epochs, gamma=config.gamma, lr=config.lr,
                         weight_decay=config.weight_decay, progress=progress, desc="sane")
    return Sane(model.eval(), tokenizer, stats, config, history, device)
