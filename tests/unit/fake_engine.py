"""A fake engine for scheduler tests: a simulated KV cache, deterministic 'sampling'.

It checks what the real llama.cpp would reject: positions that skip or overlap the
sequence's cells, copies from cells that do not exist, batches over the token budget.
"""

from __future__ import annotations

from collections.abc import Callable

from botframework.engine.speculative import verify_drafts
from botframework.engine.step import (
    KVOpKind,
    NativeStream,
    PlanItem,
    RunResult,
    SampledToken,
    StepPlan,
    StepResult,
    StreamSent,
)


class FakeEngine:
    def __init__(self, num_slots: int, max_batch_tokens: int, vocab: int = 1000, eog: int = 999) -> None:
        self.cells: dict[int, dict[int, int]] = {i: {} for i in range(num_slots)}  # seq -> pos -> token
        self.max_batch_tokens = max_batch_tokens
        self.vocab = vocab
        self.eog = eog
        self.num_decoded = 0
        self.samplers: set[str] = set()
        self.bad_samplers: dict[str, Exception] = {}  # request id -> the error building its sampler raises
        self.piece: Callable[[int], bytes] | None = None  # a token's text, for run_steps' stop bytes
        self.sent_text: dict[str, str] = {}  # request id -> the text run_steps' NativeStreams "sent"

    @property
    def kv(self) -> dict[int, list[int]]:
        """Each sequence's tokens in position order (positions must be 0..n-1 without holes)."""
        out = {}
        for seq_id, cells in self.cells.items():
            assert sorted(cells) == list(range(len(cells))), f"seq {seq_id}: holes in positions {sorted(cells)}"
            out[seq_id] = [cells[p] for p in range(len(cells))]
        return out

    def next_token(self, history: list[int]) -> int:
        """The 'model': the token after a sequence's KV content."""
        return (sum(history) * 31 + len(history)) % (self.vocab - 1)

    def execute(self, plan: StepPlan) -> StepResult:
        saved = {seq_id: repr(self.kv[seq_id]).encode() for seq_id in plan.save_states}
        for op in plan.kv_ops:
            cells = self.cells[op.seq_id]
            p0 = 0 if op.p0 < 0 else op.p0
            p1 = 1 << 30 if op.p1 < 0 else op.p1
            if op.kind is KVOpKind.REMOVE:
                for p in [p for p in cells if p0 <= p < p1]:
                    del cells[p]
            elif op.kind is KVOpKind.SHIFT:
                moved = {p: t for p, t in cells.items() if p0 <= p < p1}
                for p in moved:
                    del cells[p]
                for p, t in moved.items():
                    assert p + op.delta not in cells, "shift onto occupied cells"
                    cells[p + op.delta] = t
            elif op.kind is KVOpKind.COPY:
                src = self.kv[op.src_seq_id]
                assert len(src) >= op.p1, f"copy of {op.p1} cells from a sequence holding {len(src)}"
                assert not cells, "copy into a non-empty sequence"
                self.cells[op.seq_id] = dict(enumerate(src[op.p0:op.p1]))
            elif op.kind is KVOpKind.RESTORE:
                self.cells[op.seq_id] = dict(enumerate(eval(op.data.decode())))  # noqa: S307 - our own repr
        for request_id in plan.release:
            self.samplers.discard(request_id)
        assert plan.num_tokens <= self.max_batch_tokens, "batch over budget"
        seen = set()
        sampled = []
        for item in plan.items:
            assert item.seq_id not in seen, "a sequence twice in one batch"
            seen.add(item.seq_id)
            if item.request_id not in self.samplers and item.request_id in self.bad_samplers:
                # as the engine does: the request's first item builds its sampler; if that fails
                # the request ends with the error and its tokens stay out of the batch
                sampled.append(SampledToken(item.request_id, -1, error=self.bad_samplers[item.request_id],  # type: ignore[arg-type]
                                           built=False))
                continue
            self.samplers.add(item.request_id)
            cells = self.cells[item.seq_id]
            assert item.start_pos == len(cells), f"seq {item.seq_id}: pos {item.start_pos} != {len(cells)} cells"
            for k, token in enumerate(item.tokens):
                cells[item.start_pos + k] = token
            self.num_decoded += len(item.tokens)
            if item.sample:
                # deterministic: depends only on the sequence's content, like greedy decoding;
                # drafts: sampled after the last token and each draft until one differs
                history = [cells[p] for p in range(len(cells))]
                first = len(history) - item.num_draft
                for token in verify_drafts(item.tokens[len(item.tokens) - item.num_draft:],
                                           lambda i, h=history, f=first: self.next_token(h[:f + i])):
                    sampled.append(SampledToken(item.request_id, token))
        return StepResult(sampled=tuple(sampled), num_tokens=plan.num_tokens, decode_ms=0.0, sample_ms=0.0,
                          saved_states=saved)

    def run_steps(self, plan: StepPlan, max_steps: int, stop_on_eog: tuple[bool, ...],
                  interrupt_after: int | None = None, stop_bytes: bytes = b"",
                  streams: tuple[NativeStream | None, ...] = ()) -> RunResult:
        """Engine.run_steps: the plan's step and more, each item's sampled token decoded by the
        next; ends after a step where an item with stop_on_eog sampled the eog token, or one
        whose piece (self.piece, when set) has a byte in the item's map in stop_bytes, after
        `interrupt_after` steps (another thread's interrupt), or after max_steps. A NativeStream
        "sends" (RunResult.sent, nothing written) the tokens bf_decode_run would: while each
        before it was, within the budget, not the eog token, an ASCII piece with no byte in the
        map; one that is not ends the run after its step."""
        first = self.execute(plan)
        tokens: dict[str, list[int]] = {s.request_id: [s.token] for s in first.sampled}
        assert len(tokens) == len(plan.items) and all(s.error is None for s in first.sampled)
        steps = 1
        limit = max_steps if interrupt_after is None else min(max_steps, interrupt_after)

        sent = [0 if stream is not None else -1 for stream in streams] or [-1] * len(plan.items)

        def ends(i: int, item: PlanItem, stop: bool) -> bool:
            token = tokens[item.request_id][-1]
            bits = stop_bytes[32 * i: 32 * i + 32]
            stream = streams[i] if streams else None
            if stream is not None and sent[i] == steps - 1:
                piece = self.piece(token) if self.piece is not None else b""
                if sent[i] < stream.budget and token != self.eog and all(
                        b < 0x80 and not (bits and bits[b >> 3] & (1 << (b & 7))) for b in piece):
                    sent[i] += 1
                    self.sent_text[item.request_id] = self.sent_text.get(item.request_id, "") + piece.decode()
                else:
                    return True
            if stop and token == self.eog:
                return True
            return bool(bits) and self.piece is not None and any(
                bits[b >> 3] & (1 << (b & 7)) for b in self.piece(token))

        # (a list: every item's token of each step is checked, the last step's too)
        while not any([ends(i, item, stop) for i, (item, stop) in enumerate(zip(plan.items, stop_on_eog, strict=True))]
                      ) and steps < limit:
            for item in plan.items:
                cells = self.cells[item.seq_id]
                cells[len(cells)] = tokens[item.request_id][-1]
                self.num_decoded += 1
                tokens[item.request_id].append(self.next_token([cells[p] for p in range(len(cells))]))
            steps += 1
        return RunResult(tokens=tuple(tuple(tokens[item.request_id]) for item in plan.items), num_steps=steps,
                         decode_ms=float(steps),
                         sent=tuple(None if n < 0 else StreamSent(n) for n in sent) if streams else ())
