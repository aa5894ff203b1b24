"""Logits processors in the batched engine and scheduler on the real model, step hooks, and a
trace written by a real worker replayed."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from botframework.engine import Engine, PlanItem, StepPlan, StepResult
from botframework.engine.logits import LogitsProcessorError
from botframework.native import Context, ContextParams, Model, SamplerSpec
from botframework.processors import BanStrings, RepetitionWindowPenalty, TypicalP, force_tokens

pytestmark = pytest.mark.native
GREEDY = SamplerSpec(temperature=0.0)
PROMPTS = ["The capital of France is", "def add(a, b):", "Once upon a time"]


@pytest.fixture
def engine(model: Model) -> Iterator[Engine]:
    with Context(model, ContextParams(n_ctx=512, n_batch=128, n_ubatch=128, n_seq_max=4, n_threads=2,
                                      n_threads_batch=2)) as ctx:
        eng = Engine(model, ctx)
        yield eng
        eng.close()


def generate(model: Model, engine: Engine, processors: dict[int, tuple[object, ...]], steps: int = 8
             ) -> dict[int, list[int]]:
    """Greedy, the three prompts batched in every step; processors by sequence index."""
    engine.context.memory.clear()
    histories = [model.tokenize(p) for p in PROMPTS]
    out: dict[int, list[int]] = {i: [] for i in range(len(PROMPTS))}
    pending = {i: list(h) for i, h in enumerate(histories)}
    positions = dict.fromkeys(range(len(PROMPTS)), 0)
    tag = f"{id(processors)}-"
    for _ in range(steps):
        items = [PlanItem(tag + str(i), i, tuple(pending[i]), positions[i], True, GREEDY,
                          processors=processors.get(i, ()), history=histories[i]) for i in pending]
        result = engine.execute(StepPlan(tuple(items)))
        for sampled in result.sampled:
            i = int(sampled.request_id.removeprefix(tag))
            assert sampled.error is None, sampled.error
            positions[i] += len(pending[i])
            histories[i].append(sampled.token)
            out[i].append(sampled.token)
            pending[i] = [sampled.token]
    for i in range(len(PROMPTS)):
        engine.release(tag + str(i))
    return out


class Identity:
    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def __call__(self, logits: np.ndarray, histories: Sequence[Sequence[int]]) -> None:
        self.shapes.append(logits.shape)


def test_greedy_with_an_identity_processor_equals_greedy_without(model: Model, engine: Engine) -> None:
    plain = generate(model, engine, {})
    identity = Identity()
    processed = generate(model, engine, dict.fromkeys(range(3), (identity,)))
    assert processed == plain
    assert identity.shapes == [(3, model.n_vocab)] * 8  # one call per step, every row at once


def test_a_processor_changes_only_the_sequences_that_named_it(model: Model, engine: Engine) -> None:
    plain = generate(model, engine, {})
    seen: list[np.ndarray] = []

    def always_42(logits: np.ndarray, histories: Sequence[Sequence[int]]) -> None:
        seen.append(logits.copy())
        force_tokens(logits, [42] * len(logits))

    forced = generate(model, engine, {1: (always_42,)})
    assert forced[1] == [42] * 8
    assert forced[0] == plain[0] and forced[2] == plain[2]
    assert all(block.shape == (1, model.n_vocab) for block in seen)


def test_built_ins_run_in_the_batch(model: Model, engine: Engine) -> None:
    ban = BanStrings([" Paris"])
    out = generate(model, engine, {0: (ban, RepetitionWindowPenalty(1.3)), 1: (TypicalP(0.9),), 2: (ban,)})
    text = model.detokenize(out[0])
    assert "Paris" not in text
    plain = generate(model, engine, {})
    assert "Paris" in model.detokenize(plain[0])  # what the ban prevented


def test_a_failing_processor_ends_only_its_request(model: Model, engine: Engine) -> None:
    def boom(logits: np.ndarray, histories: Sequence[Sequence[int]]) -> None:
        raise ValueError("broken")

    tokens = [model.tokenize(p) for p in PROMPTS]
    items = tuple(PlanItem(f"f{i}", i, tuple(t), 0, True, GREEDY, processors=(boom,) if i == 1 else (),
                           history=t) for i, t in enumerate(tokens))
    result = engine.execute(StepPlan(items))
    by_id = {s.request_id: s for s in result.sampled}
    assert isinstance(by_id["f1"].error, LogitsProcessorError) and "broken" in str(by_id["f1"].error)
    assert by_id["f0"].error is None and by_id["f2"].error is None and by_id["f0"].token >= 0
    assert result.processor_ms >= 0.0


def test_local_llm_batches_processors_and_hooks_see_every_step(model_path: Path, tmp_path: Path) -> None:
    from botframework.api import LocalLLM
    from botframework.replay import compare, load_trace
    from botframework.trace import TraceWriter

    with LocalLLM(model_path, n_ctx=1024, num_slots=4, pull=False) as llm:
        steps: list[tuple[StepPlan, StepResult]] = []
        llm.worker.add_step_hook(lambda plan, result: steps.append((plan, result)))
        writer = TraceWriter(tmp_path / "trace.jsonl")
        writer.attach(llm.worker)
        identity = Identity()
        plain = llm.complete("The capital of France is", max_tokens=6, temperature=0)
        same = llm.complete("The capital of France is", max_tokens=6, temperature=0, logits_processors=[identity])
        assert same.token_ids == plain.token_ids
        identity.shapes.clear()
        results: list[object] = []
        start = threading.Barrier(4)

        def ask(i: int) -> None:
            start.wait()
            results.append(llm.complete(f"Count to {i}:", max_tokens=6, temperature=0, logits_processors=[identity]))

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(results) == 4 and max(shape[0] for shape in identity.shapes) > 1  # rows of several requests
        assert steps and all(result.step_ms >= result.decode_ms for _plan, result in steps)
        writer.close()
    trace = load_trace(str(tmp_path / "trace.jsonl"))
    assert len(trace.arrivals) == 6 and all(a.num_generated > 0 for a in trace.arrivals)
    _cost, reports = compare(trace, ["fcfs", "spf"])
    assert [r.num_requests for r in reports] == [6, 6, 6]
