"""When the KV cache runs out, the scheduler preempts (frees and re-queues) the sequence that
comes last in queue order instead of cutting a running answer short; a preempted sequence is
recomputed when readmitted and gives exactly the tokens it would have given alone."""

from __future__ import annotations

from test_scheduler import check_invariants, finished, make_seq, run, scheduler_and_engine

from botframework.scheduler.output import FinishReason
from botframework.scheduler.sequence import SequenceStatus


def alone(prompt: list[int], max_tokens: int) -> list[int]:
    """The tokens a request gets with the cache to itself."""
    s, engine = scheduler_and_engine(num_slots=2, num_ctx=4096, max_batch_tokens=64)
    seq = make_seq(prompt, max_tokens=max_tokens)
    s.add(seq)
    run(s, engine)
    return seq.tokens


def test_a_running_answer_is_not_cut_short_by_a_later_prefill() -> None:
    s, engine = scheduler_and_engine(num_slots=2, num_ctx=100, max_batch_tokens=64, prefix_cache_bytes=0)
    first = make_seq(list(range(10, 50)), max_tokens=40)  # 40 + 40 cells
    s.add(first)
    for _ in range(3):
        plan = s.schedule()
        s.update(plan, engine.execute(plan))
    later = make_seq(list(range(200, 250)), max_tokens=5)  # 50 more: the cache holds 100
    s.add(later)
    steps = 0
    while s.has_work:
        plan = s.schedule()
        s.update(plan, engine.execute(plan))
        check_invariants(s, engine)
        steps += 1
        assert steps < 1000
    assert s.num_preemptions >= 1
    assert later.num_preemptions >= 1 and first.num_preemptions == 0
    for seq, prompt, k in ((first, list(range(10, 50)), 40), (later, list(range(200, 250)), 5)):
        assert finished(seq) is FinishReason.LENGTH and seq.num_generated == k
        assert seq.tokens == alone(prompt, k)  # recomputed, same answer


def test_a_preempted_running_sequence_resumes_where_it_stopped() -> None:
    s, engine = scheduler_and_engine(num_slots=2, num_ctx=80, max_batch_tokens=64, prefix_cache_bytes=0)
    a = make_seq(list(range(10, 30)), max_tokens=50)   # 20 + 50
    b = make_seq(list(range(300, 320)), max_tokens=30)  # 20 + 30: both running, 120 > 80 cells
    s.add(a)
    s.add(b)
    preempted_running = False
    while s.has_work:
        running_before = b.status is SequenceStatus.RUNNING
        preemptions_before = b.num_preemptions
        plan = s.schedule()
        if running_before and b.num_preemptions > preemptions_before:
            preempted_running = True  # (readmitted at once, it waits in its slot for cells)
            assert b.num_prefill == len(b.tokens) > b.num_prompt  # prompt + what it generated
            assert b.status in (SequenceStatus.WAITING, SequenceStatus.PREFILLING)
        s.update(plan, engine.execute(plan))
        check_invariants(s, engine)
    assert preempted_running
    assert a.num_generated == 50 and b.num_generated == 30
    assert a.tokens == alone(list(range(10, 30)), 50) and b.tokens == alone(list(range(300, 320)), 30)
    assert b.num_cached == 0  # usage counts the first admission, not the recompute


def test_a_sequence_alone_at_the_context_limit_still_ends_with_length() -> None:
    s, engine = scheduler_and_engine(num_slots=2, num_ctx=40, max_batch_tokens=64, prefix_cache_bytes=0)
    seq = make_seq(list(range(10, 30)), max_tokens=100)
    s.add(seq)
    run(s, engine)
    assert finished(seq) is FinishReason.LENGTH and seq.num_generated == 20 and s.num_preemptions == 0


def test_a_sampler_that_cannot_be_built_ends_its_request_before_any_decode() -> None:
    from botframework.errors import GrammarError

    s, engine = scheduler_and_engine(num_slots=2, num_ctx=4096, max_batch_tokens=16, prefix_cache_bytes=0)
    bad = make_seq(list(range(10, 60)), max_tokens=4)
    good = make_seq(list(range(100, 110)), max_tokens=4)
    engine.bad_samplers[bad.request_id] = GrammarError("invalid GBNF", param="grammar")
    s.add(bad)
    s.add(good)
    before = engine.num_decoded
    run(s, engine)
    assert finished(bad) is FinishReason.ERROR and bad.num_generated == 0
    assert engine.num_decoded - before == 10 + 3  # only the good request's tokens were decoded
    assert finished(good) is FinishReason.LENGTH and good.num_generated == 4
    assert all(slot.owner is None for slot in s.slots) and engine.kv[bad.seq_id] == []


def test_a_preempted_sequence_comes_back_only_when_all_of_it_fits() -> None:
    """Readmitted as soon as a slot is free, a preempted sequence would recompute chunks it must
    give back at the next squeeze (+85% decoded tokens in this case, 4 preemptions)."""
    s, engine = scheduler_and_engine(num_slots=2, num_ctx=200, max_batch_tokens=32, prefix_cache_bytes=0)
    a = make_seq(list(range(10, 30)), max_tokens=170)
    b = make_seq(list(range(300, 380)), max_tokens=100)
    s.add(a)
    for _ in range(2):
        plan = s.schedule()
        s.update(plan, engine.execute(plan))
    s.add(b)
    run(s, engine)
    assert a.num_generated == 170 and b.num_generated == 100
    assert b.num_preemptions == 1
    minimal = 20 + 170 + 80 + 100 - 2  # every prompt token and every token but each last decoded once
    assert engine.num_decoded <= minimal * 1.4, engine.num_decoded
