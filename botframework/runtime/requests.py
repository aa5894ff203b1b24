"""One request builder for every entry point: options + prompt tokens -> scheduler Request.

    server:   pydantic body --server.validation--> GenerationOptions --+
    LocalLLM: keyword arguments ------------------> GenerationOptions --+--build_request-->
                  Request(SamplingParams(SamplerSpec))   (limits checked, defaults applied)

A field left None takes its value from one table, specs.SAMPLING_DEFAULTS (llama.cpp's common
sampler), so a request that names no sampling field samples the same behind the server,
LocalLLM and llama-server. Only max_tokens' default depends on the caller (RequestLimits):
LocalLLM's is specs.DEFAULT_MAX_TOKENS, the server's what fits the context. Every check
raises InvalidRequestError (param: the caller's name for the field, code "invalid_value") or
ContextLengthExceededError; no protocol shapes here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from botframework.engine.logits import check_processors
from botframework.errors import ContextLengthExceededError, InvalidRequestError
from botframework.scheduler.sequence import Priority, Request
from botframework.specs import (
    DEFAULT_MAX_TOKENS,
    SAMPLING_DEFAULTS,
    GrammarSpec,
    SamplingParams,
)

INVALID = "invalid_value"
T = TypeVar("T")

# GenerationOptions fields that become SamplerSpec fields of the same name
SAMPLER_FIELDS = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "presence_penalty",
                  "frequency_penalty")


@dataclass(frozen=True)
class GenerationOptions:
    """How to generate, as the caller asked; None: "use the default" (SAMPLING_DEFAULTS, or
    RequestLimits.default_max_tokens for max_tokens)."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None                      # None or -1: a random seed
    stop: str | Sequence[str] = ()               # kept as a tuple
    num_logprobs: int | None = None              # None: off; 0: the chosen token; k: also top-k alternatives
    logit_bias: Mapping[int, float] | Mapping[str, float] | None = None  # token id (or its decimal string) -> bias
    ignore_eos: bool = False
    session_id: str | None = None
    priority: Priority = Priority.INTERACTIVE
    context_shift: bool = False
    num_keep: int = 0
    # logits processors (botframework.engine.logits): LocalLLM's objects, or the ones the
    # server registered under the names a request gave (server.validation resolves them)
    logits_processors: Sequence[Any] = ()
    speculative: bool | None = None              # n-gram draft tokens (speculative decoding); None: server default

    def __post_init__(self) -> None:
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        object.__setattr__(self, "stop", stop)

    @property
    def planned_max_tokens(self) -> int:
        """The room a chat's overflow policy keeps for the answer before max_tokens is resolved."""
        return self.max_tokens if self.max_tokens is not None else DEFAULT_MAX_TOKENS


@dataclass(frozen=True)
class RequestLimits:
    """What one request may ask for; None: no limit. LocalLLM's are RequestLimits(); the
    server's come from its settings (ServerSettings.request_limits)."""

    max_tokens: int | None = None                      # largest max_tokens
    default_max_tokens: int | None = DEFAULT_MAX_TOKENS  # None: what fits the context (capped by max_tokens)
    max_stop_strings: int | None = None
    max_stop_chars: int | None = None
    max_logit_bias: int | None = None                  # entries in logit_bias


def build_request(options: GenerationOptions, tokens: Sequence[int], *, request_id: str, n_ctx: int,
                  n_vocab: int, limits: RequestLimits, extra_stops: tuple[str, ...] = (),
                  grammar: GrammarSpec | None = None, truncated_tokens: int = 0,
                  param_names: Mapping[str, str] | None = None, stream: bool = True) -> Request:
    """The scheduler Request for `options` over prompt `tokens`, every limit checked.

    `extra_stops`: the chat template's stop strings; `grammar`: the chat plan's constraint;
    `param_names`: the caller's name for a GenerationOptions field where it differs (the
    server's chat calls the prompt "messages" and num_keep "n_keep"), used in errors;
    `stream` False: the caller awaits the whole answer (Request.stream)."""
    names = param_names or {}

    def name(option: str) -> str:
        return names.get(option, option)

    if not tokens:
        raise InvalidRequestError("the prompt is empty", param=name("prompt"))
    low, high = min(tokens), max(tokens)
    if low < 0 or high >= n_vocab:
        bad = low if low < 0 else high
        raise InvalidRequestError(f"'{name('prompt')}' token id {bad} is out of the vocabulary (0..{n_vocab - 1})",
                                  param=name("prompt"))
    max_tokens = options.max_tokens
    if max_tokens is not None and limits.max_tokens is not None and max_tokens > limits.max_tokens:
        raise InvalidRequestError(f"'{name('max_tokens')}' is {max_tokens}; at most {limits.max_tokens} is allowed",
                                  param=name("max_tokens"), code=INVALID)
    stops = _check_stops(options.stop, limits, name("stop"))
    bias = _logit_bias(options.logit_bias, n_vocab, limits.max_logit_bias, name("logit_bias"))
    if len(tokens) >= n_ctx:
        raise ContextLengthExceededError(
            f"This model's maximum context length is {n_ctx} tokens, but the prompt has {len(tokens)}",
            num_prompt_tokens=len(tokens), num_ctx=n_ctx, param=name("prompt"))
    if options.num_keep < 0:
        raise InvalidRequestError(f"'{name('num_keep')}' must be >= 0", param=name("num_keep"), code=INVALID)
    processors = check_processors(options.logits_processors or (), name("logits_processors"))
    if max_tokens is None:
        max_tokens = limits.default_max_tokens
    if max_tokens is None:  # what fits
        max_tokens = n_ctx - len(tokens)
        if limits.max_tokens is not None:
            max_tokens = min(max_tokens, limits.max_tokens)
    sampler_fields: dict[str, Any] = {f: getattr(options, f) for f in SAMPLER_FIELDS if getattr(options, f) is not None}
    if options.seed is not None and options.seed != -1:
        sampler_fields["seed"] = options.seed
    if bias:
        sampler_fields["logit_bias"] = bias
    if grammar is not None:
        sampler_fields["grammar"] = grammar
    sampler = _checked(SAMPLING_DEFAULTS, sampler_fields, name)
    params = _checked(SamplingParams(sampler=sampler), {
        "max_tokens": max_tokens, "stop": stops + tuple(extra_stops), "ignore_eos": options.ignore_eos,
        "num_logprobs": options.num_logprobs}, name)
    return Request(request_id, tuple(tokens), params, session_id=options.session_id, priority=options.priority,
                   truncated_tokens=truncated_tokens, context_shift=options.context_shift, num_keep=options.num_keep,
                   logits_processors=processors, speculative=options.speculative, stream=stream)


def _check_stops(stop: str | Sequence[str], limits: RequestLimits, param: str) -> tuple[str, ...]:
    stops = (stop,) if isinstance(stop, str) else tuple(stop)
    count, chars = limits.max_stop_strings, limits.max_stop_chars
    too_many = count is not None and len(stops) > count
    bad = any(not isinstance(s, str) or not s or (chars is not None and len(s) > chars) for s in stops)
    if too_many or bad:
        what = f"at most {count} " if count is not None else ""
        length = f" of up to {chars} characters" if chars is not None else ""
        raise InvalidRequestError(f"'{param}' takes {what}non-empty strings{length}", param=param, code=INVALID)
    return stops


def _logit_bias(bias: Mapping[int, float] | Mapping[str, float] | None, n_vocab: int, cap: int | None,
                param: str) -> dict[int, float]:
    if not bias:
        return {}
    if cap is not None and len(bias) > cap:
        raise InvalidRequestError(f"'{param}' has {len(bias)} entries; at most {cap} are allowed", param=param)
    out: dict[int, float] = {}
    for key, value in bias.items():
        token = _token_id(key)
        if token is None:
            raise InvalidRequestError(f"'{param}' keys must be token ids, not {key!r}", param=param)
        if not 0 <= token < n_vocab:
            raise InvalidRequestError(f"'{param}' token id {token} is out of the vocabulary (0..{n_vocab - 1})",
                                      param=param)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise InvalidRequestError(f"'{param}' values must be numbers, not {value!r}", param=param)
        out[token] = float(value)
    return out


def _token_id(key: object) -> int | None:
    if isinstance(key, int) and not isinstance(key, bool):
        return key
    if isinstance(key, str):
        try:
            return int(key)
        except ValueError:
            return None
    return None


def _checked(base: T, fields: dict[str, Any], name: Callable[[str], str]) -> T:
    """dataclasses.replace(base, **fields), its ValueError (the spec's own range checks) as an
    InvalidRequestError naming the field: the first that fails on its own, so the field is
    known from the spec itself, never from its message."""
    try:
        return dataclasses.replace(base, **fields)  # type: ignore[type-var]
    except (ValueError, TypeError) as exc:
        for field_name, value in fields.items():
            try:
                dataclasses.replace(base, **{field_name: value})  # type: ignore[type-var]
            except (ValueError, TypeError) as alone:
                raise InvalidRequestError(str(alone), param=name(field_name), code=INVALID) from None
        raise InvalidRequestError(str(exc), code=INVALID) from None
