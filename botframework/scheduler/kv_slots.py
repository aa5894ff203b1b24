"""KVSlots: the KV sequences (slots) of one context, the physical cells they hold, and the KV
ops that keep llama.cpp's cache in step with this view. Engine thread only; plain data.

    admission  acquire(prompt, session_id) -> (slot, tokens it already holds): the session's own
               slot > its stored state (RESTORE) > the free slot with the longest cached prefix,
               or a stored prefix (RESTORE) > a prefix copied from another slot (COPY) > the
               least recently used idle session's slot (its state saved first)
    each step  extend(slot, ...) as tokens are planned; make_room(n) reclaims idle caches
               (plain prefixes before sessions, least recently used first); shift(seq);
               truncate(slot, n) after a step with drafts: rejected draft cells go
    finish     release(slot, keep): the cache stays for the next prompt (or the session's next
               turn), or is removed
    the plan   take_ops() -> (kv_ops, save_states); complete_saves(result.saved_states)

A COPY (llama_memory_seq_cp) makes two slots hold the same physical cells: a cell counts once
against num_ctx and is free when no slot holds it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from botframework.engine.step import KVOp, KVOpKind
from botframework.scheduler.prefix_store import PrefixStore
from botframework.scheduler.sequence import Sequence, Slot
from botframework.scheduler.session_store import SessionStore
from botframework.scheduler.state_store import StateStore, common_prefix_len


class KVSlots:
    def __init__(self, num_slots: int, num_ctx: int, *, min_prefix_copy: int, sessions: SessionStore,
                 prefixes: PrefixStore | None, clock: Callable[[], float]) -> None:
        self.slots = [Slot(seq_id=i) for i in range(num_slots)]
        self.num_ctx = num_ctx
        self.min_prefix_copy = min_prefix_copy  # shorter shared prefixes are recomputed, not copied
        self.sessions = sessions
        self.prefixes = prefixes
        self.clock = clock
        self._ops: list[KVOp] = []
        self._session_saves: OrderedDict[int, str] = OrderedDict()  # seq_id -> session id
        self._prefix_saves: dict[int, str] = {}                      # seq_id -> prefix key
        self._committed: dict[int, int] = {}  # seq_id -> cells earlier steps computed (what a COPY may share)
        self._cell_refs: dict[int, int] = {}  # physical cell id -> slots holding it
        self._next_cell = 0

    # -- the step's KV ops ------------------------------------------------------------------
    def snapshot_committed(self) -> None:
        """Before admissions: a COPY may share only what earlier steps computed (the engine
        applies kv_ops before it decodes)."""
        self._committed = {slot.seq_id: len(slot.cached) for slot in self.slots}

    def committed(self, seq_id: int) -> int:
        return self._committed.get(seq_id, 0)

    def take_ops(self) -> tuple[tuple[KVOp, ...], tuple[int, ...]]:
        """This step's kv_ops, and the seq ids whose state the engine saves first."""
        ops = tuple(self._ops)
        self._ops.clear()
        return ops, (*self._session_saves, *self._prefix_saves)

    @property
    def has_ops(self) -> bool:
        return bool(self._ops)

    @property
    def num_pending_saves(self) -> int:
        return len(self._session_saves) + len(self._prefix_saves)

    def complete_saves(self, saved: dict[int, bytes]) -> None:
        for seq_id, data in saved.items():
            session_id = self._session_saves.pop(seq_id, None)
            if session_id is not None:
                self.sessions.complete_save(session_id, data)
            key = self._prefix_saves.pop(seq_id, None)
            if key is not None and self.prefixes is not None:
                self.prefixes.complete_save(key, data)

    # -- cells ------------------------------------------------------------------------------
    def num_cells_used(self) -> int:
        """Physical cells in use: a prefix copied between slots (seq_cp) counts once."""
        return len(self._cell_refs)

    def num_cells_available(self) -> int:
        """Cells free now plus those only idle caches hold (make_room could reclaim them)."""
        busy = {cell for slot in self.slots if slot.owner is not None for cell in slot.cells}
        idle = {cell for slot in self.slots if slot.owner is None for cell in slot.cells}
        return self.num_ctx - self.num_cells_used() + len(idle - busy)

    def cell_refs(self) -> dict[int, int]:
        return dict(self._cell_refs)

    def _grow(self, slot: Slot, n: int) -> None:
        """n new cells at the end of the slot."""
        if n > 0:
            first = self._next_cell
            self._next_cell += n
            new = range(first, first + n)
            self._cell_refs.update(dict.fromkeys(new, 1))
            slot.cells.extend(new)

    def _drop(self, slot: Slot, start: int, stop: int | None = None) -> None:
        """The slot lets go of its cells [start, stop); a cell no slot holds is free."""
        refs = self._cell_refs
        for cell in slot.cells[start:stop]:
            if refs[cell] == 1:
                del refs[cell]
            else:
                refs[cell] -= 1
        del slot.cells[start:stop]

    def _share(self, dst: Slot, src: Slot, n: int) -> None:
        """dst (empty) holds src's first n cells too, as llama_memory_seq_cp does."""
        if dst.cells:
            raise ValueError(f"slot {dst.seq_id} is not empty")
        dst.cells = src.cells[:n]
        for cell in dst.cells:
            self._cell_refs[cell] += 1

    def extend(self, seq: Sequence, start: int, tokens: list[int]) -> None:
        """seq's slot after `tokens` are decoded at positions start.. (seq.num_computed already
        counts them)."""
        slot = self.slots[seq.seq_id]
        if len(slot.cached) == start and not seq.num_discarded:
            slot.cached.extend(tokens)  # the slot's own list: no copy of the whole sequence per step
        else:
            slot.cached = seq.kv_tokens()
        self._grow(slot, len(slot.cached) - len(slot.cells))

    def truncate(self, slot: Slot, n: int) -> None:
        """Keep only the slot's first n cells (a REMOVE op for the rest): rejected draft tokens."""
        if len(slot.cached) > n:
            self._ops.append(KVOp(KVOpKind.REMOVE, slot.seq_id, n, -1))
            del slot.cached[n:]
            self._drop(slot, n)

    def make_room(self, n: int, exclude: int) -> bool:
        """Reclaim idle caches (not slot `exclude`) until n more cells fit; False if impossible."""
        while self.num_cells_used() + n > self.num_ctx:
            candidates = [s for s in self.slots if s.owner is None and s.cached and s.seq_id != exclude]
            if not candidates:
                return False
            # plain prefix caches go before sessions; least recently used first
            victim = min(candidates, key=lambda s: (s.session_id is not None, s.last_used))
            if victim.session_id is not None:
                self._evict_session(victim)
            else:
                self.clear(victim)
        return True

    def clear(self, slot: Slot) -> None:
        """Empty the slot (a REMOVE op if it held anything)."""
        if slot.cached:
            self._ops.append(KVOp(KVOpKind.REMOVE, slot.seq_id))
        slot.cached = []
        self._drop(slot, 0)
        self._committed[slot.seq_id] = 0  # nothing left to share with a COPY this step

    def release(self, slot: Slot, *, keep: bool) -> None:
        """Its sequence is done with the slot: keep the cache for reuse, or clear it."""
        slot.owner = None
        slot.last_used = self.clock()
        if not keep:
            slot.session_id = None
            self.clear(slot)

    def shift(self, seq: Sequence) -> bool:
        """Context shift: drop the older half of the generated context after the first n_keep
        tokens and slide the rest down, so a long generation can go on (llama-server's scheme).
        False if nothing can be dropped."""
        # A cell has one position for all the sequences holding it: sliding a cell shared with
        # another slot (a copied prefix) would move that sequence's tokens too, and dropping it
        # frees nothing. Such a prefix is kept like the first n_keep tokens.
        slot = self.slots[seq.seq_id]
        shared_end = max((i + 1 for i, cell in enumerate(slot.cells) if self._cell_refs[cell] > 1), default=0)
        wanted = seq.num_keep if seq.num_discarded else max(seq.request.num_keep, shared_end)
        n_keep = min(wanted, seq.num_computed - 2)
        n_discard = (seq.num_computed - n_keep) // 2
        if n_keep < shared_end or n_discard < 1 or (seq.num_discarded and n_keep != seq.num_keep):
            return False  # (the keep boundary is fixed once a sequence has shifted)
        self._ops.append(KVOp(KVOpKind.REMOVE, seq.seq_id, n_keep, n_keep + n_discard))
        self._ops.append(KVOp(KVOpKind.SHIFT, seq.seq_id, n_keep + n_discard, seq.num_computed, delta=-n_discard))
        seq.shift(n_keep, n_discard)
        slot.cached = seq.kv_tokens()
        self._drop(slot, n_keep, n_keep + n_discard)
        self._committed[seq.seq_id] = 0  # positions moved: not a COPY source this step
        return True

    # -- admission --------------------------------------------------------------------------
    def acquire(self, prompt: list[int], session_id: str | None) -> tuple[Slot, int] | None:
        """A slot for `prompt`, holding its first `reuse` tokens (at most all but the last,
        which is decoded for its logits); None if no slot can be had now."""
        slot = next((s for s in self.slots if session_id and s.session_id == session_id), None)
        if slot is not None and slot.owner is not None:
            return None  # one turn of a session at a time; the next waits for the slot
        if session_id and self.sessions.is_pending(session_id):
            return None  # its state is being saved this step; restore it next step
        restored: list[int] | None = None
        if slot is None and session_id and session_id in self.sessions:
            slot = self._free_slot(prompt)
            if slot is None:
                return None
            restored = self._restore(slot, self.sessions, session_id)
            if restored is None:
                return None  # a restore needs real cells; wait until running sequences finish
        if slot is None:
            slot = self._free_slot(prompt)
            if slot is None:
                return None
            restored = self._restore_prefix(slot, prompt)
        reuse = common_prefix_len(slot.cached, prompt)
        if restored is None and reuse < self.min_prefix_copy:
            reuse = self._copy_prefix(slot, prompt, reuse)
        reuse = min(reuse, len(prompt) - 1)
        if len(slot.cached) > reuse:
            self._ops.append(KVOp(KVOpKind.REMOVE, slot.seq_id, reuse, -1))
            slot.cached = slot.cached[:reuse]
            self._drop(slot, reuse)
            self._committed[slot.seq_id] = min(self._committed.get(slot.seq_id, 0), reuse)
        slot.session_id = session_id
        slot.last_used = self.clock()
        return slot, reuse

    def _copy_prefix(self, slot: Slot, prompt: list[int], reuse: int) -> int:
        """A live or cached slot may hold a longer prefix of the prompt: share its cells (COPY)
        instead of recomputing them. How many tokens the slot now holds."""
        src = max((s for s in self.slots if s is not slot and s.cached),
                  key=lambda s: common_prefix_len(s.cached, prompt), default=None)
        if src is None:
            return reuse
        shared = min(common_prefix_len(src.cached, prompt), self._committed.get(src.seq_id, 0))
        if shared < self.min_prefix_copy or shared <= reuse:
            return reuse
        self.clear(slot)
        shared = min(shared, len(prompt) - 1)
        self._ops.append(KVOp(KVOpKind.COPY, slot.seq_id, 0, shared, src_seq_id=src.seq_id))
        slot.cached = prompt[:shared]
        self._share(slot, src, shared)
        return shared

    def _restore_prefix(self, slot: Slot, prompt: list[int]) -> list[int] | None:
        """Bring back the stored prefix cache that covers most of `prompt`, when it beats what
        the slot holds and what a COPY from another slot would share."""
        if self.prefixes is None:
            return None
        key, n = self.prefixes.longest_prefix(prompt)
        if key is None or n < self.min_prefix_copy or n <= common_prefix_len(slot.cached, prompt):
            return None
        live = max((min(common_prefix_len(s.cached, prompt), self._committed.get(s.seq_id, 0))
                    for s in self.slots if s is not slot and s.cached), default=0)
        if live >= n:
            return None
        tokens = self._restore(slot, self.prefixes, key)  # its cells at once; the unused tail goes after
        if tokens is not None:
            self.prefixes.num_restores += 1
        return tokens

    def _restore(self, slot: Slot, store: StateStore, key: str) -> list[int] | None:
        """Empty the slot and bring back a stored state into it (RESTORE): the stored tokens,
        or None if its cells cannot be made free now (the state stays stored)."""
        self.clear(slot)
        if not self.make_room(store.num_tokens(key), exclude=slot.seq_id):
            return None
        data, tokens = store.take(key)
        self._ops.append(KVOp(KVOpKind.RESTORE, slot.seq_id, data=data))
        slot.cached = tokens
        self._grow(slot, len(tokens))
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

    # -- moving caches out ------------------------------------------------------------------
    def _evict_session(self, slot: Slot) -> None:
        """Save an idle session's state (the engine returns it with the step) and free the slot."""
        if slot.session_id is None:
            raise ValueError(f"slot {slot.seq_id} holds no session")
        self._session_saves[slot.seq_id] = slot.session_id
        self.sessions.prepare_save(slot.session_id, list(slot.cached))
        slot.session_id = None
        self.clear(slot)

    def offload_idle_prefixes(self, min_tokens: int) -> None:
        """Idle, session-less slots holding at least min_tokens: save their cells' state to RAM
        and free the cells.

        Runs after the step's admissions, so a COPY from such a slot comes first in kv_ops;
        the engine saves states before it applies kv_ops.
        """
        if self.prefixes is None:
            return
        for slot in self.slots:
            if (slot.free and slot.cached and len(slot.cached) >= min_tokens
                    and slot.seq_id not in self._session_saves):
                key = self.prefixes.new_key()
                self.prefixes.prepare_save(key, list(slot.cached))
                self._prefix_saves[slot.seq_id] = key
                self.clear(slot)
                self.prefixes.num_offloads += 1

    def clear_prefix_cache(self) -> int:
        """Drop the cached prefixes of idle slots and in RAM (not sessions); the cells freed."""
        if self.prefixes is not None:
            self.prefixes.clear()
        before = self.num_cells_used()
        for slot in self.slots:
            if slot.free and slot.cached:
                self.clear(slot)
        return before - self.num_cells_used()

    # -- sessions ---------------------------------------------------------------------------
    def drop_session(self, session_id: str) -> bool:
        """Free the session's slot and stored state; False if it had neither."""
        found = self.sessions.drop(session_id)
        for slot in self.slots:
            if slot.session_id == session_id:
                slot.session_id = None
                self.clear(slot)
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

    # -- failure and introspection ----------------------------------------------------------
    def reset(self) -> None:
        """The engine cleared the whole KV cache: forget what slots held. Sessions whose state
        was in a slot or being saved start over; sessions already stored are kept."""
        for session_id in self._session_saves.values():
            self.sessions.drop(session_id)
        self._session_saves.clear()
        self._prefix_saves.clear()
        if self.prefixes is not None:
            self.prefixes.clear()
        self._ops.clear()
        for slot in self.slots:
            slot.cached = []
            slot.cells = []
            slot.session_id = None
        self._cell_refs.clear()

    def stats(self) -> dict[str, int]:
        prefixes = self.prefixes
        return {
            "num_busy_slots": sum(1 for s in self.slots if s.owner is not None),
            "num_session_slots": sum(1 for s in self.slots if s.session_id is not None),
            "num_cells_used": self.num_cells_used(),
            "num_stored_sessions": len(self.sessions),
            "num_stored_prefixes": len(prefixes) if prefixes is not None else 0,
            "stored_prefix_bytes": prefixes.ram_bytes() if prefixes is not None else 0,
            "num_prefix_offloads": prefixes.num_offloads if prefixes is not None else 0,
            "num_prefix_restores": prefixes.num_restores if prefixes is not None else 0,
        }
