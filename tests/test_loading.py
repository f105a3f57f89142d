"""The read side of a published zoo: load_dataset on a repository folder, zoo.json, modules that reproduce
their recorded test accuracy, batched Arrow access for DataLoader workers, streaming and node splitting.

The repository folder is written here by a small stand-in for the real builder (docs/hub_format.md), with
record batches of 2 rows, from the first 8 models × epochs 0..2 of the suite's digits zoo (8 models: with 6
the validation split would hold no model, and a Parquet file without rows makes load_dataset fail); the
real builder's folders are read in tests/test_publish.py and tests/test_hub.py.
"""

import json
import pickle
import random
import warnings
from pathlib import Path

import datasets
import huggingface_hub
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from datasets import load_dataset
from datasets.distributed import split_dataset_by_node
from torch.utils.data import DataLoader

from modelzoos.catalogue import get_zoo
from modelzoos.export import HYPERPARAMETERS, ZooDir
from modelzoos.loading import (
    ConfigInfo,
    WeightsDataset,
    build_module,
    collate_weights,
    config_info,
    evaluate_row,
    iterable_loader,
    load_zoo,
)
from modelzoos.training import METRICS
from modelzoos.transforms import Tokens

CONFIG = "digits_cnn_seed"
SPLITS = ("train", "validation", "test")
MODELS, EPOCHS = 8, 2  # the part of the shared zoo written here
_TYPES = {"seed": pa.int64(), "batch_size": pa.int64(), "epochs": pa.int64(), "lr": pa.float64(),
          "weight_decay": pa.float64(), "dropout": pa.float64()}


# ---------------------------------------------------------------------------------------------------------
# A tiny repository folder (stand-in for modelzoos.publish: docs/hub_format.md)
# ---------------------------------------------------------------------------------------------------------


def _schema(dim: int) -> pa.Schema:
    return pa.schema([
        ("zoo", pa.string()), ("model_id", pa.int64()), ("epoch", pa.int64()),
        *[(h, _TYPES.get(h, pa.string())) for h in HYPERPARAMETERS],
        *[(m, pa.float64()) for m in (*METRICS, "ggap")],
        ("nonfinite", pa.bool_()), ("weights", pa.list_(pa.float32(), dim)),
    ])


def write_repo(zd: ZooDir, root: Path, shards: int = 1) -> Path:
    """Write the first ``MODELS`` models × epochs 0..``EPOCHS`` of ``zd`` as config ``CONFIG`` of a repository
    folder, ``shards`` Parquet files per split."""
    meta = zd.metadata[(zd.metadata.model_id < MODELS) & (zd.metadata.epoch <= EPOCHS)]
    weights = dict(zd.weights(meta.index))
    dim = zd.layout.size
    ids = sorted(int(i) for i in meta.model_id.unique())
    random.Random(42).shuffle(ids)
    n_train, n_val = int(0.7 * len(ids)), int(0.15 * len(ids))
    splits = {"train": sorted(ids[:n_train]), "validation": sorted(ids[n_train : n_train + n_val]),
              "test": sorted(ids[n_train + n_val :])}
    zoo_json = {
        "format_version": 1, "config": CONFIG, "zoo": zd.info["run"]["zoo"], "layout": zd.info["layout"],
        "data": zd.info["data"], "splits": splits,
        "num_rows": {s: int(meta.model_id.isin(m).sum()) for s, m in splits.items()},
        "epochs": sorted(int(e) for e in meta.epoch.unique()), "num_models": len(ids),
    }
    schema = _schema(dim)
    features = datasets.Features.from_arrow_schema(schema)
    schema = schema.with_metadata({"huggingface": json.dumps({"info": {"features": features.to_dict()}}),
                                   "modelzoos": json.dumps(zoo_json)})
    cdir = root / "data" / CONFIG
    cdir.mkdir(parents=True)
    for split, models in splits.items():
        rows = meta[meta.model_id.isin(models)].sort_values(["model_id", "epoch"])
        columns = {name: rows[name].to_numpy() for name in schema.names if name != "weights"}
        flat = np.stack([weights[i].numpy() for i in rows.index])
        columns["weights"] = pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), dim)
        table = pa.Table.from_pydict(columns, schema=schema)
        bounds = np.linspace(0, len(rows), shards + 1).astype(int)
        for k in range(shards):
            pq.write_table(table.slice(bounds[k], bounds[k + 1] - bounds[k]),
                           cdir / f"{split}-{k:05d}-of-{shards:05d}.parquet", compression="zstd", row_group_size=2,
                           use_dictionary=[c for c in schema.names if c != "weights"],
                           column_encoding={"weights.list.element": "BYTE_STREAM_SPLIT"}, write_page_index=True)
    (cdir / "zoo.json").write_text(json.dumps(zoo_json, indent=2))
    files = "".join(f"  - split: {s}\n    path: data/{CONFIG}/{s}-*.parquet\n" for s in SPLITS)
    (root / "README.md").write_text(f"---\nlicense: cc-by-4.0\nconfigs:\n- config_name: {CONFIG}\n  default: true\n"
                                    f"  data_files:\n{files}---\n# Tiny digits zoo\n")
    return root


# ---------------------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------------------


pytestmark = pytest.mark.usefixtures("hf_offline")  # conftest: offline, temporary HF caches

@pytest.fixture(scope="module")
def source(zoo_dir):
    """(model_id, epoch) → float32 [D] weights, as generated."""
    meta = zoo_dir.metadata
    return {(int(meta.model_id[i]), int(meta.epoch[i])): w.numpy() for i, w in zoo_dir.weights()}


@pytest.fixture(scope="module")
def repo(zoo_dir, tmp_path_factory):
    return write_repo(zoo_dir, tmp_path_factory.mktemp("repo") / "tiny-zoos")


@pytest.fixture(scope="module")
def repo2(zoo_dir, tmp_path_factory):
    """The same config written as 2 Parquet files per split."""
    return write_repo(zoo_dir, tmp_path_factory.mktemp("repo2") / "tiny-zoos", shards=2)


@pytest.fixture(scope="module")
def info(repo) -> ConfigInfo:
    return config_info(repo, CONFIG)


@pytest.fixture(scope="module")
def train(repo):
    return load_dataset(str(repo), CONFIG, split="train")


class Noise:
    """A transform in the modelzoos.transforms convention: (batch [B, D], rng) → new batch."""

    def __call__(self, batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return batch + rng.standard_normal(batch.shape, dtype=np.float32)


def _keys(batch) -> list[tuple[int, int]]:
    return list(zip(batch["model_id"].tolist(), batch["epoch"].tolist(), strict=True))


def _rows(loader) -> dict[tuple[int, int], np.ndarray]:
    """Every row of one epoch of ``loader``; fails on a duplicate."""
    seen = {}
    for batch in loader:
        assert batch["weights"].dtype == torch.float32 and batch["weights"].ndim == 2
        for key, w in zip(_keys(batch), batch["weights"].numpy(), strict=True):
            assert key not in seen, f"row {key} delivered twice"
            seen[key] = w
    return seen


# ---------------------------------------------------------------------------------------------------------
# zoo.json, modules, accuracy
# ---------------------------------------------------------------------------------------------------------


def test_config_info_rebuilds_layout_and_spec(info, zoo_dir, train, source):
    assert info.config == CONFIG and info.zoo == get_zoo(CONFIG)
    assert info.layout == zoo_dir.layout == get_zoo(CONFIG).layout
    assert info.layout.size == 2464
    assert sorted(i for ids in info.splits.values() for i in ids) == list(range(8)) and info.num_models == 8
    assert info.num_rows["train"] == len(train) == 3 * len(info.splits["train"])
    assert info.epochs == [0, 1, 2]
    row = train[4]
    assert info.split_of(row["model_id"]) == "train"
    state = info.layout.unflatten(torch.tensor(row["weights"]))
    expected = zoo_dir.state(row["model_id"], row["epoch"])
    assert state.keys() == expected.keys()
    assert all(torch.equal(state[k], expected[k]) for k in state)


def test_config_info_errors_name_the_file(repo, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data/nope/zoo\.json.*configs with a zoo\.json: digits_cnn_seed"):
        config_info(repo, "nope")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        config_info(tmp_path / "missing", CONFIG)
    bad = tmp_path / "bad"
    (bad / "data" / CONFIG).mkdir(parents=True)
    path = bad / "data" / CONFIG / "zoo.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match=rf"{path}.*not valid JSON"):
        config_info(bad, CONFIG)
    raw = json.loads((repo / "data" / CONFIG / "zoo.json").read_text())
    path.write_text(json.dumps({**raw, "format_version": 2}))
    with pytest.raises(ValueError, match="format_version 2"):
        config_info(bad, CONFIG)
    path.write_text(json.dumps({**raw, "layout": raw["layout"][:-1]}))
    with pytest.raises(ValueError, match="not the layout"):
        config_info(bad, CONFIG)


def test_config_info_from_a_hub_id(repo, monkeypatch):
    calls = []

    def fake_download(repo_id, filename, *, repo_type, revision):
        calls.append((repo_id, filename, repo_type, revision))
        return str(repo / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    info = config_info("hf://datasets/org/model-zoos", CONFIG, revision="v1")
    assert calls == [("org/model-zoos", f"data/{CONFIG}/zoo.json", "dataset", "v1")]
    assert info.layout.size == 2464


def test_config_info_of_an_uncached_hub_id_offline():
    with pytest.raises(FileNotFoundError, match="not in the local cache"):
        config_info("org/not-cached", CONFIG)
    with pytest.raises(FileNotFoundError, match="neither an existing folder nor a Hub dataset id"):
        config_info("./no/such/folder", CONFIG)


def test_evaluate_row_reproduces_recorded_test_metrics(repo, info, train, digits_data):
    test = load_dataset(str(repo), CONFIG, split="test")
    rows = [train[0], train[4], train[len(train) - 1], test[2]]
    assert {r["epoch"] for r in rows} == {0, 1, 2}
    for row in rows:
        loss, acc = evaluate_row(row, info, data=digits_data)
        assert acc == row["test_acc"]
        assert loss == pytest.approx(row["test_loss"], abs=1e-6)
    loss, acc = evaluate_row(train[5], info)  # builds the image data itself
    assert (acc, loss) == (train[5]["test_acc"], pytest.approx(train[5]["test_loss"], abs=1e-6))


def test_build_module_from_rows_and_bare_weights(info, train, source):
    row = train[2]
    model = build_module(row, info)
    assert not model.training
    x = torch.randn(3, 1, 28, 28)
    bare = build_module(source[(row["model_id"], row["epoch"])], info)
    assert torch.equal(model(x), bare(x))
    numpy_row = train.with_format("numpy")[2]
    assert torch.equal(build_module(numpy_row, info)(x), model(x))
    with pytest.raises(ValueError, match="2464"):
        build_module(np.zeros(10, np.float32), info)
    with pytest.raises(ValueError, match="from zoo 'other'"):
        build_module({**row, "zoo": "other"}, info)


# ---------------------------------------------------------------------------------------------------------
# Map-style: WeightsDataset
# ---------------------------------------------------------------------------------------------------------


def test_weights_dataset_reads_batches_zero_copy(train, source):
    wd = WeightsDataset(train, columns=("weights", "model_id", "epoch", "zoo"), output="numpy")
    assert [b.num_rows for b in train.data.to_batches()][:2] == [2, 2]  # one record batch per row group
    inside = wd.__getitems__([2, 3])  # a contiguous range inside one record batch: a view of the mmap
    assert inside["weights"].shape == (2, 2464) and inside["weights"].dtype == np.float32
    assert not inside["weights"].flags.writeable
    # one row at offset 1 of its record batch: a sliced ListArray's .values would give row 2's weights
    (key,) = _keys(wd.__getitems__([3]))
    np.testing.assert_array_equal(wd.__getitems__([3])["weights"][0], source[key])
    batch = wd.__getitems__([3, 4, 5])  # across record batches: one concatenation
    for key, w in zip(_keys(batch), batch["weights"], strict=True):
        np.testing.assert_array_equal(w, source[key])
    assert _keys(batch) == [(train[i]["model_id"], train[i]["epoch"]) for i in (3, 4, 5)]
    assert batch["zoo"] == [CONFIG] * 3
    gathered = wd.__getitems__([7, 1, 12])  # shuffled indices: one gather
    assert _keys(gathered) == [(train[i]["model_id"], train[i]["epoch"]) for i in (7, 1, 12)]
    for key, w in zip(_keys(gathered), gathered["weights"], strict=True):
        np.testing.assert_array_equal(w, source[key])
    shuffled = train.shuffle(seed=0)  # an indices mapping: read through it
    batch = WeightsDataset(shuffled, columns=("weights", "model_id", "epoch")).__getitems__([0, 1, 2])
    assert _keys(batch) == [(shuffled[i]["model_id"], shuffled[i]["epoch"]) for i in range(3)]
    for key, w in zip(_keys(batch), batch["weights"].numpy(), strict=True):
        np.testing.assert_array_equal(w, source[key])
    one = WeightsDataset(train)[6]
    assert isinstance(one["weights"], torch.Tensor) and one["weights"].shape == (2464,)
    with pytest.raises(KeyError, match="unknown or no columns"):
        WeightsDataset(train, columns=("weights", "nope"))
    with pytest.raises(IndexError, match="out of range"):
        wd.__getitems__([0, len(train)])


def test_weights_dataset_pickles_by_path(train):
    wd = WeightsDataset(train, columns=("weights", "test_acc"))
    blob = pickle.dumps(wd)
    assert len(blob) < 20_000 < len(train) * 2464 * 4  # the memory-mapped table pickles as its file path
    again = pickle.loads(blob)
    assert torch.equal(again.__getitems__([0, 1])["weights"], wd.__getitems__([0, 1])["weights"])


@pytest.mark.parametrize("shuffle", [False, True])
def test_dataloader_workers_yield_every_row_once(train, source, shuffle):
    wd = WeightsDataset(train, columns=("weights", "model_id", "epoch", "test_acc"))
    loader = DataLoader(wd, batch_size=4, shuffle=shuffle, num_workers=2, collate_fn=collate_weights)
    batch = next(iter(loader))
    assert batch["test_acc"].dtype == torch.float64 and batch["model_id"].dtype == torch.int64
    seen = _rows(loader)
    assert len(seen) == len(train) == 15
    assert set(seen) == {(r["model_id"], r["epoch"]) for r in train.select_columns(["model_id", "epoch"])}
    for key, w in seen.items():
        np.testing.assert_array_equal(w, source[key])


def _noise_batches(train, source, seed: int, num_workers: int) -> list[np.ndarray]:
    """The noise the transform added to each batch of one epoch, in batch order."""
    torch.manual_seed(seed)
    wd = WeightsDataset(train, columns=("weights", "model_id", "epoch"), transform=Noise())
    loader = DataLoader(wd, batch_size=4, shuffle=True, num_workers=num_workers, collate_fn=collate_weights)
    out = []
    for batch in loader:
        clean = np.stack([source[k] for k in _keys(batch)])
        out.append(batch["weights"].numpy() - clean)
    return out


def test_transform_draws_per_worker_and_reproducibly(train, source):
    first = _noise_batches(train, source, seed=0, num_workers=2)
    assert len(first) == 4 and all(np.abs(n).max() > 0.1 for n in first)
    # batches 0 and 1 are the first batch of worker 0 and of worker 1: independent draws
    assert not np.allclose(first[0], first[1])
    second = _noise_batches(train, source, seed=0, num_workers=2)
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    other = _noise_batches(train, source, seed=1, num_workers=2)
    assert not np.allclose(first[0], other[0])
    # without workers too: same torch seed, same batches (also within one process)
    main = _noise_batches(train, source, seed=0, num_workers=0)
    assert all(np.array_equal(a, b) for a, b in zip(main, _noise_batches(train, source, 0, 0), strict=True))


# ---------------------------------------------------------------------------------------------------------
# Streaming
# ---------------------------------------------------------------------------------------------------------


def test_streaming_loader_with_workers(repo2, source):
    stream = load_zoo(repo2, CONFIG, split="train", streaming=True)
    assert isinstance(stream, datasets.IterableDataset) and stream.num_shards == 2
    loader = iterable_loader(stream, 4, columns=["weights", "model_id", "epoch"], num_workers=2)
    seen = _rows(loader)
    assert len(seen) == 15
    for key, w in seen.items():
        np.testing.assert_array_equal(w, source[key])

    def noisy(seed: int) -> dict:
        torch.manual_seed(seed)
        loader = iterable_loader(stream, 4, columns=["weights", "model_id", "epoch"], transform=Noise(),
                                 num_workers=2, shuffle_buffer=8, seed=3)
        return {k: w - source[k] for k, w in _rows(loader).items()}

    first, again = noisy(0), noisy(0)
    assert first.keys() == seen.keys() and all(np.abs(n).max() > 0.1 for n in first.values())
    assert all(np.array_equal(first[k], again[k]) for k in first)


def test_streaming_workers_beyond_the_files_reshard_by_row_group(repo, source):
    stream = load_zoo(repo, CONFIG, split="train", streaming=True)  # one Parquet file
    assert stream.num_shards == 1
    loader = iterable_loader(stream, 4, columns=["weights", "model_id", "epoch"], num_workers=2)
    assert loader.num_workers == 2 and loader.dataset.num_shards >= 2
    seen = _rows(loader)
    assert len(seen) == 15 and all(np.array_equal(w, source[k]) for k, w in seen.items())
    with pytest.warns(UserWarning, match="only 8 shard"):  # 15 rows in row groups of 2: 8 shards at most
        assert iterable_loader(stream, 4, num_workers=9).num_workers == 8


def test_default_collate_gives_the_collate_weights_batch(train):
    wd = WeightsDataset(train, columns=("weights", "model_id", "zoo", "test_acc"))
    plain, fast = (next(iter(DataLoader(wd, batch_size=4, **kw))) for kw in ({}, {"collate_fn": collate_weights}))
    assert plain.keys() == fast.keys() and plain["zoo"] == fast["zoo"] == [CONFIG] * 4
    for key in ("weights", "model_id", "test_acc"):
        assert plain[key].dtype == fast[key].dtype and torch.equal(plain[key], fast[key])
    batch = wd.__getitems__([0, 1])
    assert len(batch) == 2 and batch[1]["model_id"] == batch["model_id"][1] and list(batch.columns) == list(wd.columns)


class Tokenise:
    """A transform returning Tokens: chunks of 100 weights, a window of the first 3 tokens."""

    def __call__(self, batch: np.ndarray, rng: np.random.Generator) -> Tokens:
        values = batch[:, :300].reshape(len(batch), 3, 100) * rng.uniform(0.5, 1.5)
        positions = np.broadcast_to(np.stack([np.arange(3), np.zeros(3, int), np.arange(3)], 1), (len(batch), 3, 3))
        return Tokens(values, np.ones(values.shape, bool), positions.astype(np.int64))


def test_a_transform_may_return_tokens_with_their_own_dtypes(repo, train):
    wd = WeightsDataset(train, columns=("weights", "model_id"), transform=Tokenise())
    stream = load_zoo(repo, CONFIG, split="train", streaming=True)
    for loader in (DataLoader(wd, batch_size=4, collate_fn=collate_weights),
                   iterable_loader(stream, 4, columns=["weights", "model_id"], transform=Tokenise())):
        batch = next(iter(loader))
        assert batch["weights"].shape == (4, 3, 100) and batch["weights"].dtype == torch.float32
        assert batch["mask"].dtype == torch.bool and batch["positions"].dtype == torch.int64
        assert batch["positions"][0, 2].tolist() == [2, 0, 2] and batch["model_id"].shape == (4,)
    with pytest.raises(ValueError, match="clash"):
        WeightsDataset(train.rename_column("epoch", "mask"), columns=("weights", "mask"), transform=Tokenise())


def test_collate_weights_stacks_rows(train):
    rows = [train.with_format("numpy")[i] for i in range(3)]
    batch = collate_weights(rows)
    assert batch["weights"].shape == (3, 2464) and batch["weights"].dtype == torch.float32
    assert batch["epoch"].tolist() == [r["epoch"] for r in rows] and batch["zoo"] == [CONFIG] * 3
    assert batch["nonfinite"].dtype == torch.bool


def test_split_dataset_by_node_partitions_rows(repo2):
    stream = load_zoo(repo2, CONFIG, split="train", streaming=True, columns=["model_id", "epoch"])
    everything = [(r["model_id"], r["epoch"]) for r in stream]
    parts = [[(r["model_id"], r["epoch"]) for r in split_dataset_by_node(stream, rank=rank, world_size=2)]
             for rank in range(2)]
    assert all(parts) and not set(parts[0]) & set(parts[1])
    assert sorted(parts[0] + parts[1]) == sorted(everything) and len(everything) == 15
    via_loader = [
        [k for b in iterable_loader(stream, 4, rank=rank, world_size=2) for k in _keys(b)] for rank in range(2)
    ]
    assert via_loader == parts
    with pytest.warns(UserWarning, match="do not divide"):
        iterable_loader(stream, 4, rank=0, world_size=3)


# ---------------------------------------------------------------------------------------------------------
# load_zoo
# ---------------------------------------------------------------------------------------------------------


def test_load_zoo_columns_and_filters(repo, info):
    table = load_zoo(repo, CONFIG, split="train", columns=["model_id", "epoch", "test_acc"])
    assert table.column_names == ["model_id", "epoch", "test_acc"] and len(table) == 15
    last = load_zoo(repo, CONFIG, split="train", filters=[("epoch", "==", 2)])
    assert set(last["epoch"]) == {2} and sorted(last["model_id"]) == info.splits["train"]
    assert last.features["weights"] == datasets.List(datasets.Value("float32"), length=2464)
    streamed = load_zoo(repo, CONFIG, split="test", streaming=True, columns=["model_id", "epoch"],
                        filters=[("epoch", "==", 0)])
    assert [(r["model_id"], r["epoch"]) for r in streamed] == [(m, 0) for m in info.splits["test"]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        whole = load_zoo(repo, CONFIG)
    assert {s: len(whole[s]) for s in SPLITS} == info.num_rows
    assert set(load_dataset(str(repo))) == set(SPLITS)  # the README's default config


def test_load_zoo_reads_a_rebuilt_local_folder_afresh(zoo_dir, rows_of, tmp_path):
    from modelzoos.publish import build_repo

    early = rows_of(zoo_dir.path, lambda t: t.column("epoch").to_numpy() <= 1)  # the same zoo, epochs 0..1 only
    repo = tmp_path / "repo"
    for zd, epochs in ((early, 1), (zoo_dir.path, 3)):  # the same folder, card and config, other rows
        build_repo([zd], repo, progress=False)
        rows = load_zoo(repo, "digits_cnn_seed", split="train")
        assert len(rows) == 14 * (epochs + 1)  # 14 training models × epochs 0..E
        assert sorted(set(rows["epoch"])) == list(range(epochs + 1))
