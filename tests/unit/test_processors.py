"""Logits processors without a model: the engine's grouping (run_processors), the built-ins
against plain reference code, loading by import path, and the request/plan plumbing."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from fake_engine import FakeEngine

from botframework.engine.detokenizer import IncrementalDetokenizer
from botframework.engine.logits import (
    LogitsProcessorError,
    bind_processors,
    check_processors,
    run_processors,
)
from botframework.engine.step import PlanItem, StepPlan, StepResult
from botframework.errors import InvalidRequestError
from botframework.processors import (
    BanStrings,
    RepetitionWindowPenalty,
    TypicalP,
    force_tokens,
    load_processor,
    load_registry,
)
from botframework.runtime.requests import GenerationOptions, RequestLimits, build_request
from botframework.scheduler.output import RequestHandle
from botframework.scheduler.scheduler import Scheduler, SchedulerConfig
from botframework.scheduler.sequence import Request
from botframework.scheduler.sequence import Sequence as Seq
from botframework.specs import SamplingParams

V = 64


def make_sequence(request_id: str, prompt: list[int], max_tokens: int = 8,
                  logits_processors: tuple[object, ...] = ()) -> Seq:
    request = Request(request_id, tuple(prompt), SamplingParams(max_tokens=max_tokens, ignore_eos=True),
                      logits_processors=logits_processors)
    return Seq(request, RequestHandle(request_id, lambda _id: None), IncrementalDetokenizer(lambda t: b"x"))


class Recorder:
    """A processor that records its calls and adds `delta` to every logit it gets."""

    def __init__(self, delta: float = 1.0) -> None:
        self.delta = delta
        self.calls: list[tuple[int, list[list[int]], bool]] = []
        self.base: np.ndarray | None = None

    def __call__(self, logits: np.ndarray, histories: Sequence[Sequence[int]]) -> None:
        shares = self.base is not None and np.shares_memory(logits, self.base)
        self.calls.append((len(logits), [list(h) for h in histories], shares))
        logits += self.delta


def logits_block(rows: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(rows, V)).astype(np.float32)


def test_only_the_rows_that_named_a_processor_change() -> None:
    logits = logits_block()
    before = logits.copy()
    proc = Recorder()
    failed = run_processors(logits, [1, 4], [(proc,), (proc,)], [[1, 2], [3]])
    assert failed == {}
    np.testing.assert_array_equal(logits[[0, 2, 3, 5]], before[[0, 2, 3, 5]])
    np.testing.assert_allclose(logits[[1, 4]], before[[1, 4]] + 1)


def test_one_call_per_processor_with_every_row_as_a_view_when_evenly_spaced() -> None:
    logits = logits_block(8)
    proc = Recorder()
    proc.base = logits
    run_processors(logits, [0, 2, 4, 6], [(proc,)] * 4, [[0], [2], [4], [6]])
    assert [(n, shares) for n, _h, shares in proc.calls] == [(4, True)]
    assert proc.calls[0][1] == [[0], [2], [4], [6]]


def test_unevenly_spaced_rows_get_a_copy_written_back() -> None:
    logits = logits_block(8)
    before = logits.copy()
    proc = Recorder(2.0)
    proc.base = logits
    run_processors(logits, [0, 1, 5], [(proc,)] * 3, [[], [], []])
    assert [(n, shares) for n, _h, shares in proc.calls] == [(3, False)]
    np.testing.assert_allclose(logits[[0, 1, 5]], before[[0, 1, 5]] + 2)
    np.testing.assert_array_equal(logits[[2, 3, 4, 6, 7]], before[[2, 3, 4, 6, 7]])


def test_each_sequence_runs_its_processors_in_the_order_it_named_them() -> None:
    def add_one(logits: np.ndarray, histories: object) -> None:
        logits += 1

    def double(logits: np.ndarray, histories: object) -> None:
        logits *= 2

    logits = np.zeros((2, V), dtype=np.float32)
    run_processors(logits, [0, 1], [(add_one, double), (double, add_one)], [[], []])
    assert logits[0, 0] == 2.0 and logits[1, 0] == 1.0


def test_a_failing_processor_fails_only_the_sequences_that_named_it() -> None:
    def boom(logits: np.ndarray, histories: object) -> None:
        raise RuntimeError("no")

    good = Recorder()
    logits = logits_block(3)
    before = logits.copy()
    failed = run_processors(logits, [0, 1, 2], [(good,), (boom,), (good, boom)], [[], [], []])
    assert set(failed) == {1, 2}
    assert isinstance(failed[1], LogitsProcessorError) and failed[1].processor == "boom"
    assert "RuntimeError: no" in str(failed[1])
    np.testing.assert_allclose(logits[0], before[0] + 1)


@pytest.mark.parametrize("value, what", [(-np.inf, "no finite logit"), (np.nan, "NaN"), (np.inf, "+inf")])
def test_a_row_left_unsamplable_fails_its_request(value: float, what: str) -> None:
    def spoil(logits: np.ndarray, histories: object) -> None:
        logits[0, :] = -np.inf
        logits[0, 3] = value

    logits = logits_block(2)
    failed = run_processors(logits, [0, 1], [(spoil,), ()], [[], []])
    assert list(failed) == [0]
    assert what in str(failed[0])


def test_bind_is_called_with_the_model_and_its_failure_is_typed() -> None:
    class Bindable:
        def __init__(self) -> None:
            self.bound_to: object = None

        def bind(self, model: object) -> Recorder:
            self.bound_to = model
            return Recorder()

        def __call__(self, logits: np.ndarray, histories: object) -> None:
            raise AssertionError("the bound processor runs, not this one")

    proc = Bindable()
    plain = Recorder()
    bound = bind_processors([proc, plain], "model")
    assert proc.bound_to == "model" and isinstance(bound[0], Recorder) and bound[1] is plain

    class BadBind(Bindable):
        def bind(self, model: object) -> Recorder:
            raise KeyError("vocab")

    with pytest.raises(LogitsProcessorError, match="could not be set up"):
        bind_processors([BadBind()], "model")


@pytest.mark.parametrize("bad", ["name", [1], [None], 3])
def test_processors_must_be_a_list_of_callables(bad: object) -> None:
    with pytest.raises(InvalidRequestError) as info:
        check_processors(bad)  # type: ignore[arg-type]
    assert info.value.param == "logits_processors"


# -- built-ins against reference code ------------------------------------------------------

def typical_reference(logits: np.ndarray, p: float, min_keep: int = 1) -> np.ndarray:
    """llama.cpp's llama_sampler_typical_apply over one row (float64): the kept token ids."""
    x = logits.astype(np.float64)
    probs = np.exp(x - x.max())
    probs /= probs.sum()
    logp = np.log(np.where(probs > 0, probs, 1e-300))
    entropy = -(probs * logp).sum()
    order = np.argsort(np.abs(-logp - entropy), kind="stable")
    cum = 0.0
    last = len(order)
    for i, token in enumerate(order):
        cum += probs[token]
        if cum > p and i >= min_keep - 1:
            last = i + 1
            break
    return np.sort(order[:last])


@pytest.mark.parametrize("p", [0.2, 0.5, 0.9, 0.99])
@pytest.mark.parametrize("scale", [0.5, 3.0])
def test_typical_p_keeps_what_llama_cpps_typical_sampler_keeps(p: float, scale: float) -> None:
    rng = np.random.default_rng(int(p * 100) + int(scale))
    logits = (rng.normal(size=(5, 5000)) * scale).astype(np.float32)
    expected = [typical_reference(row, p) for row in logits]
    TypicalP(p, tiers=(64,))(logits, [[]] * 5)  # a small tier: some rows take the full sort
    for row, kept in zip(logits, expected, strict=True):
        got = np.flatnonzero(np.isfinite(row))
        # the cut is by distance: ties at the boundary may keep one more; never one fewer
        assert set(kept) <= set(got) and len(got) - len(kept) <= 1


def test_typical_p_leaves_banned_tokens_banned_and_keeps_min_keep() -> None:
    logits = np.zeros((1, 100), dtype=np.float32)
    logits[0, :50] = -np.inf
    logits[0, 60] = 8.0
    TypicalP(0.5, min_keep=3)(logits, [[]])
    kept = np.flatnonzero(np.isfinite(logits[0]))
    assert len(kept) >= 3 and (kept >= 50).all()


def test_repetition_window_penalty_matches_a_loop() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(3, V)).astype(np.float32)
    histories = [[1, 2, 2, 5, 9], [], list(range(40))]
    expected = logits.copy()
    for row, history in enumerate(histories):
        for token in set(history[-8:]):
            value = expected[row, token]
            expected[row, token] = value / 1.5 if value > 0 else value * 1.5
    RepetitionWindowPenalty(1.5, window=8)(logits, histories)
    np.testing.assert_allclose(logits, expected, rtol=1e-6)


PIECES = [b"a", b"b", b"c", b"ab", b"bc", b"abc", b" ", b"ca", b"xabcx", b"d", b"cab", b"\xc3", b"\xa9"]


@pytest.mark.parametrize("seed", range(20))
def test_ban_strings_never_lets_the_text_spell_them(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ban = BanStrings(["abc", "é d"], pieces=PIECES)
    history = [int(t) for t in rng.integers(0, len(PIECES), 5)]
    prompt_text = b"".join(PIECES[t] for t in history)
    for _ in range(60):
        logits = rng.normal(size=(1, len(PIECES))).astype(np.float32)
        logits[0, [3, 5, 8]] += 3.0  # the model would love to spell it
        ban(logits, [history])
        history.append(int(np.argmax(logits[0])))
    text = b"".join(PIECES[t] for t in history)
    generated_start = len(prompt_text)
    for banned in (b"abc", "é d".encode()):
        # an occurrence may only lie wholly inside the prompt
        at = text.find(banned)
        while at != -1:
            assert at + len(banned) <= generated_start, (text, banned)
            at = text.find(banned, at + 1)


def test_ban_strings_bans_by_what_the_text_ends_with() -> None:
    ban = BanStrings(["abc"], pieces=PIECES)
    logits = np.zeros((2, len(PIECES)), dtype=np.float32)
    ban(logits, [[0], [9]])  # "a": tokens starting with "bc" are banned; "d": only the ones that contain it
    banned = [set(np.flatnonzero(np.isinf(row))) for row in logits]
    assert banned[0] == {4, 5, 8}          # "bc", and those containing "abc"
    assert banned[1] == {5, 8}


def test_ban_strings_binds_once_per_model_and_shares_the_tables() -> None:
    class FakeModel:
        path = "fake.gguf"
        n_vocab = len(PIECES)
        asked = 0

        def token_to_piece(self, token: int) -> bytes:
            FakeModel.asked += 1
            return PIECES[token]

    ban = BanStrings(["abc"])
    with pytest.raises(RuntimeError, match="no vocabulary"):
        ban(np.zeros((1, len(PIECES)), dtype=np.float32), [[0]])
    first, second = ban.bind(FakeModel()), ban.bind(FakeModel())
    assert first is second and FakeModel.asked == len(PIECES)
    assert first.bind(FakeModel()) is first


def test_force_tokens_leaves_one_token_per_row() -> None:
    logits = logits_block(3)
    force_tokens(logits, [5, 0, 63])
    for row, token in zip(logits, [5, 0, 63], strict=True):
        assert np.flatnonzero(np.isfinite(row)).tolist() == [token]


# -- loading by import path (the server's registry) ----------------------------------------

def test_load_processor_instantiates_classes_and_keeps_objects() -> None:
    assert isinstance(load_processor("botframework.processors:TypicalP"), TypicalP)
    assert load_processor("botframework.processors:force_tokens") is force_tokens
    registry = load_registry({"typical": "botframework.processors:TypicalP",
                              "rep": "botframework.processors:RepetitionWindowPenalty"})
    assert sorted(registry) == ["rep", "typical"]


@pytest.mark.parametrize("spec, message", [
    ("botframework.processors", "module:attribute"),
    ("no_such_module_xyz:thing", "cannot be imported"),
    ("botframework.processors:NoSuchThing", "cannot be imported"),
    ("botframework.processors:NAME", "not callable"),
    ("botframework.processors:BanStrings", r"BanStrings\(\) failed"),
])
def test_load_processor_errors_name_the_spec(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_processor(spec)


def test_registry_names_are_plain() -> None:
    with pytest.raises(ValueError, match="name"):
        load_registry({"bad name!": "botframework.processors:TypicalP"})


# -- plumbing: request -> plan -> engine --------------------------------------------------

def test_build_request_carries_the_processors() -> None:
    proc = Recorder()
    request = build_request(GenerationOptions(logits_processors=[proc]), [1, 2, 3], request_id="r", n_ctx=64,
                            n_vocab=V, limits=RequestLimits())
    assert request.logits_processors == (proc,)
    with pytest.raises(InvalidRequestError) as info:
        build_request(GenerationOptions(logits_processors=["typical"]), [1], request_id="r", n_ctx=64, n_vocab=V,
                      limits=RequestLimits())
    assert info.value.param == "logits_processors"


class HistoryEngine(FakeEngine):
    """FakeEngine that checks what a processor would be given: the live history."""

    def __init__(self) -> None:
        super().__init__(num_slots=2, max_batch_tokens=64)
        self.seen: list[tuple[str, tuple[object, ...], list[int]]] = []

    def execute(self, plan: StepPlan) -> StepResult:
        for item in plan.items:
            if item.sample:
                self.seen.append((item.request_id, item.processors, list(item.history)))
        return super().execute(plan)


def test_plan_items_carry_processors_and_the_history_so_far() -> None:
    proc = Recorder()
    scheduler = Scheduler(SchedulerConfig(num_slots=2, num_ctx=256, max_batch_tokens=64), eog_tokens=frozenset())
    with_proc = make_sequence("a", [5, 6, 7], max_tokens=3, logits_processors=(proc,))
    without = make_sequence("b", [8, 9], max_tokens=3)
    engine = HistoryEngine()
    for seq in (with_proc, without):
        scheduler.add(seq)
    while scheduler.has_work:
        plan = scheduler.schedule()
        scheduler.update(plan, engine.execute(plan))
    mine = [(p, h) for rid, p, h in engine.seen if rid == "a"]
    assert [p for p, _ in mine] == [(proc,)] * 3
    assert [len(h) for _, h in mine] == [3, 4, 5] and mine[0][1] == [5, 6, 7]
    assert all(p == () for rid, p, _ in engine.seen if rid == "b")


def test_a_plan_item_without_processors_is_what_it_was() -> None:
    item = PlanItem("r", 0, (1,), 0, True)
    assert item.processors == () and item.history == ()
    assert make_sequence("x", [1]).request.logits_processors == ()
