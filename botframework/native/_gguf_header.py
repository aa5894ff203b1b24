"""A GGUF file's key/value header, read by us before llama.cpp loads the file, for the values
llama.cpp asserts on: an assert aborts the whole process, the server and its other models with it.

    header_problem(path) -> why llama.cpp would abort on it, or None. Only the header is read,
    with every count and length bounded; a header this cannot read is left to llama.cpp, which
    reports it as a load error.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

MAX_KV = 1 << 20
MAX_STRING = 1 << 24
MAX_ARRAY = 1 << 28
MAX_LAYERS = 512  # llama.cpp's LLAMA_MAX_LAYERS (llama-hparams.h): n_layer is asserted against it
_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # fixed-size types -> bytes
_INTS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 10: "<Q", 11: "<q"}
STRING, ARRAY = 8, 9


class _Bad(Exception):
    pass


def _read(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise _Bad("truncated")
    return data


def _string(f: BinaryIO) -> str:
    (n,) = struct.unpack("<Q", _read(f, 8))
    if n > MAX_STRING:
        raise _Bad("string too long")
    return _read(f, n).decode("utf-8", "replace")


def _entries(f: BinaryIO) -> Iterator[tuple[str, int | str | None]]:
    """(key, value) of each entry: ints and strings as such, anything else None (skipped over)."""
    if _read(f, 4) != b"GGUF" or struct.unpack("<I", _read(f, 4))[0] < 2:
        return
    _n_tensors, n_kv = struct.unpack("<QQ", _read(f, 16))
    for _ in range(min(n_kv, MAX_KV)):
        key = _string(f)
        (kind,) = struct.unpack("<I", _read(f, 4))
        if kind in _INTS:
            yield key, int(struct.unpack(_INTS[kind], _read(f, _SIZES[kind]))[0])
        elif kind in _SIZES:
            _read(f, _SIZES[kind])
            yield key, None
        elif kind == STRING:
            yield key, _string(f)
        elif kind == ARRAY:
            item, n = struct.unpack("<IQ", _read(f, 12))
            if n > MAX_ARRAY or (item not in _SIZES and item != STRING):
                raise _Bad("bad array")
            if item == STRING:
                for _ in range(n):
                    _string(f)
            else:
                f.seek(_SIZES[item] * n, 1)
            yield key, None
        else:
            raise _Bad("unknown type")


def header_problem(path: str | Path) -> str | None:
    """Why llama.cpp would abort loading this file (instead of refusing it), or None."""
    values: dict[str, int | str | None] = {}
    try:
        with open(path, "rb") as f:
            for key, value in _entries(f):
                values[key] = value
                arch = values.get("general.architecture")
                if isinstance(arch, str) and f"{arch}.block_count" in values:
                    break
    except (OSError, _Bad, struct.error):
        pass  # unreadable here: llama.cpp's own checks answer
    arch = values.get("general.architecture")
    count = values.get(f"{arch}.block_count") if isinstance(arch, str) else None
    if isinstance(count, int) and not 1 <= count <= MAX_LAYERS:
        return f"{arch}.block_count is {count}; llama.cpp supports 1 to {MAX_LAYERS} layers"
    return None
