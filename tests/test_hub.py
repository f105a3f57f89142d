"""Publishing with modelzoos.hub against the in-process fake Hub (tests/fakehub.py): round trips through
`datasets.load_dataset`, config-wise replacement, card merging, resuming, and the error paths."""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import types
from pathlib import Path

import datasets
import httpx2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from huggingface_hub import HfApi, HfFileSystem, constants
from huggingface_hub.errors import OfflineModeIsEnabled

from modelzoos import hub
from modelzoos.hub import HubAuthError, HubError, config_section, merge_card, push, split_card, validate_folder

pytest_plugins = ["fakehub"]  # the fake_hub fixture
# huggingface_hub's LFS upload passes `data=` to httpx2, which deprecates it; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")

REPO = "org/zoos"
SECRET = "hf_secretUsedOnlyByTheErrorMappingTests"
D = 6  # weights per row
SPLITS = ("train", "validation", "test")
FEATURES = datasets.Features({
    "zoo": datasets.Value("string"),
    **{c: datasets.Value("int64") for c in ("model_id", "epoch", "seed", "batch_size", "epochs")},
    **{c: datasets.Value("string") for c in ("init", "activation", "optimizer", "schedule")},
    **{c: datasets.Value("float64") for c in ("lr", "weight_decay", "dropout", "train_loss", "train_acc", "val_loss",
                                              "val_acc", "test_loss", "test_acc", "ggap")},
    "nonfinite": datasets.Value("bool"),
    "weights": datasets.List(datasets.Value("float32"), length=D),
})


PUBLISH_PROBLEMS = hub._publish_problems


@pytest.fixture(autouse=True)
def _only_own_validation(monkeypatch):
    """Keep these tests independent of modelzoos.publish.validate_repo (tested separately with a stand-in)."""
    monkeypatch.setattr(hub, "_publish_problems", lambda root: [])


# ---------------------------------------------------------------- repository folders (docs/hub_format.md)
def write_config(root: Path, name: str, models: int = 10, epochs: int = 1, shards: dict | None = None,
                 seed: int = 0) -> dict[str, pa.Table]:
    """data/<name>/{split}-NNNNN-of-MMMMM.parquet and zoo.json; returns the rows per split."""
    rng = np.random.default_rng(seed)
    ids = sorted(range(models))
    random.Random(42).shuffle(ids)
    n_train, n_val = int(0.7 * models), int(0.15 * models)
    split_ids = {"train": ids[:n_train], "validation": ids[n_train:n_train + n_val], "test": ids[n_train + n_val:]}
    folder = root / "data" / name
    folder.mkdir(parents=True, exist_ok=True)
    zoo_json = {"format_version": 1, "config": name, "zoo": {"name": name}, "layout": [
        {"name": "w", "shape": [D], "offset": 0, "kind": "weight"}], "data": {}, "splits": split_ids,
        "epochs": list(range(epochs + 1)), "num_models": models}
    tables = {}
    for split, mids in split_ids.items():
        rows = [(m, e) for m in sorted(mids) for e in range(epochs + 1)]
        n = len(rows)
        columns = {
            "zoo": [name] * n, "model_id": [m for m, _ in rows], "epoch": [e for _, e in rows],
            "seed": [m + 1 for m, _ in rows], "batch_size": [32] * n, "epochs": [epochs] * n,
            "init": ["kaiming_uniform"] * n, "activation": ["relu"] * n, "optimizer": ["adam"] * n,
            "schedule": ["constant"] * n, "lr": [1e-3] * n, "weight_decay": [0.0] * n, "dropout": [0.0] * n,
            **{c: rng.random(n).tolist() for c in ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss",
                                                   "test_acc", "ggap")},
            "nonfinite": [False] * n,
            "weights": pa.FixedSizeListArray.from_arrays(pa.array(rng.standard_normal(n * D), pa.float32()), D),
        }
        schema = FEATURES.arrow_schema
        schema = schema.with_metadata({**schema.metadata, b"modelzoos": json.dumps(zoo_json).encode()})
        table = pa.table(columns, schema=schema)
        tables[split] = table
        k = (shards or {}).get(split, 1)
        bounds = np.linspace(0, n, k + 1).astype(int)
        for i in range(k):
            pq.write_table(table.slice(bounds[i], bounds[i + 1] - bounds[i]),
                           folder / f"{split}-{i:05d}-of-{k:05d}.parquet", compression="zstd",
                           use_dictionary=False)
    zoo_json["num_rows"] = {s: t.num_rows for s, t in tables.items()}
    (folder / "zoo.json").write_text(json.dumps(zoo_json, indent=2))
    return tables


def write_card(root: Path, configs: list[str], default: str, intro: str = "Model zoos.") -> None:
    meta = {"license": "cc-by-4.0", "pretty_name": "Test zoos", "size_categories": ["n<1K"],
            "task_categories": ["other"], "tags": ["model-zoo"], "configs": [
                {"config_name": c, **({"default": True} if c == default else {}), "data_files": [
                    {"split": s, "path": f"data/{c}/{s}-*.parquet"} for s in SPLITS]} for c in configs]}
    sections = "\n\n".join(config_section(c, f"## {c}\n\nAbout {c}, built from {root.name}.") for c in configs)
    (root / "README.md").write_text(hub.join_card(meta, f"# Test zoos\n\n{intro}\n\n{sections}\n\n## Citation\n"))


def build_repo(root: Path, configs: dict[str, dict], default: str) -> dict[str, dict[str, pa.Table]]:
    tables = {name: write_config(root, name, **kwargs) for name, kwargs in configs.items()}
    write_card(root, list(configs), default)
    return tables


def local_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def remote_files(fake, repo=REPO) -> dict[str, bytes]:
    return {p: b for p, b in fake.files(repo).items() if p != ".gitattributes"}


def load(config: str, split: str = "train", **kwargs):
    HfFileSystem.clear_instance_cache()  # HfFileSystem caches listings per process
    return datasets.load_dataset(REPO, config, split=split, **kwargs)


def weights(rows) -> np.ndarray:
    return np.asarray([np.asarray(r["weights"], dtype=np.float32) for r in rows])


@pytest.fixture
def two_configs(tmp_path):
    root = tmp_path / "repo"
    tables = build_repo(root, {"alpha_cnn_seed": {"seed": 1}, "beta_cnn_seed": {"seed": 2, "shards": {"train": 2}}},
                        default="alpha_cnn_seed")
    return root, tables


# ---------------------------------------------------------------- round trip
def test_push_two_configs_then_load_dataset(fake_hub, two_configs):
    root, tables = two_configs
    url = push(root, REPO)
    assert url.startswith(f"{constants.ENDPOINT}/datasets/{REPO}/commit/")
    assert remote_files(fake_hub) == local_files(root)
    assert fake_hub.commits(REPO) == ["initial commit", "Upload alpha_cnn_seed, beta_cnn_seed with modelzoos"]

    HfFileSystem.clear_instance_cache()
    assert datasets.get_dataset_config_names(REPO) == ["alpha_cnn_seed", "beta_cnn_seed"]
    assert datasets.get_dataset_default_config_name(REPO) == "alpha_cnn_seed"
    for name, splits in tables.items():
        ds = load(name)
        expected = splits["train"]
        assert ds.num_rows == expected.num_rows
        assert ds.features["weights"] == datasets.List(datasets.Value("float32"), length=D)
        np.testing.assert_array_equal(ds.with_format("numpy")["weights"], weights(expected.to_pylist()))
        assert ds["model_id"] == expected.column("model_id").to_pylist()
    streamed = list(load("beta_cnn_seed", "test", streaming=True))
    np.testing.assert_array_equal(weights(streamed), weights(tables["beta_cnn_seed"]["test"].to_pylist()))


def test_fake_hub_serves_parquet_footers_by_range(fake_hub, two_configs):
    root, _ = two_configs
    push(root, REPO)
    path = f"datasets/{REPO}/data/alpha_cnn_seed/train-00000-of-00001.parquet"
    with HfFileSystem().open(path, block_size=1024) as f:
        meta = pq.ParquetFile(f).metadata
    assert meta.num_rows == pq.read_metadata(root / "data/alpha_cnn_seed/train-00000-of-00001.parquet").num_rows
    assert fake_hub.count("resolve", status=206) >= 1


def test_push_again_changes_nothing(fake_hub, two_configs):
    root, _ = two_configs
    push(root, REPO)
    commits, uploads = fake_hub.commits(REPO), fake_hub.count("lfs_upload")
    result = hub.push_folder(root, REPO)
    assert fake_hub.commits(REPO) == commits
    assert fake_hub.count("lfs_upload") == uploads
    assert result.uploaded == () and result.deleted == () and not result.card_updated and result.commits == 0
    assert len(result.unchanged) == len(local_files(root)) - 1  # all but README.md


# ---------------------------------------------------------------- one config at a time, card merging
def test_push_one_config_replaces_only_its_files_and_merges_the_card(fake_hub, two_configs, tmp_path):
    root, _ = two_configs
    push(root, REPO)
    before = remote_files(fake_hub)

    # A newer build of beta alone, with more train shards (so the old shard name goes stale) and its own default.
    new = tmp_path / "new"
    beta = build_repo(new, {"beta_cnn_seed": {"seed": 7, "models": 20, "shards": {"train": 3}}},
                      default="beta_cnn_seed")["beta_cnn_seed"]
    result = hub.push_folder(new, REPO, config="beta_cnn_seed")

    after = remote_files(fake_hub)
    alpha = {p: b for p, b in before.items() if p.startswith("data/alpha_cnn_seed/")}
    assert {p: b for p, b in after.items() if p.startswith("data/alpha_cnn_seed/")} == alpha
    assert {p: b for p, b in after.items() if p.startswith("data/beta_cnn_seed/")} == \
        {p: b for p, b in local_files(new).items() if p.startswith("data/beta_cnn_seed/")}
    assert "data/beta_cnn_seed/train-00000-of-00002.parquet" in result.deleted
    assert len(fake_hub.commits(REPO)) == 3  # one atomic commit for data, deletions and card

    meta, body = split_card(after["README.md"].decode())
    assert [c["config_name"] for c in meta["configs"]] == ["alpha_cnn_seed", "beta_cnn_seed"]
    assert [c["config_name"] for c in meta["configs"] if c.get("default")] == ["alpha_cnn_seed"]  # remote default
    assert "About alpha_cnn_seed, built from repo." in body  # remote-only section kept
    assert "About beta_cnn_seed, built from new." in body and "beta_cnn_seed, built from repo" not in body
    assert body.count("<!-- config:alpha_cnn_seed start -->") == body.count("<!-- config:beta_cnn_seed end -->") == 1

    HfFileSystem.clear_instance_cache()
    assert datasets.get_dataset_config_names(REPO) == ["alpha_cnn_seed", "beta_cnn_seed"]
    ds = load("beta_cnn_seed")
    np.testing.assert_array_equal(ds.with_format("numpy")["weights"], weights(beta["train"].to_pylist()))


def test_push_whole_folder_keeps_remote_only_configs(fake_hub, two_configs, tmp_path):
    root, _ = two_configs
    push(root, REPO)
    new = tmp_path / "gamma"
    build_repo(new, {"gamma_cnn_seed": {"seed": 3}}, default="gamma_cnn_seed")
    push(new, REPO)
    meta, body = split_card(fake_hub.files(REPO)["README.md"].decode())
    assert [c["config_name"] for c in meta["configs"]] == ["alpha_cnn_seed", "beta_cnn_seed", "gamma_cnn_seed"]
    assert [c["config_name"] for c in meta["configs"] if c.get("default")] == ["alpha_cnn_seed"]
    assert all(f"About {c}" in body for c in ("alpha_cnn_seed", "beta_cnn_seed", "gamma_cnn_seed"))
    assert set(remote_files(fake_hub)) >= {p for p in local_files(root) if p.startswith("data/")}


def test_merge_card_rules():
    def card(configs, default=None, body="", **extra):
        meta = {**extra, "configs": [{"config_name": c, **({"default": True} if c == default else {}),
                                      "data_files": f"data/{c}/*.parquet"} for c in configs]}
        return hub.join_card(meta, body)

    local = card(["b", "c"], default="c", license="cc-by-4.0",
                 body="intro\n\n" + config_section("b", "new b") + "\n" + config_section("c", "new c") + "\nend\n")
    remote = card(["a", "b"], body=config_section("a", "old a") + config_section("b", "old b"), language="en")
    meta, body = split_card(merge_card(local, remote))
    assert [c["config_name"] for c in meta["configs"]] == ["a", "b", "c"]
    assert [c["config_name"] for c in meta["configs"] if c.get("default")] == ["c"]  # no remote default: local one
    assert meta["license"] == "cc-by-4.0" and meta["language"] == "en"
    assert body.startswith("intro\n\n") and body.endswith("\nend\n")
    assert body.index("old a") < body.index("new b") < body.index("new c") and "old b" not in body

    meta, _ = split_card(merge_card(local, card(["a"], default="a"), configs=["b"]))
    assert [(c["config_name"], c.get("default", False)) for c in meta["configs"]] == [("a", True), ("b", False)]
    # a local body without markers gets the remote-only sections appended
    _, body = split_card(merge_card(card(["b"], default="b", body="plain\n"), remote))
    assert body == "plain\n\n" + config_section("a", "old a") + "\n"
    assert merge_card(local, None) == local
    with pytest.raises(ValueError, match="YAML"):
        merge_card(local, "---\nconfigs: [\n---\n")


# ---------------------------------------------------------------- interruptions
def test_interrupted_lfs_upload_then_rerun_completes(fake_hub, two_configs):
    root, _ = two_configs
    parquet = [p for p in local_files(root) if p.endswith(".parquet")]
    fake_hub.fail("lfs_upload", nth=2)  # the Hub goes down after the first large file
    with pytest.raises(HubError, match="Re-run the same command"):
        push(root, REPO)
    assert remote_files(fake_hub) == {}  # no commit at all: no card pointing at missing files
    assert len(fake_hub.lfs) == 1

    fake_hub.heal()
    puts = fake_hub.count("lfs_upload")
    push(root, REPO)
    assert remote_files(fake_hub) == local_files(root)
    assert fake_hub.count("lfs_upload") - puts == len(parquet) - 1  # the blob already uploaded is not sent again
    assert fake_hub.commits(REPO)[1:] == ["Upload alpha_cnn_seed, beta_cnn_seed with modelzoos"]


def test_interrupted_multi_commit_push_keeps_old_card_and_resumes(fake_hub, two_configs, monkeypatch):
    root, _ = two_configs
    monkeypatch.setattr(hub, "MAX_OPERATIONS_PER_COMMIT", 3)
    fake_hub.fail("commit", nth=2, times=1)  # the second data commit fails once
    with pytest.raises(HubError, match="HTTP 500"):
        push(root, REPO)
    partial = remote_files(fake_hub)
    assert 0 < len(partial) < len(local_files(root)) and "README.md" not in partial

    result = hub.push_folder(root, REPO)
    assert remote_files(fake_hub) == local_files(root)
    assert not set(result.uploaded) & set(partial)  # committed files were skipped
    titles = fake_hub.commits(REPO)
    assert titles[1].endswith("(part 1/4)") and titles[-1].endswith(f"(part {result.commits}/{result.commits})")
    assert len(titles) == 2 + result.commits


# ---------------------------------------------------------------- errors
def test_card_rejected_by_the_hub_uploads_nothing(fake_hub, two_configs):
    root, _ = two_configs
    fake_hub.fail("validate_yaml", status=400)
    with pytest.raises(ValueError, match="rejects the dataset card"):
        push(root, REPO)
    assert remote_files(fake_hub) == {} and fake_hub.count("lfs_upload") == 0


@pytest.mark.parametrize("status", [401, 403])
def test_unauthorised_token_gives_login_hint_without_the_token(fake_hub, two_configs, capsys, caplog, status):
    root, _ = two_configs
    fake_hub.reject_token(fake_hub.token, status)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(HubAuthError) as info:
        push(root, REPO)
    message = str(info.value)
    assert "hf auth login" in message and "HF_TOKEN" in message and f"HTTP {status}" in message

    code = hub.cli_push(argparse.Namespace(repo_dir=str(root), repo_id=REPO, config=None, private=False))
    assert code == 1
    out, err = capsys.readouterr()
    assert "hf auth login" in err
    for text in (message, repr(info.value), out, err, caplog.text, str(info.value.__cause__)):
        assert fake_hub.token not in text
    assert fake_hub.repos == {}


def test_read_only_token_leaves_the_repo_unchanged(fake_hub, two_configs, tmp_path):
    root, _ = two_configs
    push(root, REPO)
    before = fake_hub.files(REPO)
    new = tmp_path / "gamma"
    build_repo(new, {"gamma_cnn_seed": {}}, default="gamma_cnn_seed")
    fake_hub.reject_token(fake_hub.token, 403)
    with pytest.raises(HubAuthError, match="HTTP 403"):
        push(new, REPO)
    assert fake_hub.files(REPO) == before


def test_explicit_token_overrides_environment_and_stays_secret(fake_hub, two_configs):
    root, _ = two_configs
    other = "hf_explicitOTHERtoken987654321"
    fake_hub.reject_token(other)
    with pytest.raises(HubAuthError) as info:
        push(root, REPO, token=other)
    assert other not in str(info.value) and fake_hub.token not in str(info.value)
    push(root, REPO, token=fake_hub.token)  # the environment's token is still accepted
    assert remote_files(fake_hub) == local_files(root)


def test_missing_token_fails_before_any_request(fake_hub, two_configs, monkeypatch):
    root, _ = two_configs
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(HubAuthError, match="hf auth login"):
        push(root, REPO)
    assert fake_hub.requests == []


@pytest.mark.parametrize("how", ["environment", "constant"])
def test_offline_mode_raises_hub_error_and_uploads_nothing(fake_hub, two_configs, monkeypatch, how):
    root, _ = two_configs
    if how == "environment":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubError, match="HF_HUB_OFFLINE"):
        push(root, REPO)
    assert fake_hub.requests == [] and fake_hub.repos == {}


def test_unreachable_hub_raises_hub_error(fake_hub, two_configs):
    root, _ = two_configs
    fake_hub.go_down()
    with pytest.raises(HubError, match="cannot reach the Hub"):
        push(root, REPO)
    assert fake_hub.repos == {}


@pytest.mark.parametrize("raised, expected", [
    (OfflineModeIsEnabled("offline"), "offline mode is on"),
    (RuntimeError("Error while uploading 'x' to the Hub."), None),
    (httpx2.ConnectError("refused"), "cannot reach the Hub"),
])
def test_hub_errors_mapping(raised, expected):
    if expected is None:  # unrelated errors pass through unchanged
        with pytest.raises(RuntimeError, match="Error while uploading"), hub._hub_errors(REPO, "http://x", SECRET):
            raise raised
        return
    try:
        raise raised
    except Exception as inner:
        wrapped = RuntimeError("Error while uploading 'x' to the Hub.")
        wrapped.__cause__ = inner
    with pytest.raises(HubError, match=expected), hub._hub_errors(REPO, "http://x", SECRET):
        raise wrapped


def test_hub_errors_scrub_the_token():
    with pytest.raises(HubError) as info, hub._hub_errors(REPO, "http://x", "hf_secret123"):
        raise httpx2.ConnectError("proxy said: Bearer hf_secret123")
    assert "hf_secret123" not in str(info.value) and "***" in str(info.value)


def corrupt(root: Path, how: str) -> None:
    readme = root / "README.md"
    if how == "zoo_json":
        (root / "data/alpha_cnn_seed/zoo.json").unlink()
    elif how == "split":
        for p in (root / "data/beta_cnn_seed").glob("validation-*.parquet"):
            p.unlink()
    elif how == "footer":
        path = root / "data/alpha_cnn_seed/test-00000-of-00001.parquet"
        path.write_bytes(path.read_bytes()[:-12])
    elif how == "two_defaults":
        readme.write_text(readme.read_text().replace("- config_name: beta_cnn_seed\n",
                                                     "- config_name: beta_cnn_seed\n  default: true\n"))
    elif how == "yaml":
        readme.write_text("---\nconfigs: [\n---\nbody\n")
    elif how == "unlisted":
        (root / "data/stray").mkdir()
    elif how == "bad_name":
        readme.write_text(readme.read_text().replace("config_name: beta_cnn_seed", "config_name: Beta-CNN"))


@pytest.mark.parametrize("how, expected", [
    ("zoo_json", "zoo.json is missing"), ("split", "split 'validation': no Parquet file"),
    ("footer", "unreadable Parquet footer"), ("two_defaults", "exactly one config must have `default: true`"),
    ("yaml", "YAML header does not parse"), ("unlisted", "stray is not a config listed"),
    ("bad_name", "names must match"),
])
def test_invalid_folder_raises_value_error_before_any_request(fake_hub, two_configs, how, expected):
    root, _ = two_configs
    assert validate_folder(root) == []
    corrupt(root, how)
    problems = validate_folder(root)
    assert any(expected in p for p in problems), problems
    with pytest.raises(ValueError, match="nothing was uploaded") as info:
        push(root, REPO)
    assert expected in str(info.value)
    assert fake_hub.requests == []


def test_unknown_config_is_a_validation_error(fake_hub, two_configs):
    root, _ = two_configs
    with pytest.raises(ValueError, match="config 'gamma' is not in"):
        push(root, REPO, config="gamma")
    assert fake_hub.requests == []


def test_publish_validator_is_consulted_when_present(fake_hub, two_configs, monkeypatch):
    root, _ = two_configs
    monkeypatch.setattr(hub, "_publish_problems", PUBLISH_PROBLEMS)
    publish = types.ModuleType("modelzoos.publish")

    def validate_repo(path):  # the contract of modelzoos.publish: raise ValueError, else return the config names
        raise ValueError(f"{Path(path).name}: weights column is not fixed_size_list")

    publish.validate_repo = validate_repo
    monkeypatch.setitem(sys.modules, "modelzoos.publish", publish)
    with pytest.raises(ValueError, match="repo: weights column is not fixed_size_list"):
        push(root, REPO)
    assert fake_hub.requests == []
    publish.validate_repo = lambda path: ["alpha_cnn_seed", "beta_cnn_seed"]
    assert hub._publish_problems(root) == []
    del publish.validate_repo
    assert hub._publish_problems(root) == []


# ---------------------------------------------------------------- options and the command line
def test_private_repo_and_branch(fake_hub, two_configs):
    root, _ = two_configs
    push(root, REPO, private=True, revision="dev")
    assert fake_hub.repos[("dataset", REPO)].private
    assert {p for p in fake_hub.files(REPO, revision="dev")} - {".gitattributes"} == set(local_files(root))
    assert remote_files(fake_hub) == {}  # main untouched
    assert HfApi().list_repo_files(REPO, repo_type="dataset", revision="dev") == sorted(
        [".gitattributes", *local_files(root)])


def test_cli_push_prints_uploads_and_load_line(fake_hub, two_configs, capsys):
    root, _ = two_configs
    code = hub.cli_push(argparse.Namespace(repo_dir=str(root), repo_id=REPO, config="beta_cnn_seed", private=False))
    out = capsys.readouterr().out
    assert code == 0
    assert "pushed 1 config(s) to org/zoos" in out
    assert "beta_cnn_seed: 5 file(s) uploaded" in out
    assert 'load_dataset("org/zoos", "beta_cnn_seed")' in out
    assert fake_hub.token not in out
    assert not any(p.startswith("data/alpha_cnn_seed/") for p in remote_files(fake_hub))
