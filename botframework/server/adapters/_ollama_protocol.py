"""Ollama's request shapes (pydantic, HTTP edge only) and their mapping onto the internal types.

    raw body --parse_body--> ChatBody | GenerateBody | EmbedBody | ... (400 {"error"} if malformed)
    options --generation_options--> runtime.requests.GenerationOptions (the same builder the
            OpenAI routes use; unsupported options that would change the output are refused)
    format ("json" | schema) --structured_format--> chat.structured.StructuredOutput
    messages --template_messages--> the message dicts ChatTemplates.apply reads
    keep_alive ("5m", seconds, -1, 0) --keep_alive_seconds--> the registry's seconds (-1: forever)

Unknown top-level fields are ignored, as Ollama ignores them; unknown option keys are ignored
(and logged), as Ollama's Options.FromMap does. Ollama's names (num_predict, options.stop ...)
are used in error messages.
"""

from __future__ import annotations

import json
import logging
import math
import re
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, ValidationError

from botframework.chat.structured import StructuredOutput, structured_output
from botframework.errors import InvalidRequestError
from botframework.runtime.registry import KEEP_FOREVER
from botframework.runtime.requests import GenerationOptions
from botframework.server.errors import unsupported

log = logging.getLogger("botframework.server")

LATEST = ":latest"  # Ollama's default tag: clients add it to untagged names
Think = bool | Literal["low", "medium", "high", "max"]
KeepAlive = StrictInt | StrictFloat | StrictStr | None  # seconds or a duration string; not a bool
MAX_KEEP_ALIVE_S = 2**63 / 1e9  # Go's largest duration (~292 years): longer is forever


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


class Options(BaseModel):
    """`options`. Honoured: the sampling fields below. Accepted and ignored because they only
    concern how Ollama loads a model (this server loads each model once, as configured):
    numa, num_batch, num_gpu, main_gpu, low_vram, f16_kv, logits_all, vocab_only, use_mmap,
    use_mlock, embedding_only, num_thread; and penalize_newline (Ollama ignores it too)."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    num_predict: int | None = None   # max tokens; -1 / -2 / 0: until the context (or the server's cap)
    num_ctx: int | None = None       # see context_room
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    typical_p: float | None = None   # 1.0 only (off)
    repeat_penalty: float | None = Field(default=None, gt=0.0, le=10.0)  # the bounds /v1 has
    repeat_last_n: int | None = None # 64 only: the window the penalties use here
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    seed: int | None = None          # negative: random
    stop: str | list[str] | None = None
    num_keep: int | None = None      # tokens a context shift keeps: generation stops at the context instead
    mirostat: int | None = None      # 0 only: mirostat sampling is not implemented
    mirostat_tau: float | None = None  # ignored with mirostat 0
    mirostat_eta: float | None = None
    tfs_z: float | None = None       # 1.0 only: llama.cpp removed tail-free sampling
    penalize_newline: bool | None = None
    numa: Any = None
    num_batch: Any = None
    num_gpu: Any = None
    main_gpu: Any = None
    low_vram: Any = None
    f16_kv: Any = None
    logits_all: Any = None
    vocab_only: Any = None
    use_mmap: Any = None
    use_mlock: Any = None
    embedding_only: Any = None
    num_thread: Any = None


class ToolCallFunction(_Lenient):
    name: str = Field(min_length=1, max_length=256)
    arguments: dict[str, Any] | str = Field(default_factory=dict)  # an object; a JSON string is accepted too
    index: int | None = None


class ToolCall(_Lenient):
    id: str | None = Field(default=None, max_length=256)
    function: ToolCallFunction


class Message(_Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | None = ""
    images: list[str] | None = None
    thinking: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_name: str | None = Field(default=None, max_length=256)
    tool_call_id: str | None = Field(default=None, max_length=256)


class _Generation(_Lenient):
    """What /api/chat and /api/generate share."""

    model: str = Field(default="", max_length=512)
    format: str | dict[str, Any] | None = None
    options: Options | None = None
    stream: bool = True
    keep_alive: KeepAlive = None
    think: Think | None = None
    truncate: bool | None = None   # chat: drop the oldest turns when the prompt is too long (default true)
    shift: bool | None = None      # accepted: generation stops at the context ("length") instead of shifting
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)


class ChatBody(_Generation):
    messages: list[Message] = Field(default_factory=list)
    tools: list[dict[str, Any]] | None = Field(default=None, max_length=128)


class GenerateBody(_Generation):
    prompt: str = ""
    suffix: str | None = None
    system: str | None = None
    template: str | None = None
    context: list[int] | None = None  # deprecated in Ollama: token ids of an earlier answer, prepended
    raw: bool = False
    images: list[str] | None = None


class EmbedBody(_Lenient):
    model: str = Field(default="", max_length=512)
    input: str | list[str] | None = None
    truncate: bool | None = None   # inputs longer than the model's context are refused (not truncated)
    dimensions: int | None = Field(default=None, ge=0)
    options: Options | None = None
    keep_alive: KeepAlive = None


class EmbeddingsBody(_Lenient):
    model: str = Field(default="", max_length=512)
    prompt: str = ""
    options: Options | None = None
    keep_alive: KeepAlive = None


class ModelBody(_Lenient):
    """/api/show and /api/pull: `model`, or the older `name`."""

    model: str = Field(default="", max_length=512)
    name: str = Field(default="", max_length=512)
    stream: bool = True
    verbose: bool = False
    insecure: bool | None = None  # accepted: pulls use pip's and Hugging Face's own settings

    @property
    def model_name(self) -> str:
        return self.model or self.name


B = TypeVar("B", bound=BaseModel)


def parse_body(raw: bytes, kind: type[B]) -> B:
    """The JSON body as `kind`, or an InvalidRequestError (400) saying what is wrong with it."""
    if not raw.strip():
        raise InvalidRequestError("missing request body")
    try:
        data = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, NaN, nesting
        raise InvalidRequestError(f"invalid JSON in the request body: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequestError("the request body must be a JSON object")
    try:
        return kind.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"] if not _union_member(p))
        raise InvalidRequestError(f"invalid value for '{where}': {first['msg']}" if where else first["msg"],
                                  param=where or None) from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _union_member(part: Any) -> bool:
    # pydantic names the union member it tried (str, dict[str,any], literal[...]) in the location
    return isinstance(part, str) and (part in ("str", "int", "float", "bool") or "[" in part)


def require_model(name: str) -> str:
    if not name:
        raise InvalidRequestError("model is required", param="model")
    return name


def display_name(model_id: str) -> str:
    """The name Ollama clients see: `id:latest` (Open WebUI adds the tag to untagged names)."""
    return model_id if ":" in model_id.rsplit("/", 1)[-1] else model_id + LATEST


def name_candidates(name: str) -> list[str]:
    """A requested name as is, then without the :latest tag."""
    return [name, name[: -len(LATEST)]] if name.endswith(LATEST) and len(name) > len(LATEST) else [name]


def timestamp(at: float | None = None) -> str:
    when = datetime.now(UTC) if at is None else datetime.fromtimestamp(at, UTC)
    return when.isoformat(timespec="microseconds")


# Go's time.ParseDuration units, which Ollama parses keep_alive strings with
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def keep_alive_seconds(value: KeepAlive) -> float | None:
    """keep_alive as the registry's seconds: None (not given), -1 (negative: forever), or >= 0."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)  # "300" and "-1": seconds, as a number would be
        except ValueError:
            seconds = _duration(text)
    else:
        seconds = float(value)
    if math.isnan(seconds):
        raise InvalidRequestError("keep_alive must be a duration", param="keep_alive")
    return KEEP_FOREVER if seconds < 0 or seconds >= MAX_KEEP_ALIVE_S else seconds


def _duration(text: str) -> float:
    sign, body = (-1.0, text[1:]) if text.startswith("-") else (1.0, text.removeprefix("+"))
    parts = _DURATION_PART.findall(body)
    if not body or "".join(number + unit for number, unit in parts) != body:
        raise InvalidRequestError(f"keep_alive {text!r} is not a duration (like \"5m\", \"1h30m\" or a number "
                                  "of seconds)", param="keep_alive")
    return sign * sum(float(number) * _UNIT_S[unit] for number, unit in parts)


# GenerationOptions field -> Ollama's name for it, in errors
PARAM_NAMES = {"max_tokens": "options.num_predict", "stop": "options.stop", "seed": "options.seed",
               "prompt": "prompt", "num_logprobs": "top_logprobs",
               **{name: f"options.{name}" for name in ("temperature", "top_k", "top_p", "min_p", "repeat_penalty",
                                                       "presence_penalty", "frequency_penalty")}}


# options accepted only at the value this server always uses: (name, that value, why)
_FIXED = (("tfs_z", 1.0, "llama.cpp removed tail-free sampling"),
          ("typical_p", 1.0, "locally typical sampling is not offered"),
          ("repeat_last_n", 64, "the penalties always look back 64 tokens"))


def generation_options(options: Options | None, *, logprobs: bool = False,
                       top_logprobs: int | None = None) -> GenerationOptions:
    """`options` as the internal GenerationOptions; None fields take the server's defaults."""
    opts = options or Options()
    if opts.mirostat:
        raise unsupported("options.mirostat", "is not supported: mirostat sampling is not implemented (use 0)")
    for name, neutral, why in _FIXED:
        value = getattr(opts, name)
        if value is not None and value != neutral:
            raise unsupported(f"options.{name}", f"is not supported: {why} (use {neutral})")
    extra = sorted(opts.model_extra or ())
    if extra:
        log.info("ignoring unknown Ollama options: %s", ", ".join(extra))
    num_predict = opts.num_predict if opts.num_predict is not None and opts.num_predict > 0 else None
    return GenerationOptions(
        max_tokens=num_predict, temperature=opts.temperature, top_p=opts.top_p, top_k=opts.top_k,
        min_p=opts.min_p, repeat_penalty=opts.repeat_penalty, presence_penalty=opts.presence_penalty,
        frequency_penalty=opts.frequency_penalty,
        seed=opts.seed if opts.seed is not None and opts.seed >= 0 else None, stop=opts.stop or (),
        num_logprobs=(top_logprobs or 0) if logprobs else None)


def context_room(options: Options | None, num_prompt_tokens: int, n_ctx: int) -> int | None:
    """num_ctx: a model's context is fixed when it loads (--ctx-size, or n_ctx in its [[models]]
    table). A num_ctx at or above it changes nothing; a smaller one bounds prompt + answer: the
    answer gets at most num_ctx - prompt tokens (when the prompt fits in num_ctx; a longer one
    runs in the loaded context). None: no bound beyond the loaded context."""
    num_ctx = options.num_ctx if options is not None else None
    if num_ctx is None or num_ctx >= n_ctx or num_ctx - num_prompt_tokens < 1:
        return None
    return num_ctx - num_prompt_tokens


def structured_format(value: str | dict[str, Any] | None) -> StructuredOutput | None:
    """`format`: "json" (any JSON object) or a JSON schema, enforced by the grammar as
    response_format is; "" or None: free text."""
    if value is None or value == "":
        return None
    if value == "json":
        return structured_output({"type": "json_object"})
    if isinstance(value, dict):
        return structured_output({"type": "json_schema", "json_schema": {"name": "format", "schema": value}})
    raise InvalidRequestError('format must be "json" or a JSON schema object', param="format")


def thinking_wanted(think: Think | None) -> bool:
    return think is not None and think is not False


def template_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """Ollama messages as the chat template's (OpenAI-shaped) message dicts."""
    return [_template_message(i, m) for i, m in enumerate(messages)]


def _template_message(i: int, message: Message) -> dict[str, Any]:
    if message.images:
        raise no_images(f"messages.{i}.images")
    out: dict[str, Any] = {"role": message.role, "content": message.content or ""}
    if message.thinking:
        out["reasoning_content"] = message.thinking
    if message.tool_calls:
        out["tool_calls"] = [
            {"id": call.id or "", "type": "function",
             "function": {"name": call.function.name, "arguments": call.function.arguments
                          if isinstance(call.function.arguments, str) else json.dumps(call.function.arguments)}}
            for call in message.tool_calls]
    if message.role == "tool":
        if message.tool_name:
            out["name"] = message.tool_name
        if message.tool_call_id:
            out["tool_call_id"] = message.tool_call_id
    return out


def no_images(param: str) -> InvalidRequestError:
    return unsupported(param, "are not supported: this server serves text models (no image input)")


def tool_call_json(call_id: str, name: str, arguments: str, index: int) -> dict[str, Any]:
    """A finished call in Ollama's shape: its arguments as an object."""
    try:
        parsed = json.loads(arguments or "{}")
    except json.JSONDecodeError:  # finished calls were validated against the tool's schema: not expected
        parsed = {}
    return {"id": call_id, "function": {"index": index, "name": name,
                                        "arguments": parsed if isinstance(parsed, dict) else {"value": parsed}}}
