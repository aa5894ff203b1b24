"""OpenAI Responses request shapes (pydantic), only at the HTTP edge.

    POST /v1/responses body --ResponsesRequest--> checked fields; check_supported() refuses,
        naming them, the fields we know but cannot honour (background, conversation, prompt,
        built-in tools, ...). Unknown top-level fields are refused (extra="forbid") as on chat.
    input items and content parts: tagged by "type" (a message may omit it); a type we do not
        handle validates as Other* and is refused by the conversion with a 400 naming it, so
        the OpenAPI document stays small and the error says what is unsupported.

Items and parts ignore fields they do not use (ids, status, annotations, phase): clients send
earlier output items back as they got them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from botframework.server.errors import unsupported

_DEFAULT_TAG = "other"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Other(BaseModel):
    """A part, item, tool or tool choice of a type this server does not handle."""

    model_config = ConfigDict(extra="allow")
    type: str = Field(max_length=128)


def _by_type(known: tuple[str, ...], missing: str = _DEFAULT_TAG) -> Discriminator:
    """Tag a union member by its "type" (`missing` when absent; "other" when unknown)."""
    def tag(value: Any) -> str:
        kind = value.get("type", missing) if isinstance(value, dict) else getattr(value, "type", missing)
        return kind if kind in known else _DEFAULT_TAG

    return Discriminator(tag)


# -- content parts ---------------------------------------------------------------------------

class TextPart(_Lenient):
    type: Literal["input_text", "output_text", "reasoning_text", "summary_text"]
    text: str


class RefusalPart(_Lenient):
    type: Literal["refusal"]
    refusal: str


ContentPart = Annotated[
    Annotated[TextPart, Tag("input_text")] | Annotated[TextPart, Tag("output_text")]
    | Annotated[TextPart, Tag("reasoning_text")] | Annotated[TextPart, Tag("summary_text")]
    | Annotated[RefusalPart, Tag("refusal")] | Annotated[_Other, Tag(_DEFAULT_TAG)],
    _by_type(("input_text", "output_text", "reasoning_text", "summary_text", "refusal"))]


# -- input items -----------------------------------------------------------------------------

class MessageItem(_Lenient):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[ContentPart]


class FunctionCallItem(_Lenient):
    type: Literal["function_call"]
    call_id: str = Field(min_length=1, max_length=256)
    name: str = Field(min_length=1, max_length=256)
    arguments: str


class FunctionCallOutputItem(_Lenient):
    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1, max_length=256)
    output: str | list[ContentPart]


class ReasoningItem(_Lenient):
    type: Literal["reasoning"]
    summary: list[ContentPart] = Field(default_factory=list)
    content: list[ContentPart] | None = None


InputItem = Annotated[
    Annotated[MessageItem, Tag("message")] | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")]
    | Annotated[ReasoningItem, Tag("reasoning")] | Annotated[_Other, Tag(_DEFAULT_TAG)],
    _by_type(("message", "function_call", "function_call_output", "reasoning"), missing="message")]


# -- tools, formats, options -----------------------------------------------------------------

class FunctionTool(_Strict):
    type: Literal["function"]
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None  # always enforced here; echoed back


Tool = Annotated[Annotated[FunctionTool, Tag("function")] | Annotated[_Other, Tag(_DEFAULT_TAG)],
                 _by_type(("function",))]


class FunctionChoice(_Strict):
    type: Literal["function"]
    name: str = Field(min_length=1, max_length=64)


class AllowedToolsChoice(_Strict):
    type: Literal["allowed_tools"]
    mode: Literal["auto", "required"]
    tools: list[FunctionChoice] = Field(min_length=1, max_length=128)


ToolChoiceObject = Annotated[
    Annotated[FunctionChoice, Tag("function")] | Annotated[AllowedToolsChoice, Tag("allowed_tools")]
    | Annotated[_Other, Tag(_DEFAULT_TAG)],
    _by_type(("function", "allowed_tools"))]


class TextFormat(_Strict):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    type: Literal["text", "json_object", "json_schema"]
    name: str | None = Field(default=None, max_length=64)
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    description: str | None = None
    strict: bool | None = None  # always enforced here; echoed back

    def to_json(self) -> dict[str, Any]:
        out = self.model_dump(by_alias=True, exclude_none=True)
        if self.type == "json_schema" and self.name is None:
            out["name"] = "response"  # optional here; a Response always names its format
        return out


class TextConfig(_Strict):
    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class ReasoningConfig(_Strict):
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None
    generate_summary: Literal["auto", "concise", "detailed"] | None = None  # the older name of summary


class StreamOptions(_Strict):
    include_obfuscation: bool | None = None  # no obfuscation field is sent: accepted, nothing to turn off


# include values that change nothing here: there are no encrypted reasoning items (reasoning
# comes back as text) and no built-in tool calls or image inputs whose details could be added
Includable = Literal["reasoning.encrypted_content", "message.output_text.logprobs", "file_search_call.results",
                     "web_search_call.results", "web_search_call.action.sources", "message.input_image.image_url",
                     "computer_call_output.output.image_url", "code_interpreter_call.outputs"]


class ResponsesRequest(_Strict):
    model: str = Field(min_length=1, max_length=512)
    input: list[InputItem] | str | None = None  # the list first: its errors are the ones reported
    instructions: str | None = None
    previous_response_id: str | None = Field(default=None, max_length=256)
    store: bool | None = None                     # None: true, as OpenAI
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    text: TextConfig | None = None
    tools: list[Tool] | None = Field(default=None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | ToolChoiceObject | None = None
    parallel_tool_calls: bool | None = None       # None: true, as OpenAI
    reasoning: ReasoningConfig | None = None
    truncation: Literal["auto", "disabled"] | None = None  # auto: drop the oldest turns that do not fit
    include: list[Includable] | None = Field(default=None, max_length=16)
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    service_tier: Literal["auto", "default", "flex", "priority", "scale"] | None = None  # flex: batch priority
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = Field(default=None, max_length=16)
    user: str | None = Field(default=None, max_length=512)                # accepted as metadata; not used
    safety_identifier: str | None = Field(default=None, max_length=512)   # accepted as metadata; not used
    prompt_cache_key: str | None = Field(default=None, max_length=512)    # prefixes are cached automatically
    prompt_cache_retention: Literal["in_memory", "24h"] | None = None     # the KV cache's own budgets apply
    # known, refused with a 400 naming them when given (check_supported)
    background: bool | None = None
    conversation: str | dict[str, Any] | None = None
    prompt: dict[str, Any] | None = None
    max_tool_calls: int | None = None
    # extensions, as on /v1/chat/completions
    seed: int | None = Field(default=None, ge=-1, le=2**32 - 2)
    top_k: int | None = Field(default=None, ge=0, le=1000)
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    stop: str | list[str] | None = None
    ignore_eos: bool = False

    def check_supported(self) -> None:
        if self.input is None or self.input == [] or self.input == "":
            raise unsupported("input", "is required: a string or a list of input items")
        if self.background:
            raise unsupported("background", "is not supported: responses run while their request is open "
                                            "(stream them, and cancel with POST /v1/responses/{id}/cancel)")
        if self.conversation is not None:
            raise unsupported("conversation", "is not supported: chain turns with previous_response_id")
        if self.prompt is not None:
            raise unsupported("prompt", "is not supported: this server has no stored prompt templates")
        if self.max_tool_calls is not None:
            raise unsupported("max_tool_calls", "is not supported: this server runs no built-in tools "
                                                "(use parallel_tool_calls=false for one call per turn)")
        if self.include and "message.output_text.logprobs" in self.include:
            raise unsupported("include", "'message.output_text.logprobs' is not supported yet")
        if self.top_logprobs:
            raise unsupported("top_logprobs", "is not supported yet")
        if self.text is not None and self.text.verbosity not in (None, "medium"):
            raise unsupported("text.verbosity", "must be 'medium': the model's answers are not tuned by length")
        if self.stream_options is not None and not self.stream:
            raise unsupported("stream_options", "is only allowed when stream is true")
        for i, tool in enumerate(self.tools or ()):
            if not isinstance(tool, FunctionTool):
                raise unsupported(f"tools[{i}].type", f"'{tool.type}' is not supported: this server runs no "
                                                      "built-in tools; only 'function' tools")
        if isinstance(self.tool_choice, _Other):
            raise unsupported("tool_choice", f"type '{self.tool_choice.type}' is not supported: only 'none', "
                                             "'auto', 'required', a function or allowed_tools")

    @property
    def stored(self) -> bool:
        return self.store is not False

    @property
    def function_tools(self) -> list[FunctionTool]:
        return [tool for tool in self.tools or () if isinstance(tool, FunctionTool)]
