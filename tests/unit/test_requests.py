"""runtime.requests.build_request: one table of defaults, every limit a typed error. No model."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest

from botframework.errors import ContextLengthExceededError, InvalidRequestError
from botframework.runtime.requests import (
    SAMPLER_FIELDS,
    GenerationOptions,
    RequestLimits,
    build_request,
)
from botframework.scheduler.sequence import Priority, Request
from botframework.server.settings import ServerSettings
from botframework.specs import DEFAULT_MAX_TOKENS, SAMPLING_DEFAULTS, GrammarSpec

N_CTX, N_VOCAB = 512, 1000
SETTINGS = ServerSettings(model="m")
SERVER = SETTINGS.request_limits
CAP = SETTINGS.max_tokens_cap
PROMPT = [1, 2, 3, 4]
LOCAL = RequestLimits()  # LocalLLM's


def build(options: GenerationOptions | None = None, tokens: list[int] = PROMPT, *,
          limits: RequestLimits = LOCAL, **kwargs: Any) -> Request:
    return build_request(options or GenerationOptions(), tokens, request_id="r", n_ctx=N_CTX, n_vocab=N_VOCAB,
                         limits=limits, **kwargs)


def test_every_sampling_default_comes_from_the_one_table() -> None:
    for limits in (RequestLimits(), SERVER):
        request = build(limits=limits)
        assert request.params.sampler == SAMPLING_DEFAULTS
    # llama.cpp's common sampler defaults, which the table holds
    assert (SAMPLING_DEFAULTS.temperature, SAMPLING_DEFAULTS.top_k, SAMPLING_DEFAULTS.top_p,
            SAMPLING_DEFAULTS.min_p, SAMPLING_DEFAULTS.repeat_penalty) == (0.8, 40, 0.95, 0.05, 1.0)


def test_max_tokens_default_is_the_callers() -> None:
    assert build().params.max_tokens == DEFAULT_MAX_TOKENS  # LocalLLM
    assert build(limits=SERVER).params.max_tokens == N_CTX - len(PROMPT)  # the server: what fits...
    capped = dataclasses.replace(SERVER, max_tokens=100)
    assert build(limits=capped).params.max_tokens == 100  # ...capped by max_tokens_cap
    assert build(GenerationOptions(max_tokens=7), limits=SERVER).params.max_tokens == 7


def test_given_fields_override_the_table_and_everything_reaches_the_request() -> None:
    grammar = GrammarSpec('root ::= "x"')
    options = GenerationOptions(max_tokens=9, temperature=0.0, top_p=0.5, top_k=3, min_p=0.1, repeat_penalty=1.2,
                                presence_penalty=0.5, frequency_penalty=-0.5, seed=42, stop="END", num_logprobs=2,
                                logit_bias={"5": -100, "6": 2.5}, ignore_eos=True, session_id="s",
                                priority=Priority.BATCH, context_shift=True, num_keep=2)
    request = build(options, extra_stops=("<end>",), grammar=grammar, truncated_tokens=11)
    sampler = request.params.sampler
    for name in SAMPLER_FIELDS:
        assert getattr(sampler, name) == getattr(options, name)
    assert sampler.seed == 42 and sampler.grammar is grammar and dict(sampler.logit_bias) == {5: -100.0, 6: 2.5}
    assert sampler.typical_p == SAMPLING_DEFAULTS.typical_p  # fields no option names: the table's
    assert request.params.stop == ("END", "<end>") and request.params.max_tokens == 9
    assert request.params.num_logprobs == 2 and request.params.ignore_eos
    assert (request.request_id, request.prompt_tokens, request.session_id, request.priority) == (
        "r", tuple(PROMPT), "s", Priority.BATCH)
    assert (request.truncated_tokens, request.context_shift, request.num_keep) == (11, True, 2)


def test_seed_minus_one_is_random() -> None:
    assert build(GenerationOptions(seed=-1)).params.sampler.seed is None
    assert build(GenerationOptions(seed=0)).params.sampler.seed == 0


def limit_error(exc_type: type[InvalidRequestError], options: GenerationOptions, *, tokens: list[int] = PROMPT,
                limits: RequestLimits = SERVER, names: dict[str, str] | None = None) -> InvalidRequestError:
    with pytest.raises(exc_type) as info:
        build(options, tokens, limits=limits, param_names=names)
    assert str(info.value)
    return info.value


@pytest.mark.parametrize("options,param,code", [
    (GenerationOptions(max_tokens=CAP + 1), "max_tokens", "invalid_value"),
    (GenerationOptions(max_tokens=0), "max_tokens", "invalid_value"),
    (GenerationOptions(stop=["a", "b", "c", "d", "e"]), "stop", "invalid_value"),
    (GenerationOptions(stop=[""]), "stop", "invalid_value"),
    (GenerationOptions(stop=["x" * 1025]), "stop", "invalid_value"),
    (GenerationOptions(logit_bias={str(i): 1.0 for i in range(1025)}), "logit_bias", None),
    (GenerationOptions(logit_bias={"abc": 1.0}), "logit_bias", None),
    (GenerationOptions(logit_bias={N_VOCAB: 1.0}), "logit_bias", None),
    (GenerationOptions(logit_bias={"-1": 1.0}), "logit_bias", None),
    (GenerationOptions(logit_bias={5: math.nan}), "logit_bias", None),
    (GenerationOptions(temperature=-1), "temperature", "invalid_value"),
    (GenerationOptions(top_p=2), "top_p", "invalid_value"),
    (GenerationOptions(min_p=-0.5), "min_p", "invalid_value"),
    (GenerationOptions(top_k=-1), "top_k", "invalid_value"),
    (GenerationOptions(repeat_penalty=0), "repeat_penalty", "invalid_value"),
    (GenerationOptions(seed=2**40), "seed", "invalid_value"),
    (GenerationOptions(num_logprobs=21), "num_logprobs", "invalid_value"),
    (GenerationOptions(num_keep=-1), "num_keep", "invalid_value"),
])
def test_each_limit_is_an_invalid_request_naming_the_field(options: GenerationOptions, param: str,
                                                           code: str | None) -> None:
    err = limit_error(InvalidRequestError, options)
    assert (err.param, err.code) == (param, code)


def test_errors_use_the_callers_names_for_fields() -> None:
    names = {"max_tokens": "max_completion_tokens", "num_logprobs": "top_logprobs", "num_keep": "n_keep",
             "prompt": "messages"}
    over = GenerationOptions(max_tokens=CAP + 1)
    assert limit_error(InvalidRequestError, over, names=names).param == "max_completion_tokens"
    assert limit_error(InvalidRequestError, GenerationOptions(num_logprobs=-1), names=names).param == "top_logprobs"
    assert limit_error(InvalidRequestError, GenerationOptions(num_keep=-1), names=names).param == "n_keep"
    long = limit_error(ContextLengthExceededError, GenerationOptions(), tokens=[1] * N_CTX, names=names)
    assert long.param == "messages"


def test_the_prompt_is_checked() -> None:
    err = limit_error(ContextLengthExceededError, GenerationOptions(), tokens=[1] * N_CTX)
    assert isinstance(err, ContextLengthExceededError)
    assert (err.param, err.num_prompt_tokens, err.num_ctx) == ("prompt", N_CTX, N_CTX)
    assert limit_error(InvalidRequestError, GenerationOptions(), tokens=[]).param == "prompt"
    for bad in (-1, N_VOCAB):
        assert limit_error(InvalidRequestError, GenerationOptions(), tokens=[1, bad]).param == "prompt"
    assert build(tokens=[1] * (N_CTX - 1), limits=SERVER).params.max_tokens == 1  # the last position


def test_local_limits_have_no_caps_but_the_model() -> None:
    options = GenerationOptions(max_tokens=100_000, stop=[f"s{i}" for i in range(50)] + ["x" * 5000],
                                logit_bias={i: -1.0 for i in range(N_VOCAB)})
    request = build(options)
    assert request.params.max_tokens == 100_000 and len(request.params.stop) == 51
    assert limit_error(InvalidRequestError, GenerationOptions(stop=[""]), limits=RequestLimits()).param == "stop"


def test_server_limits_come_from_its_settings() -> None:
    settings = ServerSettings(model="m", max_tokens_cap=64, max_stop_strings=2, max_logit_bias=3)
    limits = settings.request_limits
    assert (limits.max_tokens, limits.default_max_tokens, limits.max_stop_strings, limits.max_logit_bias) == (
        64, None, 2, 3)
    assert build(limits=limits).params.max_tokens == 64


def test_options_normalise_stop() -> None:
    assert GenerationOptions(stop="x").stop == ("x",)
    assert GenerationOptions(stop=["x", "y"]).stop == ("x", "y")
    assert GenerationOptions().stop == ()


def test_slots_and_context_are_sized_from_memory() -> None:
    from botframework.config import auto_slots, fit_context, kv_bytes_per_cell

    assert [auto_slots(n) for n in (512, 2048, 8192, 32768)] == [2, 2, 8, 16]
    meta = {"general.architecture": "llama", "llama.block_count": "30", "llama.embedding_length": "576",
            "llama.attention.head_count": "9", "llama.attention.head_count_kv": "3"}
    cell = kv_bytes_per_cell(meta)
    assert cell == 30 * 2 * 64 * 3 * 2  # SmolLM2-135M: f16 K and V of 3 KV heads of 64 in 30 layers
    assert fit_context(8192, 100 << 20, cell, None) == 8192
    assert fit_context(8192, 100 << 20, cell, 1 << 30) == 8192  # fits: as asked
    fitted = fit_context(8192, 100 << 20, cell, 140 << 20)
    assert fitted % 256 == 0 and fitted * cell <= 40 << 20 < (fitted + 256) * cell
    with pytest.raises(ValueError, match="no room"):
        fit_context(8192, 100 << 20, cell, 101 << 20)
