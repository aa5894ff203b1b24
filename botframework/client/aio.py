"""AsyncClient: Client's methods as coroutines, on httpx.AsyncClient (same bodies, results and
errors: botframework.client._base). Streams are async iterators; aclose() (or breaking out of
`async for` and dropping the stream) closes the connection, which cancels the request."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import httpx

from botframework.client import _base
from botframework.errors import BotframeworkError, InvalidRequestError
from botframework.session import AsyncSession

T = TypeVar("T")


class AsyncStream(_base.StreamReader[T]):
    """A streamed answer read with `async for`: `id`, `finish_reason`, `usage` as in Stream."""

    def __init__(self, response: httpx.Response, pieces: Callable[[dict[str, Any], _base.StreamState], list[T]]
                 ) -> None:
        super().__init__(pieces)
        self.response = response
        self._lines = response.aiter_lines()

    def __aiter__(self) -> AsyncStream[T]:
        return self

    async def __anext__(self) -> T:
        while not self.ready:
            if self.exhausted:
                await self.aclose()
                raise StopAsyncIteration
            try:
                self.feed(await self._lines.__anext__())
            except StopAsyncIteration:
                await self.aclose()
                error = self.ended()
                if error is not None:
                    raise error from None
            except httpx.TransportError as exc:
                await self.aclose()
                raise self.broke(exc) from exc
            except BotframeworkError:
                await self.aclose()
                raise
        return self.ready.pop(0)

    async def read_id(self) -> str | None:
        """Wait for the first chunk (without losing its pieces) and return the stream's id."""
        while self.state.id is None and not self.exhausted:
            try:
                self.ready.append(await self.__anext__())
            except StopAsyncIteration:
                break
        return self.state.id

    async def aclose(self) -> None:
        if not self.closed:
            self.closed = True
            await self.response.aclose()

    async def __aenter__(self) -> AsyncStream[T]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class AsyncClient:
    """Client for asyncio code (the same arguments; see Client)."""

    def __init__(self, model: str | os.PathLike[str] | None = None, *, base_url: str | None = None,
                 api_key: str | None = None, timeout: float = 600.0, connect_timeout: float = 5.0,
                 max_retries: int = 2, auto_start: bool = False, start_timeout: float = 300.0,
                 server_args: Sequence[str] = (), http_client: httpx.AsyncClient | None = None) -> None:
        self.base_url = _base.server_url(base_url)
        self.spec = _base.model_spec(model)
        self.api_key = api_key if api_key is not None else os.environ.get(_base.API_KEY_ENV)
        self.max_retries = max_retries
        self.auto_start = auto_start
        self.start_timeout = start_timeout
        self.server_args = tuple(server_args)
        self.server: subprocess.Popen[bytes] | None = None
        self._model: str | None = None
        self._model_lock = asyncio.Lock()
        headers = {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        self.http = http_client or httpx.AsyncClient(
            base_url=self.base_url, headers=headers, timeout=httpx.Timeout(timeout, connect=connect_timeout))

    async def aclose(self) -> None:
        await self.http.aclose()
        if self.server is not None:
            server, self.server = self.server, None
            server.terminate()
            try:
                await asyncio.to_thread(server.wait, 30)
            except subprocess.TimeoutExpired:
                server.kill()
                await asyncio.to_thread(server.wait)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _send(self, method: str, path: str, *, json: Any = None, stream: bool = False) -> httpx.Response:
        """As Client._send."""
        attempt = 0
        while True:
            request = self.http.build_request(method, path, json=json)
            try:
                response = await self.http.send(request, stream=stream)
            except httpx.ConnectError as exc:
                if await self._start_if_asked():
                    continue
                if attempt < self.max_retries:
                    attempt += 1
                    await asyncio.sleep(_base.connect_backoff_s(attempt))
                    continue
                raise _base.no_server(self.base_url, exc) from exc
            except httpx.TransportError as exc:
                raise _base.transport_error(self.base_url, exc, timeout=isinstance(exc, httpx.TimeoutException)) \
                    from exc
            if response.status_code < 400:
                return response
            await response.aread()
            if stream:
                await response.aclose()
            try:
                body = response.json()
            except ValueError:
                body = response.text
            error = _base.api_error(response.status_code, response.headers, body)
            if _base.is_retryable(error) and attempt < self.max_retries:
                attempt += 1
                await asyncio.sleep(_base.retry_wait_s(error))
                continue
            raise error

    async def _start_if_asked(self) -> bool:
        if not self.auto_start or self.server is not None or not _base.is_loopback(self.base_url):
            return False
        self.server = _base.start_server(self.base_url, self.spec, self.server_args)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.start_timeout
        while loop.time() < deadline and self.server.poll() is None:
            try:
                if (await self.http.get("/health", timeout=2)).status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.25)
        raise _base.start_failed(self.server, self.base_url, self.start_timeout)

    async def model(self) -> str:
        """The model's id on the server (loaded on first use; see Client.model)."""
        async with self._model_lock:
            if self._model is None:
                if self.spec is None:
                    self._model = (await self._send("GET", "/v1/models")).json()["data"][0]["id"]
                else:
                    self._model = (await self._send("POST", _base.load_path(self.spec))).json()["id"]
        return self._model

    async def chat(self, messages: Any, *, system: str | None = None, schema: Any = None,
                   response_format: Any = None, grammar: str | None = None, tools: Sequence[Any] | None = None,
                   tool_choice: Any = None, parallel_tool_calls: bool = False, overflow: str = "error",
                   **options: Any) -> Any:
        body, structured = _base.chat_body(
            await self.model(), messages, system=system, schema=schema, response_format=response_format,
            grammar=grammar, tools=tools, tool_choice=tool_choice, parallel_tool_calls=parallel_tool_calls,
            overflow=overflow, options=options)
        return _base.chat_result((await self._send("POST", "/v1/chat/completions", json=body)).json(), structured)

    async def stream_chat(self, messages: Any, *, system: str | None = None, **options: Any) -> AsyncStream[str]:
        body, _ = _base.chat_body(await self.model(), messages, system=system, stream=True, options=options)
        return AsyncStream(await self._send("POST", "/v1/chat/completions", json=body, stream=True), _base.chat_text)

    async def stream_chat_message(self, messages: Any, *, system: str | None = None, schema: Any = None,
                                  response_format: Any = None, grammar: str | None = None,
                                  tools: Sequence[Any] | None = None, tool_choice: Any = None,
                                  parallel_tool_calls: bool = False, overflow: str = "error",
                                  **options: Any) -> AsyncStream[Any]:
        body, _ = _base.chat_body(
            await self.model(), messages, system=system, schema=schema, response_format=response_format,
            grammar=grammar, tools=tools, tool_choice=tool_choice, parallel_tool_calls=parallel_tool_calls,
            overflow=overflow, stream=True, options=options)
        return AsyncStream(await self._send("POST", "/v1/chat/completions", json=body, stream=True),
                           _base.chat_pieces)

    async def complete(self, prompt: str, *, suffix: str | None = None, **options: Any) -> Any:
        body = _base.completion_body(await self.model(), prompt, suffix=suffix, options=options)
        return _base.completion_result((await self._send("POST", "/v1/completions", json=body)).json())

    async def stream_complete(self, prompt: str, *, suffix: str | None = None, **options: Any) -> AsyncStream[str]:
        body = _base.completion_body(await self.model(), prompt, suffix=suffix, stream=True, options=options)
        return AsyncStream(await self._send("POST", "/v1/completions", json=body, stream=True),
                           _base.completion_pieces)

    async def embed(self, texts: str | Sequence[str], *, dimensions: int | None = None) -> list[list[float]]:
        body = _base.embed_body(await self.model(), texts, dimensions)
        return _base.embeddings((await self._send("POST", "/v1/embeddings", json=body)).json())

    async def tokenize(self, text: str) -> list[int]:
        data = (await self._send("POST", "/tokenize", json={"model": await self.model(), "content": text})).json()
        return [int(token) for token in data["tokens"]]

    def session(self, session_id: str | None = None, *, system: str | None = None, **defaults: Any) -> AsyncSession:
        return AsyncSession(self, session_id, system=system, **defaults)

    async def drop_session(self, session_id: str) -> bool:
        try:
            await self._send("DELETE", f"/v1/sessions/{session_id}")
        except InvalidRequestError as exc:
            if getattr(exc, "status_code", None) == 404:
                return False
            raise
        return True

    async def cancel(self, request_or_session_id: str) -> int:
        data = (await self._send("POST", f"/v1/cancel/{request_or_session_id}")).json()
        return int(data["num_cancelled"])

    async def models(self) -> list[dict[str, Any]]:
        return list((await self._send("GET", "/v1/models")).json()["data"])

    async def health(self) -> dict[str, Any]:
        return dict((await self._send("GET", "/health")).json())
