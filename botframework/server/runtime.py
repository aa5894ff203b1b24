"""Runtime: what the HTTP layer needs from a loaded model.

    lifespan -> load_runtime(settings) -> runtime.handle.load_model (the loader LocalLLM uses too)
             -> ModelHandle, which has these methods
    routes   -> plan_chat / tokenize (any thread) -> submit(Request, loop) -> RequestHandle
             -> stats / cancel / sessions / embed (answered on the engine thread)

Tests replace it with a fake that has the same methods (tests/server/fake_runtime.py).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from botframework.runtime.handle import CHOICE_SEP, ModelHandle, load_model
from botframework.scheduler.output import RequestHandle
from botframework.scheduler.sequence import Request
from botframework.server.settings import ServerSettings

if TYPE_CHECKING:
    from botframework.chat.plan import ChatOptions, ChatPlan

__all__ = ["CHOICE_SEP", "ModelHandle", "Runtime", "load_runtime"]


class Runtime(Protocol):
    """What the HTTP layer needs from a loaded model (runtime.handle.ModelHandle has it)."""

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


def load_runtime(settings: ServerSettings) -> ModelHandle:
    """The served model, loaded as the settings say. Blocking (lifespan runs it in a thread)."""
    return load_model(settings.model, settings.worker_config(), name=settings.served_model_id,
                      allowed_dirs=settings.models_dirs, pull_missing=settings.pull_missing)
