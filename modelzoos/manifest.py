"""The manifest of a finished folder: the size and SHA-256 of every file modelzoos wrote into it.

``manifest.json`` is written last when a zoo directory is finalised (``export.finalize``) and when a
repository folder is built (``publish.build_repo``)::

    {"format_version": 1, "files": {"<path relative to the folder>": {"size": bytes, "sha256": hex}, ...}}

``check`` compares a folder with its manifest: the cheap way (sizes, and for each kind of file what can be
checked without reading its data: safetensors headers, Parquet footers, JSON) or fully (every SHA-256);
``verify`` is ``modelzoos verify DIR``: the full check of a zoo directory or a repository folder (for a
repository also ``repository.validate_repo``, which checks every Parquet page against its checksum). Files
that are not in the manifest are not ours (``hub.push`` uploads only listed files).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from modelzoos import tensorfile
from modelzoos.files import write_json

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


class ManifestError(ValueError):
    """A folder's files differ from its manifest (or it has none); the message lists every damaged file."""


def digest(path: Path, h) -> str:
    """Hex digest of a file by the hashlib object ``h`` (fed in 1 MiB blocks)."""
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    return digest(path, hashlib.sha256())


def record(root: Path, paths: Iterable[Path]) -> dict[str, dict]:
    """{relative path: {"size", "sha256"}} of the files ``paths`` under ``root``, sorted by path."""
    root = Path(root)
    out = {}
    for path in paths:
        out[Path(path).relative_to(root).as_posix()] = {"size": Path(path).stat().st_size, "sha256": sha256(path)}
    return dict(sorted(out.items()))


def write(root: Path, files: dict[str, dict]) -> None:
    """Write ``root``/manifest.json listing ``files`` (``record``'s result)."""
    write_json(Path(root) / MANIFEST, {"format_version": FORMAT_VERSION, "files": dict(sorted(files.items()))})


def read(root: Path) -> dict[str, dict] | None:
    """The files of ``root``/manifest.json, or None when there is none; ManifestError when it is unreadable."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
        files = raw["files"]
        if raw.get("format_version") != FORMAT_VERSION or not all(
                isinstance(e, dict) and isinstance(e.get("size"), int) and isinstance(e.get("sha256"), str)
                for e in files.values()):
            raise ValueError("unexpected content")
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ManifestError(f"{path} is not a manifest of format version {FORMAT_VERSION} ({err}); rerun the "
                            "command that wrote the folder") from err
    for name in files:
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise ManifestError(f"{path} lists {name!r}, a path outside the folder")
    return files


def _parquet_footer(path: Path) -> str | None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pq.read_metadata(path)
    except (pa.ArrowException, OSError) as err:
        return f"{path}: unreadable Parquet footer ({err})"
    return None


def _json(path: Path) -> str | None:
    try:
        json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        return f"{path}: not valid JSON ({err})"
    return None


# What the cheap check reads of each kind of file, besides its size (never the data).
CHEAP_CHECKS: dict[str, Callable[[Path], str | None]] = {
    ".safetensors": tensorfile.check,
    ".parquet": _parquet_footer,
    ".json": _json,
}


@dataclass(frozen=True)
class Damage:
    """One file that differs from the manifest: its relative path and what is wrong."""

    path: str
    problem: str


def check(root: Path, files: dict[str, dict], full: bool = False) -> list[Damage]:
    """The files of ``root`` that differ from ``files`` (a manifest): missing, another size, a failed cheap
    check, and with ``full`` another SHA-256."""
    root = Path(root)
    damaged = []
    for name, entry in files.items():
        path = root / name
        if not path.is_file():
            damaged.append(Damage(name, "missing"))
            continue
        size = path.stat().st_size
        if size != entry["size"]:
            damaged.append(Damage(name, f"{size:,} bytes, the manifest says {entry['size']:,}"))
            continue
        cheap = CHEAP_CHECKS.get(path.suffix)
        problem = cheap(path) if cheap is not None else None
        if problem is None and full and sha256(path) != entry["sha256"]:
            problem = "content changed (SHA-256 differs from the manifest)"
        if problem is not None:
            damaged.append(Damage(name, problem.removeprefix(f"{path}: ")))
    return damaged


def describe(root: Path, damaged: list[Damage]) -> str:
    """The damaged files as lines ``- <path>: <problem>``."""
    return "\n".join(f"- {Path(root) / d.path}: {d.problem}" for d in damaged)


@dataclass(frozen=True)
class Verified:
    """What ``verify`` checked: the folder, its kind ("zoo directory" or "repository folder"), the number
    of files and their bytes."""

    path: Path
    kind: str
    files: int
    bytes: int


def verify(path: str | Path) -> Verified:
    """The full check of a zoo directory (``zoo.json``) or a repository folder (``README.md`` and ``data/``)
    against its manifest, and for a repository ``validate_repo`` (Parquet page checksums included).
    ManifestError lists every damaged or missing file; a folder that is neither raises ValueError."""
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder; give a zoo directory or a repository folder")
    kind = "zoo directory" if (root / "zoo.json").is_file() else "repository folder" if (
        root / "data").is_dir() else None
    if kind is None:
        raise ValueError(f"{root} is neither a zoo directory (no zoo.json) nor a repository folder (no data/)")
    files = read(root)
    if files is None:
        raise ManifestError(f"{root} has no {MANIFEST}: the {kind} is unfinished, or was written before modelzoos "
                            "recorded manifests (rerun the command that wrote it to add one)")
    damaged = check(root, files, full=True)
    if damaged:
        raise ManifestError(f"{root}: {len(damaged)} of {len(files)} file(s) damaged or missing:\n"
                            f"{describe(root, damaged)}\nFix: rerun the command that wrote the {kind} (`modelzoos "
                            f"{'generate' if kind == 'zoo directory' else 'build'}`); it replaces what is damaged")
    if kind == "repository folder":
        from modelzoos.repository import validate_repo

        validate_repo(root)
    return Verified(root, kind, len(files), sum(e["size"] for e in files.values()))
