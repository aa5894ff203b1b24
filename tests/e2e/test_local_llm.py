"""LocalLLM end to end on the real default model (pulled through the project's own pull)."""

from __future__ import annotations

import concurrent.futures
import random
import threading
import time

import numpy as np
import pytest

from botframework import InvalidRequestError, LocalLLM


@pytest.fixture(scope="module")
def llm():  # type: ignore[no-untyped-def]
    with LocalLLM("smollm2-135m-instruct", n_ctx=4096, num_slots=16) as model:
        yield model


def test_chat_returns_text_usage_and_finish_reason(llm: LocalLLM) -> None:
    result = llm.chat("Rewrite this code using asyncio: import time; time.sleep(1)", max_tokens=48, temperature=0)
    assert result.text.strip()
    assert result.finish_reason in ("stop", "length")
    assert result.usage.completion_tokens == len(result.token_ids) <= 48
    assert result.usage.prompt_tokens > 10


def test_stream_equals_non_stream_at_temperature_zero(llm: LocalLLM) -> None:
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name three fruits."}]
    llm.chat(messages, max_tokens=40, temperature=0)  # from now on the prompt comes from the prefix cache
    whole = llm.chat(messages, max_tokens=40, temperature=0).text  # (a cold prompt can tip a greedy near-tie)
    streamed = "".join(llm.stream_chat(messages, max_tokens=40, temperature=0))
    assert streamed == whole


def test_complete_and_stop_string(llm: LocalLLM) -> None:
    result = llm.complete("1, 2, 3, 4,", max_tokens=30, temperature=0, stop=[" 8"])
    assert result.finish_reason == "stop"
    assert " 8" not in result.text and "7" in result.text


def test_sixteen_concurrent_requests_each_produce_exactly_max_tokens(llm: LocalLLM) -> None:
    results: list = [None] * 16  # type: ignore[type-arg]

    def work(i: int) -> None:
        results[i] = llm.complete(f"Story number {i}:", max_tokens=24 + i, temperature=0.9, seed=i,
                                  ignore_eos=True)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    for i, r in enumerate(results):
        assert r is not None and r.finish_reason == "length"
        assert r.usage.completion_tokens == 24 + i == len(r.token_ids)


def test_session_second_turn_prefills_only_new_tokens(llm: LocalLLM) -> None:
    turn1_messages = [{"role": "user", "content": "My name is Ada. Say hello."}]
    first = llm.chat(turn1_messages, max_tokens=16, temperature=0, session_id="ada")
    history_prompt = llm.render_chat(turn1_messages)["prompt"]
    num_history = len(llm.worker.model.tokenize(history_prompt, add_special=True, parse_special=True))
    turn2 = turn1_messages + [{"role": "assistant", "content": first.text},
                              {"role": "user", "content": "What is my name?"}]
    second = llm.chat(turn2, max_tokens=16, temperature=0, session_id="ada")
    # Everything up to the first turn's answer was in the session's cache.
    assert second.usage.cached_tokens >= num_history
    new_tokens = second.usage.prompt_tokens - second.usage.cached_tokens
    assert new_tokens < 40, f"second turn recomputed {new_tokens} tokens"


def test_prompt_cache_moved_to_ram_continues_exactly() -> None:
    # its own model: the cells a restore lands in depend on what ran before, and attention
    # sums over cells in index order, so only a fixed history compares bit for bit
    prompt = "A long shared instruction block. " * 40 + "Question: what is a mutex?"
    with LocalLLM("smollm2-135m-instruct", n_ctx=2048, num_slots=2) as llm:
        llm.complete(prompt, max_tokens=16, temperature=0)
        in_place = llm.complete(prompt, max_tokens=16, temperature=0)  # reuses the same slot's cells
        assert in_place.usage.cached_tokens == in_place.usage.prompt_tokens - 1
        llm.complete("Something else entirely.", max_tokens=4, temperature=0)  # moves idle caches to RAM
        stats = llm.worker.stats()
        assert stats["num_stored_prefixes"] >= 1 and stats["stored_prefix_bytes"] > 0
        restored = llm.complete(prompt, max_tokens=16, temperature=0)
        assert llm.worker.stats()["num_prefix_restores"] == stats["num_prefix_restores"] + 1
        assert restored.usage.cached_tokens == in_place.usage.cached_tokens
        assert restored.token_ids == in_place.token_ids


def test_concurrent_requests_with_one_long_prefix_compute_it_once(llm: LocalLLM) -> None:
    prompt = "Shared instructions for every request of this test. " * 30
    results: list = [None] * 4  # type: ignore[type-arg]

    def work(i: int) -> None:
        results[i] = llm.complete(prompt + f"Request {i}:", max_tokens=4, temperature=0)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    cached = sorted(r.usage.cached_tokens for r in results)
    # one request computes the shared part; the others wait for it and copy its cells
    assert cached[0] < 20 and all(c >= results[0].usage.prompt_tokens - 10 for c in cached[1:])


def test_evicted_session_restores_exactly() -> None:
    turn1 = [{"role": "user", "content": "Remember the number 42. Reply OK."}]

    def conversation(evict: bool) -> tuple[str, int]:
        with LocalLLM("smollm2-135m-instruct", n_ctx=2048, num_slots=1) as small:
            first = small.chat(turn1, max_tokens=12, temperature=0, session_id="s")
            if evict:  # another session takes the only slot: "s" goes to host RAM
                small.chat("Unrelated question: what is 2+2?", max_tokens=8, temperature=0, session_id="other")
                assert small.worker.stats()["num_stored_sessions"] >= 1
            turn2 = turn1 + [{"role": "assistant", "content": first.text},
                             {"role": "user", "content": "Which number?"}]
            second = small.chat(turn2, max_tokens=24, temperature=0, session_id="s")
            return second.text, second.usage.cached_tokens

    text_kept, cached_kept = conversation(evict=False)
    text_restored, cached_restored = conversation(evict=True)
    assert text_restored == text_kept
    assert cached_restored == cached_kept > 0


def test_random_cancellations_leave_nothing_busy(llm: LocalLLM) -> None:
    rng = random.Random(7)
    handles = []
    for i in range(200):
        deltas = llm.stream_complete_deltas(f"Cancel me {i}: once upon a time", max_tokens=400,
                                            ignore_eos=True, temperature=0.8, seed=i)
        if rng.random() < 0.5:
            next(deltas)  # let it start (prefill done, first token out) before cancelling
        handles.append(deltas)
        if rng.random() < 0.3:
            time.sleep(rng.random() * 0.01)
        if len(handles) > 8 or rng.random() < 0.5:
            handles.pop(rng.randrange(len(handles))).close()  # closing the stream cancels it
    for deltas in handles:
        deltas.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        stats = llm.worker.stats()
        if stats["num_busy_slots"] == 0 and stats["num_waiting"] == 0:
            break
        time.sleep(0.05)
    assert stats["num_busy_slots"] == 0 and stats["num_waiting"] == 0
    assert llm.worker.engine.num_samplers == 0 or llm.worker.call(lambda: llm.worker.engine.num_samplers) == 0

    def cells() -> list[int]:
        memory = llm.worker.context.memory
        return [memory.pos_max(slot.seq_id) + 1 for slot in llm.worker.scheduler.slots if slot.session_id is None
                and not slot.cached]

    assert all(n == 0 for n in llm.worker.call(cells)), "cancelled sequences left KV cells behind"
    assert llm.complete("Still alive?", max_tokens=4).usage.completion_tokens >= 1


def test_embeddings_are_normalised_and_meaningful(llm: LocalLLM) -> None:
    a, b, c = (np.array(v) for v in llm.embed(["The cat sat on the mat.", "A cat is sitting on a mat.",
                                               "Quarterly revenue grew by 8 percent."]))
    assert a.shape == (llm.worker.model.n_embd,)
    assert abs(np.linalg.norm(a) - 1.0) < 1e-4
    assert float(a @ b) > float(a @ c)


def test_generation_goes_on_between_the_inputs_of_an_embedding_request(llm: LocalLLM) -> None:
    arrivals: list[float] = []
    started = threading.Event()

    def generate() -> None:
        for _ in llm.stream_complete_deltas("Count: 1, 2, 3,", max_tokens=400, ignore_eos=True, temperature=0):
            arrivals.append(time.perf_counter())
            started.set()

    thread = threading.Thread(target=generate)
    thread.start()
    assert started.wait(60)
    t0 = time.perf_counter()
    vectors = llm.embed(["the quick brown fox " * 150])  # ~600 tokens: 5 engine commands of <= 128
    t1 = time.perf_counter()
    thread.join(timeout=300)
    assert len(vectors) == 1
    # at least one decode step ran between each two pieces of the input (ordering, not a duration)
    assert sum(1 for t in arrivals if t0 < t < t1) >= 4


def test_an_embedding_in_pieces_is_the_embedding_of_the_whole_input(llm: LocalLLM,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    worker = llm.worker
    text = "Embeddings of long inputs are computed through the KV cache a piece at a time. " * 20
    assert len(worker.model.tokenize(text)) > 2 * worker.embed_piece_tokens
    pieces = np.array(llm.embed([text])[0])
    assert worker.call(lambda: worker._embed_context.causal_attn)  # else it was one piece anyway
    monkeypatch.setattr(worker, "embed_piece_tokens", 1 << 20)
    whole = np.array(llm.embed([text])[0])
    # not bit-identical in general (kernels pick their algorithm from the ubatch's shape):
    # measured 9e-8 apart here; pieces that did not continue each other's KV cells: 0.025
    assert float(pieces @ whole) > 0.9999
    assert np.abs(pieces - whole).max() < 1e-3


def test_embedding_inputs_from_many_threads_do_not_mix(llm: LocalLLM) -> None:
    texts = [f"Document {i}: " + f"words about topic number {i}. " * 40 for i in range(4)]
    alone = [np.array(v) for v in llm.embed(texts)]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda t: np.array(llm.embed([t])[0]), texts))
    for a, b in zip(alone, together, strict=True):
        assert np.abs(a - b).max() < 1e-3
    with pytest.raises(InvalidRequestError, match="embedding context holds"):
        llm.embed(["word " * 9000])


def test_bad_input_is_a_typed_error(llm: LocalLLM) -> None:
    with pytest.raises(InvalidRequestError):
        llm.complete("")
    with pytest.raises(InvalidRequestError):
        llm.chat([])
    with pytest.raises(InvalidRequestError):
        llm.complete("hi", temperature=-1)
    with pytest.raises(InvalidRequestError):
        llm.complete("hi", logit_bias={10**9: 1.0})
    assert llm.complete("hi", max_tokens=2).usage.completion_tokens >= 1


def test_context_overflow_error_or_truncate(llm: LocalLLM) -> None:
    from botframework import ContextLengthExceededError

    filler = "This is a long sentence that fills the context window of the model. " * 20
    messages = [{"role": "system", "content": "You are a pirate."}]
    for i in range(20):
        messages += [{"role": "user", "content": f"Turn {i}: {filler}"},
                     {"role": "assistant", "content": f"Answer {i}: {filler}"}]
    messages.append({"role": "user", "content": "Say arr."})
    with pytest.raises(ContextLengthExceededError) as info:
        llm.chat(messages, max_tokens=8)
    assert info.value.num_prompt_tokens > info.value.num_ctx == llm.worker.n_ctx
    result = llm.chat(messages, max_tokens=8, temperature=0, overflow="truncate")
    assert result.usage.truncated_tokens > 0
    assert result.usage.prompt_tokens + 8 <= llm.worker.n_ctx
    assert result.usage.prompt_tokens + result.usage.truncated_tokens == info.value.num_prompt_tokens


def test_context_shift_generates_past_the_window() -> None:
    with LocalLLM("smollm2-135m-instruct", n_ctx=256, num_slots=1) as small:
        stopped = small.complete("Once upon a time", max_tokens=400, ignore_eos=True, temperature=0)
        assert stopped.finish_reason == "length" and stopped.usage.completion_tokens < 256
        shifted = small.complete("Once upon a time", max_tokens=400, ignore_eos=True, temperature=0,
                                 context_shift=True, num_keep=2)
        assert shifted.usage.completion_tokens == 400
        assert shifted.text.startswith(stopped.text[:200])  # identical until the first shift


def test_engine_thread_survives_bad_requests_and_failed_steps(llm: LocalLLM) -> None:
    from botframework import GrammarError
    from botframework.scheduler.sequence import Request
    from botframework.specs import GrammarSpec, SamplerSpec, SamplingParams

    with pytest.raises(InvalidRequestError):  # rejected on the caller's thread, before queueing
        llm.complete("hi", logit_bias={llm.worker.model.n_vocab: 5.0})
    bad_grammar = SamplingParams(sampler=SamplerSpec(grammar=GrammarSpec("root ::= undefined-rule")))
    deltas = list(llm.worker.submit(Request("bad-grammar", (1, 2, 3), bad_grammar)))
    assert len(deltas) == 1 and isinstance(deltas[0].error, GrammarError)  # the engine built it: no decode
    assert deltas[0].usage is not None and deltas[0].usage.completion_tokens == 0
    with pytest.raises(GrammarError):
        llm.chat("hi", grammar="root ::= undefined-rule")

    def boom() -> None:
        raise RuntimeError("a command that fails")

    llm.worker._post(boom)  # an unexpected error inside the engine thread is logged, not fatal
    assert llm.complete("Still alive?", max_tokens=3).usage.completion_tokens >= 1
    assert llm.worker._thread.is_alive()


def test_a_stored_session_that_will_not_load_ends_only_its_request(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # every evicted session spills to disk at once (no RAM for them); one file is cut short
    # there, as a full disk or another process would leave it: the turn that needs it gets a
    # retryable error, the requests around it go on, and the retry prefills afresh
    from botframework.config import WorkerConfig
    from botframework.errors import StateRestoreError
    from botframework.runtime.handle import load_model

    config = WorkerConfig(n_ctx=2048, num_slots=1, session_ram_bytes=0, session_dir=tmp_path)
    turn1 = [{"role": "user", "content": "Remember the number 42. Reply OK."}]
    with LocalLLM.from_handle(load_model("smollm2-135m-instruct", config, pull_missing=True)) as small:
        first = small.chat(turn1, max_tokens=12, temperature=0, session_id="s")
        small.chat("Unrelated question: what is 2+2?", max_tokens=8, temperature=0, session_id="other")
        spilled = list(tmp_path.rglob("*.kv"))
        assert len(spilled) == 1, spilled
        spilled[0].write_bytes(spilled[0].read_bytes()[:100])
        turn2 = turn1 + [{"role": "assistant", "content": first.text}, {"role": "user", "content": "Which number?"}]
        with pytest.raises(StateRestoreError, match="retry"):
            small.chat(turn2, max_tokens=24, temperature=0, session_id="s")
        again = small.chat(turn2, max_tokens=24, temperature=0, session_id="s")
        assert again.usage.cached_tokens == 0 and again.text
        stats = small.worker.stats()
        assert stats["num_busy_slots"] == 0 and stats["num_running"] == 0
    with LocalLLM("smollm2-135m-instruct", n_ctx=2048, num_slots=1) as fresh:  # the same turn, never evicted
        fresh.chat(turn1, max_tokens=12, temperature=0, session_id="s")
        assert fresh.chat(turn2, max_tokens=24, temperature=0).text == again.text


def test_a_one_token_answer_runs_on_the_callers_thread_when_the_engine_is_idle(llm: LocalLLM) -> None:
    """submit(inline=True) of a max_tokens=1 request with a short prompt: its answer is on the
    handle when submit returns (no hop to the engine thread and back), the same token the
    engine thread samples, and its sampler is freed; queued instead while the engine thread is
    busy, for a longer answer, or for a prompt past INLINE_STEP_TOKENS."""
    from botframework.api import LIMITS, generation_options
    from botframework.config import INLINE_STEP_TOKENS
    from botframework.runtime.requests import build_request

    worker = llm.worker

    def request(prompt: str, max_tokens: int = 1):  # type: ignore[no-untyped-def]
        return build_request(generation_options(max_tokens=max_tokens, temperature=0), llm.handle.tokenize(prompt, add_special=True),
                             request_id=worker.new_request_id(), n_ctx=llm.handle.n_ctx, n_vocab=llm.handle.n_vocab,
                             limits=LIMITS)

    def idle() -> None:
        for _ in range(1000):
            if worker._idle and not worker.scheduler.has_work:
                return
            time.sleep(0.005)
        raise AssertionError("the engine thread did not go idle")

    def answer(handle) -> list[int]:  # type: ignore[no-untyped-def]
        return [token for delta in handle for token in delta.token_ids]

    prompt = "The capital of France is"
    queued = answer(worker.submit(request(prompt)))
    idle()
    handle = worker.submit(request(prompt), inline=True)
    assert handle.finished.is_set() and handle.finish_reason is not None
    assert answer(handle) == queued and len(queued) == 1
    assert worker.engine.num_samplers == 0  # released in its own step: nothing left for the engine thread
    assert not worker.scheduler.has_work

    idle()
    longer = worker.submit(request(prompt, max_tokens=2), inline=True)
    assert not longer.finished.is_set()  # queued: the engine thread answers it (its decode takes ms)
    assert len(answer(longer)) == 2
    idle()
    long_prompt = worker.submit(request(" ".join(["word"] * (INLINE_STEP_TOKENS + 1))), inline=True)
    assert not long_prompt.finished.is_set()
    assert len(answer(long_prompt)) == 1

    running, release = threading.Event(), threading.Event()

    def hold() -> None:  # keeps the engine thread busy
        running.set()
        release.wait(30)

    idle()
    holder = threading.Thread(target=worker.call, args=(hold,))
    holder.start()
    try:
        assert running.wait(30)
        busy = worker.submit(request(prompt), inline=True)
        assert not busy.finished.is_set()  # queued behind the engine thread's work
    finally:
        release.set()
        holder.join()
    assert answer(busy) == queued


def test_whole_answers_run_several_steps_per_native_call_and_equal_the_streamed_ones(llm: LocalLLM) -> None:
    """complete() (the whole answer awaited) runs its steady steps in native runs
    (Engine.run_steps): the same tokens as stream_complete, which steps one token at a time:
    greedy, seeded sampling, a stop string met inside a run, max_tokens; and four whole answers
    batched in runs together, against the same four streamed (each time from an empty prefix
    cache: a cached prompt can tip a greedy near-tie)."""
    from botframework.api import generation_options
    from botframework.runtime.stream import collect

    worker = llm.worker

    def streamed(prompt: str, **options: object) -> tuple[str, list[int]]:
        worker.clear_prefix_cache()
        text, tokens = [], []
        for delta in llm.stream_complete_deltas(prompt, **options):
            text.append(delta.text)
            tokens.extend(delta.token_ids)
        return "".join(text), tokens

    runs = worker.metrics.num_runs
    cases = [("Once upon a time", {"max_tokens": 80, "temperature": 0, "ignore_eos": True}),
             ("Once upon a time", {"max_tokens": 60, "temperature": 0.9, "seed": 7, "ignore_eos": True}),
             ("Count: 1, 2, 3,", {"max_tokens": 60, "temperature": 0, "stop": [" 12,"]})]
    for prompt, options in cases:
        worker.clear_prefix_cache()
        whole = llm.complete(prompt, **options)
        assert (whole.text, list(whole.token_ids)) == streamed(prompt, **options), (prompt, options)
    assert whole.finish_reason == "stop" and whole.text.endswith("11,")
    assert worker.metrics.num_runs > runs

    def four(stream: bool) -> list[tuple[str, str | None]]:
        """Four answers admitted in the same step (the engine thread held meanwhile)."""
        worker.clear_prefix_cache()
        running, release = threading.Event(), threading.Event()
        holder = threading.Thread(target=worker.call, args=(lambda: (running.set(), release.wait(30)),))
        holder.start()
        assert running.wait(30)
        try:
            deltas = [llm._stream(llm.handle.tokenize(f"Story {i}:", add_special=True),
                                  generation_options(max_tokens=40 + 5 * i, temperature=0, ignore_eos=True),
                                  stream=stream) for i in range(4)]
        finally:
            release.set()
            holder.join()
        return [(c.text, c.finish_reason and c.finish_reason.value) for c in map(collect, deltas)]

    runs = worker.metrics.num_runs
    together = four(stream=False)
    assert worker.metrics.num_runs > runs
    assert together == four(stream=True)


def test_a_run_of_steps_gives_way_to_a_new_request(llm: LocalLLM) -> None:
    """A run ends after its current step when a request comes in: with runs allowed to go on
    for 100,000 steps, a request sent while a 300-token whole answer runs gets its first token
    before that answer ends."""
    import dataclasses

    from botframework.api import generation_options
    from botframework.runtime.stream import collect

    scheduler = llm.worker.scheduler
    config = scheduler.config
    scheduler.config = dataclasses.replace(config, run_steps=100_000)
    try:
        first = llm._stream(llm.handle.tokenize("Tell me a long story about the sea.", add_special=True),
                            generation_options(max_tokens=300, temperature=0, ignore_eos=True), stream=False)
        for _ in range(2000):  # its first token came from a plain step; a run follows
            if first.handle._num_published:
                break
            time.sleep(0.005)
        time.sleep(0.05)
        second = iter(llm.stream_complete_deltas("Hello", max_tokens=2))
        assert next(second).token_ids
        assert not first.handle.finished.is_set()
        assert collect(first).usage.completion_tokens == 300  # type: ignore[union-attr]
        list(second)
    finally:
        scheduler.config = config


def test_a_stream_a_run_begins_natively_is_always_ended(llm: LocalLLM) -> None:
    """The worker begins a streamed request's native sink only for a run it then makes, and
    ends every one it began, also when work arriving between plan and run stops the run from
    starting: none is left open (a server's socket would never close). The text
    (what the sink took, then the last delta) is the whole answer's."""
    import itertools

    from botframework.api import generation_options
    from botframework.scheduler.output import Taken

    class Sink:  # fd -1: the run sends nothing itself; it only begins and ends the sink
        sends_natively = True

        def __init__(self) -> None:
            self.texts: list[str] = []
            self.begun = self.open = 0

        def take(self, delta):  # type: ignore[no-untyped-def]
            self.texts.append(delta.text)
            return Taken.YES

        def begin_native(self) -> tuple[int, bytes, bytes, bool, str]:
            self.begun += 1
            self.open += 1
            return -1, b"", b"", False, ""

        def took_natively(self, delta, sent):  # type: ignore[no-untyped-def]
            raise AssertionError("fd -1 sends nothing")

        def end_native(self) -> None:
            self.open -= 1

    worker = llm.worker
    options = {"max_tokens": 120, "temperature": 0, "ignore_eos": True}
    worker.clear_prefix_cache()
    whole = llm.complete("The history of the bicycle", **options).text
    worker.clear_prefix_cache()
    sink = Sink()
    running, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=worker.call, args=(lambda: (running.set(), release.wait(30)),))
    holder.start()
    assert running.wait(30)
    try:
        deltas = llm._stream(llm.handle.tokenize("The history of the bicycle", add_special=True),
                             generation_options(**options))
        assert deltas.handle.attach_direct(sink)
    finally:
        release.set()
        holder.join()

    # every other plan, work comes in just before the run would start (a request, a cancel, a
    # command): no run then
    arm, calls = worker._arm_interrupt, itertools.count()
    worker._arm_interrupt = lambda: next(calls) % 2 == 0 and arm()  # type: ignore[method-assign]
    try:
        rest = [delta.text for delta in deltas]
    finally:
        del worker._arm_interrupt
    assert sink.begun > 0 and sink.open == 0
    assert "".join(sink.texts + rest) == whole
