"""Reading the original Model Zoos release in place (docs/import.md): sources, trials, checkpoints, metrics.

The authors published every zoo as a Ray Tune experiment folder (zipped on Zenodo, tarred for the ResNet-18
zoos). One trial folder per model holds ``params.json`` (its resolved config), ``result.json`` (one JSON line of
metrics per ``training_iteration`` = epoch) and ``checkpoint_<epoch>/checkpoints`` (the model's state dict) and
``checkpoint_<epoch>/optimizer`` (the optimizer's), both written by ``torch.save``.

Sources (``open_source``): a folder (an experiment folder, or any folder above trial folders), a ``.zip`` or a
tar (``.tar``, or compressed ``.tar.gz`` / ``.tgz`` / ``.tar.bz2`` / ``.tar.xz``), read without unpacking. A
member is named by its path inside the source (folders: relative to the folder's parent, so an experiment
folder and its zip name their members alike). ``index`` reads every source's directory once (zip: the central
directory; tar: the member headers, data skipped; folder: a sorted walk) and groups the members into
``Trial`` objects. Folders, zips and plain tars are read at random (a member at its offset); a compressed tar
only forwards (``Source.random_access`` False), so its readers ask for members in archive order.

Safety: a checkpoint is opened only by ``torch.load(..., weights_only=True, map_location="cpu")``, which
rebuilds tensors and plain containers and refuses every other object without running it; ``load_tensors``
then refuses a file that holds anything but names → tensors. ``params.pkl``, ``dataset.pt`` and every other
pickle of the release are never opened. ``params.json`` and ``result.json`` are JSON.

Matching (``match``): a trial is the model of the zoo spec whose hyperparameters its ``params.json`` gives
(``PARAMS``). Seed zoos and Hyp-10-fix: (seed, grid point) names one model. Hyp-10-rand: the grid point names
``replicates`` models; its trials fill replicates 0, 1, … in ascending order of their released seed (ties by
trial name), and each model keeps the released seed. A value outside the spec is an error naming the trial
and the key.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import lzma
import math
import os
import pickle
import re
import tarfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

import torch

from modelzoos.architectures import Layout, get_architecture
from modelzoos.catalogue import GRID_AXES, ModelConfig, Zoo
from modelzoos.manifest import sha256

CHECKPOINT_DIR = re.compile(r"^checkpoint_(\d+)$")  # Ray writes checkpoint_000007 (older versions checkpoint_7)
FILES = {"checkpoints": "checkpoints", "optimizer": "optimizers"}  # file in a checkpoint folder → Trial field
PLACEHOLDER = -999  # epoch-0 train metrics of the CNN zoos: not measured
RESULT_METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc")
# ModelConfig field → params.json key (protocol and grid of a trial)
PARAMS = {"seed": "seed", "init": "model::init_type", "activation": "model::nlin",
          "optimizer": "optim::optimizer", "lr": "optim::lr", "weight_decay": "optim::wd",
          "dropout": "model::dropout", "batch_size": "training::batchsize", "epochs": "training::epochs_train"}
DEFAULTS = {"model::dropout": 0.0}  # keys the ResNet-18 trials may omit
MODEL_TYPES = {"cnn": "cnn", "cnn3": "cnn_m", "resnet18": "resnet18", "cnn_ard": "cnn"}  # model::type, lowercased
TWIN_TYPES = {"cnn_ard"}  # variational-dropout (ARD) twins


class ReleaseError(ValueError):
    """The release files cannot be imported as asked; the message names the file (and trial, key) and the fix."""


class MemberError(ValueError):
    """One member (checkpoint, result file) is truncated, corrupt or refused; ``str`` says which and why."""


# ---------------------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    """One file of a source: ``name`` is its path inside the source; ``offset`` where its data starts (tar)."""

    source: int  # index in the list of sources
    name: str
    size: int
    offset: int = 0


class Source:
    """A folder, zip or tar of release files (module docstring). Picklable: handles are opened per process."""

    kind = ""
    random_access = True

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_handle": None}

    def location(self, name: str) -> str:
        """Where a member is, for messages: ``archive.zip:inner/path`` or the file's path."""
        return f"{self.path}:{name}"

    def members(self) -> Iterator[tuple[str, int, int]]:
        """(name, size, offset) of every regular file, in the source's own order."""
        raise NotImplementedError

    def read(self, member: Member) -> bytes:
        """The bytes of ``member``; MemberError when they cannot be read whole."""
        raise NotImplementedError

    def fingerprint(self) -> tuple[int, int]:
        """(bytes, modification time in ns): what a cached digest is checked against."""
        stat = self.path.stat()
        return stat.st_size, stat.st_mtime_ns

    def digest(self) -> str:
        """SHA-256 (hex) of the source file."""
        return sha256(self.path)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class FolderSource(Source):
    kind = "folder"

    def location(self, name: str) -> str:
        return str(self.path.parent / name)

    def members(self) -> Iterator[tuple[str, int, int]]:
        base = self.path.parent
        for folder, dirs, files in os.walk(self.path):
            dirs.sort()
            for name in sorted(files):
                path = Path(folder, name)
                if path.is_file() and not path.is_symlink():
                    yield path.relative_to(base).as_posix(), path.stat().st_size, 0

    def read(self, member: Member) -> bytes:
        try:
            return (self.path.parent / member.name).read_bytes()
        except OSError as err:
            raise MemberError(f"{self.location(member.name)}: cannot be read ({err})") from err

    def fingerprint(self) -> tuple[int, int]:
        """(bytes of all files, the newest modification time in ns)."""
        stats = [(self.path.parent / name).stat() for name, _, _ in self.members()]
        return sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0)

    def digest(self) -> str:
        """SHA-256 of the manifest: one line ``<name>\\t<bytes>\\t<sha256>\\n`` per file, in ``members`` order."""
        manifest = hashlib.sha256()
        for name, size, _ in self.members():
            manifest.update(f"{name}\t{size}\t{sha256(self.path.parent / name)}\n".encode())
        return manifest.hexdigest()


class ZipSource(Source):
    kind = "zip"

    def _zip(self) -> zipfile.ZipFile:
        if self._handle is None:
            self._handle = zipfile.ZipFile(self.path)
        return self._handle

    def members(self) -> Iterator[tuple[str, int, int]]:
        for info in self._zip().infolist():
            if not info.is_dir():
                yield info.filename, info.file_size, 0

    def read(self, member: Member) -> bytes:
        try:
            return self._zip().read(member.name)
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as err:
            raise MemberError(f"{self.location(member.name)}: corrupt in the archive ({err})") from err


class TarSource(Source):
    kind = "tar"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        with tarfile.open(path, "r:*") as tf:
            compressed = isinstance(tf.fileobj, gzip.GzipFile | bz2.BZ2File | lzma.LZMAFile)
        self.random_access = not compressed
        self.kind = "tar (compressed)" if compressed else "tar"

    def _stream(self):
        if self._handle is None:
            self._handle = tarfile.open(self.path, "r:*")  # noqa: SIM115 (kept for the reads, see close)
        return self._handle.fileobj

    def members(self) -> Iterator[tuple[str, int, int]]:
        with tarfile.open(self.path, "r:*") as tf:
            while (info := tf.next()) is not None:
                tf.members.clear()  # tarfile keeps every header it read; the index keeps its own compact record
                if info.isreg():
                    yield info.name, info.size, info.offset_data

    def read(self, member: Member) -> bytes:
        stream = self._stream()
        try:
            stream.seek(member.offset)
            data = stream.read(member.size)
        except (OSError, EOFError, tarfile.TarError, zlib.error, lzma.LZMAError) as err:
            raise MemberError(f"{self.location(member.name)}: cannot be read from the archive ({err})") from err
        if len(data) != member.size:
            raise MemberError(f"{self.location(member.name)}: truncated archive ({len(data)} of {member.size} bytes)")
        return data


def open_source(path: str | Path) -> Source:
    """The source at ``path``: a folder, a zip or a (compressed) tar; ReleaseError otherwise."""
    path = Path(path)
    if path.is_dir():
        return FolderSource(path)
    if not path.is_file():
        raise ReleaseError(f"{path} does not exist; pass an experiment folder or a .zip / .tar / .tar.gz of the "
                           "release as downloaded")
    try:  # a tar first: a plain tar ending in a torch.save file (itself a zip) looks like a zip from its end
        if tarfile.is_tarfile(path):
            return TarSource(path)
    except (OSError, EOFError, tarfile.TarError) as err:
        raise ReleaseError(f"{path} is a damaged archive ({err}); download it again") from err
    if zipfile.is_zipfile(path):
        return ZipSource(path)
    raise ReleaseError(f"{path} is neither a folder, a zip nor a tar archive; pass the release files as downloaded")


# ---------------------------------------------------------------------------------------------------------
# Trials
# ---------------------------------------------------------------------------------------------------------


@dataclass
class Trial:
    """One trial folder (= one model) of the release, gathered from one or more sources."""

    folder: str  # path of the trial folder inside its source(s)
    order: int  # position of its first member in the sources' order
    params: Member | None = None
    result: Member | None = None
    checkpoints: dict[int, Member] = field(default_factory=dict)  # epoch → model state dict
    optimizers: dict[int, Member] = field(default_factory=dict)  # epoch → optimizer state dict

    @property
    def name(self) -> str:
        """The trial folder's base name (e.g. ``NN_tune_trainable_c0371_00000_0_seed=1_2021-07-01_16-59-53``)."""
        return PurePosixPath(self.folder).name

    @property
    def experiment(self) -> str:
        """The base name of the folder holding the trial folder (the experiment, e.g. ``tune_zoo_mnist_uniform``)."""
        return PurePosixPath(self.folder).parent.name


@dataclass
class Index:
    """The trials of a list of sources, and what their directories show is wrong (``problems``: messages)."""

    sources: list[Source]
    trials: list[Trial]
    problems: list[str]

    def location(self, member: Member) -> str:
        return self.sources[member.source].location(member.name)

    def experiments(self) -> dict[str, int]:
        """{experiment folder: trials}."""
        out: dict[str, int] = {}
        for t in self.trials:
            out[t.experiment] = out.get(t.experiment, 0) + 1
        return out


def _classify(name: str) -> tuple[str, str, int] | None:
    """(trial folder, kind, epoch) of a member name; None for files the import never reads."""
    parts = PurePosixPath(name).parts
    if len(parts) >= 2 and parts[-1] in ("params.json", "result.json"):
        return str(PurePosixPath(*parts[:-1])), parts[-1], -1
    if len(parts) >= 3 and parts[-1] in FILES and (m := CHECKPOINT_DIR.match(parts[-2])):
        return str(PurePosixPath(*parts[:-2])), parts[-1], int(m[1])
    return None


def index(sources: list[Source]) -> Index:
    """Read the directory of every source once and group its members into trials (module docstring).

    A trial folder found in several sources (a zoo spread over parts) is one trial; a file found twice is a
    ReleaseError (the same part passed twice). Folders with checkpoints but no ``params.json``, and sources whose
    directory ends early (a truncated archive), are listed in ``problems``.
    """
    trials: dict[str, Trial] = {}
    seen: dict[str, int] = {}
    problems: list[str] = []
    position = 0
    for s, src in enumerate(sources):
        try:
            for name, size, offset in src.members():
                position += 1
                kind = _classify(name)
                if kind is None:
                    continue
                if name in seen:
                    raise ReleaseError(f"{name} is in both {sources[seen[name]].path} and {src.path}: pass every "
                                       "part of the release once")
                seen[name] = s
                folder, what, epoch = kind
                trial = trials.setdefault(folder, Trial(folder, position))
                member = Member(s, name, size, offset)
                if what == "params.json":
                    trial.params = member
                elif what == "result.json":
                    trial.result = member
                else:
                    getattr(trial, FILES[what])[epoch] = member
        except (OSError, EOFError, tarfile.TarError, zipfile.BadZipFile) as err:
            problems.append(f"{src.path}: the archive's directory ends early after {position} member(s) ({err}); "
                            "the members after that point are missing (download it again)")
    found = []
    for trial in sorted(trials.values(), key=lambda t: t.order):
        if trial.params is None:
            if trial.checkpoints:
                problems.append(f"{trial.folder}: {len(trial.checkpoints)} checkpoint(s) but no params.json; the "
                                "trial cannot be matched to a model and is skipped")
            continue
        found.append(trial)
    return Index(sources, found, problems)


# ---------------------------------------------------------------------------------------------------------
# Reading members
# ---------------------------------------------------------------------------------------------------------


def read_json(index: Index, member: Member) -> dict:
    """The JSON object in ``member`` (params.json); ReleaseError naming it when it is not one."""
    where = index.location(member)
    try:
        data = json.loads(index.sources[member.source].read(member))
    except (MemberError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ReleaseError(f"{where} is not readable JSON ({err}); download the release file again") from err
    if not isinstance(data, dict):
        raise ReleaseError(f"{where} holds a JSON {type(data).__name__}, not an object")
    return data


def read_members(index: Index, members: Iterable[Member]) -> Iterator[tuple[Member, bytes | MemberError]]:
    """(member, its bytes or the MemberError of reading it) in archive order (source, offset, name), so that a
    forward-only archive is read in one pass."""
    for member in sorted(members, key=lambda m: (m.source, m.offset, m.name)):
        try:
            yield member, index.sources[member.source].read(member)
        except MemberError as err:
            yield member, err


def load_checkpoint(data: bytes, where: str) -> object:
    """A ``torch.save`` file, opened safely (``weights_only=True``: tensors and plain containers only)."""
    try:
        return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as err:  # torch's restricted unpickler met something it does not rebuild
        lines = str(err).splitlines()
        reason = next((line.strip() for line in lines if "Unsupported" in line), lines[0] if lines else "")
        raise MemberError(f"{where}: refused, it holds objects other than tensors ({reason[:200]})") from err
    except Exception as err:  # any other failure to decode an untrusted file is this member's problem
        reason = (str(err).strip().splitlines() or [""])[0]
        raise MemberError(f"{where}: truncated or corrupt ({type(err).__name__}: {reason[:200]})") from err


def load_tensors(data: bytes, where: str) -> dict[str, torch.Tensor]:
    """A state dict (names → tensors) from a ``torch.save`` file; MemberError when it holds anything else."""
    obj = load_checkpoint(data, where)
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        kinds = sorted({type(v).__name__ for v in obj.values()}) if isinstance(obj, dict) else [type(obj).__name__]
        raise MemberError(f"{where}: refused, a checkpoint must map names to tensors; it holds {', '.join(kinds)}")
    return obj


def read_results(data: bytes, where: str) -> tuple[dict[int, dict[str, float]], list[str]]:
    """({epoch: {metric: value}}, problems) from a ``result.json``: the line of each ``training_iteration`` (the
    last one when Ray logged an iteration twice). Metrics absent from a line, and the ``-999`` placeholders, are
    NaN; ``sparsity_ratio`` is kept where present (twins). Unreadable lines are listed in ``problems``."""
    out: dict[int, dict[str, float]] = {}
    problems = []
    for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            epoch = int(record["training_iteration"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            problems.append(f"{where} line {number}: unreadable ({type(err).__name__}); its metrics are missing")
            continue
        values = {}
        for key in (*RESULT_METRICS, "sparsity_ratio"):
            v = record.get(key)
            ok = isinstance(v, int | float) and not isinstance(v, bool) and v != PLACEHOLDER
            values[key] = float(v) if ok else math.nan
        out[epoch] = values
    return out, problems


# ---------------------------------------------------------------------------------------------------------
# Checkpoint keys → the zoo's names
# ---------------------------------------------------------------------------------------------------------


def _float32(state: dict[str, torch.Tensor], where: str) -> None:
    for k, v in state.items():
        if v.is_floating_point() and v.dtype != torch.float32:
            raise MemberError(f"{where}: {k} is {v.dtype}, the release stores float32 (bit-exact import only)")


def _module_list(raw: dict[str, torch.Tensor], layers: list[str], fields: dict[str, str], where: str,
                 ) -> tuple[dict[str, torch.Tensor], tuple[int, ...]]:
    """({'<layer>.<ours>': tensor}, module indices) of a ``module_list.<i>.<field>`` state dict; the parameterised
    modules, in index order, are ``layers`` (``fields``: their field → our suffix)."""
    by_index: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in raw.items():
        parts = key.split(".")
        if len(parts) != 3 or parts[0] != "module_list" or not parts[1].isdigit() or parts[2] not in fields:
            raise MemberError(f"{where}: unexpected key {key!r} (expected module_list.<i>.{{{','.join(fields)}}})")
        by_index.setdefault(int(parts[1]), {})[parts[2]] = value
    indices = tuple(sorted(by_index))
    if len(indices) != len(layers):
        raise MemberError(f"{where}: {len(indices)} parameterised modules (indices {list(indices)}), the architecture "
                          f"has {len(layers)} ({', '.join(layers)})")
    state = {}
    for layer, i in zip(layers, indices, strict=True):
        for f, value in by_index[i].items():
            if fields[f]:
                state[f"{layer}.{fields[f]}"] = value
    return state, indices


def _check(state: dict[str, torch.Tensor], layout: Layout, where: str) -> dict[str, torch.Tensor]:
    missing = [e.name for e in layout.entries if e.name not in state]
    wrong = [f"{e.name} {list(state[e.name].shape)} (expected {list(e.shape)})" for e in layout.entries
             if e.name in state and tuple(state[e.name].shape) != e.shape]
    if missing or wrong:
        raise MemberError(f"{where}: does not fit the zoo's architecture: "
                          + "; ".join(([f"missing {', '.join(missing)}"] if missing else []) + wrong))
    return {e.name: state[e.name] for e in layout.entries}


def _cnn_layers(zoo: Zoo) -> list[str]:
    return [spec.name for spec in get_architecture(zoo.architecture).layers]


def model_state(raw: dict[str, torch.Tensor], zoo: Zoo, where: str) -> tuple[dict[str, torch.Tensor], str]:
    """(the float tensors in the zoo's layout names, the index layout found: ``"0,3,6,9,11"`` for module lists,
    ``"torchvision"`` for ResNet-18). Bit-exact: float32 tensors are taken as they are."""
    _float32(raw, where)
    layout = zoo.layout
    if get_architecture(zoo.architecture).layers is None:  # torchvision names: ours (integer buffers not stored)
        floats = {k: v for k, v in raw.items() if v.is_floating_point()}
        extra = sorted(set(floats) - {e.name for e in layout.entries})
        if extra:
            raise MemberError(f"{where}: unexpected keys {extra[:5]} for {zoo.architecture}")
        return _check(floats, layout, where), "torchvision"
    state, indices = _module_list(raw, _cnn_layers(zoo), {"weight": "weight", "bias": "bias"}, where)
    return _check(state, layout, where), ",".join(map(str, indices))


def ard_state(raw: dict[str, torch.Tensor], zoo: Zoo, ls_layout: Layout, where: str,
              ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], str]:
    """(dense weights, log σ² in ``ls_layout``'s names, index layout) of a variational-dropout twin checkpoint:
    ``module_list.<i>.{weight,bias,log_sigma2,log_sigma2_bias}``. A linear layer's ``log_sigma2_bias`` has no
    place in the twin format (the eval forward never uses it) and is dropped."""
    _float32(raw, where)
    fields = {"weight": "weight", "bias": "bias", "log_sigma2": "weight.ls2", "log_sigma2_bias": "bias.ls2"}
    state, indices = _module_list(raw, _cnn_layers(zoo), fields, where)
    dense = _check({k: v for k, v in state.items() if not k.endswith(".ls2")}, zoo.layout, where)
    ls2 = _check({k.removesuffix(".ls2"): v for k, v in state.items() if k.endswith(".ls2")}, ls_layout, where)
    return dense, ls2, ",".join(map(str, indices))


def optimizer_state(obj: object, params: Layout, slots: tuple[str, ...], where: str,
                    ) -> tuple[dict[str, torch.Tensor], int]:
    """({slot: flat float32 [P] in ``params``}, optimizer steps taken) of a release's ``optimizer`` file: torch's
    ``Optimizer.state_dict()``, ``{"state": {id: {slot: tensor, "step": n}}, "param_groups": [{"params": [id,
    …]}]}``. The groups' i-th parameter is the i-th entry of ``params`` (the original model's parameter order is
    the layout's; shapes are checked). A parameter without state, or with a ``None`` buffer, is zeros (no step
    taken yet: torch's optimizers start from zeros). Steps: the ``step`` the state records (Adam); 0 without
    any state; -1 when the state records none (SGD). MemberError names ``where`` and what does not fit."""
    groups = obj.get("param_groups") if isinstance(obj, dict) else None
    state = obj.get("state") if isinstance(obj, dict) else None
    if not isinstance(groups, list) or not isinstance(state, dict) or not all(
            isinstance(g, dict) and isinstance(g.get("params"), list) for g in groups):
        raise MemberError(f"{where}: not an optimizer state dict (expected keys 'state' and 'param_groups')")
    ids = [i for g in groups for i in g["params"]]
    if len(ids) != len(params.entries):
        raise MemberError(f"{where}: the optimizer holds {len(ids)} parameters, the architecture has "
                          f"{len(params.entries)}")
    out: dict[str, dict[str, torch.Tensor]] = {slot: {} for slot in slots}
    steps = set()
    for i, entry in zip(ids, params.entries, strict=True):
        s = state.get(i, {})
        if not isinstance(s, dict):
            raise MemberError(f"{where}: the state of parameter {i} ({entry.name}) is not a mapping")
        if s and "step" in s:
            steps.add(int(s["step"]))
        for slot in slots:
            value = s.get(slot) if s else None
            if s and slot not in s:
                raise MemberError(f"{where}: parameter {i} ({entry.name}) has no {slot!r} (holds "
                                  f"{', '.join(sorted(map(str, s)))}): not the trial's optimizer")
            if value is None:
                value = torch.zeros(entry.shape)
            if not isinstance(value, torch.Tensor) or value.dtype != torch.float32 or tuple(value.shape) != entry.shape:
                got = (f"{value.dtype} {list(value.shape)}" if isinstance(value, torch.Tensor)
                       else type(value).__name__)
                raise MemberError(f"{where}: {slot} of parameter {i} ({entry.name}) is {got}, expected float32 "
                                  f"{list(entry.shape)}")
            out[slot][entry.name] = value
    if len(steps) > 1:
        raise MemberError(f"{where}: the parameters record different steps {sorted(steps)}")
    step = steps.pop() if steps else (0 if not any(state.values()) else -1)
    return {slot: params.flatten(tensors) for slot, tensors in out.items()}, step


# ---------------------------------------------------------------------------------------------------------
# params.json → the zoo's models
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrialParams:
    """What a trial's ``params.json`` says: its architecture and the hyperparameters of a ``ModelConfig``."""

    architecture: str
    twin: bool  # a variational-dropout (ARD) twin
    in_channels: int
    values: dict  # ModelConfig field → value (PARAMS)
    init_checkpoint: str  # twins: the source trial (``training::init_checkpoint_path``)
    sample_epoch: int  # twins: the source epoch (``training::sample_epoch``)
    cuda: bool  # the trial's ``cuda`` flag (trained on a GPU)


def trial_params(params: dict, where: str) -> TrialParams:
    """Parse a params.json; ReleaseError naming ``where`` and the key when one is missing or unknown."""

    def get(key: str):
        if key in params:
            return params[key]
        if key in DEFAULTS:
            return DEFAULTS[key]
        raise ReleaseError(f"{where}: no key {key!r}; this is not a params.json of the Model Zoos release")

    kind = str(get("model::type")).lower()
    if kind not in MODEL_TYPES:
        raise ReleaseError(f"{where}: model::type {get('model::type')!r} is not a zoo architecture "
                           f"({', '.join(sorted(MODEL_TYPES))}, any case)")
    values = {}
    for name, key in PARAMS.items():
        v = get(key)
        values[name] = v.lower() if isinstance(v, str) else v
    twin = kind in TWIN_TYPES
    return TrialParams(MODEL_TYPES[kind], twin, int(get("model::channels_in")), values,
                       str(params.get("training::init_checkpoint_path", "")) if twin else "",
                       int(params.get("training::sample_epoch", -1)) if twin else -1, params.get("cuda") is True)


def _same(a, b) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=0.0)


def check_protocol(p: TrialParams, zoo: Zoo, where: str) -> None:
    """ReleaseError naming the key when a trial's architecture or protocol is not the zoo's."""
    expected = {"model::type": (p.architecture, zoo.architecture), "model::channels_in": (p.in_channels,
                zoo.in_channels), PARAMS["batch_size"]: (p.values["batch_size"], zoo.batch_size),
                PARAMS["epochs"]: (p.values["epochs"], zoo.epochs)}
    for key, (got, want) in expected.items():
        if not _same(got, want):
            raise ReleaseError(f"{where}: {key} = {got!r}, the zoo {zoo.name} has {want!r}; import it with the spec "
                               "of its own zoo (--zoo)")


def _grid_value(p: TrialParams, zoo: Zoo, axis: str, where: str):
    got = p.values[axis]
    for value in zoo.grid[axis]:
        if _same(got, value):
            return value
    raise ReleaseError(f"{where}: {PARAMS[axis]} = {got!r} is not in the grid of zoo {zoo.name} ({axis}: "
                       f"{', '.join(map(repr, zoo.grid[axis]))}); the trial belongs to another zoo")


def _seed(p: TrialParams, zoo: Zoo, where: str) -> int:
    seed = p.values["seed"]
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ReleaseError(f"{where}: seed = {seed!r} is not an integer")
    lo, hi = zoo.seeds["range"] if "range" in zoo.seeds else (zoo.seeds["low"], zoo.seeds["high"] - 1)
    if not lo <= seed <= hi:
        raise ReleaseError(f"{where}: seed = {seed} is outside the seeds {lo}…{hi} of zoo {zoo.name}")
    return seed


def match(trials: list[tuple[str, TrialParams]], zoo: Zoo) -> list[ModelConfig]:
    """The model of ``zoo`` each trial is (in the given order), with the trial's own seed (module docstring).

    ``trials``: (trial name, its params). ReleaseError names the trial and the key of a value outside the spec,
    two trials of one model, or more trials of a Hyp-10-rand grid point than it has replicates.
    """
    models = zoo.models()
    points = [tuple(getattr(c, a) for a in GRID_AXES) for c in models]
    fixed = "range" in zoo.seeds
    slots: dict[tuple, list[ModelConfig]] = {}
    for c, point in zip(models, points, strict=True):
        slots.setdefault((c.seed, *point) if fixed else point, []).append(c)  # replicates in model-id order
    keyed = []
    for name, p in trials:
        check_protocol(p, zoo, name)
        point = tuple(_grid_value(p, zoo, a, name) for a in GRID_AXES)
        seed = _seed(p, zoo, name)
        keyed.append(((seed, *point) if fixed else point, seed, name))
    out: dict[str, ModelConfig] = {}
    taken: dict[int, str] = {}
    for key, seed, name in sorted(keyed):  # Hyp-10-rand: a grid point's replicates by ascending seed, then name
        free = [c for c in slots[key] if c.model_id not in taken]
        if not free:
            owners = ", ".join(taken[c.model_id] for c in slots[key])
            what = "model" if fixed else f"{len(slots[key])} replicates of this grid point"
            raise ReleaseError(f"{name}: its {what} already imported from {owners}; pass every trial once")
        config = replace(free[0], seed=seed)
        taken[config.model_id] = name
        out[name] = config
    return [out[name] for name, _ in trials]
