"""Anthropic Messages request shapes (pydantic, HTTP edge only) and their mapping onto ours.

    MessagesRequest | CountTokensRequest
      --chat_messages--> the message dicts ChatTemplates.apply reads (OpenAI's roles):
            system (string or text blocks)        -> one system message
            user text blocks                      -> a user message
            user tool_result blocks               -> tool messages (tool_call_id, name)
            assistant text / thinking / tool_use  -> one assistant message (content,
                                                     reasoning_content, tool_calls)
      --chat_options--> ChatOptions (tools + tool_choice, output_config.format as structured output)
      --generation_options--> GenerationOptions (max_tokens, sampling, stop_sequences, session_id)

Unknown fields are refused (extra="forbid"), as Anthropic's API does. Fields that change nothing
here are accepted and listed in the adapter's docstring (metadata, cache_control, ...).
Blocks we cannot honour (images, documents, server tools) are a 400 naming them, not dropped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from botframework.chat.plan import ChatOptions
from botframework.chat.structured import StructuredOutput
from botframework.chat.tools import parse_tool_choice, parse_tools
from botframework.errors import InvalidRequestError
from botframework.runtime.requests import GenerationOptions
from botframework.server.errors import unsupported


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Other(BaseModel):
    """A block or tool of a type we do not serve: parsed only to be refused by name."""

    model_config = ConfigDict(extra="allow")
    type: str


def _tagged(known: tuple[str, ...], default: str | None = None) -> Any:
    """A discriminator: a known `type` selects its model, anything else is _Other."""

    def tag(value: Any) -> str:
        kind = value.get("type", default) if isinstance(value, Mapping) else getattr(value, "type", default)
        return kind if kind in known else "other"

    return Discriminator(tag)


CacheControl = dict[str, Any] | None  # prompt caching is automatic here (longest common prefix)


class TextBlock(_Strict):
    type: Literal["text"]
    text: str
    cache_control: CacheControl = None
    citations: list[Any] | None = None


class ToolUseBlock(_Strict):
    type: Literal["tool_use"]
    id: str = Field(min_length=1, max_length=256)
    name: str = Field(min_length=1, max_length=256)
    input: dict[str, Any]
    cache_control: CacheControl = None
    caller: dict[str, Any] | None = None
    toolset_name: str | None = None


ToolResultPart = Annotated[Annotated[TextBlock, Tag("text")] | Annotated[_Other, Tag("other")], _tagged(("text",))]


class ToolResultBlock(_Strict):
    type: Literal["tool_result"]
    tool_use_id: str = Field(min_length=1, max_length=256)
    content: str | list[ToolResultPart] | None = None
    is_error: bool | None = None
    cache_control: CacheControl = None
    toolset_name: str | None = None


class ThinkingBlock(_Strict):
    type: Literal["thinking"]
    thinking: str
    signature: str | None = None


class RedactedThinkingBlock(_Strict):
    type: Literal["redacted_thinking"]
    data: str


_BLOCKS = ("text", "tool_use", "tool_result", "thinking", "redacted_thinking")
ContentBlock = Annotated[
    Annotated[TextBlock, Tag("text")] | Annotated[ToolUseBlock, Tag("tool_use")]
    | Annotated[ToolResultBlock, Tag("tool_result")] | Annotated[ThinkingBlock, Tag("thinking")]
    | Annotated[RedactedThinkingBlock, Tag("redacted_thinking")] | Annotated[_Other, Tag("other")],
    _tagged(_BLOCKS)]


class MessageParam(_Strict):
    role: Literal["user", "assistant"]
    content: str | list[ContentBlock]


class CustomTool(_Strict):
    type: Literal["custom"] | None = None
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")  # what chat.tools accepts
    description: str | None = None
    input_schema: dict[str, Any]
    cache_control: CacheControl = None
    strict: bool | None = None  # always enforced here (the arguments' grammar)
    input_examples: list[dict[str, Any]] | None = None
    defer_loading: bool | None = None
    eager_input_streaming: bool | None = None
    allowed_callers: list[str] | None = None


ToolDefinition = Annotated[Annotated[CustomTool, Tag("custom")] | Annotated[_Other, Tag("other")],
                           _tagged(("custom",), default="custom")]


class _ToolChoiceBase(_Strict):
    disable_parallel_tool_use: bool | None = None


class ToolChoiceAuto(_ToolChoiceBase):
    type: Literal["auto"]


class ToolChoiceAny(_ToolChoiceBase):
    type: Literal["any"]


class ToolChoiceNone(_Strict):
    type: Literal["none"]


class ToolChoiceTool(_ToolChoiceBase):
    type: Literal["tool"]
    name: str = Field(min_length=1, max_length=128)


ToolChoiceParam = Annotated[ToolChoiceAuto | ToolChoiceAny | ToolChoiceNone | ToolChoiceTool,
                            Field(discriminator="type")]


class JSONOutputFormat(_Strict):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(_Strict):
    format: JSONOutputFormat | None = None
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None  # accepted; no effect here


class ThinkingConfig(_Strict):
    type: Literal["enabled", "disabled", "adaptive", "between_tools"]
    budget_tokens: int | None = Field(default=None, ge=0)
    display: Literal["summarized", "omitted"] | None = None


class CountTokensRequest(_Strict):
    """What both endpoints read: the conversation and what shapes its prompt."""

    model: str = Field(min_length=1, max_length=512)
    messages: list[MessageParam] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    tools: list[ToolDefinition] | None = Field(default=None, max_length=128)
    tool_choice: ToolChoiceParam | None = None
    output_config: OutputConfig | None = None
    thinking: ThinkingConfig | None = None  # reasoning models think as their template says
    cache_control: CacheControl = None
    speed: Literal["standard", "fast"] | None = None


class MessagesRequest(CountTokensRequest):
    max_tokens: int = Field(ge=1)
    stream: bool = False
    stop_sequences: list[str] | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=1.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=0, le=1000)
    metadata: dict[str, Any] | None = None  # accepted (user_id); not used
    service_tier: Literal["auto", "standard_only"] | None = None
    inference_geo: str | None = None
    diagnostics: dict[str, Any] | None = None
    # extension, as on /v1/chat/completions: keep this conversation's KV state between turns
    session_id: str | None = Field(default=None, min_length=1, max_length=256)


# --- onto the internal types -------------------------------------------------------------------

def _refuse(block: _Other, where: str) -> InvalidRequestError:
    if block.type == "image":
        return unsupported(where, "is an image block: the models served here read text only")
    return unsupported(where, f"is a '{block.type}' block, which is not supported here")


def _text(parts: str | list[Any] | None, where: str) -> str:
    if parts is None or isinstance(parts, str):
        return parts or ""
    for j, part in enumerate(parts):
        if isinstance(part, _Other):
            raise _refuse(part, f"{where}[{j}]")
    return "".join(part.text for part in parts)


def chat_messages(body: CountTokensRequest) -> list[dict[str, Any]]:
    """The conversation as the chat template's message dicts (see the module docstring)."""
    out: list[dict[str, Any]] = []
    if body.system:
        out.append({"role": "system", "content": _text(body.system, "system")})
    names: dict[str, str] = {}  # tool_use id -> tool name, for the results' messages
    for i, message in enumerate(body.messages):
        where = f"messages[{i}].content"
        if isinstance(message.content, str):
            out.append({"role": message.role, "content": message.content})
        elif message.role == "assistant":
            out.append(_assistant(message.content, where, names))
        else:
            out.extend(_user(message.content, where, names))
    return out


def check_last_turn(body: CountTokensRequest) -> None:
    """A final assistant turn asks to continue it (a prefill): the chat templates render every
    assistant turn closed, so the answer would start a new turn instead. Refused, not misread."""
    if body.messages[-1].role == "assistant":
        raise unsupported("messages", "ends with an assistant turn: continuing a prefilled answer is not "
                                      "supported here; end with a user turn")


def _assistant(blocks: list[Any], where: str, names: dict[str, str]) -> dict[str, Any]:
    text, reasoning, calls = [], [], []
    for j, block in enumerate(blocks):
        if isinstance(block, TextBlock):
            text.append(block.text)
        elif isinstance(block, ThinkingBlock):
            reasoning.append(block.thinking)
        elif isinstance(block, ToolUseBlock):
            names[block.id] = block.name
            calls.append({"id": block.id, "type": "function",
                          "function": {"name": block.name, "arguments": json.dumps(block.input, ensure_ascii=False)}})
        elif isinstance(block, _Other):
            raise _refuse(block, f"{where}[{j}]")
        elif not isinstance(block, RedactedThinkingBlock):  # redacted thinking: nothing to show the model
            raise unsupported(f"{where}[{j}]", f"is a '{block.type}' block, which only user turns may hold")
    turn: dict[str, Any] = {"role": "assistant", "content": "".join(text)}
    if calls:
        turn["tool_calls"] = calls
    if reasoning:
        turn["reasoning_content"] = "".join(reasoning)
    return turn


def _user(blocks: list[Any], where: str, names: dict[str, str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    text: list[str] = []

    def flush() -> None:
        if text:
            out.append({"role": "user", "content": "".join(text)})
            text.clear()

    for j, block in enumerate(blocks):
        if isinstance(block, TextBlock):
            text.append(block.text)
        elif isinstance(block, ToolResultBlock):
            flush()
            result = _text(block.content, f"{where}[{j}].content")
            turn = {"role": "tool", "tool_call_id": block.tool_use_id,
                    "content": f"Error: {result}" if block.is_error else result}
            if block.tool_use_id in names:
                turn["name"] = names[block.tool_use_id]
            out.append(turn)
        elif isinstance(block, _Other):
            raise _refuse(block, f"{where}[{j}]")
        else:
            raise unsupported(f"{where}[{j}]", f"is a '{block.type}' block, which only assistant turns may hold")
    flush()
    if not out:  # an empty block list: still a (blank) user turn
        out.append({"role": "user", "content": ""})
    return out


def chat_options(body: CountTokensRequest) -> ChatOptions:
    """Tools, tool_choice and output_config.format, checked by the same code as on
    /v1/chat/completions (fail closed: a schema we could not enforce is a 400)."""
    tools = []
    for i, tool in enumerate(body.tools or ()):
        if isinstance(tool, _Other):
            raise unsupported(f"tools[{i}]", f"is a '{tool.type}' server tool, which is not supported here; "
                                             "define client tools with name, description and input_schema")
        tools.append({"name": tool.name, "description": tool.description or "", "parameters": tool.input_schema})
    parsed = parse_tools(tools)
    choice = body.tool_choice
    parallel = not getattr(choice, "disable_parallel_tool_use", None)  # Anthropic's default: parallel calls
    mode: Any = None
    if choice is not None and choice.type in ("any", "tool") and not parsed:
        raise unsupported("tool_choice", f"'{choice.type}' needs tools")
    if isinstance(choice, ToolChoiceTool):
        mode = {"type": "function", "function": {"name": choice.name}}
    elif choice is not None:
        mode = {"auto": "auto", "any": "required", "none": "none"}[choice.type]
    fmt = body.output_config.format if body.output_config is not None else None
    return ChatOptions(structured=StructuredOutput(fmt.schema_) if fmt is not None else None, tools=parsed,
                       tool_choice=parse_tool_choice(mode, parsed), parallel_tool_calls=parallel)


def generation_options(body: MessagesRequest) -> GenerationOptions:
    return GenerationOptions(max_tokens=body.max_tokens, temperature=body.temperature, top_p=body.top_p,
                             top_k=body.top_k, stop=tuple(body.stop_sequences or ()), session_id=body.session_id)


PARAM_NAMES = {"prompt": "messages", "stop": "stop_sequences"}  # our option names -> the body's, for errors
