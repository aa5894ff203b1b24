"""A Runtime without a model: one "token" per character, answers from a fixed script.

The answer is `reply` cut to max_tokens; deltas are published from an asyncio task so they
reach the route exactly as the engine thread's would (RequestHandle + call_soon_threadsafe).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import numpy as np

from botframework.errors import BotframeworkError, DecodeError
from botframework.scheduler.output import Delta, FinishReason, RequestHandle, Usage
from botframework.scheduler.sequence import Request
from botframework.server.app import create_app
from botframework.server.settings import ServerSettings
from botframework.specs import GrammarSpec

FAKE_JSON_GRAMMAR = GrammarSpec("root ::= \"{}\"")  # marks requests the real runtime would constrain


class FakeRuntime:
    def __init__(self, *, model_id: str = "fake-model", reply: str = "Hello from the fake model.",
                 json_reply: str = "{}",
                 n_ctx: int = 512, n_vocab: int = 1000, token_delay_s: float = 0.0,
                 submit_error: BotframeworkError | None = None, error_after: int | None = None,
                 error_suffix: str = "", embed_delay_s: float = 0.0) -> None:
        self.model_id = model_id
        self.created = int(time.time())
        self.n_ctx = n_ctx
        self.n_vocab = n_vocab
        self.reply = reply
        self.json_reply = json_reply
        self.token_delay_s = token_delay_s
        self.submit_error = submit_error
        self.error_after = error_after  # fail the request like a failed llama_decode after N tokens
        self.error_suffix = error_suffix  # ...only requests whose id ends with this (one choice of n)
        self.requests: list[Request] = []
        self.inline: list[bool] = []  # submit's inline, per request
        self.active: dict[str, Request] = {}
        self.handles: dict[str, RequestHandle] = {}
        self.cancelled: list[str] = []
        self.num_generated = 0
        self.closed = False
        self.seen_sessions: set[str] = set()
        self.chat_plans: list[tuple[list[dict[str, Any]], Any]] = []
        self.embedded: list[str] | list[list[int]] = []  # the last embed call's inputs
        self.inline_tokens: int | None = None  # the last embed_submit's inline_tokens
        self.embed_delay_s = embed_delay_s  # > 0: embed_submit's futures complete later, on another thread

    # tokens: 1 (BOS) + one per character, ids folded into the vocabulary
    def tokenize(self, text: str, *, add_special: bool, parse_special: bool = False) -> list[int]:
        return ([1] if add_special else []) + [2 + ord(c) % (self.n_vocab - 2) for c in text]

    def infill_tokens(self, prefix: str, suffix: str, extra: str = "") -> list[int]:
        self.last_infill = (prefix, suffix, extra)
        return [3, *self.tokenize(extra + prefix, add_special=False), 4, *self.tokenize(suffix, add_special=False), 5]

    def detokenize(self, tokens: list[int]) -> str:
        return "".join(chr(t - 2) for t in tokens if t >= 2)

    def token_bytes(self, token: int) -> bytes:
        return chr(max(token - 2, 32)).encode("utf-8")

    def render_chat(self, messages: list[dict[str, Any]], *, max_tokens: int = 256,
                    overflow: str = "error") -> tuple[list[int], tuple[str, ...], int]:
        text = "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"
        return self.tokenize(text, add_special=True), ("<end>",), 0

    def plan_chat(self, messages: list[dict[str, Any]], options: Any, *, max_tokens: int = 256,
                  overflow: str = "error") -> Any:
        """render_chat plus the output parser the real runtime would pick (no grammar: the
        scripted reply stands in for constrained output)."""
        from botframework.chat.parse import OutputMode, OutputParser
        from botframework.chat.plan import ChatPlan
        from botframework.chat.render import RenderedChat
        from botframework.chat.tools import offered_tools

        tokens, stops, truncated = self.render_chat(messages, max_tokens=max_tokens, overflow=overflow)
        tools = offered_tools(options.tools, options.tool_choice)
        mode = (OutputMode.STRUCTURED if options.structured is not None else
                OutputMode.GRAMMAR if options.grammar is not None else
                OutputMode.TOOLS_GENERIC if tools else OutputMode.TEXT)
        self.chat_plans.append((messages, options))
        # structured requests are answered with json_reply (the real grammar would force JSON)
        grammar = FAKE_JSON_GRAMMAR if options.structured is not None else None
        return ChatPlan(RenderedChat(tokens, stops, truncated_tokens=truncated), grammar,
                        OutputParser(mode, {}, tools=tools, choice=options.tool_choice), options.structured)

    def chat_capabilities(self) -> dict[str, Any]:
        return {"tool_format": "generic"}

    def submit(self, request: Request, loop: asyncio.AbstractEventLoop, *, inline: bool = False) -> RequestHandle:
        self.requests.append(request)
        self.inline.append(inline)
        if request.session_id:
            self.seen_sessions.add(request.session_id)
        handle = RequestHandle(request.request_id, self._cancel, loop)
        self.active[request.request_id] = request
        self.handles[request.request_id] = handle
        loop.create_task(self._produce(request, handle))
        return handle

    async def _produce(self, request: Request, handle: RequestHandle) -> None:
        rid = request.request_id
        if self.submit_error is not None:
            self.active.pop(rid, None)
            self.handles.pop(rid, None)
            handle.publish(Delta(rid, finish_reason=FinishReason.ERROR, error=self.submit_error))
            return
        reply = self.json_reply if request.params.sampler.grammar is FAKE_JSON_GRAMMAR else self.reply
        text = reply[: request.params.max_tokens]
        reason = FinishReason.STOP if len(text) == len(reply) else FinishReason.LENGTH
        for n, ch in enumerate(text):
            await asyncio.sleep(self.token_delay_s)
            if rid not in self.active:
                return  # cancelled: _cancel published the final delta
            if n == self.error_after and rid.endswith(self.error_suffix):
                self.active.pop(rid, None)
                self.handles.pop(rid, None)
                handle.publish(Delta(rid, finish_reason=FinishReason.ERROR, usage=self._usage(request, n),
                                     error=DecodeError("llama_decode failed", op="llama_decode", code=-1)))
                return
            self.num_generated += 1
            token = self.tokenize(ch, add_special=False)[0]
            logprobs = ((token, -0.5, ((token, -0.5),)),) if request.params.num_logprobs is not None else ()
            last = n == len(text) - 1
            handle.publish(Delta(rid, text=ch, token_ids=(token,), logprobs=logprobs,
                                 finish_reason=reason if last else None,
                                 usage=self._usage(request, n + 1) if last else None,
                                 timings={"ttft_ms": 1.0, "total_ms": 2.0} if last else {}))
        self.active.pop(rid, None)
        self.handles.pop(rid, None)

    def _usage(self, request: Request, n: int) -> Usage:
        if request.speculative:  # as if it drafted one token per generated one and kept half of them
            return Usage(prompt_tokens=len(request.prompt_tokens), completion_tokens=n,
                         draft_tokens=n, accepted_draft_tokens=n // 2)
        return Usage(prompt_tokens=len(request.prompt_tokens), completion_tokens=n)

    def _cancel(self, request_id: str) -> None:
        request = self.active.pop(request_id, None)
        handle = self.handles.pop(request_id, None)
        if request is None or handle is None:
            return
        self.cancelled.append(request_id)
        handle.publish(Delta(request_id, finish_reason=FinishReason.CANCELLED, usage=self._usage(request, 0)))

    def cancel(self, request_or_session_id: str) -> int:
        ids = [rid for rid, r in self.active.items()
               if rid == request_or_session_id or rid.startswith(request_or_session_id + "~")
               or r.session_id == request_or_session_id]
        for rid in ids:
            self._cancel(rid)
        return len(ids)

    def session_info(self, session_id: str) -> dict[str, object] | None:
        if any(r.session_id == session_id for r in self.active.values()):
            return {"state": "busy", "num_cached_tokens": 0}
        return {"state": "idle", "num_cached_tokens": 0} if session_id in self.seen_sessions else None

    def drop_session(self, session_id: str) -> bool:
        self.cancel(session_id)
        found = session_id in self.seen_sessions
        self.seen_sessions.discard(session_id)
        return found

    def stats(self) -> dict[str, int]:
        return {"num_waiting": 0, "num_running": len(self.active), "num_prefilling": 0,
                "num_busy_slots": len(self.active), "num_session_slots": 0, "num_cells_used": 0,
                "num_prefix_hit_tokens": 0, "num_prompt_tokens": 0,
                "num_generated_tokens": self.num_generated, "num_stored_sessions": 0}

    def worker_metrics(self) -> dict[str, float]:
        return {"num_steps": 0, "num_step_tokens": 0, "decode_ms": 0.0, "sample_ms": 0.0, "schedule_ms": 0.0}

    def embed(self, inputs: list[str] | list[list[int]]) -> list[np.ndarray]:
        """8-dimensional unit vectors that depend on the input (a text counts as its tokens, like
        the real runtime), so order, truncation and text == token ids can be checked."""
        self.embedded = list(inputs)
        vectors = []
        for item in inputs:
            tokens = self.tokenize(item, add_special=True) if isinstance(item, str) else item
            vector = np.array([1.0 + (sum(tokens) * (k + 1)) % 7 for k in range(8)], dtype=np.float32)
            vectors.append(vector / np.linalg.norm(vector))
        return vectors

    def embed_submit(self, inputs: list[str] | list[list[int]], *, inline_tokens: int = 0
                     ) -> tuple[list[concurrent.futures.Future[np.ndarray]], int]:
        self.inline_tokens = inline_tokens
        futures: list[concurrent.futures.Future[np.ndarray]] = []
        for vector in self.embed(inputs):
            future: concurrent.futures.Future[np.ndarray] = concurrent.futures.Future()
            if self.embed_delay_s > 0:  # like the engine thread's: not done yet when submit returns
                threading.Timer(self.embed_delay_s, future.set_result, (vector,)).start()
            else:
                future.set_result(vector)
            futures.append(future)
        num_tokens = sum(len(self.tokenize(i, add_special=True)) if isinstance(i, str) else len(i) for i in inputs)
        return futures, num_tokens

    def close(self) -> None:
        self.closed = True


@asynccontextmanager
async def serve_fake(runtime: FakeRuntime | None = None, *, fail: Exception | None = None,
                     **settings: object) -> AsyncIterator[httpx.AsyncClient]:
    """The app on a fake runtime, lifespan run by hand (ASGITransport does not run it)."""
    rt = runtime or FakeRuntime()

    def factory(_: ServerSettings) -> FakeRuntime:
        if fail is not None:
            raise fail
        return rt

    app = create_app(ServerSettings(model="fake-model", **settings), runtime_factory=factory)  # type: ignore[arg-type]
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client
