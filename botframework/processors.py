"""Built-in logits processors, and loading one by import path (the server's registry).

    LocalLLM.chat(..., logits_processors=[TypicalP(0.9), BanStrings(["As an AI"])])
    botframework serve --processor typical=botframework.processors:TypicalP
        -> {"logits_processors": ["typical"]} on /v1/chat/completions and /v1/completions

Each processor is called once per engine step with the logits of every sequence that named
it, as one (rows, n_vocab) float32 array it changes in place, and their token histories
(botframework.engine.logits has the contract). These are plain numpy, vectorised over the
rows, so their cost grows with the rows and the vocabulary, not with Python per token:

    TypicalP                locally typical sampling's cut (Meister et al. 2022), as llama.cpp's
                            typical sampler, over the whole vocabulary
    RepetitionWindowPenalty CTRL's repetition penalty on the tokens of the last `window`
    BanStrings              never lets the text spell one of these strings
    force_tokens            for a sampler of your own: leave one token per row
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Sequence
from itertools import chain
from typing import Any

import numpy as np

from botframework.engine.logits import LogitsProcessor, LogitsProcessorError

__all__ = ["BanStrings", "LogitsProcessor", "LogitsProcessorError", "RepetitionWindowPenalty", "TypicalP",
           "force_tokens", "load_processor"]

NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class TypicalP:
    """Keep the locally typical tokens, ban the rest (-inf).

    Per row: p = softmax(logits), entropy H, each token's distance |-log p - H| from it; the
    tokens closest to H are kept until their probability adds up to more than `p` (at least
    `min_keep`), as llama.cpp's typical sampler does. The closest are found with an O(n)
    partition over a tier of candidates (`tiers`, then the whole row) and only those are
    sorted. Rows go one at a time: a row's temporaries stay in the CPU cache (all rows at
    once were 3x slower at 8 rows). The request's sampler then samples among the survivors.
    """

    def __init__(self, p: float = 0.9, *, min_keep: int = 1, tiers: tuple[int, ...] = (256, 4096)) -> None:
        if not 0.0 < p <= 1.0:
            raise ValueError("p must be in (0, 1]")
        if min_keep < 1 or any(t < 1 for t in tiers):
            raise ValueError("min_keep and tiers must be >= 1")
        self.p = p
        self.min_keep = min_keep
        self.tiers = tuple(sorted(tiers))
        self.name = f"typical_p({p})"

    def __call__(self, logits: np.ndarray, histories: Sequence[Sequence[int]]) -> None:
        if self.p < 1.0:
            for row in logits:
                self._row(row)

    def _row(self, row: np.ndarray) -> None:
        num_vocab = len(row)
        z = row - row.max()
        np.maximum(z, -80.0, out=z)  # exp(-80) is still a normal float: no denormals, and -inf is finite here
        weights = np.exp(z)          # p * Z
        total = weights.sum()
        # |-log p - H| = |z - E[z]|, as log p = z - log Z and H = log Z - E[z]
        z -= np.dot(weights, z) / total
        distance = np.abs(z, out=z)
        for size in (*(t for t in self.tiers if t < num_vocab - 1), num_vocab):
            if size < num_vocab:  # the `size` closest: a value partition, then one comparison pass
                near = np.flatnonzero(distance <= np.partition(distance, size)[size])
            else:
                near = np.arange(num_vocab)
            near = near[np.argsort(distance[near])]
            kept = int(np.searchsorted(np.cumsum(weights[near]), self.p * total, side="right")) + 1  # sum > p
            if kept <= len(near):
                break
        kept = min(max(kept, self.min_keep), num_vocab)
        np.copyto(row, -np.inf, where=distance > distance[near[kept - 1]])


class RepetitionWindowPenalty:
    """Penalise every token that occurs in the last `window` tokens of the history (prompt and
    generated): a positive logit is divided by `penalty`, a negative one multiplied (CTRL, as
    llama.cpp's repeat_penalty). One gather and one scatter for all rows."""

    def __init__(self, penalty: float = 1.3, window: int = 64) -> None:
        if penalty <= 0.0:
            raise ValueError("penalty must be > 0")
        if window < 1:
            raise ValueError("window must be >= 1")
        self.penalty = penalty
        self.window = window
        self.name = f"repetition_window({penalty}, {window})"

    def __call__(self, logits: np.ndarray, histories: Sequence[Sequence[int]]) -> None:
        recent = [history[-self.window:] for history in histories]
        tokens = np.fromiter(chain.from_iterable(recent), dtype=np.int64)
        if not len(tokens):
            return
        rows = np.repeat(np.arange(len(recent)), [len(r) for r in recent])
        values = logits[rows, tokens]
        # a token seen twice is written twice with the same value: penalised once, as intended
        logits[rows, tokens] = np.where(values > 0, values / self.penalty, values * self.penalty)


class BanStrings:
    """Never let the text (prompt + generated) spell any of these strings.

    Approach: at each step, ban (-inf) every token whose text would complete a banned string
    given the text so far: a token whose piece contains the string, or one whose piece starts
    with the string's rest when the text ends with its beginning. The string can then never
    appear; the model may write a beginning of it and is steered elsewhere at the token that
    would finish it (no backtracking). Matching is on UTF-8 bytes, case and spaces included:
    ban " Sorry" and "Sorry" both if both matter. Tables are built once per model (`bind`,
    called by the engine with the model: each token's piece), so a step costs a few byte
    comparisons per row and one scatter.
    """

    def __init__(self, strings: Iterable[str | bytes], *, pieces: Sequence[bytes] | None = None) -> None:
        encoded = tuple(s.encode("utf-8") if isinstance(s, str) else bytes(s) for s in strings)
        if not encoded or any(not s for s in encoded):
            raise ValueError("BanStrings needs one or more non-empty strings")
        self.strings = encoded
        self.name = f"ban_strings({len(encoded)})"
        self._bound: dict[tuple[str, int], BanStrings] = {}
        self._pieces: Sequence[bytes] | None = None
        self._always = np.zeros(0, dtype=np.int64)
        self._after: list[tuple[bytes, np.ndarray]] = []  # text ends with bytes -> ban these tokens
        self._tail = max(len(s) for s in encoded) - 1
        if pieces is not None:
            self._build(pieces)

    def bind(self, model: Any) -> BanStrings:
        """This processor over `model`'s vocabulary (its tables built once, then shared by every
        request on that model, so their rows are banned in one call)."""
        if self._pieces is not None:
            return self
        key = (str(getattr(model, "path", id(model))), int(model.n_vocab))
        bound = self._bound.get(key)
        if bound is None:
            pieces = [model.token_to_piece(token) for token in range(model.n_vocab)]
            bound = self._bound[key] = BanStrings(self.strings, pieces=pieces)
        return bound

    def _build(self, pieces: Sequence[bytes]) -> None:
        self._pieces = pieces
        self._always = np.array([t for t, piece in enumerate(pieces) if any(s in piece for s in self.strings)],
                                dtype=np.int64)
        rests = {s[j:] for s in self.strings for j in range(1, len(s))}
        by_length: dict[int, set[bytes]] = {}
        for rest in rests:
            by_length.setdefault(len(rest), set()).add(rest)
        starting: dict[bytes, list[int]] = {}
        for token, piece in enumerate(pieces):
            for length, wanted in by_length.items():
                if len(piece) >= length and piece[:length] in wanted:
                    starting.setdefault(piece[:length], []).append(token)
        after: dict[bytes, set[int]] = {}
        for s in self.strings:
            for j in range(1, len(s)):
                tokens = starting.get(s[j:])
                if tokens:
                    after.setdefault(s[:j], set()).update(tokens)
        self._after = [(prefix, np.array(sorted(tokens), dtype=np.int64)) for prefix, tokens in after.items()]

    def __call__(self, logits: np.ndarray, histories: Sequence[Sequence[int]]) -> None:
        pieces = self._pieces
        if pieces is None:
            raise RuntimeError("BanStrings has no vocabulary: give pieces=, or let the engine bind it to the model")
        if len(self._always):
            logits[:, self._always] = -np.inf
        for row, history in enumerate(histories):
            tail = b""
            i = len(history) - 1
            while len(tail) < self._tail and i >= 0:
                tail = pieces[history[i]] + tail
                i -= 1
            for prefix, tokens in self._after:
                if tail.endswith(prefix):
                    logits[row, tokens] = -np.inf


def force_tokens(logits: np.ndarray, tokens: Sequence[int] | np.ndarray) -> None:
    """Leave exactly one token per row: tokens[k] gets logit 0, every other -inf. A processor
    that samples by itself ends with this; any request sampler (greedy or not) then picks it."""
    logits[...] = -np.inf
    logits[np.arange(len(logits)), np.asarray(tokens, dtype=np.int64)] = 0.0


def load_processor(spec: str) -> Any:
    """The processor at `module:attribute` (attribute may be dotted): an instance or function
    as it is, a class instantiated without arguments. ValueError when it cannot be imported or
    is not callable. The server's registry (serve --processor name=module:attr) uses this at
    start-up; nothing a request sends is ever imported."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"logits processor {spec!r}: expected 'module:attribute'")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"logits processor {spec!r} cannot be imported: {exc}") from None
    if isinstance(target, type):
        try:
            target = target()
        except Exception as exc:
            raise ValueError(f"logits processor {spec!r}: {target.__name__}() failed: {exc}") from None
    if not callable(target):
        raise ValueError(f"logits processor {spec!r} is not callable: (logits, histories) -> None")
    return target


def load_registry(specs: dict[str, str]) -> dict[str, Any]:
    """name -> processor for each `name: module:attribute`; ValueError naming a bad one."""
    registry: dict[str, Any] = {}
    for name, spec in specs.items():
        if not NAME.fullmatch(name):
            raise ValueError(f"logits processor name {name!r}: use 1-64 letters, digits, '_', '.' or '-'")
        registry[name] = load_processor(spec)
    return registry
