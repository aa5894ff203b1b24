"""Drafters: draft tokens for one sequence, and how many to ask for (speculative decoding).

    Drafter (protocol): propose(tokens, limit) -> up to limit draft tokens; record(drafted, accepted)
    NgramDrafter: prompt lookup in the sequence's own tokens
    ModelDrafter: a draft model's greedy tokens, computed for every drafting sequence at once by
                  a DraftSource (engine/draft_model.py) before the step is planned

    n-grams:     sequence tokens (prompt + output) --observe--> index: n-gram -> where it
                 last continued; propose(tokens, limit) -> up to k tokens that followed the most
                 recent earlier occurrence of the sequence's last n tokens (n = ngram_max .. ngram_min)
    a model:     schedule() asks reserve(limit) -> k of each, DraftSource.draft for all of them,
                 then propose() hands each its own (ModelDrafter.pending)
    update():    record(num_drafted, num_accepted) -> k grows on full acceptance, shrinks to
                 what was accepted + 1 on a rejection; a sequence whose drafts keep failing
                 pauses drafting for a number of steps that doubles each time (up to MAX_PAUSE)
    the cost:    StepCost learns what a step of n tokens takes on this machine (every step's
                 decode + sample time); profitable_drafts(acceptance, B, cost, limit) is the k
                 that makes the most tokens per millisecond, 0 when no k beats not drafting.
                 On 2 CPU cores a step of 2 tokens costs ~1.75 steps of 1 (SmolLM2-135M Q4_1:
                 llama-bench pp1 180 t/s, pp2 206, pp4 295, pp8 390): a draft has to be
                 accepted more often than ~70% before one more token is worth verifying.

The n-gram index is incremental (a dict per n-gram size, one insert per new token and size), so a
step costs a few dict look-ups per sequence however long its prompt is; the prompt is indexed
once, on the first proposal. Plain Python, no native code (the draft model's context lives in
the engine layer, behind the DraftSource protocol): verification happens in the engine
(the target model samples at every draft position) and the scheduler keeps the accepted prefix.
Every drafter is deterministic (one-hot drafts), which is what makes the engine's verification
rule exact (engine/speculative.py).
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from typing import Protocol

MAX_PAUSE = 64   # steps a sequence whose drafts fail skips drafting, at most
MIN_ATTEMPTS = 8  # draft tokens tried before a low acceptance rate pauses drafting
EXPLORE_EVERY = 16  # steps the costs keep a drafting sequence from drafting before it tries once more
PRIOR_ACCEPTANCE = 0.8  # a new sequence's per-token acceptance estimate (worth PRIOR_WEIGHT observations)
PRIOR_WEIGHT = 2.0
ACCEPTANCE_DECAY = 0.9  # each verified proposal keeps this share of what the estimate knew


class StepCost:
    """Milliseconds a step of n tokens takes here: an average per token count (the recent
    steps weigh most), read between the counts seen by straight lines. Unknown (None) until
    steps of two different sizes have been seen. The first step of each size is not counted:
    llama.cpp builds and allocates a graph for a new shape then (a first 2-token step took
    18.8 ms against 7 ms for 1 token here, later ones ~10)."""

    def __init__(self, smoothing: float = 0.2) -> None:
        self.smoothing = smoothing
        self._ms: dict[int, float] = {}
        self._sizes: list[int] = []  # sorted keys of _ms
        self._warm: set[int] = set()  # sizes seen once

    def observe(self, num_tokens: int, ms: float) -> None:
        if num_tokens <= 0 or ms <= 0:
            return
        n = _bucket(num_tokens)
        if n not in self._warm:
            self._warm.add(n)
            return
        old = self._ms.get(n)
        if old is None:
            self._ms[n] = ms
            self._sizes = sorted(self._ms)
        else:
            self._ms[n] = old + self.smoothing * (ms - old)

    def ms(self, num_tokens: int) -> float | None:
        sizes = self._sizes
        if len(sizes) < 2:
            return None
        n = _bucket(num_tokens)
        known = self._ms.get(n)
        if known is not None:
            return known
        # the two known sizes around n (or the two nearest on its side): a straight line
        i = min(max(bisect.bisect(sizes, n), 1), len(sizes) - 1)
        lo, hi = sizes[i - 1], sizes[i]
        slope = (self._ms[hi] - self._ms[lo]) / (hi - lo)
        return max(1e-3, self._ms[lo] + slope * (n - lo))


def _bucket(num_tokens: int) -> int:
    """Exact up to 64 tokens (where drafts live), then 1/8 of a power of two."""
    if num_tokens <= 64:
        return num_tokens
    step = 1 << (num_tokens.bit_length() - 4)
    return (num_tokens // step) * step


def profitable_drafts(acceptance: float, num_batch: int, cost: StepCost, limit: int) -> int:
    """The number of draft tokens, up to limit, that makes this step yield the most tokens per
    millisecond: a step of num_batch tokens (one per running sequence) yields num_batch; with
    k drafts it costs a step of num_batch + k and yields, on average, acceptance + ... +
    acceptance^k more (each draft token is kept only if those before it were). 0 when no k
    beats none; `limit` as it is while the cost of steps is not known yet."""
    base = cost.ms(num_batch)
    if base is None or limit <= 0:
        return max(0, limit)
    best_k, best_rate = 0, num_batch / base
    expected, power = 0.0, 1.0
    for k in range(1, limit + 1):
        power *= acceptance
        expected += power
        ms = cost.ms(num_batch + k)
        if ms is not None and (num_batch + expected) / ms > best_rate:
            best_k, best_rate = k, (num_batch + expected) / ms
    return best_k


class Drafter(Protocol):
    num_drafted: int
    num_accepted: int

    @property
    def acceptance(self) -> float:
        """The estimated chance that a draft token is kept, given the ones before it were."""
        ...

    def explore(self, profitable: int, limit: int) -> int:
        """The draft length to plan: what pays, now and then what fits (to measure again)."""
        ...

    def propose(self, tokens: Sequence[int], limit: int) -> list[int]:
        """Up to `limit` draft tokens to follow `tokens` (prompt + output so far)."""
        ...

    def record(self, num_drafted: int, num_accepted: int) -> None:
        """The engine verified a proposal: num_accepted of num_drafted tokens matched."""
        ...


class DraftSource(Protocol):
    """Drafts for several sequences at once (a draft model's context: engine/draft_model.py)."""

    def draft(self, wanted: Mapping[int, tuple[Sequence[int], int]]) -> dict[int, list[int]]:
        """seq_id -> (its tokens, k) => seq_id -> up to k greedy draft tokens to follow them."""
        ...


class _AdaptiveLength:
    """k per sequence: grows on full acceptance, shrinks on a rejection; pauses on failure."""

    def __init__(self, draft_max: int, draft_start: int, min_acceptance: float) -> None:
        if draft_max < 1:
            raise ValueError("need draft_max >= 1")
        self.draft_max = draft_max
        self.min_acceptance = min_acceptance
        self.num_draft = min(draft_start, draft_max)   # k for the next proposal
        self._pause = 0            # steps left without drafting
        self._next_pause = 1       # the next pause's length (doubles on each failure)
        self._recent_drafted = 0   # since the last pause: for the acceptance rate
        self._recent_accepted = 0
        self.num_drafted = 0
        self.num_accepted = 0
        # per-token acceptance (a draft token kept, given the ones before it were): accepted
        # tokens / (accepted tokens + proposals cut by a rejection), recent ones weighing most
        self._kept = PRIOR_ACCEPTANCE * PRIOR_WEIGHT
        self._tried = PRIOR_WEIGHT
        self.num_held_back = 0  # steps in a row the step costs allowed no draft (see explore)

    @property
    def acceptance(self) -> float:
        return self._kept / self._tried

    def explore(self, profitable: int, limit: int) -> int:
        """The draft length to plan, given what pays (profitable) and what fits (limit): what
        pays, except that every EXPLORE_EVERY-th step in a row where nothing would, the
        drafter tries its own length once more, so that its acceptance and the cost of longer
        steps are measured again (one bad measurement does not stop drafting for good)."""
        if profitable > 0 or limit <= 0:
            self.num_held_back = 0
            return profitable
        self.num_held_back += 1
        if self.num_held_back < EXPLORE_EVERY:
            return 0
        self.num_held_back = 0
        return limit

    def _take_turn(self) -> bool:
        """False (one step of a pause used up) when this step drafts nothing."""
        if self._pause:
            self._pause -= 1
            return False
        return True

    def record(self, num_drafted: int, num_accepted: int) -> None:
        """The engine verified a proposal: num_accepted of num_drafted tokens matched."""
        self.num_drafted += num_drafted
        self.num_accepted += num_accepted
        self._kept = self._kept * ACCEPTANCE_DECAY + num_accepted
        self._tried = self._tried * ACCEPTANCE_DECAY + num_accepted + (num_accepted < num_drafted)
        self._recent_drafted += num_drafted
        self._recent_accepted += num_accepted
        if num_accepted == num_drafted:
            self.num_draft = min(self.draft_max, self.num_draft + 2)
        else:
            self.num_draft = max(1, num_accepted + 1)
        low = (self._recent_drafted >= MIN_ATTEMPTS
               and self._recent_accepted < self.min_acceptance * self._recent_drafted)
        if num_accepted == 0 or low:
            # the drafts cost batch tokens and gained nothing: skip a while, longer each time
            self._pause = self._next_pause
            self._next_pause = min(MAX_PAUSE, self._next_pause * 2)
            self._recent_drafted = self._recent_accepted = 0
        else:
            self._next_pause = 1


class ModelDrafter(_AdaptiveLength):
    """A draft model's tokens for one sequence. The scheduler asks reserve(limit) of every
    drafting sequence, has the DraftSource draft for all of them in one pass, hands each its
    tokens (pending), and propose() then returns them like any drafter."""

    def __init__(self, draft_max: int, draft_start: int = 4, min_acceptance: float = 0.3) -> None:
        super().__init__(draft_max, draft_start, min_acceptance)
        self.pending: list[int] = []

    def reserve(self, limit: int) -> int:
        """How many tokens to draft this step (0: paused or no room)."""
        if limit <= 0 or not self._take_turn():
            return 0
        return min(limit, self.num_draft)

    def propose(self, tokens: Sequence[int], limit: int) -> list[int]:
        drafts, self.pending = self.pending, []
        return drafts[:max(0, limit)]


class NgramDrafter(_AdaptiveLength):
    def __init__(self, draft_max: int, ngram_max: int = 3, ngram_min: int = 2, draft_start: int = 4,
                 min_acceptance: float = 0.3) -> None:
        if not 1 <= ngram_min <= ngram_max or draft_max < 1:
            raise ValueError("need 1 <= ngram_min <= ngram_max and draft_max >= 1")
        super().__init__(draft_max, draft_start, min_acceptance)
        self.ngram_max = ngram_max
        self.ngram_min = ngram_min
        # n -> {n-gram: index of the token that followed its most recent occurrence}
        self._index: dict[int, dict[tuple[int, ...], int]] = {n: {} for n in range(ngram_min, ngram_max + 1)}
        self._num_indexed = 0      # tokens[:_num_indexed] have been indexed

    def _observe(self, tokens: Sequence[int]) -> None:
        """Index the n-grams that gained a continuation since the last call."""
        end = len(tokens) - 1  # the last token has no continuation yet
        start = self._num_indexed
        if start >= end:
            return
        for n, index in self._index.items():
            # the n-gram ending just before position p continues with tokens[p]
            for p in range(max(start, n), end + 1):
                index[tuple(tokens[p - n:p])] = p
        self._num_indexed = end

    def propose(self, tokens: Sequence[int], limit: int) -> list[int]:
        """Up to min(k, limit) draft tokens to follow `tokens`; [] when paused or nothing matches."""
        if not self._take_turn():
            return []
        limit = min(limit, self.num_draft)
        if limit <= 0:
            return []
        self._observe(tokens)
        length = len(tokens)
        for n in range(self.ngram_max, self.ngram_min - 1, -1):
            if length <= n:
                continue
            p = self._index[n].get(tuple(tokens[length - n:]))
            if p is not None:
                return list(tokens[p:min(p + limit, length)])
        return []
