"""``generate``: train (part of) a zoo into a zoo directory, with an engine, on a backend.

Engines (``ENGINES``) train a chunk of models: ``population`` batches many small CNNs along a model axis
(``modelzoos.population``), ``reference`` trains one model at a time in plain PyTorch
(``modelzoos.training``). Each architecture names its default engine (``architectures.ARCHITECTURES``).
Backends decide where chunks are trained: ``local`` (this process) or ``ray`` (one Ray task per chunk,
``modelzoos.distributed``). Writing, resuming and the directory format are ``modelzoos.export``'s.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from modelzoos.architectures import get_architecture
from modelzoos.catalogue import ModelConfig, Zoo
from modelzoos.data import DataRecipe, ImageData, load_image_data
from modelzoos.distributed import RayBackend
from modelzoos.export import METADATA_SCHEMA, Backend, LocalBackend, Run, ZooDir, describe, produce
from modelzoos.population import train_population
from modelzoos.training import EpochResult, Resume, check_device, train_reference_chunk

# Engine name → trainer of one chunk of models: (zoo, configs, data, device, resume, stop) → EpochResults.
ENGINES: dict[str, Callable[..., Iterator[EpochResult]]] = {
    "population": train_population,
    "reference": train_reference_chunk,
}
# Backend name → factory(ray address, device) of the backend that writes the chunks.
BACKENDS: dict[str, Callable[[str | None, str], Backend]] = {
    "local": lambda address, device: LocalBackend(),
    "ray": lambda address, device: RayBackend(address=address, device=device),
}


@functools.lru_cache(maxsize=1)
def image_data(recipe: DataRecipe, data_root: str | None, download: bool) -> ImageData:
    """The image data of a recipe, loaded once per process (Ray reuses worker processes across tasks)."""
    return load_image_data(recipe, data_root, download=download)


@dataclass(frozen=True)
class Training:
    """The producer of a trained zoo (``export.Producer``): ``run`` trained by its engine on ``device``.

    Picklable (Ray ships it to workers); the image data is loaded where it trains, once per process.
    """

    run: Run
    device: str
    data_root: str | None = None
    download: bool = False
    schema: pa.Schema = METADATA_SCHEMA
    sections: tuple[str, ...] = ()

    def data(self) -> ImageData:
        return image_data(self.run.zoo.data, self.data_root, self.download)

    def describe(self) -> dict:
        return describe(self.run, self.data(), self.device)

    def __call__(self, chunk: list[ModelConfig], resume: Resume | None) -> Iterator[EpochResult]:
        return ENGINES[self.run.engine](self.run.zoo, chunk, self.data(), self.device, resume=resume,
                                        stop=self.run.epochs)


def plan(zoo: Zoo, models: int | None = None, epochs: int | None = None, engine: str | None = None,
         chunk_size: int | None = None, optimizer_state: bool = False) -> Run:
    """The ``Run`` of the first ``models`` models for ``epochs`` epochs (defaults: the whole zoo) with
    ``engine`` (default: the architecture's) in chunks of ``chunk_size`` models (default: all; reference: 1),
    storing the optimizer state of every epoch with ``optimizer_state``. ValueError names a bad value and the
    valid ones."""
    engine = engine or get_architecture(zoo.architecture).engine
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; valid: {', '.join(ENGINES)}")
    models = zoo.num_models if models is None else models
    epochs = zoo.epochs if epochs is None else epochs
    if not 1 <= models <= zoo.num_models:
        raise ValueError(f"--models must be in 1..{zoo.num_models} for {zoo.name}, got {models}")
    if not 0 <= epochs <= zoo.epochs:
        raise ValueError(f"--epochs must be in 0..{zoo.epochs} for {zoo.name}, got {epochs}")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"--chunk-size must be at least 1, got {chunk_size}")
    return Run(zoo, models, epochs, engine, chunk_size or (1 if engine == "reference" else models), optimizer_state)


def generate(zoo: Zoo, out: str | Path, *, models: int | None = None, epochs: int | None = None,
             engine: str | None = None, device: str = "cpu", data_root: str | Path | None = None,
             download: bool = False, chunk_size: int | None = None, progress: bool = True,
             backend: str = "local", ray_address: str | None = None, optimizer_state: bool = False) -> ZooDir:
    """Train (the first ``models`` models of) ``zoo`` for ``epochs`` epochs into the directory ``out``.

    ``optimizer_state``: the epoch files also hold every model's optimizer state after the epoch (Adam moments,
    SGD momentum; docs/format.md); the default stores weights only.

    Resumable: rerunning the same call after a crash continues where it stopped; a finished zoo is checked
    (sizes, headers) and returned as it is, or its damaged chunks are retrained (``export.produce``).
    ``backend="ray"`` trains one Ray task per chunk on the cluster at ``ray_address`` (None: a local Ray
    instance); ``out`` must then be on a filesystem shared by all nodes (``modelzoos.distributed``). The
    device is checked before anything is written (locally; Ray checks it on its workers).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    run = plan(zoo, models, epochs, engine, chunk_size, optimizer_state)
    if backend == "local":
        check_device(device)
    root = Path(out).resolve() if backend == "ray" else Path(out)  # Ray workers have other working directories
    data_root = None if data_root is None else str(Path(data_root).expanduser().resolve())
    return produce(root, Training(run, device, data_root, download), BACKENDS[backend](ray_address, device), progress)
