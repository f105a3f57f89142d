"""Writers of small fake releases in the original Model Zoos on-disk format (Ray Tune experiment folders of
``torch.save`` checkpoints), as a third party would: the original model classes (``module_list`` CNNs, the
torchvision ResNet-18 with the small-image stem) built here, independent of modelzoos' own architectures.

``torch.save`` and ``pickle`` appear only here (tests and the import benchmark): modelzoos never writes a pickle.
Every experiment also gets the pickles the import must never open (``params.pkl``, ``dataset.pt``): they run
``Boom`` when unpickled, which creates the file ``BOOM_MARKER`` names.
"""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import tarfile
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torchvision
from torch import nn

ACT = {"tanh": nn.Tanh, "relu": nn.ReLU, "sigmoid": nn.Sigmoid, "gelu": nn.GELU}
BOOM_MARKER = "BOOM_MARKER"  # environment variable: the file a Boom creates when unpickled


class Boom:
    """Unpickling this runs code: it writes the file named by $BOOM_MARKER (a pickle that must never be opened)."""

    def __reduce__(self):
        return (exec, (f"open({os.environ.get(BOOM_MARKER, '/dev/null')!r}, 'w').write('ran')",))


class OriginalCNN(nn.Module):
    """The release's CNN-s (``kind="cnn"``) or CNN-m (``"cnn_m"``): ``module_list`` = conv → max-pool → act →
    [dropout] per stage. ``inserted``: Dropout modules present (CNN-s with dropout > 0 gives module indices
    0/4/8/11/14, without 0/3/6/9/11; CNN-m always has them: 0/4/8/13/16)."""

    def __init__(self, kind: str, channels: int, activation: str, dropout: float, inserted: bool) -> None:
        super().__init__()
        act = ACT[activation]
        drop = [nn.Dropout(dropout)] if inserted or kind == "cnn_m" else []
        if kind == "cnn":
            layers = [nn.Conv2d(channels, 8, 5), nn.MaxPool2d(2), act(), *drop, nn.Conv2d(8, 6, 5), nn.MaxPool2d(2),
                      act(), *drop, nn.Conv2d(6, 4, 2), act(), nn.Flatten(), nn.Linear(36, 20), act(), *drop,
                      nn.Linear(20, 10)]
        else:
            layers = [nn.Conv2d(channels, 16, 3), nn.MaxPool2d(2), act(), *drop, nn.Conv2d(16, 32, 3),
                      nn.MaxPool2d(2), act(), *drop, nn.Conv2d(32, 15, 3), nn.MaxPool2d(2), act(), *drop,
                      nn.Flatten(), nn.Linear(60, 20), act(), *drop, nn.Linear(20, 10)]
        self.module_list = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for m in self.module_list:
            x = m(x)
        return x


def original_resnet18(num_classes: int = 10) -> nn.Module:
    """torchvision's ResNet-18 with the release's small-image stem (3×3 stride-1 conv1, no max-pool)."""
    model = torchvision.models.resnet18(num_classes=num_classes)
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def save(obj, path: Path) -> None:
    """``torch.save`` (the release's checkpoint format)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)


@dataclass
class FakeTrial:
    """One trial folder: ``params`` (params.json), the model ``states`` and ``optimizers`` by epoch, the metric
    lines of result.json by epoch (``results``), and the folder name."""

    name: str
    params: dict
    states: dict[int, dict[str, torch.Tensor]]
    optimizers: dict[int, dict] = field(default_factory=dict)
    results: dict[int, dict] = field(default_factory=dict)
    damage: dict[int, Callable[[bytes], bytes]] = field(default_factory=dict)  # epoch → rewrite of its checkpoint


def cnn_params(seed: int, *, model_type: str = "CNN", channels: int = 1, init: str = "uniform",
               activation: str = "tanh", optimizer: str = "adam", lr: float = 3e-4, wd: float = 0.0,
               dropout: float = 0.0, batch_size: int = 10, epochs: int = 2, **extra) -> dict:
    """A params.json as the release writes it (with the bookkeeping keys the import ignores)."""
    return {"model::type": model_type, "model::channels_in": channels, "model::o_dim": 10, "model::nlin": activation,
            "model::init_type": init, "model::dropout": dropout, "model::use_bias": True,
            "optim::optimizer": optimizer, "optim::lr": lr, "optim::wd": wd, "optim::momentum": 0.9, "seed": seed,
            "training::batchsize": batch_size, "training::epochs_train": epochs, "training::output_epoch": 1,
            "dataset::dump": "/home/authors/data/dataset.pt", "cuda": False, **extra}


def evolve(model: nn.Module, epochs: int, seed: int, nan_from: int | None = None) -> dict[int, dict]:
    """State dicts of ``model`` after 0..epochs fake "epochs" (a seeded random walk of the float tensors;
    NaN from epoch ``nan_from`` on: a diverged model)."""
    g = torch.Generator().manual_seed(seed)
    states = {}
    for e in range(epochs + 1):
        if e:
            with torch.no_grad():
                for t in model.state_dict().values():
                    if t.is_floating_point():
                        t.add_(0.01 * torch.randn(t.shape, generator=g))
                        if nan_from is not None and e >= nan_from:
                            t.fill_(math.nan)
        states[e] = {k: v.clone() for k, v in model.state_dict().items()}
    return states


def cnn_results(epochs: int, seed: int, val: bool = False, placeholder: bool = True,
                extra: Callable[[int], dict] | None = None) -> dict[int, dict]:
    """result.json metric lines: epoch-0 train metrics −999 (``placeholder``), test (and ``val``) metrics real."""
    g = torch.Generator().manual_seed(seed + 7)
    out = {}
    for e in range(epochs + 1):
        r = torch.rand(6, generator=g, dtype=torch.float64).tolist()
        line = {"train_loss": 2 * r[0], "train_acc": r[1], "test_loss": 2 * r[2], "test_acc": r[3]}
        if val:
            line |= {"val_loss": 2 * r[4], "val_acc": r[5]}
        if e == 0 and placeholder:
            line |= {"train_loss": -999, "train_acc": -999}
        out[e] = line | (extra(e) if extra else {})
    return out


def adam_state(model: nn.Module, step: int) -> dict:
    """An Adam optimizer state dict of ``model``'s parameters after ``step`` steps (moments seeded by ``step``;
    no state at step 0, as torch's before the first step)."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(step)
    for p in model.parameters() if step else ():
        opt.state[p] = {"step": torch.tensor(float(step)), "exp_avg": torch.randn(p.shape, generator=g),
                        "exp_avg_sq": torch.rand(p.shape, generator=g)}
    return opt.state_dict()


def sgd_state(model: nn.Module, step: int) -> dict:
    """An SGD (momentum 0.9) optimizer state dict of ``model``'s parameters after ``step`` steps (momentum buffers
    seeded by ``step``; no state at step 0). torch's SGD records no step."""
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    g = torch.Generator().manual_seed(step + 1000)
    for p in model.parameters() if step else ():
        opt.state[p] = {"momentum_buffer": torch.randn(p.shape, generator=g)}
    return opt.state_dict()


def write_experiment(root: Path, experiment: str, trials: Iterable[FakeTrial]) -> Path:
    """``root/experiment/`` with its config and Ray files, ``dataset.pt`` (a Boom pickle) and every trial folder
    (``write_trial``); ``trials`` may be a generator (one trial in memory at a time)."""
    folder = root / experiment
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model::type": "grid_search(...)"}))
    (folder / "readme.md").write_text("")
    (folder / "experiment_state-2021-07-01_16-59-53.json").write_text("{}")
    (folder / "dataset.pt").write_bytes(pickle.dumps({"trainset": Boom()}))
    for t in trials:
        write_trial(folder, t)
    return folder


def write_trial(folder: Path, t: FakeTrial) -> None:
    """One trial folder: params.json, params.pkl (a Boom pickle), result.json, progress.csv and
    checkpoint_<epoch:06d>/{checkpoints, optimizer, .tune_metadata}."""
    tdir = folder / t.name
    tdir.mkdir()
    (tdir / "params.json").write_text(json.dumps(t.params))
    (tdir / "params.pkl").write_bytes(pickle.dumps(Boom()))
    lines = []
    for e, metrics in sorted(t.results.items()):
        lines.append(json.dumps({**metrics, "training_iteration": e, "time_this_iter_s": 1.0, "done": False,
                                 "trial_id": t.name[:20], "hostname": "node1", "config": t.params}))
    (tdir / "result.json").write_text("\n".join(lines) + ("\n" if lines else ""))
    (tdir / "progress.csv").write_text("training_iteration\n" + "\n".join(map(str, sorted(t.results))))
    for e, state in t.states.items():
        cdir = tdir / f"checkpoint_{e:06d}"
        save(state, cdir / "checkpoints")
        if e in t.damage:
            path = cdir / "checkpoints"
            path.write_bytes(t.damage[e](path.read_bytes()))
        if e in t.optimizers:
            save(t.optimizers[e], cdir / "optimizer")
        (cdir / ".tune_metadata").write_bytes(b"ray")


def truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


def booby_trap(_: bytes) -> bytes:
    """A checkpoint that would run code if unpickled without ``weights_only``."""
    buf = io.BytesIO()
    torch.save({"module_list.0.weight": torch.zeros(8, 1, 5, 5), "payload": Boom()}, buf)
    return buf.getvalue()


def zip_folder(folder: Path, out: Path) -> Path:
    """The experiment folder as the Zenodo records ship it: a zip whose members start with its name."""
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                z.write(path, path.relative_to(folder.parent).as_posix())
    return out


def tar_folder(folder: Path, out: Path, mode: str = "w") -> Path:
    """The experiment folder as a tar (``mode`` "w:gz" for a .tar.gz)."""
    with tarfile.open(out, mode) as t:
        t.add(folder, arcname=folder.name)
    return out
