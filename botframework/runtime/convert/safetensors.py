"""Read a .safetensors file with numpy: no torch, no safetensors package.

    [8 bytes: header length N, little-endian u64][N bytes: JSON header][raw tensor bytes]
    header: {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
             "__metadata__": {...}}   offsets count from the first byte after the header

Tensors come back as read-only memory maps (a 90 MB checkpoint is not read into RAM until
used), in name order as the safetensors library itself lists them. Every header entry is
checked against the file before anything is mapped: a truncated download or a hand-edited
header is a ValueError naming the tensor, not a numpy error later.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

# little-endian on disk whatever the machine: "<" dtypes, byte order fixed
_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U8": np.dtype("u1"), "BOOL": np.dtype("?"),
}
_BF16 = "BF16"  # no numpy dtype: widened to float32 (the upper half of its bits)
_MAX_HEADER_BYTES = 100 << 20  # the format's own limit


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """name -> array (read-only memmap; BF16 tensors widened to float32), sorted by name."""
    size = path.stat().st_size
    with path.open("rb") as f:
        prefix = f.read(8)
        if len(prefix) != 8:
            raise ValueError(f"{path}: too short to be a safetensors file")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > min(_MAX_HEADER_BYTES, size - 8):
            raise ValueError(f"{path}: header length {header_len} does not fit the file ({size} bytes)")
        try:
            header = json.loads(f.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: header is not JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise ValueError(f"{path}: header is not a JSON object")
    data_start = 8 + header_len
    tensors: dict[str, np.ndarray] = {}
    for name in sorted(k for k in header if k != "__metadata__"):
        tensors[name] = _tensor(path, name, header[name], data_start, size)
    return tensors


def _tensor(path: Path, name: str, info: object, data_start: int, size: int) -> np.ndarray:
    if not isinstance(info, dict):
        raise ValueError(f"{path}: tensor {name!r}: entry is not an object")
    dtype_name, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
        raise ValueError(f"{path}: tensor {name!r}: bad shape {shape!r}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
            and 0 <= offsets[0] <= offsets[1] and data_start + offsets[1] <= size):
        raise ValueError(f"{path}: tensor {name!r}: data offsets {offsets!r} outside the file")
    count = int(np.prod(shape, dtype=np.int64))
    if dtype_name == _BF16:
        raw = _map(path, np.dtype("<u2"), data_start + offsets[0], count, offsets, name)
        return (raw.astype(np.uint32) << 16).view(np.float32).reshape(shape)
    dtype = _DTYPES.get(str(dtype_name))
    if dtype is None:
        raise ValueError(f"{path}: tensor {name!r}: unsupported dtype {dtype_name!r}")
    return _map(path, dtype, data_start + offsets[0], count, offsets, name).reshape(shape)


def _map(path: Path, dtype: np.dtype, offset: int, count: int, offsets: list[int], name: str) -> np.ndarray:
    if offsets[1] - offsets[0] != count * dtype.itemsize:
        raise ValueError(f"{path}: tensor {name!r}: {offsets[1] - offsets[0]} bytes for {count} values "
                         f"of {dtype.itemsize} bytes")
    if count == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=(count,))
