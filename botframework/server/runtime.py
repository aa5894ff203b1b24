"""Runtime: what the HTTP layer needs from a loaded model.

    registry -> load_entry(settings, entry) -> runtime.handle.load_model (the loader LocalLLM
                uses too) -> ModelHandle, which has these methods
    routes   -> plan_chat / tokenize (any thread) -> submit(Request, loop) -> RequestHandle
             -> stats / cancel / sessions / embed (answered on the engine thread)

Tests replace it with a fake that has the same methods (tests/server/fake_runtime.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import hashlib
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from botframework.errors import BotframeworkError, ModelLoadError
from botframework.runtime.handle import CHOICE_SEP, ModelHandle, load_model
from botframework.runtime.pull import resolve_model
from botframework.runtime.registry import ModelEntry
from botframework.scheduler.output import RequestHandle
from botframework.scheduler.sequence import Request
from botframework.server.settings import ServerSettings

if TYPE_CHECKING:
    from botframework.chat.plan import ChatOptions, ChatPlan

__all__ = ["CHOICE_SEP", "ModelHandle", "Runtime", "estimate_bytes", "load_entry", "measure_bytes"]


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
    def submit(self, request: Request, loop: asyncio.AbstractEventLoop, *, inline: bool = False) -> RequestHandle: ...
    def cancel(self, request_or_session_id: str) -> int: ...
    def stats(self) -> dict[str, int]: ...
    def session_info(self, session_id: str) -> dict[str, object] | None: ...
    def drop_session(self, session_id: str) -> bool: ...
    def worker_metrics(self) -> dict[str, float]: ...
    def embed(self, inputs: list[str] | list[list[int]]) -> list[np.ndarray]: ...
    def embed_submit(self, inputs: list[str] | list[list[int]], *, inline_tokens: int = 0
                     ) -> tuple[list[concurrent.futures.Future[np.ndarray]], int]: ...
    def close(self) -> None: ...


def load_entry(settings: ServerSettings, entry: ModelEntry) -> ModelHandle:
    """One declared model: resolved inside the configured folders (pulled if it is a catalog
    model and pulling is on), its sha256 pin checked, loaded. Blocking (the registry runs it
    in a thread). A remote model (`url`) is its replicas' RemoteBackend: nothing to load here."""
    if entry.remote is not None:
        from botframework.server.remote import RemoteBackend

        return RemoteBackend(entry.remote, entry.name)  # type: ignore[return-value]
    path = resolve_model(entry.source, allowed_dirs=settings.allowed_dirs, pull_missing=settings.pull_missing)
    if entry.sha256 is not None:
        with open(path, "rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
        if digest != entry.sha256.lower():
            raise ModelLoadError(f"model '{entry.name}': {path} has sha256 {digest}, not the pinned {entry.sha256}")
    config = entry.config
    if config.draft_model is not None:  # the draft model too: confined, pulled, as the model
        config = dataclasses.replace(config, draft_model=resolve_model(
            str(config.draft_model), allowed_dirs=settings.allowed_dirs, pull_missing=settings.pull_missing))
    # resolved (and confined) above: a catalog model's cached file is not in the configured folders
    return load_model(str(path), config, name=entry.name, chat_template=entry.chat_template, kind=entry.kind)


def estimate_bytes(settings: ServerSettings, entry: ModelEntry) -> int:
    """Before a load: the model file's size plus a quarter for its KV cache and buffers (0 if the
    file is not on this machine yet); measure_bytes gives the real figure once it is loaded."""
    if entry.remote is not None:
        return 0
    try:
        path = resolve_model(entry.source, allowed_dirs=settings.allowed_dirs, pull_missing=False)
    except BotframeworkError:
        return 0
    return int(path.stat().st_size * 1.25)


def measure_bytes(runtime: Runtime) -> int:
    measure = getattr(runtime, "memory_bytes", None)
    return int(measure()) if measure is not None else 0
