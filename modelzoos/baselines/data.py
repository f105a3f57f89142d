"""How every baseline reads a zoo: one config of a dataset repository, split by model, in bounded memory.

``ZooSource(repo, config)`` holds the config's ``ConfigInfo`` and the row selection shared by all
baselines (docs/baselines.md, "Which states are samples"). With ``epochs``, only those epochs are kept
(pushed down to the Parquet reader). Then the original loader's cleaning, per state (checkpoint), not
per model, and before any baseline sees a row:

1. drop states whose weights hold NaN or ±inf (the repository's ``nonfinite`` column);
2. drop states with any |w| > ``weight_threshold`` (default ``WEIGHT_THRESHOLD`` = 5, the value of the
   original benchmark's data loader; ``inf`` or None switches the rule off).

Both rules read the weights only, never a target or another split. ``removed(split)`` counts the states
and models each rule removed. Batches come either map-style (``loading.WeightsDataset`` + DataLoader
workers over the Arrow cache: the kept rows are selected by index) or streaming
(``loading.iterable_loader`` over the Parquet files: the same rule filters the stream), both through
``transforms.Augment`` for transforms. Nothing holds more than one batch of weights at a time, except
what a caller keeps (features, raw-weight matrices of small CNNs).

``LayerStats`` standardises weights per group (``LayerStats.of``, one of ``NORMALISATIONS``; mean and std
pooled over training rows, std floored at 1e-4 as in R22's loss normalisation): ``"layer"``, SANE's layers
(a weight with its bias is one layer, every other tensor, e.g. BatchNorm running mean / var, its own, which
are exactly the layer ids ``positions[..., 1]`` of ``transforms.chunk_tokens``); ``"tensor"``, every
parameter tensor its own (a bias apart from its weight; ``tensor_ids``); ``"none"``, no standardisation.

``ZooSource.model_batches`` gives training batches made of whole training runs (every stored epoch of a
few models), the hyper-representation's default (see ``hyperrep``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from modelzoos.architectures import Layout
from modelzoos.loading import (
    WEIGHTS,
    ConfigInfo,
    WeightsDataset,
    collate_weights,
    config_info,
    iterable_loader,
    load_zoo,
)
from modelzoos.repository import SPLITS
from modelzoos.transforms import Tokenizer

# Metadata columns a baseline may use as targets or for selection (docs/hub_format.md).
META = ("model_id", "epoch", "seed", "init", "activation", "optimizer", "lr", "weight_decay", "dropout",
        "train_acc", "test_acc", "ggap")
BATCH_BYTES = 64 << 20  # weights per batch when no batch size is given
STD_FLOOR = 1e-4  # R22 LayerWiseReconLoss
# The original Model Zoos loader drops states with any |w| above a threshold; its benchmark datasets were
# built with weight_threshold=5 (ModelZooDataset code/load_dataset.ipynb; SANE's CNN preprocessing uses 100).
WEIGHT_THRESHOLD = 5.0
RULES = ("nonfinite", "threshold")  # the cleaning rules, in the order they apply


def parse_threshold(text: str | float | None) -> float:
    """``"5"`` → 5.0; ``"inf"`` / ``"off"`` / ``"none"`` / None → inf (the threshold rule switched off)."""
    if text is None or (isinstance(text, str) and text.strip().lower() in ("inf", "off", "none")):
        return float("inf")
    try:
        value = float(text)
    except ValueError as err:
        raise ValueError(f"weight threshold {text!r} is neither a number nor 'off'") from err
    if not value > 0:
        raise ValueError(f"weight threshold must be > 0 (or 'off'), got {text!r}")
    return value


def within_threshold(weights: np.ndarray | torch.Tensor, threshold: float) -> np.ndarray:
    """bool [B]: no |w| of the row above ``threshold`` (finite weights [B, D]; NaN rows count as within:
    the non-finite rule handles them)."""
    w = weights.numpy(force=True) if isinstance(weights, torch.Tensor) else np.asarray(weights)
    return ~(np.abs(w) > threshold).any(axis=1)


def removal_counts(model_id: np.ndarray, nonfinite: np.ndarray, over: np.ndarray) -> dict[str, Any]:
    """What the cleaning removed from one split: per rule the states and the models that lost ≥ 1 state,
    and the models left with no state. Arrays [N] over the split's rows (``over``: finite and |w| above
    the threshold)."""
    model_id, nonfinite, over = np.asarray(model_id), np.asarray(nonfinite, bool), np.asarray(over, bool)
    if (nonfinite & over).any():
        raise ValueError("a state cannot be removed by both rules: the threshold rule applies to finite states")
    kept = ~(nonfinite | over)
    out: dict[str, Any] = {"states": len(model_id), "models": len(np.unique(model_id)),
                           "kept_states": int(kept.sum()), "kept_models": len(np.unique(model_id[kept]))}
    for rule, hit in zip(RULES, (nonfinite, over), strict=True):
        out[rule] = {"states": int(hit.sum()), "models": len(np.unique(model_id[hit]))}
    out["models_emptied"] = out["models"] - out["kept_models"]
    return out


class _Within:
    """``IterableDataset.filter`` predicate (picklable): the threshold rule on a batch of weights."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold

    def __call__(self, weights: np.ndarray) -> np.ndarray:
        return within_threshold(weights, self.threshold)


def rows_per_batch(dim: int, budget: int = BATCH_BYTES, cap: int = 256) -> int:
    """Rows of ``dim`` float32 weights that fit in ``budget`` bytes (at least 1, at most ``cap``)."""
    return max(1, min(cap, budget // (4 * dim)))


@dataclass
class ZooSource:
    """One config of a dataset repository (local folder or Hub id), as the baselines read it.

    Args:
        repo: repository folder or Hub id ``ORG/NAME``.
        config: config (zoo) name, e.g. ``digits_cnn_seed``.
        epochs: keep only these epochs (None: every stored epoch); the states that are samples of the benchmark.
        weight_threshold: drop states with any |w| above it (module docstring); inf or None: keep them.
        streaming: read Parquet files directly (``IterableDataset``) instead of the map-style Arrow cache.
        workers: DataLoader workers (streaming: at most the number of shards).
        batch_size: rows per batch; None: ``rows_per_batch(D)`` (≈ 64 MiB of weights, ≤ 256 rows).
    """

    repo: str | Path
    config: str
    epochs: Sequence[int] | None = None
    weight_threshold: float | None = WEIGHT_THRESHOLD
    streaming: bool = False
    workers: int = 0
    batch_size: int | None = None
    info: ConfigInfo = field(init=False, repr=False)
    _maps: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.info = config_info(self.repo, self.config)
        self.weight_threshold = parse_threshold(self.weight_threshold)
        if self.epochs is not None:
            self.epochs = tuple(int(e) for e in self.epochs)
            unknown = sorted(set(self.epochs) - set(self.info.epochs))
            if unknown or not self.epochs:
                raise ValueError(f"epochs {unknown or list(self.epochs)} are not stored in {self.config!r} "
                                 f"(stored: {self.info.epochs[0]}..{self.info.epochs[-1]})")

    @property
    def layout(self) -> Layout:
        return self.info.layout

    @property
    def dim(self) -> int:
        return self.info.layout.size

    @property
    def rows(self) -> int:
        return self.batch_size or rows_per_batch(self.dim)

    @property
    def thresholded(self) -> bool:
        return bool(np.isfinite(self.weight_threshold))

    def filters(self) -> list[tuple]:
        """The pyarrow filters pushed down to the reader: finite states, of the chosen epochs."""
        rows = [("nonfinite", "==", False)]
        return rows + ([("epoch", "in", list(self.epochs))] if self.epochs is not None else [])

    def _check_split(self, split: str) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")

    def _selection(self, split: str) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, Any]]:
        """(indices of the kept rows among the finite ones, metadata of the kept rows, ``removal_counts``)."""
        self._check_split(split)
        if ("selection", split) not in self._maps:
            epochs = [("epoch", "in", list(self.epochs))] if self.epochs is not None else []
            table = load_zoo(self.repo, self.config, split=split, columns=[*META, "nonfinite"], filters=epochs or None)
            meta = {c: np.asarray(v) for c, v in table.to_dict().items()}
            nonfinite = meta.pop("nonfinite").astype(bool)
            finite = {c: v[~nonfinite] for c, v in meta.items()}
            within = np.ones(len(finite["model_id"]), dtype=bool)
            if self.thresholded and len(within):
                within = self._screen(split, finite)
            over = np.zeros(len(nonfinite), dtype=bool)
            over[np.flatnonzero(~nonfinite)[~within]] = True
            counts = removal_counts(meta["model_id"], nonfinite, over)
            if counts["kept_states"] == 0:
                raise ValueError(f"split {split!r} of {self.config!r} has no state left after cleaning ({counts}"
                                 + (f", epochs {list(self.epochs)}" if self.epochs is not None else "")
                                 + "); raise or switch off the weight threshold")
            kept = np.flatnonzero(within)
            self._maps["selection", split] = (kept, {c: v[kept] for c, v in finite.items()}, counts)
        return self._maps["selection", split]

    def _screen(self, split: str, finite: dict[str, np.ndarray]) -> np.ndarray:
        """One pass over the finite states' weights: bool [N], no |w| above the threshold. Its DataLoader has
        its own generator: the pass runs on a split's first use, and drawing from torch's global RNG would
        make a baseline's training depend on what was read before it seeded."""
        columns = (WEIGHTS, "model_id", "epoch")
        own = torch.Generator()
        if self.streaming:
            stream = load_zoo(self.repo, self.config, split=split, streaming=True, filters=self.filters())
            batches = iterable_loader(stream, self.rows, columns=list(columns), generator=own)
        else:
            batches = DataLoader(WeightsDataset(self._finite(split), columns=columns), batch_size=self.rows,
                                 collate_fn=collate_weights, generator=own)
        within, keys = [], []
        for batch in batches:
            within.append(within_threshold(batch[WEIGHTS], self.weight_threshold))
            keys.append(np.stack([np.asarray(batch["model_id"]), np.asarray(batch["epoch"])], 1))
        if not np.array_equal(np.concatenate(keys), np.stack([finite["model_id"], finite["epoch"]], 1)):
            raise RuntimeError(f"{self.config!r} {split}: the weights and the metadata of the finite states came in "
                               "different row orders; the repository's Parquet files may have changed while reading")
        return np.concatenate(within)

    def _finite(self, split: str) -> datasets.Dataset:
        if ("finite", split) not in self._maps:
            self._maps["finite", split] = load_zoo(self.repo, self.config, split=split, filters=self.filters())
        return self._maps["finite", split]

    def removed(self, split: str) -> dict[str, Any]:
        """``removal_counts`` of a split: states and models each cleaning rule removed, and what is left."""
        return self._selection(split)[2]

    def dataset(self, split: str) -> datasets.Dataset:
        """The map-style split (all columns) of the kept states, loaded once."""
        kept, _, counts = self._selection(split)
        if ("map", split) not in self._maps:
            finite = self._finite(split)
            removed = counts["threshold"]["states"] > 0
            self._maps["map", split] = finite.select(kept) if removed else finite
        return self._maps["map", split]

    def weights(self, split: str, rows: Sequence[int] | np.ndarray) -> torch.Tensor:
        """float32 [n, D]: the weights of rows ``rows`` (indices into ``metadata(split)``), in that order."""
        return WeightsDataset(self.dataset(split)).__getitems__(np.asarray(rows).tolist())[WEIGHTS]

    def metadata(self, split: str) -> dict[str, np.ndarray]:
        """Metadata columns (``META``) of the kept states of a split, in row order (a small Arrow cache)."""
        return self._selection(split)[1]

    def loader(self, split: str, columns: Sequence[str] = (WEIGHTS,), *, transform: Callable | None = None,
               shuffle: bool = False, seed: int = 0, batch_size: int | None = None,
               drop_last: bool = False) -> DataLoader:
        """A DataLoader of ``{column: [B, ...]}`` batches (``weights`` float32 [B, D], or the transform's output).

        Shuffled loaders give a new order every epoch (map-style: the DataLoader's seeded generator;
        streaming: iterate with ``epochs(loader, e)``, which calls ``set_epoch``). Map-style workers persist
        across epochs; streaming workers restart every epoch (a persistent worker would miss ``set_epoch``).
        Note: ``datasets`` sleeps ``datasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN`` (5 s) after every
        shuffled pass over Parquet shards (an Arrow shutdown workaround), so short streaming epochs cost ≥ 5 s.
        """
        batch_size = batch_size or self.rows
        if self.streaming:
            self._selection(split)  # counts the removals (one pass) and checks that states are left
            stream = load_zoo(self.repo, self.config, split=split, streaming=True, filters=self.filters())
            if self.workers > stream.num_shards:
                stream = stream.reshard()  # before the filter: one shard per row group
            if self.thresholded:
                stream = stream.with_format("numpy").filter(_Within(self.weight_threshold), batched=True,
                                                            input_columns=[WEIGHTS])
            return iterable_loader(stream, batch_size, columns=list(columns), transform=transform,
                                   num_workers=self.workers, seed=seed,
                                   shuffle_buffer=4 * batch_size if shuffle else None, drop_last=drop_last)
        ds = WeightsDataset(self.dataset(split), columns=columns, transform=transform, seed=seed)
        generator = torch.Generator().manual_seed(seed) if shuffle else None
        return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, num_workers=self.workers,
                          collate_fn=collate_weights, generator=generator, drop_last=drop_last,
                          persistent_workers=self.workers > 0)

    def model_batches(self, split: str, models_per_batch: int, columns: Sequence[str] = (WEIGHTS,), *,
                      transform: Callable | None = None, seed: int = 0) -> DataLoader:
        """A map-style DataLoader whose batches are ``models_per_batch`` whole models (all their rows).

        Models are reshuffled every epoch (``ModelBatches``); a last incomplete group is dropped, so every
        batch has the same number of models. Streaming sources cannot group rows: use ``loader``.
        """
        if self.streaming:
            raise ValueError("model_batches needs the map-style dataset (streaming=False)")
        ds = WeightsDataset(self.dataset(split), columns=columns, transform=transform, seed=seed)
        sampler = ModelBatches(self.metadata(split)["model_id"], models_per_batch, seed)
        return DataLoader(ds, batch_sampler=sampler, num_workers=self.workers, collate_fn=collate_weights,
                          persistent_workers=self.workers > 0)

    def extract(self, split: str, fn: Callable[[torch.Tensor], Any], *, progress: bool = False,
                desc: str = "") -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(``fn`` of every batch of weights, stacked [N, F]; metadata columns [N]) for a split, in one pass.

        ``fn`` maps float32 weights [B, D] to features [B, F] (array or tensor); rows keep their order.
        """
        columns = [WEIGHTS, *self.metadata(split)]
        features, meta = [], {c: [] for c in columns[1:]}
        loader = self.loader(split, columns)
        for batch in tqdm(loader, desc=desc or f"{split} features", disable=not progress, leave=False):
            out = fn(batch[WEIGHTS])
            features.append(out.detach().cpu().numpy() if isinstance(out, torch.Tensor) else np.asarray(out))
            for c in meta:
                meta[c].append(np.asarray(batch[c]))
        return np.concatenate(features), {c: np.concatenate(v) for c, v in meta.items()}


class ModelBatches:
    """Batch sampler: row indices of ``models`` whole models per batch, models in a new order every epoch.

    ``model_ids`` [N] is the model of every row (rows of one model need not be adjacent). With fewer
    models than ``models``, every batch holds all of them.
    """

    def __init__(self, model_ids: np.ndarray, models: int, seed: int = 0) -> None:
        if models < 1:
            raise ValueError(f"models per batch must be ≥ 1, got {models}")
        self.rows: dict[int, list[int]] = {}
        for row, model in enumerate(np.asarray(model_ids).tolist()):
            self.rows.setdefault(model, []).append(row)
        self.models = min(models, len(self.rows))
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.rows) // self.models

    def __iter__(self) -> Iterator[list[int]]:
        order = self.rng.permutation(sorted(self.rows))
        for start in range(0, len(self) * self.models, self.models):
            yield [row for model in order[start : start + self.models].tolist() for row in self.rows[model]]


def epochs(loader: DataLoader, epoch: int) -> Iterator[dict]:
    """Iterate one epoch of ``loader`` (streaming datasets reshuffle through ``set_epoch``)."""
    if hasattr(loader.dataset, "set_epoch"):
        loader.dataset.set_epoch(epoch)
    return iter(loader)


# ---------------------------------------------------------------------------------------------------------
# Per-layer standardisation
# ---------------------------------------------------------------------------------------------------------


def layer_ids(layout: Layout) -> np.ndarray:
    """int64 [D]: the layer of every flat entry (a weight and its bias share one; other tensors their own).

    Equal to the layer ids that ``transforms.chunk_tokens(layout, ...)`` assigns (``positions[..., 1]``).
    """
    ids = np.empty(layout.size, dtype=np.int64)
    layer, weights = -1, {e.name.rsplit(".", 1)[0] for e in layout.entries if e.name.endswith(".weight")}
    for entry in layout.entries:
        module, _, kind = entry.name.rpartition(".")
        if not (kind == "bias" and module in weights):
            layer += 1
        ids[entry.offset : entry.offset + entry.numel] = layer
    return ids


def tensor_ids(layout: Layout) -> np.ndarray:
    """int64 [D]: the index of the tensor (layout entry) of every flat entry; a bias apart from its weight."""
    return np.repeat(np.arange(len(layout.entries)), [e.numel for e in layout.entries])


NORMALISATIONS = ("tensor", "layer", "none")  # LayerStats groups: per tensor, per layer, no standardisation


@dataclass(frozen=True)
class LayerStats:
    """Mean and std per group (layer: ``layer_ids``, or tensor: ``tensor_ids``) of the training weights;
    standardise flat vectors, or tokens."""

    mean: torch.Tensor  # float32 [groups]
    std: torch.Tensor  # float32 [groups], ≥ STD_FLOOR
    ids: torch.Tensor  # int64 [D]: group (layer or tensor) of every flat entry

    @classmethod
    def of(cls, source: ZooSource, normalisation: str, max_rows: int | None = None) -> LayerStats:
        """The statistics of one of ``NORMALISATIONS`` (``fit`` per tensor or per layer, or ``identity``)."""
        if normalisation not in NORMALISATIONS:
            raise ValueError(f"normalisation must be one of {', '.join(NORMALISATIONS)}, got {normalisation!r}")
        if normalisation == "none":
            return cls.identity(source.layout)
        return cls.fit(source, max_rows=max_rows, per_tensor=normalisation == "tensor")

    @classmethod
    def fit(cls, source: ZooSource, split: str = "train", max_rows: int | None = None, *,
            per_tensor: bool = False) -> LayerStats:
        """One streaming pass over (the first ``max_rows`` rows of) a split; float64 accumulators."""
        ids = tensor_ids(source.layout) if per_tensor else layer_ids(source.layout)
        layers = int(ids.max()) + 1
        total, squares, rows = np.zeros(layers), np.zeros(layers), 0
        for batch in source.loader(split):
            w = batch[WEIGHTS].double().numpy()[: None if max_rows is None else max_rows - rows]
            total += np.bincount(ids, weights=w.sum(0), minlength=layers)
            squares += np.bincount(ids, weights=(w * w).sum(0), minlength=layers)
            rows += len(w)
            if max_rows is not None and rows >= max_rows:
                break
        count = rows * np.bincount(ids, minlength=layers)
        mean = total / count
        std = np.maximum(np.sqrt(np.maximum(squares / count - mean**2, 0.0)), STD_FLOOR)
        as32 = torch.float32
        return cls(torch.tensor(mean, dtype=as32), torch.tensor(std, dtype=as32), torch.from_numpy(ids))

    @classmethod
    def identity(cls, layout: Layout) -> LayerStats:
        """Mean 0 and std 1 for every tensor: ``standardize`` leaves weights as they are (no normalisation)."""
        ids = tensor_ids(layout)
        groups = int(ids.max()) + 1
        return cls(torch.zeros(groups), torch.ones(groups), torch.from_numpy(ids))

    def to(self, device: str | torch.device) -> LayerStats:
        return LayerStats(self.mean.to(device), self.std.to(device), self.ids.to(device))

    def standardize(self, flat: torch.Tensor) -> torch.Tensor:
        """[..., D] → (w − μ_g) / σ_g."""
        return (flat - self.mean[self.ids]) / self.std[self.ids]

    def restore(self, flat: torch.Tensor) -> torch.Tensor:
        """Inverse of ``standardize``."""
        return flat * self.std[self.ids] + self.mean[self.ids]

    def token_groups(self, tokenizer: Tokenizer) -> torch.Tensor:
        """int32 [T, L] on the statistics' device: the group of every token entry (padding: group 0)."""
        index = torch.tensor(tokenizer.index, device=self.ids.device)
        return torch.cat([self.ids, self.ids.new_zeros(1)])[index].int()

    def standardize_tokens(self, values: torch.Tensor, groups: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Token values [..., T, L] and the group of every entry [..., T, L] (``token_groups`` at the tokens'
        global positions) → ``standardize`` of every entry, padding kept at zero."""
        groups = groups.long()
        return (values - self.mean[groups]) / self.std[groups] * mask
