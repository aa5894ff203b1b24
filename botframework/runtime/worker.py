"""ModelWorker: one loaded model and the one thread that owns its llama_context.

    any thread / asyncio --submit(Request)--> inbox --+
                         --cancel(id)------->  inbox  |  engine thread:
                                                      +-> run commands -> schedule() -> StepPlan
                                                          -> Engine.execute -> update() -> Deltas
                                                          -> RequestHandle.publish (thread-safe)

The engine thread sleeps on a condition variable when there is no work: it never spins.
Native compute runs without the GIL, so the asyncio server keeps serving while it decodes.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np

from botframework.engine.detokenizer import IncrementalDetokenizer
from botframework.engine.engine import Engine
from botframework.errors import BotframeworkError, ClosedError, InvalidRequestError, NativeError
from botframework.native.context import Context, ContextParams
from botframework.native.model import Model, ModelParams
from botframework.native.sampler import SamplerChain
from botframework.scheduler.output import Delta, FinishReason, RequestHandle, batched
from botframework.scheduler.scheduler import Scheduler, SchedulerConfig
from botframework.scheduler.sequence import Request, Sequence
from botframework.scheduler.session_store import SessionStore

T = TypeVar("T")
EMBED_PIECE_TOKENS = 128  # tokens of a causal model's embedding input per engine command
log = logging.getLogger("botframework.runtime")


def default_threads() -> tuple[int, int]:
    """(decode threads, prompt threads): physical cores for decode, all usable CPUs for prompt."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count() or 1
    try:
        import psutil

        physical = psutil.cpu_count(logical=False) or usable
    except ImportError:  # pragma: no cover
        physical = usable
    return max(1, min(physical, usable)), max(1, usable)


@dataclass(frozen=True)
class WorkerConfig:
    n_ctx: int = 8192
    num_slots: int = 8
    max_batch_tokens: int = 512
    n_threads: int | None = None           # None: default_threads()
    n_threads_batch: int | None = None
    n_gpu_layers: int = 0
    max_waiting: int = 256
    session_ram_bytes: int = 512 << 20
    session_disk_bytes: int = 2 << 30
    session_dir: Path | None = None
    prefix_cache_bytes: int = 1 << 30      # idle prompt caches in host RAM (SchedulerConfig)
    flash_attn: str = "auto"
    hugepages: bool = True                 # weights and KV cache in 2 MiB pages (ModelParams)


@dataclass
class WorkerMetrics:
    num_steps: int = 0
    num_step_tokens: int = 0
    decode_ms: float = 0.0
    sample_ms: float = 0.0
    schedule_ms: float = 0.0       # Python time outside llama_decode and sampling


class ModelWorker:
    def __init__(self, model_path: str | os.PathLike[str], config: WorkerConfig = WorkerConfig(),
                 *, name: str | None = None) -> None:
        self.config = config
        self.name = name or Path(model_path).stem
        decode_threads, batch_threads = default_threads()
        self.n_threads = config.n_threads or decode_threads
        self.n_threads_batch = config.n_threads_batch or config.n_threads or batch_threads
        self.model = Model(model_path, ModelParams(n_gpu_layers=config.n_gpu_layers,
                                                          hugepages=config.hugepages))
        try:
            n_ctx = min(config.n_ctx, self.model.n_ctx_train) if config.n_ctx else self.model.n_ctx_train
            self.context = Context(self.model, ContextParams(
                n_ctx=n_ctx, n_batch=config.max_batch_tokens, n_ubatch=config.max_batch_tokens,
                n_seq_max=config.num_slots, n_threads=self.n_threads, n_threads_batch=self.n_threads_batch,
                flash_attn=config.flash_attn))
        except BaseException:
            self.model.close()
            raise
        self.engine = Engine(self.model, self.context)
        self.scheduler = Scheduler(
            SchedulerConfig(num_slots=config.num_slots, num_ctx=self.context.n_ctx,
                            max_batch_tokens=config.max_batch_tokens, max_waiting=config.max_waiting,
                            prefix_cache_bytes=config.prefix_cache_bytes),
            eog_tokens=self.model.eog_tokens,
            sessions=SessionStore(config.session_ram_bytes, config.session_disk_bytes, config.session_dir))
        self.metrics = WorkerMetrics()
        self._embed_context: Context | None = None
        self._embed_lock = threading.Lock()
        self._commands: list[Callable[[], object]] = []
        self._cv = threading.Condition()
        self._closing = False
        self._ids = itertools.count()
        self._thread = threading.Thread(target=self._run, name=f"botframework-engine-{self.name}", daemon=True)
        self._thread.start()

    # -- public, any thread -----------------------------------------------------------------
    @property
    def n_ctx(self) -> int:
        return self.context.n_ctx

    def new_request_id(self) -> str:
        return f"req-{os.getpid()}-{next(self._ids)}"

    def submit(self, request: Request, loop: asyncio.AbstractEventLoop | None = None) -> RequestHandle:
        """Queue a request; errors (busy, context overflow) arrive as the handle's final Delta."""
        self.model.check_tokens(list(request.prompt_tokens))
        # Built here, on the caller's thread: a bad logit_bias or grammar is the caller's error
        # (an exception now, a 400 over HTTP), never something the engine thread trips on.
        sampler = SamplerChain(self.model, request.params.sampler)
        handle = RequestHandle(request.request_id, self.cancel, loop)
        seq = Sequence(request, handle, IncrementalDetokenizer(self.model.token_to_piece))

        def add() -> None:
            try:
                self.scheduler.add(seq)
            except BotframeworkError as exc:
                sampler.close()
                handle.publish(Delta(request.request_id, finish_reason=FinishReason.ERROR, error=exc))
            else:
                self.engine.adopt(request.request_id, sampler)

        try:
            self._post(add)
        except ClosedError:
            sampler.close()
            raise
        return handle

    def cancel(self, request_id: str) -> None:
        self._post(lambda: self.scheduler.cancel(request_id))

    def cancel_session(self, session_id: str) -> None:
        self._post(lambda: self.scheduler.cancel_session(session_id))

    def call(self, fn: Callable[[], T], timeout_s: float | None = None) -> T:
        """Run fn on the engine thread between steps and return its result."""
        done = threading.Event()
        box: dict[str, object] = {}

        def run() -> None:
            try:
                box["value"] = fn()
            except BaseException as exc:  # handed back to the caller
                box["error"] = exc
            finally:
                done.set()

        self._post(run)
        if not done.wait(timeout_s):
            raise TimeoutError("the engine thread did not answer in time")
        if "error" in box:
            raise box["error"]  # type: ignore[misc]
        return box["value"]  # type: ignore[return-value]

    def clear_prefix_cache(self) -> int:
        """Forget cached prompt prefixes of idle slots (sessions keep theirs)."""
        return self.call(self.scheduler.clear_prefix_cache)

    def stats(self) -> dict[str, int]:
        return self.call(self.scheduler.stats)

    def embed(self, texts: list[str]) -> list[np.ndarray]:
        """Mean-pooled, L2-normalised embeddings, computed on the engine thread."""
        token_lists = [self.model.tokenize(t) for t in texts]
        for i, tokens in enumerate(token_lists):
            if not tokens:
                raise InvalidRequestError(f"input {i} is empty", param="input")
        return [self._embed_tokens(tokens) for tokens in token_lists]

    def _embed_tokens(self, tokens: list[int]) -> np.ndarray:
        """One input, in engine commands of at most EMBED_PIECE_TOKENS tokens for a causal model
        (one for the whole input otherwise): running generations get a step between pieces
        instead of waiting for the whole input (4,000 tokens take ~10 s on 2 cores). Each piece
        is one ubatch whose mean llama.cpp pools; the length-weighted mean of the pieces is the
        mean over the input. The lock keeps another input's pieces out of the sequence."""
        with self._embed_lock:
            causal, capacity = self.call(self._embed_context_info)
            if len(tokens) > capacity:
                raise InvalidRequestError(
                    f"input has {len(tokens)} tokens; the embedding context holds {capacity}", param="input")
            piece = EMBED_PIECE_TOKENS if causal else len(tokens)
            total = np.zeros(self.model.n_embd, dtype=np.float64)
            for start in range(0, len(tokens), piece):
                chunk = tokens[start:start + piece]
                total += self.call(functools.partial(self._embed_piece, chunk, start)) * len(chunk)
        vector = (total / len(tokens)).astype(np.float32)
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm > 0 else vector

    def close(self) -> None:
        with self._cv:
            if self._closing:
                return
            self._closing = True
            self._cv.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def __enter__(self) -> ModelWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- engine thread ----------------------------------------------------------------------
    def _post(self, command: Callable[[], object]) -> None:
        with self._cv:
            if self._closing:
                raise ClosedError(f"model worker {self.name!r} is closed")
            self._commands.append(command)
            self._cv.notify()

    def _run(self) -> None:
        try:
            while True:
                with self._cv:
                    while not self._commands and not self.scheduler.has_work and not self._closing:
                        self._cv.wait()
                    commands, self._commands = self._commands, []
                    closing = self._closing
                for command in commands:
                    try:
                        command()
                    except Exception:  # a command must never take the engine thread down
                        log.exception("engine command failed")
                if closing:
                    break
                if self.scheduler.has_work:
                    try:
                        self._step()
                    except Exception as exc:  # unexpected: fail this step's requests, keep serving
                        log.exception("engine step failed")
                        self._recover(BotframeworkError(f"internal engine error: {exc}"))
        finally:
            self.scheduler.fail_all(ClosedError("the model was unloaded"))
            for seq in list(self.scheduler.waiting):
                self.scheduler.cancel(seq.request_id)
            self.engine.close()
            if self._embed_context is not None:
                self._embed_context.close()
            self.context.close()
            self.model.close()

    def _step(self) -> None:
        t0 = time.perf_counter()
        plan = self.scheduler.schedule()
        try:
            result = self.engine.execute(plan)
        except NativeError as exc:
            self._recover(exc)
            return
        with batched():
            self.scheduler.update(plan, result)
        t1 = time.perf_counter()
        m = self.metrics
        m.num_steps += 1
        m.num_step_tokens += result.num_tokens
        m.decode_ms += result.decode_ms
        m.sample_ms += result.sample_ms
        m.schedule_ms += (t1 - t0) * 1e3 - result.decode_ms - result.sample_ms

    def _recover(self, error: BotframeworkError) -> None:
        """A step failed as a whole: end its requests, drop every cell, keep serving."""
        self.context.memory.clear()
        self.scheduler.reset_after_failure(error)

    def _embed_context_info(self) -> tuple[bool, int]:
        """(causal attention, tokens an input may have), creating the embedding context."""
        if self._embed_context is None:
            n = min(self.model.n_ctx_train, 8192)
            self._embed_context = Context(self.model, ContextParams(
                n_ctx=n, n_batch=n, n_ubatch=n, n_seq_max=1, n_threads=self.n_threads,
                n_threads_batch=self.n_threads_batch, embeddings=True, pooling="mean"))
        ctx = self._embed_context
        return ctx.causal_attn, min(ctx.n_ctx, ctx.n_ubatch)

    def _embed_piece(self, tokens: list[int], start: int) -> np.ndarray:
        """The mean of the last hidden states of tokens[start:] after the cached 0..start-1."""
        ctx = self._embed_context
        assert ctx is not None
        from botframework.native.batch import Batch

        batch = Batch(len(tokens))
        batch.add_sequence(tokens, start, 0, logits_last=True)
        batch.logits[: len(tokens)] = 1  # pooled embeddings need every token marked as output
        if start == 0:
            ctx.memory.clear()
        ctx.decode(batch)
        return ctx.embeddings_seq(0)
