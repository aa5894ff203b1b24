"""Protocol bodies -> the internal request types, checked. Typed exceptions only.

    ChatCompletionRequest | CompletionRequest | InfillRequest
        --generation_options--> GenerationOptions   (None: the one table of defaults)
        --engine_request--> runtime.requests.build_request (limits from ServerSettings,
                            errors named as the body names its fields) --> scheduler Request
    ChatCompletionRequest --chat_options--> ChatOptions (response_format, tools, grammar)
    "logits_processors": names --logits_processors--> the objects ServerSettings registered

Every failure is an InvalidRequestError (param, code) or one of its subclasses;
server/errors.py maps them to HTTP by type. Pydantic has already checked shapes and ranges.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from botframework.chat.plan import ChatOptions
from botframework.chat.structured import structured_output
from botframework.chat.tools import parse_tool_choice, parse_tools
from botframework.errors import InvalidRequestError
from botframework.runtime.requests import INVALID, GenerationOptions, build_request
from botframework.scheduler.sequence import Priority, Request
from botframework.server.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    InfillRequest,
)
from botframework.server.runtime import Runtime
from botframework.server.settings import ServerSettings
from botframework.specs import GrammarSpec

GenerationBody = ChatCompletionRequest | CompletionRequest | InfillRequest

_PRIORITY = {"interactive": Priority.INTERACTIVE, "completion": Priority.COMPLETION, "batch": Priority.BATCH}


def generation_options(body: GenerationBody) -> GenerationOptions:
    return GenerationOptions(
        max_tokens=body.requested_max_tokens, temperature=body.temperature, top_p=body.top_p, top_k=body.top_k,
        min_p=body.min_p, repeat_penalty=body.repeat_penalty, presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty, seed=body.seed, stop=body.stop if body.stop is not None else (),
        num_logprobs=body.num_logprobs, logit_bias=body.logit_bias, ignore_eos=body.ignore_eos,
        session_id=body.session_id, priority=_PRIORITY[body.priority], context_shift=body.context_shift,
        num_keep=body.n_keep, speculative=body.speculative)


def param_names(body: GenerationBody) -> dict[str, str]:
    """The body's names for GenerationOptions fields where they differ (for error params)."""
    names = {"num_keep": "n_keep"}
    if isinstance(body, ChatCompletionRequest):
        names.update(prompt="messages", num_logprobs="top_logprobs")
        if body.max_completion_tokens is not None:
            names["max_tokens"] = "max_completion_tokens"
    elif isinstance(body, CompletionRequest):
        names["num_logprobs"] = "logprobs"
    return names


def engine_request(body: GenerationBody, tokens: list[int], runtime: Runtime, settings: ServerSettings,
                   request_id: str, *, options: GenerationOptions | None = None, extra_stops: tuple[str, ...] = (),
                   grammar: GrammarSpec | None = None, truncated_tokens: int = 0) -> Request:
    """build_request under this server's limits, for this model."""
    options = options or generation_options(body)
    names = body.logits_processors if isinstance(body, (ChatCompletionRequest, CompletionRequest)) else None
    if names:
        options = dataclasses.replace(options, logits_processors=logits_processors(names, settings))
    return build_request(options, tokens, request_id=request_id, n_ctx=runtime.n_ctx,
                         n_vocab=runtime.n_vocab, limits=settings.request_limits, extra_stops=extra_stops,
                         grammar=grammar, truncated_tokens=truncated_tokens, param_names=param_names(body),
                         stream=getattr(body, "stream", None) is not False)


def logits_processors(names: list[str], settings: ServerSettings) -> tuple[Any, ...]:
    """The processors registered at start under these names; an unknown name is a 400. A
    request only ever names them: nothing it sends is imported or run."""
    registry = settings.processor_registry
    for name in names:
        if name not in registry:
            have = ", ".join(sorted(registry)) or "none (serve --processor NAME=MODULE:ATTR registers them)"
            raise InvalidRequestError(f"unknown logits processor {name!r}; this server has: {have}",
                                      param="logits_processors", code=INVALID)
    return tuple(registry[name] for name in names)


def check_choices(n: int, settings: ServerSettings) -> None:
    if n > settings.max_choices:
        raise InvalidRequestError(f"'n' is {n}; this server allows at most {settings.max_choices}", param="n",
                                  code=INVALID)


def chat_options(body: ChatCompletionRequest) -> ChatOptions:
    """The request's constraints, checked (fail closed: GrammarError / InvalidRequestError -> 400)."""
    if body.mode is not None:  # the top-level form: the same as inside response_format
        structured = structured_output({"mode": body.mode, "schema": body.schema_})
    else:
        structured = structured_output(body.response_format.to_dict()) if body.response_format is not None else None
    tools = parse_tools([t.model_dump(exclude_none=True) for t in body.tools or ()])
    choice: Any = body.tool_choice
    if choice is not None and not isinstance(choice, str):
        choice = choice.model_dump()
    return ChatOptions(structured=structured, grammar=body.grammar, tools=tools,
                       tool_choice=parse_tool_choice(choice, tools),
                       parallel_tool_calls=bool(body.parallel_tool_calls))


def completion_prompt(body: CompletionRequest) -> str | list[int]:
    """The one prompt of a completion: its text, or its token ids (checked against the
    vocabulary by build_request). With `suffix`, it must be text: the prefix."""
    prompt = body.prompt
    if body.suffix is not None and not isinstance(prompt, str):
        raise InvalidRequestError("'suffix' needs 'prompt' to be a string", param="prompt")
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], int):
        return [int(t) for t in prompt]
    text = prompt[0] if isinstance(prompt, list) and prompt else prompt
    if not isinstance(text, str) or (not text and body.suffix is None):
        raise InvalidRequestError("'prompt' must not be empty", param="prompt")
    return text


def embedding_inputs(body: EmbeddingRequest, settings: ServerSettings,
                     runtime: Runtime) -> list[str] | list[list[int]]:
    """/v1/embeddings' input as texts or as token-id lists (OpenAI's four forms): 1 to
    max_embedding_inputs of them, none empty, every id in the model's vocabulary."""
    raw = body.input
    cap = settings.max_embedding_inputs
    if isinstance(raw, str) or all(isinstance(item, str) for item in raw):
        texts = [raw] if isinstance(raw, str) else [item for item in raw if isinstance(item, str)]
        if not texts or len(texts) > cap:
            raise InvalidRequestError(f"'input' must hold 1 to {cap} strings", param="input")
        if any(not t for t in texts):
            raise InvalidRequestError("'input' strings must not be empty", param="input")
        return texts
    # several inputs as ids ([[1, 2], [3]]) or one ([1, 2]); pydantic has checked every id is an int >= 0
    if isinstance(raw[0], list):
        token_lists = [list(item) for item in raw if isinstance(item, list)]
    else:
        token_lists = [[t for t in raw if isinstance(t, int)]]
    if len(token_lists) > cap:
        raise InvalidRequestError(f"'input' must hold 1 to {cap} token lists", param="input")
    for tokens in token_lists:
        if not tokens:
            raise InvalidRequestError("'input' token lists must not be empty", param="input")
        check_token_ids(tokens, runtime, "input")
    return token_lists


def check_token_ids(tokens: list[int], runtime: Runtime, param: str) -> None:
    bad = [t for t in tokens if not 0 <= t < runtime.n_vocab]
    if bad:
        raise InvalidRequestError(f"token id {bad[0]} is out of the vocabulary (0..{runtime.n_vocab - 1})",
                                  param=param)

