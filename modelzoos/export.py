"""The zoo directory: its format, the one writer every producer uses, and the reader ``ZooDir``.

Format (docs/format.md)::

    <zoo dir>/
      zoo.json                       spec, layout, data split, run parameters, versions
      metadata.parquet               one row per model state (written last: its presence means "complete")
      weights/models_<a>-<b>/        one chunk of models written together (model ids a..b)
          epoch_<e>.safetensors      tensor "weights" float32 [models in chunk, D]; metrics in the metadata
          state.safetensors          resumable state after the last written epoch (removed when complete)
          complete.json              written when the chunk has all its epochs
      manifest.json                  size and SHA-256 of every file above (written last, ``modelzoos.manifest``)

Writing: a ``Producer`` (trained zoos: ``modelzoos.generate``; sparsified twins: ``modelzoos.twins``) says
what its zoo.json holds (``describe``) and yields the ``EpochResult`` of every epoch of a chunk of models
(``producer(chunk, resume)``). ``produce`` is the one orchestration: lock the directory, ``claim`` it (write
zoo.json, or check it is this run), write every ``pending`` chunk through ``write_chunk`` (resuming from its
state file), then ``finalize`` (metadata.parquet, then manifest.json). A ``Backend`` decides where chunks are
written: here (``LocalBackend``) or on a Ray cluster (``modelzoos.distributed.RayBackend``).

Every file is written through ``modelzoos.files`` (temporary name, then rename), so no half-written file is
ever visible under its final name; safetensors files through ``modelzoos.tensorfile`` (deterministic bytes,
a checksum of the data). A killed run continues from the last ``state.safetensors`` of each chunk; epochs
are deterministic, so the finished zoo is byte for byte an uninterrupted run's. Running ``produce`` on a
finished directory checks it against its manifest the cheap way (sizes, headers) and retrains the chunks
of damaged files. This module needs no torch: only the producers train.
"""

from __future__ import annotations

import contextlib
import json
import logging
import platform
import re
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from importlib.metadata import version
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from safetensors import SafetensorError, safe_open
from tqdm.auto import tqdm

from modelzoos import manifest, tensorfile
from modelzoos.catalogue import METRICS, ModelConfig, Zoo
from modelzoos.files import atomic_write, check_ours, lock, sweep_temporaries, write_json
from modelzoos.layout import Layout

if TYPE_CHECKING:
    from modelzoos.data import ImageData
    from modelzoos.training import EpochResult, Resume

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
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
OPTIMIZER_PREFIX = "optimizer."  # epoch-file tensors of the optimizer state (Run.optimizer_state)
# zoo.json keys every producer writes; any other top-level key is a producer's own section (e.g. "twins")
STANDARD_KEYS = ("format_version", "run", "layout", "data", "versions", "device", "numerics")
LOCAL_KEYS = ("source_path",)  # machine-local entries of a section: not part of a run's identity


WEIGHTS_FILE = re.compile(r"^weights/models_\d{6,}-\d{6,}/epoch_\d{3,}\.safetensors$")  # metadata's weights_file


class ZooFileError(RuntimeError):
    """A file of a zoo directory is missing, corrupt or belongs to another run; the message says how to fix it."""


# ---------------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------------


def write_safetensors(path: Path, tensors: dict[str, Any], metadata: dict[str, str]) -> None:
    """Write an epoch or state file (``tensorfile.write``: deterministic bytes, checksummed data)."""
    tensorfile.write(path, tensors, metadata)


def _damaged(path: Path, err: Exception) -> ZooFileError:
    return ZooFileError(f"{path} is corrupt or truncated ({err}). Fix: delete the chunk directory {path.parent} "
                        "and run the same command again; only that chunk is redone.")


def read_safetensors(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """All tensors (numpy) and the metadata of a safetensors file, its checksum verified; a damaged file
    raises ZooFileError naming it and the fix."""
    try:
        return tensorfile.read(path)
    except (tensorfile.TensorFileError, OSError) as err:
        raise _damaged(path, err) from err


# ---------------------------------------------------------------------------------------------------------
# What a directory holds
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """What a zoo directory holds: which zoo, how many models, how many epochs, which engine, chunked how."""

    zoo: Zoo
    models: int
    epochs: int
    engine: str
    chunk_size: int
    optimizer_state: bool = False  # the epoch files also hold the optimizer state (``EpochResult.optimizer``)

    def configs(self) -> list[ModelConfig]:
        return self.zoo.models()[: self.models]  # enumerates only these models (catalogue.Models)

    def chunks(self) -> list[list[ModelConfig]]:
        configs = self.configs()
        return [configs[i : i + self.chunk_size] for i in range(0, len(configs), self.chunk_size)]

    def stored_epochs(self) -> tuple[int, ...]:
        """The epochs the directory holds, ascending: 0 … ``epochs`` (an import may keep fewer)."""
        return tuple(range(self.epochs + 1))

    def identity(self) -> dict:
        """The run as plain JSON data (as stored in zoo.json; ``optimizer_state`` only when on)."""
        return {"zoo": self.zoo.to_dict(), "models": self.models, "epochs": self.epochs, "engine": self.engine,
                "chunk_size": self.chunk_size, **({"optimizer_state": True} if self.optimizer_state else {})}


def describe(run: Run, data: ImageData | None, device: str, **sections: dict) -> dict:
    """The zoo.json of ``run`` trained on ``data`` on ``device``; ``sections`` are a producer's own records.

    ``data`` None (an import: the models were trained elsewhere) records the recipe without sizes and hash.
    """
    from modelzoos.training import numerics  # the producers train: torch is loaded where this runs

    split = None if data is None else {
        "train": data.train.labels.numel(), "val": 0 if data.val is None else data.val.labels.numel(),
        "test": data.test.labels.numel()}
    return {
        "format_version": FORMAT_VERSION,
        "run": run.identity(),
        "layout": run.zoo.layout.to_json(),
        "data": {"recipe": run.zoo.data.to_dict(), "sizes": split, "sha256": None if data is None else data.sha256,
                 "num_classes": run.zoo.num_classes if data is None else data.num_classes},
        "versions": {"modelzoos": version("modelzoos"), "torch": version("torch"),
                     "python": platform.python_version()},
        "device": device,
        "numerics": numerics(device),
        **sections,
    }


def identity(info: dict) -> dict:
    """What makes two zoo.json files the same run: ``run``, the image data's hash and every producer section
    (without machine-local paths). Versions, device and numerics are not part of it."""
    own = {k: v for k, v in info.items() if k not in STANDARD_KEYS}
    return {"run": info.get("run"), "data": info.get("data", {}).get("sha256"),
            **{k: {f: x for f, x in v.items() if f not in LOCAL_KEYS} if isinstance(v, dict) else v
               for k, v in own.items()}}


def section_record(info: dict, section: str) -> dict:
    """A producer section of a zoo.json without machine-local entries ({} when the zoo has none)."""
    return identity(info).get(section) or {}


def differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted paths of the entries that differ between two JSON objects."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}")
    return out


def claim(root: Path, info: dict) -> bool:
    """Write ``root``/zoo.json, or check that the one there describes this run; True when the zoo is finished.

    A directory of another run (other ``identity``, or other numerics while unfinished) raises ZooFileError
    naming the fields that differ.
    """
    path = root / "zoo.json"
    info = json.loads(json.dumps(info))  # as stored (tuples become lists), so that it compares with the file
    if not path.exists():
        write_json(path, info)
        return False
    try:
        old = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ZooFileError(f"{path} is not valid JSON ({err}); delete the directory {root} to start over") from err
    finished = (root / "metadata.parquet").exists()  # nothing left to train: the numerics do not matter
    differ = differences(identity(old), identity(info))
    if not finished:  # a switch that differs, with the environment variable that sets it and both values
        from modelzoos.training import LEGACY_NUMERICS, NUMERICS_ENV, numerics_setting

        old_numerics = LEGACY_NUMERICS | old.get("numerics", {})  # switches added later were off before
        differ += [f"numerics.{k} (the run has {NUMERICS_ENV[k]}={numerics_setting(k, old_numerics[k])}, this "
                   f"process {numerics_setting(k, info['numerics'][k])}: set it to resume)"
                   for k in differences(old_numerics, info["numerics"])]
    if differ:
        raise ZooFileError(
            f"{root} already holds a different zoo run ({old.get('run', {}).get('zoo', {}).get('name')}, "
            f"{old.get('run', {}).get('models')} models, {old.get('run', {}).get('epochs')} epochs); these differ: "
            f"{', '.join(differ[:8])}{' …' if len(differ) > 8 else ''}. Choose another --out or delete it")
    return finished


def chunk_dir(root: Path, chunk: list[ModelConfig]) -> Path:
    return root / "weights" / f"models_{chunk[0].model_id:06d}-{chunk[-1].model_id:06d}"


def epoch_path(cdir: Path, epoch: int) -> Path:
    return cdir / f"epoch_{epoch:03d}.safetensors"


def pending(root: Path, run: Run) -> list[list[ModelConfig]]:
    """The chunks of ``run`` without ``complete.json``."""
    return [c for c in run.chunks() if not (chunk_dir(root, c) / "complete.json").exists()]


# ---------------------------------------------------------------------------------------------------------
# Writing chunks
# ---------------------------------------------------------------------------------------------------------


STATE = "state.safetensors"
COMPLETE = "complete.json"


def _save_epoch(cdir: Path, chunk: list[ModelConfig], result: EpochResult, optimizer_state: bool) -> None:
    """The epoch's file (``result.tensors()``, with ``optimizer_state`` also ``optimizer.<slot>`` and
    ``optimizer.step``, and the metrics), then the state to resume from after it."""
    meta = {"model_ids": json.dumps([c.model_id for c in chunk]), "epoch": str(result.epoch),
            "metrics": json.dumps(result.metrics)}
    tensors = result.tensors()
    if optimizer_state:
        if result.optimizer is None:
            raise ValueError(f"{type(result).__name__} holds no optimizer state: this producer cannot store it")
        tensors |= {f"{OPTIMIZER_PREFIX}{k}": v for k, v in result.optimizer.items()}
    write_safetensors(epoch_path(cdir, result.epoch), tensors, meta)
    write_safetensors(cdir / STATE, result.state, {"epoch": str(result.epoch)})


def _resume_point(cdir: Path, epochs: Sequence[int]) -> Resume | None:
    path = cdir / STATE
    if not path.exists():
        return None
    import torch  # a producer is training: torch is loaded

    state, meta = read_safetensors(path)
    epoch = int(meta["epoch"])
    for e in (e for e in epochs if e <= epoch):
        if not epoch_path(cdir, e).exists():
            raise ZooFileError(f"{epoch_path(cdir, e)} is missing although {path} says epoch {epoch} is done. "
                               f"Fix: delete the chunk directory {cdir} and rerun the same command.")
    return epoch, {k: torch.from_numpy(v) for k, v in state.items()}


def write_chunk(root: Path, chunk: list[ModelConfig], run: Run, train: Callable[[Resume | None],
                Iterable[EpochResult]], bar: tqdm | None = None) -> None:
    """Save the epochs of ``run`` (its ``stored_epochs``) that ``train(resume)`` yields into the chunk's directory;
    ``resume`` is read from its state file (None: from scratch). A writer thread saves epoch e while epoch e + 1
    trains; ``bar`` advances once an epoch's files are written. A crash loses at most the epochs not yet saved."""
    cdir, epochs = chunk_dir(root, chunk), run.stored_epochs()
    if (cdir / COMPLETE).exists():
        return
    if cdir.exists():
        sweep_temporaries(cdir)
    resume = _resume_point(cdir, epochs)
    if bar is not None and resume is not None:
        bar.update(len(chunk) * sum(e <= resume[0] for e in epochs))

    def wait(future: Future | None) -> None:
        if future is not None:
            future.result()
            if bar is not None:
                bar.update(len(chunk))

    with ThreadPoolExecutor(max_workers=1) as writer:
        saving = None
        for result in train(resume):
            wait(saving)  # one save in flight: bounded memory, files in epoch order
            saving = writer.submit(_save_epoch, cdir, chunk, result, run.optimizer_state)
        wait(saving)
    write_json(cdir / COMPLETE, {"models": [c.model_id for c in chunk], "epochs": run.epochs})
    (cdir / STATE).unlink(missing_ok=True)  # a kill right before this: finalize removes it


def finalize(root: Path, run: Run, schema: pa.Schema = METADATA_SCHEMA,
             extra_metadata: dict[str, str] | None = None) -> None:
    """Assemble metadata.parquet from the epoch files of all chunks (the zoo's completion mark), then write
    manifest.json. Each epoch file is streamed once (bounded memory: ``tensorfile.scan``), its checksum
    verified; leftovers of killed runs (state files of complete chunks, temporary files) are removed.

    ``schema``: METADATA_SCHEMA, or it plus per-state metric columns that the epoch files' metrics hold
    (twins: ``sparsity``); ``extra_metadata`` joins the Parquet schema metadata. A state whose entry in the
    metrics' ``present`` list is false (an import missing it) gets no row.
    """
    sweep_temporaries(root)
    extra_columns = [f.name for f in schema if f.name not in METADATA_SCHEMA.names]
    rows, files = [], {}
    for chunk in run.chunks():
        cdir = chunk_dir(root, chunk)
        if not (cdir / COMPLETE).exists():
            raise ZooFileError(f"chunk {cdir} is not complete; rerun the same command")
        sweep_temporaries(cdir)
        (cdir / STATE).unlink(missing_ok=True)
        files |= manifest.record(root, [cdir / COMPLETE])
        for epoch in run.stored_epochs():
            path = epoch_path(cdir, epoch)
            finite: list[bool] = []

            def visit(name: str, block: np.ndarray, finite: list[bool] = finite) -> None:
                if name == "weights":
                    finite.extend(np.isfinite(block).all(axis=1).tolist())

            try:
                meta, digest = tensorfile.scan(path, visit)
            except (tensorfile.TensorFileError, OSError) as err:
                raise _damaged(path, err) from err
            rel = path.relative_to(root).as_posix()
            files[rel] = {"size": path.stat().st_size, "sha256": digest}
            metrics = json.loads(meta["metrics"])
            present = metrics.get("present", [True] * len(chunk))
            for i, config in enumerate(chunk):
                if not present[i]:
                    continue
                row = {"zoo": run.zoo.name, "model_id": config.model_id, "epoch": epoch}
                row |= {h: getattr(config, h) for h in HYPERPARAMETERS}
                row |= {m: metrics[m][i] for m in (*METRICS, *extra_columns)}
                row |= {"ggap": metrics["train_acc"][i] - metrics["test_acc"][i], "nonfinite": not finite[i],
                        "weights_file": rel, "weights_row": i}
                rows.append(row)
    table = pa.Table.from_pylist(rows, schema=schema)
    table = table.sort_by([("model_id", "ascending"), ("epoch", "ascending")])
    spec = json.dumps(run.zoo.to_dict())
    table = table.replace_schema_metadata({"modelzoos.zoo": spec, "modelzoos.format_version": str(FORMAT_VERSION),
                                           **(extra_metadata or {})})
    atomic_write(root / "metadata.parquet",
                 lambda p: pq.write_table(table, p, compression="zstd", write_page_checksum=True))
    manifest.write(root, files | manifest.record(root, [root / "zoo.json", root / "metadata.parquet"]))


def _expected_files(root: Path, run: Run) -> list[str]:
    """The files of the finished directory of ``run`` (relative paths), for a zoo without a manifest."""
    out = ["zoo.json", "metadata.parquet"]
    for chunk in run.chunks():
        cdir = chunk_dir(root, chunk).relative_to(root).as_posix()
        out += [f"{cdir}/{COMPLETE}"] + [f"{cdir}/epoch_{e:03d}.safetensors" for e in run.stored_epochs()]
    return out


def damaged_files(root: Path, run: Run) -> list[manifest.Damage]:
    """The cheap check of a finished zoo directory: every file against manifest.json (sizes, headers, no data
    read); without a manifest (a run killed just before writing it), every file ``run`` must have."""
    files = manifest.read(root)
    if files is None:
        files = {name: {"size": (root / name).stat().st_size if (root / name).is_file() else -1, "sha256": ""}
                 for name in _expected_files(root, run)}
    return manifest.check(root, files)


def _repair(root: Path, run: Run) -> bool:
    """Prepare a finished directory whose cheap check fails (or that lacks its manifest) to be written again:
    delete the chunks of damaged files, metadata.parquet and manifest.json, so that ``produce`` retrains
    those chunks and finalizes. Returns False when the directory is intact."""
    damaged = damaged_files(root, run)
    if not damaged and (root / manifest.MANIFEST).is_file():
        return False
    chunks = {PurePosixPath(d.path).parts[:2] for d in damaged if d.path.startswith("weights/")}
    if damaged:
        log.warning("%s: %d damaged file(s):\n%s\nretraining %d chunk(s) and rewriting metadata.parquet",
                    root, len(damaged), manifest.describe(root, damaged), len(chunks))
    for parts in sorted(chunks):
        shutil.rmtree(root.joinpath(*parts), ignore_errors=True)
    (root / manifest.MANIFEST).unlink(missing_ok=True)
    (root / "metadata.parquet").unlink(missing_ok=True)
    return True


# ---------------------------------------------------------------------------------------------------------
# Producers and backends: the one orchestration
# ---------------------------------------------------------------------------------------------------------


class Producer(Protocol):
    """One kind of zoo directory (module docstring). Must be picklable to run on a Ray backend."""

    run: Run
    schema: pa.Schema  # of metadata.parquet: METADATA_SCHEMA plus the producer's per-state metric columns
    sections: tuple[str, ...]  # zoo.json sections mirrored into metadata.parquet's metadata as modelzoos.<key>

    def describe(self) -> dict:
        """The zoo.json of this run (``describe``)."""

    def __call__(self, chunk: list[ModelConfig], resume: Resume | None) -> Iterable[EpochResult]:
        """The EpochResults of the chunk's epochs after ``resume`` (all from epoch 0 without it)."""


class Backend(Protocol):
    """Where a producer's chunks are written (``LocalBackend``; ``distributed.RayBackend``)."""

    def session(self) -> contextlib.AbstractContextManager: ...

    def describe(self, producer: Producer) -> dict: ...

    def write(self, root: Path, producer: Producer, chunks: list[list[ModelConfig]], progress: bool) -> None: ...


class LocalBackend:
    """Chunks written one after another in this process, with one progress bar over model states."""

    def session(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def describe(self, producer: Producer) -> dict:
        return producer.describe()

    def write(self, root: Path, producer: Producer, chunks: list[list[ModelConfig]], progress: bool) -> None:
        with state_bar(producer.run, chunks, progress) as bar:
            for chunk in chunks:
                write_chunk(root, chunk, producer.run, partial(producer, chunk), bar)


def state_bar(run: Run, chunks: list[list[ModelConfig]], progress: bool) -> tqdm:
    """The progress bar over the run's model states, starting at those outside the pending ``chunks``."""
    states = len(run.stored_epochs())
    return tqdm(total=run.models * states, initial=(run.models - sum(map(len, chunks))) * states,
                desc=f"{run.zoo.name} ({run.engine})", unit="state", disable=not progress)


def produce(root: str | Path, producer: Producer, backend: Backend | None = None, progress: bool = True) -> ZooDir:
    """Write ``producer``'s zoo into the directory ``root`` (resumable) and return it: lock the directory,
    claim it, write every pending chunk, finalize. A finished directory of the same run is checked the
    cheap way (``damaged_files``) and returned as it is, or repaired: the chunks of damaged files are
    retrained (a log warning names them). ``root`` must be new, empty or a zoo directory (``files.check_ours``);
    FolderInUseError while another process writes it."""
    backend = backend or LocalBackend()
    root = Path(root)
    check_ours(root, "zoo.json", "zoo directory", "--out")
    with lock(root, "--out"), backend.session():
        check_ours(root, "zoo.json", "zoo directory", "--out")
        info = backend.describe(producer)
        if claim(root, info) and not _repair(root, producer.run):
            return ZooDir(root)
        backend.write(root, producer, pending(root, producer.run), progress)
        finalize(root, producer.run, producer.schema,
                 {f"modelzoos.{k}": json.dumps(info[k]) for k in producer.sections})
    return ZooDir(root)


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
            raise ZooFileError(f"{self.path} is incomplete (no metadata.parquet); rerun the command that wrote it")
        try:
            self.info = json.loads((self.path / "zoo.json").read_text())
        except (ValueError, UnicodeDecodeError) as err:
            raise ZooFileError(f"{self.path / 'zoo.json'} is not valid JSON ({err}); the directory is damaged: "
                               "generate it again") from err
        try:
            self.metadata: pd.DataFrame = pq.read_table(meta, page_checksum_verification=True).to_pandas()
        except (pa.ArrowException, OSError) as err:
            raise ZooFileError(f"{meta} is corrupt ({err}); delete it and rerun the command that wrote it") from err
        self.layout = Layout.from_json(self.info["layout"])
        self.zoo = Zoo.from_dict(self.info["run"]["zoo"], str(self.path / "zoo.json"))
        outside = sorted(f for f in self.metadata["weights_file"].unique() if not WEIGHTS_FILE.match(f))
        if outside:  # paths read from our own files stay inside the directory
            raise ZooFileError(f"{meta} points at weights files outside {self.path / 'weights'} ({outside[:3]}); "
                               "the file is damaged or was not written by modelzoos: generate the zoo again")

    def check_files(self) -> None:
        """The full check before the directory's weights are used (build, twins): ZooFileError naming every file
        whose size or SHA-256 differs from manifest.json, and the fix."""
        files = manifest.read(self.path)
        if files is None:
            raise ZooFileError(f"{self.path} has no manifest.json (it was finished before modelzoos recorded "
                               "manifests, or its run was killed at the very end): rerun the command that wrote it "
                               "(`modelzoos generate` or `twins` with the same arguments); it adds the manifest")
        damaged = manifest.check(self.path, files, full=True)
        if damaged:
            chunks = sorted({str(self.path / Path(d.path).parent) for d in damaged if d.path.startswith("weights/")})
            raise ZooFileError(f"{self.path}: {len(damaged)} file(s) differ from its manifest:\n"
                               f"{manifest.describe(self.path, damaged)}\nFix: delete "
                               f"{', '.join(chunks) or 'metadata.parquet'} and rerun the command that wrote the zoo: "
                               "it retrains only what is missing")

    def __len__(self) -> int:
        return len(self.metadata)

    def __repr__(self) -> str:
        return f"ZooDir({self.path}, zoo={self.zoo.name}, states={len(self)})"

    def _file_rows(self, file: str, rows: list[int], tensor: str, length: int) -> np.ndarray:
        """float32 [len(rows), length]: rows ``rows`` of the [models, length] tensor ``tensor`` of the epoch file
        ``file`` (relative path); only those rows' bytes are read."""
        path = self.path / file
        try:
            with safe_open(str(path), framework="numpy") as f:
                vectors = f.get_slice(tensor)
                shape = vectors.get_shape()
                if len(shape) != 2 or shape[1] != length:
                    raise ZooFileError(f"{path} holds a {tensor} tensor of shape {shape}, the layout says "
                                       f"[models, {length}]: the file belongs to another zoo")
                out = np.empty((len(rows), shape[1]), dtype=np.float32)
                for i, r in enumerate(rows):
                    if not 0 <= r < shape[0]:
                        raise ZooFileError(f"{path} has {shape[0]} rows, metadata.parquet points at row {r}")
                    out[i] = vectors[r : r + 1][0]
                return out
        except (SafetensorError, OSError, ValueError) as err:
            raise ZooFileError(f"{path} is missing, corrupt or truncated ({err}). Fix: delete the chunk directory "
                               f"{path.parent} and rerun the command that wrote the zoo") from err

    def read_rows(self, rows: np.ndarray, out: np.ndarray, tensor: str = "weights") -> None:
        """Fill ``out[i]`` with the ``tensor`` vector (the weights, or twins' ``log_sigma2``) of metadata row
        ``rows[i]``, reading each file once and only the requested rows of it."""
        frame = self.metadata.iloc[np.asarray(rows)]
        positions = np.arange(len(frame))
        for file, group in pd.Series(positions).groupby(frame["weights_file"].to_numpy(), sort=False):
            at = group.to_numpy()
            out[at] = self._file_rows(file, frame["weights_row"].to_numpy()[at].tolist(), tensor, out.shape[1])

    def weights(self, rows: Iterable[int] | None = None) -> Iterator[tuple[int, Any]]:
        """(metadata row index, torch float32 [D]) for each requested row (default all), one file at a time."""
        import torch

        frame = self.metadata if rows is None else self.metadata.iloc[list(rows)]
        for file, group in frame.groupby("weights_file", sort=False):
            vectors = self._file_rows(file, group["weights_row"].astype(int).tolist(), "weights", self.layout.size)
            for idx, vector in zip(group.index, vectors, strict=True):
                yield int(idx), torch.from_numpy(vector)

    def _row(self, model_id: int, epoch: int) -> int:
        hit = self.metadata.index[(self.metadata.model_id == model_id) & (self.metadata.epoch == epoch)]
        if len(hit) == 0:
            raise KeyError(f"no state for model {model_id} at epoch {epoch} in {self.path}")
        return int(hit[0])

    def state(self, model_id: int, epoch: int) -> dict[str, Any]:
        """The state dict (torch tensors) of one model state."""
        (_, flat), = self.weights([self._row(model_id, epoch)])
        return self.layout.unflatten(flat)

    def optimizer_state(self, model_id: int, epoch: int) -> dict[str, Any]:
        """The optimizer state of one model after ``epoch`` (zoos generated with ``--optimizer-state``):
        ``{slot: {parameter name: torch tensor}}`` for the slots of the model's optimizer (Adam: ``exp_avg``,
        ``exp_avg_sq``; SGD: ``momentum_buffer``) and ``"step"``: the optimizer steps taken."""
        import torch

        if not self.info["run"].get("optimizer_state"):
            raise ZooFileError(f"{self.path} holds no optimizer states: it was generated without --optimizer-state")
        row = self.metadata.iloc[self._row(model_id, epoch)]
        r, params = int(row.weights_row), self.layout.parameters()
        with safe_open(str(self.path / row.weights_file), framework="numpy") as f:
            names = [k for k in f.keys() if k.startswith(OPTIMIZER_PREFIX)]  # noqa: SIM118 (no __iter__)
            step = int(f.get_slice(f"{OPTIMIZER_PREFIX}step")[r : r + 1][0])
        out: dict[str, Any] = {}
        for name in names:
            if name == f"{OPTIMIZER_PREFIX}step":
                continue
            (flat,) = self._file_rows(row.weights_file, [r], name, params.size)
            if not np.isnan(flat).all():  # NaN rows: another model's optimizer has this slot, this one has not
                out[name.removeprefix(OPTIMIZER_PREFIX)] = params.unflatten(torch.from_numpy(flat))
        return out | {"step": step}

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
