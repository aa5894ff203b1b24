"""Plain specs every layer shares: how a request samples and what it generates. No native code.

    SamplerSpec (+ GrammarSpec)  how one token is chosen        -> native.SamplerChain builds it
    SamplingParams               SamplerSpec + max_tokens, stops, logprobs -> scheduler.Request
    SAMPLING_DEFAULTS            the one table of defaults every entry point (server, LocalLLM,
                                 SDKs) falls back to for a field its caller did not give

These are frozen dataclasses with their input checks (ValueError, or GrammarError for grammar
limits): the scheduler, the engine's plan, the chat layer and the server import them without
the compiled module.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from botframework.errors import GrammarError

__all__ = ["DEFAULT_MAX_TOKENS", "MAX_GRAMMAR_BYTES", "MAX_GRAMMAR_NESTING", "MAX_GRAMMAR_RULES", "SAMPLING_DEFAULTS",
           "GrammarSpec", "SamplerSpec", "SamplingParams", "check_gbnf_limits"]

@dataclass(frozen=True)
class GrammarSpec:
    """A GBNF grammar; lazy grammars only start constraining after a trigger appears.

    `prefill`: text the prompt already ends with and the grammar starts with (chat grammars
    from ChatTemplates.apply begin with the generation prompt). Its tokens are accepted by
    the grammar, and only the grammar, before sampling; ignored for lazy grammars.
    """

    gbnf: str
    root: str = "root"
    lazy: bool = False
    trigger_patterns: tuple[str, ...] = ()
    trigger_tokens: tuple[int, ...] = ()
    prefill: str = ""

    def __post_init__(self) -> None:
        check_gbnf_limits(self.gbnf)


# llama.cpp parses and walks grammars recursively: nesting ~20,000 groups deep, or a chain of
# ~100,000 rules each starting with the next, overflows the thread's stack and kills the
# process. Limits far below that, far above any real grammar (a JSON schema's has hundreds).
MAX_GRAMMAR_BYTES = 1 << 20
MAX_GRAMMAR_RULES = 10_000
MAX_GRAMMAR_NESTING = 256


_GBNF_LITERALS = re.compile(r'"(?:\\.|[^"\\])*"|\[(?:\\.|[^\]\\])*\]|#[^\n]*')


def check_gbnf_limits(gbnf: str) -> None:
    """GrammarError if the grammar is larger, has more rules or nests groups deeper than llama.cpp
    can take safely. Scans outside "strings", [character classes] and # comments."""
    if len(gbnf) > MAX_GRAMMAR_BYTES:
        raise GrammarError(f"the grammar has {len(gbnf)} characters; at most {MAX_GRAMMAR_BYTES} are allowed",
                           param="grammar")
    bare = _GBNF_LITERALS.sub(" ", gbnf)
    rules = bare.count("::=")
    chars = np.frombuffer(bare.encode(), dtype=np.uint8)  # "(" and ")" are never part of a multi-byte character
    deepest = int(np.cumsum((chars == 40).astype(np.int32) - (chars == 41)).max()) if len(chars) else 0
    if deepest > MAX_GRAMMAR_NESTING:
        raise GrammarError(f"the grammar nests groups {deepest} deep; at most {MAX_GRAMMAR_NESTING} are allowed",
                           param="grammar")
    if rules > MAX_GRAMMAR_RULES:
        raise GrammarError(f"the grammar has {rules} rules; at most {MAX_GRAMMAR_RULES} are allowed", param="grammar")


@dataclass(frozen=True)
class SamplerSpec:
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    typical_p: float = 1.0
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    logit_bias: Mapping[int, float] = field(default_factory=dict)
    grammar: GrammarSpec | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.temperature <= 100.0:
            raise ValueError("temperature must be in [0, 100]")
        if self.top_k < 0:
            raise ValueError("top_k must be >= 0")
        for name in ("top_p", "min_p", "typical_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        if self.repeat_penalty <= 0.0:
            raise ValueError("repeat_penalty must be > 0")
        if self.repeat_last_n < -1:
            raise ValueError("repeat_last_n must be >= -1")
        if self.seed is not None and not 0 <= self.seed < 2**32 - 1:
            raise ValueError("seed must be in [0, 2**32 - 2]")

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


# The defaults of llama.cpp's common sampler (llama-server's too): a request that names no
# sampling field gets the same text from our server, LocalLLM and llama-server.
SAMPLING_DEFAULTS = SamplerSpec()
DEFAULT_MAX_TOKENS = 256  # LocalLLM; the server's default is what fits (see server.validation)


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = DEFAULT_MAX_TOKENS
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    num_logprobs: int | None = None  # None: off; 0: chosen token; k: also top-k alternatives
    sampler: SamplerSpec = field(default_factory=SamplerSpec)

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError("max_tokens must be >= 1")
        if self.num_logprobs is not None and not 0 <= self.num_logprobs <= 20:
            raise ValueError("logprobs must be between 0 and 20")
        if any(not isinstance(s, str) for s in self.stop):
            raise ValueError("stop must be a list of strings")
