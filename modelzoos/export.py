"""The zoo directory: writing it (``generate``, resumable) and reading it (``ZooDir``). Format: docs/format.md.

```
<zoo dir>/
  zoo.json                       spec, layout, data split, run parameters, versions
  metadata.parquet               one row per model state (written last: its presence means "complete")
  weights/models_<a>-<b>/        one chunk of models trained together (model ids a..b)
      epoch_<e>.safetensors      tensor "weights" float32 [models in chunk, D]; metrics in the metadata
      state.safetensors          training state after the last written epoch (removed when complete)
      complete.json              written when the chunk has all its epochs
```
Every file is written to a temporary name in the same directory and renamed into place, so no
half-written file is ever visible under its final name. A killed run continues from the last
``state.safetensors`` of each chunk; epochs are deterministic, so the finished zoo is identical to an
uninterrupted run.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from modelzoos.architectures import Layout
from modelzoos.catalogue import ModelConfig, Zoo
from modelzoos.data import ImageData, load_image_data
from modelzoos.population import train_population
from modelzoos.training import LEGACY_NUMERICS, METRICS, EpochResult, numerics, train_reference_chunk

FORMAT_VERSION = 1
# Engine name → trainer of one chunk of models: (zoo, configs, data, device, resume, stop) → EpochResults.
ENGINES = {"population": train_population, "reference": train_reference_chunk}
HYPERPARAMETERS = ("seed", "init", "activation", "optimizer", "lr", "weight_decay", "dropout", "batch_size",
                   "epochs", "schedule")

# The typed schema of metadata.parquet (one row per model state), declared once.
METADATA_SCHEMA = pa.schema([
    ("zoo", pa.string()),
    ("model_id", pa.int64()),
    ("epoch", pa.int64()),
    ("seed", pa.int64()),
    ("init", pa.string()),
    ("activation", pa.string()),
    ("optimizer", pa.string()),
    ("lr", pa.float64()),
    ("weight_decay", pa.float64()),
    ("dropout", pa.float64()),
    ("batch_size", pa.int64()),
    ("epochs", pa.int64()),  # the protocol's epochs (the run may stop earlier: zoo.json "run.epochs")
    ("schedule", pa.string()),
    *[(m, pa.float64()) for m in METRICS],  # losses: mean cross-entropy (nats); accuracies in [0, 1]
    ("ggap", pa.float64()),  # train_acc − test_acc
    ("nonfinite", pa.bool_()),  # the state holds NaN or ±inf weights
    ("weights_file", pa.string()),  # path relative to the zoo directory
    ("weights_row", pa.int64()),  # row of that file's "weights" tensor
])


class ZooFileError(RuntimeError):
    """A file of a zoo directory is missing, corrupt or belongs to another run; the message says how to fix it."""


# ---------------------------------------------------------------------------------------------------------
# Atomic writes
# ---------------------------------------------------------------------------------------------------------


def _sweep_temporaries(directory: Path) -> None:
    """Remove temporary files that a killed writer left in ``directory`` (never visible under a final name)."""
    for tmp in directory.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def _atomic(path: Path, write) -> None:
    """Call ``write(tmp_path)`` and rename the result onto ``path`` (same directory, fsynced)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj) -> None:
    _atomic(path, lambda p: p.write_text(json.dumps(obj, indent=2) + "\n"))


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    _atomic(path, lambda p: save_file({k: v.contiguous() for k, v in tensors.items()}, str(p), metadata))


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors and the metadata of a safetensors file; a damaged file raises ZooFileError naming it."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        return load_file(str(path)), meta
    except (SafetensorError, OSError, ValueError) as err:
        chunk = path.parent
        raise ZooFileError(
            f"{path} is corrupt or truncated ({err}). Fix: delete the chunk directory {chunk} and run the "
            "same `modelzoos generate` command again; only that chunk is retrained.") from err


# ---------------------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """What a zoo directory holds: which zoo, how many models, how many epochs, which engine."""

    zoo: Zoo
    models: int
    epochs: int
    engine: str
    chunk_size: int

    def configs(self) -> list[ModelConfig]:
        return self.zoo.models()[: self.models]

    def chunks(self) -> list[list[ModelConfig]]:
        configs = self.configs()
        return [configs[i : i + self.chunk_size] for i in range(0, len(configs), self.chunk_size)]

    def identity(self) -> dict:
        """The run as plain JSON data (as stored in zoo.json, so the two compare equal)."""
        return json.loads(json.dumps({"zoo": self.zoo.to_dict(), "models": self.models, "epochs": self.epochs,
                                      "engine": self.engine, "chunk_size": self.chunk_size}))


def chunk_dir(root: Path, chunk: list[ModelConfig]) -> Path:
    return root / "weights" / f"models_{chunk[0].model_id:06d}-{chunk[-1].model_id:06d}"


def _zoo_json(run: Run, data: ImageData, device: str) -> dict:
    split = {"train": data.train.labels.numel(), "val": 0 if data.val is None else data.val.labels.numel(),
             "test": data.test.labels.numel()}
    return {
        "format_version": FORMAT_VERSION,
        "run": run.identity(),
        "layout": run.zoo.layout.to_json(),
        "data": {"recipe": run.zoo.to_dict()["data"], "sizes": split, "sha256": data.sha256,
                 "num_classes": data.num_classes},
        "versions": {"modelzoos": version("modelzoos"), "torch": torch.__version__,
                     "python": platform.python_version()},
        "device": device,
        "numerics": numerics(device),
    }


def _check_or_write_zoo_json(root: Path, info: dict) -> None:
    path = root / "zoo.json"
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ZooFileError(f"{path} is not valid JSON ({err}); delete the directory {root} to start over") from err
        old_numerics = LEGACY_NUMERICS | old.get("numerics", {})  # switches added later were off before
        finished = (root / "metadata.parquet").exists()  # nothing left to train: the numerics do not matter
        if (old.get("run") != info["run"] or old.get("data", {}).get("sha256") != info["data"]["sha256"]
                or twin_record(old) != twin_record(info) or (old_numerics != info["numerics"] and not finished)):
            raise ZooFileError(
                f"{root} already holds a different zoo run ({old.get('run', {}).get('zoo', {}).get('name')}, "
                f"{old.get('run', {}).get('models')} models, {old.get('run', {}).get('epochs')} epochs, engine "
                f"{old.get('run', {}).get('engine')}, or other image data, twin settings or numerics {old_numerics}); "
                "choose another --out or delete it")
        return
    write_json(path, info)


def twin_record(info: dict) -> dict:
    """The ``twins`` record of a zoo.json (``modelzoos.twins``) without the machine-local ``source_path``:
    what identifies a twin run ({} for a trained zoo)."""
    return {k: v for k, v in info.get("twins", {}).items() if k != "source_path"}


def _epoch_path(cdir: Path, epoch: int) -> Path:
    return cdir / f"epoch_{epoch:03d}.safetensors"


def _save_epoch(cdir: Path, chunk: list[ModelConfig], result: EpochResult) -> None:
    """The epoch's file (``result.tensors()`` and the metrics), then the state to resume from after it."""
    meta = {"model_ids": json.dumps([c.model_id for c in chunk]), "epoch": str(result.epoch),
            "metrics": json.dumps(result.metrics)}
    write_safetensors(_epoch_path(cdir, result.epoch), result.tensors(), meta)
    write_safetensors(cdir / "state.safetensors", result.state, {"epoch": str(result.epoch)})


def _resume_point(cdir: Path) -> tuple[int, dict[str, torch.Tensor]] | None:
    path = cdir / "state.safetensors"
    if not path.exists():
        return None
    state, meta = read_safetensors(path)
    epoch = int(meta["epoch"])
    for e in range(epoch + 1):
        if not _epoch_path(cdir, e).exists():
            raise ZooFileError(f"{_epoch_path(cdir, e)} is missing although {path} says epoch {epoch} is done. "
                               f"Fix: delete the chunk directory {cdir} and rerun the same command.")
    return epoch, state


def train_chunk(run: Run, root: Path, chunk: list[ModelConfig], data: ImageData, device: str,
                bar: tqdm | None = None) -> None:
    """Train one chunk of models into its directory, resuming from its state file if there is one."""
    train = ENGINES[run.engine]
    write_chunk(root, chunk, run.epochs, lambda resume: train(run.zoo, chunk, data, device, resume=resume,
                                                              stop=run.epochs), bar)


def write_chunk(root: Path, chunk: list[ModelConfig], epochs: int,
                train: Callable[[tuple[int, dict[str, torch.Tensor]] | None], Iterable[EpochResult]],
                bar: tqdm | None = None) -> None:
    """Save the epochs that ``train(resume)`` yields into the chunk's directory; ``resume`` is read from its
    state file (None: from scratch). A writer thread saves epoch e while epoch e + 1 trains; ``bar`` advances
    once an epoch's files are written. A crash loses at most the epochs not yet saved."""
    cdir = chunk_dir(root, chunk)
    if (cdir / "complete.json").exists():
        return
    if cdir.exists():
        _sweep_temporaries(cdir)
    resume = _resume_point(cdir)
    if bar is not None and resume is not None:
        bar.update(len(chunk) * (resume[0] + 1))

    def wait(pending: Future | None) -> None:
        if pending is not None:
            pending.result()
            if bar is not None:
                bar.update(len(chunk))

    with ThreadPoolExecutor(max_workers=1) as writer:
        pending = None
        for result in train(resume):
            wait(pending)  # one save in flight: bounded memory, files in epoch order
            pending = writer.submit(_save_epoch, cdir, chunk, result)
        wait(pending)
    write_json(cdir / "complete.json", {"models": [c.model_id for c in chunk], "epochs": epochs})
    (cdir / "state.safetensors").unlink(missing_ok=True)


def generate(zoo: Zoo, out: str | Path, *, models: int | None = None, epochs: int | None = None,
             engine: str = "population", device: str = "cpu", data_root: str | Path | None = None,
             download: bool = False, chunk_size: int | None = None, progress: bool = True,
             backend: str = "local", ray_address: str | None = None) -> ZooDir:
    """Train (the first ``models`` models of) ``zoo`` for ``epochs`` epochs into the directory ``out``.

    Resumable: rerunning the same call after a crash continues where it stopped. ``backend="ray"`` trains
    one Ray task per chunk on the cluster at ``ray_address`` (None: a local Ray instance); ``out`` must then
    be on a filesystem shared by all nodes (``modelzoos.distributed``).
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; valid: {', '.join(ENGINES)}")
    if backend not in ("local", "ray"):
        raise ValueError(f"unknown backend {backend!r}; valid: local, ray")
    models = zoo.num_models if models is None else models
    epochs = zoo.epochs if epochs is None else epochs
    if not 1 <= models <= zoo.num_models:
        raise ValueError(f"--models must be in 1..{zoo.num_models} for {zoo.name}, got {models}")
    if not 0 <= epochs <= zoo.epochs:
        raise ValueError(f"--epochs must be in 0..{zoo.epochs} for {zoo.name}, got {epochs}")
    chunk_size = chunk_size or (1 if engine == "reference" else models)
    run = Run(zoo, models, epochs, engine, chunk_size)
    root = Path(out)
    if backend == "ray":
        from modelzoos.distributed import generate_ray

        generate_ray(run, root, data_root, download, device, address=ray_address, progress=progress)
        return ZooDir(root)
    data = load_image_data(zoo.data, data_root, download=download)
    root.mkdir(parents=True, exist_ok=True)
    _check_or_write_zoo_json(root, _zoo_json(run, data, device))
    if not (root / "metadata.parquet").exists():
        total = models * (epochs + 1)
        with tqdm(total=total, desc=f"{zoo.name} ({engine})", unit="state", disable=not progress) as bar:
            for chunk in run.chunks():
                train_chunk(run, root, chunk, data, device, bar)
        finalize(root, run)
    return ZooDir(root)


def finalize(root: Path, run: Run, schema: pa.Schema = METADATA_SCHEMA,
             extra_metadata: dict[str, str] | None = None) -> None:
    """Assemble metadata.parquet from the epoch files of all chunks (the zoo's completion mark).

    ``schema``: METADATA_SCHEMA, or it plus per-state metric columns that the epoch files' metrics hold
    (twins: ``sparsity``); ``extra_metadata`` joins the Parquet schema metadata.
    """
    _sweep_temporaries(root)
    extra_columns = [f.name for f in schema if f.name not in METADATA_SCHEMA.names]
    rows = []
    for chunk in run.chunks():
        cdir = chunk_dir(root, chunk)
        if not (cdir / "complete.json").exists():
            raise ZooFileError(f"chunk {cdir} is not complete; rerun the same `modelzoos generate` command")
        for epoch in range(run.epochs + 1):
            path = _epoch_path(cdir, epoch)
            tensors, meta = read_safetensors(path)
            weights = tensors["weights"]
            metrics = json.loads(meta["metrics"])
            finite = torch.isfinite(weights).all(dim=1)
            rel = path.relative_to(root).as_posix()
            for i, config in enumerate(chunk):
                row = {"zoo": run.zoo.name, "model_id": config.model_id, "epoch": epoch}
                row |= {h: getattr(config, h) for h in HYPERPARAMETERS}
                row |= {m: metrics[m][i] for m in (*METRICS, *extra_columns)}
                row |= {"ggap": metrics["train_acc"][i] - metrics["test_acc"][i], "nonfinite": not bool(finite[i]),
                        "weights_file": rel, "weights_row": i}
                rows.append(row)
    table = pa.Table.from_pylist(rows, schema=schema)
    table = table.sort_by([("model_id", "ascending"), ("epoch", "ascending")])
    spec = json.dumps(run.zoo.to_dict())
    table = table.replace_schema_metadata({"modelzoos.zoo": spec, "modelzoos.format_version": str(FORMAT_VERSION),
                                           **(extra_metadata or {})})
    _atomic(root / "metadata.parquet", lambda p: pq.write_table(table, p, compression="zstd"))


# ---------------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------------


class ZooDir:
    """A finished zoo directory: ``info`` (zoo.json), ``metadata`` (DataFrame), weights by row."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        meta = self.path / "metadata.parquet"
        if not (self.path / "zoo.json").exists():
            raise ZooFileError(f"{self.path} is not a zoo directory (no zoo.json); make one with `modelzoos generate`")
        if not meta.exists():
            raise ZooFileError(f"{self.path} is incomplete (no metadata.parquet); rerun its `modelzoos generate`")
        self.info = json.loads((self.path / "zoo.json").read_text())
        try:
            self.metadata: pd.DataFrame = pq.read_table(meta).to_pandas()
        except (pa.ArrowInvalid, OSError) as err:
            raise ZooFileError(f"{meta} is corrupt ({err}); delete it and rerun `modelzoos generate`") from err
        self.layout = Layout.from_json(self.info["layout"])
        self.zoo = Zoo.from_dict(self.info["run"]["zoo"], str(self.path / "zoo.json"))

    def __len__(self) -> int:
        return len(self.metadata)

    def __repr__(self) -> str:
        return f"ZooDir({self.path}, zoo={self.zoo.name}, states={len(self)})"

    def weights(self, rows: Iterable[int] | None = None) -> Iterator[tuple[int, torch.Tensor]]:
        """(metadata row index, float32 [D]) for each requested row, reading every weights file once."""
        frame = self.metadata if rows is None else self.metadata.iloc[list(rows)]
        for file, group in frame.groupby("weights_file", sort=False):
            tensors, _ = read_safetensors(self.path / file)
            w = tensors["weights"]
            if w.shape[-1] != self.layout.size:
                raise ZooFileError(f"{self.path / file} holds vectors of length {w.shape[-1]}, the layout says "
                                   f"{self.layout.size}: the file belongs to another zoo")
            for idx, r in zip(group.index, group["weights_row"], strict=True):
                yield int(idx), w[int(r)]

    def state(self, model_id: int, epoch: int) -> dict[str, torch.Tensor]:
        """The state dict of one model state."""
        hit = self.metadata.index[(self.metadata.model_id == model_id) & (self.metadata.epoch == epoch)]
        if len(hit) == 0:
            raise KeyError(f"no state for model {model_id} at epoch {epoch} in {self.path}")
        (_, flat), = self.weights([int(hit[0])])
        return self.layout.unflatten(flat)

    def summary(self) -> dict:
        last = self.metadata[self.metadata.epoch == self.metadata.epoch.max()]
        acc = last.test_acc.to_numpy()
        return {
            "path": str(self.path), "zoo": self.zoo.name, "models": int(self.metadata.model_id.nunique()),
            "states": len(self), "last_epoch": int(last.epoch.max()) if len(last) else 0,
            "test_acc": {q: float(np.nanquantile(acc, p)) for q, p in
                         (("min", 0), ("p25", 0.25), ("median", 0.5), ("p75", 0.75), ("max", 1))},
            "nonfinite_states": int(self.metadata.nonfinite.sum()),
        }
