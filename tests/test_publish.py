"""modelzoos.publish: zoo directories → Hub repository folder (docs/hub_format.md), its card and its validation."""

import json
import math
import random
import re
import shutil
import textwrap
from pathlib import Path

import datasets
import huggingface_hub
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from huggingface_hub import DatasetCard

from modelzoos import card, manifest, publish
from modelzoos.catalogue import check_name, get_zoo
from modelzoos.cli import main
from modelzoos.export import METADATA_SCHEMA, ZooDir, ZooFileError
from modelzoos.generate import generate
from modelzoos.repository import (
    COLUMNS,
    MAX_FILE_BYTES,
    ROW_GROUP_BYTES,
    SPLITS,
    ConfigInfo,
    split_models,
    validate_repo,
    vector_leaf,
)
from modelzoos.training import METRICS

OTHER = "digits_tiny_relu"  # the second zoo: a user spec, 8 models


@pytest.fixture(scope="module")
def zoo_a(zoo_dir) -> ZooDir:
    """The suite's digits_cnn_seed zoo (conftest): 20 models × epochs 0..3 (80 states)."""
    return zoo_dir


@pytest.fixture(scope="module")
def zoo_b(tmp_path_factory) -> ZooDir:
    """A user zoo extending digits_cnn_seed under another name: 4 seeds × 2 dropouts, epoch 0 only (8 states)."""
    root = tmp_path_factory.mktemp("zoo")
    spec = root / f"{OTHER}.toml"
    spec.write_text(textwrap.dedent(f"""
        extends = "digits_cnn_seed"
        name = "{OTHER}"
        description = "A tiny ReLU digits zoo for the tests"
        source = "tune_zoo_test_dir"
        notes = ["A test note about a deviation."]
        [grid]
        activation = ["relu"]
        dropout = [0.0, 0.5]
        [seeds]
        range = [1, 4]
    """))
    return generate(get_zoo(spec), root / "b", models=8, epochs=0, progress=False)


@pytest.fixture(scope="module")
def repo(tmp_path_factory, zoo_a, zoo_b) -> Path:
    """Both zoos built into one repository folder (B given first: the card still defaults to A)."""
    path = tmp_path_factory.mktemp("repo") / "modelzoos"
    assert publish.build_repo([zoo_b.path, zoo_a.path], path, progress=False) == [OTHER, "digits_cnn_seed"]
    return path


@pytest.fixture
def offline(monkeypatch, tmp_path) -> Path:
    """HF offline, every cache in tmp_path; returns the datasets cache_dir to pass to load_dataset."""
    cache = tmp_path / "hf"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(cache))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache / "datasets"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache / "datasets")
    return cache / "datasets"


def _files(repo: Path, config: str | None = None) -> list[Path]:
    return sorted((repo / "data" / (config or "")).rglob("*.parquet"))


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _zoo_rows(zd: ZooDir) -> dict[tuple[int, int], tuple[dict, np.ndarray]]:
    """(model_id, epoch) → (metadata row, weights) of a zoo directory."""
    weights = {i: w.numpy() for i, w in zd.weights()}
    return {(int(r.model_id), int(r.epoch)): (r._asdict(), weights[i]) for i, r in zip(zd.metadata.index,
                                                                                       zd.metadata.itertuples(),
                                                                                       strict=True)}


# ---------------------------------------------------------------------------------------------------------
# Round trip through datasets
# ---------------------------------------------------------------------------------------------------------


def test_load_dataset_reproduces_every_row_bitwise(repo, zoo_a, zoo_b, offline):
    assert datasets.get_dataset_config_names(str(repo)) == ["digits_cnn_seed", OTHER]
    assert datasets.get_dataset_default_config_name(str(repo)) == "digits_cnn_seed"
    for zd in (zoo_a, zoo_b):
        expected = _zoo_rows(zd)
        seen = set()
        for split in SPLITS:
            ds = datasets.load_dataset(str(repo), zd.zoo.name, split=split, cache_dir=str(offline))
            assert ds.features == ConfigInfo.read(repo / "data" / zd.zoo.name / "zoo.json").features
            table = ds.with_format("numpy")[:]
            keys = list(zip(table["model_id"].tolist(), table["epoch"].tolist(), strict=True))
            assert keys == sorted(keys), "rows sorted by (model_id, epoch)"
            for k, key in enumerate(keys):
                meta, weights = expected[key]
                got = table["weights"][k]
                assert got.dtype == np.float32 and np.array_equal(got.view(np.uint32), weights.view(np.uint32))
                for col in [f.name for f in COLUMNS]:
                    value = table[col][k]
                    if isinstance(meta[col], float) and math.isnan(meta[col]):
                        assert math.isnan(value), col
                    else:
                        assert value == meta[col], (col, key)
            seen.update(keys)
        assert seen == set(expected), "every state of the zoo is published exactly once"


def test_streaming_columns_and_filters(repo, zoo_a, offline):
    cfg = json.loads((repo / "data" / "digits_cnn_seed" / "zoo.json").read_text())
    stream = datasets.load_dataset(str(repo), "digits_cnn_seed", split="train", streaming=True, cache_dir=str(offline))
    rows = list(stream)
    assert len(rows) == cfg["num_rows"]["train"] == 14 * 4
    assert len(rows[0]["weights"]) == zoo_a.layout.size
    meta = datasets.load_dataset(str(repo), "digits_cnn_seed", split="train", columns=["model_id", "epoch", "test_acc"],
                                 cache_dir=str(offline))
    assert meta.column_names == ["model_id", "epoch", "test_acc"] and len(meta) == 14 * 4
    last = datasets.load_dataset(str(repo), "digits_cnn_seed", split="test", filters=[("epoch", "==", 3)],
                                 cache_dir=str(offline))
    assert set(last["epoch"]) == {3} and sorted(last["model_id"]) == cfg["splits"]["test"]
    streamed = datasets.load_dataset(str(repo), "digits_cnn_seed", split="validation", streaming=True,
                                     columns=["model_id", "epoch"], filters=[("epoch", "==", 3)],
                                     cache_dir=str(offline))
    assert list(streamed) == [{"model_id": m, "epoch": 3} for m in cfg["splits"]["validation"]]


# ---------------------------------------------------------------------------------------------------------
# Splits and the files' format
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [7, 10, 11, 100, 1000, 2560])
def test_split_recipe(n):
    ids = list(range(n))
    random.Random(42).shuffle(ids)
    a, b = math.floor(0.7 * n + 1e-9), math.floor(0.15 * n + 1e-9)
    splits = split_models(range(n))
    assert splits == {"train": sorted(ids[:a]), "validation": sorted(ids[a : a + b]), "test": sorted(ids[a + b :])}
    assert split_models(reversed(range(n))) == splits  # depends on the ids, not their order


def test_splits_by_model(repo, zoo_a, zoo_b):
    for zd in (zoo_a, zoo_b):
        cdir = repo / "data" / zd.zoo.name
        cfg = json.loads((cdir / "zoo.json").read_text())
        n = zd.metadata.model_id.nunique()
        assert [len(cfg["splits"][s]) for s in SPLITS] == [n * 7 // 10, n * 15 // 100,
                                                                   n - n * 7 // 10 - n * 15 // 100]
        owner = {}
        for split in SPLITS:
            ids = set()
            for f in cdir.glob(f"{split}-*.parquet"):
                ids |= set(pq.read_table(f, columns=["model_id"]).column("model_id").to_pylist())
            assert ids == set(cfg["splits"][split])
            for m in ids:
                assert owner.setdefault(m, split) == split, f"model {m} in {owner[m]} and {split}"
        assert sorted(owner) == sorted(zd.metadata.model_id.unique())
        assert cfg["num_models"] == n and cfg["epochs"] == sorted(zd.metadata.epoch.unique())
        assert cfg["layout"] == zd.info["layout"] and cfg["zoo"] == json.loads(json.dumps(zd.zoo.to_dict()))
        assert cfg["data"] == zd.info["data"] and cfg["config"] == zd.zoo.name
        epochs = len(cfg["epochs"])
        assert cfg["num_rows"] == {s: len(cfg["splits"][s]) * epochs for s in SPLITS}


def test_parquet_encoding_and_metadata(repo):
    files = _files(repo)
    assert len(files) == 6
    for f in files:
        cfg = json.loads((f.parent / "zoo.json").read_text())
        info = ConfigInfo.from_json(cfg, str(f.parent / "zoo.json"))
        dim = info.layout.size
        pf = pq.ParquetFile(f)
        md = pf.metadata
        assert md.num_row_groups >= min(2, md.num_rows)
        for g in range(md.num_row_groups):
            rg = md.row_group(g)
            assert rg.num_rows * dim * 4 <= ROW_GROUP_BYTES
            cols = {rg.column(i).path_in_schema: rg.column(i) for i in range(rg.num_columns)}
            w = cols[vector_leaf("weights")]
            assert "BYTE_STREAM_SPLIT" in w.encodings and not w.has_dictionary_page
            assert "PLAIN_DICTIONARY" not in w.encodings and "RLE_DICTIONARY" not in w.encodings
            assert all(c.compression == "ZSTD" for c in cols.values())
            assert w.has_offset_index and w.has_column_index  # page index
        schema = pf.schema_arrow
        assert schema.names == [f.name for f in METADATA_SCHEMA if not f.name.startswith("weights_")] + ["weights"]
        assert datasets.Features.from_arrow_schema(schema) == info.features
        hf = json.loads(schema.metadata[b"huggingface"])
        assert hf == {"info": {"features": info.features.to_dict()}}
        assert json.loads(schema.metadata[b"modelzoos"]) == cfg


def test_plan_shards_respects_bounds():
    rng = random.Random(0)
    for _ in range(300):
        rows, dim = rng.randint(0, 5000), rng.choice([2464, 2864, 10853, 11_173_962])
        rgb, mfb = rng.randint(1, 10**8), rng.randint(1, 10**9)
        plan = publish.plan_shards(rows, dim, row_group_bytes=rgb, max_file_bytes=mfb)
        assert sum(map(sum, plan)) == rows and len(plan) >= 1
        for groups in plan:
            file_rows = sum(groups)
            assert file_rows <= 1 or file_rows * (dim * 4 + publish.ROW_OVERHEAD_BYTES) <= mfb
            assert all(g >= 1 and (g == 1 or g * dim * 4 <= rgb) for g in groups)
            assert len(groups) >= 2 or file_rows <= 1
    resnet = publish.plan_shards(1000 * 51, 11_173_962)  # ResNet-18 train split: one row per row group
    assert {g for f in resnet for g in f} == {1} and max(map(len, resnet)) * 11_173_962 * 4 <= MAX_FILE_BYTES


def test_small_bounds_give_several_shards_and_row_groups(tmp_path, zoo_a, monkeypatch, offline):
    """The build holds one row group at a time: every table built or written has ≤ the row-group rows."""
    dim = zoo_a.layout.size
    group_rows = 3
    built, written = [], []
    row_group = publish._row_group

    def counting_row_group(*args, **kwargs):
        table = row_group(*args, **kwargs)
        built.append(table.num_rows)
        return table

    class CountingWriter(pq.ParquetWriter):
        def write_table(self, table, *args, **kwargs):
            written.append(table.num_rows)
            return super().write_table(table, *args, **kwargs)

    monkeypatch.setattr(publish, "_row_group", counting_row_group)
    monkeypatch.setattr(publish.pq, "ParquetWriter", CountingWriter)
    max_file = math.ceil(8 * (dim * 4 + publish.ROW_OVERHEAD_BYTES) / publish.SHARD_HEADROOM)  # 8 rows per file
    repo = tmp_path / "repo"
    publish.build_repo([zoo_a.path], repo, progress=False, row_group_bytes=group_rows * dim * 4,
                       max_file_bytes=max_file)
    assert max(built) <= group_rows and max(written) <= group_rows
    assert sum(built) == sum(written) == len(zoo_a)
    names = sorted(f.name for f in _files(repo))  # 14 / 3 / 3 models × 4 epochs: 56 / 12 / 12 rows, 8 per file
    assert names == sorted([*(f"train-{i:05d}-of-00007.parquet" for i in range(7)),
                            *(f"{s}-{i:05d}-of-00002.parquet" for s in ("validation", "test") for i in range(2))])
    for f in _files(repo):
        md = pq.ParquetFile(f).metadata
        assert md.num_rows <= 8 and md.num_row_groups >= 2
        assert all(md.row_group(g).num_rows <= group_rows for g in range(md.num_row_groups))
    assert validate_repo(repo) == ["digits_cnn_seed"]
    stream = datasets.load_dataset(str(repo), "digits_cnn_seed", split="train", streaming=True, cache_dir=str(offline))
    assert stream.num_shards == 7
    assert [(r["model_id"], r["epoch"]) for r in stream] == [
        (m, e) for m in json.loads((repo / "data/digits_cnn_seed/zoo.json").read_text())["splits"]["train"]
        for e in range(4)]


# ---------------------------------------------------------------------------------------------------------
# Adding and replacing configs
# ---------------------------------------------------------------------------------------------------------


def test_adding_a_config_keeps_the_others_and_rebuilding_replaces(tmp_path, zoo_a, zoo_b):
    repo = tmp_path / "repo"
    publish.build_repo([zoo_a.path], repo, progress=False, row_group_bytes=3 * zoo_a.layout.size * 4,
                       max_file_bytes=10 * zoo_a.layout.size * 4)
    before = _snapshot(repo / "data" / "digits_cnn_seed")
    assert len([n for n in before if n.startswith("train-")]) > 1
    assert publish.build_repo([zoo_b.path], repo, progress=False) == [OTHER]
    assert _snapshot(repo / "data" / "digits_cnn_seed") == before
    assert validate_repo(repo) == ["digits_cnn_seed", OTHER]
    card = (repo / "README.md").read_text()
    assert "### digits_cnn_seed" in card and f"### {OTHER}" in card

    publish.build_repo([zoo_a.path], repo, progress=False)  # default bounds: one file per split
    after = _snapshot(repo / "data" / "digits_cnn_seed")
    assert sorted(after) == ["test-00000-of-00001.parquet", "train-00000-of-00001.parquet",
                             "validation-00000-of-00001.parquet", "zoo.json"]
    assert after["zoo.json"] == before["zoo.json"]
    assert validate_repo(repo) == ["digits_cnn_seed", OTHER]
    assert not [p for p in repo.rglob(".*")], "no temporary file left behind"


# ---------------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../evil", "a/b", "a\\b", "Upper", "_x", "", "x.y", "x-y", " x", None])
def test_config_name_check(name):
    with pytest.raises(ValueError, match=r"somewhere/zoo\.json: name .* is invalid; a zoo or config name must match"):
        check_name(name, "somewhere/zoo.json")
    assert check_name("cifar10_cnn_seed", "x") == "cifar10_cnn_seed"


def test_two_zoo_dirs_for_one_config(tmp_path, zoo_a):
    twin = tmp_path / "twin"
    shutil.copytree(zoo_a.path, twin)
    with pytest.raises(ValueError, match="both hold zoo 'digits_cnn_seed'") as err:
        publish.build_repo([zoo_a.path, twin], tmp_path / "repo", progress=False)
    assert str(zoo_a.path) in str(err.value) and str(twin) in str(err.value)
    info = json.loads((twin / "zoo.json").read_text())
    info["layout"][-1]["name"] = "head.bias"
    (twin / "zoo.json").write_text(json.dumps(info))
    manifest.write(twin, manifest.read(twin) | manifest.record(twin, [twin / "zoo.json"]))  # as if generated so
    with pytest.raises(ValueError, match="different weight layouts") as err:
        publish.build_repo([zoo_a.path, twin], tmp_path / "repo", progress=False)
    assert str(zoo_a.path) in str(err.value) and str(twin) in str(err.value)
    assert not (tmp_path / "repo").exists(), "nothing written before the inputs are checked"


def test_damaged_weights_file_is_named(tmp_path, zoo_a):
    broken = tmp_path / "broken"
    shutil.copytree(zoo_a.path, broken)
    victim = broken / zoo_a.metadata.weights_file.iloc[-1]
    victim.write_bytes(victim.read_bytes()[:100])
    with pytest.raises(ZooFileError, match="differ from its manifest") as err:
        publish.build_repo([broken], tmp_path / "repo", progress=False)
    assert f"{victim}: 100 bytes" in str(err.value) and f"Fix: delete {victim.parent}" in str(err.value)
    assert not list((tmp_path / "repo").rglob("*.parquet")) and not list((tmp_path / "repo").rglob(".*"))


def test_too_few_models(tmp_path, zoo_a, rows_of):
    small = rows_of(zoo_a.path, lambda t: t.column("model_id").to_numpy() < 6)
    with pytest.raises(ValueError, match="at least 7"):
        publish.build_repo([small], tmp_path / "repo", progress=False)


@pytest.fixture
def repo_copy(tmp_path, repo) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(repo, copy)
    return copy


def test_validate_repo_accepts_the_build(repo):
    assert validate_repo(repo) == ["digits_cnn_seed", OTHER]


def test_validate_repo_names_a_corrupt_parquet_file(repo_copy):
    victim = _files(repo_copy, "digits_cnn_seed")[0]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable Parquet file") as err:
        validate_repo(repo_copy)
    assert str(victim) in str(err.value)


def test_validate_repo_rejects_two_defaults(repo_copy):
    readme = repo_copy / "README.md"
    entry = f"- config_name: {OTHER}\n"
    readme.write_text(readme.read_text().replace(entry, entry + "  default: true\n"))
    with pytest.raises(ValueError, match="exactly one config must have `default: true`, found 2"):
        validate_repo(repo_copy)


def test_validate_repo_lists_every_problem(repo_copy):
    (repo_copy / "data" / OTHER / "zoo.json").unlink()
    for f in (repo_copy / "data" / "digits_cnn_seed").glob("validation-*.parquet"):
        f.unlink()
    (repo_copy / "data" / "stray").mkdir()
    with pytest.raises(ValueError) as err:
        validate_repo(repo_copy)
    msg = str(err.value)
    assert f"{repo_copy / 'data' / OTHER / 'zoo.json'} is missing" in msg
    assert "no validation-*.parquet file" in msg
    assert "stray is not listed" in msg


def test_validate_repo_rejects_a_model_in_two_splits(repo_copy):
    path = repo_copy / "data" / "digits_cnn_seed" / "zoo.json"
    cfg = json.loads(path.read_text())
    cfg["splits"]["test"].append(cfg["splits"]["train"][0])
    path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=f"model {cfg['splits']['train'][0]} is in both train and test"):
        validate_repo(repo_copy)


def test_validate_repo_rejects_a_bad_config_name(repo_copy):
    readme = repo_copy / "README.md"
    readme.write_text(readme.read_text().replace(f"config_name: {OTHER}", "config_name: ../evil"))
    with pytest.raises(ValueError, match=re.escape("name '../evil' is invalid")):
        validate_repo(repo_copy)


# ---------------------------------------------------------------------------------------------------------
# The card
# ---------------------------------------------------------------------------------------------------------


def test_card_yaml(repo):
    text = (repo / "README.md").read_text()
    assert text.startswith("---\n")
    meta = yaml.safe_load(text.split("\n---\n")[0].removeprefix("---\n"))
    assert meta["license"] == "cc-by-4.0" and meta["pretty_name"] == "Model Zoos"
    assert meta["size_categories"] == ["n<1K"]
    assert {"tabular-regression", "tabular-classification"} <= set(meta["task_categories"])
    assert {"weight-space-learning", "model-zoo"} <= set(meta["tags"])
    assert [c["config_name"] for c in meta["configs"]] == ["digits_cnn_seed", OTHER]
    assert [c.get("default", False) for c in meta["configs"]] == [True, False]
    for c in meta["configs"]:
        name = c["config_name"]
        assert c["data_files"] == [{"split": s, "path": f"data/{name}/{s}-*.parquet"} for s in SPLITS]
    card = DatasetCard(text)
    assert card.data.license == "cc-by-4.0" and card.data.pretty_name == "Model Zoos"
    assert card.data.size_categories == ["n<1K"]
    assert [c["config_name"] for c in card.data.to_dict()["configs"]] == ["digits_cnn_seed", OTHER]
    assert "### digits_cnn_seed" in card.text


def test_card_body_describes_every_config(repo, zoo_a, zoo_b):
    text = (repo / "README.md").read_text()
    sections = text.split("\n### ")[1:]
    assert [s.split("\n", 1)[0] for s in sections] == ["digits_cnn_seed", OTHER]
    for zd, section in zip((zoo_a, zoo_b), sections, strict=True):
        start, end = f"<!-- config:{zd.zoo.name} start -->", f"<!-- config:{zd.zoo.name} end -->"
        assert text.count(start) == text.count(end) == 1 and text.index(start) < text.index(end)
        cfg = json.loads((repo / "data" / zd.zoo.name / "zoo.json").read_text())
        zoo = zd.zoo
        assert zoo.description in section
        assert (f"`{zoo.source}`" if zoo.source else "not a zoo of the original release") in section
        assert f"{cfg['num_models']} models, {len(zd)} states" in section
        for split in SPLITS:
            assert f"| {split} | {len(cfg['splits'][split])} | {cfg['num_rows'][split]} |" in section
        assert f"`{zoo.architecture}`, {zoo.parameters:,} parameters" in section
        assert f"D = {zd.layout.size:,}" in section and "input 1×28×28" in section
        for axis, values in zoo.grid.items():
            assert f"| {axis} | {', '.join(f'`{v}`' for v in values)} |" in section
        assert f"seeds {zoo.seeds['range'][0]}…{zoo.seeds['range'][1]}" in section
        assert "Adam" in section and f"batch size {zoo.batch_size}" in section and f"{zoo.epochs} epochs" in section
        assert "constant learning rate" in section and "`digits` at 28×28" in section
        for note in zoo.notes:
            assert f"- {note}" in section
        for col in [*(f.name for f in COLUMNS), "weights"]:
            assert f"| `{col}` |" in section
        assert f"fixed_size_list<float32>[{zd.layout.size}]" in section
        for entry in zd.info["layout"]:
            assert f"| `{entry['name']}` |" in section
        assert f'load_dataset("ORG/NAME", "{zoo.name}", split="train")' in section
        assert "streaming=True" in section and "columns=[" in section
        assert f'filters=[("epoch", "==", {cfg["epochs"][-1]})]' in section
    assert "@inproceedings{schurholt2022modelzoos" in text and "```bibtex" in text


def test_render_card_with_repo_id(repo_copy):
    text = card.write(repo_copy, repo_id="someorg/model-zoos")
    assert 'load_dataset("someorg/model-zoos", "digits_cnn_seed", split="train")' in text
    assert "ORG/NAME" not in text and (repo_copy / "README.md").read_text() == text


@pytest.mark.parametrize(("rows", "label"), [(0, "n<1K"), (999, "n<1K"), (1000, "1K<n<10K"), (99_999, "10K<n<100K"),
                                             (2_585_360, "1M<n<10M")])
def test_size_category(rows, label):
    assert card.size_category(rows) == label


# ---------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------


def test_cli_build(tmp_path, zoo_a, capsys):
    repo = tmp_path / "out" / "repo"
    assert main(["build", str(zoo_a.path), "--repo", str(repo), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "digits_cnn_seed" in out and "train 56 rows (14 models)" in out and "test 12 rows (3 models)" in out
    assert "from modelzoos.loading import load_zoo" in out and "load_dataset(folder) caches by folder name" in out
    assert f'ds = load_zoo("{repo.resolve()}", "digits_cnn_seed", split="train")' in out
    assert " kB" in out or " MB" in out


def test_metrics_columns_cover_the_zoo_metrics():
    assert set(METRICS) <= {f.name for f in COLUMNS}
