"""Scheduler: continuous batching over a fixed set of KV sequences (slots).

    add(request) ----------------------------> waiting (bounded; full -> BusyError)
    schedule():  cancels/deadlines -> REMOVE ops
                 running sequences: 1 decode token each (always first: no one waits on prefill)
                 prefilling sequences, then newly admitted ones: prompt chunks up to the budget
                 admission: session slot > longest cached prefix of a free slot > prefix copied
                            from a live slot (seq_cp) > evict an idle session (state saved)
    no room for a step's tokens: reclaim idle caches, then preempt active sequences that come
                 later in queue order (their cells freed, back to the queue, recomputed when
                 readmitted): a running answer is never cut short because others hold cells
    update(plan, result): append sampled tokens, detokenize, stops, finish -> publish Deltas

All state lives here and is touched only by the engine thread; plans and results are plain
data, so this runs unchanged on a fake engine in tests.
"""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

from botframework.engine.step import KVOp, KVOpKind, PlanItem, StepPlan, StepResult
from botframework.errors import BotframeworkError, BusyError, ContextLengthExceededError, GrammarError
from botframework.scheduler.output import Delta, FinishReason, Usage
from botframework.scheduler.sequence import Sequence, SequenceStatus, Slot
from botframework.scheduler.session_store import SessionStore, common_prefix_len


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

    def __post_init__(self) -> None:
        if self.num_slots < 1 or self.num_ctx < 2 or self.max_batch_tokens < self.num_slots:
            raise ValueError(f"invalid scheduler config {self}")


def _queue_order(seq: Sequence) -> tuple[int, float]:
    return seq.request.priority, seq.request.arrival


class Scheduler:
    def __init__(self, config: SchedulerConfig, eog_tokens: frozenset[int],
                 sessions: SessionStore | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.eog_tokens = eog_tokens
        self.slots = [Slot(seq_id=i) for i in range(config.num_slots)]
        self.waiting: list[Sequence] = []
        self.active: dict[str, Sequence] = {}           # request id -> PREFILLING/RUNNING
        self.sessions = sessions or SessionStore()
        self.clock = clock
        self._pending_ops: list[KVOp] = []
        self._pending_release: list[str] = []
        self._pending_saves: OrderedDict[int, str] = OrderedDict()  # seq_id -> session id
        self.prefixes = SessionStore(config.prefix_cache_bytes, 0) if config.prefix_cache_bytes > 0 else None
        self._pending_prefix_saves: dict[int, str] = {}              # seq_id -> prefix key
        self._prefix_keys = itertools.count()
        self.num_prefix_offloads = 0
        self.num_prefix_restores = 0
        self._committed: dict[int, int] = {}
        self._deadlines: list[Sequence] = []   # queued or active sequences that have a deadline
        self._cell_refs: dict[int, int] = {}  # physical cell id -> slots holding it (seq_cp shares cells)
        self._next_cell = 0
        self._planned: set[int] = set()  # seq ids with tokens in the step being planned
        self.num_preemptions = 0
        # metrics
        self.num_prefix_hit_tokens = 0
        self.num_prompt_tokens = 0
        self.num_generated_tokens = 0

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
        found = self.sessions.drop(session_id)
        for slot in self.slots:
            if slot.session_id == session_id:
                slot.session_id = None
                self._clear_slot(slot)
                found = True
        return found

    def session_info(self, session_id: str) -> dict[str, object] | None:
        """Where a session's KV state is: in a slot (busy or idle), evicted (RAM/disk), or None."""
        for slot in self.slots:
            if slot.session_id == session_id:
                return {"state": "busy" if slot.owner is not None else "idle", "seq_id": slot.seq_id,
                        "num_cached_tokens": len(slot.cached)}
        if self.sessions.is_pending(session_id):
            return {"state": "evicting"}
        return self.sessions.info(session_id)

    def clear_prefix_cache(self) -> int:
        """Drop the cached prefixes of idle slots and in RAM (not sessions); returns the cells freed."""
        if self.prefixes is not None:
            self.prefixes.clear()
        before = self.num_cells_used()
        for slot in self.slots:
            if slot.free and slot.cached:
                self._clear_slot(slot)
        return before - self.num_cells_used()

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.active or self._pending_ops or self._pending_release)

    # -- planning ---------------------------------------------------------------------------
    def schedule(self) -> StepPlan:
        now = self.clock()
        if self.waiting:  # (only admissions read it)
            # Cells a COPY may share: only what earlier steps computed (kv_ops run before decode).
            self._committed = {slot.seq_id: len(slot.cached) for slot in self.slots}
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
        self._planned.clear()
        for seq in running:
            if seq.status is not SequenceStatus.RUNNING:
                continue  # preempted by one before it in this loop
            if not self._reserve(1, seq) and not (seq.request.context_shift and self._shift(seq)):
                if self._can_preempt(seq) and len(self.active) > 1:
                    self._preempt(seq)  # others hold the cells: wait for them, do not cut the answer
                else:
                    self._finish(seq, FinishReason.LENGTH)
                continue
            items.append(self._item(seq, [seq.tokens[-1]], sample=True))
            budget -= 1
        if len(prefilling) > 1:
            prefilling.sort(key=_queue_order)
        for seq in prefilling:
            if budget <= 0:
                break
            if seq.status is SequenceStatus.PREFILLING:  # (not preempted above)
                budget -= self._plan_prefill(seq, budget, items)
        most_new = -1  # the most tokens an admitted prompt has to compute
        for seq in sorted(self.waiting, key=lambda s: (self._effective_priority(s, now), s.request.arrival)):
            if budget <= 0:
                break
            if self._wait_for_shared_prefill(seq):
                continue
            if not self._admit(seq):
                break
            most_new = max(most_new, seq.num_pending_prefill)
            self.waiting.remove(seq)
            budget -= self._plan_prefill(seq, budget, items)
        if most_new >= 0:
            # a long prefill attends over every cell in use: then small idle caches go too
            self._offload_idle_prefixes(1 if most_new >= self.config.min_offload_tokens
                                        else self.config.min_offload_tokens)
        plan = StepPlan(items=tuple(items), kv_ops=tuple(self._pending_ops),
                        release=tuple(self._pending_release),
                        save_states=(*self._pending_saves, *self._pending_prefix_saves))
        self._pending_ops.clear()
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
            committed = self._committed.get(other.seq_id, 0)
            shared = common_prefix_len(other.tokens[: other.num_prefill], prompt)
            if shared >= self.config.min_prefix_copy and committed < min(shared, seq.num_prefill - 1):
                return True
        return False

    def _offload_idle_prefixes(self, min_tokens: int) -> None:
        """Idle, session-less slots: save their cells' state to RAM and free the cells.

        Runs after this step's admissions, so a COPY from such a slot comes first in kv_ops;
        the engine saves states before it applies kv_ops.
        """
        if self.prefixes is None:
            return
        for slot in self.slots:
            if (slot.free and slot.session_id is None and slot.cached and len(slot.cached) >= min_tokens
                    and slot.seq_id not in self._pending_saves):
                key = f"prefix-{next(self._prefix_keys)}"
                self.prefixes.prepare_save(key, list(slot.cached))
                self._pending_prefix_saves[slot.seq_id] = key
                self._clear_slot(slot)
                self.num_prefix_offloads += 1

    def _effective_priority(self, seq: Sequence, now: float) -> float:
        waited = now - seq.request.arrival
        return float(seq.request.priority) - waited / self.config.priority_aging_s

    def _item(self, seq: Sequence, tokens: list[int], sample: bool) -> PlanItem:
        params = seq.request.params
        start = seq.num_computed
        seq.num_computed += len(tokens)
        slot = self.slots[seq.seq_id]
        if len(slot.cached) == start and not seq.num_discarded:
            slot.cached.extend(tokens)  # the slot's own list: no copy of the whole sequence per step
        else:
            slot.cached = seq.kv_tokens()
        self._grow_cells(slot, len(slot.cached) - len(slot.cells))
        return PlanItem(request_id=seq.request_id, seq_id=seq.seq_id, tokens=tuple(tokens),
                        start_pos=start, sample=sample, sampler=params.sampler,
                        num_logprobs=params.num_logprobs)

    def _plan_prefill(self, seq: Sequence, budget: int, items: list[PlanItem]) -> int:
        n = min(seq.num_pending_prefill, budget)
        if n <= 0 or not self._reserve(n, seq):
            return 0
        chunk = seq.tokens[seq.num_computed: seq.num_computed + n]
        last = seq.num_computed + n == seq.num_prefill
        items.append(self._item(seq, chunk, sample=last))
        if last:
            seq.status = SequenceStatus.RUNNING
        return n

    def _shift(self, seq: Sequence) -> bool:
        """Context shift: drop the older half of the generated context after the first n_keep
        tokens and slide the rest down, so a long generation can go on (llama-server's scheme)."""
        # A cell has one position for all the sequences holding it: sliding a cell shared with
        # another slot (a copied prefix) would move that sequence's tokens too, and dropping it
        # frees nothing. Such a prefix is kept like the first n_keep tokens.
        cells = self.slots[seq.seq_id].cells
        shared_end = max((i + 1 for i, cell in enumerate(cells) if self._cell_refs[cell] > 1), default=0)
        wanted = seq.num_keep if seq.num_discarded else max(seq.request.num_keep, shared_end)
        n_keep = min(wanted, seq.num_computed - 2)
        n_discard = (seq.num_computed - n_keep) // 2
        if n_keep < shared_end or n_discard < 1 or (seq.num_discarded and n_keep != seq.num_keep):
            return False  # (the keep boundary is fixed once a sequence has shifted)
        self._pending_ops.append(KVOp(KVOpKind.REMOVE, seq.seq_id, n_keep, n_keep + n_discard))
        self._pending_ops.append(KVOp(KVOpKind.SHIFT, seq.seq_id, n_keep + n_discard, seq.num_computed,
                                      delta=-n_discard))
        seq.shift(n_keep, n_discard)
        slot = self.slots[seq.seq_id]
        slot.cached = seq.kv_tokens()
        self._drop_cells(slot, n_keep, n_keep + n_discard)
        self._committed[seq.seq_id] = 0  # positions moved: not a COPY source this step
        return self._reserve(1, seq)

    # -- KV accounting ----------------------------------------------------------------------
    def num_cells_used(self) -> int:
        """Physical cells in use: a prefix copied between slots (seq_cp) counts once."""
        return len(self._cell_refs)

    def _grow_cells(self, slot: Slot, n: int) -> None:
        """n new cells at the end of the slot."""
        if n > 0:
            first = self._next_cell
            self._next_cell += n
            new = range(first, first + n)
            self._cell_refs.update(dict.fromkeys(new, 1))
            slot.cells.extend(new)

    def _drop_cells(self, slot: Slot, start: int, stop: int | None = None) -> None:
        """The slot lets go of its cells [start, stop); a cell no slot holds is free."""
        refs = self._cell_refs
        for cell in slot.cells[start:stop]:
            if refs[cell] == 1:
                del refs[cell]
            else:
                refs[cell] -= 1
        del slot.cells[start:stop]

    def _share_cells(self, dst: Slot, src: Slot, n: int) -> None:
        """dst (empty) holds src's first n cells too, as llama_memory_seq_cp does."""
        assert not dst.cells
        dst.cells = src.cells[:n]
        for cell in dst.cells:
            self._cell_refs[cell] += 1

    def _reserve(self, n: int, seq: Sequence) -> bool:
        """Make room for n more cells for seq: reclaim idle caches, then preempt active
        sequences after it in queue order that have nothing in this step's batch yet (the
        last first). False if the cells cannot be had now."""
        if seq.num_computed + n > self.config.num_ctx:
            return False
        if self._make_room(n, exclude=seq.seq_id):
            self._planned.add(seq.seq_id)
            return True
        order = _queue_order(seq)
        victims = sorted((other for other in self.active.values()
                          if other is not seq and other.seq_id not in self._planned
                          and _queue_order(other) > order and self._can_preempt(other)),
                         key=_queue_order, reverse=True)
        for victim in victims:
            self._preempt(victim)
            if self._make_room(n, exclude=seq.seq_id):
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
        slot = self.slots[seq.seq_id]
        del self.active[seq.request_id]
        slot.owner = None
        slot.session_id = None  # a session's earlier turns are recomputed with this one
        slot.last_used = self.clock()
        self._clear_slot(slot)
        if seq.status is SequenceStatus.RUNNING:
            seq.num_prefill = len(seq.tokens)  # its last token was sampled, not yet decoded
        seq.status = SequenceStatus.WAITING
        seq.seq_id = -1
        seq.num_computed = 0
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.append(seq)

    def _make_room(self, n: int, exclude: int) -> bool:
        """Reclaim idle caches (not slot `exclude`) until n more cells fit; False if impossible."""
        while self.num_cells_used() + n > self.config.num_ctx:
            victim = self._reclaimable_slot(exclude=exclude)
            if victim is None:
                return False
            if victim.session_id is not None:
                self._evict_session(victim)
            else:
                self._clear_slot(victim)
        return True

    def _reclaimable_slot(self, exclude: int) -> Slot | None:
        candidates = [s for s in self.slots if s.owner is None and s.cached and s.seq_id != exclude]
        # plain prefix caches go before sessions; least recently used first
        return min(candidates, key=lambda s: (s.session_id is not None, s.last_used), default=None)

    def _clear_slot(self, slot: Slot) -> None:
        if slot.cached:
            self._pending_ops.append(KVOp(KVOpKind.REMOVE, slot.seq_id))
        slot.cached = []
        self._drop_cells(slot, 0)
        self._committed[slot.seq_id] = 0  # nothing left to share with a COPY this step

    def _evict_session(self, slot: Slot) -> None:
        """Save an idle session's state (the engine returns it with the step) and free the slot."""
        assert slot.session_id is not None
        self._pending_saves[slot.seq_id] = slot.session_id
        self.sessions.prepare_save(slot.session_id, list(slot.cached))
        slot.session_id = None
        self._clear_slot(slot)

    # -- admission --------------------------------------------------------------------------
    def _admit(self, seq: Sequence) -> bool:
        prompt = seq.tokens[: seq.num_prefill]
        session_id = seq.request.session_id
        slot = next((s for s in self.slots if session_id and s.session_id == session_id), None)
        if slot is not None and slot.owner is not None:
            return False  # one turn of a session at a time; the next waits for the slot
        if session_id and self.sessions.is_pending(session_id):
            return False  # its state is being saved this step; restore it next step
        restored: list[int] | None = None
        if slot is None and session_id and session_id in self.sessions:
            slot = self._free_slot(prompt)
            if slot is None:
                return False
            restored = self._restore(slot, self.sessions, session_id)
            if restored is None:
                return False  # a restore needs real cells; wait until running sequences finish
        if slot is None:
            slot = self._free_slot(prompt)
            if slot is None:
                return False
            restored = self._restore_prefix(slot, prompt)
        reuse = common_prefix_len(slot.cached, prompt)
        if restored is None and reuse < self.config.min_prefix_copy:
            # a live or cached slot may hold a longer prefix: share its cells instead
            src = max((s for s in self.slots if s is not slot and s.cached),
                      key=lambda s: common_prefix_len(s.cached, prompt), default=None)
            shared = min(common_prefix_len(src.cached, prompt), self._committed[src.seq_id]) if src else 0
            if src is not None and shared >= self.config.min_prefix_copy and shared > reuse:
                self._clear_slot(slot)
                shared = min(shared, seq.num_prefill - 1)
                self._pending_ops.append(KVOp(KVOpKind.COPY, slot.seq_id, 0, shared, src_seq_id=src.seq_id))
                slot.cached = prompt[:shared]
                self._share_cells(slot, src, shared)
                reuse = shared
        reuse = min(reuse, seq.num_prefill - 1)  # the last prompt token is decoded for logits
        if len(slot.cached) > reuse:
            self._pending_ops.append(KVOp(KVOpKind.REMOVE, slot.seq_id, reuse, -1))
            slot.cached = slot.cached[:reuse]
            self._drop_cells(slot, reuse)
            self._committed[slot.seq_id] = min(self._committed.get(slot.seq_id, 0), reuse)
        slot.owner = seq
        slot.session_id = session_id
        slot.last_used = self.clock()
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

    def _restore_prefix(self, slot: Slot, prompt: list[int]) -> list[int] | None:
        """Bring back the stored prefix cache that covers most of `prompt`, when it beats what
        the slot holds and what a COPY from another slot would share."""
        if self.prefixes is None:
            return None
        key, n = self.prefixes.longest_prefix(prompt)
        if key is None or n < self.config.min_prefix_copy or n <= common_prefix_len(slot.cached, prompt):
            return None
        live = max((min(common_prefix_len(s.cached, prompt), self._committed.get(s.seq_id, 0))
                    for s in self.slots if s is not slot and s.cached), default=0)
        if live >= n:
            return None
        tokens = self._restore(slot, self.prefixes, key)  # its cells at once; the unused tail goes after
        if tokens is not None:
            self.num_prefix_restores += 1
        return tokens

    def _restore(self, slot: Slot, store: SessionStore, key: str) -> list[int] | None:
        """Empty the slot and bring back a stored state into it (RESTORE): the stored tokens,
        or None if its cells cannot be made free now (the state stays stored)."""
        self._clear_slot(slot)
        if not self._make_room(store.num_tokens(key), exclude=slot.seq_id):
            return None
        data, tokens = store.take(key)
        self._pending_ops.append(KVOp(KVOpKind.RESTORE, slot.seq_id, data=data))
        slot.cached = tokens
        self._grow_cells(slot, len(tokens))
        return tokens

    def _free_slot(self, prompt: list[int]) -> Slot | None:
        free = [s for s in self.slots if s.free]
        if free:
            return max(free, key=lambda s: (common_prefix_len(s.cached, prompt), -s.last_used))
        idle_sessions = [s for s in self.slots if s.owner is None and s.session_id is not None]
        if not idle_sessions:
            return None
        victim = min(idle_sessions, key=lambda s: s.last_used)
        self._evict_session(victim)
        return victim

    # -- results ----------------------------------------------------------------------------
    def update(self, plan: StepPlan, result: StepResult) -> None:
        for seq_id, data in result.saved_states.items():
            session_id = self._pending_saves.pop(seq_id, None)
            if session_id is not None:
                self.sessions.complete_save(session_id, data)
            key = self._pending_prefix_saves.pop(seq_id, None)
            if key is not None and self.prefixes is not None:
                self.prefixes.complete_save(key, data)
        now = self.clock()
        for sampled in result.sampled:
            seq = self.active.get(sampled.request_id)
            if seq is None:
                continue  # cancelled while the step ran
            if sampled.error is not None:  # e.g. a grammar that allows no token here: fail closed, say why
                error = sampled.error
                if isinstance(error, GrammarError) and seq.num_generated:
                    error = GrammarError(f"generation stopped after {seq.num_generated} tokens: {error}",
                                         param=error.param)
                self._finish(seq, FinishReason.ERROR, error=error)
                continue
            token = sampled.token
            if seq.first_token_at is None:
                seq.first_token_at = now
            seq.tokens.append(token)
            seq.num_generated += 1
            self.num_generated_tokens += 1
            params = seq.request.params
            finish: FinishReason | None = None
            text = ""
            if token in self.eog_tokens and not params.ignore_eos:
                finish = FinishReason.STOP
            else:
                text = seq.stops.feed(seq.detokenizer.feed(token))
                if seq.stops.stopped:
                    finish = FinishReason.STOP
                elif seq.num_generated >= params.max_tokens or (
                        seq.num_computed + 1 >= self.config.num_ctx and not seq.request.context_shift):
                    finish = FinishReason.LENGTH
            if finish is not None and not seq.stops.stopped:
                text += seq.stops.feed(seq.detokenizer.flush())
                text += seq.stops.flush()
            logprobs = ((token, sampled.logprob, sampled.top_logprobs),) if sampled.logprob is not None else ()
            if finish is None:
                seq.handle.publish(Delta(seq.request_id, text=text, token_ids=(token,), logprobs=logprobs))
            else:
                self._finish(seq, finish, text=text, token_ids=(token,), logprobs=logprobs)

    def fail_all(self, error: BotframeworkError) -> None:
        """The engine failed a step: end every active request with the error."""
        for seq in list(self.active.values()):
            self._finish(seq, FinishReason.ERROR, error=error)

    def reset_after_failure(self, error: BotframeworkError) -> None:
        """A step failed and the engine cleared the whole KV cache: forget what slots held.

        Waiting requests stay queued; sessions whose state was in a slot or being saved start
        over (their next turn is prefilled in full); sessions already stored are kept.
        """
        self.fail_all(error)
        for session_id in self._pending_saves.values():
            self.sessions.drop(session_id)
        self._pending_saves.clear()
        self._pending_prefix_saves.clear()
        if self.prefixes is not None:
            self.prefixes.clear()
        self._pending_ops.clear()
        for slot in self.slots:
            slot.cached = []
            slot.cells = []
            slot.session_id = None
        self._cell_refs.clear()

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
            slot.owner = None
            slot.last_used = self.clock()
            if reason in (FinishReason.CANCELLED, FinishReason.ERROR):
                # Partial work is not trusted for reuse; cells free at the next step.
                if slot.session_id is not None and reason is FinishReason.CANCELLED:
                    pass  # the session keeps what was computed (a valid prefix)
                else:
                    slot.session_id = None
                    self._clear_slot(slot)
        now = self.clock()
        timings = {}
        if seq.admitted_at is not None:
            timings["queue_ms"] = (seq.admitted_at - seq.request.arrival) * 1e3
        if seq.first_token_at is not None:
            timings["ttft_ms"] = (seq.first_token_at - seq.request.arrival) * 1e3
        timings["total_ms"] = (now - seq.request.arrival) * 1e3
        usage = Usage(prompt_tokens=seq.num_prompt, completion_tokens=seq.num_generated,
                      cached_tokens=seq.num_cached, truncated_tokens=seq.request.truncated_tokens)
        seq.handle.publish(Delta(seq.request_id, text=text, token_ids=token_ids, logprobs=logprobs,
                                 finish_reason=reason, usage=usage, timings=timings, error=error))

    # -- introspection ----------------------------------------------------------------------
    def stats(self) -> dict[str, int]:
        return {
            "num_waiting": len(self.waiting),
            "num_running": sum(1 for s in self.active.values() if s.status is SequenceStatus.RUNNING),
            "num_prefilling": sum(1 for s in self.active.values() if s.status is SequenceStatus.PREFILLING),
            "num_busy_slots": sum(1 for s in self.slots if s.owner is not None),
            "num_session_slots": sum(1 for s in self.slots if s.session_id is not None),
            "num_cells_used": self.num_cells_used(),
            "num_prefix_hit_tokens": self.num_prefix_hit_tokens,
            "num_prompt_tokens": self.num_prompt_tokens,
            "num_generated_tokens": self.num_generated_tokens,
            "num_stored_sessions": len(self.sessions),
            "num_stored_prefixes": len(self.prefixes) if self.prefixes is not None else 0,
            "stored_prefix_bytes": self.prefixes.ram_bytes() if self.prefixes is not None else 0,
            "num_prefix_offloads": self.num_prefix_offloads,
            "num_prefix_restores": self.num_prefix_restores,
            "num_preemptions": self.num_preemptions,
        }
