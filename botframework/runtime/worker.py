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
import collections
import concurrent.futures
import functools
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from botframework.config import WorkerConfig, default_threads
from botframework.engine.detokenizer import IncrementalDetokenizer
from botframework.engine.engine import Engine
from botframework.errors import BotframeworkError, ClosedError, InvalidRequestError, NativeError
from botframework.native.batch import Batch
from botframework.native.context import Context, ContextParams
from botframework.native.model import Model, ModelParams
from botframework.scheduler.output import Delta, FinishReason, RequestHandle, batched
from botframework.scheduler.scheduler import Scheduler, SchedulerConfig
from botframework.scheduler.sequence import Request, Sequence
from botframework.scheduler.session_store import SessionStore

T = TypeVar("T")
log = logging.getLogger("botframework.runtime")


@dataclass
class WorkerMetrics:
    num_steps: int = 0
    num_step_tokens: int = 0
    decode_ms: float = 0.0
    sample_ms: float = 0.0
    schedule_ms: float = 0.0       # Python time outside llama_decode and sampling


class ModelWorker:
    def __init__(self, model_path: str | os.PathLike[str], config: WorkerConfig | None = None,
                 *, name: str | None = None) -> None:
        config = config or WorkerConfig()
        self.config = config
        self.name = name or Path(model_path).stem
        decode_threads, batch_threads = default_threads()
        self.n_threads = config.n_threads or decode_threads
        self.n_threads_batch = config.n_threads_batch or config.n_threads or batch_threads
        self.model = Model(model_path, ModelParams(n_gpu_layers=config.n_gpu_layers, hugepages=config.hugepages))
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
        self._embed_jobs: collections.deque[_EmbedJob] = collections.deque()  # engine thread only
        self.embed_piece_tokens = config.embed_piece_tokens
        self.handoff_wait_s = config.handoff_wait_s
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
        # Token ids are checked here, on the caller's thread: an exception now (a 400 over
        # HTTP). The sampler is built by the engine from the request's first plan item; one
        # that cannot be built (invalid GBNF) is the handle's first delta, before any decode.
        self.model.check_tokens(list(request.prompt_tokens))
        if request.params.sampler.logit_bias:
            self.model.check_tokens(list(request.params.sampler.logit_bias), param="logit_bias")
        handle = RequestHandle(request.request_id, self.cancel, loop)
        seq = Sequence(request, handle, IncrementalDetokenizer(self.model.token_to_piece, self.model.piece_text))

        def add() -> None:
            try:
                self.scheduler.add(seq)
            except BotframeworkError as exc:
                handle.publish(Delta(request.request_id, finish_reason=FinishReason.ERROR, error=exc))

        self._post(add)
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
        """Mean-pooled, L2-normalised embeddings, computed on the engine thread.

        Each input is a job the engine loop advances by one piece per turn, between generation
        steps (see _embed_turn): a long input no longer holds every stream for its whole
        prefill (4,000 tokens take ~10 s on 2 cores)."""
        token_lists = [self.model.tokenize(t) for t in texts]
        for i, tokens in enumerate(token_lists):
            if not tokens:
                raise InvalidRequestError(f"input {i} is empty", param="input")
        jobs = [_EmbedJob(tokens) for tokens in token_lists]
        for job in jobs:
            self._post(functools.partial(self._embed_jobs.append, job))
        return [job.result.result() for job in jobs]

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
                    while (not self._commands and not self.scheduler.has_work and not self._embed_jobs
                           and not self._closing):
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
                if self._embed_jobs:
                    self._embed_turn()
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
            while self._embed_jobs:
                self._embed_jobs.popleft().result.set_exception(ClosedError("the model was unloaded"))
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
        with batched() as waits:
            self.scheduler.update(plan, result)
        if waits:  # a request's first or last token: its event loop sends it before the next decode
            deadline = time.perf_counter() + self.handoff_wait_s
            for handle in waits:
                handle.wait_handled(max(0.0, deadline - time.perf_counter()))
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

    def _embed_turn(self) -> None:
        """Advance the first embedding job by one piece: up to embed_piece_tokens tokens of a
        causal model's input (through the KV cache, after the pieces before it), or the whole
        input of a model whose tokens attend both ways. llama.cpp mean-pools each piece (one
        ubatch); the length-weighted mean of the pieces is the mean over the input."""
        job = self._embed_jobs[0]
        try:
            ctx = self._embed_context_for(job)
            piece = self.embed_piece_tokens if ctx.causal_attn else len(job.tokens)
            tokens = job.tokens[job.done:job.done + piece]
            batch = Batch(len(tokens))
            batch.add_sequence(tokens, job.done, 0, logits_last=True)
            batch.logits[: len(tokens)] = 1  # pooled embeddings need every token marked as output
            if job.done == 0:
                ctx.memory.clear()
            ctx.decode(batch)
            job.total = job.total + ctx.embeddings_seq(0).astype(np.float64) * len(tokens)
            job.done += len(tokens)
        except Exception as exc:  # the caller's error (too long, a failed decode): theirs to raise
            self._embed_jobs.popleft()
            job.result.set_exception(exc)
            return
        if job.done == len(job.tokens):
            self._embed_jobs.popleft()
            vector = (job.total / len(job.tokens)).astype(np.float32)
            norm = float(np.linalg.norm(vector))
            job.result.set_result(vector / norm if norm > 0 else vector)

    def _embed_context_for(self, job: _EmbedJob) -> Context:
        if self._embed_context is None:
            n = min(self.model.n_ctx_train, 8192)
            # no huge-page watch: other threads are running now, their mappings are not ours
            self._embed_context = Context(self.model, ContextParams(
                n_ctx=n, n_batch=n, n_ubatch=n, n_seq_max=1, n_threads=self.n_threads,
                n_threads_batch=self.n_threads_batch, embeddings=True, pooling="mean", hugepages=False))
        ctx = self._embed_context
        capacity = min(ctx.n_ctx, ctx.n_ubatch)
        if len(job.tokens) > capacity:
            raise InvalidRequestError(
                f"input has {len(job.tokens)} tokens; the embedding context holds {capacity}", param="input")
        return ctx


@dataclass
class _EmbedJob:
    """One embedding input on its way through the engine loop (engine thread only)."""

    tokens: list[int]
    done: int = 0                          # tokens computed so far
    total: np.ndarray | float = 0.0        # sum of the pieces' means times their lengths
    result: concurrent.futures.Future[np.ndarray] = field(default_factory=concurrent.futures.Future)
