"""A Responses request mapped onto the core's own request types, checked.

    ResponsesRequest --previous_response--> the stored conversation it continues (400 if none)
        --input_messages--> chat messages (input items via _responses_items.chat_messages)
        --chat_options--> ChatOptions: text.format -> structured output (json_schema enforced
                          by the grammar, json_object), function tools + tool_choice
                          (allowed_tools narrows the tools), parallel_tool_calls, reasoning
                          effort "none" -> enable_thinking=False
        --generation_options--> GenerationOptions (max_output_tokens, sampling, the session,
                                service_tier "flex" -> batch priority)
    check_reasoning: after planning, a reasoning effort needs a template with a thinking mode.
    named_as_responses: errors raised by the core inside it name this protocol's fields.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from botframework.chat.plan import ChatOptions, ChatPlan
from botframework.chat.structured import structured_output
from botframework.chat.tools import Tool, ToolChoice, ToolChoiceMode, parse_tool_choice, parse_tools
from botframework.errors import InvalidRequestError
from botframework.runtime.requests import GenerationOptions
from botframework.scheduler.sequence import Priority
from botframework.server.adapters._responses_items import chat_messages
from botframework.server.adapters._responses_protocol import AllowedToolsChoice, FunctionChoice, ResponsesRequest
from botframework.server.adapters._responses_store import ResponseStore, Stored
from botframework.server.errors import unsupported
from botframework.server.runtime import Runtime

# the core's names for fields -> this protocol's, in errors
_CORE_PARAMS = {"response_format": "text.format", "messages": "input", "prompt": "input",
                "max_tokens": "max_output_tokens"}
OPTION_NAMES = {"prompt": "input", "max_tokens": "max_output_tokens", "num_keep": "n_keep"}


@contextlib.contextmanager
def named_as_responses() -> Iterator[None]:
    """Errors raised by the core name the chat fields; name this protocol's instead."""
    try:
        yield
    except InvalidRequestError as exc:
        if exc.param in _CORE_PARAMS:
            exc.param = _CORE_PARAMS[exc.param]
        raise


def previous_response(store: ResponseStore, response_id: str | None) -> Stored | None:
    if response_id is None:
        return None
    stored = store.get(response_id)
    if stored is not None:
        return stored
    if store.running(response_id) is not None:
        raise InvalidRequestError(f"Previous response '{response_id}' is still in progress",
                                  param="previous_response_id", code="previous_response_in_progress")
    raise InvalidRequestError(f"Previous response with id '{response_id}' not found.",
                              param="previous_response_id", code="previous_response_not_found")


def input_messages(body: ResponsesRequest) -> list[dict[str, Any]]:
    if isinstance(body.input, str):
        return [{"role": "user", "content": body.input}]
    return chat_messages(body.input or ())


def _tool_choice(body: ResponsesRequest, tools: tuple[Tool, ...]) -> tuple[ToolChoice, tuple[Tool, ...]]:
    """The core's ToolChoice and the tools the model may use (allowed_tools narrows them)."""
    choice = body.tool_choice
    if isinstance(choice, AllowedToolsChoice):
        allowed = {t.name for t in choice.tools}
        unknown = sorted(allowed - {t.name for t in tools})
        if unknown:
            raise InvalidRequestError(f"tool_choice.tools names {unknown[0]!r}, which is not among the tools",
                                      param="tool_choice")
        return ToolChoice(ToolChoiceMode(choice.mode)), tuple(t for t in tools if t.name in allowed)
    raw = choice.model_dump() if isinstance(choice, FunctionChoice) else choice
    return parse_tool_choice(raw, tools), tools


def chat_options(body: ResponsesRequest) -> ChatOptions:
    fmt = body.text.format if body.text is not None else None
    if fmt is not None and fmt.type == "json_schema" and fmt.schema_ is None:
        raise InvalidRequestError("text.format of type json_schema needs a 'schema'", param="text.format.schema")
    structured = None
    if fmt is not None and fmt.type == "json_schema":  # as chat's response_format has it
        structured = structured_output({"type": "json_schema", "json_schema": {
            "name": fmt.name or "response", "schema": fmt.schema_, "strict": fmt.strict is not False}})
    elif fmt is not None and fmt.type == "json_object":
        structured = structured_output({"type": "json_object", "schema": fmt.schema_})
    tools = parse_tools([tool.model_dump(exclude_none=True) for tool in body.function_tools])
    choice, offered = _tool_choice(body, tools)
    if structured is not None and choice.calls_tools and offered:
        raise unsupported("text.format", f"{fmt.type if fmt else ''} cannot be combined with tools the model may "
                                         "call: send tool_choice 'none', or ask for the format in a later turn")
    effort = body.reasoning.effort if body.reasoning is not None else None
    return ChatOptions(structured=structured, tools=offered, tool_choice=choice,
                       parallel_tool_calls=body.parallel_tool_calls is not False,
                       enable_thinking=effort != "none")  # "none": a reasoning template is asked not to think


def generation_options(body: ResponsesRequest, session_id: str | None) -> GenerationOptions:
    return GenerationOptions(
        max_tokens=body.max_output_tokens, temperature=body.temperature, top_p=body.top_p, top_k=body.top_k,
        min_p=body.min_p, seed=body.seed, stop=body.stop if body.stop is not None else (),
        ignore_eos=body.ignore_eos, session_id=session_id,
        priority=Priority.BATCH if body.service_tier == "flex" else Priority.INTERACTIVE)


def check_reasoning(body: ResponsesRequest, plan: ChatPlan, runtime: Runtime) -> None:
    """An effort other than "none" needs a model that reasons. Its levels are not told apart:
    a reasoning model thinks as its template does (only "none" changes it)."""
    effort = body.reasoning.effort if body.reasoning is not None else None
    if effort not in (None, "none") and not plan.rendered.params.get("supports_thinking"):
        raise unsupported("reasoning.effort", f"needs a reasoning model: '{runtime.model_id}' has no thinking mode")
