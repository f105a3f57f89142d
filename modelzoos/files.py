"""Writing files safely: the one atomic-write helper of the package.

Every file modelzoos writes goes to a hidden temporary name in its destination folder
(``.<name>.<random>.tmp``), is flushed to disk and renamed onto its final name, so a reader never sees a
half-written file under a final name and a killed writer leaves only ``.*.tmp`` files, which the next
writer of that folder removes (``sweep_temporaries``). Temporary files are created with mode 0o666 minus
the process umask, so finished files carry the same permissions as any file the user creates.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Callable
from pathlib import Path

TMP_SUFFIX = ".tmp"
_TEMPORARY = re.compile(r"^\..+\.[0-9a-f]{32}\.tmp$")  # the names temporary_path makes, and only those


def temporary_path(path: Path) -> Path:
    """A fresh hidden temporary name next to ``path`` (``.<name>.<random>.tmp``), not yet created."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex}{TMP_SUFFIX}")


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
        if _TEMPORARY.match(tmp.name):
            tmp.unlink(missing_ok=True)
