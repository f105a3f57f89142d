"""Nothing lost: manifests and `verify`, checksums inside safetensors files and Parquet pages, deterministic
bytes, the repair of a finished zoo, leftovers of killed runs, config swaps, umask permissions, folders that
are not ours."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from safetensors.numpy import load_file

from modelzoos import export, files, manifest, tensorfile
from modelzoos.catalogue import get_zoo
from modelzoos.export import ZooDir, ZooFileError
from modelzoos.generate import generate
from modelzoos.hub import push
from modelzoos.publish import build_repo
from modelzoos.repository import RepositoryError, validate_repo
from modelzoos.twins import sparsify

ROOT = Path(__file__).resolve().parent.parent
SMALL = {"models": 3, "epochs": 1, "chunk_size": 1, "progress": False}  # three one-model chunks


@pytest.fixture(scope="module")
def small_zoo(tmp_path_factory) -> ZooDir:
    """A digits zoo of three one-model chunks, 1 epoch, trained in this process (so that a retrained chunk is
    bitwise the original: same process, same thread count)."""
    return generate(get_zoo("digits_cnn_seed"), tmp_path_factory.mktemp("small") / "zoo", **SMALL)


def flip(path: Path, offset: int) -> None:
    """Change one byte of a file in place (its size stays)."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def data_offset(path: Path) -> int:
    return tensorfile.read_header(path)[2]


# ---------------------------------------------------------------------------------------------------------
# Files we write
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_files_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        files.write_text(tmp_path / "a.json", "{}")
        tensorfile.write(tmp_path / "b.safetensors", {"x": np.zeros(3, np.float32)}, {})
    finally:
        os.umask(old)
    for name in ("a.json", "b.safetensors"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_generated_zoo_is_readable_by_others_under_umask_022(zoo_dir):
    umask = os.umask(0)
    os.umask(umask)
    modes = {p.stat().st_mode & 0o777 for p in zoo_dir.path.rglob("*") if p.is_file()}
    assert modes == {0o666 & ~umask}


def test_sweep_removes_only_our_temporaries(tmp_path):
    ours = files.temporary_path(tmp_path / "zoo.json")
    ours.write_text("half")
    theirs = [tmp_path / ".notes.tmp", tmp_path / ".zoo.json.tmp", tmp_path / ".a.0123.tmp", tmp_path / "x.tmp"]
    for path in theirs:
        path.write_text("keep")
    files.sweep_temporaries(tmp_path)
    assert not ours.exists() and all(p.read_text() == "keep" for p in theirs)


def test_safetensors_bytes_depend_on_the_contents_only(tmp_path):
    tensors = {"weights": np.arange(12, dtype=np.float32).reshape(3, 4), "step": np.array(7, dtype=np.int64),
               "mask": np.array([True, False])}
    meta = {"model_ids": "[0, 1, 2]", "epoch": "3", "metrics": '{"test_acc": [0.5]}'}
    tensorfile.write(tmp_path / "a.safetensors", tensors, meta)
    tensorfile.write(tmp_path / "b.safetensors", dict(reversed(tensors.items())), dict(reversed(meta.items())))
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    standard = load_file(tmp_path / "a.safetensors")  # any safetensors reader reads them
    assert all(np.array_equal(standard[k], v) for k, v in tensors.items())
    read, metadata = tensorfile.read(tmp_path / "a.safetensors")
    assert all(np.array_equal(read[k], v) for k, v in tensors.items())
    assert set(metadata) == {*meta, "sha256"} and tensorfile.check(tmp_path / "a.safetensors") is None


def test_safetensors_checksum_catches_flipped_data_and_the_cheap_check_truncation(tmp_path):
    path = tmp_path / "a.safetensors"
    tensorfile.write(path, {"weights": np.ones((4, 8), np.float32)}, {"epoch": "1"})
    size = path.stat().st_size
    flip(path, data_offset(path) + 37)
    assert tensorfile.check(path) is None  # headers and sizes cannot see it ...
    with pytest.raises(tensorfile.TensorFileError, match="fails its SHA-256 checksum"):
        tensorfile.read(path)  # ... the checksum can
    with pytest.raises(tensorfile.TensorFileError, match="fails its SHA-256 checksum"):
        tensorfile.scan(path)
    path.write_bytes(path.read_bytes()[: size - 5])
    assert "truncated or damaged" in tensorfile.check(path)


def test_a_damaged_state_file_is_refused_on_resume(tmp_path):
    cdir = tmp_path / "weights" / "models_000000-000000"
    export.write_safetensors(cdir / "epoch_000.safetensors", {"weights": np.zeros((1, 4), np.float32)}, {})
    export.write_safetensors(cdir / export.STATE, {"model.w": np.ones(64, np.float32)}, {"epoch": "0"})
    flip(cdir / export.STATE, data_offset(cdir / export.STATE) + 10)  # weights off by a bit flip, size unchanged
    with pytest.raises(ZooFileError, match=r"state\.safetensors is corrupt .*checksum.*delete the chunk directory"):
        export._resume_point(cdir, (0,))


# ---------------------------------------------------------------------------------------------------------
# A finished zoo: manifest, verify, repair
# ---------------------------------------------------------------------------------------------------------


def test_the_manifest_lists_every_file_with_size_and_sha256(small_zoo):
    listed = manifest.read(small_zoo.path)
    on_disk = sorted(p.relative_to(small_zoo.path).as_posix() for p in small_zoo.path.rglob("*")
                     if p.is_file() and p.name != manifest.MANIFEST)
    assert sorted(listed) == on_disk and len(on_disk) == 2 + 3 * 3  # zoo.json, metadata; 3 × (complete, 2 epochs)
    assert all(e == {"size": (small_zoo.path / p).stat().st_size, "sha256": manifest.sha256(small_zoo.path / p)}
               for p, e in listed.items())
    assert manifest.verify(small_zoo.path).files == 11


def test_generate_repairs_a_truncated_file_of_a_finished_zoo(small_zoo, copy_of, caplog):
    zoo = copy_of(small_zoo.path)
    original = manifest.read(zoo)
    victim = zoo / "weights" / "models_000001-000001" / "epoch_001.safetensors"
    victim.write_bytes(victim.read_bytes()[:-100])
    untouched = zoo / "weights" / "models_000002-000002" / "epoch_001.safetensors"
    before = untouched.stat().st_mtime_ns
    with caplog.at_level(logging.WARNING, logger="modelzoos"):
        generate(get_zoo("digits_cnn_seed"), zoo, **SMALL)
    assert str(victim) in caplog.text and "retraining 1 chunk(s)" in caplog.text
    assert manifest.read(zoo) == original  # retrained bit for bit
    assert untouched.stat().st_mtime_ns == before  # only the damaged chunk was redone
    manifest.verify(zoo)


def test_a_finished_zoo_without_its_manifest_gets_it_back(small_zoo, copy_of):
    zoo = copy_of(small_zoo.path)  # as a run killed between metadata.parquet and manifest.json leaves it
    original = manifest.read(zoo)
    (zoo / manifest.MANIFEST).unlink()
    epoch = zoo / "weights" / "models_000000-000000" / "epoch_001.safetensors"
    before = epoch.stat().st_mtime_ns
    generate(get_zoo("digits_cnn_seed"), zoo, **SMALL)
    assert manifest.read(zoo) == original and epoch.stat().st_mtime_ns == before  # nothing retrained


def test_a_kill_between_complete_json_and_the_state_deletion_leaves_nothing_behind(small_zoo, copy_of):
    zoo = copy_of(small_zoo.path)
    original = manifest.read(zoo)
    cdir = zoo / "weights" / "models_000000-000000"
    (zoo / "metadata.parquet").unlink()  # the run was killed before finalize
    (zoo / manifest.MANIFEST).unlink()
    shutil.copy(cdir / "epoch_001.safetensors", cdir / export.STATE)
    files.temporary_path(cdir / "epoch_001.safetensors").write_bytes(b"half")
    generate(get_zoo("digits_cnn_seed"), zoo, **SMALL)
    assert not (cdir / export.STATE).exists() and not list(zoo.rglob(".*.tmp"))
    assert manifest.read(zoo) == original


def test_verify_names_flipped_bytes_and_build_and_twins_refuse_the_zoo(small_zoo, copy_of, tmp_path):
    zoo = copy_of(small_zoo.path)
    victim = zoo / "weights" / "models_000002-000002" / "epoch_000.safetensors"
    flip(victim, data_offset(victim) + 40)
    with pytest.raises(manifest.ManifestError, match=r"1 of 11 file\(s\) damaged") as err:
        manifest.verify(zoo)
    assert f"{victim}: content changed" in str(err.value)
    with pytest.raises(ZooFileError, match="differ from its manifest") as err:
        build_repo([zoo], tmp_path / "repo", progress=False)
    assert str(victim) in str(err.value) and str(victim.parent) in str(err.value)
    with pytest.raises(ZooFileError, match=r"differ from its manifest:\n.*epoch_000\.safetensors: content changed"):
        sparsify(zoo, tmp_path / "twins", "mp", progress=False)  # before any training
    assert not (tmp_path / "twins").exists()
    with pytest.raises(ZooFileError, match="fails its SHA-256 checksum"):  # reading it again refuses it too
        export.finalize(zoo, export.Run(get_zoo("digits_cnn_seed"), 3, 1, "population", 1))


def test_weights_files_outside_the_zoo_are_refused(small_zoo, copy_of):
    zoo = copy_of(small_zoo.path)
    table = pq.read_table(zoo / "metadata.parquet")
    paths = table.column("weights_file").to_pylist()
    paths[0] = "../../elsewhere/epoch_000.safetensors"
    table = table.set_column(table.schema.get_field_index("weights_file"), "weights_file", pa.array(paths))
    pq.write_table(table, zoo / "metadata.parquet")
    with pytest.raises(ZooFileError, match=r"points at weights files outside .*elsewhere"):
        ZooDir(zoo)


# ---------------------------------------------------------------------------------------------------------
# A repository folder
# ---------------------------------------------------------------------------------------------------------


def test_a_flipped_byte_in_a_weights_page_is_caught_everywhere(repo_dir, copy_of):
    repo = copy_of(repo_dir)
    shard = repo / "data" / "digits_cnn_seed" / "train-00000-of-00001.parquet"
    column = pq.ParquetFile(shard).metadata.row_group(0).column(pq.ParquetFile(shard).schema_arrow.get_field_index(
        "weights"))
    flip(shard, column.data_page_offset + column.total_compressed_size // 2)  # inside the data, not a header
    with pytest.raises(RepositoryError, match=r"train-00000-of-00001\.parquet: .*checksum"):
        validate_repo(repo)
    with pytest.raises(manifest.ManifestError, match="content changed"):
        manifest.verify(repo)
    with pytest.raises(RepositoryError, match="checksum"):
        push(repo, "org/never-contacted")  # validated before any network call


def test_build_cleans_what_a_killed_build_left(repo_dir, zoo_dir, copy_of):
    repo = copy_of(repo_dir)
    data = repo / "data"
    staged = files.temporary_path(data / "digits_cnn_seed", ".new")
    staged.mkdir()
    (staged / "train-00000-of-00001.parquet").write_bytes(b"half a shard")
    moved = files.temporary_path(data / "digits_cnn_seed_sparse_vd", ".old")  # killed between the two renames
    os.rename(data / "digits_cnn_seed_sparse_vd", moved)
    assert build_repo([zoo_dir.path], repo, progress=False) == ["digits_cnn_seed"]
    assert sorted(p.name for p in data.iterdir()) == ["digits_cnn_seed", "digits_cnn_seed_sparse_vd"]
    assert validate_repo(repo) == ["digits_cnn_seed", "digits_cnn_seed_sparse_vd"]
    manifest.verify(repo)


def test_a_rebuild_killed_at_any_moment_leaves_a_valid_folder(repo_dir, zoo_dir, copy_of):
    repo = copy_of(repo_dir)
    before = manifest.read(repo)
    cmd = [sys.executable, "-m", "modelzoos.cli", "build", str(zoo_dir.path), "--repo", str(repo), "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    kills = 0
    for _ in range(3):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        while proc.poll() is None and not list((repo / "data").glob(".digits_cnn_seed.*.new/*.parquet")) \
                and time.monotonic() < deadline:
            time.sleep(0.001)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        # whatever the moment: the visible configs are complete, one build each, never mixed
        assert validate_repo(repo) == ["digits_cnn_seed", "digits_cnn_seed_sparse_vd"]
    assert kills >= 1
    assert subprocess.run(cmd, env=env, capture_output=True).returncode == 0
    assert not [p for p in (repo / "data").iterdir() if p.name.startswith(".")]
    assert manifest.read(repo) == before  # the rebuild wrote the same bytes
    manifest.verify(repo)
