"""Scheduler: continuous batching over a fixed set of KV sequences (slots).

    add(request) ----------------------------> waiting (bounded; full -> BusyError)
    schedule():  cancels/deadlines -> REMOVE ops
                 running sequences: 1 decode token each (always first: no one waits on prefill), plus up
                 to k n-gram draft tokens for those that draft (speculative decoding, drafter.py)
                 prefilling sequences, then newly admitted ones: prompt chunks up to the budget
                 admission: session slot > longest cached prefix of a free slot > prefix copied
                            from a live slot (seq_cp) > evict an idle session (state saved)
    no room for a step's tokens: reclaim idle caches, then preempt active sequences that come
                 later in queue order (their cells freed, back to the queue, recomputed when
                 readmitted): a running answer is never cut short because others hold cells
    update(plan, result): append sampled tokens, detokenize, stops, finish -> publish Deltas;
                 a drafted item's rejected draft cells (and accepted ones past a finish) are
                 cut from its slot (a REMOVE op in the next plan)
    observers (a trace): request_added at add(), request_finished at every end
    admission order among waiting requests: SchedulerConfig.admission ("fcfs" | "shortest")

All state lives here and in its KVSlots (kv_slots.py: which slot holds which tokens in which
cells, and the KV ops that keep the cache in step), touched only by the engine thread; plans
and results are plain data, so this runs unchanged on a fake engine in tests.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from botframework.engine.step import PlanItem, RunResult, StepPlan, StepResult
from botframework.errors import BotframeworkError, BusyError, ContextLengthExceededError, GrammarError
from botframework.scheduler.drafter import (
    Drafter,
    DraftSource,
    ModelDrafter,
    NgramDrafter,
    StepCost,
    profitable_drafts,
)
from botframework.scheduler.kv_slots import KVSlots
from botframework.scheduler.output import Delta, FinishReason, Usage
from botframework.scheduler.prefix_store import PrefixStore
from botframework.scheduler.sequence import Sequence, SequenceStatus, Slot
from botframework.scheduler.session_store import SessionStore
from botframework.scheduler.state_store import common_prefix_len

log = logging.getLogger("botframework.scheduler")


@dataclass(frozen=True)
class SchedulerConfig:
    num_slots: int = 4
    num_ctx: int = 4096               # unified KV cells shared by all slots
    max_batch_tokens: int = 512       # tokens per llama_decode (decode + prefill chunks)
    max_waiting: int = 256            # admission queue bound
    min_prefix_copy: int = 16         # shorter shared prefixes are recomputed, not copied
    priority_aging_s: float = 5.0     # a waiting request gains one priority level per this
    # Idle slots' prompt caches move to host RAM when a new request is admitted, and come back
    # (a state restore) when a later prompt starts with them. All sequences share one KV
    # buffer and attention spans every cell up to the highest one in use, so cells kept for
    # idle prefixes slow every decode; llama-server does the same with --kv-unified.
    # 0: keep idle prefixes in the KV cache instead.
    prefix_cache_bytes: int = 1 << 30
    # Smaller idle caches stay where a repeated prompt reuses them in place (offloading every
    # idle slot made bench_serving's 4-8 repeated short prompts recompute: a restore needs
    # min_prefix_copy shared tokens; 90-200 ms more TTFT, 7-10% fewer tokens/s), unless a
    # prompt with this many new tokens is admitted: its prefill pays for every cell in use.
    min_offload_tokens: int = 256
    # Which waiting request is admitted first, among those of the same (aged) priority:
    # "fcfs" the earliest arrival; "shortest" the one with the fewest prompt tokens left to
    # compute (short prompts stop waiting behind long prefills; a long one still moves up a
    # priority level per priority_aging_s, so it is not starved). `botframework replay`
    # compares them on a recorded trace.
    admission: str = "fcfs"
    # Speculative decoding for requests that do not say (Request.speculative None): "ngram"
    # drafts up to draft_max tokens per step by prompt lookup (the last ngram_max..ngram_min
    # tokens' most recent earlier occurrence in the sequence's prompt and output; drafter.py),
    # "model" by a draft model's greedy tokens (the Scheduler's draft_source), each verified in
    # the step's one llama_decode; "none" drafts only for requests that ask (with the draft
    # model when there is one, else by n-grams).
    speculative: str = "none"
    draft_max: int = 8
    ngram_max: int = 3
    ngram_min: int = 2
    # Draft only as many tokens as pay, by this machine's measured step costs and each
    # sequence's acceptance (drafter.profitable_drafts); False: always up to the drafter's own
    # length (to study acceptance, or to test verification where drafting does not pay)
    draft_by_cost: bool = True
    # Steps the engine may run in one native call (Engine.run_steps) when every sequence in the
    # batch is running and plain (no grammar, logit bias, logprobs, processors or drafts) and
    # its answer is awaited whole (Request.stream False) or streamed by a native sink (the
    # run sends its chunks), nothing waits and no deadline is set: no Python between those
    # decodes. 0 or 1: never. It ends early after a step that
    # samples an end of generation or a token that may complete a stop string (one with the
    # stop string's last byte), and at a new request, a cancel, or another model wanting the
    # cores.
    run_steps: int = 16
    # False for a model whose memory cannot drop a sequence's last cells (recurrent and hybrid
    # models: llama_memory_seq_rm refuses a partial removal, so rejected drafts could not leave
    # the cache): nothing drafts then, whatever the request or `speculative` says
    can_draft: bool = True

    def __post_init__(self) -> None:
        if self.num_slots < 1 or self.num_ctx < 2 or self.max_batch_tokens < self.num_slots:
            raise ValueError(f"invalid scheduler config {self}")
        if self.admission not in ADMISSION_ORDERS:
            raise ValueError(f"admission must be one of {', '.join(ADMISSION_ORDERS)}, not {self.admission!r}")
        if self.speculative not in SPECULATIVE_KINDS:
            raise ValueError(f"speculative must be one of {', '.join(SPECULATIVE_KINDS)}, not {self.speculative!r}")
        if self.draft_max < 1 or not 1 <= self.ngram_min <= self.ngram_max:
            raise ValueError("need draft_max >= 1 and 1 <= ngram_min <= ngram_max")


ADMISSION_ORDERS = ("fcfs", "shortest")
SPECULATIVE_KINDS = ("none", "ngram", "model")


class SchedulerObserver(Protocol):
    """Told of each request the scheduler takes and ends, on the engine thread (a trace:
    botframework.trace.TraceWriter). Must be quick; an exception is logged, not raised."""

    def request_added(self, seq: Sequence) -> None: ...

    def request_finished(self, seq: Sequence, reason: FinishReason) -> None: ...


def _queue_order(seq: Sequence) -> tuple[int, float]:
    return seq.request.priority, seq.request.arrival


class Scheduler:
    def __init__(self, config: SchedulerConfig, eog_tokens: frozenset[int],
                 sessions: SessionStore | None = None,
                 clock: Callable[[], float] = time.monotonic, draft_source: DraftSource | None = None) -> None:
        if config.speculative == "model" and draft_source is None:
            raise ValueError("speculative='model' needs a draft model (draft_source)")
        self.config = config
        self.draft_source = draft_source  # a draft model's drafts for every drafting sequence at once
        self.eog_tokens = eog_tokens
        prefixes = PrefixStore(config.prefix_cache_bytes) if config.prefix_cache_bytes > 0 else None
        self.kv = KVSlots(config.num_slots, config.num_ctx, min_prefix_copy=config.min_prefix_copy,
                          sessions=sessions if sessions is not None else SessionStore(), prefixes=prefixes,
                          clock=clock)  # (an empty store is falsy: `sessions or` dropped the configured one)
        self.waiting: list[Sequence] = []
        self.active: dict[str, Sequence] = {}           # request id -> PREFILLING/RUNNING
        self.clock = clock
        self._pending_release: list[str] = []
        self._deadlines: list[Sequence] = []   # queued or active sequences that have a deadline
        self._planned: set[int] = set()  # seq ids with tokens in the step being planned
        self._preempted_now: set[str] = set()  # request ids preempted in the step being planned
        self.observers: list[SchedulerObserver] = []
        # metrics
        self.num_preemptions = 0
        self.num_prefix_hit_tokens = 0
        self.num_prompt_tokens = 0
        self.num_generated_tokens = 0
        self.num_draft_tokens = 0            # draft tokens verified (speculative decoding)
        self.num_accepted_draft_tokens = 0   # ...and accepted
        self.step_cost = StepCost()          # ms per step of n tokens here: how many drafts pay

    @property
    def slots(self) -> list[Slot]:
        return self.kv.slots

    # -- intake -----------------------------------------------------------------------------
    def add(self, seq: Sequence) -> None:
        if len(self.waiting) >= self.config.max_waiting:
            raise BusyError(f"server busy: {len(self.waiting)} requests waiting", retry_after_s=1.0)
        if seq.num_prompt >= self.config.num_ctx:
            raise ContextLengthExceededError(
                f"the prompt has {seq.num_prompt} tokens but the context window is {self.config.num_ctx} "
                "tokens (at least one is needed for the answer)",
                num_prompt_tokens=seq.num_prompt, num_ctx=self.config.num_ctx)
        self.waiting.append(seq)
        if seq.request.deadline is not None:
            self._deadlines.append(seq)
        if self.observers:
            self._notify("request_added", seq)

    def cancel(self, request_id: str) -> bool:
        """Cancel by request id; True if something was cancelled."""
        for seq in self.waiting:
            if seq.request_id == request_id:
                self.waiting.remove(seq)
                self._finish(seq, FinishReason.CANCELLED)
                return True
        seq_or_none = self.active.get(request_id)
        if seq_or_none is None:
            return False
        self._finish(seq_or_none, FinishReason.CANCELLED)
        return True

    def cancel_session(self, session_id: str) -> int:
        ids = [s.request_id for s in [*self.waiting, *self.active.values()] if s.request.session_id == session_id]
        return sum(self.cancel(i) for i in ids)

    def drop_session(self, session_id: str) -> bool:
        """Forget a session: cancel its requests, free its slot and stored state."""
        self.cancel_session(session_id)
        return self.kv.drop_session(session_id)

    def session_info(self, session_id: str) -> dict[str, object] | None:
        return self.kv.session_info(session_id)

    def clear_prefix_cache(self) -> int:
        """Drop the cached prefixes of idle slots and in RAM (not sessions); returns the cells freed."""
        return self.kv.clear_prefix_cache()

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.active or self.kv.has_ops or self._pending_release)

    def admits_cheaply(self, seq: Sequence) -> bool:
        """Whether admitting `seq` now costs no more than its own prefill: no session state to
        restore or evict, no stored prefix to bring back, no idle cache to move to RAM, a free
        slot, no grammar to compile or processors to bind. What a step on an event loop may do
        (ModelWorker._step_inline)."""
        request = seq.request
        if request.session_id is not None or request.params.sampler.grammar is not None or request.logits_processors:
            return False
        kv = self.kv
        if not any(slot.free for slot in kv.slots):
            return False
        if kv.prefixes is not None:
            if any(slot.free and len(slot.cached) >= self.config.min_offload_tokens for slot in kv.slots):
                return False
            if kv.prefixes.longest_prefix(seq.tokens[: seq.num_prefill])[1] >= self.config.min_prefix_copy:
                return False
        return True

    def take_last_releases(self) -> tuple[str, ...]:
        """When releasing finished requests' samplers is all that is left to do: their ids, taken
        out of the next plan, for the engine to free now (else ()). The engine thread then goes
        idle at once, rather than running a step for them when the next request comes in."""
        if self.waiting or self.active or self.kv.has_ops or not self._pending_release:
            return ()
        released = tuple(self._pending_release)
        self._pending_release.clear()
        return released

    # -- planning ---------------------------------------------------------------------------
    def schedule(self) -> StepPlan:
        now = self.clock()
        if self.waiting:  # (only admissions read it)
            self.kv.snapshot_committed()
        if self._deadlines:
            for seq in self._deadlines:
                if seq.status is not SequenceStatus.FINISHED and now >= seq.request.deadline:  # type: ignore[operator]
                    self.cancel(seq.request_id)
            self._deadlines = [seq for seq in self._deadlines if seq.status is not SequenceStatus.FINISHED]
        budget = self.config.max_batch_tokens
        items: list[PlanItem] = []
        running: list[Sequence] = []
        prefilling: list[Sequence] = []
        for seq in self.active.values():
            (running if seq.status is SequenceStatus.RUNNING else prefilling).append(seq)
        if len(running) > 1:
            running.sort(key=_queue_order)
        num_running = len(running)  # each running sequence's own token comes before any draft
        self._planned.clear()
        self._preempted_now.clear()
        if self.draft_source is not None:
            self._model_drafts(self.draft_source, running, budget - num_running, num_running)
        for seq in running:
            if seq.status is not SequenceStatus.RUNNING:
                continue  # preempted by one before it in this loop
            if not self._reserve(1, seq) and not (seq.request.context_shift and self._shift(seq)):
                if self._can_preempt(seq) and len(self.active) > 1:
                    self._preempt(seq)  # others hold the cells: wait for them, do not cut the answer
                else:
                    self._finish(seq, FinishReason.LENGTH)
                continue
            drafts = self._drafts(seq, budget - num_running, num_running) if seq.drafter is not None else ()
            items.append(self._item(seq, [seq.tokens[-1], *drafts], sample=True, num_draft=len(drafts)))
            budget -= 1 + len(drafts)
        if len(prefilling) > 1:
            prefilling.sort(key=_queue_order)
        for seq in prefilling:
            if budget <= 0:
                break
            if seq.status is SequenceStatus.PREFILLING:  # (not preempted above)
                budget -= self._plan_prefill(seq, budget, items)
        most_new = -1  # the most tokens an admitted prompt has to compute
        for seq in sorted(self.waiting, key=self._admission_key(now)):
            if budget <= 0:
                break
            if self._wait_for_shared_prefill(seq):
                continue
            if seq.num_preemptions and (seq.request_id in self._preempted_now
                                        or self.kv.num_cells_available() < seq.num_prefill + 1):
                break  # a preempted sequence comes back when all of it fits, not to be preempted again
            if not self._admit(seq):
                break
            most_new = max(most_new, seq.num_pending_prefill)
            self.waiting.remove(seq)
            budget -= self._plan_prefill(seq, budget, items)
        if most_new >= 0:
            # a long prefill attends over every cell in use: then small idle caches go too
            self.kv.offload_idle_prefixes(1 if most_new >= self.config.min_offload_tokens
                                          else self.config.min_offload_tokens)
        kv_ops, save_states = self.kv.take_ops()
        plan = StepPlan(items=tuple(items), kv_ops=kv_ops, release=tuple(self._pending_release),
                        save_states=save_states)
        self._pending_release.clear()
        return plan

    def _wait_for_shared_prefill(self, seq: Sequence) -> bool:
        """True if an admitted sequence is still computing a prefix this prompt starts with
        (the same system prompt, the other choices of an n > 1 request): wait for it and copy
        its cells (seq_cp) instead of computing the same tokens twice in parallel."""
        if seq.request.session_id is not None:
            return False  # a session's own cache (or its stored state) comes first
        prompt = seq.tokens[: seq.num_prefill]
        head = prompt[: self.config.min_prefix_copy]
        for other in self.active.values():
            if other.tokens[: self.config.min_prefix_copy] != head:
                continue
            committed = self.kv.committed(other.seq_id)
            shared = common_prefix_len(other.tokens[: other.num_prefill], prompt)
            if shared >= self.config.min_prefix_copy and committed < min(shared, seq.num_prefill - 1):
                return True
        return False

    def _effective_priority(self, seq: Sequence, now: float) -> float:
        waited = now - seq.request.arrival
        return float(seq.request.priority) - waited / self.config.priority_aging_s

    def _admission_key(self, now: float) -> Callable[[Sequence], tuple[float, ...]]:
        if self.config.admission == "shortest":
            return lambda s: (math.floor(self._effective_priority(s, now)), s.num_pending_prefill, s.request.arrival)
        return lambda s: (self._effective_priority(s, now), s.request.arrival)

    def _item(self, seq: Sequence, tokens: list[int], sample: bool, num_draft: int = 0) -> PlanItem:
        params = seq.request.params
        start = seq.num_computed
        seq.num_computed += len(tokens)
        self.kv.extend(seq, start, tokens)
        return PlanItem(request_id=seq.request_id, seq_id=seq.seq_id, tokens=tuple(tokens),
                        start_pos=start, sample=sample, sampler=params.sampler,
                        num_logprobs=params.num_logprobs, processors=seq.request.logits_processors,
                        history=seq.tokens, num_draft=num_draft)

    # -- speculative decoding ----------------------------------------------------------------
    def _wants_drafts(self, seq: Sequence) -> bool:
        """Whether a sequence that starts running drafts: the request's choice, else the
        server's. Not with logits processors (they see one history per row, not the drafts')."""
        request = seq.request
        if not self.config.can_draft:
            return False
        wanted = request.speculative if request.speculative is not None else self.config.speculative != "none"
        return wanted and not request.logits_processors

    def _drafts(self, seq: Sequence, budget: int, num_running: int) -> list[int]:
        """Up to budget draft tokens for a running sequence whose own token has its cell: only
        into cells that are free with one left for each running sequence's own token (drafts
        never evict a cache or preempt anyone), never past max_tokens or the context, not for
        a shifted sequence (its positions are not its tokens' indices)."""
        drafter = seq.drafter
        if drafter is None:
            return []
        room = self._draft_room(seq, budget, num_running)
        if room <= 0:
            return []
        # a draft model's length was chosen when it drafted (_model_drafts): only cut to what fits now
        limit = room if isinstance(drafter, ModelDrafter) else self._draft_length(drafter, room, num_running)
        return drafter.propose(seq.tokens, limit)

    def _draft_room(self, seq: Sequence, budget: int, num_running: int) -> int:
        """How many draft tokens fit (see _drafts)."""
        if seq.num_discarded:
            return 0
        return min(budget, seq.request.params.max_tokens - seq.num_generated - 1,
                   self.config.num_ctx - 2 - seq.num_computed,
                   self.config.num_ctx - self.kv.num_cells_used() - num_running)

    def _draft_length(self, drafter: Drafter, room: int, num_running: int) -> int:
        """Of what fits, what pays: no more than the number of draft tokens that makes the step
        yield the most tokens per millisecond at the drafter's acceptance rate and this
        machine's step costs (drafter.profitable_drafts). Decided once per sequence and step:
        explore() counts the steps it held back."""
        if not self.config.draft_by_cost:
            return room
        return drafter.explore(profitable_drafts(drafter.acceptance, num_running, self.step_cost, room), room)

    def _model_drafts(self, source: DraftSource, running: list[Sequence], budget: int, num_running: int) -> None:
        """The draft model's tokens for every running sequence that drafts with it, in one pass
        (its decodes batch them all) before the step is planned; each sequence's propose() then
        takes its own. The limits are the ones _drafts applies, before this step's cells are
        reserved: _drafts cuts what no longer fits, and the draft context keeps no cell of its
        own beyond a sequence's tokens (engine/draft_model.py syncs it by common prefix)."""
        wanted: dict[int, tuple[list[int], int]] = {}
        drafters: list[tuple[int, ModelDrafter]] = []
        for seq in running:
            drafter = seq.drafter
            if not isinstance(drafter, ModelDrafter):
                continue
            drafter.pending = []
            drafters.append((seq.seq_id, drafter))
            k = drafter.reserve(self._draft_length(drafter, self._draft_room(seq, budget, num_running), num_running))
            if k:
                wanted[seq.seq_id] = (seq.tokens, k)
        if not wanted:
            return
        drafts = source.draft(wanted)
        for seq_id, drafter in drafters:
            drafter.pending = drafts.get(seq_id, [])

    def _plan_prefill(self, seq: Sequence, budget: int, items: list[PlanItem]) -> int:
        n = min(seq.num_pending_prefill, budget)
        if n <= 0 or not self._reserve(n, seq):
            return 0
        chunk = seq.tokens[seq.num_computed: seq.num_computed + n]
        last = seq.num_computed + n == seq.num_prefill
        items.append(self._item(seq, chunk, sample=last))
        if last:
            seq.status = SequenceStatus.RUNNING
            if seq.drafter is None and self._wants_drafts(seq):
                config = self.config
                kind = config.speculative if config.speculative != "none" else \
                    "model" if self.draft_source is not None else "ngram"
                seq.drafter = ModelDrafter(config.draft_max) if kind == "model" else \
                    NgramDrafter(config.draft_max, config.ngram_max, config.ngram_min)
        return n

    def _shift(self, seq: Sequence) -> bool:
        """Context shift (see KVSlots.shift), then the cell for the next token."""
        return self.kv.shift(seq) and self._reserve(1, seq)

    # -- room in the cache -----------------------------------------------------------------
    def num_cells_used(self) -> int:
        return self.kv.num_cells_used()

    def _reserve(self, n: int, seq: Sequence) -> bool:
        """Make room for n more cells for seq: reclaim idle caches, then preempt active
        sequences after it in queue order that have nothing in this step's batch yet (the
        last first). False if the cells cannot be had now."""
        if seq.num_computed + n > self.config.num_ctx:
            return False
        if self.kv.make_room(n, exclude=seq.seq_id):
            self._planned.add(seq.seq_id)
            return True
        order = _queue_order(seq)
        victims = sorted((other for other in self.active.values()
                          if other is not seq and other.seq_id not in self._planned
                          and _queue_order(other) > order and self._can_preempt(other)),
                         key=_queue_order, reverse=True)
        for victim in victims:
            self._preempt(victim)
            if self.kv.make_room(n, exclude=seq.seq_id):
                self._planned.add(seq.seq_id)
                return True
        return False

    @staticmethod
    def _can_preempt(seq: Sequence) -> bool:
        # A context-shifted sequence's cells are not a prefix of its tokens: it cannot be
        # recomputed from them.
        return not seq.num_discarded

    def _preempt(self, seq: Sequence) -> None:
        """Take an active sequence's cells back and queue it again (recompute preemption, as
        vLLM does): readmitted, it prefills its prompt and what it generated so far (reusing
        any cached prefix), and goes on sampling where it stopped, with the same sampler."""
        del self.active[seq.request_id]
        # (a session's earlier turns are recomputed with this one)
        self.kv.release(self.slots[seq.seq_id], keep=False)
        if seq.status is SequenceStatus.RUNNING:
            seq.num_prefill = len(seq.tokens)  # its last token was sampled, not yet decoded
        seq.status = SequenceStatus.WAITING
        seq.seq_id = -1
        seq.num_computed = 0
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self._preempted_now.add(seq.request_id)
        self.waiting.append(seq)

    # -- admission --------------------------------------------------------------------------
    def _admit(self, seq: Sequence) -> bool:
        acquired = self.kv.acquire(seq.tokens[: seq.num_prefill], seq.request.session_id)
        if acquired is None:
            return False
        slot, reuse = acquired
        slot.owner = seq
        seq.seq_id = slot.seq_id
        seq.num_computed = reuse
        seq.status = SequenceStatus.PREFILLING
        self.active[seq.request_id] = seq
        if not seq.num_preemptions:  # usage and metrics count the first admission
            seq.num_cached = reuse
            seq.admitted_at = self.clock()
            self.num_prefix_hit_tokens += reuse
            self.num_prompt_tokens += seq.num_prompt
        return True

    # -- results ----------------------------------------------------------------------------
    def update(self, plan: StepPlan, result: StepResult) -> None:
        self.kv.complete_saves(result.saved_states)
        self.step_cost.observe(result.num_tokens, result.decode_ms + result.sample_ms)
        now = self.clock()
        drafted = {item.request_id: item for item in plan.items if item.num_draft}
        consumed: dict[str, int] = {}  # drafted request id -> its tokens consumed so far
        for sampled in result.sampled:
            seq = self.active.get(sampled.request_id)
            if seq is None:
                continue  # cancelled while the step ran (or finished at an earlier token of its draft)
            if drafted and sampled.request_id in drafted and sampled.error is None:
                # the j-th token of a verified draft: the cells hold what they would without
                # drafts (the last token and the j - 1 drafts before this one), as far as the
                # context-limit check below is concerned; the rest are cut after the loop
                j = consumed[sampled.request_id] = consumed.get(sampled.request_id, 0) + 1
                item = drafted[sampled.request_id]
                seq.num_computed = item.start_pos + j
                if j == 1:
                    seq.num_draft_tokens += item.num_draft
                else:
                    seq.num_accepted_draft_tokens += 1
            if sampled.error is not None:  # e.g. a grammar that allows no token here: fail closed, say why
                error = sampled.error
                if isinstance(error, GrammarError) and sampled.built:
                    error = GrammarError(f"generation stopped after {seq.num_generated} tokens: {error}",
                                         param=error.param)
                self._finish(seq, FinishReason.ERROR, error=error)
                continue
            token = sampled.token
            if seq.first_token_at is None:
                seq.first_token_at = now
            text, finish = self._take_token(seq, token)
            logprobs = ((token, sampled.logprob, sampled.top_logprobs),) if sampled.logprob is not None else ()
            if finish is None:
                seq.handle.publish(Delta(seq.request_id, text=text, token_ids=(token,), logprobs=logprobs))
            else:
                self._finish(seq, finish, text=text, token_ids=(token,), logprobs=logprobs)
        if drafted:
            self._settle_drafts(drafted, consumed, result)

    def _take_token(self, seq: Sequence, token: int) -> tuple[str, FinishReason | None]:
        """A sampled token joins its sequence (seq.num_computed: the cells before it): the text
        it adds (the detokenizer's and the stop strings' held text too, when it ends the answer)
        and why the answer ends with it, if it does: end of generation, a stop string,
        max_tokens or the context. update() and update_run() both take tokens through it."""
        seq.tokens.append(token)
        seq.num_generated += 1
        self.num_generated_tokens += 1
        params = seq.request.params
        stops = seq.stops
        if token in self.eog_tokens and not params.ignore_eos:
            finish: FinishReason | None = FinishReason.STOP
            text = ""
        else:
            text = stops.feed(seq.detokenizer.feed(token))
            if stops.stopped:
                return text, FinishReason.STOP
            if seq.num_generated >= params.max_tokens or (
                    seq.num_computed + 1 >= self.config.num_ctx and not seq.request.context_shift):
                finish = FinishReason.LENGTH
            else:
                return text, None
        text += stops.feed(seq.detokenizer.flush())
        return text + stops.flush(), finish

    def run_length(self, plan: StepPlan) -> tuple[int, tuple[bool, ...], bytes]:
        """How many steps the engine may run this plan for without Python between them
        (Engine.run_steps; SchedulerConfig.run_steps says when); for each item whether an
        end-of-generation token ends the run; and the 256-bit maps of the last bytes of each
        item's stop strings (b"" when none has any): a token with such a byte may complete a
        stop string, and the run ends after its step. (0, (), b"") when the plan does not
        qualify: nor does one with KV operations, nor any on a model whose cache cannot drop a
        sequence's last cells (can_draft False: the cells a run computes past a finish must
        go). Every step of a run fits: within each request's max_tokens and the context, into
        cells free now.
        A streamed request qualifies only when the run can send its text itself (its handle
        has a native sink, engine/step.py's NativeStream), nothing of its text is held (bytes
        of a character, the start of a stop string), and its map also has the first bytes of
        its stop strings: a token with one (or with a non-ASCII byte: the run checks) ends the
        run, and its text goes the usual way (what the run sent is exactly what update() would
        have)."""
        steps = self.config.run_steps
        items = plan.items
        if (steps < 2 or self.waiting or self._deadlines or plan.save_states or plan.kv_ops or not items
                or len(items) != len(self.active) or not self.config.can_draft):
            return 0, (), b""
        num_ctx = self.config.num_ctx
        stop_on_eog = []
        stop_maps = bytearray(32 * len(items))
        for i, item in enumerate(items):
            seq = self.active.get(item.request_id)
            # (a prompt whose last token is all that is left to compute is planned the same
            # way as a decode token, before the request has a sampler: not from the first step)
            if (seq is None or seq.status is not SequenceStatus.RUNNING or len(item.tokens) != 1 or item.num_draft
                    or not seq.num_generated or item.num_logprobs is not None or item.processors
                    or seq.drafter is not None or seq.num_discarded):
                return 0, (), b""
            stream = seq.request.stream
            if stream and not (seq.handle.native_ready() and seq.detokenizer.idle and not seq.stops.holding):
                return 0, (), b""
            params = seq.request.params
            if params.sampler.grammar is not None or params.sampler.logit_bias:
                return 0, (), b""
            steps = min(steps, params.max_tokens - seq.num_generated, num_ctx - 1 - seq.num_computed)
            stop_on_eog.append(not params.ignore_eos)
            for stop in filter(None, params.stop):
                encoded = stop.encode()
                for byte in (encoded[0], encoded[-1]) if stream else (encoded[-1],):
                    stop_maps[32 * i + (byte >> 3)] |= 1 << (byte & 7)
        if steps < 2 or self.kv.num_cells_used() + len(items) * (steps - 1) > num_ctx:
            return 0, (), b""
        return steps, tuple(stop_on_eog), bytes(stop_maps) if any(stop_maps) else b""

    def send_budget(self, item: PlanItem) -> int:
        """How many of a run's first tokens a NativeStream may send for this item: those that
        cannot end its answer by max_tokens or the context (the last delta goes the usual way)."""
        seq = self.active[item.request_id]
        return max(0, min(seq.request.params.max_tokens - seq.num_generated - 1,
                          self.config.num_ctx - 2 - item.start_pos))

    def update_run(self, plan: StepPlan, run: RunResult) -> None:
        """After Engine.run_steps: each request takes its tokens as update() would have, step
        by step (end of generation, stop strings, max_tokens, the context), in one delta; one
        that finished before the run's last step gives its later cells back (a REMOVE op). The
        text a run sent itself (run.sent) goes to the handle's sink as already sent."""
        if run.num_steps:
            self.step_cost.observe(len(plan.items), run.decode_ms / run.num_steps)
        for i, (item, sampled) in enumerate(zip(plan.items, run.tokens, strict=True)):
            seq = self.active[item.request_id]  # (nothing ran between the run and this: all still active)
            start = item.start_pos
            seq.num_computed = start + len(sampled)  # the item's token and all but the last sampled
            self.kv.extend(seq, start + 1, list(sampled[:-1]))
            texts: list[str] = []
            finish: FinishReason | None = None
            taken = 0
            for token in sampled:
                taken += 1
                seq.num_computed = start + taken  # (as after the step that sampled it)
                text, finish = self._take_token(seq, token)
                texts.append(text)
                if finish is not None:
                    break
            sent = run.sent[i] if run.sent else None
            num_sent = min(sent.num_sent, taken) if sent is not None else 0
            if num_sent:
                seq.handle.publish_native(Delta(seq.request_id, text="".join(texts[:num_sent]),
                                                token_ids=tuple(sampled[:num_sent])), sent)
            text = "".join(texts[num_sent:])
            if finish is None:
                if num_sent < len(sampled):
                    seq.handle.publish(Delta(seq.request_id, text=text, token_ids=tuple(sampled[num_sent:])))
                continue
            self._finish(seq, finish, text=text, token_ids=tuple(sampled[num_sent:taken]))
            slot = self.slots[item.seq_id]
            if slot.owner is None:
                self.kv.truncate(slot, start + taken)  # the cells of the steps after its last token

    def _settle_drafts(self, drafted: dict[str, PlanItem], consumed: dict[str, int], result: StepResult) -> None:
        """After a step with drafts: count them, and cut each slot back to what it would hold
        without drafts (the tokens before the last one consumed): rejected drafts, and accepted
        ones past a finish, leave the cache with a REMOVE op in the next plan."""
        emitted: dict[str, int] = {}
        for sampled in result.sampled:
            if sampled.request_id in drafted and sampled.error is None:
                emitted[sampled.request_id] = emitted.get(sampled.request_id, 0) + 1
        for request_id, item in drafted.items():
            num_emitted = emitted.get(request_id, 0)
            num_accepted = max(0, num_emitted - 1)
            seq = self.active.get(request_id)
            if seq is None:  # finished in this step (or cancelled): its slot, if it kept the cache
                slot = self.slots[item.seq_id]
                if slot.owner is None:
                    self.kv.truncate(slot, item.start_pos + consumed.get(request_id, 0))
            else:
                self.kv.truncate(self.slots[seq.seq_id], seq.num_computed)
                if seq.drafter is not None and num_emitted:
                    seq.drafter.record(item.num_draft, num_accepted)
            if num_emitted:
                self.num_draft_tokens += item.num_draft
                self.num_accepted_draft_tokens += num_accepted

    def fail_all(self, error: BotframeworkError) -> None:
        """The engine failed a step: end every active request with the error."""
        for seq in list(self.active.values()):
            self._finish(seq, FinishReason.ERROR, error=error)

    def end_all(self, error: BotframeworkError) -> int:
        """End every request, queued or running, with the error (the server's drain when its
        grace period is over); the number ended. Sessions keep what their turns computed."""
        ended = 0
        while self.waiting:
            self._finish(self.waiting.pop(0), FinishReason.ERROR, error=error)
            ended += 1
        ended += len(self.active)
        self.fail_all(error)
        return ended

    def reset_after_failure(self, error: BotframeworkError) -> None:
        """A step failed and the engine cleared the whole KV cache: forget what slots held.

        Waiting requests stay queued; sessions whose state was in a slot or being saved start
        over (their next turn is prefilled in full); sessions already stored are kept.
        """
        self.fail_all(error)
        self.kv.reset()

    def _finish(self, seq: Sequence, reason: FinishReason, *, text: str = "", token_ids: tuple[int, ...] = (),
                logprobs: tuple = (), error: BotframeworkError | None = None) -> None:
        if seq.status is SequenceStatus.FINISHED:
            return
        was_active = self.active.pop(seq.request_id, None) is not None
        seq.status = SequenceStatus.FINISHED
        # The engine may hold a sampler for it even if it never left the queue.
        self._pending_release.append(seq.request_id)
        if was_active:
            slot = self.slots[seq.seq_id]
            # A failed request's partial work is not trusted for reuse (cells free at the next
            # step); a cancelled session keeps what was computed (a valid prefix).
            keep = reason not in (FinishReason.CANCELLED, FinishReason.ERROR) or (
                reason is FinishReason.CANCELLED and slot.session_id is not None)
            self.kv.release(slot, keep=keep)
        now = self.clock()
        timings = {}
        if seq.admitted_at is not None:
            timings["queue_ms"] = (seq.admitted_at - seq.request.arrival) * 1e3
        if seq.first_token_at is not None:
            timings["ttft_ms"] = (seq.first_token_at - seq.request.arrival) * 1e3
        timings["total_ms"] = (now - seq.request.arrival) * 1e3
        usage = Usage(prompt_tokens=seq.num_prompt, completion_tokens=seq.num_generated,
                      cached_tokens=seq.num_cached, truncated_tokens=seq.request.truncated_tokens,
                      draft_tokens=seq.num_draft_tokens, accepted_draft_tokens=seq.num_accepted_draft_tokens)
        seq.handle.publish(Delta(seq.request_id, text=text, token_ids=token_ids, logprobs=logprobs,
                                 finish_reason=reason, usage=usage, timings=timings, error=error))
        if self.observers:
            self._notify("request_finished", seq, reason)

    def _notify(self, event: str, *args: object) -> None:
        for observer in self.observers:
            try:
                getattr(observer, event)(*args)
            except Exception:  # an observer (a trace) must never break scheduling
                log.exception("scheduler observer %r failed on %s", observer, event)

    # -- introspection ----------------------------------------------------------------------
    def stats(self) -> dict[str, int]:
        return {
            "num_waiting": len(self.waiting),
            "num_running": sum(1 for s in self.active.values() if s.status is SequenceStatus.RUNNING),
            "num_prefilling": sum(1 for s in self.active.values() if s.status is SequenceStatus.PREFILLING),
            "num_prefix_hit_tokens": self.num_prefix_hit_tokens,
            "num_prompt_tokens": self.num_prompt_tokens,
            "num_generated_tokens": self.num_generated_tokens,
            "num_preemptions": self.num_preemptions,
            "num_draft_tokens": self.num_draft_tokens,
            "num_accepted_draft_tokens": self.num_accepted_draft_tokens,
            **self.kv.stats(),
        }
