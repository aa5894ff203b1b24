"""Client: LocalLLM's methods over HTTP, on httpx. Change `LocalLLM(model)` to `Client(model)`
and the same calls run on a botframework server (this machine's or another's).

    Client(model, base_url=, api_key=) --first call--> POST /v1/models/{model}/load (once)
      chat / stream_chat / stream_chat_message -> /v1/chat/completions
      complete / stream_complete              -> /v1/completions
      embed -> /v1/embeddings; session() -> Session; cancel(id) -> /v1/cancel/{id}; models()
    errors: the package's exceptions (_base.api_error); busy answers are retried after their
    Retry-After up to max_retries (nothing was started); nothing else is sent twice.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import httpx

from botframework.client import _base
from botframework.errors import BotframeworkError, InvalidRequestError
from botframework.session import Session

T = TypeVar("T")


class Stream(_base.StreamReader[T]):
    """A streamed answer: iterate for its pieces; `id` (known after the first chunk) is what
    cancel() takes; `finish_reason` and `usage` are set at the end. close() (or leaving a
    `with` block, or dropping it unfinished) closes the connection, which cancels the request
    on the server."""

    def __init__(self, response: httpx.Response,
                 pieces: Callable[[dict[str, Any], _base.StreamState], list[T]]) -> None:
        super().__init__(pieces)
        self.response = response
        self._lines = response.iter_lines()

    def __iter__(self) -> Stream[T]:
        return self

    def __next__(self) -> T:
        while not self.ready:
            if self.exhausted:
                self.close()
                raise StopIteration
            try:
                self.feed(next(self._lines))
            except StopIteration:
                self.close()
                error = self.ended()
                if error is not None:
                    raise error from None
            except httpx.TransportError as exc:
                self.close()
                raise self.broke(exc) from exc
            except BotframeworkError:
                self.close()
                raise
        return self.ready.pop(0)

    def read_id(self) -> str | None:
        """Wait for the first chunk (without losing its pieces) and return the stream's id."""
        while self.state.id is None and not self.exhausted:
            try:
                self.ready.append(next(self))
            except StopIteration:
                break
        return self.state.id

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.response.close()

    def __enter__(self) -> Stream[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if hasattr(self, "response"):
            self.close()


class Client:
    """A botframework server as if it were a LocalLLM.

    `model`: a name the server knows (declared, or a catalog model in its cache), or a .gguf
    path inside its configured folders; None: the server's default model. `base_url`: the
    server (default $BOTFRAMEWORK_URL, else http://127.0.0.1:8000; a trailing /v1 is fine).
    `api_key`: default $BOTFRAMEWORK_API_KEY. `auto_start`: when nothing answers at a loopback
    URL, start `botframework serve` for this model there (stopped by close()).
    """

    def __init__(self, model: str | os.PathLike[str] | None = None, *, base_url: str | None = None,
                 api_key: str | None = None, timeout: float = 600.0, connect_timeout: float = 5.0,
                 max_retries: int = 2, auto_start: bool = False, start_timeout: float = 300.0,
                 server_args: Sequence[str] = (), http_client: httpx.Client | None = None) -> None:
        self.base_url = _base.server_url(base_url)
        self.spec = _base.model_spec(model)
        self.api_key = api_key if api_key is not None else os.environ.get(_base.API_KEY_ENV)
        self.max_retries = max_retries
        self.auto_start = auto_start
        self.start_timeout = start_timeout
        self.server_args = tuple(server_args)
        self.server: subprocess.Popen[bytes] | None = None
        self._model: str | None = None
        headers = {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        self.http = http_client or httpx.Client(
            base_url=self.base_url, headers=headers, timeout=httpx.Timeout(timeout, connect=connect_timeout))

    # -- lifetime ---------------------------------------------------------------------------
    def close(self) -> None:
        self.http.close()
        if self.server is not None:
            self.server.terminate()
            try:
                self.server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait()
            self.server = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport --------------------------------------------------------------------------
    def _send(self, method: str, path: str, *, json: Any = None, stream: bool = False,
              params: dict[str, str] | None = None) -> httpx.Response:
        """Send; map errors; retry what is safe: a busy answer (after its Retry-After) and a
        connection that was refused (nothing reached the server)."""
        attempt = 0
        while True:
            request = self.http.build_request(method, path, json=json, params=params)
            try:
                response = self.http.send(request, stream=stream)
            except httpx.ConnectError as exc:
                if self._start_if_asked():
                    continue
                if attempt < self.max_retries:
                    attempt += 1
                    time.sleep(_base.connect_backoff_s(attempt))
                    continue
                raise _base.no_server(self.base_url, exc) from exc
            except httpx.TransportError as exc:
                raise _base.transport_error(self.base_url, exc, timeout=isinstance(exc, httpx.TimeoutException)) \
                    from exc
            if response.status_code < 400:
                return response
            if stream:
                response.read()
                response.close()
            error = _base.api_error(response.status_code, response.headers, _json_or_text(response))
            if _base.is_retryable(error) and attempt < self.max_retries:
                attempt += 1
                time.sleep(_base.retry_wait_s(error))
                continue
            raise error

    def _start_if_asked(self) -> bool:
        if not self.auto_start or self.server is not None or not _base.is_loopback(self.base_url):
            return False
        self.server = _base.start_server(self.base_url, self.spec, self.server_args)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline and self.server.poll() is None:
            try:
                if self.http.get("/health", timeout=2).status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        raise _base.start_failed(self.server, self.base_url, self.start_timeout)

    @property
    def model(self) -> str:
        """The model's id on the server: asked to load it on first use (the server's default
        model when none was named)."""
        if self._model is None:
            if self.spec is None:
                self._model = self._send("GET", "/v1/models").json()["data"][0]["id"]
            else:
                self._model = self._send("POST", _base.load_path(self.spec)).json()["id"]
        return self._model

    # -- chat -------------------------------------------------------------------------------
    def chat(self, messages: Any, *, system: str | None = None, schema: Any = None, response_format: Any = None,
             grammar: str | None = None, tools: Sequence[Any] | None = None, tool_choice: Any = None,
             parallel_tool_calls: bool = False, overflow: str = "error", **options: Any) -> Any:
        """As LocalLLM.chat: a ChatResult (`.text`, `.tool_calls`, `.usage`, `.id`), or with
        `schema` / a JSON `response_format` the validated value (a pydantic instance for a class)."""
        body, structured = _base.chat_body(
            self.model, messages, system=system, schema=schema, response_format=response_format, grammar=grammar,
            tools=tools, tool_choice=tool_choice, parallel_tool_calls=parallel_tool_calls, overflow=overflow,
            options=options)
        return _base.chat_result(self._send("POST", "/v1/chat/completions", json=body).json(), structured)

    def stream_chat(self, messages: Any, *, system: str | None = None, **options: Any) -> Stream[str]:
        """The answer's text as it is generated (a Stream: `.id`, `.close()`)."""
        body, _ = _base.chat_body(self.model, messages, system=system, stream=True, options=options)
        return Stream(self._send("POST", "/v1/chat/completions", json=body, stream=True), _base.chat_text)

    def stream_chat_message(self, messages: Any, *, system: str | None = None, schema: Any = None,
                            response_format: Any = None, grammar: str | None = None,
                            tools: Sequence[Any] | None = None, tool_choice: Any = None,
                            parallel_tool_calls: bool = False, overflow: str = "error",
                            **options: Any) -> Stream[Any]:
        """Content, reasoning and tool-call pieces (MessageDelta) as they come."""
        body, _ = _base.chat_body(
            self.model, messages, system=system, schema=schema, response_format=response_format, grammar=grammar,
            tools=tools, tool_choice=tool_choice, parallel_tool_calls=parallel_tool_calls, overflow=overflow,
            stream=True, options=options)
        return Stream(self._send("POST", "/v1/chat/completions", json=body, stream=True), _base.chat_pieces)

    # -- completion -------------------------------------------------------------------------
    def complete(self, prompt: str, *, suffix: str | None = None, **options: Any) -> Any:
        """As LocalLLM.complete; `suffix` makes it fill-in-the-middle."""
        body = _base.completion_body(self.model, prompt, suffix=suffix, options=options)
        return _base.completion_result(self._send("POST", "/v1/completions", json=body).json())

    def stream_complete(self, prompt: str, *, suffix: str | None = None, **options: Any) -> Stream[str]:
        body = _base.completion_body(self.model, prompt, suffix=suffix, stream=True, options=options)
        return Stream(self._send("POST", "/v1/completions", json=body, stream=True), _base.completion_pieces)

    # -- the rest ---------------------------------------------------------------------------
    def embed(self, texts: str | Sequence[str], *, dimensions: int | None = None) -> list[list[float]]:
        """One vector per input text (the model's pooling, L2-normalised)."""
        body = _base.embed_body(self.model, texts, dimensions)
        return _base.embeddings(self._send("POST", "/v1/embeddings", json=body).json())

    def tokenize(self, text: str) -> list[int]:
        tokens = self._send("POST", "/tokenize", json={"model": self.model, "content": text}).json()["tokens"]
        return [int(token) for token in tokens]

    def session(self, session_id: str | None = None, *, system: str | None = None, **defaults: Any) -> Session:
        """A conversation whose turns reuse the server's KV state (botframework.session)."""
        return Session(self, session_id, system=system, **defaults)

    def drop_session(self, session_id: str) -> bool:
        """Free a session's state on the server; False if it had none."""
        try:
            self._send("DELETE", f"/v1/sessions/{session_id}")
        except InvalidRequestError as exc:
            if getattr(exc, "status_code", None) == 404:
                return False
            raise
        return True

    def cancel(self, request_or_session_id: str) -> int:
        """Stop a running or queued request (its `id`) or a session's; the number stopped."""
        data = self._send("POST", f"/v1/cancel/{request_or_session_id}").json()
        return int(data["num_cancelled"])

    def models(self) -> list[dict[str, Any]]:
        """The server's models: OpenAI's model cards, with `meta` (state, memory, idle time)."""
        return list(self._send("GET", "/v1/models").json()["data"])

    def health(self) -> dict[str, Any]:
        return dict(self._send("GET", "/health").json())



def _json_or_text(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text
