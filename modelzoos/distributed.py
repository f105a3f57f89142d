"""Generate a zoo on a Ray cluster: one Ray task per chunk of models, all writing into one zoo directory.

``generate_ray`` does what ``export.generate`` does, with the chunk loop spread over a cluster:

1. one small task loads the image data on a worker and returns the zoo.json contents, which the driver
   checks against (or writes to) ``<zoo>/zoo.json``, so a directory of another run or other image data
   is refused exactly as with the local backend, and the driver itself never needs the data;
2. every chunk of ``run.chunks()`` without ``complete.json`` becomes one task (Ray costs ≈0.1 s per task:
   distribute chunks of models, not single models); the task loads the data once per worker process,
   checks its hash against zoo.json and calls ``export.train_chunk``;
3. the driver waits for the tasks (progress bar over chunks) and writes ``metadata.parquet`` (``finalize``).

Requirements: the zoo directory must be on a filesystem shared by the driver and every worker, mounted
at the same path (the driver passes it as an absolute path); each node needs the same ``modelzoos``
version and the image data under ``data_root`` (or ``download=True``). Only one ``generate`` may work on
a zoo directory at a time.

Failures: each chunk has a fixed directory, and every file is written to a temporary name and renamed
into place, so a task that dies (worker killed, node lost, out of memory) leaves its chunk resumable
from ``state.safetensors``. Ray reruns such a task up to ``max_retries`` times; so it does after
transient errors (``RETRYABLE``: filesystem and CUDA out-of-memory errors), never after a bad input
(corrupt file, wrong data). A retry resumes the chunk and rewrites its files with identical content:
no model is lost or duplicated. A chunk that still fails raises ``DistributedError`` once the other
chunks are done; rerunning the same call then trains only what is missing.

Bitwise reproducibility: a task trains with ``torch.set_num_threads(max(1, int(num_cpus_per_task)))``.
CPU results depend on the thread count, so a Ray zoo equals a local ``generate`` bit for bit when both
run with the same number of torch threads on the same kind of device.
"""

from __future__ import annotations

import functools
import os
import signal
import socket
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from modelzoos.catalogue import ModelConfig
from modelzoos.data import DataRecipe, ImageData, load_image_data
from modelzoos.export import Run, ZooFileError, _check_or_write_zoo_json, _zoo_json, chunk_dir, finalize, train_chunk
from modelzoos.training import NUMERICS_ENV

__all__ = ["RETRYABLE", "DistributedError", "generate_ray"]

# Application errors after which Ray reruns a chunk's task (a crashed worker is always rerun): a shared
# filesystem hiccup, or a GPU shared with other tasks running out of memory.
RETRYABLE: tuple[type[BaseException], ...] = (OSError, torch.cuda.OutOfMemoryError)
PROBE_TIMEOUT_S = 10.0  # how long to try a TCP connection to the cluster's address before giving up


class DistributedError(RuntimeError):
    """Ray is missing, the cluster cannot be reached, or chunks failed; the message says how to fix it."""


# ---------------------------------------------------------------------------------------------------------
# Connecting
# ---------------------------------------------------------------------------------------------------------


def _import_ray():
    try:
        import ray
    except ImportError as err:
        raise DistributedError("the Ray backend needs Ray: pip install 'modelzoos[ray]'") from err
    return ray


def _probe(address: str) -> None:
    """Fail fast on an unreachable ``host:port`` (ray.init itself retries for minutes)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # "auto", "local" or a form Ray resolves itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_TIMEOUT_S).close()
    except OSError as err:
        raise DistributedError(
            f"cannot reach the Ray cluster at {address!r} ({err}). Start one with `ray start --head` on the head "
            "node and pass its address as host:port (default port 6379), or leave the address out to start a "
            "local Ray instance") from err


@contextmanager
def _ray_session(ray, address: str | None) -> Iterator[None]:
    """Connect to ``address`` (None: $RAY_ADDRESS, else a new local instance) and disconnect afterwards.

    An existing connection of this process is used as it is and left open. ``ray.shutdown`` stops only an
    instance this call started; for a cluster it only disconnects this driver.
    """
    target = address or os.environ.get("RAY_ADDRESS")
    if target:
        _probe(target)
    if ray.is_initialized():
        if address is not None:
            warnings.warn(f"Ray is already initialised in this process; using that connection, not {address!r}",
                          stacklevel=3)
        yield
        return
    try:
        ray.init(address=address)
    except (ConnectionError, RuntimeError, TimeoutError, ValueError) as err:
        where = f"the Ray cluster at {target!r}" if target else "a local Ray instance"
        raise DistributedError(f"cannot connect to {where}: {err}") from err
    try:
        yield
    finally:
        ray.shutdown()


# ---------------------------------------------------------------------------------------------------------
# Tasks (run on the workers)
# ---------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _worker_data(recipe: DataRecipe, data_root: str | None, download: bool) -> ImageData:
    """The image data, loaded once per worker process (Ray reuses workers across tasks)."""
    return load_image_data(recipe, data_root, download=download)


def _describe_task(run: Run, data_root: str | None, download: bool, device: str) -> dict:
    """The zoo.json contents of ``run`` (needs the data: its hash and split sizes)."""
    return _zoo_json(run, _worker_data(run.zoo.data, data_root, download), device)


@dataclass(frozen=True)
class FaultInjection:
    """Test hook: SIGKILL the worker once a chunk has written epoch ``after_epoch``, ``kills`` times per chunk.

    Counts live in ``marker_dir`` (one file per chunk), so they survive the killed worker. Only chunks whose
    first model id is in ``first_ids`` are hit.
    """

    marker_dir: Path
    first_ids: frozenset[int]
    after_epoch: int = 0
    kills: int = 1


class _EpochHook:
    """Stands in for train_chunk's progress bar: ``update(n)`` comes after each epoch's files are written."""

    def __init__(self, chunk: list[ModelConfig], fault: FaultInjection | None) -> None:
        self.chunk, self.fault, self.states = chunk, fault, 0

    def update(self, n: int) -> None:
        self.states += n
        fault = self.fault
        if fault is None or self.chunk[0].model_id not in fault.first_ids:
            return
        if self.states // len(self.chunk) - 1 != fault.after_epoch:
            return
        counter = fault.marker_dir / f"kills_{self.chunk[0].model_id:06d}"
        done = int(counter.read_text()) if counter.exists() else 0
        if done < fault.kills:
            counter.write_text(str(done + 1))
            os.kill(os.getpid(), signal.SIGKILL)


def _chunk_task(run: Run, root: str, chunk: list[ModelConfig], data_root: str | None, download: bool, device: str,
                sha256: str, threads: int, fault: FaultInjection | None) -> int:
    """Train one chunk into ``root`` (resuming from its state file); returns its first model id."""
    torch.set_num_threads(threads)
    data = _worker_data(run.zoo.data, data_root, download)
    if data.sha256 != sha256:
        raise ZooFileError(
            f"the image data on this worker ({socket.gethostname()}) has sha256 {data.sha256}, the zoo in {root} "
            f"was made from {sha256}: the nodes' data roots hold different files. Point data_root (--data-root) "
            "at one copy on the shared filesystem")
    train_chunk(run, Path(root), chunk, data, device, _EpochHook(chunk, fault))
    return chunk[0].model_id


# ---------------------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------------------


def _failure(ray, err: Exception) -> str:
    """One line on why a task failed."""
    if isinstance(err, ray.exceptions.RayTaskError) and err.cause is not None:
        return f"{type(err.cause).__name__}: {err.cause}"
    if isinstance(err, ray.exceptions.WorkerCrashedError | ray.exceptions.NodeDiedError):
        return "the worker process died (killed, out of memory or node lost) on every attempt"
    return f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0]}"


def _gpus_per_task(device: str, num_gpus_per_task: float | None) -> float:
    gpus = (1.0 if device.startswith("cuda") else 0.0) if num_gpus_per_task is None else float(num_gpus_per_task)
    if gpus > 0 and device.startswith("cuda:") and device != "cuda:0":
        raise ValueError(f"device {device!r} with Ray: Ray gives each task its GPU(s) and makes them visible as "
                         "cuda:0; pass device='cuda'")
    if gpus < 0:
        raise ValueError(f"num_gpus_per_task must be ≥ 0, got {num_gpus_per_task}")
    return gpus


def generate_ray(run: Run, root: str | Path, data_root: str | Path | None = None, download: bool = False,
                 device: str = "cpu", *, address: str | None = None, num_gpus_per_task: float | None = None,
                 num_cpus_per_task: float = 1, max_retries: int = 3, progress: bool = True,
                 _fault: FaultInjection | None = None) -> None:
    """Train ``run`` into the zoo directory ``root`` with one Ray task per chunk, then write metadata.parquet.

    Args:
        run: what to train (zoo, models, epochs, engine, chunk_size); one task per ``run.chunks()`` entry.
        root: the zoo directory, on a filesystem every worker sees at the same path.
        data_root, download: where the workers find the image data (see ``data.load_image_data``).
        device: torch device of the training; "cuda" means the GPU Ray assigns to the task.
        address: Ray cluster "host:port" or "auto"; None: $RAY_ADDRESS if set, else a new local instance
            (shut down at the end). If this process already has a Ray connection, that one is used.
        num_gpus_per_task: GPUs reserved per task (fractions share a GPU); default 1 for "cuda*", else 0.
        num_cpus_per_task: CPUs reserved per task; also the task's torch thread count (at least 1).
        max_retries: reruns of a task whose worker died or which raised a ``RETRYABLE`` error.
        progress: show a progress bar over chunks.

    Resumable like ``generate``: rerunning after a failure trains only unfinished chunks, each from its
    last written epoch. Raises ``DistributedError`` (Ray missing, cluster unreachable, chunks failing after
    their retries), ``ZooFileError`` (the directory holds another run) or the data's errors.
    """
    ray = _import_ray()
    gpus = _gpus_per_task(device, num_gpus_per_task)
    if num_cpus_per_task < 0 or max_retries < 0:
        raise ValueError(f"num_cpus_per_task and max_retries must be ≥ 0, got {num_cpus_per_task}, {max_retries}")
    root = Path(root).resolve()  # workers have other working directories
    data_root = None if data_root is None else str(Path(data_root).expanduser().resolve())
    root.mkdir(parents=True, exist_ok=True)
    with _ray_session(ray, address):
        if gpus > ray.cluster_resources().get("GPU", 0):
            warnings.warn(f"each task asks for {gpus} GPU(s) but the cluster has "
                          f"{ray.cluster_resources().get('GPU', 0)} now; tasks wait until GPUs join", stacklevel=2)
        # the driver's numeric switches (training.NUMERICS_ENV) hold on every worker, whatever its node's environment
        env = {var: os.environ[var] for var in NUMERICS_ENV.values() if var in os.environ}
        runtime = {"runtime_env": {"env_vars": env}} if env else {}
        describe = ray.remote(num_cpus=num_cpus_per_task, max_retries=max_retries, **runtime)(_describe_task)
        try:
            info = ray.get(describe.remote(run, data_root, download, device))
        except ray.exceptions.RayTaskError as err:
            raise (err.cause if err.cause is not None else err) from None  # e.g. DataNotFoundError, as locally
        except ray.exceptions.RayError as err:
            raise DistributedError(f"loading the image data on a worker failed: {_failure(ray, err)}") from err
        _check_or_write_zoo_json(root, info)
        if (root / "metadata.parquet").exists():
            return
        chunks = run.chunks()
        slots = ray.cluster_resources().get("GPU" if gpus else "CPU", 0) // (gpus or num_cpus_per_task or 1)
        if len(chunks) < slots:
            warnings.warn(f"{len(chunks)} chunk(s) of {run.chunk_size} models for {slots:.0f} task slots: pass a "
                          "smaller chunk_size (--chunk-size) to use the whole cluster", stacklevel=2)
        todo = [c for c in chunks if not (chunk_dir(root, c) / "complete.json").exists()]
        task = ray.remote(num_cpus=num_cpus_per_task, num_gpus=gpus, max_retries=max_retries,
                          retry_exceptions=list(RETRYABLE), **runtime)(_chunk_task)
        threads = max(1, int(num_cpus_per_task))
        pending = {task.remote(run, str(root), c, data_root, download, device, info["data"]["sha256"], threads,
                               _fault): c for c in todo}
        failed: list[tuple[list[ModelConfig], Exception]] = []
        desc = f"{run.zoo.name} ({run.engine}, ray)"
        with tqdm(total=len(chunks), initial=len(chunks) - len(todo), desc=desc, unit="chunk",
                  disable=not progress) as bar:
            try:
                while pending:
                    (ref,), _ = ray.wait(list(pending), num_returns=1)
                    chunk = pending.pop(ref)
                    try:
                        ray.get(ref)
                    except ray.exceptions.RayError as err:
                        failed.append((chunk, err))
                    bar.update(1)
            except BaseException:  # KeyboardInterrupt: stop the tasks; their temporary files are removed
                for ref in pending:
                    ray.cancel(ref)
                raise
        if failed:
            lines = "\n".join(f"  {chunk_dir(root, c).name}: {_failure(ray, e)}" for c, e in failed)
            raise DistributedError(
                f"{len(failed)} of {len(todo)} chunk task(s) failed (with up to {max_retries} retries each):\n"
                f"{lines}\nEvery other chunk and every epoch written "
                f"so far is kept in {root}. Fix the cause and rerun the same command: it resumes each unfinished "
                "chunk from its state file") from failed[0][1]
        finalize(root, run)
