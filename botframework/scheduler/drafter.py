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

The n-gram index is incremental (a dict per n-gram size, one insert per new token and size), so a
step costs a few dict look-ups per sequence however long its prompt is; the prompt is indexed
once, on the first proposal. Plain Python, no native code (the draft model's context lives in
the engine layer, behind the DraftSource protocol): verification happens in the engine
(the target model samples at every draft position) and the scheduler keeps the accepted prefix.
Every drafter is deterministic (one-hot drafts), which is what makes the engine's verification
rule exact (engine/speculative.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

MAX_PAUSE = 64   # steps a sequence whose drafts fail skips drafting, at most
MIN_ATTEMPTS = 8  # draft tokens tried before a low acceptance rate pauses drafting


class Drafter(Protocol):
    num_drafted: int
    num_accepted: int

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
