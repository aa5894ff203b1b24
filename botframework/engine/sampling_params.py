"""SamplingParams: everything about how one request generates, immutable."""

from __future__ import annotations

from dataclasses import dataclass, field

from botframework.native.sampler import SamplerSpec


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 256
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
