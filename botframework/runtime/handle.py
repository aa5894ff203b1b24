"""ModelHandle: one loaded model, and everything the server and LocalLLM ask of it.

    load_model(spec, WorkerConfig, name=...) -> resolve_model (pull on first use)
        -> ModelWorker (engine thread) + ChatTemplates -> ModelHandle
    any thread: plan_chat / render_chat / tokenize / infill_tokens -> prompt tokens
                submit(Request[, loop]) -> RequestHandle (sync, or asyncio with a loop)
    engine thread (ModelWorker.call): cancel / session_info / drop_session / stats

The server's lifespan and LocalLLM.__init__ both load through load_model, so a model runs the
same behind either; the registry of loaded models (several handles by name) builds on this.
Native modules are imported on first use: importing this module needs no compiled code.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from botframework.chat.render import OverflowPolicy
from botframework.config import WorkerConfig
from botframework.errors import BotframeworkError, InvalidRequestError, NativeError
from botframework.scheduler.output import RequestHandle
from botframework.scheduler.sequence import Request

if TYPE_CHECKING:
    from botframework.chat.plan import ChatOptions, ChatPlan
    from botframework.native.context import Context
    from botframework.native.shim import ChatTemplates
    from botframework.runtime.worker import ModelWorker

@dataclass(frozen=True)
class SavedSession:
    """A chat session's KV state outside any model: its tokens and llama.cpp's state bytes."""

    session_id: str
    tokens: list[int]
    data: bytes


CHOICE_SEP = "~"  # the engine request of choice i > 0 of response "<id>" is "<id>~i"
log = logging.getLogger("botframework.sessions")
CALL_TIMEOUT_S = 10.0  # for questions answered on the engine thread (between two steps)


def model_id_for(spec: str) -> str:
    """The id clients name a model by, from how it was given: a catalog name as is, a file's stem."""
    if spec.endswith(".gguf"):
        return Path(spec).stem
    return spec.rsplit("/", 1)[-1] if spec.startswith("hf:") else spec


def overflow_policy(overflow: str | OverflowPolicy) -> OverflowPolicy:
    try:
        return OverflowPolicy(overflow)
    except ValueError:
        raise InvalidRequestError("overflow must be 'error' or 'truncate'", param="overflow") from None


class ModelHandle:
    """A ModelWorker and the model's chat templates, under the id clients use."""

    def __init__(self, model_id: str, worker: ModelWorker, templates: ChatTemplates, *,
                 path: Path | None = None, kind: str | None = None) -> None:
        self.model_id = model_id
        # "embedding": a model whose tokens attend both ways (BERT) only embeds; else "chat"
        self.kind = kind or ("chat" if worker.context.causal_attn else "embedding")
        self.created = int(time.time())
        self.path = path
        self.worker = worker
        self.templates = templates
        self.n_ctx: int = worker.n_ctx
        self.n_vocab: int = worker.model.n_vocab

    # -- prompts (any thread) ---------------------------------------------------------------
    def render_prompt(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        """The chat template's output for messages + the generation prompt ("prompt", stops, ...)."""
        if not messages:
            raise InvalidRequestError("messages must not be empty", param="messages")
        return self.templates.apply({"messages": messages, "add_generation_prompt": True})

    def render_chat(self, messages: list[dict[str, Any]], *, max_tokens: int = 256,
                    overflow: str | OverflowPolicy = "error") -> tuple[list[int], tuple[str, ...], int]:
        """Messages -> prompt tokens, the template's stops, and tokens dropped by the overflow policy."""
        from botframework.chat.render import render_chat

        rendered = render_chat(self.templates, self.worker.model, messages, n_ctx=self.n_ctx,
                               max_tokens=max_tokens, overflow=overflow_policy(overflow))
        return rendered.tokens, rendered.additional_stops, rendered.truncated_tokens

    def plan_chat(self, messages: list[dict[str, Any]], options: ChatOptions, *, max_tokens: int = 256,
                  overflow: str | OverflowPolicy = "error") -> ChatPlan:
        """Messages + structured output / tools / grammar -> prompt tokens, grammar, output parser."""
        from botframework.chat.plan import plan_chat

        return plan_chat(self.templates, self.worker.model, messages, options, n_ctx=self.n_ctx,
                         max_tokens=max_tokens, overflow=overflow_policy(overflow))

    def chat_capabilities(self) -> dict[str, Any]:
        """What clients ask before they rely on a feature: tools' format, the template's own
        capabilities, and whether fill-in-the-middle (/infill, `suffix`) works."""
        return {"tool_format": "native" if self.templates.supports_tools else "generic",
                "template_caps": dict(self.templates.caps), "fim": self.supports_fim}

    @property
    def supports_fim(self) -> bool:
        special = self.worker.model.special
        return min(special.fim_pre, special.fim_suf, special.fim_mid) >= 0

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool = False) -> list[int]:
        return self.worker.model.tokenize(text, add_special=add_special, parse_special=parse_special)

    def detokenize(self, tokens: list[int]) -> str:
        return self.worker.model.detokenize(tokens)

    def infill_tokens(self, prefix: str, suffix: str, extra: str = "") -> list[int]:
        """Fill-in-the-middle prompt in llama.cpp's PSM order: <PRE> extra+prefix <SUF> suffix <MID>."""
        model = self.worker.model
        special = model.special
        if not self.supports_fim:
            raise InvalidRequestError(f"model '{self.model_id}' has no fill-in-the-middle tokens", param="suffix",
                                      code="fim_not_supported")
        tokens = [special.bos] if special.add_bos and special.bos >= 0 else []
        tokens += [special.fim_pre, *model.tokenize(extra + prefix, add_special=False), special.fim_suf,
                   *model.tokenize(suffix, add_special=False), special.fim_mid]
        return tokens

    def token_bytes(self, token: int) -> bytes:
        return self.worker.model.token_to_piece(token)

    # -- requests ---------------------------------------------------------------------------
    def new_request_id(self) -> str:
        return self.worker.new_request_id()

    def submit(self, request: Request, loop: asyncio.AbstractEventLoop | None = None, *,
               inline: bool = False) -> RequestHandle:
        """Queue a request: its deltas come through the handle (to `loop` when given, else to a
        thread). An embedding model generates nothing: InvalidRequestError. `inline`: see
        ModelWorker.submit."""
        if self.kind == "embedding":
            raise InvalidRequestError(f"'{self.model_id}' is an embedding model: it answers embedding requests "
                                      "only", param="model", code="model_not_supported")
        return self.worker.submit(request, loop, inline=inline)

    def cancel(self, request_or_session_id: str) -> int:
        """Cancel a request by id (with the other choices of an n > 1 response), or every
        request of a session; how many were cancelled."""
        scheduler = self.worker.scheduler

        def run() -> int:
            choice_prefix = request_or_session_id + CHOICE_SEP
            ids = [seq.request_id for seq in [*scheduler.waiting, *scheduler.active.values()]
                   if seq.request_id == request_or_session_id or seq.request_id.startswith(choice_prefix)]
            cancelled = sum(scheduler.cancel(request_id) for request_id in ids)
            return cancelled or int(scheduler.cancel_session(request_or_session_id))

        return self.worker.call(run, timeout_s=CALL_TIMEOUT_S)

    def session_info(self, session_id: str) -> dict[str, object] | None:
        scheduler = self.worker.scheduler
        return self.worker.call(lambda: scheduler.session_info(session_id), timeout_s=CALL_TIMEOUT_S)

    def drop_session(self, session_id: str) -> bool:
        scheduler = self.worker.scheduler
        return self.worker.call(lambda: scheduler.drop_session(session_id), timeout_s=CALL_TIMEOUT_S)

    def stats(self) -> dict[str, int]:
        """The scheduler's counters, an audit of the KV cache against them (kv_audit), and the
        host RAM the stored sessions' states take (bounded by session_ram_bytes; a Responses
        chain keeps one session per stored response)."""
        worker = self.worker
        return worker.call(lambda: {**worker.scheduler.stats(), **kv_audit(worker),
                                    "stored_session_bytes": worker.scheduler.kv.sessions.ram_bytes()},
                           timeout_s=CALL_TIMEOUT_S)

    def worker_metrics(self) -> dict[str, float]:
        m = self.worker.metrics
        return {"num_steps": m.num_steps, "num_step_tokens": m.num_step_tokens, "num_runs": m.num_runs,
                "decode_ms": m.decode_ms,
                "sample_ms": m.sample_ms, "schedule_ms": m.schedule_ms,
                **({"draft_ms": m.draft_ms} if self.worker.drafts is not None else {})}

    def memory_bytes(self) -> int:
        """What this model holds in memory: its weights, and its KV cache when full (f16 K and V
        for every cell of every layer), read from the GGUF's hyperparameters; the same for its
        draft model, if it has one."""
        return int(self.worker.model.size_bytes) + self.n_ctx * self.worker.kv_bytes_per_cell + self.worker.draft_bytes

    def end_all(self, error: BotframeworkError) -> int:
        """End every queued and running request with `error` (a drain's end); how many."""
        scheduler = self.worker.scheduler
        return self.worker.call(lambda: scheduler.end_all(error), timeout_s=CALL_TIMEOUT_S)

    def export_sessions(self) -> list[SavedSession]:
        """Take every chat session's KV state out of this model (idle in a slot, or already
        stored in RAM or on disk), so that the sessions outlive its unloading: the registry
        hands them to the next load (import_sessions). Call with no request in flight."""
        worker = self.worker

        def run() -> list[SavedSession]:
            scheduler = worker.scheduler
            out = [SavedSession(slot.session_id, list(slot.cached), worker.context.state_seq_get(slot.seq_id))
                   for slot in scheduler.slots if slot.session_id is not None and slot.owner is None and slot.cached]
            store = scheduler.kv.sessions
            for session_id in store.keys():
                data, tokens = store.take(session_id)
                out.append(SavedSession(session_id, tokens, data))
            return out

        return worker.call(run, timeout_s=60.0)

    def import_sessions(self, sessions: Sequence[SavedSession]) -> list[str]:
        """Sessions exported by an earlier load of the same model: stored (RAM, spilled to disk by
        the usual budgets) and restored into a slot by each one's next turn. Each state is first
        restored once into an empty sequence: one that llama.cpp refuses (a file with the right
        identity and checksum but a broken state) is dropped here, with a warning, and its
        session starts over, instead of failing a later step with every request in it. Returns
        the ids of the sessions dropped."""
        worker = self.worker
        store = worker.scheduler.kv.sessions

        def run() -> list[str]:
            spare = next((slot.seq_id for slot in worker.scheduler.slots if slot.free and not slot.cached), None)
            dropped: list[str] = []
            for saved in sessions:
                if spare is not None and not _restores(worker.context, spare, saved):
                    log.warning("session %r: its saved state does not restore into this model; it starts over",
                                saved.session_id)
                    dropped.append(saved.session_id)
                    continue
                store.prepare_save(saved.session_id, saved.tokens)
                store.complete_save(saved.session_id, saved.data)
            return dropped

        return worker.call(run, timeout_s=60.0)

    def embed(self, inputs: list[str] | list[list[int]]) -> list[np.ndarray]:
        """One vector per text or token-id list (see ModelWorker.embed)."""
        return self.worker.embed(inputs)

    def embed_submit(self, inputs: list[str] | list[list[int]], *, inline_tokens: int = 0
                     ) -> tuple[list[concurrent.futures.Future[np.ndarray]], int]:
        return self.worker.embed_submit(inputs, inline_tokens=inline_tokens)

    def close(self) -> None:
        self.templates.close()
        self.worker.close()


def kv_audit(worker: ModelWorker) -> dict[str, int]:
    """What llama.cpp's KV cache holds per slot against what the scheduler says it caches (on
    the engine thread). num_cached_tokens: the slots' cached prefixes; num_uncached_kv_tokens:
    positions an idle slot's sequence holds past its cached prefix, which nothing would ever
    reuse or free (0 when the bookkeeping is right; the load test asserts it once idle)."""
    memory = worker.context.memory
    cached = uncached = 0
    for slot in worker.scheduler.slots:
        cached += len(slot.cached)
        if slot.owner is None:
            uncached += max(0, memory.pos_max(slot.seq_id) + 1 - len(slot.cached))
    return {"num_cached_tokens": cached, "num_uncached_kv_tokens": uncached}


def _restores(context: Context, seq_id: int, saved: SavedSession) -> bool:
    """Whether llama.cpp takes `saved`'s state into the empty sequence `seq_id`, ending at the
    position of its last token (not pos_min: a sliding-window cache drops the early cells); the
    sequence is empty again afterwards."""
    memory = context.memory
    try:
        context.state_seq_set(seq_id, saved.data)
        return memory.pos_max(seq_id) == len(saved.tokens) - 1
    except NativeError:
        return False
    finally:
        memory.seq_rm(seq_id, -1, -1)


def load_model(spec: str, config: WorkerConfig, *, name: str | None = None,
               allowed_dirs: Sequence[Path] | None = None, pull_missing: bool = False,
               chat_template: str | None = None, progress: bool = False, kind: str | None = None) -> ModelHandle:
    """Resolve (and pull) the model, start its engine thread, load its chat templates. Blocking.

    `name`: the id clients use (default: model_id_for(spec)); `allowed_dirs`: where a local
    path may live; `chat_template`: a Jinja template instead of the model's own."""
    from botframework.native.shim import ChatTemplates
    from botframework.runtime.pull import resolve_model
    from botframework.runtime.worker import ModelWorker

    model_id = name or model_id_for(spec)
    path = resolve_model(spec, allowed_dirs=list(allowed_dirs) if allowed_dirs else None,
                         pull_missing=pull_missing, progress=progress)
    if config.draft_model is not None:  # a catalog name, hf: spec or path, resolved as the model is
        config = replace(config, draft_model=resolve_model(
            str(config.draft_model), allowed_dirs=list(allowed_dirs) if allowed_dirs else None,
            pull_missing=pull_missing, progress=progress))
    worker = ModelWorker(path, config, name=model_id)
    try:
        templates = ChatTemplates(worker.model, chat_template)
    except BaseException:
        worker.close()
        raise
    return ModelHandle(model_id, worker, templates, path=path, kind=kind)
