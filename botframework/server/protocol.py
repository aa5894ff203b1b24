"""OpenAI request shapes (pydantic), only at the HTTP edge.

Unknown fields are rejected (extra="forbid"), so a client never silently loses an option;
fields we accept but cannot honour yet (echo, best_of, ...) are refused with a 400 naming
them by `check_supported`. Chat turns with tool calls live in chat_protocol.py. Limits that
depend on the settings or the model (max tokens cap, vocabulary size) are checked by
validation.py and runtime.requests.build_request.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from botframework.server.chat_protocol import ChatTurn, NamedToolChoice, ToolDefinition
from botframework.server.errors import unsupported

NonNegInt = Annotated[int, Field(ge=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None
    name: str | None = Field(default=None, max_length=256)
    refusal: str | None = None  # echoed back by some clients on assistant turns

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class StreamOptions(_Strict):
    include_usage: bool = False


class ResponseFormat(_Strict):
    """OpenAI's {"type": ...} forms, plus {"mode": "structured", "schema": {...}}; chat.structured
    turns any of them into one checked schema."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    type: Literal["text", "json_object", "json_schema"] | None = None
    json_schema: dict[str, Any] | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    mode: Literal["structured"] | None = None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)


Priority = Literal["interactive", "completion", "batch"]
# names of logits processors registered at start (serve --processor NAME=MODULE:ATTR), in order
ProcessorNames = Annotated[list[Annotated[str, Field(min_length=1, max_length=64)]], Field(max_length=16)]


class _Sampling(_Strict):
    """Fields chat and completions share, OpenAI's plus our documented extensions."""

    model: str = Field(min_length=1, max_length=512)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1, le=128)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=-1, le=2**32 - 2)  # -1: random (llama.cpp convention)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    logit_bias: dict[str, Annotated[float, Field(ge=-100.0, le=100.0)]] | None = None
    user: str | None = Field(default=None, max_length=512)  # accepted as metadata; not used
    # extensions (llama.cpp / botframework)
    top_k: int | None = Field(default=None, ge=0, le=1000)
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    repeat_penalty: float | None = Field(default=None, gt=0.0, le=10.0)
    session_id: str | None = Field(default=None, min_length=1, max_length=256)
    priority: Priority = "interactive"
    ignore_eos: bool = False  # keep generating past end-of-generation tokens (benchmarks)
    context_shift: bool = False  # at the context limit, drop old tokens and keep generating
    n_keep: int = Field(default=0, ge=0)  # tokens a context shift never drops
    speculative: bool | None = None  # n-gram draft tokens for this request; None: the server's --draft

    def check_supported(self) -> None:
        if self.n > 1 and self.session_id is not None:
            raise unsupported("n", "must be 1 with session_id: a session holds one conversation")
        if self.stream_options is not None and not self.stream:
            raise unsupported("stream_options", "is only allowed when stream is true")


class ChatCompletionRequest(_Sampling):
    messages: list[ChatTurn] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    response_format: ResponseFormat | None = None
    tools: list[ToolDefinition] | None = Field(default=None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None  # default false, as llama.cpp's server
    grammar: str | None = Field(default=None, max_length=1 << 20)  # extension: raw GBNF, for experts
    overflow: Literal["error", "truncate"] = "error"  # what to do when the chat is too long
    # the original spec's structured form at the top level: {"mode": "structured", "schema": {...}}
    mode: Literal["structured"] | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    logits_processors: ProcessorNames | None = None  # extension: processors the server registered

    def check_supported(self) -> None:
        super().check_supported()
        if self.max_tokens is not None and self.max_completion_tokens is not None:
            raise unsupported("max_completion_tokens", "cannot be combined with max_tokens")
        if self.top_logprobs is not None and not self.logprobs:
            raise unsupported("top_logprobs", "requires logprobs to be true")
        if (self.mode is None) != (self.schema_ is None):
            raise unsupported("mode" if self.mode is None else "schema",
                              "is needed: the structured form is {\"mode\": \"structured\", \"schema\": {...}}")
        if self.mode is not None and self.response_format is not None:
            raise unsupported("response_format", "cannot be combined with mode and schema (the same thing twice)")

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    @property
    def num_logprobs(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None


class CompletionRequest(_Sampling):
    prompt: str | list[str] | list[int]
    logprobs: int | None = Field(default=None, ge=0, le=20)
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = Field(default=None, ge=1)
    logits_processors: ProcessorNames | None = None  # extension: processors the server registered

    def check_supported(self) -> None:
        super().check_supported()
        if self.echo:
            raise unsupported("echo")
        if self.best_of not in (None, 1):
            raise unsupported("best_of", "must be 1: several candidates per request are not supported yet")
        if isinstance(self.prompt, list) and self.prompt and isinstance(self.prompt[0], str) \
                and len(self.prompt) != 1:
            raise unsupported("prompt", "must be one prompt: batches of prompts are not supported yet")

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_tokens

    @property
    def num_logprobs(self) -> int | None:
        return self.logprobs


class InfillChunk(_Strict):
    """One piece of repo-level context before the prefix (llama.vscode and llama.vim send them)."""

    filename: str = Field(default="", max_length=4096)
    text: str = ""
    time: float | None = None  # when the editor picked the chunk; not used


# llama.cpp's sampler names (and one-letter codes) -> ours; None: llama.cpp has it, we do not
INFILL_SAMPLERS: dict[str, str | None] = {
    "top_k": "top_k", "k": "top_k", "top_p": "top_p", "p": "top_p", "min_p": "min_p", "m": "min_p",
    "temperature": "temperature", "temp": "temperature", "t": "temperature", "penalties": "penalties", "e": "penalties",
    "dry": None, "d": None, "typ_p": None, "typical_p": None, "typical": None, "y": None, "xtc": None, "x": None,
    "infill": None, "i": None, "top_n_sigma": None, "s": None,
}


class InfillRequest(_Sampling):
    """llama.cpp-compatible /infill: fill in code between a prefix and a suffix, with the
    fields llama.vscode and llama.vim send (see routes/infill.py for what each one does)."""

    model: str = Field(default="", max_length=512)  # optional here, as in llama-server
    input_prefix: str = ""
    input_suffix: str = ""
    input_extra: list[InfillChunk] = Field(default_factory=list, max_length=256)
    prompt: str = ""  # appended to the prefix (text typed since the last request)
    n_predict: int | None = Field(default=None, ge=-1)  # -1: what fits; 0: only fill the prompt cache
    n_indent: int = Field(default=0, ge=0, le=4096)     # stop at a new line indented less than this
    t_max_predict_ms: int | None = Field(default=None, ge=-1)  # stop after this long, once a line is done
    t_max_prompt_ms: int | None = Field(default=None, ge=-1)   # accepted; a prompt is always prefilled whole
    samplers: list[str] | str | None = None             # llama.cpp's names or letters; ours honoured
    cache_prompt: bool = True                           # accepted; prompt prefixes are always reused
    lora: list[dict[str, Any]] | None = None

    def check_supported(self) -> None:
        super().check_supported()
        if self.n != 1:
            raise unsupported("n", "must be 1 for /infill")
        if self.lora:
            raise unsupported("lora", "is not supported: this server loads no LoRA adapters")
        if self.max_tokens is not None and self.n_predict is not None:
            raise unsupported("n_predict", "cannot be combined with max_tokens")
        unknown = [name for name in self.sampler_names if name not in INFILL_SAMPLERS]
        if unknown:
            raise unsupported("samplers", f"has unknown sampler {unknown[0]!r} (known: "
                                          f"{', '.join(sorted(k for k in INFILL_SAMPLERS if len(k) > 1))})")

    @property
    def sampler_names(self) -> list[str]:
        if self.samplers is None:
            return []
        return list(self.samplers) if isinstance(self.samplers, str) else self.samplers

    @property
    def requested_max_tokens(self) -> int | None:
        if self.max_tokens is not None:
            return self.max_tokens
        if self.n_predict is None or self.n_predict < 0:
            return None
        return max(1, self.n_predict)  # 0: one token, not returned: the prompt is prefilled and cached

    @property
    def num_logprobs(self) -> int | None:
        return None


class EmbeddingRequest(_Strict):
    model: str = Field(min_length=1, max_length=512)
    # OpenAI's four forms: a text, texts, one input as token ids, or inputs as token ids
    input: str | list[str] | list[NonNegInt] | list[list[NonNegInt]]
    encoding_format: Literal["float", "base64"] = "float"
    # the first `dimensions` components, re-normalised (what text-embedding-3 does); at most the model's size
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None


class TokenizeRequest(_Strict):
    content: str
    model: str | None = None  # extension: which served model's vocabulary (default: the first declared)
    add_special: bool = False
    parse_special: bool = False
    with_pieces: bool = False


class DetokenizeRequest(_Strict):
    tokens: list[NonNegInt]
    model: str | None = None
