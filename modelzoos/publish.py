"""``build_repo``: zoo directories → a dataset repository folder (the format: ``modelzoos.repository``).

One config per zoo directory (config name = zoo name); configs already in the folder and not named are kept,
a config built again is replaced; the card (``modelzoos.card``) is regenerated from every config present, and
``manifest.json`` (``modelzoos.manifest``) lists the size and SHA-256 of every file build wrote, the files
``hub.push`` publishes. The folder must be new, empty or one that build wrote (it holds manifest.json): a
user's own files are never overwritten. One build at a time per folder (``files.lock``).

Each zoo directory is checked against its manifest before it is read. Memory stays bounded by one row group
(≤ ``ROW_GROUP_BYTES`` of vectors): rows are read from the zoo's safetensors files by slicing (only the bytes
of the requested rows), assembled one row group at a time and handed to ``pyarrow.parquet.ParquetWriter``
(page checksums on). Shard counts (the ``MMMMM`` of the file names) are planned from the row counts before
anything is written. A config is written into a hidden folder beside its final one (``data/.<config>.<hex>.new``)
and swapped in by two renames once complete, so readers never see new shards beside old ones; a build killed
midway leaves hidden folders that the next build removes (restoring the old config if the kill fell between
the two renames). torch is never imported.
"""

from __future__ import annotations

import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from modelzoos import card, manifest
from modelzoos.catalogue import check_name
from modelzoos.export import ZooDir, section_record
from modelzoos.files import atomic_write, check_ours, lock, temporary_path, write_json
from modelzoos.repository import (
    DATA_DIR,
    MAX_FILE_BYTES,
    MIN_MODELS,
    README,
    ROW_GROUP_BYTES,
    ConfigInfo,
    shard_name,
    split_models,
    vector_leaf,
)

SHARD_HEADROOM = 0.9  # shards are planned for 90 % of MAX_FILE_BYTES from the raw (uncompressed) row size
ROW_OVERHEAD_BYTES = 256  # planned bytes per row for the metadata columns
# writer options; each shard adds BYTE_STREAM_SPLIT for the leaves of its vector columns (``_write_shard``)
PARQUET_OPTIONS = {"compression": "zstd", "write_page_index": True, "write_page_checksum": True}
_STAGED = re.compile(r"^\.(?P<config>[a-z0-9][a-z0-9_]*)\.[0-9a-f]{32}\.(?P<kind>new|old)$")  # swap folders


def plan_shards(rows: int, floats: int, *, row_group_bytes: int = ROW_GROUP_BYTES,
                max_file_bytes: int = MAX_FILE_BYTES) -> list[list[int]]:
    """Row-group sizes per file for ``rows`` rows of ``floats`` float32 vector entries each.

    Files hold ≤ ``SHARD_HEADROOM · max_file_bytes`` of raw rows (compressed they are smaller); row groups
    ≤ ``row_group_bytes`` of vectors (one row when a single row is larger), and at least two per file
    with two rows or more (``IterableDataset.reshard()`` splits by row group). Zero rows → one empty file.
    """
    row_bytes = floats * 4 + ROW_OVERHEAD_BYTES
    per_file = max(1, int(max_file_bytes * SHARD_HEADROOM) // row_bytes)
    n_files = max(1, math.ceil(rows / per_file))
    sizes = [rows // n_files + (1 if i < rows % n_files else 0) for i in range(n_files)]
    per_group = max(1, row_group_bytes // (floats * 4))
    plan = []
    for size in sizes:
        group = min(per_group, max(1, math.ceil(size / 2)))
        plan.append([group] * (size // group) + ([size % group] if size % group else []))
    return plan


# ---------------------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Source:
    """One zoo directory to publish as the config ``name``."""

    name: str
    zd: ZooDir


def _open_sources(zoo_dirs: list[Path]) -> list[_Source]:
    if not zoo_dirs:
        raise ValueError("no zoo directories given; pass at least one directory written by `modelzoos generate`")
    sources: dict[str, _Source] = {}
    for path in map(Path, zoo_dirs):
        zd = ZooDir(path)
        zd.check_files()  # damaged weights would otherwise be published
        name = check_name(zd.zoo.name, str(path / "zoo.json"))
        zoos = set(zd.metadata["zoo"].unique())
        if zoos - {name}:
            raise ValueError(f"{path / 'metadata.parquet'} holds rows of zoo(s) {sorted(zoos - {name})}, zoo.json "
                             f"says {name!r}: regenerate the directory")
        models = zd.metadata["model_id"].nunique()
        if models < MIN_MODELS:
            raise ValueError(f"{path} holds {models} model(s) of zoo {name!r}; a published config needs at least "
                             f"{MIN_MODELS} so that every split (70/15/15 % of the models, floored) holds one "
                             "(load_dataset cannot read an empty split): generate more models with --models")
        if name in sources:
            other = sources[name].zd
            if other.layout != zd.layout:
                raise ValueError(f"{other.path} and {path} both hold zoo {name!r} but with different weight layouts "
                                 f"(D = {other.layout.size} and {zd.layout.size}); one config has one layout: "
                                 "publish one of them (or give one zoo another name in its spec)")
            raise ValueError(f"{other.path} and {path} both hold zoo {name!r}; a config is built from one zoo "
                             "directory: pass only one of them")
        sources[name] = _Source(name, zd)
    return list(sources.values())


def _config_info(src: _Source, splits: dict[str, list[int]], num_rows: dict[str, int]) -> ConfigInfo:
    zd = src.zd
    return ConfigInfo(config=src.name, layout=zd.layout, zoo=zd.zoo, data=zd.info["data"], splits=splits,
                      num_rows=num_rows, epochs=sorted(int(e) for e in zd.metadata["epoch"].unique()),
                      num_models=sum(len(v) for v in splits.values()),
                      twins=section_record(zd.info, "twins") or None,
                      imported=section_record(zd.info, "import") or None)


# ---------------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------------


def _row_group(frame_columns: dict[str, np.ndarray], rows: np.ndarray, vectors: dict[str, np.ndarray],
               schema: pa.Schema) -> pa.Table:
    """One row group: the metadata columns at ``rows`` and the vector columns, each [len(rows), n] (zero-copy)."""
    arrays = [pa.array(frame_columns[name][rows], type=schema.field(name).type) for name in frame_columns]
    for name, values in vectors.items():
        arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), type=schema.field(name).type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _write_shard(path: Path, zd: ZooDir, info: ConfigInfo, schema: pa.Schema, rows: np.ndarray, groups: list[int],
                 frame_columns: dict[str, np.ndarray], bar: tqdm) -> None:
    """Write the metadata rows ``rows`` (in order) as one Parquet file with row groups of sizes ``groups``.

    An empty split gets a file with the schema and no row group (datasets reads it as 0 rows; a row group of
    0 rows would make it fail with "BatchSize must be greater than 0").
    """
    encoding = {vector_leaf(name): "BYTE_STREAM_SPLIT" for name in info.vectors}
    strings = [f.name for f in info.scalar_columns if f.type == pa.string()]  # never dictionaries on the vectors
    with pq.ParquetWriter(path, schema, **PARQUET_OPTIONS, use_dictionary=strings, column_encoding=encoding) as writer:
        start = 0
        for size in groups:
            sel = rows[start : start + size]
            values = {name: np.empty((size, n), dtype=np.float32) for name, n in info.vectors.items()}
            for name, out in values.items():
                zd.read_rows(sel, out, name)
            writer.write_table(_row_group(frame_columns, sel, values, schema), row_group_size=size)
            bar.update(size)
            start += size


def _build_config(src: _Source, data: Path, *, row_group_bytes: int, max_file_bytes: int, progress: bool) -> None:
    """Write the config ``src.name`` into a hidden folder beside ``data/<config>`` and swap it in."""
    meta = src.zd.metadata
    splits = split_models(meta["model_id"])
    order = meta.sort_values(["model_id", "epoch"], kind="stable").index.to_numpy()
    model_of = meta["model_id"].to_numpy()[order]
    split_rows = {s: order[np.isin(model_of, ids)] for s, ids in splits.items()}
    info = _config_info(src, splits, {s: len(r) for s, r in split_rows.items()})
    schema = info.arrow_schema()
    frame_columns = {f.name: meta[f.name].to_numpy() for f in info.scalar_columns}
    floats = sum(info.vectors.values())

    final = data / src.name
    staged = temporary_path(final, ".new")
    staged.mkdir(parents=True)
    try:
        with tqdm(total=len(meta), desc=src.name, unit="row", disable=not progress) as bar:
            for split, rows in split_rows.items():
                plan = plan_shards(len(rows), floats, row_group_bytes=row_group_bytes, max_file_bytes=max_file_bytes)
                start = 0
                for i, groups in enumerate(plan):
                    part = rows[start : start + sum(groups)]
                    atomic_write(staged / shard_name(split, i, len(plan)), lambda tmp, part=part, groups=groups:
                                 _write_shard(tmp, src.zd, info, schema, part, groups, frame_columns, bar))
                    start += sum(groups)
        write_json(staged / "zoo.json", info.to_json())
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    _swap(staged, final)


def _swap(staged: Path, final: Path) -> None:
    """Replace the folder ``final`` (if any) by ``staged``: two renames, then the old folder is deleted."""
    old = temporary_path(final, ".old")
    if final.exists():
        os.rename(final, old)
    os.rename(staged, final)
    shutil.rmtree(old, ignore_errors=True)


def _clean_leftovers(data: Path) -> None:
    """Remove what killed builds left in ``data/``: staged folders, and old configs once swapped (an old config
    whose replacement never arrived is renamed back)."""
    for path in sorted(data.iterdir()) if data.is_dir() else []:
        m = _STAGED.match(path.name)
        if m is None or not path.is_dir():
            continue
        if m["kind"] == "old" and not (data / m["config"]).exists():
            os.rename(path, data / m["config"])
        else:
            shutil.rmtree(path, ignore_errors=True)


def _manifest(repo: Path, built: list[str]) -> dict[str, dict]:
    """The repository's manifest after building ``built``: their files and the card hashed anew, the entries
    of other configs' files kept (those files were not touched)."""
    old = manifest.read(repo) or {}
    fresh = [repo / README] + [p for name in built for p in sorted((repo / DATA_DIR / name).iterdir()) if p.is_file()]
    mine = {f"{DATA_DIR}/{name}/" for name in built}
    kept = {k: v for k, v in old.items() if k != README and not k.startswith(tuple(mine)) and (repo / k).is_file()}
    return kept | manifest.record(repo, fresh)


def build_repo(zoo_dirs: list[Path], repo: Path, progress: bool = True, *, repo_id: str | None = None,
               row_group_bytes: int = ROW_GROUP_BYTES, max_file_bytes: int = MAX_FILE_BYTES) -> list[str]:
    """Write one config per zoo directory into the repository folder ``repo``, regenerate its README and its
    manifest.json.

    Configs already in ``repo`` and not named here stay untouched; a config built again is replaced as a
    whole (module docstring). Returns the config names built, in the given order. ``repo_id`` (``org/name``)
    goes into the card's usage snippets. Raises ValueError for an invalid config name, two directories of
    one zoo, or a ``repo`` that is a file or a folder of someone else's files; ZooFileError for a damaged zoo
    directory; FolderInUseError while another process builds into ``repo``.
    """
    sources = _open_sources(list(zoo_dirs))
    repo = Path(repo)
    check_ours(repo, manifest.MANIFEST, "repository folder built by modelzoos", "--repo")
    built: list[str] = []
    with lock(repo, "--repo"):
        check_ours(repo, manifest.MANIFEST, "repository folder built by modelzoos", "--repo")
        if not (repo / manifest.MANIFEST).exists():
            manifest.write(repo, {})  # the folder is ours from now on (a killed first build can be rerun)
        _clean_leftovers(repo / DATA_DIR)
        try:
            for src in sources:
                _build_config(src, repo / DATA_DIR, row_group_bytes=row_group_bytes, max_file_bytes=max_file_bytes,
                              progress=progress)
                built.append(src.name)
        finally:
            if built:  # the card and the manifest list what is there, even when a later zoo failed
                card.write(repo, repo_id)
                manifest.write(repo, _manifest(repo, built))
    return built
