"""Image datasets of the model zoos: read once, preprocess once, split, cache (docs/protocol.md, Data).

A zoo declares a ``DataRecipe`` (``modelzoos.recipes``: the datasets and recipes as torch-free data);
``load_image_data(recipe)`` turns the raw dataset into normalised
float32 tensors ``[N, C, size, size]`` for the train / val / test splits (``ImageData``).

Reading goes through torchvision's dataset classes (MNIST, FashionMNIST, SVHN, USPS, CIFAR10,
CIFAR100, STL10) and a small ``TinyImageNet`` folder reader, each with torchvision's on-disk layout
under one data root (``DatasetInfo.files``). Preprocessing follows the protocol's order on whole
uint8 batches: grayscale (Pillow's ITU-R 601-2 luma) → resize or center crop to ``size`` → float in
[0, 1] (× ``pixel_scale``) → Normalize(mean, std). The result equals torchvision's PIL pipeline
(``Grayscale(1)``, ``Resize``/``CenterCrop``, ``ToTensor``, ``Normalize``) bit for bit: ``Resize`` is
Pillow's antialiased bilinear filter, reproduced here with its fixed-point arithmetic (torch's own
uint8 antialiased ``interpolate`` is off by up to 2/255 on some pixels).

Splits: the official train split is cut with ``torch.utils.data.random_split(range(n),
[train_size, n - train_size], generator=torch.Generator().manual_seed(split_seed))`` and the index
order that ``random_split`` returns is kept. The original zoos then materialised every split through
a DataLoader shuffled by the *unseeded* global RNG, so their sample order cannot be reproduced; we
add no extra shuffle, which makes the tensors a pure function of the recipe (``ImageData.sha256``
records them). The official test split is the test set (for Tiny-ImageNet: its official val split;
Tiny-ImageNet has no val split).

``digits`` is the offline default: scikit-learn's bundled 1,797 8×8 digits (values 0..16, divided by
16, then resized like float tensors in torchvision: ``interpolate(bilinear, antialias=True)``). It has
no official test split, so all images are split 70/15/15 = [1257, 270, 270] with the same
``random_split`` call; it needs no data root and is never cached.

Errors: raw files missing (or failing torchvision's checksum) → ``DataNotFoundError``, a
``FileNotFoundError`` naming the dataset, the expected files, the CLI's ``--data-root DIR`` and
``--download`` / ``download=True``. A cache file that cannot be read or does not match its hash →
``DataCacheError`` (a ``RuntimeError``) naming the file to delete.

Cache: ``<root>/modelzoos-cache/<dataset>-<recipe hash>.safetensors`` holds the splits (tensors
``train.images``, ``train.labels``, ``val.*``, ``test.*``) and, as metadata, the recipe JSON and the
content hash; it is written atomically and re-verified against that hash on every load.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch.utils.data import random_split
from torchvision import datasets as tvd
from torchvision.datasets.utils import download_and_extract_archive, verify_str_arg

from modelzoos.files import atomic_write
from modelzoos.recipes import (
    AUGMENTS,
    DATASETS,
    DIGITS_SPLIT,
    GEOMETRIES,
    PIXEL_SCALES,
    DataRecipe,
    DatasetInfo,
    dataset_info,
)

__all__ = [  # the recipes are re-exported from modelzoos.recipes
    "AUGMENTS",
    "DATASETS",
    "GEOMETRIES",
    "PIXEL_SCALES",
    "READERS",
    "DataCacheError",
    "DataNotFoundError",
    "DataRecipe",
    "DatasetInfo",
    "ImageData",
    "Split",
    "TinyImageNet",
    "cache_path",
    "dataset_info",
    "default_data_root",
    "load_image_data",
]

log = logging.getLogger(__name__)

CACHE_DIR = "modelzoos-cache"
CACHE_FORMAT = "modelzoos.image-data/2"  # 2: Tiny-ImageNet labels in wnids.txt file order (1: sorted wnids)
_SPLITS = ("train", "val", "test")
_CHUNK = 4096  # images preprocessed at a time; only peak memory depends on it


# ---------------------------------------------------------------------------------------------------------
# The one reader torchvision lacks
# ---------------------------------------------------------------------------------------------------------


class TinyImageNet(tvd.VisionDataset):
    """`Tiny-ImageNet-200 <http://cs231n.stanford.edu/tiny-imagenet-200.zip>`_: 64×64 RGB, 200 classes.

    Args:
        root (str or Path): directory holding ``tiny-imagenet-200/``.
        split (str): "train" (``train/<wnid>/images/*.JPEG``, 100,000 images, in (wnid, file name)
            order) or "val" (``val/images/*.JPEG`` labelled by ``val/val_annotations.txt``, 10,000
            images, in annotation-file order).
        transform, target_transform (callable, optional): applied by ``__getitem__`` to the PIL image
            and the label.
        download (bool): fetch and unpack the official zip if ``wnids.txt`` is missing.

    ``data`` is uint8 [N, 64, 64, 3] (the few grayscale JPEGs are converted to RGB by Pillow);
    ``targets[i]`` is the index of the image's wnid in ``wnids.txt`` *as written* (``classes`` is that
    file order): the original zoos' reader numbered the classes so, and the official file is not sorted.
    Train images come in sorted path order, i.e. by wnid name, not by class index.
    """

    base_folder = "tiny-imagenet-200"
    url = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
    md5 = "90528d7ca1a48142e341f4ef8d21d0de"
    splits = ("train", "val")
    image_size = 64

    def __init__(self, root: str | Path, split: str = "train", transform: Callable | None = None,
                 target_transform: Callable | None = None, download: bool = False) -> None:
        super().__init__(root, transform=transform, target_transform=target_transform)
        self.split = verify_str_arg(split, "split", self.splits)
        folder = Path(self.root, self.base_folder)
        if download and not (folder / "wnids.txt").is_file():
            download_and_extract_archive(self.url, self.root, md5=self.md5)
        if not (folder / "wnids.txt").is_file() or not (folder / split).is_dir():
            raise RuntimeError("Dataset not found or corrupted. You can use download=True to download it")
        self.classes = (folder / "wnids.txt").read_text().split()
        label = {wnid: i for i, wnid in enumerate(self.classes)}
        if len(label) != len(self.classes):
            raise RuntimeError(f"{folder / 'wnids.txt'} lists a wnid twice; the file is corrupted, download it again")
        if split == "train":
            files = sorted(folder.glob("train/*/images/*.JPEG"))
            wnids = [f.parent.parent.name for f in files]
        else:
            annotations = (folder / "val" / "val_annotations.txt").read_text().splitlines()
            rows = [line.split("\t")[:2] for line in annotations if line.strip()]
            files = [folder / "val" / "images" / name for name, _ in rows]
            wnids = [wnid for _, wnid in rows]
        if not files:
            raise RuntimeError("Dataset not found or corrupted. You can use download=True to download it")
        self.targets = [label[w] for w in wnids]
        self.data = np.stack([self._read_rgb(f) for f in files])

    def _read_rgb(self, path: Path) -> np.ndarray:
        with Image.open(path) as img:
            rgb = np.asarray(img.convert("RGB"))
        if rgb.shape != (self.image_size, self.image_size, 3):
            raise ValueError(f"{path}: expected a {self.image_size}×{self.image_size} image, got {rgb.shape}")
        return rgb

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        img, target = Image.fromarray(self.data[index]), self.targets[index]
        if self.transform is not None:
            img = self.transform(img)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return img, target

    def __len__(self) -> int:
        return len(self.data)

    def extra_repr(self) -> str:
        return f"Split: {self.split}"


# ---------------------------------------------------------------------------------------------------------
# The datasets
# ---------------------------------------------------------------------------------------------------------


# The readers of the raw datasets (``recipes.DATASETS``; digits is built in): torchvision's classes and ours.
READERS: dict[str, type[tvd.VisionDataset]] = {
    "mnist": tvd.MNIST, "fmnist": tvd.FashionMNIST, "svhn": tvd.SVHN, "usps": tvd.USPS, "cifar10": tvd.CIFAR10,
    "stl10": tvd.STL10, "cifar100": tvd.CIFAR100, "tinyimagenet": TinyImageNet,
}
_LAYOUTS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "NHW": lambda x: x.unsqueeze(1),
    "NHWC": lambda x: x.permute(0, 3, 1, 2),
    "NCHW": lambda x: x,
}


@dataclass(frozen=True, eq=False)
class Split:
    """One split: preprocessed images and their labels."""

    images: torch.Tensor  # float32 [N, C, size, size], normalised, contiguous
    labels: torch.Tensor  # int64 [N], in [0, num_classes)

    def __post_init__(self) -> None:
        x, y = self.images, self.labels
        if (x.dtype, x.dim(), y.dtype, y.dim()) != (torch.float32, 4, torch.int64, 1) or len(x) != len(y):
            raise ValueError(f"Split needs float32 images [N, C, H, W] and int64 labels [N]; got images "
                             f"{x.dtype} {list(x.shape)}, labels {y.dtype} {list(y.shape)}")

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True, eq=False)
class ImageData:
    """The preprocessed splits of one recipe."""

    recipe: DataRecipe
    num_classes: int
    train: Split
    val: Split | None  # None when recipe.train_size is None (no val split)
    test: Split
    sha256: str  # hex; see _content_hash

    @property
    def channels(self) -> int:
        return self.train.images.shape[1]

    @property
    def pad_value(self) -> torch.Tensor:
        """float32 [C]: a black pixel after normalisation, (0 − mean) / std (fill of crops and rotations)."""
        return torch.tensor([-m / s for m, s in zip(self.recipe.mean, self.recipe.std, strict=True)])


class DataNotFoundError(FileNotFoundError):
    """Raw files of a dataset are missing or corrupted under the data root and were not downloaded."""


class DataCacheError(RuntimeError):
    """A preprocessed cache file cannot be read or fails its hash; deleting it rebuilds it."""


# ---------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------


def default_data_root() -> Path:
    """``$MODELZOOS_DATA`` if set, else ``~/.cache/modelzoos/data``."""
    env = os.environ.get("MODELZOOS_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "modelzoos" / "data"


def cache_path(recipe: DataRecipe, root: str | Path | None = None) -> Path:
    """``<root>/modelzoos-cache/<dataset>-<hash>.safetensors``, hash = sha256(format, recipe JSON)[:12]."""
    key = hashlib.sha256(f"{CACHE_FORMAT}\n{_recipe_json(recipe)}".encode()).hexdigest()[:12]
    return _resolve_root(root) / CACHE_DIR / f"{recipe.dataset}-{key}.safetensors"


def _resolve_root(root: str | Path | None) -> Path:
    return Path(root).expanduser() if root else default_data_root()


def load_image_data(recipe: DataRecipe, root: str | Path | None = None, download: bool = False,
                    cache: bool = True) -> ImageData:
    """Read, preprocess and split the dataset of ``recipe`` (see the module docstring).

    Args:
        recipe: what to build.
        root: data root holding the raw files (``dataset_info(name).files``) and the cache;
            None: ``default_data_root()``. Not used for ``digits``.
        download: let torchvision fetch missing raw files.
        cache: read / write the preprocessed splits under ``<root>/modelzoos-cache`` (not for digits).

    Raises:
        DataNotFoundError: raw files missing (and not downloaded).
        DataCacheError: the cache file is unreadable or corrupt (the message names it).
        ValueError: ``recipe.train_size`` is not smaller than the official train split.
    """
    if recipe.dataset == "digits":
        splits = _digits_splits(recipe)
        return _image_data(recipe, splits, _content_hash(splits))
    root = _resolve_root(root)
    path = cache_path(recipe, root)
    cached = _read_cache(path, recipe) if cache and path.exists() else None
    if cached is not None:
        log.info("%s: using cache %s", recipe.dataset, path)
        return _image_data(recipe, *cached)
    splits = _build_splits(recipe, root, download)
    sha = _content_hash(splits)
    if cache:
        _write_cache(path, recipe, splits, sha)
    return _image_data(recipe, splits, sha)


def _image_data(recipe: DataRecipe, splits: Mapping[str, Split], sha: str) -> ImageData:
    return ImageData(recipe, dataset_info(recipe.dataset).num_classes, splits["train"], splits.get("val"),
                     splits["test"], sha)


def _build_splits(recipe: DataRecipe, root: Path, download: bool) -> dict[str, Split]:
    train_x, train_y = _read_raw(recipe.dataset, root, train=True, download=download)
    test_x, test_y = _read_raw(recipe.dataset, root, train=False, download=download)
    n = len(train_y)
    if recipe.train_size is not None and recipe.train_size >= n:
        raise ValueError(f"{recipe.dataset}: train_size={recipe.train_size} but the official train split has "
                         f"only {n} images; set train_size below {n} (the rest becomes val) or to None")
    log.info("%s: preprocessing %d train and %d test images", recipe.dataset, n, len(test_y))
    train_x, test_x = _preprocess(train_x, recipe), _preprocess(test_x, recipe)
    splits = {"train": Split(train_x, train_y)}
    if recipe.train_size is not None:
        tr, va = _split_indices(n, (recipe.train_size, n - recipe.train_size), recipe.split_seed)
        splits = {"train": Split(train_x[tr], train_y[tr]), "val": Split(train_x[va], train_y[va])}
    return {**splits, "test": Split(test_x, test_y)}


def _read_raw(dataset: str, root: Path, train: bool, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One official split through its reader: uint8 [N, C, H, W] and int64 labels [N]."""
    info = dataset_info(dataset)
    try:
        ds = READERS[dataset](root, download=download, **(info.train_args if train else info.test_args))
    except (RuntimeError, FileNotFoundError) as err:  # torchvision: RuntimeError; USPS: FileNotFoundError
        expected = "\n".join(f"  {root / f}" for f in info.files)
        raise DataNotFoundError(
            f"Image dataset {dataset!r} not found or corrupted under {root} ({err}).\nExpected:\n{expected}\n"
            "Point modelzoos at a folder that has these files with the CLI option `--data-root DIR` "
            "(Python: root=DIR, or set MODELZOOS_DATA), or, with a network, fetch them with `--download` "
            "(Python: download=True).") from err
    images = _LAYOUTS[info.layout](torch.as_tensor(ds.data)).contiguous()
    labels = torch.as_tensor(np.asarray(getattr(ds, info.labels)), dtype=torch.int64)
    if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < info.num_classes:
        raise ValueError(f"{dataset}: labels outside [0, {info.num_classes}) under {root}; raw files corrupt")
    return images, labels


def _digits_splits(recipe: DataRecipe) -> dict[str, Split]:
    from sklearn.datasets import load_digits  # bundled with scikit-learn, no download

    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32).div_(16).unsqueeze(1)  # [1797, 1, 8, 8]
    labels = torch.as_tensor(digits.target, dtype=torch.int64)
    images = _preprocess(images, recipe)
    parts = _split_indices(len(labels), DIGITS_SPLIT, recipe.split_seed)
    return {name: Split(images[i], labels[i]) for name, i in zip(_SPLITS, parts, strict=True)}


def _split_indices(n: int, lengths: tuple[int, ...], seed: int) -> list[torch.Tensor]:
    """``random_split(range(n), lengths)`` with a generator seeded by ``seed``; index order as returned."""
    parts = random_split(range(n), list(lengths), generator=torch.Generator().manual_seed(seed))
    return [torch.as_tensor(p.indices, dtype=torch.int64) for p in parts]


# ---------------------------------------------------------------------------------------------------------
# Preprocessing (whole batches)
# ---------------------------------------------------------------------------------------------------------


def _preprocess(images: torch.Tensor, recipe: DataRecipe) -> torch.Tensor:
    """uint8 [N, C, H, W] in 0..255 (or float in [0, 1]) → float32 [N, C', size, size], normalised."""
    out = torch.empty(len(images), recipe.channels, recipe.size, recipe.size)
    for start in range(0, len(images), _CHUNK):
        x = images[start:start + _CHUNK]
        if recipe.grayscale:
            x = _grayscale(x)
        if recipe.geometry == "resize":
            x = _resize(x, recipe.size)
        elif recipe.geometry == "center_crop":
            x = _center_crop(x, recipe.size)
        if x.dtype == torch.uint8:  # ToTensor: /255 (pixel_scale 255 keeps 0..255)
            out[start:start + len(x)] = x.to(torch.float32).div_(255.0 / recipe.pixel_scale)
        else:
            out[start:start + len(x)] = x.to(torch.float32).mul_(recipe.pixel_scale)
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in (recipe.mean, recipe.std))
    return out.sub_(mean).div_(std)  # as Normalize


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 3, H, W] → [N, 1, H, W]: Pillow's fixed-point luma (19595 R + 38470 G + 7471 B) / 2**16."""
    r, g, b = x.to(torch.int32).unbind(1)
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).to(torch.uint8).unsqueeze(1)


def _center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """[N, C, H, W] → [N, C, size, size], offsets rounded as torchvision's CenterCrop."""
    top, left = (round((n - size) / 2.0) for n in x.shape[-2:])
    return x[..., top:top + size, left:left + size]


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear antialiased resize of [N, C, H, W] to [N, C, size, size].

    uint8: Pillow's separable resampling (horizontal, then vertical pass), each pass with 22-bit
    fixed-point weights and rounded to uint8, i.e. exactly ``transforms.Resize`` on PIL images.
    float: ``interpolate(bilinear, antialias=True)``, i.e. ``transforms.Resize`` on float tensors.
    """
    if x.dtype != torch.uint8:
        return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    precision = 22
    y = x.to(torch.float64)  # integer arithmetic below stays exact in float64 (< 2**53)
    for dim in (-1, -2):
        n = y.shape[dim]
        if n != size:
            w = torch.floor(_bilinear_weights(n, size) * 2**precision + 0.5)
            y = y.transpose(dim, -1)
            y = (y.reshape(-1, n) @ w.T).reshape(*y.shape[:-1], size)  # one GEMM per pass
            y = y.add_(2 ** (precision - 1)).div_(2**precision).floor_().clamp_(0, 255).transpose(dim, -1)
    return y.to(torch.uint8)


def _bilinear_weights(n_in: int, n_out: int) -> torch.Tensor:
    """float64 [n_out, n_in]: Pillow's normalised triangle-filter weights, support widened when shrinking."""
    scale = n_in / n_out
    support = max(scale, 1.0)
    w = torch.zeros(n_out, n_in, dtype=torch.float64)
    for j in range(n_out):
        center = (j + 0.5) * scale
        lo, hi = max(int(center - support + 0.5), 0), min(int(center + support + 0.5), n_in)
        for i in range(lo, hi):
            w[j, i] = max(0.0, 1.0 - abs((i - center + 0.5) / support))
        w[j] /= w[j].sum()
    return w


# ---------------------------------------------------------------------------------------------------------
# Content hash and cache
# ---------------------------------------------------------------------------------------------------------


def _content_hash(splits: Mapping[str, Split]) -> str:
    """sha256 over train, val, test; per tensor "<split>.<images|labels>:<dtype>:<shape>;" then its bytes."""
    h = hashlib.sha256()
    for name in (s for s in _SPLITS if s in splits):
        for key, t in (("images", splits[name].images), ("labels", splits[name].labels)):
            h.update(f"{name}.{key}:{t.dtype}:{list(t.shape)};".encode())
            h.update(t.contiguous().numpy())
    return h.hexdigest()


def _recipe_json(recipe: DataRecipe) -> str:
    return json.dumps(recipe.to_dict(), sort_keys=True)


def _read_cache(path: Path, recipe: DataRecipe) -> tuple[dict[str, Split], str] | None:
    """The cached splits and hash; None if the file was made for another recipe (it is then rebuilt)."""
    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != CACHE_FORMAT or meta.get("recipe") != _recipe_json(recipe):
                log.warning("%s was written for another recipe or format; rebuilding it", path)
                return None
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118  (safe_open has no __iter__)
        splits = {s: Split(tensors[f"{s}.images"], tensors[f"{s}.labels"]) for s in _SPLITS
                  if f"{s}.labels" in tensors}
        sha = meta["sha256"]
        if "train" not in splits or "test" not in splits or _content_hash(splits) != sha:
            raise ValueError("content does not match the sha256 in its metadata")
    except (SafetensorError, OSError, KeyError, ValueError) as err:
        raise DataCacheError(f"Cache file {path} is corrupt or truncated ({err}); delete it and it will be "
                             "rebuilt from the raw data.") from err
    return splits, sha


def _write_cache(path: Path, recipe: DataRecipe, splits: Mapping[str, Split], sha: str) -> None:
    """Write atomically (``files.atomic_write``); an unwritable data root only skips the cache, with a warning."""
    tensors = {f"{s}.{k}": getattr(split, k).contiguous() for s, split in splits.items()
               for k in ("images", "labels")}
    metadata = {"format": CACHE_FORMAT, "recipe": _recipe_json(recipe), "sha256": sha}
    try:
        atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    except OSError as err:
        warnings.warn(f"Not caching {recipe.dataset}: cannot write {path} ({err})", stacklevel=3)
        return
    log.info("%s: cached %s", recipe.dataset, path)
