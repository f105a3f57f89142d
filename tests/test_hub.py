"""Publishing with modelzoos.hub against the in-process fake Hub (tests/fakehub.py): round trips through
`datasets.load_dataset`, config-wise replacement, card merging, resuming, and the error paths.

Every folder pushed here is one that `modelzoos build` writes (the suite's shared repository: configs
digits_cnn_seed and digits_cnn_seed_sparse_vd, conftest), validated by the one validator push calls."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import datasets
import httpx2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from huggingface_hub import HfApi, HfFileSystem, constants
from huggingface_hub.errors import OfflineModeIsEnabled

from modelzoos import card, hub
from modelzoos.cli import main
from modelzoos.hub import HubAuthError, HubError, push
from modelzoos.publish import build_repo
from modelzoos.repository import SPLITS, RepositoryError, join_card, split_card, validate_repo

pytest_plugins = ["fakehub"]  # the fake_hub fixture
# huggingface_hub's LFS upload passes `data=` to httpx2, which deprecates it; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")

REPO = "org/zoos"
SECRET = "hf_secretUsedOnlyByTheErrorMappingTests"
ZOO, VD, MP = "digits_cnn_seed", "digits_cnn_seed_sparse_vd", "digits_cnn_seed_sparse_mp"
D = 2464  # weights per row


# ---------------------------------------------------------------- repository folders (as `modelzoos build` writes)
def read_config(root: Path, name: str) -> dict[str, pa.Table]:
    """{split: the config's rows as one table} of a repository folder."""
    return {s: pa.concat_tables([pq.read_table(f) for f in sorted((root / "data" / name).glob(f"{s}-*.parquet"))])
            for s in SPLITS}


def local_files(root: Path) -> dict[str, bytes]:
    """What a push publishes from ``root``: its data files, and the card rendered for REPO."""
    files = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted((root / "data").rglob("*")) if p.is_file()}
    return files | {"README.md": card.render(root, REPO).encode()}


def remote_files(fake, repo=REPO) -> dict[str, bytes]:
    return {p: b for p, b in fake.files(repo).items() if p != ".gitattributes"}


def load(config: str, split: str = "train", **kwargs):
    HfFileSystem.clear_instance_cache()  # HfFileSystem caches listings per process
    return datasets.load_dataset(REPO, config, split=split, **kwargs)


def weights(rows) -> np.ndarray:
    return np.asarray([np.asarray(r["weights"], dtype=np.float32) for r in rows])


def table_weights(table: pa.Table) -> np.ndarray:
    return table.column("weights").combine_chunks().flatten().to_numpy().reshape(table.num_rows, -1)


@pytest.fixture
def two_configs(repo_dir, copy_of):
    """A private copy of the shared repository folder and its rows per config and split."""
    root = copy_of(repo_dir)
    return root, {name: read_config(root, name) for name in (ZOO, VD)}


def section(text: str, name: str) -> str:
    """A config's section of a card body."""
    start, end = f"<!-- config:{name} start -->", f"<!-- config:{name} end -->"
    return text[text.index(start) : text.index(end)]


# ---------------------------------------------------------------- round trip
def test_push_two_configs_then_load_dataset(fake_hub, two_configs):
    root, tables = two_configs
    before = (root / "README.md").read_text()
    url = push(root, REPO).commit_url
    assert url.startswith(f"{constants.ENDPOINT}/datasets/{REPO}/commit/")
    assert remote_files(fake_hub) == local_files(root)
    assert fake_hub.commits(REPO) == ["initial commit", f"Upload {ZOO}, {VD} with modelzoos"]
    published = fake_hub.files(REPO)["README.md"].decode()
    assert f'load_dataset("{REPO}", "{ZOO}", split="train")' in published and "ORG/NAME" not in published
    assert (root / "README.md").read_text() == before  # the local folder is not changed by a push

    HfFileSystem.clear_instance_cache()
    assert datasets.get_dataset_config_names(REPO) == [ZOO, VD]
    assert datasets.get_dataset_default_config_name(REPO) == ZOO
    for name, splits in tables.items():
        ds = load(name)
        expected = splits["train"]
        assert ds.num_rows == expected.num_rows
        assert ds.features["weights"] == datasets.List(datasets.Value("float32"), length=D)
        np.testing.assert_array_equal(ds.with_format("numpy")["weights"], table_weights(expected))
        assert ds["model_id"] == expected.column("model_id").to_pylist()
    assert "log_sigma2" in load(VD).column_names
    streamed = list(load(VD, "test", streaming=True))
    np.testing.assert_array_equal(weights(streamed), table_weights(tables[VD]["test"]))


def test_fake_hub_serves_parquet_footers_by_range(fake_hub, two_configs):
    root, _ = two_configs
    push(root, REPO)
    path = f"datasets/{REPO}/data/{ZOO}/train-00000-of-00001.parquet"
    with HfFileSystem().open(path, block_size=1024) as f:
        meta = pq.ParquetFile(f).metadata
    assert meta.num_rows == pq.read_metadata(root / f"data/{ZOO}/train-00000-of-00001.parquet").num_rows
    assert fake_hub.count("resolve", status=206) >= 1


def test_push_again_changes_nothing(fake_hub, two_configs):
    root, _ = two_configs
    push(root, REPO)
    commits, uploads = fake_hub.commits(REPO), fake_hub.count("lfs_upload")
    result = push(root, REPO)
    assert fake_hub.commits(REPO) == commits
    assert fake_hub.count("lfs_upload") == uploads
    assert result.uploaded == () and result.deleted == () and not result.card_updated and result.commits == 0
    assert len(result.unchanged) == len(local_files(root)) - 1  # all but README.md


# ---------------------------------------------------------------- one config at a time, card merging
def test_push_one_config_replaces_only_its_files_and_merges_the_card(fake_hub, two_configs, twin_dirs, rows_of,
                                                                     tmp_path):
    root, _ = two_configs
    push(root, REPO)
    before = remote_files(fake_hub)

    # A newer build of the VD twins alone (epochs 0..2 only), with more train shards (so the old shard name goes
    # stale) and its own card, whose default is the twins.
    newer = rows_of(twin_dirs["vd"].path, lambda t: t.column("epoch").to_numpy() <= 2)
    new = tmp_path / "new"
    build_repo([newer], new, progress=False, max_file_bytes=8 * 5000 * 4)
    assert len(list((new / "data" / VD).glob("train-*.parquet"))) > 1
    result = push(new, REPO, config=VD)

    after = remote_files(fake_hub)
    zoo = {p: b for p, b in before.items() if p.startswith(f"data/{ZOO}/")}
    assert {p: b for p, b in after.items() if p.startswith(f"data/{ZOO}/")} == zoo
    assert {p: b for p, b in after.items() if p.startswith(f"data/{VD}/")} == \
        {p: b for p, b in local_files(new).items() if p.startswith(f"data/{VD}/")}
    assert f"data/{VD}/train-00000-of-00001.parquet" in result.deleted
    assert len(fake_hub.commits(REPO)) == 3  # one atomic commit for data, deletions and card

    meta, body = split_card(after["README.md"].decode())
    assert [c["config_name"] for c in meta["configs"]] == [ZOO, VD]
    assert [c["config_name"] for c in meta["configs"] if c.get("default")] == [ZOO]  # the remote default
    assert section(body, ZOO) == section(before["README.md"].decode(), ZOO)  # remote-only section kept
    assert "epochs 0–2 of the protocol's 25" in section(body, VD)  # the pushed config's section replaced
    assert "epochs 0–3" not in section(body, VD)
    assert body.count(f"<!-- config:{ZOO} start -->") == body.count(f"<!-- config:{VD} end -->") == 1

    HfFileSystem.clear_instance_cache()
    assert datasets.get_dataset_config_names(REPO) == [ZOO, VD]
    ds = load(VD)
    np.testing.assert_array_equal(ds.with_format("numpy")["weights"], table_weights(read_config(new, VD)["train"]))


def test_push_whole_folder_keeps_remote_only_configs(fake_hub, two_configs, twin_dirs, tmp_path):
    root, _ = two_configs
    push(root, REPO)
    new = tmp_path / "mp"
    build_repo([twin_dirs["mp"].path], new, progress=False)
    push(new, REPO)
    meta, body = split_card(fake_hub.files(REPO)["README.md"].decode())
    assert [c["config_name"] for c in meta["configs"]] == [ZOO, VD, MP]
    assert [c["config_name"] for c in meta["configs"] if c.get("default")] == [ZOO]
    assert all(f"### {c}" in body for c in (ZOO, VD, MP))
    assert set(remote_files(fake_hub)) >= {p for p in local_files(root) if p.startswith("data/")}


def test_merge_card_rules():
    def config_section(name, text):
        return f"<!-- config:{name} start -->\n{text}\n<!-- config:{name} end -->"

    def make(configs, default=None, body="", **extra):
        meta = {**extra, "configs": [{"config_name": c, **({"default": True} if c == default else {}),
                                      "data_files": f"data/{c}/*.parquet"} for c in configs]}
        return join_card(meta, body)

    local = make(["b", "c"], default="c", license="cc-by-4.0",
                 body="intro\n\n" + config_section("b", "new b") + "\n" + config_section("c", "new c") + "\nend\n")
    remote = make(["a", "b"], body=config_section("a", "old a") + config_section("b", "old b"), language="en")
    meta, body = split_card(card.merge(local, remote))
    assert [c["config_name"] for c in meta["configs"]] == ["a", "b", "c"]
    assert [c["config_name"] for c in meta["configs"] if c.get("default")] == ["c"]  # no remote default: local one
    assert meta["license"] == "cc-by-4.0" and meta["language"] == "en"
    assert body.startswith("intro\n\n") and body.endswith("\nend\n")
    assert body.index("old a") < body.index("new b") < body.index("new c") and "old b" not in body

    meta, _ = split_card(card.merge(local, make(["a"], default="a"), configs=["b"]))
    assert [(c["config_name"], c.get("default", False)) for c in meta["configs"]] == [("a", True), ("b", False)]
    # a local body without markers gets the remote-only sections appended
    _, body = split_card(card.merge(make(["b"], default="b", body="plain\n"), remote))
    assert body == "plain\n\n" + config_section("a", "old a") + "\n"
    assert card.merge(local, None) == local
    with pytest.raises(ValueError, match="YAML"):
        card.merge(local, "---\nconfigs: [\n---\n")


# ---------------------------------------------------------------- interruptions
def test_interrupted_lfs_upload_then_rerun_completes(fake_hub, two_configs):
    root, _ = two_configs
    parquet = [p for p in local_files(root) if p.endswith(".parquet")]
    fake_hub.fail("lfs_upload", nth=2)  # the Hub goes down after the first large file
    with pytest.raises(HubError, match="re-run the same command to resume"):
        push(root, REPO)
    assert remote_files(fake_hub) == {}  # no commit at all: no card pointing at missing files
    assert len(fake_hub.lfs) == 1

    fake_hub.heal()
    puts = fake_hub.count("lfs_upload")
    push(root, REPO)
    assert remote_files(fake_hub) == local_files(root)
    assert fake_hub.count("lfs_upload") - puts == len(parquet) - 1  # the blob already uploaded is not sent again
    assert fake_hub.commits(REPO)[1:] == [f"Upload {ZOO}, {VD} with modelzoos"]


def test_interrupted_multi_commit_push_keeps_old_card_and_resumes(fake_hub, two_configs, monkeypatch):
    root, _ = two_configs
    monkeypatch.setattr(hub, "MAX_OPERATIONS_PER_COMMIT", 3)
    fake_hub.fail("commit", nth=2, times=1)  # the second data commit fails once, and is not retried
    with pytest.raises(HubError, match="HTTP 500"):
        push(root, REPO, retries=0)
    partial = remote_files(fake_hub)
    assert 0 < len(partial) < len(local_files(root)) and "README.md" not in partial

    result = push(root, REPO)
    assert remote_files(fake_hub) == local_files(root)
    assert not set(result.uploaded) & set(partial)  # committed files were skipped
    titles = fake_hub.commits(REPO)
    assert titles[1].endswith("(part 1/4)") and titles[-1].endswith(f"(part {result.commits}/{result.commits})")
    assert len(titles) == 2 + result.commits


def test_a_commit_failing_once_is_retried(fake_hub, two_configs, monkeypatch, caplog):
    root, _ = two_configs
    monkeypatch.setattr(hub, "MAX_OPERATIONS_PER_COMMIT", 3)
    fake_hub.fail("commit", nth=2, times=1)
    with caplog.at_level(logging.WARNING, logger="modelzoos.hub"):
        push(root, REPO)
    assert remote_files(fake_hub) == local_files(root)
    assert "HTTP 500 from the Hub" in caplog.text


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

    assert main(["push", str(root), "--repo-id", REPO]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("error: ") and "hf auth login" in err
    for text in (message, repr(info.value), out, err, caplog.text, str(info.value.__cause__)):
        assert fake_hub.token not in text
    assert fake_hub.repos == {}


def test_read_only_token_leaves_the_repo_unchanged(fake_hub, two_configs, twin_dirs, tmp_path):
    root, _ = two_configs
    push(root, REPO)
    before = fake_hub.files(REPO)
    new = tmp_path / "mp"
    build_repo([twin_dirs["mp"].path], new, progress=False)
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
        (root / f"data/{ZOO}/zoo.json").unlink()
    elif how == "split":
        for p in (root / f"data/{VD}").glob("validation-*.parquet"):
            p.unlink()
    elif how == "footer":
        path = root / f"data/{ZOO}/test-00000-of-00001.parquet"
        path.write_bytes(path.read_bytes()[:-12])
    elif how == "two_defaults":
        entry = f"- config_name: {VD}\n"
        readme.write_text(readme.read_text().replace(entry, entry + "  default: true\n"))
    elif how == "yaml":
        readme.write_text("---\nconfigs: [\n---\nbody\n")
    elif how == "unlisted":
        (root / "data/stray").mkdir()
    elif how == "bad_name":
        readme.write_text(readme.read_text().replace(f"config_name: {VD}", "config_name: Beta-CNN"))
    elif how == "schema":  # a shard of another config in the place of the zoo's first shard
        shutil.copy(root / f"data/{VD}/train-00000-of-00001.parquet", root / f"data/{ZOO}/train-00000-of-00001.parquet")
    elif how == "stray_file":
        (root / f"data/{ZOO}/private-notes.txt").write_text("not for the Hub")


@pytest.mark.parametrize("how, expected", [
    ("zoo_json", "zoo.json is missing"), ("split", "no validation-*.parquet file"),
    ("footer", "not a readable Parquet file"), ("two_defaults", "exactly one config must have `default: true`"),
    ("yaml", "YAML header does not parse"), ("unlisted", "stray is not listed in README.md's configs"),
    ("bad_name", "a zoo or config name must match"), ("schema", "its `modelzoos` schema metadata differs"),
    ("stray_file", "files that are not shards of this format: ['private-notes.txt']"),
])
def test_invalid_folder_raises_before_any_request(fake_hub, two_configs, how, expected):
    root, _ = two_configs
    assert validate_repo(root) == [ZOO, VD]
    corrupt(root, how)
    with pytest.raises(RepositoryError) as info:
        validate_repo(root)
    assert expected in str(info.value)
    with pytest.raises(RepositoryError) as info:
        push(root, REPO)
    assert expected in str(info.value)
    assert fake_hub.requests == []


def test_unknown_config_is_a_validation_error(fake_hub, two_configs):
    root, _ = two_configs
    with pytest.raises(RepositoryError, match="config 'gamma' is not in"):
        push(root, REPO, config="gamma")
    assert fake_hub.requests == []


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
    assert main(["push", str(root), "--repo-id", REPO, "--config", VD]) == 0
    out = capsys.readouterr().out
    files = len([p for p in local_files(root) if p.startswith(f"data/{VD}/")])
    assert "pushed 1 config(s) to org/zoos" in out
    assert f"{VD}: {files} file(s) uploaded" in out
    assert f'load_dataset("org/zoos", "{VD}")' in out
    assert fake_hub.token not in out
    assert not any(p.startswith(f"data/{ZOO}/") for p in remote_files(fake_hub))


def test_push_publishes_only_what_build_wrote_and_lists_the_rest(fake_hub, two_configs, capsys):
    root, _ = two_configs
    (root / "private-notes.txt").write_text("not for the Hub")
    (root / "drafts").mkdir()
    (root / "drafts" / "plan.md").write_text("nor this")
    assert main(["push", str(root), "--repo-id", REPO]) == 0
    assert set(remote_files(fake_hub)) == set(local_files(root))  # the data files and the card only
    out = capsys.readouterr().out
    assert "skipped 2 file(s) that `modelzoos build` did not write: drafts/plan.md, private-notes.txt" in out
