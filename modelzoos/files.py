"""Writing files safely: the one atomic-write helper of the package, and the folders a command writes.

Every file modelzoos writes goes to a hidden temporary name in its destination folder
(``.<name>.<random>.tmp``), is flushed to disk and renamed onto its final name, so a reader never sees a
half-written file under a final name and a killed writer leaves only ``.*.tmp`` files, which the next
writer of that folder removes (``sweep_temporaries``). Temporary files are created with mode 0o666 minus
the process umask, so finished files carry the same permissions as any file the user creates.

A command that writes a folder (``generate --out``, ``build --repo``) first takes the folder's advisory
lock (``lock``: a second process gets an error naming the first one's pid) and writes only into a folder
that is new, empty or already its own (``check_ours``): files of others are never overwritten or deleted.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

TMP_SUFFIX = ".tmp"
_TEMPORARY = re.compile(r"^\..+\.[0-9a-f]{32}\.tmp$")  # the names temporary_path makes, and only those
LOCK = ".modelzoos.lock"  # the lock file of a folder while a command writes it
DIGESTS = ".sources-sha256.json"  # `modelzoos import`: SHA-256 of its sources, kept in the zoo directory


class FolderInUseError(RuntimeError):
    """Another process holds the folder's lock; the message names its pid."""


def temporary_path(path: Path, suffix: str = TMP_SUFFIX) -> Path:
    """A fresh hidden name next to ``path`` (``.<name>.<random><suffix>``), not yet created; ``sweep_temporaries``
    removes the ``.tmp`` ones."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex}{suffix}")


def commit(tmp: Path, path: Path) -> None:
    """Flush ``tmp`` to disk and rename it onto ``path`` (same folder)."""
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file next to ``path``, then ``commit`` it onto ``path``.

    The temporary file exists (empty, umask permissions) before ``write`` runs; on any exception it is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        write(tmp)
        commit(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: Path, obj) -> None:
    """Write ``obj`` as indented JSON (with a final newline) to ``path`` atomically."""
    write_text(path, json.dumps(obj, indent=2) + "\n")


def sweep_temporaries(directory: Path) -> None:
    """Remove the temporary files that killed writers left directly in ``directory`` (names made by
    ``temporary_path`` only: other files are never touched)."""
    for tmp in Path(directory).glob(f".*{TMP_SUFFIX}"):
        if is_temporary(tmp) and tmp.is_file():
            tmp.unlink(missing_ok=True)


def is_temporary(path: Path) -> bool:
    """True for the names ``temporary_path`` makes."""
    return bool(_TEMPORARY.match(Path(path).name))


@contextlib.contextmanager
def lock(directory: Path, option: str | None = None) -> Iterator[None]:
    """Hold the advisory lock of ``directory`` (created if missing) while the block runs; FolderInUseError,
    naming the other process's pid (and ``option``, the command-line option that chose the folder), if another
    process holds it. The lock is ``fcntl.flock`` on ``directory/.modelzoos.lock``, which holds the pid: the
    kernel releases it when the process ends, however it ends; the file is deleted on release (a killed
    process leaves it behind, harmless: the next run takes it over)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            other = f", or choose another {option}" if option else ""
            raise FolderInUseError(f"{directory} is being written by another modelzoos process (pid {pid}); wait "
                                   f"for it to finish{other}") from None
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:  # not a file its last holder deleted meanwhile
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        path.unlink(missing_ok=True)  # while still holding it: a waiting opener then retries on a new file
        os.close(fd)


def check_ours(directory: Path, marker: str, what: str, option: str) -> None:
    """ValueError unless ``directory`` is missing, empty or holds ``marker`` (the file that makes it a
    ``what`` of modelzoos); our lock file, digest cache and temporary files do not count. Never touches a file."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"{directory} is a file, not a {what}; choose another {option}")
    if not directory.is_dir() or (directory / marker).exists():
        return
    others = sorted(p.name for p in directory.iterdir() if p.name not in (LOCK, DIGESTS) and not is_temporary(p))
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise ValueError(f"{directory} is not empty ({shown}) and is not a {what} (no {marker}); modelzoos writes "
                         f"only into a new or empty folder or one it wrote: choose another {option}")
