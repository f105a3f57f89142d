"""Reading a published zoo (docs/hub_format.md): rows, layouts, modules, and fast torch access to weights.

A config of the dataset repository (a local folder laid out like the Hub repository, or a Hub id) is
read with plain ``datasets``; this module adds what ``datasets`` cannot know:

- ``config_info(repo, config)``: ``data/<config>/zoo.json`` as a typed ``ConfigInfo`` (layout, zoo spec,
  image data recipe, model splits; ``modelzoos.repository``, re-exported here for convenience);
- ``build_module(row, info)`` / ``evaluate_row(row, info)``: the row's torch module, and its test loss and
  accuracy recomputed on the zoo's image data (equal to the recorded ``test_loss`` / ``test_acc``);
- ``WeightsDataset``: a map-style torch ``Dataset`` over a ``datasets.Dataset`` that reads whole batches
  through Arrow (zero-copy for contiguous index ranges) and applies a weight-space transform per batch;
- ``iterable_loader`` / ``collate_weights``: the streaming path (``datasets.IterableDataset``, DataLoader
  workers over shards, ``split_dataset_by_node`` for several nodes);
- ``load_zoo``: ``datasets.load_dataset`` with the arguments spelled out.

Example::

    from torch.utils.data import DataLoader
    from modelzoos.loading import WeightsDataset, collate_weights, config_info, evaluate_row, load_zoo

    ds = load_zoo("ORG/model-zoos", "mnist_cnn_seed", split="train", filters=[("epoch", "==", 50)])
    info = config_info("ORG/model-zoos", "mnist_cnn_seed")
    loss, acc = evaluate_row(ds[0], info)  # == ds[0]["test_loss"], ds[0]["test_acc"]
    loader = DataLoader(WeightsDataset(ds, columns=("weights", "test_acc")), batch_size=256, shuffle=True,
                        num_workers=4, collate_fn=collate_weights)
    for batch in loader:  # {"weights": float32 [256, D], "test_acc": float64 [256]}
        ...

Transforms: ``WeightsDataset`` and ``iterable_loader`` apply a ``transform(weights, rng)`` of
``modelzoos.transforms`` to float32 ``[B, D]`` batches through ``transforms.Augment``, the package's one
adapter and RNG convention (a fresh generator per batch from one draw of the process's torch RNG:
independent DataLoader workers, a new draw every epoch, reproducible from ``torch.manual_seed(s)``). A
transform may return ``transforms.Tokens``: the batch then holds ``weights`` (token values), ``mask``
(bool) and ``positions`` (int64).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import torch
from datasets.distributed import split_dataset_by_node
from torch import nn
from torch.utils.data import DataLoader

from modelzoos.architectures import build_model
from modelzoos.data import ImageData, load_image_data
from modelzoos.repository import WEIGHTS, ConfigInfo, config_info
from modelzoos.training import evaluate
from modelzoos.transforms import TOKEN_COLUMNS, Augment

__all__ = [
    "WEIGHTS",
    "ConfigInfo",
    "WeightBatch",
    "WeightsDataset",
    "build_module",
    "collate_weights",
    "config_info",
    "evaluate_row",
    "iterable_loader",
    "load_zoo",
]

_OUTPUTS = ("torch", "numpy")

Transform = Callable[[np.ndarray, np.random.Generator], Any]
AnyDataset = datasets.Dataset | datasets.DatasetDict | datasets.IterableDataset | datasets.IterableDatasetDict


# ---------------------------------------------------------------------------------------------------------
# Modules and their accuracy
# ---------------------------------------------------------------------------------------------------------


def _single(info: ConfigInfo, axis: str):
    values = info.zoo.grid[axis]
    if len(values) != 1:
        raise ValueError(f"zoo {info.zoo.name} varies {axis} ({list(values)}): pass a row (a dict with "
                         f"{axis!r} and {WEIGHTS!r}) instead of bare weights")
    return values[0]


def _flat(weights: Any, info: ConfigInfo) -> torch.Tensor:
    if isinstance(weights, torch.Tensor):
        flat = weights.detach().to("cpu", torch.float32).clone()
    else:
        flat = torch.from_numpy(np.array(weights, dtype=np.float32, copy=True))
    if flat.shape != (info.layout.size,):
        raise ValueError(f"weights have shape {tuple(flat.shape)}, config {info.config!r} has vectors of "
                         f"{info.layout.size} floats")
    return flat


def build_module(row_or_weights: Mapping[str, Any] | np.ndarray | torch.Tensor | Sequence[float], info: ConfigInfo,
                 device: str | torch.device = "cpu") -> nn.Module:
    """The torch module of one row (or of a bare flat vector ``[D]``), in eval mode, on ``device``.

    Architecture, input channels and classes come from ``info.zoo``; activation and dropout from the row
    (``activation``, ``dropout`` keys), or, for bare weights, from the zoo's grid when it has a single value.
    The row may hold the weights as a list (default format), a numpy array or a tensor.
    """
    if isinstance(row_or_weights, Mapping):
        row = row_or_weights
        if WEIGHTS not in row:
            raise KeyError(f"row has no {WEIGHTS!r} column (columns: {', '.join(row)}); load it with the weights")
        if "zoo" in row and row["zoo"] != info.zoo.name:
            raise ValueError(f"row is from zoo {row['zoo']!r}, the ConfigInfo describes {info.zoo.name!r}")
        activation = str(row["activation"]) if "activation" in row else _single(info, "activation")
        dropout = float(row["dropout"]) if "dropout" in row else _single(info, "dropout")
        flat = _flat(row[WEIGHTS], info)
    else:
        activation, dropout = _single(info, "activation"), _single(info, "dropout")
        flat = _flat(row_or_weights, info)
    zoo = info.zoo
    model = build_model(zoo.architecture, in_channels=zoo.in_channels, num_classes=zoo.num_classes,
                        activation=activation, dropout=dropout)
    info.layout.load_into(model, flat)
    return model.to(device).eval()


def evaluate_row(row: Mapping[str, Any], info: ConfigInfo, data_root: str | Path | None = None, *,
                 data: ImageData | None = None, device: str | torch.device = "cpu") -> tuple[float, float]:
    """(test loss in nats, test accuracy in [0, 1]) of the row's module on the zoo's test split.

    Rebuilds the module (``build_module``) and runs ``modelzoos.training.evaluate`` on the test split of
    ``load_image_data(info.zoo.data, data_root)``, as training recorded it: on the device the zoo was made
    on (CPU for the published ones) the result equals the row's ``test_loss`` / ``test_acc``. Pass
    ``data`` (that ``ImageData``) to evaluate many rows without rebuilding the images each time. Warns
    when the images differ from the ones the zoo was trained on (``info.data["sha256"]``).
    """
    if data is None:
        data = load_image_data(info.zoo.data, data_root)
    expected = info.data.get("sha256")
    if expected and data.sha256 != expected:
        warnings.warn(f"the image data of {info.zoo.data.dataset!r} (sha256 {data.sha256[:12]}…) differs from the "
                      f"data config {info.config!r} was trained on ({expected[:12]}…): results may differ from "
                      "the recorded metrics", stacklevel=2)
    device = torch.device(device)
    return evaluate(build_module(row, info, device), data.test, device)


# ---------------------------------------------------------------------------------------------------------
# Map-style: batches through Arrow
# ---------------------------------------------------------------------------------------------------------


def _is_list(dtype: pa.DataType) -> bool:
    return pa.types.is_list(dtype) or pa.types.is_large_list(dtype) or pa.types.is_fixed_size_list(dtype)


def _matrix(column: pa.ChunkedArray, name: str) -> np.ndarray:
    """A list column → float32 ``[rows, D]``: a read-only view of the Arrow buffer for a single chunk.

    ``.flatten()`` honours each chunk's slice offset (``.values`` would return the whole chunk's child values).
    """
    parts = []
    for chunk in column.chunks:
        if chunk.null_count:
            raise ValueError(f"column {name!r} has null rows; every row must hold a vector")
        flat = chunk.flatten()
        if flat.null_count:
            raise ValueError(f"column {name!r} holds null elements (NaN is allowed, null is not)")
        values = flat.to_numpy(zero_copy_only=False)
        if len(chunk) and values.size % len(chunk):
            raise ValueError(f"column {name!r} holds vectors of different lengths; use a fixed-length list column")
        parts.append(values.reshape(len(chunk), -1))
    if not parts:
        return np.zeros((0, 0), np.float32)
    out = parts[0] if len(parts) == 1 else np.concatenate(parts)
    return out if out.dtype == np.float32 else out.astype(np.float32)


def _scalars(column: pa.ChunkedArray) -> np.ndarray | list:
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return column.to_pylist()
    return column.to_numpy()


def _to_torch(value: Any) -> Any:
    """numpy → torch (sharing memory when the array is writable, one copy otherwise); others unchanged."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "USO":
            return value.tolist()
        return torch.from_numpy(value if value.flags.writeable else value.copy())
    if isinstance(value, np.generic):
        return torch.as_tensor(value.item())
    return value


class WeightBatch(Sequence):
    """One batch of ``WeightsDataset`` rows, held column-wise: ``batch["weights"]`` is a column ``[B, ...]``,
    ``batch[i]`` the i-th row as a dict, ``len(batch)`` the rows.

    ``collate_weights`` turns it into ``{column: tensor}`` without copying; torch's ``default_collate``
    (a DataLoader without ``collate_fn``) sees a sequence of row dicts and stacks them into the same
    result, row by row (slower for big batches).
    """

    def __init__(self, columns: dict[str, Any]) -> None:
        self.columns = columns
        self._rows = len(next(iter(columns.values())))

    def __len__(self) -> int:
        return self._rows

    def __getitem__(self, key: int | str) -> Any:  # type: ignore[override]
        if isinstance(key, str):
            return self.columns[key]
        if not -self._rows <= key < self._rows:
            raise IndexError(f"row {key} of a batch of {self._rows}")
        return {name: values[key] for name, values in self.columns.items()}

    def __repr__(self) -> str:
        return f"WeightBatch(rows={self._rows}, columns={list(self.columns)})"


class WeightsDataset(torch.utils.data.Dataset):
    """A torch ``Dataset`` of whole batches of weights (and metrics) from a map-style ``datasets.Dataset``.

    Args:
        dataset: a ``datasets.Dataset`` (e.g. ``load_zoo(repo, config, split="train")``; ``select``,
            ``filter`` and ``shuffle`` results work too).
        columns: the columns to return; list columns (``weights``) become float32 ``[B, D]``, numeric and
            bool columns ``[B]`` arrays/tensors, string columns lists of str.
        transform: optional ``transform(weights, rng)`` on the float32 ``[B, D]`` batch of the ``weights``
            column, applied through ``transforms.Augment`` (a fresh generator per batch, module docstring).
            Its input may be a read-only view of the Arrow buffer: it must return a new array. It may return
            ``transforms.Tokens`` (the batch then also holds ``mask`` and ``positions``).
        output: ``"torch"`` (tensors) or ``"numpy"`` (arrays; zero-copy read-only views where possible).
        seed: mixed into every transform generator (different seeds → different augmentation streams).

    ``__getitems__(indices)`` reads a batch with one Arrow query: a contiguous ascending index range is a
    zero-copy slice of the memory-mapped table; other index lists (``shuffle=True``) are gathered with one
    copy. It returns a ``WeightBatch``: ``DataLoader(ds, batch_size=B, collate_fn=collate_weights)`` gets
    ``{column: [B, ...]}`` without copies; without ``collate_fn`` torch's default collate builds the same
    dict row by row. The dataset pickles by file path (the Arrow table of a loaded dataset is memory-mapped),
    so DataLoader workers (fork or spawn) re-open the file instead of copying it. ``dataset[i]`` returns one
    row with ``weights`` ``[D]``.
    """

    def __init__(self, dataset: datasets.Dataset, columns: Sequence[str] = (WEIGHTS,),
                 transform: Transform | None = None, *, output: str = "torch", seed: int = 0) -> None:
        if not isinstance(dataset, datasets.Dataset):
            raise TypeError(f"WeightsDataset needs a map-style datasets.Dataset, got {type(dataset).__name__}; "
                            "for streaming (IterableDataset) use iterable_loader")
        columns = (columns,) if isinstance(columns, str) else tuple(columns)
        unknown = [c for c in columns if c not in dataset.column_names]
        if not columns or unknown:
            raise KeyError(f"unknown or no columns {unknown or list(columns)}; the dataset has "
                           f"{', '.join(dataset.column_names)}")
        if output not in _OUTPUTS:
            raise ValueError(f"output {output!r} unknown; valid: {', '.join(_OUTPUTS)}")
        self.columns, self.output = columns, output
        self.augment = None if transform is None else _adapter(transform, columns, seed)
        self.lists = tuple(c for c in columns if _is_list(dataset.data.schema.field(c).type))
        self._arrow = dataset.select_columns(list(columns)).with_format("arrow")

    def __len__(self) -> int:
        return len(self._arrow)

    def __repr__(self) -> str:
        return f"WeightsDataset(rows={len(self)}, columns={list(self.columns)}, augment={self.augment!r}, " \
               f"output={self.output!r})"

    def _query(self, indices: Sequence[int]) -> pa.Table:
        idx = np.asarray(indices, dtype=np.int64)
        if idx.ndim != 1 or not len(idx):
            raise IndexError(f"expected a non-empty list of row indices, got {indices!r}")
        idx = np.where(idx < 0, idx + len(self), idx)
        if idx.min() < 0 or idx.max() >= len(self):
            raise IndexError(f"row index out of range for a dataset of {len(self)} rows: {list(indices)}")
        if len(idx) == 1 or bool(np.all(np.diff(idx) == 1)):
            return self._arrow[int(idx[0]) : int(idx[-1]) + 1]  # zero-copy slice
        return self._arrow[idx.tolist()]

    def __getitems__(self, indices: Sequence[int]) -> WeightBatch:
        table = self._query(indices)
        batch: dict[str, Any] = {}
        for name in self.columns:
            column = table.column(name)
            batch[name] = _matrix(column, name) if name in self.lists else _scalars(column)
        if self.augment is not None:
            batch = self.augment(batch)
        if self.output == "torch":
            batch = {k: _to_torch(v) for k, v in batch.items()}
        return WeightBatch(batch)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.__getitems__([index])[0]


def _adapter(transform: Transform, columns: Sequence[str], seed: int) -> Augment:
    """``transform`` on the ``weights`` column through ``transforms.Augment`` (the one adapter)."""
    if WEIGHTS not in columns:
        raise ValueError(f"a transform applies to the {WEIGHTS!r} column, which is not in columns {list(columns)}")
    clash = [c for c in TOKEN_COLUMNS if c in columns]
    if clash:
        raise ValueError(f"columns {clash} would clash with the mask/positions of a transform returning Tokens; "
                         "load them without a transform")
    return Augment(transform, column=WEIGHTS, seed=seed)


# ---------------------------------------------------------------------------------------------------------
# Streaming: IterableDataset → DataLoader
# ---------------------------------------------------------------------------------------------------------


def collate_weights(rows: WeightBatch | Sequence[Mapping[str, Any]] | Mapping[str, Any]) -> dict[str, Any]:
    """DataLoader ``collate_fn`` for weight rows: a dict of torch tensors ``{column: [B, ...]}``.

    ``rows`` is a ``WeightBatch`` (``WeightsDataset``) or a batch dict: its columns become tensors as they
    are; or a list of row dicts (streaming, or ``Dataset.with_format("numpy")``): arrays are stacked with
    their dtypes (weights float32 ``[B, D]``, token masks bool, positions int64), numbers and bools to
    ``[B]``, strings kept as lists.
    """
    if isinstance(rows, WeightBatch):
        rows = rows.columns
    if isinstance(rows, Mapping):
        return {k: _to_torch(v) for k, v in rows.items()}
    if not rows:
        raise ValueError("collate_weights got an empty batch")
    out: dict[str, Any] = {}
    for key in rows[0]:
        values = [row[key] for row in rows]
        first = values[0]
        if isinstance(first, str):
            out[key] = values
        elif isinstance(first, torch.Tensor):
            out[key] = torch.stack(values)
        else:
            array = np.stack([np.asarray(v) for v in values])
            if array.dtype.kind in "USO":
                out[key] = array.tolist()
            else:
                out[key] = torch.from_numpy(array)
    return out


def iterable_loader(dataset: datasets.IterableDataset, batch_size: int, *, columns: Sequence[str] | None = None,
                    transform: Transform | None = None, num_workers: int = 0, shuffle_buffer: int | None = None,
                    seed: int = 0, rank: int | None = None, world_size: int | None = None,
                    **loader_kwargs: Any) -> DataLoader:
    """A DataLoader of ``collate_weights`` batches over a streaming ``datasets.IterableDataset``.

    Steps, all plain ``datasets``: ``select_columns(columns)`` → ``reshard()`` when there are fewer shards
    than ``num_workers`` (per node) → ``shuffle(seed, buffer_size=shuffle_buffer)`` (a buffer of that many rows plus
    shard-order shuffling; keep it small for big rows: 16–64 for ResNet-18) →
    ``split_dataset_by_node(rank, world_size)`` → ``with_format("numpy")`` → ``map(Augment(transform),
    batched=True)`` → ``DataLoader(batch_size, num_workers, collate_fn=collate_weights)``.

    Each DataLoader worker reads whole shards. A repository's Parquet files hold ≥ 2 row groups each, and
    ``reshard()`` makes every row group a shard, so a split of one file serves 2 workers or more; when even
    the row groups are fewer than ``num_workers``, only that many workers start (a warning says so). With
    ``rank``/``world_size`` each node reads its own shards when ``num_shards % world_size == 0``; otherwise
    every node reads all shards and keeps every ``world_size``-th row (a warning says so). Call
    ``loader.dataset.set_epoch(e)`` each epoch to reshuffle. Extra keyword arguments go to the DataLoader.

    Example::

        ds = load_zoo("ORG/model-zoos", "cifar10_resnet18_seed", split="train", streaming=True)
        loader = iterable_loader(ds, 32, columns=["weights", "test_acc"], num_workers=4, shuffle_buffer=64,
                                 rank=rank, world_size=world_size)
    """
    if not isinstance(dataset, datasets.IterableDataset):
        raise TypeError(f"iterable_loader needs a datasets.IterableDataset (load_zoo(..., streaming=True)), got "
                        f"{type(dataset).__name__}; for a map-style Dataset use WeightsDataset")
    if columns is not None:
        columns = [columns] if isinstance(columns, str) else list(columns)
        dataset = dataset.select_columns(columns)
    augment = None if transform is None else _adapter(transform, columns or dataset.column_names or [WEIGHTS], seed)
    if (rank is None) != (world_size is None):
        raise ValueError(f"pass both rank and world_size or neither, got rank={rank}, world_size={world_size}")
    if world_size is not None and not 0 <= rank < world_size:
        raise ValueError(f"rank must be in 0..{world_size - 1}, got {rank}")
    per_node = num_workers * (world_size or 1)
    if per_node > dataset.num_shards:
        dataset = dataset.reshard()  # one shard per row group instead of per file
    if shuffle_buffer is not None:
        dataset = dataset.shuffle(seed=seed, buffer_size=shuffle_buffer)
    if world_size is not None:
        if dataset.num_shards % world_size:
            warnings.warn(f"{dataset.num_shards} shards do not divide among {world_size} nodes: every node reads all "
                          f"shards and keeps 1 row in {world_size}; use a world size that divides the shards",
                          stacklevel=2)
        dataset = split_dataset_by_node(dataset, rank=rank, world_size=world_size)
    if num_workers > dataset.num_shards:
        warnings.warn(f"num_workers={num_workers}, but the data has only {dataset.num_shards} shard(s) (row groups) "
                      f"to split among workers: using {dataset.num_shards} worker(s)", stacklevel=2)
        num_workers = dataset.num_shards
    dataset = dataset.with_format("numpy")
    if augment is not None:
        dataset = dataset.map(augment, batched=True, batch_size=batch_size)
    return DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_weights,
                      **loader_kwargs)


# ---------------------------------------------------------------------------------------------------------
# load_dataset, spelled out
# ---------------------------------------------------------------------------------------------------------


def load_zoo(repo: str | Path, config: str, split: str | None = None, *, streaming: bool = False,
             columns: Iterable[str] | None = None, filters: Any = None,
             **kwargs: Any) -> AnyDataset:
    """``datasets.load_dataset(str(repo), config, split=split, streaming=streaming, ...)``, nothing more.

    ``repo`` is a local repository folder or a Hub id ``ORG/NAME``; ``config`` a zoo name. ``columns``
    reads only those columns (skip ``weights`` for a metadata-only table); ``filters`` keeps the rows
    matching a pyarrow filter (list of ``(column, op, value)`` tuples, or a ``pyarrow.dataset``
    expression), pushed down to the Parquet reader. Other keyword arguments (``revision``, ``cache_dir``,
    ``num_proc``, ...) go to ``load_dataset``. Non-streaming loads convert the Parquet files into an Arrow
    cache once (disk use doubles); ``streaming=True`` reads the files directly.

    Local folders: ``datasets`` keys its Arrow cache of a folder by the folder's name and card, not by the
    files' contents, so a rebuilt folder (or another folder of the same name) would load the old rows.
    ``load_zoo`` therefore caches a local folder under ``<datasets cache>/modelzoos-local/<fingerprint>``,
    the fingerprint covering the folder's path and the size and modification time of its card and of the
    config's files (``cache_dir=`` overrides it).

    Examples::

        ds = load_zoo("ORG/model-zoos", "mnist_cnn_seed", split="train")
        last = load_zoo(repo, "mnist_cnn_seed", split="test", filters=[("epoch", "==", 50)])
        table = load_zoo(repo, "mnist_cnn_seed", split="train", columns=["model_id", "epoch", "test_acc"])
        stream = load_zoo(repo, "cifar10_resnet18_seed", split="train", streaming=True)
    """
    if columns is not None:
        kwargs["columns"] = [columns] if isinstance(columns, str) else list(columns)
    if filters is not None:
        kwargs["filters"] = filters
    if Path(repo).is_dir() and not streaming and "cache_dir" not in kwargs:
        kwargs["cache_dir"] = str(Path(datasets.config.HF_DATASETS_CACHE) / "modelzoos-local" / _fingerprint(
            Path(repo), config))
    return datasets.load_dataset(str(repo), config, split=split, streaming=streaming, **kwargs)


def _fingerprint(repo: Path, config: str) -> str:
    """Hex digest of a local folder's path and of the size and mtime of its card and the config's files."""
    files = [repo / "README.md", *sorted((repo / "data" / config).glob("*"))]
    stats = [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.is_file()]
    return hashlib.sha256(json.dumps(stats).encode()).hexdigest()[:16]
