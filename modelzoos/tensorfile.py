"""safetensors files as modelzoos writes them: deterministic bytes, a checksum of the data, streamed reading.

The format (https://huggingface.co/docs/safetensors): an 8-byte little-endian header length N, N bytes of
JSON header (``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}``, padded
with spaces to a multiple of 8), then the raw little-endian tensor data. Any safetensors reader reads these
files. What ``write`` adds:

- deterministic bytes: tensors in name order, the header JSON with sorted keys and no spaces, so the same
  tensors and metadata give the same file in every process (the Rust writer serialises the metadata from a
  hash map, whose order changes from run to run);
- ``__metadata__["sha256"]``: the SHA-256 of the data section, which ``read`` and ``scan`` verify, so bytes
  flipped inside the data (where no header check can see them) are an error naming the file.

``check`` is the cheap check (header parses, sizes add up: no data read); ``scan`` streams a file's rows in
blocks of bounded size (memory independent of the file size) while verifying the checksum.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from modelzoos.files import atomic_write

CHECKSUM = "sha256"  # the __metadata__ key of the data section's SHA-256 (hex)
DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
          "U8": "u1", "U16": "<u2", "U32": "<u4", "U64": "<u8", "BOOL": "?"}
_CODES = {np.dtype(v): k for k, v in DTYPES.items()}
MAX_HEADER_BYTES = 100 * 2**20  # as the safetensors library
BLOCK_BYTES = 2**24  # read size of ``scan``: only the peak memory depends on it


class TensorFileError(ValueError):
    """A safetensors file is truncated, corrupt or fails its checksum; the message names the file and what."""


def _array(value: Any) -> np.ndarray:
    """A C-contiguous little-endian numpy array of a numpy array or a CPU torch tensor."""
    if hasattr(value, "detach"):  # torch.Tensor, without importing torch
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if not array.flags.c_contiguous:  # (np.ascontiguousarray would make a 0-d array 1-d)
        array = array.copy(order="C")
    if array.dtype not in _CODES:
        raise TypeError(f"dtype {array.dtype} cannot be stored; valid: {', '.join(map(str, _CODES))}")
    return array.astype(array.dtype.newbyteorder("<"), copy=False)


def encode_header(tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> tuple[bytes, list[str]]:
    """(8-byte length + padded header JSON, tensor names in data order) for ``tensors`` and ``metadata``."""
    names = sorted(tensors)
    entries: dict[str, Any] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for name in names:
        a = tensors[name]
        entries[name] = {"dtype": _CODES[a.dtype.newbyteorder("=")], "shape": list(a.shape),
                         "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    text = json.dumps(entries, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text, names


def write(path: Path, tensors: Mapping[str, Any], metadata: Mapping[str, str]) -> None:
    """Write ``tensors`` (numpy arrays or CPU torch tensors) and the string ``metadata`` to ``path`` atomically,
    with the data section's SHA-256 under ``__metadata__["sha256"]``; the bytes depend on the contents only."""
    arrays = {name: _array(t) for name, t in tensors.items()}
    digest = hashlib.sha256()
    for name in sorted(arrays):
        digest.update(memoryview(arrays[name]).cast("B"))
    if any(not isinstance(v, str) for v in metadata.values()):
        raise TypeError("safetensors metadata values must be strings")
    head, names = encode_header(arrays, {**metadata, CHECKSUM: digest.hexdigest()})

    def dump(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(head)
            for name in names:
                f.write(memoryview(arrays[name]).cast("B"))

    atomic_write(path, dump)


# ---------------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------------


def read_header(path: Path) -> tuple[dict[str, dict], dict[str, str], int]:
    """({tensor: {dtype, shape, data_offsets}}, metadata, byte offset of the data section); TensorFileError if
    the header is unreadable or the file's size does not match it (truncated or padded)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(8)
            n = struct.unpack("<Q", raw)[0] if len(raw) == 8 else -1
            if not 0 < n <= min(MAX_HEADER_BYTES, size - 8):
                raise TensorFileError(f"{path}: {size} bytes, not a safetensors file (header length {n})")
            header = json.loads(f.read(n))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise TensorFileError(f"{path}: unreadable safetensors header ({err})") from err
    if not isinstance(header, dict):
        raise TensorFileError(f"{path}: the safetensors header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    end = 0
    try:
        for name, t in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
            begin, stop = t["data_offsets"]
            if begin != end or stop - begin != math.prod(t["shape"]) * np.dtype(DTYPES[t["dtype"]]).itemsize:
                raise TensorFileError(f"{path}: tensor {name!r} has inconsistent data offsets")
            end = stop
    except (KeyError, TypeError, ValueError) as err:
        raise TensorFileError(f"{path}: malformed safetensors header ({type(err).__name__}: {err})") from err
    if 8 + n + end != size:
        raise TensorFileError(f"{path}: {size:,} bytes, its header describes {8 + n + end:,} (truncated or damaged)")
    return header, metadata, 8 + n


def check(path: Path) -> str | None:
    """The cheap check: None if the header parses and the file has the size it describes, else the problem."""
    try:
        read_header(path)
    except TensorFileError as err:
        return str(err)
    return None


def scan(path: Path, visit: Callable[[str, np.ndarray], None] | None = None,
         block_bytes: int = BLOCK_BYTES) -> tuple[dict[str, str], str]:
    """Read ``path`` once in blocks of whole rows (≤ ``block_bytes`` unless one row is larger), calling
    ``visit(tensor, rows)`` with each block (shape [n, *shape[1:]], a view valid during the call) in file
    order; verify the checksum at the end. Returns the metadata and the SHA-256 of the whole file (for a
    manifest). TensorFileError names a damaged file."""
    header, metadata, start = read_header(path)
    digest, whole = hashlib.sha256(), hashlib.sha256()
    with open(path, "rb") as f:
        whole.update(f.read(start))
        for name, t in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
            dtype, shape = np.dtype(DTYPES[t["dtype"]]), tuple(t["shape"])
            rows, row_shape = (shape[0], shape[1:]) if shape else (1, ())
            row_bytes = max(1, math.prod(row_shape) * dtype.itemsize)
            step = max(1, block_bytes // row_bytes)
            for first in range(0, rows, step):
                n = min(step, rows - first)
                buf = f.read(n * row_bytes)
                if len(buf) != n * row_bytes:
                    raise TensorFileError(f"{path}: truncated inside tensor {name!r}")
                digest.update(buf)
                whole.update(buf)
                if visit is not None:
                    visit(name, np.frombuffer(buf, dtype=dtype).reshape(n, *row_shape))
    _verify(path, metadata, digest.hexdigest())
    return metadata, whole.hexdigest()


def read(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """All tensors (writable numpy arrays) and the metadata of ``path``, the checksum verified (files without
    one, written before modelzoos recorded it, are read unverified)."""
    header, metadata, start = read_header(path)
    data = bytearray(Path(path).read_bytes()[start:])
    _verify(path, metadata, hashlib.sha256(data).hexdigest())
    tensors = {}
    for name, t in header.items():
        begin, end = t["data_offsets"]
        tensors[name] = np.frombuffer(data, dtype=DTYPES[t["dtype"]], count=(end - begin) // np.dtype(
            DTYPES[t["dtype"]]).itemsize, offset=begin).reshape(t["shape"])
    return tensors, metadata


def _verify(path: Path, metadata: dict[str, str], digest: str) -> None:
    expected = metadata.get(CHECKSUM)
    if expected is not None and expected != digest:
        raise TensorFileError(f"{path}: the data fails its SHA-256 checksum (bytes changed after writing)")
