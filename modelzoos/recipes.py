"""The image datasets and the recipes that turn them into zoo inputs, as data (no torch needed).

``DATASETS`` / ``dataset_info`` describe each raw dataset (classes, channels, native size, the files its
reader needs); a zoo spec's ``[data]`` table is a ``DataRecipe``, validated on creation.
``modelzoos.data`` reads and preprocesses the images a recipe describes; keeping the recipes here lets the
catalogue, the zoo-directory format and ``modelzoos build`` read specs without importing torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

GEOMETRIES = ("native", "resize", "center_crop")
AUGMENTS = ("none", "crop_flip", "flip_rotate")
PIXEL_SCALES = (1.0, 255.0)
DIGITS_SPLIT = (1257, 270, 270)  # train / val / test of the 1,797 scikit-learn digits (70/15/15)


# ---------------------------------------------------------------------------------------------------------
# The datasets
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetInfo:
    """A raw image dataset: how it is read and what it looks like before preprocessing."""

    num_classes: int
    channels: int  # native channels of the raw images (1 or 3)
    size: int  # native H = W in pixels
    files: tuple[str, ...]  # what must exist under the data root (torchvision's layout)
    train_args: Mapping[str, Any]  # reader keyword arguments (``data.READERS``) of the official train split
    test_args: Mapping[str, Any]  # ... and of the official test split
    layout: str = "NHW"  # axis order of ``reader(...).data``: "NHW" | "NHWC" | "NCHW"
    labels: str = "targets"  # attribute of ``reader(...)`` holding the labels


def _idx(folder: str) -> tuple[str, ...]:
    """The uncompressed IDX files torchvision's MNIST family reads."""
    kinds = ("images-idx3", "labels-idx1")
    return tuple(f"{folder}/raw/{split}-{kind}-ubyte" for split in ("train", "t10k") for kind in kinds)


_TRAIN, _TEST = {"train": True}, {"train": False}
_SOURCES: dict[str, DatasetInfo] = {
    "digits": DatasetInfo(10, 1, 8, (), {}, {}),
    "mnist": DatasetInfo(10, 1, 28, _idx("MNIST"), _TRAIN, _TEST),
    "fmnist": DatasetInfo(10, 1, 28, _idx("FashionMNIST"), _TRAIN, _TEST),
    "svhn": DatasetInfo(10, 3, 32, ("train_32x32.mat", "test_32x32.mat"), {"split": "train"},
                        {"split": "test"}, layout="NCHW", labels="labels"),
    "usps": DatasetInfo(10, 1, 16, ("usps.bz2", "usps.t.bz2"), _TRAIN, _TEST),
    "cifar10": DatasetInfo(10, 3, 32, tuple(f"cifar-10-batches-py/{f}" for f in (
        "data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch",
        "batches.meta")), _TRAIN, _TEST, layout="NHWC"),
    # torchvision's STL10 also insists on unlabeled_X.bin (2.6 GB) although these splits never read it
    "stl10": DatasetInfo(10, 3, 96, tuple(f"stl10_binary/{f}" for f in (
        "train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin", "unlabeled_X.bin")), {"split": "train"},
        {"split": "test"}, layout="NCHW", labels="labels"),
    "cifar100": DatasetInfo(100, 3, 32, tuple(f"cifar-100-python/{f}" for f in ("train", "test", "meta")),
                            _TRAIN, _TEST, layout="NHWC"),
    # the official val split is our test split
    "tinyimagenet": DatasetInfo(200, 3, 64, tuple(f"tiny-imagenet-200/{f}" for f in (
        "wnids.txt", "train/<wnid>/images/*.JPEG", "val/images/*.JPEG", "val/val_annotations.txt")),
        {"split": "train"}, {"split": "val"}, layout="NHWC"),
}
DATASETS: tuple[str, ...] = tuple(_SOURCES)


def dataset_info(dataset: str) -> DatasetInfo:
    """The ``DatasetInfo`` of one of ``DATASETS``; ValueError naming the valid names otherwise."""
    _check_choice("dataset", dataset, DATASETS)
    return _SOURCES[dataset]


# ---------------------------------------------------------------------------------------------------------
# Recipe and results
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataRecipe:
    """How one zoo turns a raw image dataset into tensors (declared in each zoo spec file).

    ``mean`` / ``std`` take one value per output channel (a single value is broadcast to all
    channels and stored expanded), in ``pixel_scale`` units. Every field is validated on creation;
    a bad value raises ValueError naming the field, the value and the valid values.
    """

    dataset: str  # one of DATASETS
    size: int  # final H = W in pixels
    geometry: str = "native"  # GEOMETRIES: how raw images reach `size` ("native" needs size == native size)
    grayscale: bool = False  # RGB → 1 channel (torchvision Grayscale(1)) first; RGB datasets only
    pixel_scale: float = 1.0  # 1.0: ToTensor range [0, 1]; 255.0: Tiny-ImageNet's 0–255 float units
    mean: tuple[float, ...] = (0.5,)  # Normalize mean, in pixel_scale units, one per output channel
    std: tuple[float, ...] = (0.5,)
    train_size: int | None = None  # official-train images kept for training, the rest is val; None: no val
    split_seed: int = 42  # seed of the random_split generator
    augment: str = "none"  # AUGMENTS; applied on the fly by training, never here
    augment_val: bool = False  # protocol quirk: ResNet CIFAR val was cut from the augmented train set

    def __post_init__(self) -> None:
        info = dataset_info(self.dataset)
        _check_int("size", self.size, 1)
        _check_choice("geometry", self.geometry, GEOMETRIES)
        if self.geometry == "native" and self.size != info.size:
            raise ValueError(f"size={self.size} with geometry='native' must be the native size of "
                             f"{self.dataset!r} ({info.size}); use geometry='resize' or 'center_crop'")
        if self.geometry == "center_crop" and self.size > info.size:
            raise ValueError(f"size={self.size} with geometry='center_crop' exceeds the native size of "
                             f"{self.dataset!r} ({info.size}); use geometry='resize'")
        _check_bool("grayscale", self.grayscale)
        if self.grayscale and info.channels != 3:
            raise ValueError(f"grayscale=True: {self.dataset!r} is already single-channel; valid: False")
        _check_choice("pixel_scale", self.pixel_scale, PIXEL_SCALES)
        object.__setattr__(self, "pixel_scale", float(self.pixel_scale))
        for name in ("mean", "std"):
            object.__setattr__(self, name, self._per_channel(name, getattr(self, name)))
        if self.train_size is not None:
            _check_int("train_size", self.train_size, 1)
        if self.dataset == "digits" and self.train_size not in (None, DIGITS_SPLIT[0]):
            raise ValueError(f"train_size={self.train_size!r}: 'digits' is always split "
                             f"{list(DIGITS_SPLIT)}; valid: None or {DIGITS_SPLIT[0]}")
        _check_int("split_seed", self.split_seed, 0)
        _check_choice("augment", self.augment, AUGMENTS)
        _check_bool("augment_val", self.augment_val)
        if self.augment_val and (self.augment == "none" or self.train_size is None):
            raise ValueError("augment_val=True needs an augmentation (augment != 'none') and a val split "
                             f"(train_size set); got augment={self.augment!r}, "
                             f"train_size={self.train_size!r}")

    @property
    def channels(self) -> int:
        """Channels of the preprocessed images."""
        return 1 if self.grayscale else dataset_info(self.dataset).channels

    def _per_channel(self, name: str, values: Any) -> tuple[float, ...]:
        ok = isinstance(values, (tuple, list)) and all(_is_real(v) and math.isfinite(v) for v in values)
        if not ok or len(values) not in (1, self.channels):
            raise ValueError(f"{name}={values!r}: valid is a list of 1 or {self.channels} finite numbers "
                             f"(one per output channel of {self.dataset!r})")
        if name == "std" and min(values) <= 0:
            raise ValueError(f"std={values!r}: every value must be > 0")
        return tuple(float(v) for v in values) * (self.channels if len(values) == 1 else 1)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DataRecipe:
        """Build from plain data (a zoo spec's ``[data]`` table); lists become tuples, unknown keys raise."""
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ValueError(f"unknown data recipe key(s) {unknown}; valid keys: {names}")
        missing = [k for k in ("dataset", "size") if k not in data]
        if missing:
            raise ValueError(f"data recipe is missing required key(s) {missing}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data; ``from_dict`` inverts it."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


# ---------------------------------------------------------------------------------------------------------
# Argument checks (messages name the field, the value and the valid values)
# ---------------------------------------------------------------------------------------------------------


def _is_real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_choice(name: str, value: Any, valid: tuple) -> None:
    if isinstance(value, bool) or value not in valid:
        raise ValueError(f"{name}={value!r} is not valid; valid values: {', '.join(map(repr, valid))}")


def _check_int(name: str, value: Any, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name}={value!r} is not valid; valid: an integer >= {minimum}")


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name}={value!r} is not valid; valid values: True, False")
