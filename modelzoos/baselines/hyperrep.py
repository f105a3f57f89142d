"""Hyper-representations (Schürholt et al. 2021; 2022): a transformer autoencoder over neuron tokens.

Pipeline (R21 and R22, docs/baselines.md), scaled down for CPUs:

- tokens: one per output neuron / channel (``transforms.tokens_per_neuron``: incoming weights + bias,
  zero-padded; 48 tokens of length 201 for CNN-s), embedded by a separate linear map per layer;
- encoder: a learned compression token is prepended, learned positions added, pre-norm transformer
  blocks; the latent z ∈ [−1, 1]^latent is Linear → tanh of the *mean and std of the neuron tokens' outputs
  per layer* (``pooling="moments"``, default), of their mean over all tokens (``"mean"``), or of the
  compression token's output (``"token"``, R21): ``POOLINGS``;
- decoder: Linear(z → T · d_model) + positions → blocks → a separate linear map per layer back to tokens;
- loss: γ · NT-Xent(proj(z₁), proj(z₂)) + (1 − γ) · reconstruction over two views, the projection head
  an MLP with BatchNorm (R21). Reconstruction is the masked MSE of *standardised* tokens
  (``data.LayerStats``: mean and std of the training weights per tensor, a bias apart from its weight;
  per layer with ``normalisation="layer"``, none with ``"none"``), i.e. R22's layer-wise loss normalisation
  Σ_l ‖ŵ_l − w_l‖² / σ_l² with "global_mean" reduction; decoding de-standardises;
- views (``TwoViews``, run in DataLoader workers): a random function-preserving permutation each, then
  (off by default, R21's settings: ``erase_p=0.5``, ``noise=0``) random erasing and Gaussian noise;
- batches: ``models_per_batch`` whole training runs (every stored epoch of 4 models, ``data.ModelBatches``),
  so a quarter of NT-Xent's in-batch negatives are other epochs of the same run (with shuffled rows ≈ 1 %),
  and a run's epochs must be told apart by its training progress, not its init; ``models_per_batch=0`` gives
  R21's shuffled rows (and streaming sources, which cannot group rows, always get them).

The reconstruction target is the *permuted* view without erasing and noise (R21 reconstructed the corrupted view
itself, so its erasing was not denoising; docs/baselines.md). The probes see z of the un-augmented weights only.

Defaults, chosen on validation scores (BENCHMARKS.md, "Hyper-representation on the seed zoo" and "… on
``digits_cnn_hyp_lr10``"): pooling of the token outputs, per-tensor statistics, whole-run batches, no erasing
(on the seed zoo), then latent 128, γ 0.9, per-layer moments pooling, and latent 256 with 40 epochs (on both
digits zoos, mean over three seeds each; the moments give z the within-layer spreads, e.g. of the biases, that
mean pooling loses and s(W) relies on). Deviations from R21's configs: a far smaller model (d_model 64, latent 256
vs 800 / 700), lr 1e-3 instead of 1e-4, a constant learning rate, 40 epochs, γ 0.9 instead of 0.1, and those
four defaults; ``pooling="token"``, ``normalisation="layer"``, ``models_per_batch=0``, ``erase_p=0.5`` and ``gamma=0.1``
give R21's recipe back.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from modelzoos.architectures import get_architecture
from modelzoos.baselines.data import LayerStats, ZooSource, epochs, rows_per_batch
from modelzoos.loading import WEIGHTS
from modelzoos.transforms import (
    Compose,
    GaussianNoise,
    Permutation,
    PermutationSpec,
    RandomErasing,
    Tokenizer,
    tokens_per_neuron,
)


def _mean(x: torch.Tensor, layer: torch.Tensor, layers: int) -> torch.Tensor:
    return x[:, 1:].mean(1)


def _token(x: torch.Tensor, layer: torch.Tensor, layers: int) -> torch.Tensor:
    return x[:, 0]


def layer_sums(x: torch.Tensor, layer: torch.Tensor, layers: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token outputs x [B, T, d] with layer ids [T] → per-layer sums and sums of squares [B, layers, d] and token
    counts [layers, 1]; sums of several token ranges add up to those of the whole sequence."""
    members = F.one_hot(layer, layers).to(x.dtype)  # [T, layers]
    return (torch.einsum("btd,tl->bld", x, members), torch.einsum("btd,tl->bld", x**2, members),
            members.sum(0)[:, None])


def moments(sums: torch.Tensor, squares: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """``layer_sums`` → per layer, the mean and the std over its tokens, concatenated: [B, 2 · layers · d]."""
    mean, square = sums / counts, squares / counts
    return torch.cat([mean, (square - mean**2).clamp_min(1e-6).sqrt()], dim=2).flatten(1)


def _moments(x: torch.Tensor, layer: torch.Tensor, layers: int) -> torch.Tensor:
    """Per layer, the mean and the std over its neuron tokens' outputs, concatenated: [B, 2 · layers · d]."""
    return moments(*layer_sums(x[:, 1:], layer, layers))


def _extremes(x: torch.Tensor, layer: torch.Tensor, layers: int) -> torch.Tensor:
    """``_moments`` and, per layer, the min and max over its neuron tokens' outputs: [B, 4 · layers · d]."""
    outside = (F.one_hot(layer, layers) == 0)[None, :, :, None]  # [1, T, layers, 1]: token not in the layer
    tokens = x[:, 1:, None, :]  # [B, T, 1, d]
    return torch.cat([_moments(x, layer, layers).view(len(x), layers, -1),
                      tokens.masked_fill(outside, math.inf).amin(1), tokens.masked_fill(outside, -math.inf).amax(1)],
                     dim=2).flatten(1)


# How the encoder's outputs [B, 1 + T, d] (compression token first) become the input of the latent map:
# name → (function of the outputs, the tokens' layer ids [T] and the number of layers, input width as a
# multiple of d per layer (None: d itself)).
POOLINGS: dict[str, tuple[Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor], int | None]] = {
    "mean": (_mean, None),
    "token": (_token, None),
    "moments": (_moments, 2),
    "extremes": (_extremes, 4),
}


@dataclass(frozen=True)
class HyperRepConfig:
    """Sizes and training of the hyper-representation (defaults: digits CNN-s in ~4–6 min on 1 core)."""

    # architecture (R21 MNIST-seed: 2 blocks, d_model 800, 4 heads, FFN 900, latent 700)
    d_model: int = 64
    heads: int = 4
    layers: int = 2  # transformer blocks in the encoder, and again in the decoder
    ffn: int = 128
    latent: int = 256
    dropout: float = 0.1
    pooling: str = "moments"  # POOLINGS: "moments" (per-layer mean and std of the neuron tokens' outputs),
    # "extremes" (and their min and max), "mean" (their mean), "token" (the compression token, R21)
    projection: tuple[int, int] = (256, 128)  # hidden and output width of the contrastive head
    # loss
    gamma: float = 0.9  # weight of NT-Xent; (1 − γ) weighs the reconstruction (R21 seed zoos: 0.1)
    temperature: float = 0.1
    normalisation: str = "tensor"  # LWLN groups: "tensor" (a bias apart from its weight), "layer" (weight + bias,
    # R22), "none" (the plain MSE of raw weights, R21)
    # augmentation
    permutations: int = 1000  # precomputed permutation table (two independent draws per sample); 0: no permutations
    erase_p: float = 0.0  # R21: 0.5
    erase_scale: tuple[float, float] = (0.02, 0.33)  # fraction of the flat vector erased
    noise: float = 0.0  # additive σ, in weight units (R21: 0)
    # optimisation
    epochs: int = 40  # passes over the training rows
    models_per_batch: int = 4  # batches of whole runs (every stored epoch of this many models); 0: shuffled rows
    batch_size: int = 64  # rows per batch with shuffled rows
    lr: float = 1e-3  # Adam
    weight_decay: float = 1e-9
    seed: int = 42


# ---------------------------------------------------------------------------------------------------------
# Views and losses (SANE reuses them)
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TwoViews:
    """``(weights [B, D], rng) → [B, 4, D]``: target₁, input₁, target₂, input₂ (target = permuted,
    input = permuted then corrupted). Picklable, so it runs in DataLoader workers."""

    permutation: Permutation | None  # None: no permutation (the target is the weights themselves)
    corrupt: Compose

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        views = []
        for _ in range(2):
            target = x if self.permutation is None else self.permutation(x, rng)
            views += [target, self.corrupt(target, rng)]
        return np.stack(views, axis=1)


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's NT-Xent: positives (aᵢ, bᵢ), the other 2(N − 1) batch entries negatives, mean CE over 2N."""
    z = F.normalize(torch.cat([a, b]), dim=1)
    n = len(a)
    sim = (z @ z.T / temperature).masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), -math.inf)
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(sim, targets)


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over real (mask True) token entries only."""
    mask = mask.expand_as(pred).to(pred.dtype)
    return ((pred - target) ** 2 * mask).sum() / mask.sum()


def train_loop(model: nn.Module, loader: torch.utils.data.DataLoader,
               losses: Callable[[dict], tuple[torch.Tensor, torch.Tensor]], *, n_epochs: int, gamma: float,
               lr: float, weight_decay: float, progress: bool, desc: str) -> list[dict[str, float]]:
    """Adam on γ · contrastive + (1 − γ) · reconstruction; returns the mean losses of every epoch."""
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    history = []
    bar = tqdm(range(n_epochs), desc=desc, disable=not progress)
    for epoch in bar:
        model.train()
        sums, steps = np.zeros(3), 0
        for batch in epochs(loader, epoch):
            rec, con = losses(batch)
            loss = gamma * con + (1 - gamma) * rec
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sums += [loss.item(), rec.item(), con.item()]
            steps += 1
        if steps == 0:
            raise ValueError(f"{desc}: the training split gave no full batch; lower the batch size")
        history.append(dict(zip(("loss", "reconstruction", "contrastive"), (sums / steps).tolist(), strict=True)))
        bar.set_postfix(loss=f"{history[-1]['loss']:.4f}", rec=f"{history[-1]['reconstruction']:.4f}")
    return history


def train_batch_size(source: ZooSource, wanted: int) -> int:
    """``wanted``, but never more than the training rows (full batches only: BatchNorm heads need ≥ 2)."""
    rows = len(source.metadata("train")["epoch"])
    if rows < 2:
        raise ValueError(f"the training split of {source.config!r} has {rows} row(s); contrastive training needs ≥ 2")
    return max(2, min(wanted, rows))


def train_loader(source: ZooSource, models_per_batch: int, batch_size: int, transform: Callable | None, seed: int,
                 max_bytes: int = 1 << 29) -> torch.utils.data.DataLoader:
    """The training batches of a learned baseline: ``models_per_batch`` whole runs (every stored epoch of that
    many models, ``ZooSource.model_batches``) on map-style sources, else (``models_per_batch`` 0, or a
    streaming source, which cannot group rows) shuffled rows, ``batch_size`` at most and ≤ ``max_bytes`` of
    float32 weights per batch. Whole runs over ``max_bytes`` fall back to shuffled rows, with a warning."""
    if models_per_batch > 0 and not source.streaming:
        train_batch_size(source, 2)
        rows = int(np.unique(source.metadata("train")["model_id"], return_counts=True)[1].max()) * models_per_batch
        if rows * source.dim * 4 <= max_bytes:
            return source.model_batches("train", models_per_batch, transform=transform, seed=seed)
        warnings.warn(f"batches of {models_per_batch} whole runs would hold {rows} rows of {source.dim:,} weights "
                      f"({rows * source.dim * 4 / 2**30:.1f} GiB); training on shuffled rows instead (set "
                      "models_per_batch=0 to silence this, or store fewer epochs per model)", stacklevel=3)
    batch_size = int(min(train_batch_size(source, batch_size), max(2, rows_per_batch(source.dim, max_bytes))))
    return source.loader("train", transform=transform, shuffle=True, seed=seed, drop_last=True, batch_size=batch_size)


# ---------------------------------------------------------------------------------------------------------
# The autoencoder
# ---------------------------------------------------------------------------------------------------------


class PerLayerLinear(nn.Module):
    """A separate ``Linear(d_in → d_out)`` per layer, applied to every token by its layer id (R21's
    per-layer embedders / debedders). Padded token entries are zero, so each layer sees only its own
    inputs; weights start at std 1/√(fan-in of that layer)."""

    def __init__(self, layer: torch.Tensor, fan_in: torch.Tensor, d_in: int, d_out: int) -> None:
        super().__init__()
        self.register_buffer("layer", layer, persistent=False)
        std = fan_in.float().clamp(min=1).rsqrt().view(-1, 1, 1)
        self.weight = nn.Parameter(torch.randn(len(fan_in), d_in, d_out) * std)
        self.bias = nn.Parameter(torch.zeros(len(fan_in), d_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, d_in] → [B, T, d_out]."""
        return torch.einsum("btl,tld->btd", x, self.weight[self.layer]) + self.bias[self.layer]


def _blocks(config: HyperRepConfig) -> nn.TransformerEncoder:
    block = nn.TransformerEncoderLayer(config.d_model, config.heads, config.ffn, config.dropout, batch_first=True,
                                       norm_first=True)
    return nn.TransformerEncoder(block, config.layers, norm=nn.LayerNorm(config.d_model), enable_nested_tensor=False)


class HyperRepAE(nn.Module):
    """Encoder (tokens [B, T, L] → z [B, latent]), decoder (z → tokens) and projection head (z → p)."""

    def __init__(self, tokenizer: Tokenizer, config: HyperRepConfig) -> None:
        super().__init__()
        t, length, d = tokenizer.num_tokens, tokenizer.token_size, config.d_model
        layer = torch.tensor(tokenizer.positions[:, 1])
        mask = torch.tensor(tokenizer.mask)
        fan_in = torch.stack([mask[layer == i].sum(1).max() for i in range(int(layer.max()) + 1)])
        self.register_buffer("mask", mask, persistent=False)
        self.embed = PerLayerLinear(layer, fan_in, length, d)
        self.compression = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.enc_positions = nn.Parameter(torch.randn(1, t + 1, d) * 0.02)
        self.encoder = _blocks(config)
        if config.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {config.pooling!r}")
        self.pool, per_layer = POOLINGS[config.pooling]
        self.weight_layers = len(fan_in)
        self.to_latent = nn.Linear(d if per_layer is None else per_layer * self.weight_layers * d, config.latent)
        self.from_latent = nn.Linear(config.latent, t * d)
        self.dec_positions = nn.Parameter(torch.randn(1, t, d) * 0.02)
        self.decoder = _blocks(config)
        self.debed = PerLayerLinear(layer, torch.full_like(fan_in, d), d, length)
        hidden, out = config.projection
        self.head = nn.Sequential(nn.Linear(config.latent, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                                  nn.Linear(hidden, out), nn.BatchNorm1d(out))
        self.shape = (t, d)

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        x = torch.cat([self.compression.expand(len(x), -1, -1), x], dim=1) + self.enc_positions
        x = self.encoder(x)
        return torch.tanh(self.to_latent(self.pool(x, self.embed.layer, self.weight_layers)))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        x = self.from_latent(z).view(len(z), *self.shape) + self.dec_positions
        return self.debed(self.decoder(x)) * self.mask


@dataclass
class HyperRep:
    """A trained hyper-representation: embed weights into z, decode z into weights (flat float32 [B, D])."""

    model: HyperRepAE
    tokenizer: Tokenizer
    stats: LayerStats
    config: HyperRepConfig
    history: list[dict[str, float]] = field(repr=False)
    device: torch.device

    @torch.no_grad()
    def embed(self, weights: torch.Tensor) -> torch.Tensor:
        """Un-augmented flat weights [B, D] → latents [B, latent] (CPU)."""
        self.model.eval()
        tokens = self.tokenizer.tokenize(self.stats.standardize(weights.to(self.device))).values
        return self.model.encode(tokens).cpu()

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents [B, latent] → flat weights [B, D] (CPU, de-standardised)."""
        self.model.eval()
        tokens = self.model.decode(torch.as_tensor(z, dtype=torch.float32, device=self.device))
        return self.stats.restore(self.tokenizer.detokenize(tokens)).cpu()


def train_hyperrep(source: ZooSource, config: HyperRepConfig = HyperRepConfig(), *,
                   device: str | torch.device = "cpu", progress: bool = True) -> HyperRep:
    """Train a hyper-representation on the training split of ``source`` (module docstring)."""
    zoo = source.info.zoo
    if not get_architecture(zoo.architecture).neuron_tokens:
        raise ValueError(f"hyperrep encodes a whole model in one sequence of neuron tokens and supports the CNN "
                         f"zoos; {source.config!r} is {zoo.architecture!r}: use the sane baseline (windows)")
    device = torch.device(device)
    torch.manual_seed(config.seed)
    tokenizer = tokens_per_neuron(source.layout)
    stats = LayerStats.of(source, config.normalisation).to(device)
    model = HyperRepAE(tokenizer, config).to(device)
    spec = PermutationSpec.of(source.layout, zoo.architecture)
    views = TwoViews(Permutation(spec, config.permutations, config.seed) if config.permutations else None,
                     Compose([RandomErasing(config.erase_p, config.erase_scale), GaussianNoise(config.noise)]))
    loader = train_loader(source, config.models_per_batch, config.batch_size, views, config.seed)

    def losses(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        w = stats.standardize(batch[WEIGHTS].to(device))  # [B, 4, D]
        tokens = tokenizer.tokenize(w).values  # [B, 4, T, L]
        z = model.encode(tokens[:, 1::2].flatten(0, 1))  # inputs: [2B, latent], views of a sample adjacent
        rec = masked_mse(model.decode(z), tokens[:, 0::2].flatten(0, 1), model.mask)
        z1, z2 = z.view(len(w), 2, -1).unbind(1)
        return rec, nt_xent(model.head(z1), model.head(z2), config.temperature)

    history = train_loop(model, loader, losses, n_epochs=config.epochs, gamma=config.gamma, lr=config.lr,
                         weight_decay=config.weight_decay, progress=progress, desc="hyperrep")
    return HyperRep(model.eval(), tokenizer, stats, config, history, device)
