"""Scheduler on a fake engine: no model. Random add/cancel/step sequences keep invariants."""

from __future__ import annotations

import dataclasses
import itertools
import time

import pytest
from fake_engine import FakeEngine
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from botframework.engine.detokenizer import IncrementalDetokenizer
from botframework.engine.step import NativeStream, StepPlan, StreamSent
from botframework.errors import BusyError, ContextLengthExceededError
from botframework.scheduler.output import Delta, FinishReason, RequestHandle, Taken
from botframework.scheduler.scheduler import Scheduler, SchedulerConfig
from botframework.scheduler.sequence import Priority, Request, Sequence, SequenceStatus
from botframework.specs import SamplingParams

_ids = itertools.count()


def make_seq(prompt: list[int], max_tokens: int = 8, session_id: str | None = None,
             priority: Priority = Priority.INTERACTIVE, ignore_eos: bool = True,
             context_shift: bool = False, num_keep: int = 0) -> Sequence:
    request = Request(f"r{next(_ids)}", tuple(prompt), SamplingParams(max_tokens=max_tokens, ignore_eos=ignore_eos),
                      session_id=session_id, priority=priority, context_shift=context_shift, num_keep=num_keep)
    handle = RequestHandle(request.request_id, lambda _id: None)
    return Sequence(request, handle, IncrementalDetokenizer(lambda t: b"x"))


def scheduler_and_engine(eog: frozenset[int] = frozenset(), **config: object) -> tuple[Scheduler, FakeEngine]:
    """A scheduler and a fake engine with its slots and token budget."""
    cfg = SchedulerConfig(**config)  # type: ignore[arg-type]
    return Scheduler(cfg, eog_tokens=eog), FakeEngine(cfg.num_slots, cfg.max_batch_tokens)


def run(s: Scheduler, engine: FakeEngine, max_steps: int = 10_000) -> int:
    steps = 0
    while s.has_work and steps < max_steps:
        plan = s.schedule()
        s.update(plan, engine.execute(plan))
        steps += 1
        check_invariants(s, engine)
    return steps


def check_invariants(s: Scheduler, engine: FakeEngine) -> None:
    waiting = {q.request_id for q in s.waiting}
    active = set(s.active)
    assert not waiting & active, "a sequence in two states"
    for seq in s.active.values():
        assert seq.status in (SequenceStatus.PREFILLING, SequenceStatus.RUNNING)
        assert s.slots[seq.seq_id].owner is seq
        assert s.slots[seq.seq_id].cached == seq.kv_tokens()  # kept up to date step by step
    owners = [slot.owner.request_id for slot in s.slots if slot.owner is not None]
    assert len(owners) == len(set(owners)) and set(owners) == active
    for slot in s.slots:  # the scheduler's view of the KV cache matches the cache
        assert engine.kv[slot.seq_id] == slot.cached, f"slot {slot.seq_id} accounting"
        assert len(slot.cells) == len(slot.cached)
    refs: dict[int, int] = {}  # physical cells: each counted once however many slots share it
    for slot in s.slots:
        for cell in slot.cells:
            refs[cell] = refs.get(cell, 0) + 1
    assert refs == s.kv.cell_refs()
    assert s.num_cells_used() <= s.config.num_ctx


def finished(seq: Sequence) -> FinishReason | None:
    return seq.handle.finish_reason


def test_every_request_gets_exactly_max_tokens() -> None:
    s, engine = scheduler_and_engine(num_slots=4, num_ctx=4096, max_batch_tokens=64, eog=frozenset({999}))
    seqs = [make_seq(list(range(1, 10 + i * 7)), max_tokens=5 + i) for i in range(16)]
    for seq in seqs:
        s.add(seq)
    run(s, engine)
    for i, seq in enumerate(seqs):
        assert finished(seq) is FinishReason.LENGTH
        assert seq.num_generated == 5 + i


def test_long_prefill_does_not_block_running_sequences() -> None:
    s, engine = scheduler_and_engine(num_slots=2, num_ctx=8192, max_batch_tokens=32)
    short = make_seq([1, 2, 3], max_tokens=50)
    s.add(short)
    run_steps = 3
    for _ in range(run_steps):
        plan = s.schedule()
        s.update(plan, engine.execute(plan))
    long = make_seq(list(range(1, 2000)), max_tokens=1)
    s.add(long)
    generated_before = short.num_generated
    for _ in range(20):  # long is still prefilling, short keeps decoding every step
        plan = s.schedule()
        assert any(item.request_id == short.request_id for item in plan.items)
        s.update(plan, engine.execute(plan))
    assert short.num_generated == generated_before + 20
    assert long.status is SequenceStatus.PREFILLING


def after_a_system_prompt() -> tuple[Scheduler, FakeEngine, list[int], Sequence]:
    """Two slots, one of them idle with the finished first request's 300-token system prompt
    (+3 tokens) cached; returns the system prompt and that request."""
    s, engine = scheduler_and_engine(num_slots=2, num_ctx=4096, max_batch_tokens=512)
    system = list(range(100, 400))
    first = make_seq(system + [1, 2, 3], max_tokens=4)
    s.add(first)
    run(s, engine)
    return s, engine, system, first


def test_prefix_reuse_prefills_only_new_tokens() -> None:
    s, engine, system, _ = after_a_system_prompt()
    before = engine.num_decoded
    second = make_seq(system + [7, 8], max_tokens=4)
    s.add(second)
    run(s, engine)
    assert second.num_cached == len(system)
    assert engine.num_decoded - before == 2 + 3  # 2 new prompt tokens, then 3 decode steps


def test_idle_prefixes_move_to_ram_and_come_back_when_a_prompt_starts_with_them() -> None:
    s, engine, system, first = after_a_system_prompt()
    other = make_seq(list(range(600, 650)), max_tokens=4)  # admitted: the idle cache leaves the KV
    s.add(other)
    run(s, engine)
    assert s.kv.stats()["num_prefix_offloads"] == 1 and len(s.kv.prefixes) == 1  # type: ignore[arg-type]
    assert engine.kv[first.seq_id] == [] and s.num_cells_used() == len(engine.kv[other.seq_id])
    before = engine.num_decoded
    third = make_seq(system + [7, 8], max_tokens=4)
    s.add(third)
    plan = s.schedule()
    assert [op.kind.value for op in plan.kv_ops if op.seq_id == third.seq_id][-2:] == ["restore", "remove"]
    s.update(plan, engine.execute(plan))
    run(s, engine)
    assert s.kv.stats()["num_prefix_restores"] == 1 and third.num_cached == len(system)
    assert engine.num_decoded - before == 2 + 3  # only the new prompt tokens, then decode
    assert engine.kv[third.seq_id][: len(system)] == system


def test_small_idle_caches_stay_unless_a_long_prefill_comes() -> None:
    s, engine = scheduler_and_engine(num_slots=3, num_ctx=4096, max_batch_tokens=512)
    small = make_seq(list(range(100, 150)), max_tokens=4)
    s.add(small)
    run(s, engine)
    s.add(make_seq(list(range(600, 640)), max_tokens=4))  # short: the small cache stays for a repeat
    run(s, engine)
    assert s.kv.stats()["num_prefix_offloads"] == 0 and len(engine.kv[small.seq_id]) == 53
    s.add(make_seq(list(range(1000, 1300)), max_tokens=4))  # 300 new tokens attend over every cell
    run(s, engine)
    assert s.kv.stats()["num_prefix_offloads"] == 2 and engine.kv[small.seq_id] == []


def test_a_prompt_continuing_its_slot_reuses_it_in_place() -> None:
    s, engine = scheduler_and_engine(num_slots=2, num_ctx=4096, max_batch_tokens=512)
    turn = make_seq(list(range(100, 400)), max_tokens=4)
    s.add(turn)
    run(s, engine)
    again = make_seq(turn.tokens + [5], max_tokens=4)  # the whole conversation sent again, plus more
    s.add(again)
    run(s, engine)
    assert again.seq_id == turn.seq_id and again.num_cached == len(turn.tokens) - 1
    assert s.kv.stats()["num_prefix_offloads"] == 0 and s.kv.stats()["num_prefix_restores"] == 0


def test_without_a_prefix_ram_budget_idle_prefixes_stay_in_the_kv_cache() -> None:
    s, engine = scheduler_and_engine(num_slots=2, num_ctx=4096, max_batch_tokens=512, prefix_cache_bytes=0)
    first = make_seq(list(range(100, 400)), max_tokens=4)
    s.add(first)
    run(s, engine)
    s.add(make_seq(list(range(600, 650)), max_tokens=4))
    run(s, engine)
    assert s.kv.prefixes is None and len(engine.kv[first.seq_id]) == 300 + 3


def test_shared_prefix_is_copied_from_a_live_sequence() -> None:
    s, engine = scheduler_and_engine(num_slots=2, num_ctx=4096, max_batch_tokens=512, min_prefix_copy=16)
    system = list(range(100, 300))
    a = make_seq(system + [1], max_tokens=50)
    s.add(a)
    plan = s.schedule()
    s.update(plan, engine.execute(plan))
    b = make_seq(system + [2, 3], max_tokens=2)
    s.add(b)
    plan = s.schedule()
    assert any(op.kind.value == "copy" for op in plan.kv_ops)
    s.update(plan, engine.execute(plan))
    run(s, engine)
    assert b.num_cached == len(system)


def test_requests_sharing_a_prefix_in_prefill_wait_and_copy_it() -> None:
    s, engine = scheduler_and_engine(num_slots=4, num_ctx=4096, max_batch_tokens=64)
    system = list(range(100, 400))
    choices = [make_seq(system + [1, 2], max_tokens=3) for _ in range(3)]  # n=3, or three clients at once
    other = make_seq(system[:200] + [7, 8, 9], max_tokens=3)               # the same system prompt, shorter
    for seq in [*choices, other]:
        s.add(seq)
    run(s, engine)
    assert [seq.num_cached for seq in choices] == [0, 301, 301] and other.num_cached == 200
    # the shared tokens were computed once: 302 + 1 + 1 + 3 prompt tokens, 3 decode steps each
    assert engine.num_decoded == 302 + 1 + 1 + 3 + 4 * 2
    assert all(seq.handle.finish_reason is FinishReason.LENGTH for seq in [*choices, other])


def test_a_shared_prefix_counts_once_against_the_context() -> None:
    # physically 300 shared + 3 x 201 own cells = 903 fit in 1,100; counted per slot (1,503) the
    # third request used to stop with "length" after 65 tokens
    s, engine = scheduler_and_engine(num_slots=3, num_ctx=1100, max_batch_tokens=64)
    system = list(range(100, 400))
    seqs = [make_seq(system + [i], max_tokens=200) for i in range(3)]
    for seq in seqs:
        s.add(seq)
    run(s, engine)
    assert [seq.num_generated for seq in seqs] == [200, 200, 200]
    assert sorted(seq.num_cached for seq in seqs) == [0, 300, 300]
    assert s.num_cells_used() == 300 + 3 * 200  # idle caches: the shared prefix once, each tail


def test_a_request_waiting_on_a_cancelled_prefill_goes_ahead() -> None:
    s, engine = scheduler_and_engine(num_slots=2, num_ctx=4096, max_batch_tokens=64)
    prompt = list(range(100, 400))
    first, second = make_seq(prompt, max_tokens=2), make_seq(prompt, max_tokens=2)
    s.add(first)
    s.add(second)
    plan = s.schedule()
    s.update(plan, engine.execute(plan))
    assert second in s.waiting and first.status is SequenceStatus.PREFILLING
    s.cancel(first.request_id)
    run(s, engine)
    assert second.handle.finish_reason is FinishReason.LENGTH and second.num_cached == 0


def test_session_second_turn_and_eviction_restore() -> None:
    s, engine = scheduler_and_engine(num_slots=1, num_ctx=4096, max_batch_tokens=256)
    turn1 = make_seq(list(range(1, 50)), max_tokens=5, session_id="A")
    s.add(turn1)
    run(s, engine)
    history = turn1.tokens[:-1]  # the last sampled token never entered the cache
    other = make_seq(list(range(500, 520)), max_tokens=3, session_id="B")  # evicts A
    s.add(other)
    run(s, engine)
    assert "A" in s.kv.sessions
    turn2 = make_seq(turn1.tokens + [7, 8, 9], max_tokens=3, session_id="A")
    s.add(turn2)
    run(s, engine)
    assert turn2.num_cached == len(history)


def test_context_shift_keeps_generating_past_the_window() -> None:
    s, engine = scheduler_and_engine(num_slots=2, num_ctx=64, max_batch_tokens=32)
    plain = make_seq(list(range(1, 20)), max_tokens=200)
    shifted = make_seq(list(range(1, 20)), max_tokens=200, context_shift=True, num_keep=4)
    s.add(plain)
    run(s, engine)
    assert finished(plain) is FinishReason.LENGTH and plain.num_generated < 64
    s.add(shifted)
    run(s, engine)
    assert finished(shifted) is FinishReason.LENGTH and shifted.num_generated == 200
    assert shifted.num_discarded > 0
    assert engine.kv[shifted.seq_id][:4] == [1, 2, 3, 4]  # the kept prefix survived every shift


def test_context_shift_never_slides_a_cell_another_sequence_holds() -> None:
    # a cell has one position for every sequence holding it: sliding the copied system prompt
    # would move the other sequence's tokens too (and dropping it would free nothing)
    s, engine = scheduler_and_engine(num_slots=2, num_ctx=560, max_batch_tokens=64)
    system = list(range(100, 400))
    a = make_seq(system + [1], max_tokens=400, context_shift=True)
    b = make_seq(system + [2], max_tokens=200, context_shift=True)
    s.add(a)
    s.add(b)
    num_shifts = kept_shared = 0
    while s.has_work:
        before = {slot.seq_id: list(slot.cells) for slot in s.slots}
        plan = s.schedule()
        for op in plan.kv_ops:
            if op.kind.value != "shift":
                continue
            num_shifts += 1
            others = {cell for seq_id, cells in before.items() if seq_id != op.seq_id for cell in cells}
            assert not set(before[op.seq_id][op.p0:op.p1]) & others, "slid a cell another sequence holds"
            kept_shared += bool(set(before[op.seq_id][:300]) & others)
        s.update(plan, engine.execute(plan))
        check_invariants(s, engine)
    assert a.num_generated == 400 and b.num_generated == 200
    assert num_shifts and kept_shared  # some shifts happened while the prefix was shared, and kept it


def test_cancel_frees_everything_by_next_step() -> None:
    s, engine = scheduler_and_engine(num_slots=2, num_ctx=4096, max_batch_tokens=16)
    a, b, c = (make_seq(list(range(1, 100)), max_tokens=100) for _ in range(3))
    for seq in (a, b, c):
        s.add(seq)
    plan = s.schedule()
    s.update(plan, engine.execute(plan))
    assert s.cancel(a.request_id) and s.cancel(c.request_id)  # prefilling, queued
    plan = s.schedule()
    s.update(plan, engine.execute(plan))
    assert finished(a) is FinishReason.CANCELLED and finished(c) is FinishReason.CANCELLED
    assert engine.kv[a.seq_id] == [] and a.request_id not in engine.samplers
    assert not s.cancel(a.request_id)


def test_deadlines_cancel_queued_and_running_requests_only() -> None:
    clock = [0.0]
    s = Scheduler(SchedulerConfig(num_slots=1, num_ctx=512, max_batch_tokens=16), eog_tokens=frozenset(),
                  clock=lambda: clock[0])
    engine = FakeEngine(1, 16)

    def seq(deadline: float | None) -> Sequence:
        request = Request(f"r{next(_ids)}", (1, 2, 3), SamplingParams(max_tokens=50, ignore_eos=True),
                          deadline=deadline, arrival=0.0)
        return Sequence(request, RequestHandle(request.request_id, lambda _id: None),
                        IncrementalDetokenizer(lambda t: b"x"))

    running, queued, free = seq(5.0), seq(3.0), seq(None)
    for q in (running, queued, free):
        s.add(q)
    for _ in range(3):
        plan = s.schedule()
        s.update(plan, engine.execute(plan))
    assert running.status is SequenceStatus.RUNNING and queued.status is SequenceStatus.WAITING
    clock[0] = 3.0
    plan = s.schedule()  # the queued one's deadline passed
    s.update(plan, engine.execute(plan))
    assert finished(queued) is FinishReason.CANCELLED and finished(running) is None
    clock[0] = 5.0
    run(s, engine)
    assert finished(running) is FinishReason.CANCELLED and 0 < running.num_generated < 50
    assert finished(free) is FinishReason.LENGTH and free.num_generated == 50
    assert not s._deadlines  # finished sequences leave the deadline list
    check_invariants(s, engine)


def test_admission_queue_is_bounded_and_overflow_is_an_error() -> None:
    s = Scheduler(SchedulerConfig(num_slots=1, num_ctx=64, max_batch_tokens=8, max_waiting=2),
                  eog_tokens=frozenset())
    s.add(make_seq([1]))
    s.add(make_seq([1]))
    with pytest.raises(BusyError):
        s.add(make_seq([1]))
    with pytest.raises(ContextLengthExceededError) as info:
        Scheduler(SchedulerConfig(num_slots=1, num_ctx=64, max_batch_tokens=8), frozenset()).add(
            make_seq(list(range(1, 80))))
    assert info.value.num_prompt_tokens == 79 and info.value.num_ctx == 64


def test_priority_lane_goes_first_and_batch_work_is_not_starved() -> None:
    clock = [0.0]
    cfg = SchedulerConfig(num_slots=1, num_ctx=4096, max_batch_tokens=64, priority_aging_s=1.0)
    s = Scheduler(cfg, eog_tokens=frozenset(), clock=lambda: clock[0])
    engine = FakeEngine(1, 64)
    batch = make_seq([1, 2], max_tokens=2, priority=Priority.BATCH)
    s.add(batch)
    inter = make_seq([3, 4], max_tokens=2, priority=Priority.INTERACTIVE)
    s.add(inter)
    plan = s.schedule()
    assert plan.items[0].request_id == inter.request_id
    s.update(plan, engine.execute(plan))
    run(s, engine)
    assert finished(batch) is FinishReason.LENGTH


# The property tests' inputs, shared with their longer runs (test_scheduler_properties_slow.py).
RANDOM_OPS = (st.lists(st.tuples(st.sampled_from(["add", "add", "cancel", "step", "step", "drain"]),
                                 st.integers(1, 300), st.integers(1, 12), st.sampled_from([None, "s1", "s2", "s3"])),
                       min_size=1, max_size=80),
              st.integers(1, 4), st.sampled_from([16, 64, 256]), st.sampled_from([0, 1 << 20]))
PREFIX_RAM_REQUESTS = (st.lists(st.tuples(st.integers(0, 2), st.integers(1, 200), st.integers(1, 8), st.booleans()),
                                min_size=2, max_size=30),
                       st.integers(2, 4), st.sampled_from([512, 4096]))
# Found by the random search: a prefill took the last cells while two answers were running,
# and the one later in the queue was cut short ("length" after 4 of its 6 tokens) where the
# run with prefixes in RAM had room. Now the later sequence is preempted, never cut.
CUT_SHORT_BY_A_PREFILL = [
    (2, 145, 3, False), (0, 198, 3, False), (0, 137, 6, False), (2, 22, 5, False), (1, 34, 6, False),
    (2, 16, 8, False), (0, 180, 8, True), (2, 167, 1, False), (2, 96, 6, True), (0, 13, 7, True),
    (1, 97, 4, True), (2, 136, 5, True), (2, 162, 3, True), (2, 8, 5, False), (1, 28, 1, True),
    (1, 172, 1, True), (1, 98, 2, False), (0, 150, 1, False), (1, 160, 4, True), (0, 132, 7, False),
    (1, 3, 1, True), (2, 195, 8, False), (1, 175, 6, False), (0, 188, 1, True), (2, 132, 2, False),
    (1, 197, 8, False)]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(*RANDOM_OPS)
def test_random_add_cancel_step(ops: list, num_slots: int, budget: int, prefix_ram: int) -> None:  # type: ignore[type-arg]
    budget = max(budget, num_slots)
    s, engine = scheduler_and_engine(num_slots=num_slots, num_ctx=1024, max_batch_tokens=budget, max_waiting=1000,
                                     prefix_cache_bytes=prefix_ram, min_offload_tokens=16,  # offloads, restores
                                     eog=frozenset({5}))
    seqs: list[Sequence] = []
    for op, n, k, session in ops:
        if op == "add":
            prompt = [(i * 7 + n % 3) % 50 + 10 for i in range(n)]  # three families of shared prefixes
            seq = make_seq(prompt, max_tokens=k, session_id=session, ignore_eos=False)
            seqs.append(seq)
            s.add(seq)
        elif op == "cancel" and seqs:
            s.cancel(seqs[n % len(seqs)].request_id)
        elif op == "drain":  # everything finishes: slots go idle with their caches
            run(s, engine, max_steps=5000)
        else:
            plan = s.schedule()
            s.update(plan, engine.execute(plan))
            check_invariants(s, engine)  # the cache catches up with cancels at the next step
    steps = run(s, engine, max_steps=5000)
    assert steps < 5000, "starvation: work left after 5000 steps"
    for seq in seqs:  # everything ended, nothing leaked
        assert seq.handle.finish_reason is not None
    assert not s.active and not s.waiting
    assert engine.samplers == set(), "samplers of finished requests were not released"
    for slot in s.slots:
        assert slot.owner is None
    if s.kv.prefixes is not None:  # every offload completed; restores took what they used
        assert not s.kv.num_pending_saves
        assert s.kv.prefixes.num_offloads - s.kv.prefixes.num_restores == len(s.kv.prefixes) + s.kv.prefixes.num_dropped


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(*PREFIX_RAM_REQUESTS)
@example(CUT_SHORT_BY_A_PREFILL, 4, 512)
def test_prefix_ram_changes_no_output(requests: list, num_slots: int, num_ctx: int) -> None:  # type: ignore[type-arg]
    """Idle caches moved to RAM and restored: the same tokens as a run that keeps them in the
    KV cache (the fake engine's 'sampling' depends on the cells' content), every step balanced."""
    outputs = []
    for prefix_ram in (0, 1 << 20):
        s, engine = scheduler_and_engine(num_slots=num_slots, num_ctx=num_ctx, max_batch_tokens=64, max_waiting=1000,
                                         prefix_cache_bytes=prefix_ram, min_offload_tokens=16)
        seqs = []
        for family, n, k, drain in requests:  # families share long prefixes; a drain lets slots go idle
            seq = make_seq([(i * 7 + family) % 50 + 10 for i in range(n)], max_tokens=k)
            seqs.append(seq)
            s.add(seq)
            if drain:
                run(s, engine)
            else:
                plan = s.schedule()
                s.update(plan, engine.execute(plan))
                check_invariants(s, engine)
        run(s, engine)
        outputs.append([seq.tokens for seq in seqs])
        # every prompt fits with its answer: nobody is cut short, however full the cache got
        assert [seq.num_generated for seq in seqs] == [k for _, _, k, _ in requests]
        if s.kv.prefixes is not None:
            assert not s.kv.num_pending_saves
            assert s.kv.prefixes.num_offloads - s.kv.prefixes.num_restores == len(s.kv.prefixes) + s.kv.prefixes.num_dropped
    assert outputs[0] == outputs[1]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 3), max_size=40), st.lists(st.integers(0, 3), max_size=40), st.booleans())
def test_common_prefix_len_matches_a_plain_scan(a: list[int], b: list[int], as_tuple: bool) -> None:
    from botframework.scheduler.session_store import common_prefix_len

    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    assert common_prefix_len(tuple(a) if as_tuple else a, b) == n


def test_the_last_finished_requests_are_released_without_a_step_of_their_own() -> None:
    """take_last_releases: once freeing finished requests' samplers is all that is left, their
    ids come out of the next plan (and has_work goes false); while anything else is left, ()."""
    s, engine = scheduler_and_engine(num_slots=2, num_ctx=64)
    short, longer = make_seq([1, 2, 3], max_tokens=1), make_seq([4, 5], max_tokens=3)
    s.add(short)
    s.add(longer)
    plan = s.schedule()
    s.update(plan, engine.execute(plan))  # `short` is done; `longer` goes on
    assert short.handle.finished.is_set() and s.take_last_releases() == ()
    plan = s.schedule()
    assert plan.release == (short.request_id,)  # the next step frees it
    s.update(plan, engine.execute(plan))
    while s.active:
        plan = s.schedule()
        s.update(plan, engine.execute(plan))
    assert s.has_work and s.take_last_releases() == (longer.request_id,)
    assert not s.has_work and s.take_last_releases() == ()
    assert s.schedule().release == ()


def _letters(token: int) -> bytes:
    """A token's piece in these tests: a letter (t -> chr(97 + t % 26)), but 19 is "é"."""
    return "é".encode() if token == 19 else chr(97 + token % 26).encode()


def _text_seq(prompt: list[int], max_tokens: int, stop: tuple[str, ...] = (), ignore_eos: bool = False,
              stream: bool = False) -> Sequence:
    """A request whose tokens read as letters (_letters), for stop strings."""
    request = Request(f"r{next(_ids)}", tuple(prompt), SamplingParams(max_tokens=max_tokens, stop=stop,
                                                                      ignore_eos=ignore_eos), stream=stream)
    return Sequence(request, RequestHandle(request.request_id, lambda _id: None), IncrementalDetokenizer(_letters))


class _Sink:
    """A server's direct stream (server/direct.py) to the scheduler: takes every delta it is
    given, and the text that a run sent natively (NativeSink)."""

    sends_natively = True

    def __init__(self) -> None:
        self.deltas: list[Delta] = []
        self.native_text = ""  # what the scheduler says the runs sent
        self.num_native = 0
        self.open_runs = 0

    def take(self, delta: Delta) -> Taken:
        self.deltas.append(delta)
        return Taken.YES

    def begin_native(self) -> tuple[int, bytes, bytes, bool, str]:
        self.open_runs += 1
        return -1, b"", b"", False, ""

    def took_natively(self, delta: Delta, sent: StreamSent) -> Taken:
        assert sent.num_sent == len(delta.token_ids) and self.open_runs == 0  # (after end_native)
        self.deltas.append(delta)
        self.native_text += delta.text
        self.num_native += sent.num_sent
        return Taken.YES

    def end_native(self) -> None:
        self.open_runs -= 1


def _answers(runs: bool, interrupt_every: int | None = None, stop_bytes: bool = True, stream: bool = False
             ) -> tuple[list[tuple[object, ...]], int]:
    """Each request's deltas (text, tokens, finish, usage) and the cache at the end, stepping
    plainly or with runs of steps wherever the scheduler allows them (as the worker does: the
    KV ops a step leaves, cells cut past a finish, applied right after it); and the tokens
    the engine decoded. `stream`: every request streams to a _Sink (what it took, then what
    the consumer got)."""
    s, engine = scheduler_and_engine(eog=frozenset({7}), num_slots=4, num_ctx=512, max_batch_tokens=64,
                                     run_steps=8 if runs else 0)
    engine = FakeEngine(4, 64, vocab=20, eog=7)
    engine.piece = _letters  # as the requests' detokenizer reads them
    seqs = [_text_seq([4, 5], 33, stop=("dc",), stream=stream), _text_seq([6], 50, ignore_eos=True, stream=stream),
            _text_seq([2, 9, 4, 4], 25, stop=("kr", "zz"), stream=stream),
            _text_seq([3, 3], 60, ignore_eos=True, stop=("shq",), stream=stream)]
    late = _text_seq([1, 2, 3], 40, stop=("ikr",), stream=stream)
    sinks = {}
    for seq in [*seqs, late]:
        sinks[seq.request_id] = _Sink()
        if stream:
            assert seq.handle.attach_direct(sinks[seq.request_id])
    for seq in seqs:
        s.add(seq)
    steps = num_runs = 0
    while s.has_work:
        plan = s.schedule()
        length, stop_on_eog, stop_maps = s.run_length(plan)
        if length:
            assert runs
            num_runs += 1
            handles = [s.active[item.request_id].handle for item in plan.items] if stream else []
            streams = tuple(NativeStream(*h.begin_native(), budget=s.send_budget(item))  # type: ignore[misc]
                            for item, h in zip(plan.items, handles, strict=True)) if stream else ()
            run = engine.run_steps(plan, length, stop_on_eog, interrupt_every, stop_maps if stop_bytes else b"",
                                   streams)
            for handle in handles:
                handle.end_native()
            s.update_run(plan, run)
        else:
            s.update(plan, engine.execute(plan))
        if s.kv.has_ops and not s.kv.num_pending_saves:
            engine.execute(StepPlan(items=(), kv_ops=s.kv.take_ops()[0]))
        check_invariants(s, engine)
        steps += 1
        if steps == 3:
            s.add(late)  # joins while the others run (one of them finishes first: it waits)
    assert (num_runs > 0) == runs
    assert (sum(sink.num_native for sink in sinks.values()) > 0) == (runs and stream)
    for request_id, sink in sinks.items():  # the runs sent what the scheduler accounts for
        assert sink.native_text == engine.sent_text.get(request_id, "")
    out: list[tuple[object, ...]] = []
    for seq in [*seqs, late]:
        deltas = sinks[seq.request_id].deltas + list(seq.handle)
        out.append(("".join(d.text for d in deltas), tuple(t for d in deltas for t in d.token_ids),
                    deltas[-1].finish_reason, deltas[-1].usage, tuple(seq.tokens)))
    return [*out, tuple(tuple(v) for v in engine.kv.values())], engine.num_decoded


def test_runs_of_steps_answer_exactly_as_single_steps() -> None:
    """update_run after Engine.run_steps (here the fake's): the same text, tokens, finish reasons
    (end of generation, stop strings inside a run, max_tokens), usage and cache contents as
    stepping one token at a time, also when runs are cut short by an interrupt, and without
    the stop bytes that end a run where a stop string may be complete (then more tokens are
    decoded past a finish and cut)."""
    plain, decoded = _answers(runs=False)
    assert {answer[2] for answer in plain[:-1]} >= {FinishReason.STOP, FinishReason.LENGTH}
    assert _answers(runs=True)[0] == plain
    assert _answers(runs=True, interrupt_every=3)[0] == plain
    blind, decoded_blind = _answers(runs=True, stop_bytes=False)
    assert blind == plain
    assert decoded_blind > _answers(runs=True)[1] >= decoded  # the stop bytes spare steps past a stop


def test_runs_that_send_streams_themselves_answer_exactly_as_single_steps() -> None:
    """Streamed requests with a native sink run too (NativeStream): what the runs sent plus
    what went the usual way is, delta for delta in total, what single steps give (stop strings,
    a non-ASCII token, max_tokens, the end of generation), also with interrupts."""
    plain, _ = _answers(runs=False)
    assert _answers(runs=False, stream=True)[0] == plain
    assert _answers(runs=True, stream=True)[0] == plain
    assert _answers(runs=True, stream=True, interrupt_every=3)[0] == plain


def test_runs_only_for_plain_whole_answers_that_fit() -> None:
    """run_length: 0 while a request streams, has a grammar, logit bias or logprobs, while
    anything waits or has a deadline; otherwise bounded by max_tokens and the context."""
    from botframework.specs import GrammarSpec, SamplerSpec

    def length(*seqs: Sequence, num_ctx: int = 512) -> int:
        s, engine = scheduler_and_engine(num_slots=4, num_ctx=num_ctx, max_batch_tokens=64, run_steps=16)
        for seq in seqs:
            s.add(seq)
        for _ in range(2):  # prefill, then the first decode step
            plan = s.schedule()
            s.update(plan, engine.execute(plan))
        return s.run_length(s.schedule())[0]

    def with_params(seq: Sequence, **changes: object) -> Sequence:
        request = dataclasses.replace(seq.request, params=dataclasses.replace(seq.request.params, **changes))
        return Sequence(request, seq.handle, seq.detokenizer)

    assert length(_text_seq([1, 2], 100)) == 16
    assert length(_text_seq([1, 2], 100), _text_seq([3], 100)) == 16
    assert length(_text_seq([1, 2], 10)) == 10 - 2  # two tokens sampled before the run
    assert length(_text_seq([1, 2], 100), num_ctx=12) == 12 - 1 - 4
    # a request that waits for a slot; a deadline; a model whose cache cannot drop last cells
    assert length(*(_text_seq([i + 1], 100) for i in range(5))) == 0
    deadline = _text_seq([1, 2], 100)
    deadline.request = dataclasses.replace(deadline.request, deadline=time.monotonic() + 3600)
    assert length(deadline) == 0

    s, engine = scheduler_and_engine(num_slots=2, num_ctx=64, run_steps=16, can_draft=False)
    s.add(_text_seq([1, 2], 100))
    for _ in range(2):
        plan = s.schedule()
        s.update(plan, engine.execute(plan))
    assert s.run_length(s.schedule()) == (0, (), b"")

    s, engine = scheduler_and_engine(num_slots=2, num_ctx=64, run_steps=16)
    s.add(_text_seq([1, 2], 100, stop=("ab", "", "é")))
    s.add(_text_seq([3], 100))
    for _ in range(2):
        plan = s.schedule()
        s.update(plan, engine.execute(plan))
    steps, stop_on_eog, maps = s.run_length(s.schedule())
    assert steps == 16 and stop_on_eog == (True, True) and len(maps) == 64
    set_bits = {b for b in range(256) if maps[b >> 3] & (1 << (b & 7))}
    assert set_bits == {ord("b"), "é".encode()[-1]} and not any(maps[32:])
    assert length(_text_seq([1, 2], 100, stream=True)) == 0
    assert length(_text_seq([1, 2], 100), _text_seq([3], 100, stream=True)) == 0
    assert length(with_params(_text_seq([1, 2], 100), num_logprobs=0)) == 0
    assert length(with_params(_text_seq([1, 2], 100), sampler=SamplerSpec(logit_bias={3: 1.0}))) == 0
    assert length(with_params(_text_seq([1, 2], 100), sampler=SamplerSpec(grammar=GrammarSpec('root ::= "a"+')))) == 0


def test_an_admission_is_cheap_only_when_it_is_just_the_prompt() -> None:
    """admits_cheaply (what an inline step on an event loop may do): not for a session, a
    grammar, processors, without a free slot, with an idle cache that admitting would move to
    RAM, or a stored prefix it would bring back."""
    from botframework.specs import GrammarSpec, SamplerSpec

    s, engine = scheduler_and_engine(num_slots=2, num_ctx=1024, max_batch_tokens=512, min_offload_tokens=32)
    assert s.admits_cheaply(_text_seq([1, 2], 1))
    assert not s.admits_cheaply(make_seq([1, 2], session_id="s"))
    grammar = _text_seq([1, 2], 1)
    grammar.request = dataclasses.replace(grammar.request, params=dataclasses.replace(
        grammar.request.params, sampler=SamplerSpec(grammar=GrammarSpec('root ::= "a"'))))
    assert not s.admits_cheaply(grammar)
    processors = _text_seq([1, 2], 1)
    processors.request = dataclasses.replace(processors.request, logits_processors=(lambda logits, h: None,))
    assert not s.admits_cheaply(processors)

    long_prompt = list(range(1, 41))
    s.add(_text_seq(long_prompt, 1))  # leaves an idle cache of 40 tokens (>= min_offload_tokens)
    run(s, engine)
    assert not s.admits_cheaply(_text_seq([7, 8], 1))  # admitting would move that cache to RAM
    s.add(_text_seq([7, 8], 1))
    run(s, engine)  # ...which it did
    assert s.kv.prefixes is not None and s.kv.prefixes.longest_prefix(long_prompt)[1] == 40
    assert s.admits_cheaply(_text_seq([9, 9], 1))
    assert not s.admits_cheaply(_text_seq([*long_prompt[:20], 5], 1))  # would bring it back

    busy = [make_seq([i + 1], max_tokens=50) for i in range(2)]
    for seq in busy:
        s.add(seq)
    plan = s.schedule()
    s.update(plan, engine.execute(plan))
    assert not s.admits_cheaply(_text_seq([9, 9], 1))  # no free slot


def test_a_stream_runs_only_with_a_native_sink_and_nothing_held() -> None:
    """run_length for a streamed request: only while its handle has a native sink, its
    detokenizer holds no bytes of a character and its stop strings hold no text; its map has
    the first and last bytes of its stop strings. send_budget: the tokens before a finish by
    max_tokens."""
    def scheduled(seq: Sequence, sink: bool = True) -> tuple[Scheduler, StepPlan]:
        s, engine = scheduler_and_engine(num_slots=2, num_ctx=512, run_steps=16)
        if sink:
            assert seq.handle.attach_direct(_Sink())
        s.add(seq)
        for _ in range(2):
            plan = s.schedule()
            s.update(plan, engine.execute(plan))
        return s, s.schedule()

    s, plan = scheduled(_text_seq([1, 2], 100, stream=True), sink=False)
    assert s.run_length(plan)[0] == 0
    s, plan = scheduled(_text_seq([1, 2], 100, stop=("xy",), stream=True))
    steps, _, maps = s.run_length(plan)
    assert steps == 16 and {b for b in range(256) if maps[b >> 3] & (1 << (b & 7))} == {ord("x"), ord("y")}
    assert s.send_budget(plan.items[0]) == 100 - 2 - 1
    seq = s.active[plan.items[0].request_id]
    seq.detokenizer._pending = "é".encode()[:1]  # the first byte of a character waits
    assert s.run_length(plan)[0] == 0
    seq.detokenizer._pending = b""
    seq.stops.feed("x")  # the start of "xy" is held
    assert seq.stops.holding and s.run_length(plan)[0] == 0
