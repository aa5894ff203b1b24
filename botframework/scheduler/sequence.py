"""Request (immutable input), Sequence (mutable state on the engine thread), Slot (a seq_id).

    Request --admit--> Sequence(WAITING) --slot--> PREFILLING --prompt done--> RUNNING
                                                         \\--------------------------> FINISHED
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Any

from botframework.engine.detokenizer import IncrementalDetokenizer
from botframework.engine.stops import StopMatcher
from botframework.scheduler.drafter import Drafter
from botframework.scheduler.output import RequestHandle
from botframework.specs import SamplingParams


class Priority(IntEnum):
    INTERACTIVE = 0   # chat turns a person is waiting for
    COMPLETION = 1    # code completion
    BATCH = 2         # offline / background work


class SequenceStatus(Enum):
    WAITING = "waiting"        # queued (or preempted: back in the queue); no KV sequence
    PREFILLING = "prefilling"  # owns a slot; prompt chunks still being computed
    RUNNING = "running"        # generating one token per step
    FINISHED = "finished"      # done or cancelled; slot released


@dataclass(frozen=True)
class Request:
    request_id: str
    prompt_tokens: tuple[int, ...]
    params: SamplingParams
    session_id: str | None = None
    priority: Priority = Priority.INTERACTIVE
    deadline: float | None = None       # time.monotonic() after which it is cancelled
    truncated_tokens: int = 0           # prompt tokens the overflow policy already dropped
    context_shift: bool = False         # at the context limit, drop old tokens instead of stopping
    num_keep: int = 0                   # tokens a context shift never drops (e.g. a system prompt)
    arrival: float = field(default_factory=time.monotonic)
    # callables (logits, histories) -> None run on this request's logits before sampling
    # (botframework.engine.logits); plain objects, so in-process only: the server resolves names
    logits_processors: tuple[Any, ...] = ()
    # speculative decoding (n-gram drafts verified in the batch): None: the scheduler's default
    speculative: bool | None = None
    # its deltas are read as they come (a stream); False (the whole answer is awaited): the
    # engine may run several steps without Python between them (Scheduler.run_length)
    stream: bool = True

    def __post_init__(self) -> None:
        if not self.prompt_tokens:
            raise ValueError("the prompt is empty")


class Sequence:
    def __init__(self, request: Request, handle: RequestHandle, detokenizer: IncrementalDetokenizer) -> None:
        self.request = request
        self.handle = handle
        self.status = SequenceStatus.WAITING
        self.seq_id = -1
        self.tokens: list[int] = list(request.prompt_tokens)  # prompt + generated
        self.num_prompt = len(request.prompt_tokens)
        # tokens to prefill before the next sample: the prompt, or after a preemption (its
        # cells were taken back) the prompt plus what was generated so far
        self.num_prefill = self.num_prompt
        self.num_preemptions = 0
        self.num_computed = 0        # tokens of self.tokens already in the KV cache
        self.num_cached = 0          # prompt tokens reused from the cache at admission
        self.num_generated = 0
        self.num_keep = 0            # context shift: KV positions < num_keep are tokens[:num_keep]
        self.num_discarded = 0       # ...and position p >= num_keep holds tokens[p + num_discarded]
        self.detokenizer = detokenizer
        self.stops = StopMatcher(request.params.stop)
        self.first_token_at: float | None = None
        self.drafter: Drafter | None = None  # speculative decoding, once it runs (if it drafts)
        self.num_draft_tokens = 0           # draft tokens verified for it
        self.num_accepted_draft_tokens = 0  # ...that it kept as generated tokens
        self.admitted_at: float | None = None

    @property
    def request_id(self) -> str:
        return self.request.request_id

    @property
    def num_pending_prefill(self) -> int:
        return self.num_prefill - self.num_computed

    def kv_tokens(self) -> list[int]:
        """The tokens now in this sequence's KV cells, in position order."""
        if not self.num_discarded:
            return self.tokens[: self.num_computed]
        start = self.num_keep + self.num_discarded
        return self.tokens[: self.num_keep] + self.tokens[start: start + self.num_computed - self.num_keep]

    def shift(self, num_keep: int, num_discard: int) -> None:
        if self.num_discarded and num_keep != self.num_keep:
            raise ValueError("num_keep must not change between context shifts")
        self.num_keep = num_keep
        self.num_discarded += num_discard
        self.num_computed -= num_discard


@dataclass
class Slot:
    """One KV sequence id. `cached` are the tokens at positions 0..len-1 in the cache;
    `cells` the ids of the physical cells holding them (shared with other slots after a COPY)."""

    seq_id: int
    cached: list[int] = field(default_factory=list)
    cells: list[int] = field(default_factory=list)
    owner: Sequence | None = None
    session_id: str | None = None
    last_used: float = 0.0

    @property
    def free(self) -> bool:
        return self.owner is None and self.session_id is None
