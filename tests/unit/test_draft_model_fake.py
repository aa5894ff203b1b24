"""The draft model's bookkeeping on fakes: DraftModel over a fake draft context, the scheduler
over the fake engine (tests/unit/fake_engine.py).

    DraftModel.cached (its view) == the fake draft context's cells, after every step
    greedy output with model drafts == without; a draft model that is sometimes wrong changes
    nothing but the acceptance; cancellations, slot reuse, a full draft cache and a failed draft
    decode leave both caches consistent and never fail a request
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytest
from fake_engine import FakeEngine
from test_speculative import CopyingEngine, check_cache, make_seq, outcome, prompt

from botframework.engine.draft_model import DraftModel
from botframework.errors import KVCacheFullError
from botframework.scheduler.drafter import EXPLORE_EVERY, ModelDrafter
from botframework.scheduler.scheduler import Scheduler, SchedulerConfig

VOCAB = 1000


class FakeBatch:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.token = np.zeros(capacity, dtype=np.int32)
        self.pos = np.zeros(capacity, dtype=np.int32)
        self.seq_id = np.zeros((capacity, 1), dtype=np.int32)
        self.logits = np.zeros(capacity, dtype=np.int8)
        self.n_tokens = 0

    @property
    def num_free(self) -> int:
        return self.capacity - self.n_tokens

    def clear(self) -> None:
        self.n_tokens = 0

    def add_sequence(self, tokens: Sequence[int], start_pos: int, seq_id: int, logits_last: bool) -> int:
        n = len(tokens)
        assert 0 < n <= self.num_free
        lo, hi = self.n_tokens, self.n_tokens + n
        self.token[lo:hi] = tokens
        self.pos[lo:hi] = np.arange(start_pos, start_pos + n)
        self.seq_id[lo:hi, 0] = seq_id
        self.logits[lo:hi] = 0
        self.logits[hi - 1] = logits_last
        self.n_tokens = hi
        return hi - 1


class FakeMemory:
    def __init__(self, ctx: FakeDraftContext) -> None:
        self.ctx = ctx

    def clear(self) -> None:
        for cells in self.ctx.cells.values():
            cells.clear()

    def seq_rm(self, seq_id: int, p0: int = -1, p1: int = -1) -> bool:
        assert p1 == -1
        cells = self.ctx.cells[seq_id]
        del cells[max(p0, 0):]
        return True


class FakeDraftContext:
    """A draft model's context: cells per sequence (positions must follow on), a cell budget,
    logits = one-hot of `model(history)`; fail_next makes the next decode fail (KV full)."""

    def __init__(self, model: Callable[[list[int]], int], n_ctx: int = 4096, n_batch: int = 64,
                 n_seq_max: int = 4) -> None:
        self.model = model
        self.n_ctx, self.n_batch, self.n_seq_max = n_ctx, n_batch, n_seq_max
        self.cells: dict[int, list[int]] = {i: [] for i in range(n_seq_max)}
        self.rows: dict[int, int] = {}
        self.num_decodes = 0
        self.fail_next = False

    @property
    def memory(self) -> FakeMemory:
        return FakeMemory(self)

    def decode(self, batch: FakeBatch) -> None:
        assert 0 < batch.n_tokens <= self.n_batch
        if self.fail_next or sum(map(len, self.cells.values())) + batch.n_tokens > self.n_ctx:
            self.fail_next = False
            raise KVCacheFullError("no KV slot for the batch", op="llama_decode", code=1)
        self.num_decodes += 1
        self.rows = {}
        for i in range(batch.n_tokens):
            cells = self.cells[int(batch.seq_id[i, 0])]
            assert batch.pos[i] == len(cells), "a draft token not right after its sequence's cells"
            cells.append(int(batch.token[i]))
            if batch.logits[i]:
                self.rows[i] = self.model(list(cells))

    def logits_ith(self, i: int) -> np.ndarray:
        out = np.zeros(VOCAB, dtype=np.float32)
        out[self.rows[i]] = 1.0
        return out


def check_drafts(drafts: DraftModel) -> None:
    ctx: FakeDraftContext = drafts.context
    for seq_id, cells in ctx.cells.items():
        assert cells == drafts.cached.get(seq_id, []), f"draft seq {seq_id} accounting"


def make(model: Callable[[list[int]], int] | None, num_slots: int = 4, **ctx: int
         ) -> tuple[Scheduler, CopyingEngine, DraftModel | None]:
    engine = CopyingEngine(num_slots, 64)
    drafts = None
    if model is not None:
        context = FakeDraftContext(model, n_seq_max=num_slots, **ctx)
        drafts = DraftModel(context, FakeBatch(context.n_batch))
    cfg = SchedulerConfig(num_slots=num_slots, num_ctx=2048, max_batch_tokens=64,
                          speculative="model" if drafts else "none")
    return Scheduler(cfg, eog_tokens=frozenset(), draft_source=drafts), engine, drafts


def run(s: Scheduler, engine: FakeEngine, drafts: DraftModel | None,
        between: Callable[[int], None] | None = None) -> None:
    step = 0
    while s.has_work and step < 10_000:
        plan = s.schedule()
        if drafts is not None:
            check_drafts(drafts)
            for item in plan.items:  # the draft model saw exactly the sequence's tokens, then its drafts
                if item.num_draft:
                    tokens = list(s.active[item.request_id].tokens)
                    cached = drafts.cached[item.seq_id]
                    assert cached[:len(tokens)] == tokens
                    assert cached[len(tokens):len(tokens) + item.num_draft - 1] == list(item.tokens[1:-1])
        result = engine.execute(plan)
        check_cache(s, engine)
        if between is not None:
            between(step)
        s.update(plan, result)
        step += 1


def same_model(engine: CopyingEngine) -> Callable[[list[int]], int]:
    return engine.next_token


def sometimes_wrong(engine: CopyingEngine) -> Callable[[list[int]], int]:
    return lambda history: (engine.next_token(history) + 1) % (VOCAB - 1) if len(history) % 5 == 0 \
        else engine.next_token(history)


@pytest.mark.parametrize("drafter", [same_model, sometimes_wrong])
def test_model_drafts_keep_greedy_output(drafter: Callable[[CopyingEngine], Callable[[list[int]], int]]) -> None:
    plain_s, plain_engine, _ = make(None)
    plain = [make_seq(prompt(offset=i), max_tokens=90) for i in range(3)]
    for seq in plain:
        plain_s.add(seq)
    run(plain_s, plain_engine, None)
    s, engine, drafts = make(drafter(CopyingEngine(4, 64)))
    assert drafts is not None
    seqs = [make_seq(prompt(offset=i), max_tokens=90) for i in range(3)]
    for seq in seqs:
        s.add(seq)
    run(s, engine, drafts)
    for a, b in zip(plain, seqs, strict=True):
        assert outcome(a) == outcome(b)
        assert isinstance(b.drafter, ModelDrafter)
    assert s.num_accepted_draft_tokens > 0
    if drafter is same_model:  # the target itself: every draft is accepted
        assert s.num_accepted_draft_tokens == s.num_draft_tokens
    else:
        assert s.num_accepted_draft_tokens < s.num_draft_tokens
    # batched: one draft decode serves every drafting sequence at a position
    assert drafts.num_decodes < s.num_draft_tokens


def test_cancel_and_slot_reuse_keep_the_draft_cache_in_step() -> None:
    s, engine, drafts = make(same_model(CopyingEngine(2, 64)), num_slots=2)
    assert drafts is not None
    first = [make_seq(prompt(offset=i), max_tokens=80) for i in range(2)]
    for seq in first:
        s.add(seq)

    def cancel(step: int) -> None:
        if step == 5:
            assert drafts.cached[first[0].seq_id]  # it drafted
            s.cancel(first[0].request_id)
        if step == 7:  # a new request takes the freed slot: its prompt shares nothing with the old one
            s.add(later)

    later = make_seq([7] * 3 + prompt(30, offset=3), max_tokens=50)
    run(s, engine, drafts, cancel)
    check_drafts(drafts)
    plain_s, plain_engine, _ = make(None, num_slots=2)
    again = make_seq([7] * 3 + prompt(30, offset=3), max_tokens=50)
    plain_s.add(again)
    run(plain_s, plain_engine, None)
    assert outcome(later) == outcome(again)
    assert 0 < later.num_accepted_draft_tokens == later.num_draft_tokens  # nothing stale drafted for it


def test_a_full_draft_cache_drops_stale_sequences_then_skips() -> None:
    model = same_model(CopyingEngine(4, 64))
    drafts = DraftModel(FakeDraftContext(model, n_ctx=100, n_batch=64), FakeBatch(64))
    a, b = prompt(60), prompt(60, offset=5)
    assert len(drafts.draft({0: (a, 4)})[0]) == 4
    assert drafts.draft({1: (b, 4)})[1]  # seq 0's stale cells made room
    assert drafts.cached[0] == [] and len(drafts.cached[1]) == 60 + 3
    check_drafts(drafts)
    long = prompt(120)
    assert drafts.draft({2: (long, 4)}) == {}  # catching up: 64 of its tokens, no drafts yet
    assert drafts.cached[2] == long[:64] and drafts.cached[1] == []
    assert drafts.draft({2: (long, 4)}) == {}  # the rest does not fit: no drafts, no error
    check_drafts(drafts)


def test_catch_up_is_n_batch_tokens_a_step_shortest_first() -> None:
    model = same_model(CopyingEngine(4, 64))
    drafts = DraftModel(FakeDraftContext(model, n_batch=16), FakeBatch(16))
    long, short = prompt(40), prompt(10, offset=3)
    assert list(drafts.draft({0: (long, 3), 1: (short, 3)})) == [1]  # short first; long gets the other 6
    assert drafts.cached[0] == long[:6]
    assert drafts.draft({0: (long, 3)}) == {} and drafts.cached[0] == long[:22]
    assert drafts.draft({0: (long, 3)}) == {} and drafts.cached[0] == long[:38]  # 18 left: 16 more
    [d1, d2, d3] = drafts.draft({0: (long, 3)})[0]  # the last 2 fit: now it drafts
    history = list(long)
    for token in (d1, d2, d3):  # greedy: each draft is the model's token after the ones before
        assert token == model(history)
        history.append(token)
    check_drafts(drafts)


def test_a_failed_draft_decode_clears_the_cache_and_drafts_nothing() -> None:
    model = same_model(CopyingEngine(4, 64))
    drafts = DraftModel(FakeDraftContext(model, n_batch=64), FakeBatch(64))
    tokens = prompt(40)
    out = drafts.draft({0: (tokens, 3)})
    assert drafts.context.num_decodes == 3 and len(out[0]) == 3  # catch-up + d1, then d2, d3
    drafts.context.fail_next = True
    assert drafts.draft({0: (tokens + out[0], 3)}) == {} and drafts.num_failures == 1
    check_drafts(drafts)
    assert all(not cells for cells in drafts.context.cells.values())
    assert len(drafts.draft({0: (tokens + out[0], 3)})[0]) == 3  # and it drafts again from scratch
    check_drafts(drafts)


def test_sync_keeps_the_common_prefix() -> None:
    model = same_model(CopyingEngine(4, 64))
    drafts = DraftModel(FakeDraftContext(model), FakeBatch(64))
    tokens = prompt(30)
    [d1, d2, d3] = drafts.draft({0: (tokens, 3)})[0]
    assert drafts.cached[0] == tokens + [d1, d2]  # the last draft is never decoded
    decoded = drafts.context.num_decodes
    # the target kept d1 and corrected the second: only the correction is new to the draft model
    drafts.draft({0: ([*tokens, d1, 5], 1)})
    assert drafts.cached[0] == [*tokens, d1, 5] and drafts.context.num_decodes == decoded + 1
    check_drafts(drafts)


def test_a_held_back_draft_model_still_explores_and_its_drafts_are_verified() -> None:
    """Steps whose cost grows with every token (10 ms each: no draft can pay): the draft model
    drafts only on the exploring steps (every EXPLORE_EVERY-th held back in a row), and what
    it drafted then is verified in that step, not dropped by a second look at the costs."""
    s, engine, drafts = make(same_model(CopyingEngine(1, 64)), num_slots=1)
    assert drafts is not None
    for n in [*range(1, 17), *range(1, 17)]:  # each size twice: the first is a warm-up, not counted
        s.step_cost.observe(n, 10.0 * n)
    seq = make_seq(prompt(), max_tokens=100)
    s.add(seq)
    run(s, engine, drafts)
    assert s.num_draft_tokens > 0 and s.num_accepted_draft_tokens == s.num_draft_tokens
    assert s.num_draft_tokens < 100 // EXPLORE_EVERY * 8 + 8  # only the exploring steps drafted
