"""``import_zoo``: the authors' released models as a zoo directory (docs/import.md), one more producer of
``export.produce``.

``import_zoo(sources, zoo, out)`` indexes the release files (``modelzoos.release``), matches every trial of the
zoo's experiment folder to a model of the spec by its ``params.json``, and writes the zoo directory through
the shared writer: ``Import`` is the producer (an ``ImportRun`` lists the models present, in chunks of
consecutive trials of the sources, and the epochs kept), a chunk's "training" reads its checkpoints and
``result.json`` lines epoch by epoch. Reading is deterministic, so the resumable state of a chunk is only the
epoch it reached: a killed import continues where it stopped and gives identical files.

``import_twins(sources, source_dir, out)`` does the same for the released variational-dropout twins of a zoo
imported before (``<zoo>_sparse_vd`` in the twin format of ``modelzoos.twins``).

What the directory holds beyond a generated zoo: zoo.json's ``import`` section (release record, source files
with sizes and SHA-256, original environment, kept epochs, the models and states of the spec that the release
lacks, the module-index layouts found), mirrored into metadata.parquet as ``modelzoos.import``; the column
``trial`` (each model's trial folder); no row for a state whose checkpoint is missing, truncated, corrupt or
refused (each such state is named, with the reason, in its epoch file's metadata and in ``ImportSummary``).
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import queue
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath

import pyarrow as pa
import torch
from safetensors import safe_open
from tqdm.auto import tqdm

from modelzoos.architectures import Layout, get_architecture
from modelzoos.catalogue import TWIN_EPOCHS, ModelConfig, Zoo
from modelzoos.export import (
    HYPERPARAMETERS,
    METADATA_SCHEMA,
    LocalBackend,
    Run,
    ZooDir,
    describe,
    produce,
    state_bar,
    write_chunk,
)
from modelzoos.files import DIGESTS, check_ours, write_json
from modelzoos.optimizers import OPTIMIZERS
from modelzoos.release import (
    Index,
    Member,
    MemberError,
    ReleaseError,
    Trial,
    TrialParams,
    ard_state,
    check_protocol,
    index,
    load_checkpoint,
    load_tensors,
    match,
    model_state,
    open_source,
    optimizer_state,
    read_json,
    read_members,
    read_results,
    trial_params,
)
from modelzoos.training import METRICS, EpochResult, Resume
from modelzoos.twins import LOG_ALPHA_THRESHOLD, METHODS, SOURCES, TWIN_SCHEMA, TwinEpoch, log_alpha, log_sigma2_layout
from modelzoos.twins import twin_zoo as make_twin_zoo

ENGINE = "import"  # the run's engine in zoo.json
TRIAL = "trial"  # the column of each model's trial folder
IMPORT_SCHEMA = pa.schema([*METADATA_SCHEMA, (TRIAL, pa.string())])
IMPORT_TWIN_SCHEMA = pa.schema([*TWIN_SCHEMA, (TRIAL, pa.string())])
TWIN_METRICS = ("sparsity", "sparsity_ratio")  # twins: from the weights, and as the release logged it
CHUNK_BYTES = 256 * 2**20  # default chunk size: the bytes a chunk holds in memory at a time (see chunk_size)
SHA256_CACHE = DIGESTS  # in the output directory: digests of sources, by path, size and mtime
# The record (DOI) of the release files of each zoo family (docs/import.md); ResNet-18 tars have none.
RECORDS = {
    "mnist_cnn": "https://doi.org/10.5281/zenodo.6632086",
    "fmnist_cnn": "https://doi.org/10.5281/zenodo.6632104",
    "svhn_cnn": "https://doi.org/10.5281/zenodo.6632120",
    "usps_cnn": "https://doi.org/10.5281/zenodo.6633626",
    "cifar10_cnn": "https://doi.org/10.5281/zenodo.6620868",
    "cifar10_cnn_m": "https://doi.org/10.5281/zenodo.6620868",
    "stl10_cnn": "https://doi.org/10.5281/zenodo.6631783",
    "stl10_cnn_m": "https://doi.org/10.5281/zenodo.6631783",
    "mnist_cnn_seed_sparse_vd": "https://doi.org/10.5281/zenodo.7023335",
    "svhn_cnn_seed_sparse_vd": "https://doi.org/10.5281/zenodo.7027566",
}
SOFTWARE = "Ray Tune 1.8.0, Python 3.8, PyTorch 1.11, torchvision 0.12 (the original repository's environment file)"
HARDWARE = {"cnn": "CPU only, one CPU per trial, 8-50 trials in parallel",
            "cnn_m": "CPU only, one CPU per trial, 8-50 trials in parallel",
            "resnet18": "4 GPUs; one GPU and 6 CPUs per trial"}
LICENSE = "CC-BY 4.0"
CITATION = ("Schürholt, Taskiran, Knyazev, Giró-i-Nieto, Borth: Model Zoos: A Dataset of Diverse Populations of "
            "Neural Network Models. NeurIPS 2022 Datasets and Benchmarks Track")
ORDER_RULE = ("model ids enumerate (replicate, init, activation, optimizer, lr, weight_decay, dropout) as for every "
              "zoo; Hyp-10-rand: the trials of a grid point fill its replicates 0, 1, ... in ascending order of their "
              "released seed (ties by trial name), and every model keeps its released seed")


# ---------------------------------------------------------------------------------------------------------
# The run and the producer
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportRun(Run):
    """The models a release holds (``imported``, in the sources' order, seeds as released) and the ``kept``
    epochs. Chunks are ``chunk_size`` consecutive trials of the sources (so a forward-only archive is read in
    order), each in model-id order; ``configs`` lists every imported model in model-id order."""

    imported: tuple[ModelConfig, ...] = ()
    kept: tuple[int, ...] = ()

    def configs(self) -> list[ModelConfig]:
        return sorted(self.imported, key=lambda c: c.model_id)

    def chunks(self) -> list[list[ModelConfig]]:
        n = self.chunk_size
        return [sorted(self.imported[i : i + n], key=lambda c: c.model_id) for i in range(0, len(self.imported), n)]

    def stored_epochs(self) -> tuple[int, ...]:
        return self.kept


@dataclass(frozen=True)
class TwinKeys:
    """What a variational-dropout twin import needs to decode a state: the layout of log σ², and per ARD tensor
    its layer kind (log α clipping) and whether it is a weight (sparsity counts weights)."""

    ls_layout: Layout
    kinds: dict[str, str]  # tensor name → "conv" | "linear"
    weights: tuple[str, ...]  # the conv and linear weights


@dataclass(frozen=True)
class Import:
    """The producer of an imported zoo directory (``export.Producer``): ``run`` read from ``index``'s sources,
    model ``m`` from the trial ``trials[m]``."""

    run: ImportRun
    index: Index
    trials: dict[int, Trial]
    record: dict  # zoo.json's "import" section
    twins: dict | None = None  # zoo.json's "twins" section (twin imports)
    twin_keys: TwinKeys | None = None

    @property
    def schema(self) -> pa.Schema:
        return IMPORT_TWIN_SCHEMA if self.twins else IMPORT_SCHEMA

    @property
    def sections(self) -> tuple[str, ...]:
        return ("twins", "import") if self.twins else ("import",)

    def describe(self) -> dict:
        sections = ({"twins": self.twins} if self.twins else {}) | {"import": self.record}
        return describe(self.run, None, "cpu", **sections)

    def __call__(self, chunk: list[ModelConfig], resume: Resume | None) -> Iterator[EpochResult]:
        epochs = [e for e in self.run.kept if resume is None or e > resume[0]]
        trials = [self.trials[c.model_id] for c in chunk]
        results, notes = self._results(chunk, trials)
        random_access = all(s.random_access for s in self.index.sources)

        def wanted(epoch: int) -> list[Member]:
            found = [t for t in trials if epoch in t.checkpoints]
            optimizers = [t.optimizers[epoch] for t in found if epoch in t.optimizers]
            return [t.checkpoints[epoch] for t in found] + (optimizers if self.run.optimizer_state else [])

        # a forward-only archive: the chunk's members in archive order, held until written; else one epoch at a time
        held = {} if random_access else dict(read_members(self.index, [m for e in epochs for m in wanted(e)]))
        for epoch in epochs:
            data = dict(read_members(self.index, wanted(epoch))) if random_access else held
            yield self._epoch(epoch, chunk, trials, data, results, list(notes) if epoch == self.run.kept[0] else [])

    def _results(self, chunk: list[ModelConfig], trials: list[Trial]) -> tuple[list[dict], list[str]]:
        """Per model {epoch: metrics}, and the problems of its result.json."""
        out, notes = [], []
        for c, t in zip(chunk, trials, strict=True):
            if t.result is None:
                notes.append(f"model {c.model_id} ({t.name}): no result.json; its metrics are NaN")
                out.append({})
                continue
            try:
                values, problems = read_results(self.index.sources[t.result.source].read(t.result),
                                                self.index.location(t.result))
            except MemberError as err:
                values, problems = {}, [f"{err}; the metrics of model {c.model_id} are NaN"]
            out.append(values)
            notes += problems
        return out, notes

    def _epoch(self, epoch: int, chunk: list[ModelConfig], trials: list[Trial], data: dict[Member, bytes | MemberError],
               results: list[dict], notes: list[str]) -> EpochResult:
        """The chunk's states at ``epoch`` from the checkpoint bytes ``data``; ``notes`` join the epoch file."""
        zoo = self.run.zoo
        m = len(chunk)
        weights = torch.zeros(m, zoo.layout.size)
        ls2 = torch.zeros(m, self.twin_keys.ls_layout.size) if self.twin_keys else None
        metrics: dict[str, list] = {k: [math.nan] * m for k in (*METRICS, *(TWIN_METRICS if ls2 is not None else ()))}
        metrics |= {TRIAL: [t.name for t in trials], "present": [False] * m, "unreadable": [None] * m, "bytes": [0] * m}
        for i, (c, t) in enumerate(zip(chunk, trials, strict=True)):
            member = t.checkpoints.get(epoch)
            if member is None:
                continue  # missing from the release: named in zoo.json's import section
            try:
                got = data[member]
                if isinstance(got, MemberError):
                    raise got
                raw = load_tensors(got, self.index.location(member))
                weights[i], sparsity, ls = self._decode(raw, self.index.location(member))
            except MemberError as err:
                metrics["unreadable"][i] = str(err)
                continue
            metrics["present"][i] = True
            metrics["bytes"][i] = member.size
            if ls is not None:
                ls2[i] = ls
                metrics["sparsity"][i] = sparsity
            line = results[i].get(epoch)
            if line is None:
                if results[i]:
                    notes.append(f"model {c.model_id} ({t.name}): result.json has no line for epoch {epoch}; its "
                                 "metrics are NaN")
                continue
            for k in METRICS:
                metrics[k][i] = line[k]
            if ls is None:
                continue
            metrics["sparsity_ratio"][i] = line["sparsity_ratio"]
            if not math.isnan(line["sparsity_ratio"]) and not math.isclose(sparsity, line["sparsity_ratio"],
                                                                             abs_tol=1e-6):
                notes.append(f"model {c.model_id} epoch {epoch}: sparsity {sparsity:.6f} from the weights, the release "
                             f"logged sparsity_ratio {line['sparsity_ratio']:.6f}")
        metrics["notes"] = notes
        optimizer = self._optimizer(epoch, chunk, trials, data, metrics) if self.run.optimizer_state else None
        return TwinEpoch(epoch, weights, metrics, {}, optimizer, log_sigma2=ls2)

    def _optimizer(self, epoch: int, chunk: list[ModelConfig], trials: list[Trial],
                   data: dict[Member, bytes | MemberError], metrics: dict[str, list]) -> dict[str, torch.Tensor]:
        """``EpochResult.optimizer`` of the chunk's present states at ``epoch`` from their ``optimizer`` files
        (docs/format.md, "Optimizer states"): NaN rows where the model's optimizer lacks the slot, or the file is
        missing or unreadable (a note says which), step -1 where unknown."""
        params = self.run.zoo.layout.parameters()
        m = len(chunk)
        slots = dict.fromkeys(s for c in chunk for s in OPTIMIZERS[c.optimizer].slots)
        out = {s: torch.full((m, params.size), math.nan) for s in slots}
        steps = torch.full((m,), -1, dtype=torch.int64)
        for i, (c, t) in enumerate(zip(chunk, trials, strict=True)):
            member = t.optimizers.get(epoch)
            if not metrics["present"][i]:
                continue
            if member is None:
                metrics["notes"].append(f"model {c.model_id} ({t.name}) epoch {epoch}: no optimizer file in the "
                                        "release; its optimizer state is NaN")
                continue
            where = self.index.location(member)
            try:
                got = data[member]
                if isinstance(got, MemberError):
                    raise got
                flat, step = optimizer_state(load_checkpoint(got, where), params, OPTIMIZERS[c.optimizer].slots,
                                             where)
            except MemberError as err:
                metrics["notes"].append(f"{err}; the optimizer state of model {c.model_id} epoch {epoch} is NaN")
                continue
            for slot, vector in flat.items():
                out[slot][i] = vector
            steps[i] = step
            metrics["bytes"][i] += member.size
        return out | {"step": steps}

    def _decode(self, raw: dict[str, torch.Tensor], where: str) -> tuple[torch.Tensor, float, torch.Tensor | None]:
        """(flat weights [D], sparsity, flat log σ² [D'] or None) of one checkpoint."""
        zoo = self.run.zoo
        if self.twin_keys is None:
            state, _ = model_state(raw, zoo, where)
            return zoo.layout.flatten(state), math.nan, None
        keys = self.twin_keys
        dense, ls2, _ = ard_state(raw, zoo, keys.ls_layout, where)
        sparse = dict(dense)
        for name, kind in keys.kinds.items():  # the eval rule of the twins: log α ≥ 3 is dropped
            drop = log_alpha(ls2[name], dense[name], kind) >= LOG_ALPHA_THRESHOLD
            sparse[name] = torch.where(drop, torch.zeros_like(dense[name]), dense[name])
        zeros = sum(int((sparse[n] == 0).sum()) for n in keys.weights)
        total = sum(sparse[n].numel() for n in keys.weights)
        return zoo.layout.flatten(sparse), zeros / total, keys.ls_layout.flatten(ls2)


# ---------------------------------------------------------------------------------------------------------
# Parallel chunks
# ---------------------------------------------------------------------------------------------------------

_WORKER: dict = {}


def _worker_init(producer: Import, root: str, progress) -> None:
    torch.set_num_threads(1)
    _WORKER.update(producer=producer, root=Path(root), progress=progress)


class _QueueBar:
    """The ``bar`` of ``write_chunk`` in a worker: states written go to the parent's progress bar."""

    def __init__(self, progress) -> None:
        self.progress = progress

    def update(self, n: int) -> None:
        self.progress.put(n)


def _worker_chunk(chunk: list[ModelConfig]) -> None:
    producer = _WORKER["producer"]
    write_chunk(_WORKER["root"], chunk, producer.run, partial(producer, chunk), _QueueBar(_WORKER["progress"]))


@dataclass(frozen=True)
class PoolBackend(LocalBackend):
    """``export.Backend`` writing the chunks in ``workers`` local processes (one torch thread each), with one
    progress bar over states. Every process opens the sources itself, so only random-access sources qualify."""

    workers: int

    def write(self, root: Path, producer: Import, chunks: list[list[ModelConfig]], progress: bool) -> None:
        # fork where the platform has it (as torch's DataLoader workers): the workers start without importing again
        context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
        updates = context.Queue()
        for source in producer.index.sources:  # a forked worker must not share this process's file offsets
            source.close()
        with (state_bar(producer.run, chunks, progress) as bar,
              ProcessPoolExecutor(self.workers, mp_context=context, initializer=_worker_init,
                                  initargs=(producer, str(root), updates)) as pool):
            futures = [pool.submit(_worker_chunk, c) for c in chunks]
            running = set(futures)
            while running:
                finished, running = wait(running, timeout=0.2, return_when=FIRST_EXCEPTION)
                _drain(updates, bar)
                failed = [f for f in finished if f.exception() is not None]
                if failed:
                    for f in running:
                        f.cancel()
                    raise failed[0].exception()
            _drain(updates, bar)


def _drain(updates, bar: tqdm) -> None:
    with contextlib.suppress(queue.Empty):
        while True:
            bar.update(updates.get_nowait())


# ---------------------------------------------------------------------------------------------------------
# Preparing an import
# ---------------------------------------------------------------------------------------------------------


def _digests(sources: list, cache_path: Path) -> list[dict]:
    """{name, kind, bytes, sha256} per source; digests reused from ``cache_path`` while the source's size and
    modification time (``Source.fingerprint``) are those it was hashed at."""
    try:
        cache = json.loads(cache_path.read_text())
    except (OSError, json.JSONDecodeError):
        cache = {}
    out = []
    for src in sources:
        size, mtime = src.fingerprint()
        key = str(src.path.resolve())
        hit = cache.get(key)
        if not (hit and hit["bytes"] == size and hit["mtime_ns"] == mtime):
            hit = cache[key] = {"bytes": size, "mtime_ns": mtime, "sha256": src.digest()}
        out.append({"name": src.path.name, "kind": src.kind, "bytes": size, "sha256": hit["sha256"]})
    write_json(cache_path, cache)
    return out


def chunk_size(zoo: Zoo, models: int, random_access: bool, kept: int, member_bytes: int, workers: int,
               optimizer_state: bool = False) -> int:
    """Models per chunk: as many as keep ``CHUNK_BYTES`` (one epoch of weights [chunk, D], with
    ``optimizer_state`` also its optimizer slots [chunk, P] each; a forward-only archive: the raw files of every
    kept epoch, ``member_bytes`` per model and epoch), at most ⌈models / workers⌉, at least 1."""
    slots = max(len(OPTIMIZERS[o].slots) for o in zoo.grid["optimizer"]) if optimizer_state else 0
    per_model = (zoo.layout.size + slots * zoo.layout.num_parameters) * 4 if random_access else kept * member_bytes
    return max(1, min(math.ceil(models / workers), CHUNK_BYTES // max(1, per_model)))


@dataclass
class _Plan:
    """What the index and the params tell before anything is written."""

    index: Index
    trials: list[tuple[Trial, TrialParams]]  # of the experiment, in the sources' order
    problems: list[str]


def _plan(sources: Sequence[str | Path], experiment: str) -> _Plan:
    if not sources:
        raise ReleaseError("no release files given; pass experiment folders or archives as downloaded")
    opened = [open_source(s) for s in sources]
    idx = index(opened)
    experiments = idx.experiments()
    if experiment not in experiments:
        found = ", ".join(f"{k or '(top level)'} ({v} trials)" for k, v in sorted(experiments.items())) or "none"
        raise ReleaseError(f"no trial folder of the experiment {experiment!r} in {', '.join(map(str, sources))}; "
                           f"experiments found: {found}. Pass the files of that zoo, or name the experiment with "
                           "--experiment")
    trials = [t for t in idx.trials if t.experiment == experiment]
    params = [trial_params(read_json(idx, t.params), idx.location(t.params)) for t in trials]
    return _Plan(idx, list(zip(trials, params, strict=True)), list(idx.problems))


def _layouts(idx: Index, chosen: list[tuple[Trial, ModelConfig]], kept: Sequence[int], zoo: Zoo,
             twin_keys: TwinKeys | None) -> dict[str, dict[str, int]]:
    """{module indices found: {"dropout <p>": trials}}, from the first kept checkpoint of every trial (module
    lists only; ResNet-18 checkpoints use torchvision names)."""
    if get_architecture(zoo.architecture).layers is None:
        return {"torchvision": {f"dropout {chosen[0][1].dropout}": len(chosen)}} if chosen else {}
    first = {next((t.checkpoints[e] for e in kept if e in t.checkpoints), None): c for t, c in chosen}
    first.pop(None, None)
    out: dict[str, dict[str, int]] = {}
    for member, data in read_members(idx, list(first)):
        where = idx.location(member)
        try:
            if isinstance(data, MemberError):
                raise data
            raw = load_tensors(data, where)
            if twin_keys is None:
                layout = model_state(raw, zoo, where)[1]
            else:
                layout = ard_state(raw, zoo, twin_keys.ls_layout, where)[2]
        except MemberError:
            continue  # reported with its state
        group = out.setdefault(layout, {})
        key = f"dropout {first[member].dropout}"
        group[key] = group.get(key, 0) + 1
    return out


def _record(zoo: Zoo, spec_ids: Sequence[int], chosen: list[tuple[Trial, ModelConfig]], kept: Sequence[int],
            digests: list[dict], experiment: str, source_url: str | None, layouts: dict, problems: list[str],
            params: list[TrialParams]) -> dict:
    """zoo.json's ``import`` section."""
    present = {c.model_id for _, c in chosen}
    missing_states = [[c.model_id, e] for t, c in sorted(chosen, key=lambda x: x[1].model_id) for e in kept
                      if e not in t.checkpoints]
    return {
        "release": {"record": source_url or RECORDS.get(zoo.name) or RECORDS.get(f"{zoo.dataset}_{zoo.architecture}"),
                    "license": LICENSE, "citation": CITATION},
        "sources": digests,
        "experiment": experiment,
        "environment": {"software": SOFTWARE, "hardware": HARDWARE.get(zoo.architecture, "unknown"),
                        "cuda_trials": sum(p.cuda for p in params)},
        "epochs": list(kept),
        "model_order": ORDER_RULE,
        "models": {"spec": len(spec_ids), "imported": len(present),
                   "missing": [m for m in spec_ids if m not in present]},
        "states": {"expected": len(spec_ids) * len(kept), "in_release": len(present) * len(kept) - len(missing_states),
                   "missing": missing_states},
        "index_layouts": layouts,
        "problems": problems,
    }


def _imported_zoo(zoo: Zoo) -> Zoo:
    """The spec as the imported zoo records it: a note that the models are the authors' (and, for Hyp-10-rand,
    whose seeds they hold)."""
    notes = ["Imported from the original release (modelzoos import, docs/import.md): the authors' trained models, "
             "converted bit-exact; metrics as the release logged them (epoch-0 train metrics NaN where it has -999)."]
    if "random" in zoo.seeds:
        notes.append("Seeds: every model keeps the seed of its original trial (column seed), not the [seeds] draw; "
                     + ORDER_RULE + ".")
    return Zoo.from_dict(zoo.to_dict() | {"notes": [*zoo.notes, *notes]}, zoo.path or zoo.name)


def _kept(zoo: Zoo, epochs: Sequence[int] | None) -> tuple[int, ...]:
    kept = tuple(range(zoo.epochs + 1)) if epochs is None else tuple(sorted(set(epochs)))
    if not kept or kept[0] < 0 or kept[-1] > zoo.epochs:
        raise ValueError(f"--epochs must lie in 0..{zoo.epochs} for {zoo.name}, got {list(epochs or [])}")
    return kept


def _run(zoo: Zoo, chosen: list[tuple[Trial, ModelConfig]], kept: tuple[int, ...], idx: Index, size: int | None,
         workers: int, optimizer_state: bool = False) -> ImportRun:
    random_access = all(s.random_access for s in idx.sources)
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    if workers > 1 and not random_access:
        slow = ", ".join(str(s.path) for s in idx.sources if not s.random_access)
        raise ValueError(f"{slow} is a compressed tar, read forwards only: use --workers 1, or decompress it first "
                         "(gunzip keeps the tar) to read it with several workers")
    if size is not None and size < 1:
        raise ValueError(f"--chunk-size must be at least 1, got {size}")
    member_bytes = max((m.size + (t.optimizers[e].size if optimizer_state and e in t.optimizers else 0)
                        for t, _ in chosen for e, m in t.checkpoints.items()), default=1)
    size = size or chunk_size(zoo, len(chosen), random_access, len(kept), member_bytes, workers, optimizer_state)
    configs = tuple(c for _, c in chosen)
    return ImportRun(zoo, len(configs), kept[-1], ENGINE, size, optimizer_state, imported=configs, kept=kept)


def _produce(out: str | Path, producer: Import, workers: int, progress: bool) -> ImportSummary:
    start = time.perf_counter()
    zd = produce(out, producer, PoolBackend(workers) if workers > 1 else None, progress)
    return summarize(zd, time.perf_counter() - start)


def import_zoo(sources: Sequence[str | Path], zoo: Zoo, out: str | Path, *, epochs: Sequence[int] | None = None,
               experiment: str | None = None, source_url: str | None = None, workers: int = 1,
               chunk_size: int | None = None, progress: bool = True, optimizer_state: bool = False) -> ImportSummary:
    """Import the trials of ``zoo``'s experiment folder found in ``sources`` (folders, zips, tars) into the zoo
    directory ``out`` (resumable; a finished directory is left as it is) and return the summary.

    ``epochs``: the epochs to keep (default all 0..zoo.epochs). ``experiment``: the experiment folder (default
    ``zoo.source``). ``source_url``: the record the files came from (default: the zoo's record in ``RECORDS``).
    ``workers``: processes reading chunks in parallel. ``optimizer_state``: also keep every state's optimizer
    file (Adam moments, SGD momentum) as the epoch files' ``optimizer.<slot>`` tensors (docs/format.md). Raises
    ReleaseError for a trial that fits no model of the spec (naming the trial and the key), a file passed twice,
    or an experiment not found.
    """
    experiment = experiment or zoo.source
    if not experiment:
        raise ReleaseError(f"zoo {zoo.name} names no original experiment folder (its spec has no `source`); pass "
                           "--experiment NAME")
    kept = _kept(zoo, epochs)
    plan = _plan(sources, experiment)
    twins = [name for name, (_, p) in zip((t.name for t, _ in plan.trials), plan.trials, strict=True) if p.twin]
    if twins:
        raise ReleaseError(f"{twins[0]} is a variational-dropout twin (model::type CNN_ARD); import twins with "
                           "--twins-of the imported source zoo")
    configs = match([(t.name, p) for t, p in plan.trials], zoo)
    chosen = [(t, c) for (t, _), c in zip(plan.trials, configs, strict=True)]
    run = _run(_imported_zoo(zoo), chosen, kept, plan.index, chunk_size, workers, optimizer_state)
    check_ours(Path(out), "zoo.json", "zoo directory", "--out")  # before the digest cache is written there
    Path(out).mkdir(parents=True, exist_ok=True)
    layouts = _layouts(plan.index, chosen, kept, zoo, None)
    record = _record(zoo, [c.model_id for c in zoo.models()], chosen, kept,
                     _digests(plan.index.sources, Path(out) / SHA256_CACHE), experiment, source_url, layouts,
                     plan.problems, [p for _, p in plan.trials])
    producer = Import(run, plan.index, {c.model_id: t for t, c in chosen}, record)
    return _produce(out, producer, workers, progress)


def import_twins(sources: Sequence[str | Path], source: ZooDir | str | Path, out: str | Path, *,
                 epochs: Sequence[int] | None = None, experiment: str | None = None, source_url: str | None = None,
                 workers: int = 1, chunk_size: int | None = None, progress: bool = True) -> ImportSummary:
    """Import the released variational-dropout twins of the imported zoo directory ``source`` into ``out`` as
    ``<zoo>_sparse_vd`` (twin format, docs/format.md); options as ``import_zoo``.

    Each twin trial names its source trial in ``training::init_checkpoint_path``; the twin is that model (same
    id and hyperparameters). Weights are stored sparse (log α ≥ 3 zeroed, as the twins' eval forward), with
    ``log_sigma2``; ``sparsity`` comes from the weights and is checked against the logged ``sparsity_ratio``.
    """
    src = source if isinstance(source, ZooDir) else ZooDir(source)
    if TRIAL not in src.metadata.columns or src.info.get("run", {}).get("engine") != ENGINE:
        raise ReleaseError(f"{src.path} is not an imported zoo (no `{TRIAL}` column); import the source zoo first "
                           "(modelzoos import ... --zoo <source zoo>)")
    zoo = make_twin_zoo(src.zoo, "vd")
    experiment = experiment or SOURCES.get((src.zoo.name, "vd"), "")
    if not experiment:
        raise ReleaseError(f"the release has no twins of {src.zoo.name}; pass --experiment NAME for a folder of "
                           "variational-dropout twins")
    kept = _kept(zoo, epochs)
    plan = _plan(sources, experiment)
    by_trial = src.metadata.drop_duplicates("model_id").set_index(TRIAL)
    chosen, source_epochs = [], set()
    for trial, p in plan.trials:
        if not p.twin:
            raise ReleaseError(f"{trial.name}: model::type is not CNN_ARD; it is not a variational-dropout twin")
        parts = [s for s in PurePosixPath(p.init_checkpoint.replace("\\", "/")).parts if s in by_trial.index]
        if not parts:
            raise ReleaseError(f"{trial.name}: training::init_checkpoint_path {p.init_checkpoint!r} names no trial of "
                               f"{src.path}; import the twins of that zoo's own release files")
        row = by_trial.loc[parts[-1]]
        config = ModelConfig(int(row.model_id), **{h: _plain(row[h]) for h in HYPERPARAMETERS if h != "epochs"},
                             epochs=TWIN_EPOCHS)
        check_protocol(p, zoo, trial.name)
        for key in ("seed", "lr", "weight_decay", "optimizer", "activation"):
            if not _equal(p.values[key], getattr(config, key)):
                raise ReleaseError(f"{trial.name}: {key} = {p.values[key]!r}, its source model {config.model_id} "
                                   f"({parts[-1]}) has {getattr(config, key)!r}")
        source_epochs.add(p.sample_epoch)
        chosen.append((trial, config))
    if len(source_epochs) > 1:
        raise ReleaseError(f"the twins in {experiment} start from different source epochs {sorted(source_epochs)}")
    ids = [c.model_id for _, c in chosen]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ReleaseError(f"two twin trials name the source model {dup}: "
                           f"{', '.join(t.name for t, c in chosen if c.model_id == dup)}; pass every trial once")
    ls_layout = log_sigma2_layout(zoo)
    kinds = {s.name: s.kind for s in get_architecture(zoo.architecture).layers}
    keys = TwinKeys(ls_layout, {e.name: kinds[e.name.split(".")[0]] for e in ls_layout.entries},
                    tuple(f"{s.name}.weight" for s in get_architecture(zoo.architecture).layers))
    run = _run(zoo, chosen, kept, plan.index, chunk_size, workers)
    check_ours(Path(out), "zoo.json", "zoo directory", "--out")  # before the digest cache is written there
    Path(out).mkdir(parents=True, exist_ok=True)
    layouts = _layouts(plan.index, chosen, kept, zoo, keys)
    spec_ids = sorted(int(m) for m in src.metadata.model_id.unique())
    record = _record(zoo, spec_ids, chosen, kept, _digests(plan.index.sources, Path(out) / SHA256_CACHE), experiment,
                     source_url, layouts, plan.problems, [p for _, p in plan.trials])
    twins = {"method": "vd", "settings": METHODS["vd"].settings, "source_path": str(src.path.resolve()),
             "source_run": src.info["run"], "source_epoch": next(iter(source_epochs), -1),
             "log_sigma2_layout": ls_layout.to_json()}
    producer = Import(run, plan.index, {c.model_id: t for t, c in chosen}, record, twins, keys)
    return _produce(out, producer, workers, progress)


def _plain(value):
    """A metadata value as a Python scalar (numpy scalars have ``item``)."""
    return value.item() if hasattr(value, "item") else value


def _equal(a, b) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return str(a) == str(b)
    return math.isclose(float(a), float(b), rel_tol=1e-9)


# ---------------------------------------------------------------------------------------------------------
# The summary
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportSummary:
    """What an import holds and lacks, from its finished directory (``summarize``)."""

    zoo_dir: ZooDir
    models: int  # imported
    spec_models: int
    missing_models: list[int]
    states: int  # rows of metadata.parquet
    expected_states: int  # spec models × kept epochs
    missing_states: list[tuple[int, int, str]]  # (model, epoch, why) of imported models
    nonfinite_models: list[int]  # models with a NaN or ±inf state
    nonfinite_states: int
    index_layouts: dict[str, dict[str, int]]
    problems: list[str]  # everything the import noticed, each naming its file
    seconds: float  # this call
    checkpoints: int  # checkpoints read (the states in the directory)
    megabytes: float  # of checkpoint files read

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "zoo_dir"} | {"zoo_dir": str(self.zoo_dir.path),
                                                                               "zoo": self.zoo_dir.zoo.name}


def _epoch_files(zd: ZooDir) -> Iterable[tuple[list[int], int, dict]]:
    """(model ids, epoch, metrics) of every epoch file, from the safetensors headers only."""
    for path in sorted(zd.path.glob("weights/*/epoch_*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
        yield json.loads(meta["model_ids"]), int(meta["epoch"]), json.loads(meta["metrics"])


def summarize(zd: ZooDir | str | Path, seconds: float = 0.0) -> ImportSummary:
    """The ``ImportSummary`` of an imported zoo directory (``seconds``: how long the import took)."""
    zd = zd if isinstance(zd, ZooDir) else ZooDir(zd)
    record = zd.info["import"]
    meta = zd.metadata
    have = set(zip(meta.model_id.tolist(), meta.epoch.tolist(), strict=True))
    why = {(m, e): "not in the release" for m, e in record["states"]["missing"]}
    problems = list(record["problems"])
    read = 0  # bytes of the checkpoint files behind the states
    for ids, epoch, metrics in _epoch_files(zd):
        problems += metrics["notes"]
        read += sum(b for b, present in zip(metrics["bytes"], metrics["present"], strict=True) if present)
        why |= {(m, epoch): reason for m, reason in zip(ids, metrics["unreadable"], strict=True) if reason}
    imported = sorted(int(m) for m in meta.model_id.unique())
    missing = sorted((m, e, w) for (m, e), w in why.items() if (m, e) not in have)
    bad = meta[meta.nonfinite]
    return ImportSummary(
        zoo_dir=zd, models=len(imported), spec_models=record["models"]["spec"],
        missing_models=record["models"]["missing"], states=len(meta), expected_states=record["states"]["expected"],
        missing_states=missing, nonfinite_models=sorted(int(m) for m in bad.model_id.unique()),
        nonfinite_states=len(bad), index_layouts=record["index_layouts"], problems=problems, seconds=seconds,
        checkpoints=len(meta), megabytes=read / 1e6)
