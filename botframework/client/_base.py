"""What Client and AsyncClient share: where the server is, how a call becomes a request body,
how an answer becomes LocalLLM's result types, and the one mapping from HTTP errors to the
package's exceptions. No I/O here; sync.py and aio.py send.

    LocalLLM-style call --chat_body / completion_body--> JSON body (+ StructuredOutput to check)
    server JSON --chat_result / completion_result--> GenerationResult (or the structured value)
    SSE line --sse_data--> chunk dict --chat_pieces / completion_pieces--> MessageDelta / str
    error status + body --api_error--> BusyError, ModelNotFoundError, AuthenticationError, ...
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import quote, urlsplit

from botframework.chat.message import AssistantMessage, MessageDelta, ToolCall, ToolCallDelta
from botframework.chat.structured import StructuredOutput, structured_output
from botframework.errors import (
    APIStatusError,
    AuthenticationError,
    BotframeworkError,
    BusyError,
    CancelledError,
    ContextLengthExceededError,
    GrammarError,
    InvalidRequestError,
    ModelLoadError,
    ModelNotFoundError,
    OutputValidationError,
    ServerUnavailableError,
    UnsupportedSchemaError,
)
from botframework.scheduler.output import Usage

T = TypeVar("T")
DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV = "BOTFRAMEWORK_URL"
API_KEY_ENV = "BOTFRAMEWORK_API_KEY"
MAX_RETRY_WAIT_S = 30.0

# LocalLLM's generation keywords -> the server's JSON names (logprobs is mapped per endpoint)
_OPTIONS = {"max_tokens", "temperature", "top_p", "top_k", "min_p", "repeat_penalty", "presence_penalty",
            "frequency_penalty", "seed", "stop", "logit_bias", "ignore_eos", "session_id", "priority",
            "context_shift", "num_keep", "logprobs", "speculative"}
_RENAMED = {"num_keep": "n_keep"}


def server_url(base_url: str | None) -> str:
    """The server's root URL: the argument, else $BOTFRAMEWORK_URL, else 127.0.0.1:8000; a
    trailing /v1 (OpenAI clients' base_url) is accepted and dropped."""
    url = (base_url or os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/")
    if url.endswith("/v1"):
        url = url[:-3]
    if "://" not in url:
        url = "http://" + url
    return url


def model_spec(model: str | os.PathLike[str] | None) -> str | None:
    """A model as the server's load endpoint takes it: a name as is; a local .gguf path made
    absolute (the server checks it lies inside its configured folders)."""
    if model is None:
        return None
    spec = os.fspath(model)
    if spec.endswith(".gguf") and not spec.startswith("hf:"):
        return str(Path(spec).expanduser().absolute())
    return spec


def load_path(spec: str) -> str:
    return f"/v1/models/{quote(spec, safe='/:@')}/load"


def generation_fields(options: Mapping[str, Any], *, chat: bool) -> dict[str, Any]:
    """LocalLLM's keyword options as request fields; an unknown keyword is a TypeError, as in-process."""
    unknown = sorted(set(options) - _OPTIONS)
    if unknown:
        raise TypeError(f"unexpected keyword argument(s): {', '.join(unknown)}")
    out: dict[str, Any] = {}
    for name, value in options.items():
        if value is None:
            continue
        if name == "logprobs":
            if chat:
                out["logprobs"] = True
                out["top_logprobs"] = int(value)
            else:
                out["logprobs"] = int(value)
            continue
        if name == "priority":
            value = getattr(value, "value", value)
        if name == "logit_bias":
            value = {str(token): bias for token, bias in value.items()}
        if name == "stop" and not isinstance(value, str):
            value = list(value)
        out[_RENAMED.get(name, name)] = value
    return out


def chat_body(model: str, messages: Any, *, system: str | None = None, schema: Any = None,
              response_format: Any = None, grammar: str | None = None, tools: Sequence[Any] | None = None,
              tool_choice: Any = None, parallel_tool_calls: bool = False, overflow: str = "error",
              stream: bool = False, options: Mapping[str, Any]) -> tuple[dict[str, Any], StructuredOutput | None]:
    """A /v1/chat/completions body from LocalLLM.chat's arguments, and the structured output the
    answer must be checked against (the server enforces it; the client parses and validates)."""
    if schema is not None and response_format is not None:
        raise InvalidRequestError("give schema or response_format, not both", param="schema")
    if response_format is not None:
        structured = structured_output(response_format)
    elif schema is None or isinstance(schema, (type, StructuredOutput)):
        structured = structured_output(schema)
    else:
        structured = structured_output({"type": "json_schema", "json_schema": {"schema": schema}})
    msgs = [{"role": "user", "content": messages}] if isinstance(messages, str) else [dict(m) for m in messages]
    if system is not None:
        msgs.insert(0, {"role": "system", "content": system})
    body: dict[str, Any] = {"model": model, "messages": msgs, **generation_fields(options, chat=True)}
    if structured is not None:
        body["response_format"] = {"type": "json_schema", "json_schema": {
            "name": structured.name, "schema": dict(structured.schema), "strict": True}}
    if grammar is not None:
        body["grammar"] = grammar
    if tools:
        body["tools"] = [_tool(tool) for tool in tools]
        if parallel_tool_calls:
            body["parallel_tool_calls"] = True
    if tool_choice is not None:
        body["tool_choice"] = tool_choice
    if overflow != "error":
        body["overflow"] = overflow
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body, structured


def _tool(tool: Any) -> Any:
    """An OpenAI tool definition; a bare function spec ({"name", "parameters"}) is wrapped."""
    if isinstance(tool, Mapping) and "type" not in tool and "name" in tool:
        return {"type": "function", "function": dict(tool)}
    return tool


def completion_body(model: str, prompt: str, *, suffix: str | None = None, stream: bool = False,
                    options: Mapping[str, Any]) -> dict[str, Any]:
    if not prompt and not suffix:
        raise InvalidRequestError("prompt must not be empty", param="prompt")
    body: dict[str, Any] = {"model": model, "prompt": prompt, **generation_fields(options, chat=False)}
    if suffix is not None:
        body["suffix"] = suffix
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def embed_body(model: str, texts: str | Sequence[str], dimensions: int | None) -> dict[str, Any]:
    items = [texts] if isinstance(texts, str) else list(texts)
    if not items:
        raise InvalidRequestError("input must not be empty", param="input")
    body: dict[str, Any] = {"model": model, "input": items}
    if dimensions is not None:
        body["dimensions"] = dimensions
    return body


def embeddings(data: Mapping[str, Any]) -> list[list[float]]:
    return [item["embedding"] for item in sorted(data["data"], key=lambda item: item["index"])]


# -- answers -----------------------------------------------------------------------------------

def usage_of(data: Mapping[str, Any] | None) -> Usage:
    data = data or {}
    details = data.get("prompt_tokens_details") or {}
    drafts = data.get("completion_tokens_details") or {}  # a request that drafted (speculative decoding)
    accepted = int(drafts.get("accepted_prediction_tokens", 0) or 0)
    return Usage(prompt_tokens=int(data.get("prompt_tokens", 0)),
                 completion_tokens=int(data.get("completion_tokens", 0)),
                 cached_tokens=int(details.get("cached_tokens", 0) or 0),
                 draft_tokens=accepted + int(drafts.get("rejected_prediction_tokens", 0) or 0),
                 accepted_draft_tokens=accepted)


def _message(data: Mapping[str, Any]) -> AssistantMessage:
    calls = tuple(ToolCall(name=call["function"]["name"], arguments=call["function"].get("arguments") or "",
                           id=call.get("id") or "")
                  for call in data.get("tool_calls") or ())
    return AssistantMessage(content=data.get("content"), reasoning_content=data.get("reasoning_content"),
                            tool_calls=calls)


def chat_result(data: Mapping[str, Any], structured: StructuredOutput | None) -> Any:
    """LocalLLM.chat's return value from a chat.completion: a GenerationResult, or with a
    schema the validated value (a pydantic instance for a model class)."""
    from botframework.api import GenerationResult

    choice = data["choices"][0]
    message = _message(choice["message"])
    finish_reason = choice.get("finish_reason") or "stop"
    if structured is not None:
        return parse_structured(structured, message.content or "", finish_reason)
    return GenerationResult(text=message.content or "", finish_reason=finish_reason, usage=usage_of(data.get("usage")),
                            timings=dict(data.get("timings") or {}), message=message, id=data.get("id", ""))


def parse_structured(structured: StructuredOutput, text: str, finish_reason: str) -> Any:
    if finish_reason != "stop":
        raise OutputValidationError(f"the answer was cut off ({finish_reason}) before the JSON was complete: "
                                    "raise max_tokens", output=text)
    return structured.parse(text)


def completion_result(data: Mapping[str, Any]) -> Any:
    from botframework.api import GenerationResult

    choice = data["choices"][0]
    return GenerationResult(text=choice.get("text") or "", finish_reason=choice.get("finish_reason") or "stop",
                            usage=usage_of(data.get("usage")), timings=dict(data.get("timings") or {}),
                            id=data.get("id", ""))


def sse_data(line: str) -> Any:
    """One SSE line -> its JSON (None for other lines, and for the end marker: see is_done)."""
    if not line.startswith("data:"):
        return None
    payload = line[5:].strip()
    if not payload or payload == "[DONE]":
        return None
    return json.loads(payload)


def is_done(line: str) -> bool:
    return line.startswith("data:") and line[5:].strip() == "[DONE]"


@dataclass
class StreamState:
    """What a stream has shown so far: its id, finish reason and usage (from the last chunk)."""

    id: str | None = None
    finish_reason: str | None = None
    usage: Usage | None = None
    done: bool = False


class StreamReader(Generic[T]):
    """What Stream and AsyncStream share: SSE lines in, pieces out, the state on the side. They
    differ only in how they wait for the next line."""

    def __init__(self, pieces: Callable[[dict[str, Any], StreamState], list[T]]) -> None:
        self.state = StreamState()
        self._pieces = pieces
        self.ready: list[T] = []
        self.closed = False

    @property
    def id(self) -> str | None:
        """The response id (known after the first chunk): what cancel() takes."""
        return self.state.id

    @property
    def finish_reason(self) -> str | None:
        return self.state.finish_reason

    @property
    def usage(self) -> Usage | None:
        return self.state.usage

    @property
    def exhausted(self) -> bool:
        return not self.ready and (self.state.done or self.closed)

    def feed(self, line: str) -> None:
        """One line of the body; an error event raises its exception."""
        if is_done(line):
            self.state.done = True
            return
        chunk = sse_data(line)
        if chunk is not None:
            self.ready.extend(self._pieces(chunk, self.state))

    def ended(self) -> BotframeworkError | None:
        """The body ended: an error unless [DONE] came first."""
        return None if self.state.done else ServerUnavailableError("the server closed the stream before its end")

    @staticmethod
    def broke(exc: Exception) -> ServerUnavailableError:
        return ServerUnavailableError(f"the stream broke off: {exc}")


def chat_pieces(chunk: Mapping[str, Any], state: StreamState) -> list[MessageDelta]:
    """A chat.completion.chunk's pieces as LocalLLM.stream_chat_message yields them."""
    _note(chunk, state)
    out: list[MessageDelta] = []
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or {}
        if delta.get("reasoning_content"):
            out.append(MessageDelta(reasoning_content=delta["reasoning_content"]))
        if delta.get("content"):
            out.append(MessageDelta(content=delta["content"]))
        for call in delta.get("tool_calls") or ():
            function = call.get("function") or {}
            out.append(MessageDelta(tool_call=ToolCallDelta(index=call.get("index", 0),
                                                            arguments=function.get("arguments") or "",
                                                            id=call.get("id"), name=function.get("name"))))
        if choice.get("finish_reason"):
            state.finish_reason = choice["finish_reason"]
    return out


def chat_text(chunk: Mapping[str, Any], state: StreamState) -> list[str]:
    """A chunk's content pieces (LocalLLM.stream_chat yields those)."""
    return [piece.content for piece in chat_pieces(chunk, state) if piece.content]


def completion_pieces(chunk: Mapping[str, Any], state: StreamState) -> list[str]:
    _note(chunk, state)
    out: list[str] = []
    for choice in chunk.get("choices") or ():
        if choice.get("text"):
            out.append(choice["text"])
        if choice.get("finish_reason"):
            state.finish_reason = choice["finish_reason"]
    return out


def _note(chunk: Mapping[str, Any], state: StreamState) -> None:
    if "error" in chunk:
        raise api_error(None, {}, chunk)
    state.id = state.id or chunk.get("id")
    if chunk.get("usage"):
        state.usage = usage_of(chunk["usage"])


# -- errors ------------------------------------------------------------------------------------

def retry_after_s(headers: Mapping[str, str]) -> float:
    try:
        return max(0.0, float(headers.get("retry-after", "1")))
    except ValueError:
        return 1.0


def api_error(status: int | None, headers: Mapping[str, str], body: Any) -> BotframeworkError:
    """The one mapping of an error answer (status, or None for an error event mid-stream) to
    the exception LocalLLM would raise for the same cause."""
    error = body.get("error") if isinstance(body, Mapping) else None
    if not isinstance(error, Mapping):
        error = {"message": body if isinstance(body, str) and body else f"HTTP {status}"}
    message = str(error.get("message") or f"HTTP {status}")
    code, param, kind = error.get("code"), error.get("param"), error.get("type")
    exc: BotframeworkError
    if status == 401 or code == "invalid_api_key":
        exc = AuthenticationError(message)
    elif code == "model_not_found":
        exc = ModelNotFoundError(message)
    elif code == "server_busy" or kind == "server_busy":
        exc = BusyError(message, retry_after_s=retry_after_s(headers))
    elif code == "context_length_exceeded":
        numbers = re.search(r"prompt: (\d+) tokens, context: (\d+) tokens", message)
        exc = ContextLengthExceededError(message, num_prompt_tokens=int(numbers[1]) if numbers else 0,
                                         num_ctx=int(numbers[2]) if numbers else 0, param=param)
    elif code == "unsupported_schema":
        exc = UnsupportedSchemaError(message, problems=(), param=param)
    elif code == "invalid_grammar":
        exc = GrammarError(message, param=param)
    elif code == "output_validation_failed":
        exc = OutputValidationError(message)
    elif code == "cancelled" or status == 499:
        exc = CancelledError(message)
    elif code == "model_unavailable":
        exc = ModelLoadError(message)
    elif status is not None and 400 <= status < 500 and status not in (408, 429):
        exc = InvalidRequestError(message, param=param, code=code)
    else:
        exc = APIStatusError(message, status_code=status or 0, code=code)
    exc.__dict__["status_code"] = status  # every client error says what the server answered
    if not isinstance(exc, BusyError):
        exc.__dict__["retry_after_s"] = retry_after_s(headers) if status in (429, 503) else None
    return exc


def is_retryable(exc: BotframeworkError) -> bool:
    """Refused before any work started, so sending again is safe: a full queue."""
    return isinstance(exc, BusyError)


def retry_wait_s(exc: BotframeworkError) -> float:
    return min(MAX_RETRY_WAIT_S, getattr(exc, "retry_after_s", 1.0) or 1.0)


def connect_backoff_s(attempt: int) -> float:
    return 0.25 * 2 ** attempt


def no_server(url: str, exc: Exception) -> ServerUnavailableError:
    return ServerUnavailableError(f"no botframework server answers at {url} ({exc}); start one with "
                                  "`botframework serve`, or pass auto_start=True")


def transport_error(url: str, exc: Exception, *, timeout: bool) -> ServerUnavailableError:
    if timeout:
        return ServerUnavailableError(f"the server at {url} did not answer in time ({exc})")
    return ServerUnavailableError(f"the connection to {url} failed: {exc}")


def start_failed(server: subprocess.Popen[bytes] | None, url: str, timeout_s: float) -> ServerUnavailableError:
    if server is not None and server.returncode is not None:
        return ServerUnavailableError(f"`botframework serve` exited with status {server.returncode} "
                                      "before it answered (its output is above)")
    return ServerUnavailableError(f"the server started at {url} did not get ready within {timeout_s:.0f} s")


# -- starting a server -------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def is_loopback(url: str) -> bool:
    return (urlsplit(url).hostname or "") in ("127.0.0.1", "localhost", "::1")


def start_server(url: str, model: str | None, extra_args: Sequence[str] = ()) -> subprocess.Popen[bytes]:
    """`botframework serve` on `url`'s port, serving `model`: $BOTFRAMEWORK_BIN if set, else this
    interpreter's package. Its output goes to our stderr."""
    port = urlsplit(url).port or 8000
    command = [os.environ["BOTFRAMEWORK_BIN"]] if os.environ.get("BOTFRAMEWORK_BIN") else \
        [sys.executable, "-m", "botframework.cli"]
    args = [*command, "serve", "--port", str(port), *extra_args]
    if model is not None:
        args += ["--model", model]
        if model.endswith(".gguf"):  # so that the load endpoint may name it too
            args += ["--models-dir", str(Path(model).parent)]
    # from the temp dir: `-m` puts the cwd first on sys.path, and a checkout there has no compiled module
    return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=sys.stderr.fileno(), cwd=tempfile.gettempdir())
