"""ModelRuntime: the one loaded model behind the server, and everything routes ask of it.

    lifespan -> load_runtime(settings) -> resolve_model -> ModelWorker (engine thread)
                                                          + ChatTemplates
    routes   -> plan_chat / render_chat / tokenize (any thread) -> submit(Request, loop) -> RequestHandle
             -> stats / cancel / embed (run on the engine thread via ModelWorker.call)

Tests replace it with a fake that has the same methods (tests/server/fake_runtime.py).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from botframework.scheduler.output import RequestHandle
from botframework.scheduler.sequence import Request
from botframework.server.settings import ServerSettings

if TYPE_CHECKING:
    from botframework.chat.plan import ChatOptions, ChatPlan


class Runtime(Protocol):
    """What the HTTP layer needs from a loaded model."""

    model_id: str
    created: int
    n_ctx: int
    n_vocab: int

    def render_chat(self, messages: list[dict[str, Any]], *, max_tokens: int = 256,
                    overflow: str = "error") -> tuple[list[int], tuple[str, ...], int]: ...
    def plan_chat(self, messages: list[dict[str, Any]], options: ChatOptions, *, max_tokens: int = 256,
                  overflow: str = "error") -> ChatPlan: ...
    def chat_capabilities(self) -> dict[str, Any]: ...
    def tokenize(self, text: str, *, add_special: bool, parse_special: bool = False) -> list[int]: ...
    def detokenize(self, tokens: list[int]) -> str: ...
    def infill_tokens(self, prefix: str, suffix: str, extra: str = "") -> list[int]: ...
    def token_bytes(self, token: int) -> bytes: ...
    def submit(self, request: Request, loop: asyncio.AbstractEventLoop) -> RequestHandle: ...
    def cancel(self, request_or_session_id: str) -> int: ...
    def stats(self) -> dict[str, int]: ...
    def session_info(self, session_id: str) -> dict[str, object] | None: ...
    def drop_session(self, session_id: str) -> bool: ...
    def worker_metrics(self) -> dict[str, float]: ...
    def embed(self, texts: list[str]) -> list[np.ndarray]: ...
    def close(self) -> None: ...


CHOICE_SEP = "~"  # the engine request of choice i > 0 of response "<id>" is "<id>~i"


class ModelRuntime:
    """A ModelWorker plus the model's chat templates, under the id clients use."""

    def __init__(self, model_id: str, worker: Any, templates: Any) -> None:
        self.model_id = model_id
        self.created = int(time.time())
        self.worker = worker
        self.templates = templates
        self.n_ctx: int = worker.n_ctx
        self.n_vocab: int = worker.model.n_vocab

    def render_chat(self, messages: list[dict[str, Any]], *, max_tokens: int = 256,
                    overflow: str = "error") -> tuple[list[int], tuple[str, ...], int]:
        """Messages -> prompt tokens, the template's stops, and tokens dropped by the overflow policy."""
        from botframework.chat.render import OverflowPolicy, render_chat

        rendered = render_chat(self.templates, self.worker.model, messages, n_ctx=self.n_ctx,
                               max_tokens=max_tokens, overflow=OverflowPolicy(overflow))
        return rendered.tokens, rendered.additional_stops, rendered.truncated_tokens

    def plan_chat(self, messages: list[dict[str, Any]], options: ChatOptions, *, max_tokens: int = 256,
                  overflow: str = "error") -> ChatPlan:
        """Messages + structured output / tools / grammar -> prompt tokens, grammar, output parser."""
        from botframework.chat.plan import plan_chat
        from botframework.chat.render import OverflowPolicy

        return plan_chat(self.templates, self.worker.model, messages, options, n_ctx=self.n_ctx,
                         max_tokens=max_tokens, overflow=OverflowPolicy(overflow))

    def chat_capabilities(self) -> dict[str, Any]:
        return {"tool_format": "native" if self.templates.supports_tools else "generic",
                "template_caps": dict(self.templates.caps)}

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool = False) -> list[int]:
        return self.worker.model.tokenize(text, add_special=add_special, parse_special=parse_special)  # type: ignore[no-any-return]

    def detokenize(self, tokens: list[int]) -> str:
        return self.worker.model.detokenize(tokens)  # type: ignore[no-any-return]

    def infill_tokens(self, prefix: str, suffix: str, extra: str = "") -> list[int]:
        """Fill-in-the-middle prompt in llama.cpp's PSM order: <PRE> extra+prefix <SUF> suffix <MID>."""
        from botframework.errors import InvalidRequestError

        model = self.worker.model
        special = model.special
        if min(special.fim_pre, special.fim_suf, special.fim_mid) < 0:
            raise InvalidRequestError(f"model '{self.model_id}' has no fill-in-the-middle tokens", param="suffix")
        tokens = [special.bos] if special.add_bos and special.bos >= 0 else []
        tokens += [special.fim_pre, *model.tokenize(extra + prefix, add_special=False), special.fim_suf,
                   *model.tokenize(suffix, add_special=False), special.fim_mid]
        return tokens

    def token_bytes(self, token: int) -> bytes:
        return self.worker.model.token_to_piece(token)  # type: ignore[no-any-return]

    def submit(self, request: Request, loop: asyncio.AbstractEventLoop) -> RequestHandle:
        return self.worker.submit(request, loop)  # type: ignore[no-any-return]

    def cancel(self, request_or_session_id: str) -> int:
        """Cancel a request by id, or every request of a session; how many were cancelled."""
        scheduler = self.worker.scheduler

        def run() -> int:
            choice_prefix = request_or_session_id + CHOICE_SEP  # the other choices of an n > 1 request
            ids = [seq.request_id for seq in [*scheduler.waiting, *scheduler.active.values()]
                   if seq.request_id == request_or_session_id or seq.request_id.startswith(choice_prefix)]
            cancelled = sum(scheduler.cancel(request_id) for request_id in ids)
            return cancelled or int(scheduler.cancel_session(request_or_session_id))

        return self.worker.call(run, timeout_s=10.0)  # type: ignore[no-any-return]

    def session_info(self, session_id: str) -> dict[str, object] | None:
        return self.worker.call(lambda: self.worker.scheduler.session_info(session_id), timeout_s=10.0)  # type: ignore[no-any-return]

    def drop_session(self, session_id: str) -> bool:
        return self.worker.call(lambda: self.worker.scheduler.drop_session(session_id), timeout_s=10.0)  # type: ignore[no-any-return]

    def stats(self) -> dict[str, int]:
        return self.worker.call(self.worker.scheduler.stats, timeout_s=10.0)  # type: ignore[no-any-return]

    def worker_metrics(self) -> dict[str, float]:
        m = self.worker.metrics
        return {"num_steps": m.num_steps, "num_step_tokens": m.num_step_tokens, "decode_ms": m.decode_ms,
                "sample_ms": m.sample_ms, "schedule_ms": m.schedule_ms}

    def embed(self, texts: list[str]) -> list[np.ndarray]:
        return self.worker.embed(texts)  # type: ignore[no-any-return]

    def close(self) -> None:
        self.templates.close()
        self.worker.close()


def load_runtime(settings: ServerSettings) -> ModelRuntime:
    """Resolve (and pull) the model, start its engine thread, load its chat templates. Blocking."""
    from botframework.native.shim import ChatTemplates
    from botframework.runtime.pull import resolve_model
    from botframework.runtime.worker import ModelWorker, WorkerConfig

    path = resolve_model(settings.model, allowed_dirs=list(settings.models_dirs) or None,
                         pull_missing=settings.pull_missing)
    worker = ModelWorker(path, WorkerConfig(
        n_ctx=settings.n_ctx, num_slots=settings.num_slots, n_threads=settings.n_threads,
        n_threads_batch=settings.n_threads_batch, n_gpu_layers=settings.n_gpu_layers,
        hugepages=settings.hugepages, prefix_cache_bytes=settings.prefix_cache_mb << 20),
        name=settings.served_model_id)
    try:
        templates = ChatTemplates(worker.model)
    except BaseException:
        worker.close()
        raise
    return ModelRuntime(settings.served_model_id, worker, templates)
