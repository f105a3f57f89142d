"""Writers of tiny fake image datasets in their real on-disk formats (as torchvision's own tests do).

Every writer takes the data root and split sizes, writes random uint8 images with labels cycling through
the classes (every class present, every image distinct), and returns the number of train and test images.
"""

from __future__ import annotations

import bz2
import pickle
import struct
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image


def _images(rng: np.random.Generator, n: int, *shape: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)


def _labels(n: int, num_classes: int, offset: int = 0) -> np.ndarray:
    return (np.arange(n) + offset) % num_classes


def _write_idx(path: Path, array: np.ndarray) -> None:
    """IDX ("SN3 Pascal Vincent") file: magic 0x0000 08 <ndim>, big-endian dims, uint8 data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(root: Path, n_train: int = 30, n_test: int = 12, folder: str = "MNIST",
                seed: int = 0) -> tuple[int, int]:
    """``<folder>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (uncompressed), 28×28 L images."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(root / folder / "raw" / f"{split}-images-idx3-ubyte", _images(rng, n, 28, 28))
        _write_idx(root / folder / "raw" / f"{split}-labels-idx1-ubyte", _labels(n, 10))
    return n_train, n_test


def _pickle(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=2))


def write_cifar10(root: Path, n_per_batch: int = 6, n_test: int = 10, seed: int = 0) -> tuple[int, int]:
    """``cifar-10-batches-py/``: 5 pickled train batches, ``test_batch``, ``batches.meta``; rows are CHW."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    for i in range(1, 6):
        _pickle(folder / f"data_batch_{i}", {"data": _images(rng, n_per_batch, 3 * 32 * 32),
                                             "labels": _labels(n_per_batch, 10, i).tolist()})
    _pickle(folder / "test_batch", {"data": _images(rng, n_test, 3 * 32 * 32),
                                    "labels": _labels(n_test, 10).tolist()})
    _pickle(folder / "batches.meta", {"label_names": [f"class{i}" for i in range(10)]})
    return 5 * n_per_batch, n_test


def write_cifar100(root: Path, n_train: int = 120, n_test: int = 100, seed: int = 0) -> tuple[int, int]:
    """``cifar-100-python/{train,test,meta}`` with ``fine_labels`` in 0..99."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    for split, n in (("train", n_train), ("test", n_test)):
        labels = _labels(n, 100)
        _pickle(folder / split, {"data": _images(rng, n, 3 * 32 * 32), "fine_labels": labels.tolist(),
                                 "coarse_labels": (labels // 5).tolist()})
    _pickle(folder / "meta", {"fine_label_names": [f"class{i}" for i in range(100)]})
    return n_train, n_test


def write_svhn(root: Path, n_train: int = 30, n_test: int = 12, seed: int = 0) -> tuple[int, int]:
    """``{train,test}_32x32.mat``: X uint8 [32, 32, 3, N], y [N, 1] in 1..10 (10 is the digit 0)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        x = np.ascontiguousarray(_images(rng, n, 32, 32, 3).transpose(1, 2, 3, 0))
        y = (_labels(n, 10) + 1).astype(np.uint8).reshape(n, 1)
        scipy.io.savemat(root / f"{split}_32x32.mat", {"X": x, "y": y})
    return n_train, n_test


def write_usps(root: Path, n_train: int = 30, n_test: int = 12, seed: int = 0) -> tuple[int, int]:
    """``usps.bz2`` / ``usps.t.bz2``: libsvm lines "label 1:v ... 256:v", label 1..10, v in [-1, 1]."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for name, n in (("usps.bz2", n_train), ("usps.t.bz2", n_test)):
        values = rng.uniform(-1, 1, size=(n, 256))
        lines = [f"{label + 1} " + " ".join(f"{j + 1}:{v:.6f}" for j, v in enumerate(row))
                 for label, row in zip(_labels(n, 10), values, strict=True)]
        (root / name).write_bytes(bz2.compress(("\n".join(lines) + "\n").encode()))
    return n_train, n_test


def write_stl10(root: Path, n_train: int = 20, n_test: int = 10, seed: int = 0) -> tuple[int, int]:
    """``stl10_binary/``: ``*_X.bin`` uint8 images 3×96×96 stored column-major, ``*_y.bin`` labels 1..10."""
    rng = np.random.default_rng(seed)
    folder = root / "stl10_binary"
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        chw = _images(rng, n, 3, 96, 96)
        (folder / f"{split}_X.bin").write_bytes(np.ascontiguousarray(chw.transpose(0, 1, 3, 2)).tobytes())
        (folder / f"{split}_y.bin").write_bytes((_labels(n, 10) + 1).astype(np.uint8).tobytes())
    (folder / "unlabeled_X.bin").write_bytes(b"")  # torchvision checks that it exists
    (folder / "class_names.txt").write_text("\n".join(f"class{i}" for i in range(10)) + "\n")
    return n_train, n_test


def write_tinyimagenet(root: Path, n_classes: int = 4, n_per_class: int = 3, n_val: int = 8,
                       seed: int = 0) -> tuple[int, int]:
    """``tiny-imagenet-200/``: ``wnids.txt``, ``train/<wnid>/images/*.JPEG``, ``val/images/*.JPEG`` and
    ``val/val_annotations.txt``. One image per class is a grayscale JPEG, as in the real data.

    ``wnids.txt`` is unsorted like the real file: the odd-numbered wnids ``n00000001, n00000003, …`` first,
    then the even ones (neither sorted nor reversed for 3 classes or more). Val image ``i`` belongs to the
    wnid on line ``i % n_classes``.
    """
    rng = np.random.default_rng(seed)
    folder = root / "tiny-imagenet-200"
    wnids = [f"n{i:08d}" for i in (*range(1, n_classes, 2), *range(0, n_classes, 2))]
    (folder / "val" / "images").mkdir(parents=True, exist_ok=True)
    (folder / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for wnid in wnids:
        images = folder / "train" / wnid / "images"
        images.mkdir(parents=True)
        for i, img in enumerate(_images(rng, n_per_class, 64, 64, 3)):
            Image.fromarray(img[..., 0] if i == 0 else img).save(images / f"{wnid}_{i}.JPEG", quality=90)
        (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
    rows = []
    for i, img in enumerate(_images(rng, n_val, 64, 64, 3)):
        Image.fromarray(img).save(folder / "val" / "images" / f"val_{i}.JPEG", quality=90)
        rows.append(f"val_{i}.JPEG\t{wnids[i % n_classes]}\t0\t0\t63\t63")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(rows) + "\n")
    return n_classes * n_per_class, n_val


WRITERS = {
    "mnist": write_mnist,
    "fmnist": lambda root: write_mnist(root, folder="FashionMNIST", seed=1),
    "svhn": write_svhn,
    "usps": write_usps,
    "cifar10": write_cifar10,
    "stl10": write_stl10,
    "cifar100": write_cifar100,
    "tinyimagenet": write_tinyimagenet,
}
