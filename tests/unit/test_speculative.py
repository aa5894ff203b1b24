"""Speculative decoding on the fake engine: n-gram drafts, verification, the cells they leave.

Differential: every request's tokens, text, finish reason and usage are the same with drafts
as without; the scheduler's view of the KV cache matches the (fake) cache at every step; and
the acceptance rule keeps a sampled request's distribution (chi-square on a 4-token vocabulary).
"""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from fake_engine import FakeEngine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from botframework.engine.detokenizer import IncrementalDetokenizer
from botframework.engine.speculative import verify_drafts
from botframework.scheduler.drafter import MAX_PAUSE, NgramDrafter, StepCost, profitable_drafts
from botframework.scheduler.output import Delta, FinishReason, RequestHandle
from botframework.scheduler.scheduler import Scheduler, SchedulerConfig
from botframework.scheduler.sequence import Request, Sequence
from botframework.specs import SamplingParams

_ids = itertools.count()
PERIOD = 11


class CopyingEngine(FakeEngine):
    """A 'model' whose output mostly repeats what came PERIOD tokens before (as an edit repeats
    its input), with a deviation every 17th position: drafts are accepted, and rejected."""

    def next_token(self, history: list[int]) -> int:
        n = len(history)
        if n % 17 == 0 or n < PERIOD:
            return (sum(history) * 31 + n) % (self.vocab - 1)
        return history[n - PERIOD]


def piece(token: int) -> bytes:
    return b"ab"[token % 2: token % 2 + 1] + str(token % 7).encode()


def make_seq(prompt: list[int], max_tokens: int = 40, speculative: bool | None = None, stop: tuple[str, ...] = (),
             ignore_eos: bool = True, session_id: str | None = None) -> Sequence:
    request = Request(f"s{next(_ids)}", tuple(prompt),
                      SamplingParams(max_tokens=max_tokens, ignore_eos=ignore_eos, stop=stop),
                      speculative=speculative, session_id=session_id)
    return Sequence(request, RequestHandle(request.request_id, lambda _id: None), IncrementalDetokenizer(piece))


def check_cache(s: Scheduler, engine: FakeEngine) -> None:
    """After execute (before update): the engine applied the plan's ops and decoded its
    tokens, drafts included; the scheduler's slots say exactly that."""
    for slot in s.slots:
        assert engine.kv[slot.seq_id] == slot.cached, f"slot {slot.seq_id} accounting"
        assert len(slot.cells) == len(slot.cached)
    assert s.num_cells_used() <= s.config.num_ctx


def run(s: Scheduler, engine: FakeEngine, between: Callable[[int], None] | None = None) -> int:
    steps = 0
    while s.has_work and steps < 10_000:
        plan = s.schedule()
        result = engine.execute(plan)
        check_cache(s, engine)
        s.update(plan, result)
        if between is not None:
            between(steps)
        steps += 1
    return steps


_outcomes: dict[str, tuple[list[int], str, FinishReason | None, int]] = {}


def outcome(seq: Sequence) -> tuple[list[int], str, FinishReason | None, int]:
    """(token ids, text, finish reason, completion tokens) from the deltas the handle got."""
    if seq.request_id in _outcomes:
        return _outcomes[seq.request_id]
    deltas: list[Delta] = list(seq.handle)
    usage = deltas[-1].usage
    assert usage is not None
    result = ([t for d in deltas for t in d.token_ids], "".join(d.text for d in deltas), deltas[-1].finish_reason,
              usage.completion_tokens)
    _outcomes[seq.request_id] = result
    return result


def prompt(n: int = 40, offset: int = 0) -> list[int]:
    return [(offset + i * 7) % 50 + 1 for i in range(n)]


def both(make: Callable[[bool], list[Sequence]], eog: frozenset[int] = frozenset(),
         **config: object) -> tuple[list[Sequence], list[Sequence], Scheduler]:
    """The same requests without and with drafts (the server default on)."""
    out = []
    for speculative in (False, True):
        cfg = SchedulerConfig(**{"num_slots": 4, "num_ctx": 2048, "max_batch_tokens": 64,  # type: ignore[arg-type]
                                 "speculative": "ngram" if speculative else "none", **config})
        s, engine = Scheduler(cfg, eog_tokens=eog), CopyingEngine(cfg.num_slots, cfg.max_batch_tokens)
        seqs = make(speculative)
        for seq in seqs:
            s.add(seq)
        run(s, engine)
        out.append((seqs, s))
    return out[0][0], out[1][0], out[1][1]


def test_greedy_with_drafts_equals_without() -> None:
    plain, drafted, s = both(lambda _on: [make_seq(prompt(), max_tokens=120)])
    assert outcome(drafted[0]) == outcome(plain[0])
    assert s.num_accepted_draft_tokens > 0 and s.num_draft_tokens > s.num_accepted_draft_tokens
    assert drafted[0].num_accepted_draft_tokens > 0
    assert s.stats()["num_accepted_draft_tokens"] == s.num_accepted_draft_tokens


def test_batched_with_non_drafting_sequences() -> None:
    def make(_on: bool) -> list[Sequence]:  # two that draft (the default), two that never do
        return [make_seq(prompt(30 + i, i), max_tokens=60 + 9 * i, speculative=None if i % 2 else False)
                for i in range(6)]

    plain, drafted, s = both(make, num_slots=3)
    for a, b in zip(plain, drafted, strict=True):
        assert outcome(b) == outcome(a)
    assert s.num_accepted_draft_tokens > 0
    assert all(seq.num_draft_tokens == 0 for i, seq in enumerate(drafted) if i % 2 == 0)


def test_per_request_switch_over_the_default() -> None:
    plain, drafted, s = both(lambda on: [make_seq(prompt(), max_tokens=80, speculative=not on)])
    assert outcome(drafted[0]) == outcome(plain[0])
    assert plain[0].num_accepted_draft_tokens > 0  # asked for it while the default was off
    assert drafted[0].num_draft_tokens == 0 and s.num_draft_tokens == 0


@pytest.mark.parametrize("max_tokens", [1, 2, 3, 5, 13, 14, 15, 16, 33])
def test_max_tokens_inside_a_draft(max_tokens: int) -> None:
    plain, drafted, _s = both(lambda _on: [make_seq(prompt(), max_tokens=max_tokens)])
    assert outcome(drafted[0]) == outcome(plain[0])
    assert outcome(plain[0])[3] == max_tokens


def test_stop_strings_inside_accepted_drafts() -> None:
    plain = both(lambda _on: [make_seq(prompt(), max_tokens=200)])[0]
    text = outcome(plain[0])[1]
    # stops that end at many places of the text: some inside accepted drafts
    stops = sorted({text[i:i + 3] for i in range(12, len(text) - 3, 5)})[:12]
    num_mid_draft = 0
    for stop in stops:
        a, b, s = both(lambda _on, stop=stop: [make_seq(prompt(), max_tokens=200, stop=(stop,))])
        assert outcome(b[0]) == outcome(a[0])
        assert outcome(b[0])[2] is FinishReason.STOP
        num_mid_draft += b[0].num_accepted_draft_tokens > 0
        assert all(not slot.cached or slot.cached == b[0].tokens[: len(slot.cached)] for slot in s.slots)
    assert num_mid_draft


def test_eog_inside_a_draft_and_cells_after_it() -> None:
    plain = both(lambda _on: [make_seq(prompt(), max_tokens=150)])[0]
    tokens = outcome(plain[0])[0]
    for eog_at in (20, 30, 45, 70):
        eog = frozenset({tokens[eog_at]})
        a, b, s = both(lambda _on: [make_seq(prompt(), max_tokens=150, ignore_eos=False)], eog=eog)
        assert outcome(b[0]) == outcome(a[0])
        assert outcome(b[0])[2] is FinishReason.STOP
        kept = next(slot for slot in s.slots if slot.cached)
        # the idle slot keeps what it would without drafts: the prompt and every token but the last
        assert kept.cached == b[0].tokens[:-1]


def test_session_cache_after_a_mid_draft_stop_is_reused() -> None:
    cfg = SchedulerConfig(num_slots=2, num_ctx=1024, max_batch_tokens=64, speculative="ngram")
    s, engine = Scheduler(cfg, eog_tokens=frozenset()), CopyingEngine(2, 64)
    first = make_seq(prompt(), max_tokens=37, session_id="chat")
    s.add(first)
    run(s, engine)
    slot = next(slot for slot in s.slots if slot.session_id == "chat")
    assert slot.cached == first.tokens[:-1] and first.num_accepted_draft_tokens > 0
    second = make_seq([*first.tokens, 5, 6, 7], max_tokens=20, session_id="chat")
    s.add(second)
    run(s, engine)
    assert second.num_cached == len(first.tokens) - 1  # all the first turn left in the cache


def test_cancellation_between_draft_steps() -> None:
    for cancel_at in range(1, 8):
        cfg = SchedulerConfig(num_slots=2, num_ctx=1024, max_batch_tokens=64, speculative="ngram")
        s, engine = Scheduler(cfg, eog_tokens=frozenset()), CopyingEngine(2, 64)
        seqs = [make_seq(prompt(), max_tokens=100, session_id="keep"), make_seq(prompt(35, 3), max_tokens=100)]
        for seq in seqs:
            s.add(seq)

        def cancel(step: int, at: int = cancel_at, s: Scheduler = s, seqs: list[Sequence] = seqs) -> None:
            if step == at:
                for seq in seqs:
                    s.cancel(seq.request_id)

        run(s, engine, cancel)
        for seq in seqs:
            assert outcome(seq)[2] is FinishReason.CANCELLED
        kept = next(slot for slot in s.slots if slot.session_id == "keep")
        assert kept.cached == seqs[0].tokens[: len(kept.cached)]
        assert len(kept.cached) == len(seqs[0].tokens) - 1  # its last token is not decoded


def test_drafts_count_against_the_budget_and_prefill_still_runs() -> None:
    cfg = SchedulerConfig(num_slots=4, num_ctx=2048, max_batch_tokens=8, speculative="ngram", draft_max=8)
    s, engine = Scheduler(cfg, eog_tokens=frozenset()), CopyingEngine(4, 8)
    seqs = [make_seq(prompt(40, i), max_tokens=60) for i in range(4)]
    for seq in seqs:
        s.add(seq)
    steps = run(s, engine)
    assert all(outcome(seq)[3] == 60 for seq in seqs)  # (FakeEngine asserts the budget per step)
    assert s.num_accepted_draft_tokens > 0 and steps < 4 * 60


def test_drafts_never_take_cells_others_need() -> None:
    # a cache just big enough: drafts must not preempt or evict anyone
    cfg = SchedulerConfig(num_slots=2, num_ctx=130, max_batch_tokens=64, speculative="ngram", prefix_cache_bytes=0)
    s, engine = Scheduler(cfg, eog_tokens=frozenset()), CopyingEngine(2, 64)
    seqs = [make_seq(prompt(40, i), max_tokens=24) for i in range(2)]
    for seq in seqs:
        s.add(seq)
    run(s, engine)
    assert s.num_preemptions == 0
    assert all(outcome(seq)[3] == 24 for seq in seqs)


def test_context_limit_inside_a_draft() -> None:
    plain, drafted, _s = both(lambda _on: [make_seq(prompt(), max_tokens=500)], num_ctx=97, num_slots=1)
    assert outcome(drafted[0]) == outcome(plain[0])
    assert outcome(drafted[0])[2] is FinishReason.LENGTH


# -- the drafter ----------------------------------------------------------------------------
def test_drafter_proposes_what_followed_the_most_recent_match() -> None:
    d = NgramDrafter(draft_max=8, ngram_max=3, ngram_min=2, draft_start=4)
    tokens = [1, 2, 3, 9, 9, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3]
    assert d.propose(tokens, 8) == [4, 5, 6, 7]  # the later (1 2 3), followed by 4..
    assert d.propose([5, 6, 7], 8) == []  # nothing to match (the index only grows: same sequence only)


def test_drafter_backs_off_and_grows() -> None:
    d = NgramDrafter(draft_max=8, draft_start=4)
    d.record(4, 4)
    assert d.num_draft == 6
    d.record(6, 6)
    d.record(8, 8)
    assert d.num_draft == 8
    d.record(8, 2)
    assert d.num_draft == 3
    tokens = [1, 2, 1, 2, 1, 2]
    pauses = []
    for _ in range(10):
        d.record(3, 0)  # nothing accepted: a pause, longer each time
        n = 0
        while not d.propose(tokens, 8):
            n += 1
        pauses.append(n)
    assert pauses[:4] == [1, 2, 4, 8] and max(pauses) == MAX_PAUSE


def test_no_drafts_without_a_match() -> None:
    d = NgramDrafter(draft_max=8)
    assert d.propose(list(range(100)), 8) == []


# -- the acceptance rule keeps the distribution ------------------------------------------------
VOCAB = 4
# p(next | last token): a small, lopsided model
P = [[0.6, 0.2, 0.15, 0.05], [0.1, 0.5, 0.1, 0.3], [0.25, 0.25, 0.25, 0.25], [0.05, 0.05, 0.2, 0.7]]


def _chi_square_critical(df: int, z: float = 3.09) -> float:
    """Wilson-Hilferty: the chi-square value exceeded with probability ~0.001 (z = 3.09)."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def _draw(rng: random.Random, last: int) -> int:
    return rng.choices(range(VOCAB), weights=P[last])[0]


def test_acceptance_rule_keeps_the_sampled_distribution() -> None:
    """Sequences of 3 tokens after token 0, drawn with (wrong, fixed) drafts: their frequencies
    match the model's joint distribution (the drafts change nothing but the speed)."""
    rng = random.Random(1234)
    num = 20_000
    counts: Counter[tuple[int, ...]] = Counter()
    accepted = 0
    for i in range(num):
        out: list[int] = []
        while len(out) < 3:
            last = out[-1] if out else 0
            drafts = [(last + i) % VOCAB, (i // 3) % VOCAB, 3][: 3 - len(out)]
            context = [last, *drafts]
            emitted = verify_drafts(drafts, lambda k, c=context: _draw(rng, c[k]))
            accepted += len(emitted) - 1
            out += emitted
        counts[tuple(out[:3])] += 1
    expected = {seq: P[0][seq[0]] * P[seq[0]][seq[1]] * P[seq[1]][seq[2]]
                for seq in itertools.product(range(VOCAB), repeat=3)}
    chi2 = sum((counts[seq] - num * p) ** 2 / (num * p) for seq, p in expected.items())
    assert chi2 < _chi_square_critical(len(expected) - 1), chi2
    assert accepted > num // 4  # the drafts were often accepted: the rule was exercised


def test_acceptance_probability_is_p_of_the_draft() -> None:
    """One step, draft d after token 1: accepted with probability p(d); on rejection the
    token follows p without d, renormalised."""
    rng = random.Random(99)
    num = 40_000
    for d in range(VOCAB):
        firsts: Counter[int] = Counter()
        for _ in range(num):
            emitted = verify_drafts([d], lambda _k: _draw(rng, 1))
            firsts[emitted[0]] += 1
            if emitted[0] != d:
                assert len(emitted) == 1
        p = P[1]
        chi2 = sum((firsts[t] - num * p[t]) ** 2 / (num * p[t]) for t in range(VOCAB))
        assert chi2 < _chi_square_critical(VOCAB - 1), (d, chi2)


class SamplingEngine(CopyingEngine):
    """Samples from P given the last token, with its own random generator (a sampled request)."""

    def __init__(self, *args: object, seed: int = 7) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.rng = random.Random(seed)

    def next_token(self, history: list[int]) -> int:
        return _draw(self.rng, history[-1] % VOCAB)


def test_scheduler_with_drafts_keeps_the_sampled_distribution() -> None:
    """Through the scheduler: a repetitive prompt makes drafts; the generated tokens' joint
    distribution is the model's."""
    cfg = SchedulerConfig(num_slots=4, num_ctx=4096, max_batch_tokens=64, speculative="ngram",
                          ngram_min=1, prefix_cache_bytes=0)
    s = Scheduler(cfg, eog_tokens=frozenset())
    engine = SamplingEngine(cfg.num_slots, cfg.max_batch_tokens)
    num = 4000
    seqs = [make_seq([0, 1, 3, 3, 0, 0, 1, 3, 3, 0, 0], max_tokens=3) for _ in range(num)]
    counts: Counter[tuple[int, ...]] = Counter()
    for start in range(0, num, 200):
        batch = seqs[start:start + 200]
        for seq in batch:
            s.add(seq)
        run(s, engine)
        counts.update(tuple(outcome(seq)[0]) for seq in batch)
    expected = {seq: P[0][seq[0]] * P[seq[0]][seq[1]] * P[seq[1]][seq[2]]
                for seq in itertools.product(range(VOCAB), repeat=3)}
    chi2 = sum((counts[seq] - num * p) ** 2 / (num * p) for seq, p in expected.items())
    assert chi2 < _chi_square_critical(len(expected) - 1), chi2
    assert s.num_accepted_draft_tokens > num // 10


REQUESTS = (st.lists(st.tuples(st.integers(0, 2), st.integers(1, 120), st.integers(1, 60), st.booleans(),
                               st.sampled_from([None, "a", "b"])), min_size=1, max_size=16),
            st.integers(1, 4), st.sampled_from([200, 400, 2048]), st.sampled_from([8, 64]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(*REQUESTS)
def test_random_workloads_same_output_with_drafts(requests: list, num_slots: int, num_ctx: int,  # type: ignore[type-arg]
                                                  budget: int) -> None:
    """Shared prefixes, sessions, a small cache (evictions, preemptions), a small token budget:
    every request's tokens are the same with drafts, and the cache accounting holds each step."""
    outputs = []
    for speculative in ("none", "ngram"):
        cfg = SchedulerConfig(num_slots=num_slots, num_ctx=num_ctx, max_batch_tokens=max(budget, num_slots),
                              max_waiting=1000, prefix_cache_bytes=1 << 20, min_offload_tokens=16,
                              speculative=speculative)
        s, engine = Scheduler(cfg, eog_tokens=frozenset()), CopyingEngine(cfg.num_slots, cfg.max_batch_tokens)
        seqs = []
        for family, n, k, drain, session in requests:
            n = min(n, num_ctx // 2 - 1)
            seq = make_seq([(i * 7 + family) % 50 + 10 for i in range(n)], max_tokens=min(k, num_ctx // 4),
                           session_id=session)
            seqs.append(seq)
            s.add(seq)
            if drain:
                run(s, engine)
            else:
                plan = s.schedule()
                result = engine.execute(plan)
                check_cache(s, engine)
                s.update(plan, result)
        run(s, engine)
        outputs.append([(outcome(seq)[0], outcome(seq)[2]) for seq in seqs])
    assert outputs[0] == outputs[1]


# -- what drafting costs and what it pays ---------------------------------------------------------
# llama-bench pp1..pp16 of SmolLM2-135M Q4_1 on 2 cores: ms per step of n tokens
PP_MS = {1: 5.57, 2: 9.7, 3: 11.2, 4: 13.6, 6: 16.5, 8: 20.5, 12: 28.2, 16: 35.6}


def measured_cost() -> StepCost:
    cost = StepCost()
    for n, ms in [*PP_MS.items(), *PP_MS.items()]:  # the first step of a size is a warm-up, not counted
        cost.observe(n, ms)
    return cost


def test_step_cost_is_unknown_until_two_sizes_then_read_between_them() -> None:
    cost = StepCost(smoothing=0.5)
    assert cost.ms(1) is None
    cost.observe(1, 30.0)  # the first step of a size builds its graph: not counted
    cost.observe(1, 6.0)
    assert cost.ms(1) is None  # one size says nothing about another
    cost.observe(61, 500.0)
    assert cost.ms(1) is None
    cost.observe(61, 126.0)
    assert cost.ms(1) == 6.0 and cost.ms(31) == pytest.approx(66.0)  # between: a straight line
    assert cost.ms(120) == pytest.approx(244.0)  # past the largest: the same line
    cost.observe(1, 8.0)
    assert cost.ms(1) == 7.0  # recent steps weigh most
    cost.observe(0, 5.0)
    cost.observe(3, 0.0)  # an empty step, or no time: ignored
    assert cost.ms(3) == pytest.approx(7.0 + 2 * (126.0 - 7.0) / 60)


def test_drafts_only_as_long_as_they_pay() -> None:
    cost = measured_cost()
    assert profitable_drafts(0.5, 1, cost, 8) == 0  # a second token costs 0.75 of a step
    assert profitable_drafts(0.7, 1, cost, 8) == 2
    assert profitable_drafts(0.95, 1, cost, 8) == 8  # a copied passage: the longest draft pays
    assert profitable_drafts(0.95, 1, cost, 3) == 3  # never past what fits
    assert profitable_drafts(0.95, 1, StepCost(), 5) == 5  # costs unknown yet: what fits
    assert profitable_drafts(0.9, 1, cost, 0) == 0


def test_acceptance_estimate_follows_the_recent_proposals() -> None:
    d = NgramDrafter(draft_max=8)
    assert d.acceptance == pytest.approx(0.8)  # the prior
    for _ in range(20):
        d.record(4, 0)  # every first draft token rejected
    assert d.acceptance < 0.05
    for _ in range(20):
        d.record(4, 4)  # then whole drafts kept
    assert d.acceptance > 0.95


class DeviatingEngine(FakeEngine):
    """A 'model' whose text repeats every 10 tokens with a slip every 4th: n-gram drafts are
    found all the time, and about half their tokens are wrong."""

    def next_token(self, history: list[int]) -> int:
        n = len(history)
        if n % 4 == 0:  # a slip every 4th token; the text repeats every 10: drafts copy slips to wrong places
            return 40 + n % 7
        return 1 + n % 10


def test_a_scheduler_that_knows_its_step_costs_stops_drafting_what_does_not_pay() -> None:
    """Drafts mostly wrong, on a machine where a second token costs most of a step: once the
    scheduler has seen what steps cost and what the drafts earned, it plans few; without the
    costs it keeps drafting (pausing only on total failures). The output is the same."""
    results = []
    for costs in (StepCost(), measured_cost()):
        cfg = SchedulerConfig(num_slots=1, num_ctx=2048, max_batch_tokens=64, speculative="ngram")
        s, engine = Scheduler(cfg, eog_tokens=frozenset()), DeviatingEngine(1, 64)
        s.step_cost = costs
        seq = make_seq(prompt(60), max_tokens=300)
        s.add(seq)
        run(s, engine)
        results.append((outcome(seq), s.num_draft_tokens, s.num_accepted_draft_tokens))
    (blind, blind_drafted, blind_kept), (costed, costed_drafted, costed_kept) = results
    assert blind == costed  # greedy: the drafts change the speed, never the tokens
    assert blind_kept < 0.6 * blind_drafted  # the drafts do not pay here...
    assert costed_drafted < blind_drafted / 3  # ...and knowing the costs, the scheduler mostly stops


def test_draft_by_cost_reaches_the_scheduler_from_the_command_line_env_and_config(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    from botframework.server.settings import ServerSettings

    assert ServerSettings().worker_config().draft_by_cost is True
    assert ServerSettings().replace(draft_by_cost=False).worker_config().draft_by_cost is False  # --draft-always
    assert ServerSettings().replace(draft_by_cost=None).worker_config().draft_by_cost is True  # flag not given
    monkeypatch.setenv("BOTFRAMEWORK_DRAFT_BY_COST", "0")
    assert ServerSettings.from_env().draft_by_cost is False
    monkeypatch.delenv("BOTFRAMEWORK_DRAFT_BY_COST")
    config = tmp_path / "server.toml"
    config.write_text("draft_by_cost = false\n")
    assert ServerSettings.from_env(config=config).draft_by_cost is False
