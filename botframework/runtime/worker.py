"""ModelWorker: one loaded model and the one thread that owns its llama_context.

    any thread / asyncio --submit(Request)--> inbox --+
                         --cancel(id)------->  inbox  |  engine thread:
                                                      +-> run commands -> schedule() -> StepPlan
                                                          -> Engine.execute -> update() -> Deltas
                                                          -> RequestHandle.publish (thread-safe)

The engine thread sleeps on a condition variable when there is no work: it never spins.
Native compute runs without the GIL, so the asyncio server keeps serving while it decodes.
Step hooks (add_step_hook) see every step's StepPlan and StepResult on the engine thread,
after its deltas are published (botframework.trace records them: serve --trace).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import functools
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from botframework.config import (
    INLINE_EMBED_TOKENS,
    INLINE_STEP_TOKENS,
    WorkerConfig,
    auto_slots,
    default_threads,
    fit_context,
    kv_bytes_per_cell,
)
from botframework.engine.detokenizer import IncrementalDetokenizer
from botframework.engine.draft_model import DraftModel
from botframework.engine.engine import Engine
from botframework.engine.step import NativeStream, RunResult, StepPlan, StepResult
from botframework.errors import BotframeworkError, ClosedError, InvalidRequestError, ModelLoadError, NativeError
from botframework.native._lib import ffi
from botframework.native.batch import Batch
from botframework.native.context import Context, ContextParams
from botframework.native.cores import CORES
from botframework.native.model import Model, ModelParams
from botframework.native.omp import release_compute_threads
from botframework.scheduler.output import Delta, FinishReason, RequestHandle, batched
from botframework.scheduler.scheduler import Scheduler, SchedulerConfig
from botframework.scheduler.sequence import Request, Sequence
from botframework.scheduler.session_store import SessionStore

T = TypeVar("T")
log = logging.getLogger("botframework.runtime")
StepHook = Callable[[StepPlan, StepResult], object]


@dataclass
class WorkerMetrics:
    num_steps: int = 0
    num_step_tokens: int = 0
    num_runs: int = 0              # native calls that ran several steps (Engine.run_steps); their steps count above
    decode_ms: float = 0.0
    sample_ms: float = 0.0
    schedule_ms: float = 0.0       # Python time outside llama_decode and sampling (and the draft model)
    draft_ms: float = 0.0          # the draft model's decodes and argmax (speculative decoding)


def describe_placement(placement: dict[str, Any], asked: object) -> str:
    """Where a model's layers went, for the log and `botframework ps`: "all layers on the CPU",
    "-1 layers (all) on RPC0 (10.0.0.5:50052), RPC1 (...) (auto: fits ...)"."""
    layers = placement.get("n_gpu_layers", 0)
    devices = placement.get("devices", [])
    if layers == 0 or not devices:
        where = "all layers on the CPU"
    else:
        split = placement.get("tensor_split")
        names = ", ".join(f"{d['name']} ({d['description']}{f', {split[i]:g}' if split else ''})"
                          for i, d in enumerate(devices))
        where = f"{'all' if layers < 0 else layers} layers offloaded to {names}"
    if asked == "auto":
        where += f" (n_gpu_layers auto: {placement.get('fit', 'no GPU or RPC device')})"
    return where


def check_same_vocab(target: Model, draft: Model, name: str, path: Path) -> None:
    """ModelLoadError unless the draft model's tokens are the target's: the same vocabulary
    size, special tokens and pieces (a sample spread over the vocabulary, and the specials)."""
    why = ""
    if draft.n_vocab != target.n_vocab:
        why = f"{draft.n_vocab} tokens against the target's {target.n_vocab}"
    elif draft.special.eos != target.special.eos or draft.special.bos != target.special.bos:
        why = "different BOS/EOS tokens"
    else:
        n = target.n_vocab
        sample = sorted({*range(min(n, 8)), *range(0, n, max(1, n // 61)), n - 1})
        bad = next((t for t in sample
                    if draft.token_to_piece(t, special=True) != target.token_to_piece(t, special=True)), None)
        if bad is not None:
            why = (f"token {bad} is {draft.token_to_piece(bad, special=True)!r} there, "
                   f"{target.token_to_piece(bad, special=True)!r} here")
    if why:
        raise ModelLoadError(f"draft model {path.name} does not share model {name!r}'s vocabulary ({why}); "
                             "a draft model needs the same tokenizer")


def can_draft(model: Model, name: str, config: WorkerConfig) -> bool:
    """Whether the model's sequences may draft: not a recurrent or hybrid one, whose memory
    cannot drop rejected draft cells (llama_memory_seq_rm refuses a partial removal)."""
    if not (model.is_recurrent or model.is_hybrid):
        return True
    log.log(logging.WARNING if config.speculative != "none" else logging.INFO,
            "model %r is %s: speculative decoding off (its memory cannot drop rejected draft tokens)",
            name, "recurrent" if model.is_recurrent else "hybrid")
    return False


class ModelWorker:
    def __init__(self, model_path: str | os.PathLike[str], config: WorkerConfig | None = None,
                 *, name: str | None = None) -> None:
        config = config or WorkerConfig()
        self.config = config
        self.name = name or Path(model_path).stem
        self.draft_bytes = 0  # a draft model's weights and KV cache
        decode_threads, batch_threads = default_threads()
        self.n_threads = config.n_threads or decode_threads
        self.n_threads_batch = config.n_threads_batch or config.n_threads or batch_threads
        self.model = Model(model_path, ModelParams(
            n_gpu_layers=config.n_gpu_layers, hugepages=config.hugepages, repack=config.repack,
            rpc_servers=config.rpc_servers,
            fit_n_ctx=config.n_ctx or 4096, fit_n_seq=config.num_slots or 1))
        try:
            n_ctx = min(config.n_ctx, self.model.n_ctx_train) if config.n_ctx else self.model.n_ctx_train
            self.kv_bytes_per_cell = kv_bytes_per_cell(self.model.metadata())
            try:  # the context that fits the memory budget beside the weights; slots from it
                n_ctx = fit_context(n_ctx, self.model.size_bytes, self.kv_bytes_per_cell, config.memory_budget_bytes)
            except ValueError as exc:
                raise ModelLoadError(f"model {self.name!r}: {exc}") from None
            self.num_slots = config.num_slots or auto_slots(n_ctx)
            self.context = Context(self.model, ContextParams(
                n_ctx=n_ctx, n_batch=config.max_batch_tokens, n_ubatch=config.max_batch_tokens,
                n_seq_max=self.num_slots, n_threads=self.n_threads, n_threads_batch=self.n_threads_batch,
                flash_attn=config.flash_attn))
            # (not for an embedding model, nor one that cannot draft: see can_draft)
            self.drafts = self._load_draft_model(config) if config.draft_model is not None \
                and self.context.causal_attn and not (self.model.is_recurrent or self.model.is_hybrid) else None
        except BaseException:
            self.model.close()
            raise
        log.info("model %r: %d KV cells shared by %d slots%s; %s", self.name, self.context.n_ctx, self.num_slots,
                 "" if config.num_slots else " (auto)", describe_placement(self.model.placement, config.n_gpu_layers))
        self.engine = Engine(self.model, self.context)
        self.scheduler = Scheduler(
            SchedulerConfig(num_slots=self.num_slots, num_ctx=self.context.n_ctx,
                            max_batch_tokens=config.max_batch_tokens, max_waiting=config.max_waiting,
                            prefix_cache_bytes=config.prefix_cache_bytes,
                            speculative="none" if config.speculative == "model" and self.drafts is None
                            else config.speculative,
                            draft_max=config.draft_max, draft_by_cost=config.draft_by_cost,
                            can_draft=can_draft(self.model, self.name, config), run_steps=config.run_steps),
            eog_tokens=self.model.eog_tokens,
            sessions=SessionStore(config.session_ram_bytes, config.session_disk_bytes, config.session_dir),
            draft_source=self.drafts)
        self.metrics = WorkerMetrics()
        self._embed_context: Context | None = None
        self._embed_batch_buffer: Batch | None = None  # one batch of n_ubatch tokens, reused
        self._embed_jobs: collections.deque[_EmbedJob] = collections.deque()  # engine thread only
        self.embed_piece_tokens = config.embed_piece_tokens
        self.embed_batch_tokens = max(1, config.embed_batch_tokens)
        self.embed_single_thread_tokens = config.embed_single_thread_tokens
        self._embed_threads = (self.n_threads, self.n_threads_batch)  # the embedding context's, as made
        self.handoff_wait_s = config.handoff_wait_s
        self._commands: list[Callable[[], object]] = []
        self._step_hooks: list[StepHook] = []  # replaced, never changed in place: read without a lock
        if config.trace is not None:
            config.trace.attach(self)
        self._cv = threading.Condition()
        self._closing = False
        self._idle = False  # the engine thread waits for work (under self._cv)
        self._inline_loops: set[asyncio.AbstractEventLoop] = set()  # (under self._cv) see _note_inline_pool
        # (under self._cv) the engine thread may hold an OpenMP pool; an inline turn asked it to let go
        self._has_pool = True
        self._pool_release_asked = False
        # nonzero: a run of steps (Engine.run_steps) ends after its current one; set with every
        # notify of self._cv (new work) and by a thread that waits for the cores
        self._interrupt = ffi.new("int32_t[1]")
        self._ids = itertools.count()
        self._thread = threading.Thread(target=self._run, name=f"botframework-engine-{self.name}", daemon=True)
        self._thread.start()

    # -- public, any thread -----------------------------------------------------------------
    @property
    def n_ctx(self) -> int:
        return self.context.n_ctx

    def new_request_id(self) -> str:
        return f"req-{os.getpid()}-{next(self._ids)}"

    def submit(self, request: Request, loop: asyncio.AbstractEventLoop | None = None, *,
               inline: bool = False) -> RequestHandle:
        """Queue a request; errors (busy, context overflow) arrive as the handle's final Delta.
        `inline`: a request answered in one step (max_tokens 1, a prompt of at most
        INLINE_STEP_TOKENS) runs that step on the calling thread if the engine thread is idle
        (_step_inline); its deltas are queued on the handle when this returns."""
        # Token ids are checked here, on the caller's thread: an exception now (a 400 over
        # HTTP). The sampler is built by the engine from the request's first plan item; one
        # that cannot be built (invalid GBNF) is the handle's first delta, before any decode.
        self.model.check_tokens(list(request.prompt_tokens))
        if request.params.sampler.logit_bias:
            self.model.check_tokens(list(request.params.sampler.logit_bias), param="logit_bias")
        handle = RequestHandle(request.request_id, self.cancel, loop)
        seq = Sequence(request, handle, IncrementalDetokenizer(self.model.token_to_piece, self.model.piece_text))
        if inline and request.params.max_tokens == 1 and len(request.prompt_tokens) <= INLINE_STEP_TOKENS \
                and self._step_inline(seq):
            return handle
        self._post(functools.partial(self._add, seq))
        return handle

    def _add(self, seq: Sequence) -> None:
        try:
            self.scheduler.add(seq)
        except BotframeworkError as exc:
            seq.handle.publish(Delta(seq.request_id, finish_reason=FinishReason.ERROR, error=exc))

    def _step_inline(self, seq: Sequence) -> bool:
        """Add the request and run a step on the calling thread, if the engine thread is idle
        (waiting for work, none queued), no step hook watches (they run on the engine thread),
        admitting it costs only its own prefill (Scheduler.admits_cheaply: nothing to restore,
        evict or move to RAM, no grammar) and the cores are free at once: the engine thread
        waits on the lock held here meanwhile, as it would behind a command. A one-token answer
        is then done without the hop to the engine thread and back (two wake-ups, two
        hand-overs of the GIL). Should the step not finish it, the engine thread takes over.
        False: nothing done, queue it."""
        with self._cv:
            if (not self._engine_idle() or self._step_hooks or self.scheduler.has_work
                    or not self.scheduler.admits_cheaply(seq)):
                return False
            # the cores now or not at all: never wait here behind another model's decode (the
            # caller may be the event loop)
            with CORES.hold(max(self.n_threads, self.n_threads_batch), wait=False) as held:
                if not held:
                    return False
                try:
                    self._add(seq)
                    if self.scheduler.has_work:
                        # no hand-over wait: the consumer may be this thread's own event loop
                        self._guarded_step(handoff=False)
                        self._note_inline_pool()
                finally:
                    if self.scheduler.has_work:  # (whatever happened) the engine thread goes on
                        self._wake()
        return True

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

    def add_step_hook(self, hook: StepHook) -> None:
        """Call hook(plan, result) on the engine thread after every generation step, once the
        scheduler has published the step's deltas; result.step_ms is the whole step (schedule,
        execute, update). Any thread may add one. It runs inside the step: keep it short. One
        that raises is logged and removed."""
        self._step_hooks = [*self._step_hooks, hook]

    def remove_step_hook(self, hook: StepHook) -> None:
        self._step_hooks = [h for h in self._step_hooks if h is not hook]

    def clear_prefix_cache(self) -> int:
        """Forget cached prompt prefixes of idle slots (sessions keep theirs)."""
        return self.call(self.scheduler.clear_prefix_cache)

    def stats(self) -> dict[str, int]:
        return self.call(self.scheduler.stats)

    def embed(self, inputs: Iterable[str | Iterable[int]]) -> list[np.ndarray]:
        """Pooled, L2-normalised embeddings, one per input, computed on the engine thread (a
        lone short one on this thread when the engine is idle: see embed_submit); blocks until
        all are done (embed_submit is the same without waiting)."""
        futures, _num_tokens = self.embed_submit(inputs, inline_tokens=INLINE_EMBED_TOKENS)
        return [future.result() for future in futures]

    def embed_submit(self, inputs: Iterable[str | Iterable[int]], *, inline_tokens: int = 0
                     ) -> tuple[list[concurrent.futures.Future[np.ndarray]], int]:
        """Queue one embedding job per input; their futures and the number of tokens.

        An input is a text (tokenized with the model's special tokens, [CLS] ... [SEP] for
        BERT) or a list of token ids, taken as they are. Each is a job the engine loop runs
        between generation steps (see _embed_turn): a model whose tokens attend both ways
        computes many inputs in one llama_decode, pooled as its GGUF says; a causal model
        computes one input a piece per turn, so a long one does not hold every stream for its
        whole prefill (4,000 tokens take ~10 s on 2 cores). InvalidRequestError (param
        "input") for an empty input, a token id outside the vocabulary, or an input longer
        than the embedding context; nothing is queued then. The server awaits the futures on
        its event loop (one wake-up, no thread in between).

        `inline_tokens`: a lone input of at most this many tokens for a model whose tokens
        attend both ways may be computed on the calling thread, done when this returns (see
        _embed_inline); 0 never."""
        token_lists: list[list[int]] = []
        limit = self._embed_token_limit()
        for i, item in enumerate(inputs):
            if isinstance(item, str):
                tokens = self.model.tokenize(item)
            else:
                tokens = [int(t) for t in item]
                self.model.check_tokens(tokens, param="input")
            if not tokens:
                raise InvalidRequestError(f"input {i} is empty", param="input")
            if len(tokens) > limit:
                raise InvalidRequestError(
                    f"input {i} has {len(tokens)} tokens; the embedding context holds {limit}", param="input")
            token_lists.append(tokens)
        jobs = [_EmbedJob(tokens) for tokens in token_lists]
        if not (len(jobs) == 1 and len(jobs[0].tokens) <= inline_tokens and self._embed_inline(jobs[0])):
            self._post(functools.partial(self._embed_jobs.extend, jobs))
        return [job.result for job in jobs], sum(len(tokens) for tokens in token_lists)

    def _embed_inline(self, job: _EmbedJob) -> bool:
        """Compute one input on the calling thread, if the engine thread is idle (waiting for
        work, none queued), the cores are free at once (native/cores.py) and the embedding
        context exists and batches whole inputs: the engine thread waits on the lock held
        here meanwhile, as it would behind a command. Saves the hop to the engine thread and
        back (two thread wake-ups, two hand-overs of the GIL: ~0.2 ms of a ~3.5 ms
        one-sentence request on 2 cores). False: not done, queue it."""
        with self._cv:
            ctx = self._embed_context
            if not self._engine_idle() or ctx is None or ctx.causal_attn:
                return False
            # the cores now or not at all: never wait here behind another model's decode (the
            # caller may be the event loop); the most the turn may use (see _embed_batch)
            with CORES.hold(max(ctx.cores_for(len(job.tokens)), self.n_threads, self.n_threads_batch),
                            wait=False) as held:
                if not held:
                    return False
                self._embed_jobs.append(job)
                self._embed_turn()
                self._note_inline_pool()
        return True

    def _note_inline_pool(self) -> None:
        """(self._cv held) The calling thread has just computed an inline turn, so libgomp keeps
        a pool of OpenMP workers for it: when the engine thread next has work, that pool goes
        (on the thread's event loop, at its next turn), so that the engine thread's decodes are
        not throttled by it (native/omp.py). A thread without a running event loop keeps its
        pool until it ends. The idle engine thread lets its own pool go for the same reason,
        as soon as it has the lock back (this turn may still be throttled; the next are not)."""
        if self._has_pool and not self._pool_release_asked:
            self._pool_release_asked = True
            self._cv.notify()
        try:
            self._inline_loops.add(asyncio.get_running_loop())
        except RuntimeError:
            pass

    def _release_inline_pools(self) -> None:
        """(self._cv held, engine thread) Each event loop that computed inline turns frees its
        thread's OpenMP pool at its next turn; a thread computing inline again starts a new one."""
        loops, self._inline_loops = self._inline_loops, set()
        for loop in loops:
            try:
                loop.call_soon_threadsafe(release_compute_threads)
            except RuntimeError:  # that loop is closed
                pass

    def close(self) -> None:
        with self._cv:
            if self._closing:
                return
            self._closing = True
            self._wake()
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def __enter__(self) -> ModelWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _load_draft_model(self, config: WorkerConfig) -> DraftModel:
        """The draft model and its context (one KV sequence per slot, the target's cells);
        ModelLoadError unless it shares the target's vocabulary and can drop draft cells."""
        path = Path(config.draft_model)  # type: ignore[arg-type]
        draft = Model(path, ModelParams(n_gpu_layers=config.n_gpu_layers, hugepages=config.hugepages,
                                        repack=config.repack, rpc_servers=config.rpc_servers,
                                        fit_n_ctx=self.context.n_ctx, fit_n_seq=self.num_slots))
        try:
            check_same_vocab(self.model, draft, self.name, path)
            if draft.is_recurrent or draft.is_hybrid:
                raise ModelLoadError(f"draft model {path.name}: a recurrent or hybrid model cannot drop "
                                     "rejected draft tokens from its memory")
            context = Context(draft, ContextParams(
                n_ctx=self.context.n_ctx, n_batch=config.max_batch_tokens, n_ubatch=config.max_batch_tokens,
                n_seq_max=self.num_slots, n_threads=self.n_threads, n_threads_batch=self.n_threads_batch,
                flash_attn=config.flash_attn))
        except BaseException:
            draft.close()
            raise
        # its weights and, when full, its KV cache: counted in the model's memory (memory_bytes)
        self.draft_bytes = int(draft.size_bytes) + context.n_ctx * kv_bytes_per_cell(draft.metadata())
        log.info("model %r: draft model %s (%d layers, %.0f MB with its KV cache)", self.name, path.name,
                 draft.num_layers, self.draft_bytes / 1e6)
        return DraftModel(context)

    # -- engine thread ----------------------------------------------------------------------
    def _post(self, command: Callable[[], object]) -> None:
        with self._cv:
            if self._closing:
                raise ClosedError(f"model worker {self.name!r} is closed")
            self._commands.append(command)
            self._wake()

    def _wake(self) -> None:
        """(self._cv held) New work for the engine thread: it wakes, and a run of steps under
        way ends after its current one."""
        self._interrupt[0] = 1
        self._cv.notify()

    def _engine_idle(self) -> bool:
        """(self._cv held) The engine thread waits for work and none is queued: the caller may
        do a turn of its work on its own thread, holding the lock meanwhile."""
        return self._idle and not (self._commands or self._embed_jobs or self._closing)

    def _run(self) -> None:
        try:
            while True:
                with self._cv:
                    while (not self._commands and not self.scheduler.has_work and not self._embed_jobs
                           and not self._closing):
                        self._idle = True  # (read under the lock by _embed_inline)
                        if not self._has_pool:
                            self._cv.wait()
                        elif self._pool_release_asked or not self._cv.wait(_RELEASE_THREADS_AFTER_S):
                            # idle a while, or another thread computes now: the OpenMP pool goes
                            # (native/omp.py; the loop checks for work again first)
                            release_compute_threads()
                            self._has_pool = self._pool_release_asked = False
                    self._idle = False
                    self._has_pool = True  # (it computes now, or soon)
                    if self._inline_loops:  # their threads' OpenMP pools would throttle ours (native/omp.py)
                        self._release_inline_pools()
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
                    self._guarded_step()
        finally:
            self.scheduler.fail_all(ClosedError("the model was unloaded"))
            for seq in list(self.scheduler.waiting):
                self.scheduler.cancel(seq.request_id)
            self.engine.close()
            if self.drafts is not None:
                self.drafts.close()
                self.drafts.context.close()
                self.drafts.context.model.close()
            while self._embed_jobs:
                self._embed_jobs.popleft().result.set_exception(ClosedError("the model was unloaded"))
            if self._embed_context is not None:
                self._embed_context.close()
            if self._embed_batch_buffer is not None:
                self._embed_batch_buffer.close()
            self.context.close()
            self.model.close()

    def _begin_streams(self, plan: StepPlan) -> tuple[list[RequestHandle], tuple[NativeStream | None, ...]] | None:
        """For a run (Scheduler.run_length): each streamed request's NativeStream (its
        handle's begin_native; end_native after the run), None for the others; ([], ()) when
        none streams; None when one cannot be sent natively now (no run then: its tokens would
        wait for the run's end)."""
        handles: list[RequestHandle] = []
        streams: list[NativeStream | None] = []
        try:
            for item in plan.items:
                seq = self.scheduler.active[item.request_id]
                if not seq.request.stream:
                    streams.append(None)
                    continue
                params = seq.handle.begin_native()
                if params is None:
                    _end_streams(handles)
                    return None
                handles.append(seq.handle)
                fd, head, tail, rstrip, pending, *numbered = params  # (+ number, number_tail)
                streams.append(NativeStream(fd, head, tail, rstrip, pending, self.scheduler.send_budget(item),
                                            *numbered))
        except BaseException:
            _end_streams(handles)
            raise
        return handles, tuple(streams) if handles else ()

    def _guarded_step(self, handoff: bool = True) -> None:
        try:
            self._step(handoff)
        except Exception as exc:  # unexpected: fail this step's requests, keep serving
            log.exception("engine step failed")
            self._recover(BotframeworkError(f"internal engine error: {exc}"))

    def _step(self, handoff: bool = True) -> None:
        """schedule -> execute -> update. `handoff`: wait (up to handoff_wait_s) for the event
        loops given a request's first or last delta to take it before the next decode. A plan
        the scheduler's run_length lets run (plain whole answers, natively sent streams) goes
        on for several steps in one native call (Engine.run_steps), unless step hooks watch
        every step."""
        t0 = time.perf_counter()
        draft_ms = self.drafts.draft_ms if self.drafts is not None else 0.0
        plan = self.scheduler.schedule()
        if self.drafts is not None:  # (schedule() ran the draft model)
            draft_ms = self.drafts.draft_ms - draft_ms
        steps, stop_on_eog, stop_bytes = (0, (), b"") if self._step_hooks else self.scheduler.run_length(plan)
        streams: tuple[NativeStream | None, ...] = ()
        handles: list[RequestHandle] = []
        if steps and self._arm_interrupt():
            begun = self._begin_streams(plan)
            if begun is None:
                steps = 0
            else:
                handles, streams = begun
        else:
            steps = 0
        result: StepResult | RunResult
        try:
            if steps:
                result = self.engine.run_steps(plan, steps, stop_on_eog, self._interrupt, stop_bytes, streams)
            else:
                result = self.engine.execute(plan)
        except NativeError as exc:
            # a chunk a stream's socket took only in part must be finished before the error event
            for item, sent in zip(plan.items, getattr(exc, "sent", ()), strict=False):
                if sent is not None and sent.rest:
                    self.scheduler.active[item.request_id].handle.publish_native(
                        Delta(item.request_id), sent)
            self._recover(exc)
            return
        finally:
            _end_streams(handles)
        with batched() as waits:
            if isinstance(result, RunResult):
                self.scheduler.update_run(plan, result)
            else:
                self.scheduler.update(plan, result)
        kv = self.scheduler.kv
        if kv.has_ops and not kv.num_pending_saves:
            # now, not first thing in the next plan: cells computed past a finish (a run's, a
            # draft's) must be gone before that plan may save the slot's state (an idle
            # prefix moved to RAM, a session evicted: the engine saves before its KV ops)
            self.engine.apply_ops(kv.take_ops()[0])
        for request_id in self.scheduler.take_last_releases():  # (no step just for these)
            self.engine.release(request_id)
        if waits and handoff:  # a request's first or last token: its event loop sends it before the next decode
            deadline = time.perf_counter() + self.handoff_wait_s
            for handle in waits:
                handle.wait_handled(max(0.0, deadline - time.perf_counter()))
        t1 = time.perf_counter()
        m = self.metrics
        if isinstance(result, RunResult):
            m.num_steps += result.num_steps
            m.num_step_tokens += result.num_steps * len(plan.items)
            m.num_runs += 1
            m.decode_ms += result.decode_ms
            m.schedule_ms += (t1 - t0) * 1e3 - result.decode_ms
            return
        m.num_steps += 1
        m.num_step_tokens += result.num_tokens
        m.decode_ms += result.decode_ms
        m.sample_ms += result.sample_ms
        m.schedule_ms += (t1 - t0) * 1e3 - result.decode_ms - result.sample_ms - draft_ms
        m.draft_ms += draft_ms
        if self._step_hooks:
            self._run_step_hooks(plan, dataclasses.replace(result, step_ms=(t1 - t0) * 1e3))

    def _arm_interrupt(self) -> bool:
        """Before a run of steps: False if work came in meanwhile (it goes first), else the
        interrupt flag is cleared (whatever comes in from now on sets it)."""
        with self._cv:
            if self._commands or self._embed_jobs or self._closing:
                return False
            self._interrupt[0] = 0
            return True

    def _run_step_hooks(self, plan: StepPlan, result: StepResult) -> None:
        for hook in self._step_hooks:
            try:
                hook(plan, result)
            except Exception:  # a hook must never take the engine down
                log.exception("step hook %r failed; removed", hook)
                self.remove_step_hook(hook)

    def _recover(self, error: BotframeworkError) -> None:
        """A step failed as a whole: end its requests, drop every cell, keep serving."""
        self.context.memory.clear()
        self.engine.cells_cleared()
        self.scheduler.reset_after_failure(error)

    def _embed_turn(self) -> None:
        """One embedding decode. A model whose tokens attend both ways: whole inputs from the
        front of the queue, one sequence id each, as many as fit the context's token budget
        and sequence count, pooled by llama.cpp as the GGUF says. A causal model: the next
        piece (up to embed_piece_tokens) of the first input, through the KV cache after the
        pieces before it; llama.cpp mean-pools each piece (one ubatch), and the
        length-weighted mean of the pieces is the mean over the input."""
        first = self._embed_jobs[0]
        try:
            ctx = self._embed_context_for(first)
        except Exception as exc:  # the context could not be made: this job's error, the next may still run
            self._embed_jobs.popleft()
            first.result.set_exception(exc)
            return
        if not ctx.causal_attn:
            self._embed_batch(ctx)
            return
        job = first
        try:
            tokens = job.tokens[job.done:job.done + self.embed_piece_tokens]
            batch = Batch(len(tokens))
            batch.add_sequence(tokens, job.done, 0, logits_last=True)
            batch.logits[: len(tokens)] = 1  # pooled embeddings need every token marked as output
            if job.done == 0:
                ctx.memory.clear()
            ctx.decode(batch)
            job.total = job.total + ctx.embeddings_seq(0).astype(np.float64) * len(tokens)
            job.done += len(tokens)
        except Exception as exc:  # a failed decode: the caller's to raise
            self._embed_jobs.popleft()
            job.result.set_exception(exc)
            return
        if job.done == len(job.tokens):
            self._embed_jobs.popleft()
            job.result.set_result(_normalized(job.total / len(job.tokens)))

    def _embed_batch(self, ctx: Context) -> None:
        """Whole inputs, one sequence each, in one llama_decode: as many as fit
        embed_batch_tokens, or the first alone when it is longer (up to n_ubatch: llama.cpp
        needs a non-causal batch in a single ubatch)."""
        jobs: list[_EmbedJob] = []
        num_tokens = 0
        budget = min(self.embed_batch_tokens, ctx.n_ubatch)
        for job in self._embed_jobs:
            if len(jobs) == ctx.n_seq_max or (jobs and num_tokens + len(job.tokens) > budget):
                break
            jobs.append(job)
            num_tokens += len(job.tokens)
        for _ in jobs:
            self._embed_jobs.popleft()
        try:
            batch = self._embed_batch_buffer
            if batch is None or batch.capacity < num_tokens:  # made once: a Batch costs ~30 us to set up
                batch = self._embed_batch_buffer = Batch(max(num_tokens, ctx.n_ubatch))
            batch.clear()
            for seq_id, job in enumerate(jobs):
                batch.add_sequence(job.tokens, 0, seq_id, logits_last=True)
            batch.logits[:num_tokens] = 1  # every token is an output of a pooled embedding
            ctx.memory.clear()  # a model with a KV cache: each batch starts from empty sequences
            threads = (1, 1) if num_tokens <= self.embed_single_thread_tokens else (self.n_threads,
                                                                                      self.n_threads_batch)
            if threads != self._embed_threads:  # knob off (0): never, the context keeps what it was made with
                ctx.set_threads(*threads)
                self._embed_threads = threads
            ctx.decode(batch)
            vectors = [ctx.embeddings_seq(seq_id) for seq_id in range(len(jobs))]
        except Exception as exc:  # one decode for all: each of its callers gets the error
            for job in jobs:
                job.result.set_exception(exc)
            return
        for job, vector in zip(jobs, vectors, strict=True):
            job.result.set_result(_normalized(vector))

    def _embed_token_limit(self) -> int:
        """The longest input: the model's training context (BERT's position table), at most 8192."""
        return max(1, min(self.model.n_ctx_train or _EMBED_MAX_TOKENS, _EMBED_MAX_TOKENS))

    def _embed_context_for(self, job: _EmbedJob) -> Context:
        if self._embed_context is None:
            limit = self._embed_token_limit()
            if self.context.causal_attn:  # pieces of one input at a time, mean-pooled by us
                n, n_seq_max, pooling = limit, 1, "mean"
            else:  # many inputs per decode, up to the batch budget, each pooled by llama.cpp
                n, n_seq_max, pooling = max(limit, _EMBED_BATCH_TOKENS), _EMBED_MAX_SEQS, self._gguf_pooling()
            # no huge-page watch: other threads are running now, their mappings are not ours
            self._embed_context = Context(self.model, ContextParams(
                n_ctx=n, n_batch=n, n_ubatch=n, n_seq_max=n_seq_max, n_threads=self.n_threads,
                n_threads_batch=self.n_threads_batch, embeddings=True, pooling=pooling, hugepages=False))
        ctx = self._embed_context
        capacity = min(ctx.n_ctx, ctx.n_ubatch, self._embed_token_limit())
        if len(job.tokens) > capacity:
            raise InvalidRequestError(
                f"input has {len(job.tokens)} tokens; the embedding context holds {capacity}", param="input")
        return ctx

    def _gguf_pooling(self) -> str:
        """The GGUF's own pooling (mean, cls or last); mean when it names none, or one that
        gives no sentence vector (rank: a reranker's scores)."""
        meta = self.model.metadata()
        arch = meta.get("general.architecture", "")
        return _GGUF_POOLING.get(meta.get(f"{arch}.pooling_type", ""), "mean")


def _end_streams(handles: list[RequestHandle]) -> None:
    """end_native on each handle a run began (each one's socket may close now), whatever the others do."""
    for handle in handles:
        try:
            handle.end_native()
        except Exception:  # noqa: BLE001 - (a close that fails): the others still end
            log.exception("ending a native stream failed")


def _normalized(vector: np.ndarray) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float32)
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


# llama_pooling_type values as the GGUF stores them (bert.pooling_type = 1 is mean)
_GGUF_POOLING = {"1": "mean", "2": "cls", "3": "last"}
# an idle engine thread lets its OpenMP workers go after this: a new pool's worker starts on
# the engine thread's core and takes a while to move, which a stream's first steps paid for
# (+0.3 ms first token, -3% at 4 streams when it was 5 ms: every stream started a new pool)
_RELEASE_THREADS_AFTER_S = 1.0
_EMBED_MAX_TOKENS = 8192     # the longest embedding input, whatever the model's training context
# A non-causal model's embedding context: at least this many tokens per decode (the packs of
# WorkerConfig.embed_batch_tokens fit; one input may need more, up to the model's context)
_EMBED_BATCH_TOKENS = 512
_EMBED_MAX_SEQS = 256        # inputs per embedding decode: llama.cpp's LLAMA_MAX_SEQ


@dataclass
class _EmbedJob:
    """One embedding input on its way through the engine loop (engine thread only)."""

    tokens: list[int]
    done: int = 0                          # tokens computed so far
    total: np.ndarray | float = 0.0        # sum of the pieces' means times their lengths
    result: concurrent.futures.Future[np.ndarray] = field(default_factory=concurrent.futures.Future)
