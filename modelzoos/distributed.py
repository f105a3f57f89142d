"""The Ray backend of ``export.produce``: one Ray task per chunk of models, all writing into one zoo directory.

``RayBackend`` does what ``export.LocalBackend`` does, with the chunk loop spread over a cluster:

1. ``describe``: one small task describes the run on a worker (the producer loads the image data there), so
   the driver checks (or writes) ``<zoo>/zoo.json`` exactly as with the local backend and never needs the
   data itself;
2. ``write``: every pending chunk becomes one task (Ray costs ≈0.1 s per task: distribute chunks of models,
   not single models); the task checks the worker's image data against zoo.json and calls
   ``export.write_chunk`` with the producer;
3. the driver waits for the tasks (progress bar over chunks); ``export.produce`` then writes
   ``metadata.parquet``.

Requirements: the zoo directory must be on a filesystem shared by the driver and every worker, mounted
at the same path (``generate`` passes it as an absolute path); each node needs the same ``modelzoos``
version and the image data under its data root (or ``download=True``). Only one run may work on a zoo
directory at a time.

Failures: each chunk has a fixed directory, and every file is written to a temporary name and renamed
into place, so a task that dies (worker killed, node lost, out of memory) leaves its chunk resumable
from ``state.safetensors``. Ray reruns such a task up to ``max_retries`` times; so it does after
transient errors (``RETRYABLE``: filesystem and CUDA out-of-memory errors), never after a bad input
(corrupt file, wrong data). A retry resumes the chunk and rewrites its files with identical content:
no model is lost or duplicated. A chunk that still fails raises ``DistributedError`` once the other
chunks are done; rerunning the same call then trains only what is missing.

Bitwise reproducibility: a task trains with ``torch.set_num_threads(max(1, int(num_cpus_per_task)))``.
CPU results depend on the thread count, so a Ray zoo equals a local one bit for bit when both run with
the same number of torch threads on the same kind of device.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
from tqdm.auto import tqdm

from modelzoos.catalogue import ModelConfig
from modelzoos.export import Producer, ZooFileError, chunk_dir, write_chunk
from modelzoos.training import NUMERICS_ENV

__all__ = ["RETRYABLE", "DistributedError", "FaultInjection", "RayBackend"]

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


def _chunk_task(producer: Producer, root: str, chunk: list[ModelConfig], sha256: str, threads: int,
                fault: FaultInjection | None) -> int:
    """Write one chunk into ``root`` (resuming from its state file); returns its first model id."""
    torch.set_num_threads(threads)
    here = producer.describe()["data"]["sha256"]
    if here != sha256:
        raise ZooFileError(
            f"the image data on this worker ({socket.gethostname()}) has sha256 {here}, the zoo in {root} "
            f"was made from {sha256}: the nodes' data roots hold different files. Point the data root "
            "(--data-root) at one copy on the shared filesystem")
    write_chunk(Path(root), chunk, producer.run, partial(producer, chunk), _EpochHook(chunk, fault))
    return chunk[0].model_id


# ---------------------------------------------------------------------------------------------------------
# The backend (driver side)
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


@dataclass
class RayBackend:
    """``export.Backend`` that writes every chunk in its own Ray task (module docstring).

    Args:
        address: Ray cluster "host:port" or "auto"; None: $RAY_ADDRESS if set, else a new local instance
            (shut down at the end). If this process already has a Ray connection, that one is used.
        device: torch device of the training; "cuda" means the GPU Ray assigns to the task.
        num_gpus_per_task: GPUs reserved per task (fractions share a GPU); default 1 for "cuda*", else 0.
        num_cpus_per_task: CPUs reserved per task; also the task's torch thread count (at least 1).
        max_retries: reruns of a task whose worker died or which raised a ``RETRYABLE`` error.
        fault: test hook (``FaultInjection``).
    """

    address: str | None = None
    device: str = "cpu"
    num_gpus_per_task: float | None = None
    num_cpus_per_task: float = 1
    max_retries: int = 3
    fault: FaultInjection | None = None
    _runtime: dict = field(default_factory=dict, init=False, repr=False)
    _sha256: str = field(default="", init=False, repr=False)

    def __post_init__(self) -> None:
        self.gpus = _gpus_per_task(self.device, self.num_gpus_per_task)
        if self.num_cpus_per_task < 0 or self.max_retries < 0:
            raise ValueError(f"num_cpus_per_task and max_retries must be ≥ 0, got {self.num_cpus_per_task}, "
                             f"{self.max_retries}")

    def session(self) -> contextlib.AbstractContextManager:
        return _ray_session(_import_ray(), self.address)

    def describe(self, producer: Producer) -> dict:
        ray = _import_ray()
        if self.gpus > ray.cluster_resources().get("GPU", 0):
            warnings.warn(f"each task asks for {self.gpus} GPU(s) but the cluster has "
                          f"{ray.cluster_resources().get('GPU', 0)} now; tasks wait until GPUs join", stacklevel=3)
        # the driver's numeric switches (training.NUMERICS_ENV) hold on every worker, whatever its node's environment
        env = {var: os.environ[var] for var in NUMERICS_ENV.values() if var in os.environ}
        self._runtime = {"runtime_env": {"env_vars": env}} if env else {}
        task = ray.remote(num_cpus=self.num_cpus_per_task, max_retries=self.max_retries, **self._runtime)(
            _describe_task)
        try:
            info = ray.get(task.remote(producer))
        except ray.exceptions.RayTaskError as err:
            raise (err.cause if err.cause is not None else err) from None  # e.g. DataNotFoundError, as locally
        except ray.exceptions.RayError as err:
            raise DistributedError(f"describing the run on a worker (loading its data) failed: "
                                   f"{_failure(ray, err)}") from err
        self._sha256 = info["data"]["sha256"]  # what every chunk task checks its worker's data against
        return info

    def write(self, root: Path, producer: Producer, chunks: list[list[ModelConfig]], progress: bool) -> None:
        ray = _import_ray()
        run = producer.run
        slots = ray.cluster_resources().get("GPU" if self.gpus else "CPU", 0) // (
            self.gpus or self.num_cpus_per_task or 1)
        total = len(run.chunks())
        if total < slots:
            warnings.warn(f"{total} chunk(s) of {run.chunk_size} models for {slots:.0f} task slots: "
                          "pass a smaller chunk_size (--chunk-size) to use the whole cluster", stacklevel=3)
        task = ray.remote(num_cpus=self.num_cpus_per_task, num_gpus=self.gpus, max_retries=self.max_retries,
                          retry_exceptions=list(RETRYABLE), **self._runtime)(_chunk_task)
        threads = max(1, int(self.num_cpus_per_task))
        pending = {task.remote(producer, str(root), c, self._sha256, threads, self.fault): c for c in chunks}
        failed: list[tuple[list[ModelConfig], Exception]] = []
        with tqdm(total=total, initial=total - len(chunks), desc=f"{run.zoo.name} ({run.engine}, ray)",
                  unit="chunk", disable=not progress) as bar:
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
                f"{len(failed)} of {len(chunks)} chunk task(s) failed (with up to {self.max_retries} retries each):"
                f"\n{lines}\nEvery other chunk and every epoch written so far is kept in {root}. Fix the cause and "
                "rerun the same command: it resumes each unfinished chunk from its state file") from failed[0][1]


def _describe_task(producer: Producer) -> dict:
    return producer.describe()

