"""Hostile GGUF files: ~35 hand-made broken ones and random bit flips of the real header.

Each is loaded through botframework.native.Model in a child process with a 4 GiB address-space
limit and a 60 s timeout (gguf_loader.py). A file may load (a harmless flip in a token string) or
be refused with ModelLoadError; it must never crash the process (a signal, an abort), hang, or
fail with another exception type. The default run flips 40 headers; `-m slow` flips 200.
Then one broken file is declared as the second model of a running server: asking for it is an
error answer, and the first model keeps serving.
"""

from __future__ import annotations

import os
import random
import struct
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from gguf_loader import Loader, Outcome
from server_proc import served

MODEL = "smollm2-135m-instruct"


@dataclass
class Layout:
    path: Path
    data_offset: int
    n_tensors: int
    n_kv: int
    fields: dict[str, int]  # key -> offset of the KV entry
    tensors: list[tuple[str, int]]  # (name, offset of its info entry)
    size: int


@pytest.fixture(scope="module")
def layout(model_path: Path) -> Layout:
    import gguf

    reader = gguf.GGUFReader(model_path)
    return Layout(path=model_path, data_offset=reader.data_offset, n_tensors=len(reader.tensors),
                  n_kv=len(reader.fields) - 3, fields={k: f.offset for k, f in reader.fields.items()},
                  tensors=[(t.name, t.field.offset) for t in reader.tensors], size=model_path.stat().st_size)


@pytest.fixture(scope="module")
def loader() -> Iterator[Loader]:
    ld = Loader(timeout_s=60)
    yield ld
    ld.close()


def write_variant(layout: Layout, out: Path, header: bytes | bytearray | None = None, length: int | None = None) -> Path:
    """The real file with its header replaced by `header` (same length), cut to `length` bytes."""
    length = layout.size if length is None else length
    with layout.path.open("rb") as src, out.open("wb") as dst:
        head = bytes(header) if header is not None else src.read(layout.data_offset)
        dst.write(head[:length])
        remaining = length - min(length, len(head))
        src.seek(len(head))
        while remaining > 0:
            n = os.copy_file_range(src.fileno(), dst.fileno(), remaining)
            if n == 0:
                break
            remaining -= n
    return out


def _u32(h: bytearray, at: int, value: int) -> None:
    h[at:at + 4] = struct.pack("<I", value & 0xFFFFFFFF)


def _u64(h: bytearray, at: int, value: int) -> None:
    h[at:at + 8] = struct.pack("<Q", value & 0xFFFFFFFFFFFFFFFF)


def _tensor_info(h: bytearray, at: int) -> dict[str, int]:
    """Offsets inside a tensor info entry: name_len, n_dims, dims, type, offset."""
    (name_len,) = struct.unpack_from("<Q", h, at)
    n_dims_at = at + 8 + name_len
    (n_dims,) = struct.unpack_from("<I", h, n_dims_at)
    dims_at = n_dims_at + 4
    type_at = dims_at + 8 * n_dims
    return {"name_len": at, "name": at + 8, "n_dims": n_dims_at, "dims": dims_at, "ndim": n_dims,
            "type": type_at, "offset": type_at + 4}


def _kv_value_at(h: bytearray, at: int) -> tuple[int, int]:
    """(offset of the value type, offset of the value) of the KV entry at `at`."""
    (key_len,) = struct.unpack_from("<Q", h, at)
    type_at = at + 8 + key_len
    return type_at, type_at + 4


def _rename(h: bytearray, at: int, new: bytes) -> None:
    (n,) = struct.unpack_from("<Q", h, at)
    assert len(new) == n, (new, n)
    h[at + 8:at + 8 + n] = new


def hand_made(layout: Layout) -> list[tuple[str, Callable[[bytearray], None] | int]]:
    """(name, a mutation of the header, or a length to cut the file to)."""
    f = layout.fields
    FIELDS.update(f)
    first = layout.tensors[0][1]
    last = layout.tensors[-1][1]
    names = dict(layout.tensors)
    k_at, q_name = names["blk.0.attn_k.weight"], b"blk.0.attn_q.weight"

    def tinfo(at: int, key: str, value: int, u64: bool = True) -> Callable[[bytearray], None]:
        def m(h: bytearray) -> None:
            info = _tensor_info(h, at)
            (_u64 if u64 else _u32)(h, info[key], value)
        return m

    def alignment(value: int) -> Callable[[bytearray], None]:
        def m(h: bytearray) -> None:  # general.file_type (u32, same key length) becomes general.alignment
            _rename(h, f["general.file_type"], b"general.alignment")
            _u32(h, _kv_value_at(h, f["general.file_type"])[1], value)
        return m

    def kv(key: str, fn: Callable[[bytearray, int, int], None]) -> Callable[[bytearray], None]:
        def m(h: bytearray) -> None:
            type_at, value_at = _kv_value_at(h, f[key])
            fn(h, type_at, value_at)
        return m

    def dims(values: tuple[int, ...]) -> Callable[[bytearray], None]:
        def m(h: bytearray) -> None:
            info = _tensor_info(h, first)
            for i, v in enumerate(values[:info["ndim"]]):
                _u64(h, info["dims"] + 8 * i, v)
        return m

    cases: list[tuple[str, Callable[[bytearray], None] | int]] = [
        ("bad magic", lambda h: h.__setitem__(slice(0, 4), b"GGUX")),
        ("lowercase magic", lambda h: h.__setitem__(slice(0, 4), b"gguf")),
        ("GGML magic", lambda h: h.__setitem__(slice(0, 4), b"lmgg")),
        ("version 0", lambda h: _u32(h, 4, 0)),
        ("version 1", lambda h: _u32(h, 4, 1)),
        ("version 4", lambda h: _u32(h, 4, 4)),
        ("version 0xFFFFFFFF", lambda h: _u32(h, 4, 0xFFFFFFFF)),
        ("version byte-swapped", lambda h: h.__setitem__(slice(4, 8), struct.pack(">I", 3))),
        ("tensor count 0", lambda h: _u64(h, 8, 0)),
        ("tensor count +1", lambda h: _u64(h, 8, layout.n_tensors + 1)),
        ("tensor count -1", lambda h: _u64(h, 8, layout.n_tensors - 1)),
        ("tensor count 2^63", lambda h: _u64(h, 8, 1 << 63)),
        ("tensor count 2^64-1", lambda h: _u64(h, 8, -1)),
        ("kv count 0", lambda h: _u64(h, 16, 0)),
        ("kv count +1", lambda h: _u64(h, 16, layout.n_kv + 1)),
        ("kv count 2^62", lambda h: _u64(h, 16, 1 << 62)),
        ("kv count 2^64-1", lambda h: _u64(h, 16, -1)),
        ("alignment 0", alignment(0)),
        ("alignment 3", alignment(3)),
        ("alignment 2^31", alignment(1 << 31)),
        ("alignment 0xFFFFFFFF", alignment(0xFFFFFFFF)),
        ("tensor offset past the end", tinfo(first, "offset", 1 << 40)),
        ("last tensor offset past the end", tinfo(last, "offset", layout.size)),
        ("tensor offset that overflows", tinfo(last, "offset", (1 << 64) - 64)),
        ("tensor offset misaligned", tinfo(first, "offset", 1)),
        ("tensor dim 2^62", dims((1 << 62, 1))),
        ("tensor dims overflow the product", dims((1 << 32, 1 << 32))),
        ("tensor dim 0", dims((0, 0))),
        ("tensor n_dims 0", tinfo(first, "n_dims", 0, u64=False)),
        ("tensor n_dims 5", tinfo(first, "n_dims", 5, u64=False)),
        ("tensor n_dims 2^31", tinfo(first, "n_dims", 1 << 31, u64=False)),
        ("tensor type 9999", tinfo(first, "type", 9999, u64=False)),
        ("tensor type 4 (removed Q4_2)", tinfo(first, "type", 4, u64=False)),
        ("tensor name length 2^63", tinfo(first, "name_len", 1 << 63)),
        ("tensor name length past the end", tinfo(last, "name_len", 1 << 20)),
        ("duplicate tensor name", lambda h: _rename(h, k_at, q_name)),
        ("duplicate kv key", lambda h: _rename(h, f["general.name"], b"general.type")
         if len(b"general.type") == struct.unpack_from("<Q", h, f["general.name"])[0] else
         _rename(h, f["llama.block_count"], b"llama.vocab_size")),
        ("kv key length 2^63", lambda h: _u64(h, f["general.architecture"], 1 << 63)),
        ("kv value type 99", kv("llama.block_count", lambda h, t, v: _u32(h, t, 99))),
        ("kv string length 2^63", kv("general.architecture", lambda h, t, v: _u64(h, v, 1 << 63))),
        ("kv array length 2^62", kv("tokenizer.ggml.tokens", lambda h, t, v: _u64(h, v + 4, 1 << 62))),
        ("kv array of arrays", kv("tokenizer.ggml.token_type", lambda h, t, v: _u32(h, v, 9))),
        ("block_count 2^31", block_count(1 << 31)),
        ("block_count 0", block_count(0)),
        ("block_count 100,000", block_count(100_000)),
        ("embedding_length 0", kv("llama.embedding_length", lambda h, t, v: _u32(h, v, 0))),
        ("head_count 0", kv("llama.attention.head_count", lambda h, t, v: _u32(h, v, 0))),
        ("vocab token count short", kv("tokenizer.ggml.token_type", lambda h, t, v: _u64(h, v + 4, 10))),
        ("empty file", 0),
        ("4 bytes", 4),
        ("20 bytes", 20),
        ("cut inside the KV", layout.fields["tokenizer.ggml.tokens"] + 100),
        ("cut inside the tensor infos", (first + last) // 2),
        ("cut at the data", layout.data_offset),
        ("cut halfway through the data", (layout.data_offset + layout.size) // 2),
        ("one byte short", layout.size - 1),
    ]
    return cases


def block_count(value: int) -> Callable[[bytearray], None]:
    """llama.block_count set to `value`: out of range, llama.cpp aborts (GGML_ASSERT) instead of failing."""
    def m(h: bytearray) -> None:
        _u32(h, _kv_value_at(h, FIELDS["llama.block_count"])[1], value)
    return m


FIELDS: dict[str, int] = {}


def _check(name: str, outcome: Outcome, failures: list[str]) -> None:
    if outcome.outcome == "loaded" or (outcome.outcome == "refused" and outcome.type == "ModelLoadError"):
        return
    failures.append(f"{name}: {outcome.outcome} {outcome.type} {outcome.message[-300:]!r}")


def test_the_real_file_loads_under_the_memory_limit(layout: Layout, loader: Loader) -> None:
    assert loader.load(layout.path).outcome == "loaded"


def test_hand_made_broken_ggufs_are_refused_cleanly(layout: Layout, loader: Loader, tmp_path: Path) -> None:
    failures: list[str] = []
    seen: Counter[str] = Counter()
    real_header = layout.path.open("rb").read(layout.data_offset)
    for name, how in hand_made(layout):
        out = tmp_path / "broken.gguf"
        if isinstance(how, int):
            write_variant(layout, out, length=how)
        else:
            header = bytearray(real_header)
            how(header)
            write_variant(layout, out, header=header)
        outcome = loader.load(out)
        seen[outcome.outcome] += 1
        print(f"{name}: {outcome.outcome} {outcome.type} {outcome.message[:120]!r}")
        _check(name, outcome, failures)
        out.unlink()
    print(f"hand-made: {sum(seen.values())} files, {dict(seen)}")
    assert not failures, "\n".join(failures)


def _bit_flips(layout: Layout, loader: Loader, tmp_path: Path, count: int) -> None:
    rng = random.Random(21)
    real_header = layout.path.open("rb").read(layout.data_offset)
    tensor_infos = layout.tensors[0][1]
    failures: list[str] = []
    seen: Counter[str] = Counter()
    for i in range(count):
        header = bytearray(real_header)
        flips = []
        for _ in range(rng.choice((1, 1, 2, 4))):
            region = rng.randrange(3)  # the counts and hparams, the tensor infos, anywhere
            at = (rng.randrange(1062) if region == 0 else rng.randrange(tensor_infos, layout.data_offset)
                  if region == 1 else rng.randrange(layout.data_offset))
            bit = rng.randrange(8)
            header[at] ^= 1 << bit
            flips.append((at, bit))
        out = write_variant(layout, tmp_path / "flipped.gguf", header=header)
        outcome = loader.load(out)
        seen[outcome.outcome] += 1
        _check(f"flip #{i} {flips}", outcome, failures)
        out.unlink()
    print(f"bit flips: {count} files, {dict(seen)}")
    assert not failures, "\n".join(failures)


def test_200_bit_flipped_headers_load_or_are_refused(layout: Layout, loader: Loader, tmp_path: Path) -> None:
    _bit_flips(layout, loader, tmp_path, 200)


@pytest.mark.slow
def test_2000_bit_flipped_headers_load_or_are_refused(layout: Layout, loader: Loader, tmp_path: Path) -> None:
    _bit_flips(layout, loader, tmp_path, 2000)


# llama.block_count out of [1, LLAMA_MAX_LAYERS] aborted the process (llama-model.cpp GGML_ASSERT) and
# a server asked for such a model died; refused with ModelLoadError since b56c8a5


@pytest.mark.parametrize("value", [1 << 31, 0, 100_000])
def test_an_out_of_range_block_count_is_refused(layout: Layout, loader: Loader, tmp_path: Path, value: int) -> None:
    hand_made(layout)  # fills FIELDS
    header = bytearray(layout.path.open("rb").read(layout.data_offset))
    block_count(value)(header)
    outcome = loader.load(write_variant(layout, tmp_path / "blocks.gguf", header=header))
    assert outcome.outcome == "refused" and outcome.type == "ModelLoadError", outcome


def test_a_second_model_with_an_out_of_range_block_count_does_not_kill_the_server(
        layout: Layout, tmp_path: Path) -> None:
    hand_made(layout)
    header = bytearray(layout.path.open("rb").read(layout.data_offset))
    block_count(1 << 31)(header)
    broken = write_variant(layout, tmp_path / "blocks-model.gguf", header=header)
    with served(["--model", MODEL, "--model", str(broken), "--parallel", "2", "--ctx-size", "2048",
                 "--log-level", "critical"]) as (url, proc):
        body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        try:
            httpx.post(f"{url}/v1/chat/completions", json={**body, "model": "blocks-model"}, timeout=120)
        except httpx.HTTPError:
            pass
        assert proc.poll() is None, f"the server died (exit {proc.returncode})"
        assert httpx.post(f"{url}/v1/chat/completions", json={**body, "model": MODEL}, timeout=120).status_code == 200


def test_a_broken_second_model_does_not_stop_the_first(layout: Layout, tmp_path: Path) -> None:
    header = bytearray(layout.path.open("rb").read(layout.data_offset))
    _u64(header, 8, 1 << 63)  # tensor count 2^63
    broken = write_variant(layout, tmp_path / "broken-model.gguf", header=header)
    with served(["--model", MODEL, "--model", str(broken), "--parallel", "2", "--ctx-size", "2048",
                 "--log-level", "critical"]) as (url, proc):
        body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        for _ in range(3):
            r = httpx.post(f"{url}/v1/chat/completions", json={**body, "model": "broken-model"}, timeout=120)
            assert 400 <= r.status_code < 600 and r.status_code != 500, (r.status_code, r.text[:300])
            assert "error" in r.json()
            assert proc.poll() is None, "the server died loading a broken model"
            ok = httpx.post(f"{url}/v1/chat/completions", json={**body, "model": MODEL}, timeout=120)
            assert ok.status_code == 200, ok.text[:300]
        print(f"broken second model answers {r.status_code}: {r.text[:200]}")
        assert httpx.get(f"{url}/health", timeout=10).status_code == 200
