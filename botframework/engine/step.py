"""Plain data between the scheduler and the engine: no native handles, no behaviour (but
common_prefix_len, which both sides' KV bookkeeping runs on token lists).

    scheduler.schedule() -> StepPlan(kv_ops, items, release)
    engine.execute(plan) -> StepResult(sampled per item that asked, timings)
    scheduler.update(plan, result)

Speculative drafts: an item with num_draft = k carries [last token, d1..dk]; the engine samples
at each of its k + 1 positions in order, with the request's own sampler, and stops at the first
sample that differs from the draft: `sampled` then holds 1..k+1 tokens for that request, in
order (the accepted drafts and the corrected or bonus token).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from botframework.errors import BotframeworkError
from botframework.specs import SamplerSpec


class KVOpKind(Enum):
    REMOVE = "remove"  # seq_rm(seq_id, p0, p1): drop cells (cancel, trim, reuse a slot)
    COPY = "copy"      # seq_cp(src, seq_id, p0, p1): share a cached prefix with another sequence
    SHIFT = "shift"    # seq_add(seq_id, p0, p1, delta): context shift
    RESTORE = "restore"  # state_seq_set(seq_id, data): bring an evicted session back


@dataclass(frozen=True)
class KVOp:
    kind: KVOpKind
    seq_id: int
    p0: int = -1
    p1: int = -1
    src_seq_id: int = -1
    delta: int = 0
    data: bytes = b""


@dataclass(frozen=True)
class PlanItem:
    """A run of tokens of one sequence in this step's batch.

    For a running sequence: its last sampled token. For a prefilling one: the next prompt
    chunk. `sample` is True when the run ends the prompt (or is a decode token), i.e. when
    the engine must produce the sequence's next token.
    """

    request_id: str
    seq_id: int
    tokens: tuple[int, ...]
    start_pos: int
    sample: bool
    sampler: SamplerSpec | None = None
    num_logprobs: int | None = None  # None: no logprobs; 0: chosen token only; k: + top k
    # logits processors (botframework.engine.logits) the request named: the engine binds them on
    # its first item and calls them before sampling with `history`, the sequence's tokens so
    # far (prompt + generated: the scheduler's own list, read only); () and () for the others
    processors: tuple[Any, ...] = ()
    history: Sequence[int] = ()
    # the last num_draft tokens are draft tokens to verify (logits at every position from the
    # sampled token on); 0: a plain item. Only with sample=True.
    num_draft: int = 0


@dataclass(frozen=True)
class StepPlan:
    items: tuple[PlanItem, ...]
    kv_ops: tuple[KVOp, ...] = ()
    release: tuple[str, ...] = ()  # request ids whose samplers the engine can free
    save_states: tuple[int, ...] = ()  # seq ids whose state the engine returns (eviction)

    @property
    def num_tokens(self) -> int:
        return sum(len(item.tokens) for item in self.items)


@dataclass(frozen=True)
class SampledToken:
    request_id: str
    token: int
    logprob: float | None = None
    top_logprobs: tuple[tuple[int, float], ...] = ()
    error: BotframeworkError | None = None  # the sampler could not go on: the request ends with it
    built: bool = True  # False: its sampler could not even be built (the error is about the request)


@dataclass(frozen=True)
class StepResult:
    sampled: tuple[SampledToken, ...]
    num_tokens: int
    decode_ms: float
    sample_ms: float
    saved_states: dict[int, bytes] = field(default_factory=dict)
    error: Exception | None = None
    processor_ms: float = 0.0  # logits processors (part of sample_ms)
    step_ms: float = 0.0       # the whole step on the worker (schedule, execute, update): for step hooks


PENDING_CAP = 1024  # the most whitespace a NativeStream holds back (the caller sends it otherwise)


@dataclass(frozen=True)
class NativeStream:
    """A streamed request whose text a run of steps sends to its client itself
    (Engine.run_steps, bf_decode_run's bf_run_stream): each taken token's chunk is head + the
    text's JSON string + tail (+ its number + number_tail when `number` >= 0), framed as an
    HTTP/1.1 chunk, in one non-blocking send on `fd`."""

    fd: int
    head: bytes       # up to the text's JSON string (its opening quote excluded)
    tail: bytes       # after it (its closing quote excluded)
    rstrip: bool      # trailing whitespace waits for the text after it (a chat's content)
    pending: str      # the whitespace waiting now (ASCII)
    budget: int       # the run's first `budget` tokens may be sent, no more (a finish goes the usual way)
    number: int = -1  # >= 0: the first chunk's number (an event's sequence_number), one more for each next
    number_tail: bytes = b""  # after the number


@dataclass(frozen=True)
class StreamSent:
    """What a run sent of a NativeStream: its first num_sent tokens were taken (their text
    is the client's, or held as whitespace); `rest`, the end of the last taken chunk that the
    socket did not take (the caller writes it before anything else); `error` 0, EAGAIN (the
    socket took nothing of the next chunk: that token was not taken), or the errno of a failed
    send (the client is gone); `number`, a numbered stream's next number (-1: not numbered)."""

    num_sent: int
    error: int = 0
    rest: bytes = b""
    number: int = -1


@dataclass(frozen=True)
class RunResult:
    """Engine.run_steps: the tokens each plan item's request sampled, step by step (the same
    number for all), and the time the steps took."""

    tokens: tuple[tuple[int, ...], ...]
    num_steps: int
    decode_ms: float  # the decodes and samples of every step (one native call)
    sent: tuple[StreamSent | None, ...] = ()  # per item, given NativeStreams: what the run sent itself


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the common prefix: a binary search over slice comparisons (done in C; two
    sequences of different types, a list and a tuple, are compared as lists)."""
    if type(a) is not type(b):
        a, b = list(a), list(b)
    lo, hi = 0, min(len(a), len(b))
    if a[:hi] == b[:hi]:
        return hi
    while lo < hi:  # a[:lo] == b[:lo] and a[:hi + 1] != b[:hi + 1]
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo
