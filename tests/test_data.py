"""modelzoos.data on tiny fake datasets in the real on-disk formats, read by the real torchvision readers."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.datasets.cifar
import torchvision.datasets.stl10
import torchvision.datasets.svhn
import torchvision.transforms as T
from fakedata import WRITERS
from PIL import Image
from safetensors import safe_open
from torch.utils.data import random_split

from modelzoos import data
from modelzoos.data import (
    DATASETS,
    DataCacheError,
    DataNotFoundError,
    DataRecipe,
    TinyImageNet,
    cache_path,
    dataset_info,
    load_image_data,
)

IMAGENET_MEAN, IMAGENET_STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
CASES = {  # the protocol's recipes (§3) with small train sizes
    "mnist": DataRecipe("mnist", 28, mean=(0.1307,), std=(0.3081,), train_size=20),
    "fmnist": DataRecipe("fmnist", 28, train_size=20),
    "svhn": DataRecipe("svhn", 28, "center_crop", grayscale=True, train_size=20),
    "usps": DataRecipe("usps", 28, "resize", mean=(0.1307,), std=(0.3081,), train_size=20),
    "cifar10_28px": DataRecipe("cifar10", 28, "resize", train_size=24),
    "cifar10_resnet": DataRecipe("cifar10", 32, mean=(0.4914, 0.4824, 0.4467), std=(0.2471, 0.2435, 0.2616),
                                 train_size=20, augment="crop_flip", augment_val=True),
    "stl10_28px": DataRecipe("stl10", 28, "resize", train_size=15),
    "stl10_32px": DataRecipe("stl10", 32, "resize", train_size=15),
    "cifar100": DataRecipe("cifar100", 32, mean=(0.5071, 0.4867, 0.4408), std=(0.2675, 0.2565, 0.2761),
                           train_size=100),
    "tinyimagenet": DataRecipe("tinyimagenet", 64, pixel_scale=255.0, mean=IMAGENET_MEAN, std=IMAGENET_STD),
}
EXPECTED_CHANNELS = {"mnist": 1, "fmnist": 1, "svhn": 1, "usps": 1, "cifar10_28px": 3, "cifar10_resnet": 3,
                     "stl10_28px": 3, "stl10_32px": 3, "cifar100": 3, "tinyimagenet": 3}


@pytest.fixture(autouse=True)
def no_md5(monkeypatch):
    """Fake files cannot match the real md5 sums: check existence only (as torchvision's tests patch it)."""
    def exists(fpath, md5=None):
        return os.path.isfile(fpath)

    for module in (torchvision.datasets.cifar, torchvision.datasets.svhn, torchvision.datasets.stl10):
        monkeypatch.setattr(module, "check_integrity", exists)


def fake(root, dataset):
    return WRITERS[dataset](root)


def reference_split(recipe, root, train):
    """The same split through torchvision's PIL pipeline, one image at a time: (images, labels)."""
    to_tensor = T.ToTensor()
    if recipe.pixel_scale == 255.0:  # Tiny-ImageNet: float 0..255, no ToTensor
        to_tensor = T.Compose([T.PILToTensor(), T.Lambda(torch.Tensor.float)])
    steps = [T.Grayscale(1)] if recipe.grayscale else []
    steps += {"native": [], "resize": [T.Resize((recipe.size, recipe.size))],
              "center_crop": [T.CenterCrop(recipe.size)]}[recipe.geometry]
    transform = T.Compose([*steps, to_tensor, T.Normalize(recipe.mean, recipe.std)])
    info = dataset_info(recipe.dataset)
    ds = data.READERS[recipe.dataset](root, transform=transform, **(info.train_args if train else info.test_args))
    images, labels = zip(*(ds[i] for i in range(len(ds))), strict=True)
    return torch.stack(images), torch.tensor(labels)


# ---------------------------------------------------------------------------------------------------------
# Reading and preprocessing
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_shapes_dtypes_labels(case, tmp_path):
    recipe = CASES[case]
    n_train, n_test = fake(tmp_path, recipe.dataset)
    d = load_image_data(recipe, tmp_path, cache=False)
    c, s = EXPECTED_CHANNELS[case], recipe.size
    assert d.num_classes == dataset_info(recipe.dataset).num_classes == (200 if case == "tinyimagenet" else
                                                                        100 if case == "cifar100" else 10)
    assert d.channels == recipe.channels == c
    splits = {"train": d.train, "test": d.test} | ({"val": d.val} if d.val is not None else {})
    for split in splits.values():
        assert split.images.dtype == torch.float32 and split.images.is_contiguous()
        assert split.images.shape[1:] == (c, s, s)
        assert split.labels.dtype == torch.int64
        assert split.labels.min() >= 0 and split.labels.max() < d.num_classes
    if recipe.train_size is None:
        assert d.val is None and len(d.train) == n_train
    else:
        assert (len(d.train), len(d.val)) == (recipe.train_size, n_train - recipe.train_size)
    assert len(d.test) == n_test
    assert len(d.sha256) == 64 and int(d.sha256, 16) >= 0
    expected_pad = -torch.tensor(recipe.mean) / torch.tensor(recipe.std)
    torch.testing.assert_close(d.pad_value, expected_pad, rtol=0, atol=1e-6)


@pytest.mark.parametrize("case", CASES)
def test_equals_torchvision_pil_pipeline(case, tmp_path):
    recipe = CASES[case]
    n_train, _ = fake(tmp_path, recipe.dataset)
    d = load_image_data(recipe, tmp_path, cache=False)
    test_x, test_y = reference_split(recipe, tmp_path, train=False)
    torch.testing.assert_close(d.test.images, test_x, rtol=0, atol=1e-5)
    assert torch.equal(d.test.labels, test_y)
    train_x, train_y = reference_split(recipe, tmp_path, train=True)
    if recipe.train_size is None:
        torch.testing.assert_close(d.train.images, train_x, rtol=0, atol=1e-5)
        return
    gen = torch.Generator().manual_seed(recipe.split_seed)
    tr, va = random_split(range(n_train), [recipe.train_size, n_train - recipe.train_size], generator=gen)
    for split, idx in ((d.train, tr.indices), (d.val, va.indices)):
        torch.testing.assert_close(split.images, train_x[idx], rtol=0, atol=1e-5)
        assert torch.equal(split.labels, train_y[idx])


def test_grayscale_center_crop_svhn(tmp_path):
    fake(tmp_path, "svhn")
    d = load_image_data(CASES["svhn"], tmp_path, cache=False)
    assert d.train.images.shape[1:] == (1, 28, 28)
    raw = torchvision.datasets.SVHN(tmp_path, split="test")
    assert set(d.test.labels.tolist()) == set(range(10))  # the .mat label 10 became 0
    assert torch.equal(d.test.labels, torch.as_tensor(raw.labels))


@pytest.mark.parametrize(("size_in", "size_out", "channels"),
                         [(16, 28, 1), (32, 28, 3), (96, 28, 3), (96, 32, 3), (13, 40, 3), (64, 17, 1)])
def test_resize_is_bit_exact_pillow(size_in, size_out, channels):
    rng = np.random.default_rng(size_in * size_out)
    images = rng.integers(0, 256, size=(6, size_in, size_in, channels), dtype=np.uint8)
    images[0] = 255
    pil = [Image.fromarray(a[..., 0] if channels == 1 else a) for a in images]
    expected = torch.stack([T.PILToTensor()(T.Resize((size_out, size_out))(p)) for p in pil])
    assert torch.equal(data._resize(torch.from_numpy(images).permute(0, 3, 1, 2), size_out), expected)


def test_grayscale_is_bit_exact_pillow():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(8, 5, 7, 3), dtype=np.uint8)
    expected = torch.stack([T.PILToTensor()(Image.fromarray(a).convert("L")) for a in images])
    assert torch.equal(data._grayscale(torch.from_numpy(images).permute(0, 3, 1, 2)), expected)


def test_tinyimagenet_folder_reader(tmp_path):
    fake(tmp_path, "tinyimagenet")
    lines = (tmp_path / "tiny-imagenet-200/wnids.txt").read_text().split()
    assert lines == ["n00000001", "n00000003", "n00000000", "n00000002"]  # unsorted, as the official file
    train, val = TinyImageNet(tmp_path, "train"), TinyImageNet(tmp_path, "val")
    assert train.classes == lines  # class index = line of the wnid in the file as written, not sorted
    assert train.data.shape == (12, 64, 64, 3) and train.data.dtype == np.uint8  # grayscale JPEGs become RGB
    # files in sorted path order (by wnid name), each labelled with its wnid's line in wnids.txt
    files = sorted((tmp_path / "tiny-imagenet-200/train").glob("*/images/*.JPEG"))
    assert train.targets == [lines.index(f.parent.parent.name) for f in files] == [2, 2, 2, 0, 0, 0, 3, 3, 3, 1, 1, 1]
    # val_i belongs to wnids.txt line i % 4
    assert val.targets == [i % 4 for i in range(8)]
    expected = np.asarray(Image.open(tmp_path / "tiny-imagenet-200/val/images/val_5.JPEG").convert("RGB"))
    assert np.array_equal(val.data[5], expected)
    d = load_image_data(CASES["tinyimagenet"], tmp_path, cache=False)  # the labels the zoos train on
    assert d.train.labels.tolist() == train.targets and d.test.labels.tolist() == val.targets


def test_tinyimagenet_duplicate_wnid_is_an_error(tmp_path):
    fake(tmp_path, "tinyimagenet")
    wnids = tmp_path / "tiny-imagenet-200/wnids.txt"
    wnids.write_text(wnids.read_text() + "n00000001\n")
    with pytest.raises(RuntimeError, match="lists a wnid twice"):
        TinyImageNet(tmp_path, "train")


# ---------------------------------------------------------------------------------------------------------
# Splits
# ---------------------------------------------------------------------------------------------------------


def test_split_is_deterministic_and_disjoint(tmp_path):
    recipe = CASES["cifar10_28px"]
    n_train, _ = fake(tmp_path, "cifar10")
    a = load_image_data(recipe, tmp_path, cache=False)
    b = load_image_data(recipe, tmp_path, cache=False)
    assert a.sha256 == b.sha256 and torch.equal(a.train.images, b.train.images) and torch.equal(a.val.labels,
                                                                                                b.val.labels)
    rows = [bytes(x.numpy()) for x in torch.cat([a.train.images, a.val.images])]
    assert len(set(rows)) == n_train  # every official train image exactly once
    full = load_image_data(dataclasses.replace(recipe, train_size=None), tmp_path, cache=False)
    assert set(rows) == {bytes(x.numpy()) for x in full.train.images}
    other = load_image_data(dataclasses.replace(recipe, split_seed=7), tmp_path, cache=False)
    assert other.sha256 != a.sha256 and not torch.equal(other.train.labels, a.train.labels)


def test_train_size_must_leave_a_val_split(tmp_path):
    n_train, _ = fake(tmp_path, "mnist")
    with pytest.raises(ValueError, match=rf"mnist.*train_size=30.*only {n_train} images.*None"):
        load_image_data(dataclasses.replace(CASES["mnist"], train_size=30), tmp_path, cache=False)


def test_digits_offline_default(tmp_path):
    recipe = DataRecipe("digits", 28, "resize", mean=(0.5,), std=(0.5,))
    d = load_image_data(recipe, tmp_path / "nowhere")
    assert (len(d.train), len(d.val), len(d.test)) == data.DIGITS_SPLIT == (1257, 270, 270)
    assert d.num_classes == 10 and d.train.images.shape[1:] == (1, 28, 28)
    for split in (d.train, d.val, d.test):  # values / 16 in [0, 1], normalised by 0.5 / 0.5
        assert split.images.min() >= -1 - 1e-6 and split.images.max() <= 1 + 1e-6
    assert set(d.train.labels.tolist()) == set(range(10))
    assert not (tmp_path / "nowhere").exists()  # no root, no cache
    assert load_image_data(recipe).sha256 == d.sha256
    # the val split is random_split's second part, image = resize(values / 16)
    from sklearn.datasets import load_digits

    digits = load_digits()
    _, val, _ = random_split(range(1797), [1257, 270, 270], generator=torch.Generator().manual_seed(42))
    raw = torch.as_tensor(digits.images[val.indices], dtype=torch.float32).unsqueeze(1) / 16
    expected = F.interpolate(raw, size=(28, 28), mode="bilinear", antialias=True, align_corners=False)
    torch.testing.assert_close(d.val.images, (expected - 0.5) / 0.5)
    assert torch.equal(d.val.labels, torch.as_tensor(digits.target[val.indices]))


# ---------------------------------------------------------------------------------------------------------
# Errors and validation
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", [d for d in DATASETS if d != "digits"])
def test_missing_data_names_the_fix(dataset, tmp_path):
    recipe = DataRecipe(dataset, dataset_info(dataset).size)
    with pytest.raises(DataNotFoundError) as err:
        load_image_data(recipe, tmp_path)
    message = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    assert repr(dataset) in message and str(tmp_path / dataset_info(dataset).files[0]) in message
    assert "--data-root" in message and "--download" in message and "download=True" in message


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"dataset": "imagenet"}, "dataset"),
    ({"size": 0}, "size"),
    ({"size": 28.0}, "size"),
    ({"geometry": "crop"}, "geometry"),
    ({"size": 32}, "native"),
    ({"dataset": "svhn", "size": 40, "geometry": "center_crop"}, "center_crop"),
    ({"grayscale": True}, "grayscale"),
    ({"grayscale": "yes"}, "grayscale"),
    ({"pixel_scale": 2.0}, "pixel_scale"),
    ({"mean": (0.1, 0.2)}, "mean"),
    ({"mean": ("a",)}, "mean"),
    ({"std": (0.0,)}, "std"),
    ({"std": (float("nan"),)}, "std"),
    ({"train_size": 0}, "train_size"),
    ({"train_size": 1.5}, "train_size"),
    ({"dataset": "digits", "size": 8, "train_size": 100}, "train_size"),
    ({"split_seed": -1}, "split_seed"),
    ({"augment": "mixup"}, "augment"),
    ({"augment_val": True}, "augment_val"),
    ({"train_size": 10, "augment_val": 1}, "augment_val"),
])
def test_invalid_recipe_values(kwargs, field):
    with pytest.raises(ValueError, match=field):
        DataRecipe(**{"dataset": "mnist", "size": 28} | kwargs)


def test_recipe_from_dict_and_defaults():
    spec = {"dataset": "cifar10", "size": 28, "geometry": "resize", "mean": [0.5], "std": [0.5, 0.5, 0.5],
            "train_size": 42000}
    recipe = DataRecipe.from_dict(spec)
    assert recipe.mean == recipe.std == (0.5, 0.5, 0.5)  # one value broadcasts to all channels
    assert recipe == DataRecipe("cifar10", 28, "resize", train_size=42000)
    assert DataRecipe.from_dict(json.loads(json.dumps(recipe.to_dict()))) == recipe
    with pytest.raises(ValueError, match=r"unknown data recipe key\(s\) \['resolution'\]"):
        DataRecipe.from_dict(spec | {"resolution": 28})
    with pytest.raises(ValueError, match="size"):
        DataRecipe.from_dict({"dataset": "mnist"})
    assert DataRecipe("tinyimagenet", 64, pixel_scale=255).pixel_scale == 255.0


# ---------------------------------------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------------------------------------


def test_cache_round_trip(tmp_path):
    recipe = CASES["cifar10_28px"]
    fake(tmp_path, "cifar10")
    first = load_image_data(recipe, tmp_path)
    path = cache_path(recipe, tmp_path)
    assert path.parent == tmp_path / "modelzoos-cache" and path.name.startswith("cifar10-")
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind
    with safe_open(path, framework="pt") as f:
        meta = f.metadata()
    assert DataRecipe.from_dict(json.loads(meta["recipe"])) == recipe and meta["sha256"] == first.sha256
    shutil.rmtree(tmp_path / "cifar-10-batches-py")  # from now on only the cache can answer
    second = load_image_data(recipe, tmp_path)
    assert second.sha256 == first.sha256 and second.recipe == recipe
    for a, b in ((first.train, second.train), (first.val, second.val), (first.test, second.test)):
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert cache_path(dataclasses.replace(recipe, train_size=20), tmp_path) != path


def test_cache_of_another_recipe_is_rebuilt(tmp_path):
    fake(tmp_path, "mnist")
    a, b = CASES["mnist"], dataclasses.replace(CASES["mnist"], train_size=10)
    load_image_data(a, tmp_path)
    shutil.copy(cache_path(a, tmp_path), cache_path(b, tmp_path))
    assert len(load_image_data(b, tmp_path).train) == 10
    assert len(load_image_data(b, tmp_path, cache=False).train) == 10


@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "garbage"])
def test_corrupt_cache_names_the_file(damage, tmp_path):
    recipe = CASES["mnist"]
    fake(tmp_path, "mnist")
    load_image_data(recipe, tmp_path)
    path = cache_path(recipe, tmp_path)
    raw = bytearray(path.read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) // 2]
    elif damage == "flip_byte":
        raw[-3] ^= 0xFF  # inside the last tensor: only the content hash can tell
    else:
        raw = bytearray(b"not a safetensors file")
    path.write_bytes(bytes(raw))
    with pytest.raises(DataCacheError, match=rf"{path.name}.*delete it"):
        load_image_data(recipe, tmp_path)


def test_default_root_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELZOOS_DATA", str(tmp_path))
    fake(tmp_path, "usps")
    d = load_image_data(CASES["usps"])
    assert cache_path(CASES["usps"]).is_file() and len(d.test) == 12
