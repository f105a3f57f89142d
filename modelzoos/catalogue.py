"""The zoo catalogue: every zoo is a declarative spec file, every model's hyperparameters follow from it.

A spec is a TOML file (``modelzoos/zoos/<name>.toml`` for the published zoos); a user's zoo is a spec
file whose path is accepted wherever a zoo name is. A spec may ``extends = "<zoo>"`` another and then
states only what differs (the [data] and [grid] tables are merged key by key, other fields replaced).

Enumeration (a public contract: ``model_id`` is the position in it):
``itertools.product(replicates, init, activation, optimizer, lr, weight_decay, dropout)``, the
replicate axis outermost, each axis in the order written in the spec. The replicate axis gives seeds:
``seeds = {range = [a, b]}`` uses a..b (the seed zoos' 1..1000, Hyp-10-fix's 1..10);
``seeds = {random = R, low = 0, high = 1000000, draw_seed = S}`` gives every model its own seed
drawn with ``numpy.random.default_rng(S).integers(low, high, size=n_models)`` (Hyp-10-rand, where the
original let Ray Tune draw a fresh seed for every trial; docs/protocol.md). ``Zoo.models()`` enumerates
lazily: the first models of a zoo of millions cost no more than those of a small one.

Specs are read without torch: the architectures' shapes come from ``modelzoos.layout``, the datasets and
recipes from ``modelzoos.recipes``, and the names of the registries that implement inits, activations and
optimizers from ``GRID_NAMES`` (each registry checks at import that it holds exactly these names).
"""

from __future__ import annotations

import difflib
import fnmatch
import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import overload

import numpy as np

from modelzoos.layout import LAYOUTS, Layout
from modelzoos.recipes import DATASETS, DataRecipe, dataset_info

SPEC_DIR = Path(__file__).parent / "zoos"
CONFIGS = ("seed", "hyp_rand", "hyp_fix")
SCHEDULES = ("constant", "onecycle")
GRID_AXES = ("init", "activation", "optimizer", "lr", "weight_decay", "dropout")
TWIN_EPOCHS = 25  # sparsified twins: 25 epochs per model, as the original twins
# What every model state records (metadata.parquet, the published rows): losses are mean cross-entropy in
# nats, accuracies fractions in [0, 1]; NaN where the zoo has no such split.
METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc")
# The names a spec may use on these grid axes: exactly the keys of the registries that implement them
# (architectures.INITS and ACTIVATIONS, optimizers.OPTIMIZERS; ``check_registry`` at their import).
GRID_NAMES = {"init": ("uniform", "normal", "kaiming_uniform", "kaiming_normal"),
              "activation": ("tanh", "sigmoid", "relu", "gelu"), "optimizer": ("adam", "sgd")}
# Bounds that keep a spec's numbers meaningful: seeds are hashed as 32-bit numbers (modelzoos.randomness)
MAX_SEED = 2**32 - 1
MAX_MODELS = 10**8  # models per zoo (the published zoos have at most 5,000)
MAX_EPOCHS = 10_000
MAX_BATCH_SIZE = 2**20
# zoo names, which are also the config names of a published repository (and its folder names under data/)
NAME = re.compile(r"^[a-z0-9][a-z0-9_]*$")


class SpecError(ValueError):
    """A zoo spec (name or file) is invalid; the message names the file, the field and the fix."""


def check_registry(registry: str, table: Mapping, names: tuple[str, ...]) -> None:
    """RuntimeError unless the registry ``table`` holds exactly ``names`` (in order): the catalogue reads specs
    with these names without importing the registry."""
    if tuple(table) != tuple(names):
        raise RuntimeError(f"{registry} holds {tuple(table)}, the catalogue declares {tuple(names)}: update both")


def check_name(name: object, origin: str) -> str:
    """``name`` if it is a valid zoo / config name (``NAME``), else SpecError naming ``origin``."""
    if not isinstance(name, str) or not NAME.match(name):
        raise SpecError(f"{origin}: name {name!r} is invalid; a zoo or config name must match {NAME.pattern} "
                        "(lowercase letters, digits, underscores; no path characters)")
    return name


@dataclass(frozen=True)
class ModelConfig:
    """The complete hyperparameters of one model of a zoo."""

    model_id: int
    seed: int
    init: str
    activation: str
    optimizer: str  # "adam" (coupled L2) | "sgd" (momentum 0.9; OneCycle cycles it 0.95↔0.85)
    lr: float  # learning rate; with OneCycle the peak (max_lr)
    weight_decay: float  # coupled L2 coefficient
    dropout: float  # drop probability
    batch_size: int
    epochs: int
    schedule: str  # "constant" | "onecycle" (stepped per batch)


@dataclass(frozen=True)
class Zoo:
    """One zoo: its data recipe, architecture, training protocol and grid. Built by ``get_zoo``."""

    name: str
    description: str
    dataset: str
    architecture: str
    config: str  # "seed" | "hyp_rand" | "hyp_fix" (or a user's own word)
    data: DataRecipe
    epochs: int
    batch_size: int
    schedule: str
    grid: dict[str, tuple]  # axis name → values, in GRID_AXES order
    seeds: dict  # {"range": [a, b]} or {"random": R, "low": .., "high": .., "draw_seed": ..}
    paper_counts_epoch0: bool = True  # the paper counts ResNet states without epoch 0
    source: str = ""  # the original experiment directory
    notes: tuple[str, ...] = ()  # documented deviations and clarifications
    path: str = field(default="", compare=False)

    # -- derived counts ---------------------------------------------------------------------------------
    @property
    def replicates(self) -> int:
        if "range" in self.seeds:
            a, b = self.seeds["range"]
            return b - a + 1
        return int(self.seeds["random"])

    @property
    def num_models(self) -> int:
        return self.replicates * math.prod(len(v) for v in self.grid.values())

    @property
    def stored_states(self) -> int:
        """States written per zoo: epochs 0..E for every model."""
        return self.num_models * (self.epochs + 1)

    @property
    def states(self) -> int:
        """States as the paper counts them (ResNet zoos without epoch 0)."""
        return self.num_models * (self.epochs + (1 if self.paper_counts_epoch0 else 0))

    @property
    def twin_states(self) -> int:
        return self.num_models * TWIN_EPOCHS

    @property
    def in_channels(self) -> int:
        return self.data.channels

    @property
    def num_classes(self) -> int:
        return dataset_info(self.dataset).num_classes

    @property
    def parameters(self) -> int:
        return self.layout.num_parameters

    @property
    def layout(self) -> Layout:
        return LAYOUTS[self.architecture](self.in_channels, self.num_classes)

    # -- models -----------------------------------------------------------------------------------------
    def models(self) -> Models:
        """Every model of the zoo, in model_id order (see the module docstring), as a lazy sequence."""
        return Models(self)

    def summary(self) -> dict:
        """The catalogue row of ``modelzoos zoos --json``."""
        return {
            "name": self.name, "dataset": self.dataset, "architecture": self.architecture,
            "config": self.config, "models": self.num_models, "epochs": self.epochs,
            "states": self.states, "stored_states": self.stored_states, "twin_states": self.twin_states,
            "parameters": self.parameters, "input": [self.in_channels, self.data.size, self.data.size],
            "classes": self.num_classes, "source": self.source, "description": self.description,
        }

    def to_dict(self) -> dict:
        """The resolved spec as plain JSON data (lists, no tuples: equal to its own JSON round trip), as
        written into zoo.json; ``from_dict`` inverts it."""
        d = asdict(self)
        d.pop("path")
        d["grid"] = {k: list(v) for k, v in self.grid.items()}
        d["data"] = self.data.to_dict()
        d["notes"] = list(self.notes)
        return d

    @classmethod
    def from_dict(cls, raw: dict, origin: str = "<dict>") -> Zoo:
        return _parse(dict(raw), origin)


class Models(Sequence[ModelConfig]):
    """The models of a zoo in model_id order, each computed when asked for: ``models[i]``, ``models[:n]``
    (a list), ``len(models)``; the enumeration of the module docstring, replicate axis outermost."""

    def __init__(self, zoo: Zoo) -> None:
        self.zoo = zoo
        self._axes = [zoo.grid[a] for a in GRID_AXES]
        self._drawn = np.empty(0, dtype=np.int64)  # the random seeds drawn so far (a prefix of the draw)

    def __len__(self) -> int:
        return self.zoo.num_models

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Models):
            return self.zoo == other.zoo
        return isinstance(other, list | tuple) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<{len(self):,} models of zoo {self.zoo.name}>"

    @overload
    def __getitem__(self, index: int) -> ModelConfig: ...

    @overload
    def __getitem__(self, index: slice) -> list[ModelConfig]: ...

    def __getitem__(self, index):
        if isinstance(index, slice):
            ids = range(len(self))[index]
            self._seeds(max(ids, default=-1) + 1)
            return [self._model(i) for i in ids]
        i = range(len(self))[index]  # IndexError out of range, negative indices from the end
        self._seeds(i + 1)
        return self._model(i)

    def _seeds(self, n: int) -> None:
        """Draw the first ``n`` random seeds (a prefix of numpy's draw of all of them: same values)."""
        seeds = self.zoo.seeds
        if "random" in seeds and n > len(self._drawn):
            rng = np.random.default_rng(seeds["draw_seed"])
            self._drawn = rng.integers(seeds["low"], seeds["high"], size=n)

    def _model(self, i: int) -> ModelConfig:
        zoo, rest = self.zoo, i
        values = []
        for axis in reversed(self._axes):  # mixed radix: the last axis varies fastest
            rest, k = divmod(rest, len(axis))
            values.append(axis[k])
        init, act, opt, lr, wd, p = reversed(values)
        seed = zoo.seeds["range"][0] + rest if "range" in zoo.seeds else int(self._drawn[i])
        return ModelConfig(i, int(seed), init, act, opt, float(lr), float(wd), float(p), zoo.batch_size, zoo.epochs,
                           zoo.schedule)


# ---------------------------------------------------------------------------------------------------------
# Parsing and validation
# ---------------------------------------------------------------------------------------------------------

_FIELDS = {"name", "description", "dataset", "architecture", "config", "data", "epochs", "batch_size",
           "schedule", "grid", "seeds", "paper_counts_epoch0", "source", "notes"}


def _fail(origin: str, msg: str) -> SpecError:
    return SpecError(f"{origin}: {msg}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _parse(raw: dict, origin: str) -> Zoo:
    unknown = set(raw) - _FIELDS
    if unknown:
        raise _fail(origin, f"unknown field(s) {sorted(unknown)}; valid fields: {sorted(_FIELDS)}")
    missing = {"name", "architecture", "config", "data", "epochs", "batch_size", "grid", "seeds"} - set(raw)
    if missing:
        raise _fail(origin, f"missing field(s) {sorted(missing)}")
    name = check_name(raw["name"], origin)
    try:
        data = DataRecipe.from_dict(raw["data"])
    except (ValueError, TypeError) as err:
        raise _fail(origin, f"[data]: {err}") from err
    if raw.get("dataset", data.dataset) != data.dataset:
        raise _fail(origin, f"dataset {raw['dataset']!r} differs from data.dataset {data.dataset!r}")
    arch = raw["architecture"]
    if arch not in LAYOUTS:
        raise _fail(origin, f"architecture {arch!r} unknown; valid: {sorted(LAYOUTS)}")
    for key, bound in (("epochs", MAX_EPOCHS), ("batch_size", MAX_BATCH_SIZE)):
        if not _is_int(raw[key]) or not 1 <= raw[key] <= bound:
            raise _fail(origin, f"{key} must be an integer in 1..{bound:,}, got {raw[key]!r}")
    for key in ("config", "description", "source"):
        if not isinstance(raw.get(key, ""), str):
            raise _fail(origin, f"{key} must be a string, got {raw[key]!r}")
    notes = raw.get("notes", [])
    if not isinstance(notes, list | tuple) or not all(isinstance(n, str) for n in notes):
        raise _fail(origin, f"notes must be a list of strings (one per note), got {notes!r}")
    schedule = raw.get("schedule", "constant")
    if schedule not in SCHEDULES:
        raise _fail(origin, f"schedule {schedule!r} unknown; valid: {list(SCHEDULES)}")
    grid = _parse_grid(raw["grid"], origin)
    seeds = _parse_seeds(raw["seeds"], origin)
    models = (seeds["range"][1] - seeds["range"][0] + 1 if "range" in seeds else seeds["random"]) * math.prod(
        len(v) for v in grid.values())
    if models > MAX_MODELS:
        raise _fail(origin, f"{models:,} models (replicates × grid); at most {MAX_MODELS:,} per zoo: split the "
                            "grid or the seeds over several zoos")
    return Zoo(
        name=name, description=raw.get("description", ""), dataset=data.dataset, architecture=arch,
        config=raw["config"], data=data, epochs=raw["epochs"], batch_size=raw["batch_size"],
        schedule=schedule, grid=grid, seeds=seeds,
        paper_counts_epoch0=bool(raw.get("paper_counts_epoch0", True)), source=raw.get("source", ""),
        notes=tuple(notes), path=origin,
    )


def _parse_grid(grid: dict, origin: str) -> dict[str, tuple]:
    if not isinstance(grid, dict) or set(grid) != set(GRID_AXES):
        got = sorted(grid) if isinstance(grid, dict) else grid
        raise _fail(origin, f"[grid] must list exactly the axes {list(GRID_AXES)}, got {got}")
    out = {}
    for axis in GRID_AXES:
        values = grid[axis]
        if not isinstance(values, list) or not values:
            raise _fail(origin, f"grid.{axis} must be a non-empty list, got {values!r}")
        for v in values:
            if axis in GRID_NAMES and v not in GRID_NAMES[axis]:
                raise _fail(origin, f"grid.{axis} value {v!r} unknown; valid: {sorted(GRID_NAMES[axis])}")
            if axis in ("lr", "weight_decay", "dropout"):
                ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
                if not ok or (axis == "lr" and v == 0) or (axis == "dropout" and v >= 1):
                    bounds = {"lr": "> 0", "weight_decay": ">= 0", "dropout": "in [0, 1)"}[axis]
                    raise _fail(origin, f"grid.{axis} value {v!r} invalid: must be a number {bounds}")
        out[axis] = tuple(values)
    return out


def _parse_seeds(seeds: dict, origin: str) -> dict:
    if isinstance(seeds, dict) and set(seeds) == {"range"}:
        r = seeds["range"]
        if isinstance(r, list) and len(r) == 2 and all(map(_is_int, r)) and 0 <= r[0] <= r[1] <= MAX_SEED:
            return {"range": list(r)}
    if (isinstance(seeds, dict) and set(seeds) == {"random", "low", "high", "draw_seed"}
            and all(map(_is_int, seeds.values())) and 0 < seeds["random"] <= MAX_MODELS
            and 0 <= seeds["low"] < seeds["high"] <= MAX_SEED + 1 and 0 <= seeds["draw_seed"] <= MAX_SEED):
        return dict(seeds)
    raise _fail(origin, f"seeds {seeds!r} invalid; use {{range = [first, last]}} with 0 <= first <= last <= "
                        f"{MAX_SEED} or {{random = R, low = 0, high = 1000000, draw_seed = S}} with 1 <= R <= "
                        f"{MAX_MODELS:,}, 0 <= low < high <= {MAX_SEED + 1} and 0 <= S <= {MAX_SEED}")


def _merge(base: dict, override: dict) -> dict:
    """``override`` on top of ``base``: the [data] and [grid] tables key by key, everything else whole."""
    out = base | override
    for table in ("data", "grid"):
        if isinstance(base.get(table), dict) and isinstance(override.get(table), dict):
            out[table] = base[table] | override[table]
    return out


OWN_FIELDS = ("description",)  # what a spec never inherits through `extends`: it describes one zoo (the parent's
# `source`, its original experiment folder, is inherited: a derived zoo imports from it, `modelzoos import`)


def _read_spec(path: Path, chain: tuple[Path, ...] = ()) -> dict:
    """The raw spec of the file ``path`` with its ``extends`` chain resolved (``chain``: the files that
    extend it, to report a cycle)."""
    path = path.resolve()
    if path in chain:
        raise SpecError(f"{chain[0]}: `extends` forms a cycle: {' → '.join(p.name for p in (*chain, path))}")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise SpecError(f"{path}: not valid TOML: {err}") from err
    if "extends" not in raw:
        return raw
    base = raw.pop("extends")
    inherited = _read_spec(_extends_path(base, path), (*chain, path))
    for key in OWN_FIELDS:
        inherited.pop(key, None)
    if "description" not in raw:
        changed = ", ".join(k for k in raw if k != "name") or "nothing else"
        raw["description"] = f"derived from {inherited.get('name', base)} (own: {changed})"
    return _merge(inherited, raw)


def _extends_path(base: object, spec: Path) -> Path:
    """The spec file that ``extends = base`` in ``spec`` names: a catalogue zoo, or a .toml file in the folder
    of ``spec`` (never outside it)."""
    if isinstance(base, str) and NAME.match(base):
        return _spec_path(base)
    if isinstance(base, str) and base.endswith(".toml"):
        path = (spec.parent / base).resolve()
        if path.parent != spec.parent:
            raise SpecError(f"{spec}: extends = {base!r} points outside the folder {spec.parent}; use a catalogue "
                            "zoo name or a .toml file in the same folder")
        if not path.is_file():
            raise SpecError(f"{spec}: extends = {base!r}: {path} does not exist")
        return path
    raise SpecError(f"{spec}: extends = {base!r} is neither a catalogue zoo name (`modelzoos zoos` lists them) nor "
                    "a .toml file name in the same folder")


def _spec_path(name: str) -> Path:
    path = SPEC_DIR / f"{name}.toml"
    if not path.exists():
        raise unknown_zoo(name)
    return path


def unknown_zoo(name: str) -> SpecError:
    close = difflib.get_close_matches(name, zoo_names(), n=5, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return SpecError(f"unknown zoo {name!r}{hint} (`modelzoos zoos` lists all; a path to a .toml spec works too)")


# ---------------------------------------------------------------------------------------------------------
# Lookup
# ---------------------------------------------------------------------------------------------------------


_ARCHS = tuple(LAYOUTS)
_GRAMMAR = re.compile(rf"^([a-z0-9]+)_({'|'.join(sorted(_ARCHS, key=len, reverse=True))})_({'|'.join(CONFIGS)})$")


TWIN_METHODS = ("vd", "mp")  # sparsified twins: variational dropout, magnitude pruning (modelzoos.twins.METHODS)
_TWIN = re.compile(rf"^(.+)_sparse_({'|'.join(TWIN_METHODS)})$")


def twin_name(zoo: str, method: str) -> str:
    """The name of the sparsified twins of zoo ``zoo`` (also their dataset config): ``<zoo>_sparse_<method>``."""
    return f"{zoo}_sparse_{method}"


def table_order(name: str) -> tuple:
    """Table order: dataset, then architecture, then config, twins right after their zoo; names off the
    grammar go last."""
    twin = _TWIN.match(name)
    base, rank = (twin[1], TWIN_METHODS.index(twin[2]) + 1) if twin else (name, 0)
    match = _GRAMMAR.match(base)
    if not match or match[1] not in DATASETS:
        return (len(DATASETS), 0, 0, base, rank)
    return DATASETS.index(match[1]), _ARCHS.index(match[2]), CONFIGS.index(match[3]), base, rank


def zoo_names() -> list[str]:
    """Names of the catalogued zoos (the 27 published and the offline digits zoos), in table order."""
    return sorted((p.stem for p in SPEC_DIR.glob("*.toml")), key=table_order)


def get_zoo(name_or_path: str | Path) -> Zoo:
    """The zoo of a catalogue name or of a spec file path (``*.toml``)."""
    text = str(name_or_path)
    if text.endswith(".toml") or Path(text).is_file():
        path = Path(text)
        if not path.is_file():
            raise SpecError(f"spec file {path} does not exist")
        return _parse(_read_spec(path), str(path))
    return _get_named(text)


@cache
def _get_named(name: str) -> Zoo:
    path = _spec_path(name)
    zoo = _parse(_read_spec(path), str(path))
    if zoo.name != name:
        raise SpecError(f"{path}: name {zoo.name!r} differs from the file name")
    return zoo


def list_zoos(pattern: str = "*", published: bool | None = None) -> list[Zoo]:
    """Catalogued zoos whose name matches the wildcard ``pattern``; ``published`` filters the 27."""
    zoos = [get_zoo(n) for n in zoo_names() if fnmatch.fnmatch(n, pattern)]
    if published is not None:
        zoos = [z for z in zoos if (z.dataset != "digits") == published]
    return zoos


def totals(zoos: list[Zoo]) -> dict[str, int]:
    return {
        "zoos": len(zoos),
        "models": sum(z.num_models for z in zoos),
        "states": sum(z.states for z in zoos),
        "stored_states": sum(z.stored_states for z in zoos),
        "states_with_twins": sum(z.states + z.twin_states for z in zoos),
    }
