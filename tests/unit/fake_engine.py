"""A fake engine for scheduler tests: a simulated KV cache, deterministic 'sampling'.

It checks what the real llama.cpp would reject: positions that skip or overlap the
sequence's cells, copies from cells that do not exist, batches over the token budget.
"""

from __future__ import annotations

from botframework.engine.step import KVOpKind, SampledToken, StepPlan, StepResult


class FakeEngine:
    def __init__(self, num_slots: int, max_batch_tokens: int, vocab: int = 1000, eog: int = 999) -> None:
        self.kv: dict[int, list[int]] = {i: [] for i in range(num_slots)}
        self.max_batch_tokens = max_batch_tokens
        self.vocab = vocab
        self.eog = eog
        self.num_decoded = 0
        self.samplers: set[str] = set()
        self.saved: dict[int, list[int]] = {}

    def execute(self, plan: StepPlan) -> StepResult:
        saved = {}
        for seq_id in plan.save_states:
            saved[seq_id] = repr(self.kv[seq_id]).encode()
        for op in plan.kv_ops:
            cells = self.kv[op.seq_id]
            if op.kind is KVOpKind.REMOVE:
                p0 = 0 if op.p0 < 0 else op.p0
                p1 = len(cells) if op.p1 < 0 else op.p1
                assert p1 >= len(cells) or p0 == 0, "removing from the middle"
                del cells[p0:p1]
            elif op.kind is KVOpKind.COPY:
                src = self.kv[op.src_seq_id]
                assert len(src) >= op.p1, f"copy of {op.p1} cells from a sequence holding {len(src)}"
                assert not cells, "copy into a non-empty sequence"
                self.kv[op.seq_id] = list(src[op.p0:op.p1])
            elif op.kind is KVOpKind.RESTORE:
                self.kv[op.seq_id] = eval(op.data.decode())  # noqa: S307 - our own repr
        for request_id in plan.release:
            self.samplers.discard(request_id)
        assert plan.num_tokens <= self.max_batch_tokens, "batch over budget"
        seen = set()
        sampled = []
        for item in plan.items:
            assert item.seq_id not in seen, "a sequence twice in one batch"
            seen.add(item.seq_id)
            cells = self.kv[item.seq_id]
            assert item.start_pos == len(cells), f"seq {item.seq_id}: pos {item.start_pos} != {len(cells)} cells"
            cells.extend(item.tokens)
            self.num_decoded += len(item.tokens)
            if item.sample:
                self.samplers.add(item.request_id)
                # deterministic: depends only on the sequence's content, like greedy decoding
                token = (sum(cells) * 31 + len(cells)) % (self.vocab - 1)
                sampled.append(SampledToken(item.request_id, token))
        return StepResult(sampled=tuple(sampled), num_tokens=plan.num_tokens, decode_ms=0.0, sample_ms=0.0,
                          saved_states=saved)
