"""DraftModel: a second, smaller model's greedy drafts for many sequences at once.

    scheduler (before planning a step): draft({seq_id: (tokens, k)})
      sync     per sequence: the draft context's cells for seq_id are cut back to their common
               prefix with `tokens` (rejected drafts, another request in the slot, a cancelled
               step), keeping at least the last token to decode
      catch up one batched decode of every sequence's missing tokens, logits at each one's
               last token -> d1 (at a sequence's start: its prompt, n_batch tokens a step, shared
               by all sequences, shortest first; it drafts from the step that completes it)
      draft    k - 1 more decodes, each of one token per sequence that wants more -> d2..dk
    -> {seq_id: [d1..dk]} (greedy argmax: deterministic, so the target's verification rule is
       exact, engine/speculative.py)

One KV sequence per target slot (seq_id = slot), on the engine thread that owns the target's
context. The draft context only ever holds tokens a sequence had (its prompt and output) and
the drafts it proposed; nothing needs telling when drafts are rejected, a request ends or a
slot changes hands: the next draft() finds the common prefix and removes the rest. A failed
draft decode (the cache full of stale sequences) clears the draft context and drafts nothing
that step: drafting never fails a request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np

from botframework.engine.step import common_prefix_len
from botframework.errors import BotframeworkError

log = logging.getLogger("botframework.engine")


class DraftModel:
    """Greedy drafts from `context` (a llama Context of the draft model, n_seq_max >= the
    target's slots, kv_unified). Engine thread only. `batch` (a Batch of context.n_batch
    tokens) is made here when not given; the fake context of the unit tests brings its own."""

    def __init__(self, context: Any, batch: Any = None) -> None:
        self.context = context
        if batch is None:
            from botframework.native.batch import Batch

            batch = Batch(context.n_batch)
        self.batch = batch
        self.cached: dict[int, list[int]] = {}  # seq_id -> its tokens in the draft KV, positions 0..
        self.num_decodes = 0
        self.num_tokens = 0
        self.num_failures = 0
        self.draft_ms = 0.0

    @property
    def num_cells_used(self) -> int:
        return sum(len(tokens) for tokens in self.cached.values())

    def draft(self, wanted: Mapping[int, tuple[Sequence[int], int]]) -> dict[int, list[int]]:
        t0 = time.perf_counter()
        try:
            return self._draft(wanted)
        except BotframeworkError as exc:
            self.num_failures += 1
            log.warning("draft model: %s; its cache is cleared, this step drafts nothing", exc)
            self.reset()
            return {}
        finally:
            self.draft_ms += (time.perf_counter() - t0) * 1e3

    def reset(self) -> None:
        self.context.memory.clear()
        self.cached.clear()

    def close(self) -> None:
        close = getattr(self.batch, "close", None)
        if close is not None:
            close()

    # -- engine thread ----------------------------------------------------------------------
    def _sync(self, seq_id: int, tokens: Sequence[int]) -> list[int]:
        """Cut seq_id's cells back to its common prefix with tokens; the tokens to decode."""
        cached = self.cached.setdefault(seq_id, [])
        keep = min(common_prefix_len(cached, tokens), len(tokens) - 1)  # the last one gives d1's logits
        if keep < len(cached):
            self.context.memory.seq_rm(seq_id, keep, -1)
            del cached[keep:]
        return list(tokens[keep:])

    def _draft(self, wanted: Mapping[int, tuple[Sequence[int], int]]) -> dict[int, list[int]]:
        runs = {seq_id: self._sync(seq_id, tokens) for seq_id, (tokens, k) in wanted.items() if k > 0 and tokens}
        # Catch-up costs at most n_batch tokens a call, shortest runs first: a sequence that
        # starts drafting after a long prompt catches up over several steps (drafting nothing
        # until then) instead of stalling every stream while the draft model reads its prompt.
        budget = self.context.n_batch
        drafting: dict[int, list[int]] = {}
        catching_up: dict[int, list[int]] = {}
        for seq_id, run in sorted(runs.items(), key=lambda item: len(item[1])):
            if len(run) <= budget:
                drafting[seq_id] = run
                budget -= len(run)
            elif budget > 0:
                catching_up[seq_id] = run[:budget]
                budget = 0
        if not drafting and not catching_up:
            return {}
        needed = (sum(map(len, drafting.values())) + sum(map(len, catching_up.values()))
                  + sum(wanted[seq_id][1] - 1 for seq_id in drafting))
        if self.num_cells_used + needed > self.context.n_ctx:
            # stale sequences (idle slots' old prompts) make room first; still too many: skip
            for seq_id in [s for s in self.cached if s not in runs and self.cached[s]]:
                self.context.memory.seq_rm(seq_id, -1, -1)
                self.cached[seq_id] = []
            if self.num_cells_used + needed > self.context.n_ctx:
                return {}
        drafts: dict[int, list[int]] = {seq_id: [] for seq_id in drafting}
        decode: dict[int, list[int]] = {**drafting, **catching_up}
        while decode:
            for seq_id, token in self._decode(decode, outputs=drafting.keys()).items():
                drafts[seq_id].append(token)
            # the next position: one token (the draft just made) for each that wants more
            decode = {seq_id: [out[-1]] for seq_id, out in drafts.items() if len(out) < wanted[seq_id][1]}
        return drafts

    def _decode(self, runs: Mapping[int, list[int]], outputs: Collection[int]) -> dict[int, int]:
        """Decode each run after its sequence's cells, in as many n_batch decodes as it takes;
        the argmax after the last token of each run whose seq_id is in outputs."""
        batch = self.batch
        out: dict[int, int] = {}
        rows: list[tuple[int, int]] = []
        batch.clear()
        for seq_id, run in runs.items():
            cached = self.cached[seq_id]
            start = 0
            while start < len(run):
                n = min(len(run) - start, batch.num_free)
                last = start + n == len(run) and seq_id in outputs
                index = batch.add_sequence(run[start:start + n], len(cached), seq_id, logits_last=last)
                cached.extend(run[start:start + n])
                if last:
                    rows.append((seq_id, index))
                start += n
                if batch.num_free == 0:
                    self._flush(rows, out)
        self._flush(rows, out)
        return out

    def _flush(self, rows: list[tuple[int, int]], out: dict[int, int]) -> None:
        batch = self.batch
        if batch.n_tokens:
            self.context.decode(batch)
            self.num_decodes += 1
            self.num_tokens += batch.n_tokens
        for seq_id, index in rows:
            out[seq_id] = int(np.argmax(self.context.logits_ith(index)))
        rows.clear()
        batch.clear()
