"""L0 wrappers fed bad input: every failure is a typed botframework error, never a crash,
and the process keeps working afterwards.

    bad path / file  -> Model          -> ModelNotFoundError | ModelLoadError
    bad batch        -> Context.decode -> InvalidRequestError | DecodeError | KVCacheFullError
    bad token id     -> Model          -> InvalidRequestError
    text -> tokens -> pieces -> IncrementalDetokenizer -> the same text, no U+FFFD

Cases that abort the process today run in a child process (see test_shim.run_child).
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from botframework.engine.detokenizer import IncrementalDetokenizer
from botframework.errors import (
    BotframeworkError,
    DecodeError,
    InvalidRequestError,
    KVCacheFullError,
    ModelLoadError,
    ModelNotFoundError,
    NativeError,
)
from botframework.native import (
    Batch,
    Context,
    ContextParams,
    Model,
    SamplerChain,
    SamplerSpec,
)

N_CTX = 256


@pytest.fixture(scope="module")
def context(model: Model) -> Iterator[Context]:
    with Context(model, ContextParams(n_ctx=N_CTX, n_batch=N_CTX, n_ubatch=N_CTX,
                                      n_threads=2, n_threads_batch=2)) as ctx:
        yield ctx


def assert_usable(model: Model, ctx: Context) -> None:
    """Tokenize, decode and read logits on a fresh sequence: the process is still fine."""
    tokens = model.tokenize("The process still works.", add_special=True)
    assert tokens
    ctx.memory.clear()
    batch = Batch(len(tokens))
    last = batch.add_sequence(tokens, 0, 0, logits_last=True)
    ctx.decode(batch)
    logits = ctx.logits_ith(last)
    assert logits.shape == (model.n_vocab,)
    assert logits.max() > logits.min()


def long_tokens(model: Model, n: int) -> list[int]:
    tokens = model.tokenize("the quick brown fox jumps over the lazy dog " * (n // 4 + 10), add_special=False)
    assert len(tokens) >= n
    return tokens[:n]


# --- model files -------------------------------------------------------------------------------

def test_missing_file(tmp_path: Path, model: Model, context: Context) -> None:
    with pytest.raises(ModelNotFoundError):
        Model(tmp_path / "does-not-exist.gguf")
    assert_usable(model, context)


def test_truncated_copy(tmp_path: Path, model_path: Path, model: Model, context: Context) -> None:
    truncated = tmp_path / "truncated.gguf"
    with open(model_path, "rb") as src:
        truncated.write_bytes(src.read(1 << 20))
    with pytest.raises(ModelLoadError):
        Model(truncated)
    assert_usable(model, context)


def test_copy_missing_its_last_bytes(tmp_path: Path, model_path: Path, model: Model, context: Context) -> None:
    """Header and metadata intact, tensor data short: llama.cpp's bounds check must catch it."""
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(model_path.read_bytes()[:-4096])
    with pytest.raises(ModelLoadError):
        Model(cut)
    assert_usable(model, context)


@pytest.mark.parametrize("content", [
    os.urandom(4096),
    b"",
    b"GGUF" + os.urandom(4096),           # right magic, garbage version / counts
    b"GGUF\x03\x00\x00\x00" + b"\xff" * 64,  # version 3, absurd tensor / kv counts
], ids=["random", "empty", "magic-then-garbage", "absurd-counts"])
def test_garbage_file(tmp_path: Path, content: bytes, model: Model, context: Context) -> None:
    path = tmp_path / "garbage.gguf"
    path.write_bytes(content)
    with pytest.raises(ModelLoadError):
        Model(path)
    assert_usable(model, context)


def test_directory(tmp_path: Path, model: Model, context: Context) -> None:
    directory = tmp_path / "model.gguf"
    directory.mkdir()
    with pytest.raises(ModelLoadError):
        Model(directory)
    assert_usable(model, context)


def _unraisable_during(action: object) -> list[str]:
    """Run `action` (expected to raise), drop every reference, collect: what did __del__ say?"""
    seen: list[str] = []
    old_hook = sys.unraisablehook
    sys.unraisablehook = lambda info: seen.append(f"{info.exc_type.__name__}: {info.exc_value}")
    try:
        try:
            action()  # type: ignore[operator]
        except BotframeworkError:
            pass
        gc.collect()
    finally:
        sys.unraisablehook = old_hook
    return seen


def test_failed_constructors_leave_nothing_for_del(tmp_path: Path, model: Model) -> None:
    from botframework.native.shim import ChatTemplates

    seen = _unraisable_during(lambda: Model(tmp_path / "missing.gguf"))
    seen += _unraisable_during(lambda: Context(model, ContextParams(n_seq_max=100_000)))
    seen += _unraisable_during(lambda: ChatTemplates(None, template_override="{% for x in %}"))
    assert seen == []


# --- batches and the context window ------------------------------------------------------------

def test_empty_prompt(model: Model, context: Context) -> None:
    assert model.tokenize("", add_special=False) == []
    assert model.detokenize([]) == ""
    batch = Batch(4)
    context.decode(batch)  # an empty batch is a no-op, not a native call
    with pytest.raises(ValueError):
        batch.add_sequence([], 0, 0, logits_last=True)
    assert_usable(model, context)


def test_batch_larger_than_n_batch(model: Model, context: Context) -> None:
    """300 tokens into n_ctx = n_batch = 256: refused before llama_decode sees it."""
    assert context.n_batch <= N_CTX
    batch = Batch(300)
    batch.add_sequence(long_tokens(model, 300), 0, 0, logits_last=True)
    with pytest.raises(InvalidRequestError):
        context.decode(batch)
    assert_usable(model, context)


def test_n_batch_is_clamped_to_the_context(model: Model) -> None:
    with Context(model, ContextParams(n_ctx=N_CTX, n_batch=1024, n_ubatch=512, n_threads=2)) as ctx:
        assert ctx.n_batch <= ctx.n_ctx
        batch = Batch(300)
        batch.add_sequence(long_tokens(model, 300), 0, 0, logits_last=True)
        with pytest.raises(InvalidRequestError):
            ctx.decode(batch)
        assert_usable(model, ctx)


def test_prompt_longer_than_context_in_chunks(model: Model, context: Context) -> None:
    """Chunked prefill past n_ctx: the chunk that does not fit is a KVCacheFullError (rc 1)."""
    tokens = long_tokens(model, 300)
    context.memory.clear()
    batch = Batch(100)
    with pytest.raises(KVCacheFullError) as info:
        for start in range(0, 300, 100):
            batch.clear()
            batch.add_sequence(tokens[start:start + 100], start, 0, logits_last=True)
            context.decode(batch)
    assert info.value.code == 1
    assert isinstance(info.value, DecodeError)
    assert context.memory.pos_max(0) == 199  # the failed chunk left nothing behind
    assert_usable(model, context)


@pytest.mark.parametrize("bad", ["past-vocab", "negative", "position-gap"])
def test_invalid_batch_is_a_decode_error(model: Model, context: Context, bad: str) -> None:
    context.memory.clear()
    batch = Batch(4)
    if bad == "past-vocab":
        batch.add(model.n_vocab + 5, 0, 0, want_logits=True)
    elif bad == "negative":
        batch.add(-3, 0, 0, want_logits=True)
    else:
        batch.add(5, 10, 0, want_logits=False)
        batch.add(6, 3, 0, want_logits=True)
    with pytest.raises(DecodeError) as info:
        context.decode(batch)
    assert info.value.code == -1
    assert not isinstance(info.value, KVCacheFullError)
    assert_usable(model, context)


def test_a_bad_sequence_id_is_the_callers_error(model: Model, context: Context) -> None:
    """llama_decode refuses it (rc -1); Context.decode names it: a 400, not a native failure.
    More cases (KV cache and state operations) in test_owned."""
    context.memory.clear()
    batch = Batch(4)
    batch.add(5, 0, context.n_seq_max + 6, want_logits=True)
    with pytest.raises(InvalidRequestError) as info:
        context.decode(batch)
    assert not isinstance(info.value, NativeError) and info.value.param == "seq_id"
    assert_usable(model, context)


def test_logits_of_an_index_without_logits(model: Model, context: Context) -> None:
    context.memory.clear()
    batch = Batch(4)
    batch.add(5, 0, 0, want_logits=False)
    context.decode(batch)
    for index in (0, 3, 100):
        with pytest.raises(NativeError):
            context.logits_ith(index)
    assert_usable(model, context)


# --- token ids ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("base", "offset"), [("zero", -1), ("zero", -100), ("n_vocab", 0), ("n_vocab", 1000)],
                         ids=["-1", "-100", "n_vocab", "n_vocab+1000"])
def test_token_out_of_vocabulary(model: Model, context: Context, base: str, offset: int) -> None:
    tid = (model.n_vocab if base == "n_vocab" else 0) + offset
    with pytest.raises(InvalidRequestError):
        model.detokenize([1, tid])
    with pytest.raises(InvalidRequestError):
        model.token_to_piece(tid)
    with pytest.raises(InvalidRequestError):
        model.token_text(tid)
    with pytest.raises(InvalidRequestError):
        SamplerChain(model, SamplerSpec(logit_bias={tid: -5.0}))
    assert_usable(model, context)


def _child(code: str, model_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", f"MODEL = {str(model_path)!r}\n" + code],
                          check=False, capture_output=True, text=True, timeout=120, cwd=tempfile.gettempdir())  # not the checkout: it would shadow the installed package


@pytest.mark.parametrize("case", ["no-logits", "index-out-of-range"])
def test_sampling_an_index_without_logits_raises(model_path: Path, case: str) -> None:
    want_logits, index = (False, 0) if case == "no-logits" else (True, 3)
    result = _child(
        "from botframework.native import Model, Context, ContextParams, Batch, SamplerChain, SamplerSpec\n"
        "from botframework.errors import BotframeworkError\n"
        "m = Model(MODEL); ctx = Context(m, ContextParams(n_ctx=256, n_batch=64, n_threads=2))\n"
        f"b = Batch(4); b.add(5, 0, 0, {want_logits}); ctx.decode(b)\n"
        "s = SamplerChain(m, SamplerSpec(temperature=0.0))\n"
        f"try:\n    s.sample(ctx, {index})\nexcept BotframeworkError as exc:\n    print('raised', type(exc).__name__)\n",
        model_path)
    assert result.returncode == 0 and "raised" in result.stdout, result.stderr[-1500:]


# --- load / free cycles ---------------------------------------------------------------------------

def test_load_free_cycles_do_not_leak(model_path: Path) -> None:
    process = psutil.Process()
    rss_mb: list[float] = []
    for _ in range(20):
        model = Model(model_path)
        ctx = Context(model, ContextParams(n_ctx=512, n_batch=64, n_threads=2, n_threads_batch=2))
        tokens = model.tokenize("load, decode, free", add_special=True)
        batch = Batch(len(tokens))
        batch.add_sequence(tokens, 0, 0, logits_last=True)
        ctx.decode(batch)
        ctx.close()
        model.close()
        del ctx, model, batch
        gc.collect()
        rss_mb.append(process.memory_info().rss / 2**20)
    growth = max(rss_mb[1:]) - rss_mb[0]
    assert growth < 50, f"RSS grew by {growth:.1f} MB over 20 load/free cycles: {rss_mb}"


def test_closed_objects_raise(model_path: Path) -> None:
    from botframework.errors import ClosedError

    model = Model(model_path)
    ctx = Context(model, ContextParams(n_ctx=256, n_batch=64, n_threads=2))
    ctx.close()
    ctx.close()  # idempotent
    with pytest.raises(ClosedError):
        ctx.decode(_one_token_batch())
    model.close()
    with pytest.raises(ClosedError):
        model.tokenize("x")


def _one_token_batch() -> Batch:
    batch = Batch(1)
    batch.add(1, 0, 0, want_logits=True)
    return batch


# --- tokenizer round trips and the incremental detokenizer -------------------------------------

TEXTS = {
    "ascii": "Hello, world! The quick brown fox (42) jumps; 3.14 != 2.71?",
    "accents": "Café naïve résumé — déjà vu, Ångström, façade, Øresund",
    "cjk": "日本語のテキスト、漢字と仮名。中文句子和标点！한국어 문장",
    "emoji": "Emoji: 🦙🚀 family 👩\u200d👩\u200d👧 flags 🇫🇷 skin 👍🏽 done",
    "code": "def f(x):\n\tif x:\n\t\treturn {'a': [1, 2]}  # tab\n\n\r\n    pass\n",
    "mixed": "mixed 中文 and émoji 🎉 in one line\twith a tab",
    "rare": "Ωμέγα Привет مرحبا עברית ∑∫√∞ ½ ™ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "spaces": "  leading and trailing spaces  \n\n",
}


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@pytest.mark.parametrize("name", list(TEXTS))
def test_tokenize_detokenize_round_trip(model: Model, name: str) -> None:
    text = TEXTS[name]
    tokens = model.tokenize(text, add_special=False)
    assert tokens and all(0 <= t < model.n_vocab for t in tokens)
    assert model.detokenize(tokens) == text
    assert b"".join(model.token_to_piece(t) for t in tokens) == text.encode("utf-8")


@pytest.mark.parametrize("with_text", [False, True], ids=["bytes", "piece_text"])
@pytest.mark.parametrize("name", list(TEXTS))
def test_incremental_detokenizer_emits_whole_characters(model: Model, name: str, with_text: bool) -> None:
    text = TEXTS[name]
    tokens = model.tokenize(text, add_special=False)
    detok = IncrementalDetokenizer(model.token_to_piece, model.piece_text if with_text else None)
    deltas = [detok.feed(t) for t in tokens]
    tail = detok.flush()
    assert tail == ""
    assert not any("\ufffd" in d for d in deltas)
    assert "".join(deltas) == text
    if with_text:  # the shortcut (a whole piece's text) gives the very same deltas as the byte path
        plain = IncrementalDetokenizer(model.token_to_piece)
        assert deltas == [plain.feed(t) for t in tokens]


def test_piece_text_is_none_for_part_of_a_character(model: Model) -> None:
    tokens = model.tokenize("🦙", add_special=False)
    assert model.piece_text(tokens[0]) is None and model.piece_text(tokens[0]) is None  # remembered too
    word = model.tokenize(" hello", add_special=False)[0]
    assert model.piece_text(word) == model.token_to_piece(word).decode()
    with pytest.raises(InvalidRequestError):
        model.piece_text(model.n_vocab)


@pytest.mark.parametrize("name", ["cjk", "emoji", "rare"])
def test_these_texts_split_characters_across_tokens(model: Model, name: str) -> None:
    """Proves the detokenizer test above exercises pieces that are not UTF-8 on their own."""
    pieces = [model.token_to_piece(t) for t in model.tokenize(TEXTS[name], add_special=False)]
    assert any(not _is_utf8(p) for p in pieces)
    detok = IncrementalDetokenizer(model.token_to_piece)
    tokens = model.tokenize(TEXTS[name], add_special=False)
    # at least one token completes nothing (its bytes wait for the rest of the character)
    assert any(detok.feed(t) == "" for t in tokens)


def test_detokenizer_flush_replaces_an_unfinished_character(model: Model) -> None:
    tokens = model.tokenize("🦙", add_special=False)
    assert len(tokens) > 1
    detok = IncrementalDetokenizer(model.token_to_piece)
    assert detok.feed(tokens[0]) == ""
    assert detok.flush() == "\ufffd"  # generation cut mid-character: replaced, not dropped silently
    assert detok.flush() == ""
