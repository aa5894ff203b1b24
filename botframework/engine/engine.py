"""Engine: executes one StepPlan on one (Model, Context). Owned by a single thread.

    plan.save_states -> state_seq_get (eviction)
    plan.kv_ops      -> seq_rm / seq_cp / seq_add / state_seq_set
    plan.items       -> a request's first item builds its SamplerChain from item.sampler (the
                        only way a sampling spec reaches the engine; one that cannot be built,
                        e.g. invalid GBNF, ends that request before any of its tokens is
                        decoded) and binds its logits processors -> one Batch -> one
                        llama_decode -> logits processors (engine/logits.py; only when some
                        request has them) -> sample where item.sample (an item with drafts:
                        at each of its positions until a sample differs from the draft,
                        engine/speculative.py)
    plan.release     -> free samplers (and processors) of finished requests

run_steps(plan, k): a plan of running sequences only, each with its own token and a sampler
that needs no Python (no grammar, no processors, no logprobs, no drafts): that step and up to
k - 1 more in one native call (bf_decode_run), each step's sampled tokens decoded by the next;
it ends early at an end-of-generation token or when another thread sets the interrupt flag.
A streamed request's text may go to its client from that call too (NativeStream: the server's
direct stream, server/direct.py), token by token, while it is plain ASCII text.
"""

from __future__ import annotations

import logging
import time
from functools import partial
from typing import Any

import numpy as np

from botframework.engine.logits import LogitsProcessorError, bind_processors, run_processors
from botframework.engine.speculative import verify_drafts
from botframework.engine.step import (
    PENDING_CAP,
    KVOp,
    KVOpKind,
    NativeStream,
    PlanItem,
    RunResult,
    SampledToken,
    StepPlan,
    StepResult,
    StreamSent,
)
from botframework.errors import BotframeworkError, InvalidRequestError, NativeError, StateRestoreError
from botframework.native._lib import ffi, lib
from botframework.native._status import check_decode
from botframework.native.batch import Batch
from botframework.native.context import Context
from botframework.native.cores import CORES
from botframework.native.logits import output_rows, outputs_view
from botframework.native.model import Model
from botframework.native.sampler import SamplerChain, scratch_candidates
from botframework.specs import SamplerSpec

log = logging.getLogger("botframework.engine")
_GREEDY = SamplerSpec(temperature=0.0)  # a hand-built PlanItem without a sampler: argmax
_PIECE_MAX = 256    # bf_decode_run sends pieces up to this long


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max()
    return shifted - np.log(np.exp(shifted).sum())  # type: ignore[no-any-return]


class Engine:
    def __init__(self, model: Model, context: Context) -> None:
        self.model = model
        self.context = context
        self.batch = Batch(context.n_batch)
        self._samplers: dict[str, SamplerChain] = {}
        self._processors: dict[str, tuple[object, ...]] = {}  # request id -> bound logits processors
        self.num_sampler_failures = 0
        self._unrestored: dict[int, StateRestoreError] = {}  # seq id -> why its cells are missing

    @property
    def num_samplers(self) -> int:
        return len(self._samplers)

    def cells_cleared(self) -> None:
        """Every sequence was emptied (llama_memory_clear after a failed step): none misses a
        stored state any more."""
        self._unrestored.clear()

    def close(self) -> None:
        for sampler in self._samplers.values():
            sampler.close()
        self._samplers.clear()
        self._processors.clear()

    def _apply(self, op: KVOp) -> None:
        mem = self.context.memory
        if op.kind is KVOpKind.REMOVE:
            if not mem.seq_rm(op.seq_id, op.p0, op.p1):
                # A partial removal the cache cannot do (e.g. recurrent state): drop it all.
                mem.seq_rm(op.seq_id, -1, -1)
        elif op.kind is KVOpKind.COPY:
            mem.seq_cp(op.src_seq_id, op.seq_id, op.p0, op.p1)
        elif op.kind is KVOpKind.SHIFT:
            mem.seq_add(op.seq_id, op.p0, op.p1, op.delta)
        elif op.kind is KVOpKind.RESTORE:
            mem.seq_rm(op.seq_id, -1, -1)
            self.context.state_seq_set(op.seq_id, op.data)

    def _apply_ops(self, ops: tuple[KVOp, ...]) -> dict[int, StateRestoreError]:
        """Apply the plan's KV ops; the sequences whose stored state llama.cpp refused (a
        RESTORE that failed, or a COPY from such a sequence), each with its error: their
        requests end with it (in this step, or the next one that plans them: a prefill may
        wait for room), the rest of the step goes on. A sequence is healthy again once it is
        emptied (the REMOVE its failed request's release sends) or restored."""
        unrestored = self._unrestored
        for op in ops:
            if op.kind is KVOpKind.COPY and op.src_seq_id in unrestored:
                unrestored[op.seq_id] = unrestored[op.src_seq_id]
                continue
            try:
                self._apply(op)
            except NativeError as exc:
                if op.kind is not KVOpKind.RESTORE:
                    raise
                self.context.memory.seq_rm(op.seq_id, -1, -1)
                log.warning("sequence %d: its stored state would not load (%s): its request ends", op.seq_id, exc)
                unrestored[op.seq_id] = StateRestoreError(
                    "the stored cache of this conversation could not be loaded back and was dropped; "
                    "retry the request (its prompt is processed afresh)", op="llama_state_seq_set_data")
                continue
            if unrestored and (op.kind is KVOpKind.RESTORE or (
                    op.kind is KVOpKind.REMOVE and op.p0 <= 0 and op.p1 < 0)):
                unrestored.pop(op.seq_id, None)
        return unrestored

    def apply_ops(self, ops: tuple[KVOp, ...]) -> None:
        """KV ops outside a step (the worker's, right after one; see _apply_ops)."""
        self._apply_ops(ops)

    def _new_sampler(self, item: PlanItem) -> BotframeworkError | None:
        """Build the request's sampler (and bind its logits processors) from its plan item; the
        error if it cannot be built."""
        try:
            if item.processors:
                self._processors[item.request_id] = bind_processors(item.processors, self.model)
            self._samplers[item.request_id] = SamplerChain(self.model, item.sampler or _GREEDY)
        except (BotframeworkError, ValueError) as exc:
            log.warning("request %s: cannot build its sampler: %s", item.request_id, exc)
            self._processors.pop(item.request_id, None)
            self.num_sampler_failures += 1
            return exc if isinstance(exc, BotframeworkError) else InvalidRequestError(str(exc))
        return None

    def release(self, request_id: str) -> None:
        sampler = self._samplers.pop(request_id, None)
        if sampler is not None:
            sampler.close()
        if self._processors:
            self._processors.pop(request_id, None)

    def _process(self, outputs: list[tuple[PlanItem, int]], sampled: list[SampledToken]
                 ) -> tuple[list[tuple[PlanItem, int]], float]:
        """Run the logits processors of the outputs whose requests have some, in place on
        llama.cpp's buffer; the outputs still to sample (a request whose processor failed ends
        here, with its error in `sampled`) and the processors' milliseconds."""
        processors = self._processors
        mine = [k for k, (item, _index) in enumerate(outputs) if item.request_id in processors]
        if not mine:
            return outputs, 0.0
        # every output of the step as one view (row k: outputs[k]), else just these rows;
        # (its llama_get_logits_ith waits for the decode's last work, as sampling's would: not
        # the processors' time)
        span = outputs_view(self.context, outputs[0][1], outputs[-1][1], len(outputs))
        if span is not None:
            rows = mine
        else:
            span, found = output_rows(self.context, [outputs[k][1] for k in mine])
            rows = found.tolist()
        t0 = time.perf_counter()
        items = [outputs[k][0] for k in mine]
        failed = run_processors(span, rows, [processors[item.request_id] for item in items],
                                [item.history for item in items])
        processor_ms = (time.perf_counter() - t0) * 1e3
        if not failed:
            return outputs, processor_ms
        ended: dict[str, LogitsProcessorError] = {items[k].request_id: error for k, error in failed.items()}
        for request_id, error in ended.items():
            sampled.append(SampledToken(request_id, -1, error=error))
        return [output for output in outputs if output[0].request_id not in ended], processor_ms

    def _sample(self, item: PlanItem, sampler: SamplerChain, index: int, sampled: list[SampledToken]) -> int:
        """Sample (and accept) the request's token at batch row `index`, with its logprobs if
        asked; appended to `sampled`."""
        context = self.context
        token = sampler.sample(context, index)
        if item.num_logprobs is None:
            sampled.append(SampledToken(item.request_id, token))
            return token
        top: tuple[tuple[int, float], ...] = ()
        logprobs = log_softmax(context.logits_ith(index))
        logprob = float(logprobs[token])
        if item.num_logprobs > 0:
            best = np.argpartition(-logprobs, item.num_logprobs)[: item.num_logprobs]
            best = best[np.argsort(-logprobs[best])]
            top = tuple((int(t), float(logprobs[t])) for t in best)
        sampled.append(SampledToken(item.request_id, token, logprob, top))
        return token

    def _sample_draft(self, item: PlanItem, sampler: SamplerChain, first: int, sampled: list[SampledToken],
                      position: int) -> int:
        return self._sample(item, sampler, first + position, sampled)

    def execute(self, plan: StepPlan) -> StepResult:
        saved = {seq_id: self.context.state_seq_get(seq_id) for seq_id in plan.save_states}
        unrestored = self._apply_ops(plan.kv_ops)
        for request_id in plan.release:
            self.release(request_id)
        batch = self.batch
        batch.clear()
        outputs: list[tuple[PlanItem, int]] = []
        sampled: list[SampledToken] = []
        samplers = self._samplers
        for item in plan.items:
            if unrestored and item.seq_id in unrestored:  # its cells are not there: the request ends
                sampled.append(SampledToken(item.request_id, -1, error=unrestored[item.seq_id], built=False))
                continue
            if item.request_id not in samplers:
                error = self._new_sampler(item)
                if error is not None:  # the request ends with it; its tokens stay out of the batch
                    sampled.append(SampledToken(item.request_id, -1, error=error, built=False))
                    continue
            index = batch.add_sequence(item.tokens, item.start_pos, item.seq_id, logits_last=item.sample)
            if item.num_draft:
                batch.logits[index - item.num_draft: index] = 1  # every draft position is verified
            if item.sample:
                outputs.append((item, index))
        t0 = time.perf_counter()
        self.context.decode(batch)
        t1 = time.perf_counter()
        processor_ms = 0.0
        if self._processors:  # (a step none of whose requests has processors pays this check only)
            outputs, processor_ms = self._process(outputs, sampled)
        for item, index in outputs:
            # A sampler that cannot go on (a grammar with no allowed token here) ends that
            # request with its error instead of failing the whole batch.
            sampler = samplers[item.request_id]
            try:
                if item.num_draft:
                    # rows index - k .. index: the logits after the last token and after each draft
                    verify_drafts(item.tokens[-item.num_draft:],
                                  partial(self._sample_draft, item, sampler, index - item.num_draft, sampled))
                else:
                    self._sample(item, sampler, index, sampled)
            except BotframeworkError as exc:
                log.warning("request %s: sampling stopped: %s", item.request_id, exc)
                self.num_sampler_failures += 1
                sampled.append(SampledToken(item.request_id, -1, error=exc))
        t2 = time.perf_counter()
        return StepResult(sampled=tuple(sampled), num_tokens=batch.n_tokens,
                          decode_ms=(t1 - t0) * 1e3, sample_ms=(t2 - t1) * 1e3, saved_states=saved,
                          processor_ms=processor_ms)

    def run_steps(self, plan: StepPlan, max_steps: int, stop_on_eog: tuple[bool, ...], interrupt: Any,
                  stop_bytes: bytes = b"", streams: tuple[NativeStream | None, ...] = ()) -> RunResult:
        """The plan's step and up to max_steps - 1 more, without Python between them (see the
        module's docstring; the scheduler's run_length says which plans qualify). Sequence i
        (plan.items[i]) stops the run after a step in which it sampled an end-of-generation
        token if stop_on_eog[i], or a token whose text has a byte in its 256-bit map
        stop_bytes[32 i: 32 i + 32] (b"": no maps; the last bytes of its stop strings: such a
        token may complete one); `interrupt` (cffi int32_t[1]) nonzero ends it after the
        current step. The cores are held for the whole run; another thread that waits for them
        sets the flag (native/cores.py). A failed decode raises, as execute's does.
        `streams` (() or one per item): item i's tokens are sent to its client by the run
        (NativeStream) while each is plain ASCII text with no byte in its map, not an end of
        generation and within its budget, and the socket takes the chunk whole; the first
        that is not ends the run after its step (RunResult.sent: what was taken)."""
        if plan.save_states or plan.kv_ops:  # (Scheduler.run_length plans runs only without them)
            raise InvalidRequestError("a run of steps cannot save states or change the cache first")
        for request_id in plan.release:
            self.release(request_id)
        items = plan.items
        n = len(items)
        # (built at each request's first step; the scheduler plans runs only after it)
        samplers = [self._samplers[item.request_id] for item in items]
        seq_ids = ffi.new("int32_t[]", [item.seq_id for item in items])
        tokens = ffi.new("int32_t[]", [item.tokens[0] for item in items])
        pos = ffi.new("int32_t[]", [item.start_pos for item in items])
        pre = ffi.new("struct llama_sampler *[]", [s.pre_arg for s in samplers])
        post = ffi.new("struct llama_sampler *[]", [s.handle for s in samplers])
        greedy = ffi.new("int32_t[]", [int(s.greedy) for s in samplers])
        stops = ffi.new("int32_t[]", [int(stop) for stop in stop_on_eog])
        out = ffi.new("int32_t[]", n * max_steps)
        status = ffi.new("int32_t *")
        if stop_bytes and len(stop_bytes) != 32 * n:
            raise InvalidRequestError(f"stop_bytes: 32 bytes per item, not {len(stop_bytes)} for {n}")
        stop_map = ffi.from_buffer("uint8_t[]", stop_bytes) if stop_bytes else ffi.NULL
        if streams and len(streams) != n:
            raise InvalidRequestError(f"streams: one per item, not {len(streams)} for {n}")
        native_streams, keep = _native_streams(streams)
        n_vocab = self.model.n_vocab
        _cand, data = scratch_candidates(n_vocab)
        t0 = time.perf_counter()
        with CORES.hold(self.context.cores_for(n), yield_flag=interrupt):
            steps = lib().bf_decode_run(self.context.handle, n, seq_ids, tokens, pos, pre, post, greedy, stops,
                                        stop_map, max_steps, interrupt, data, n_vocab, out, native_streams, status)
        decode_ms = (time.perf_counter() - t0) * 1e3
        sent = tuple(None if stream is None else StreamSent(
            native_streams[i].n_sent, native_streams[i].error,
            ffi.unpack(native_streams[i].rest, native_streams[i].rest_len), native_streams[i].number)
            for i, stream in enumerate(streams))
        del keep
        try:
            if status[0] in (-1001, -1002, -1003):
                raise NativeError("a sequence could not be sampled during a run of steps" if status[0] != -1003
                                  else "out of memory for a run of steps", op="bf_decode_run")
            check_decode(status[0])
        except NativeError as exc:
            exc.sent = sent  # type: ignore[attr-defined]  # (what the streams sent before it failed)
            raise
        flat = ffi.unpack(out, n * steps)
        return RunResult(tokens=tuple(tuple(flat[i::n]) for i in range(n)), num_steps=steps, decode_ms=decode_ms,
                         sent=sent)


def _native_streams(streams: tuple[NativeStream | None, ...]) -> tuple[Any, list[Any]]:
    """bf_run_stream[] for bf_decode_run (ffi.NULL for none), and the buffers it points to
    (kept alive by the caller until the call returns)."""
    if not any(streams):
        return ffi.NULL, []
    native = ffi.new("bf_run_stream[]", len(streams))
    keep: list[Any] = []
    for s, stream in zip(native, streams, strict=True):
        if stream is None:
            s.fd = -1
            continue
        pending = stream.pending.encode("ascii")
        if len(pending) > PENDING_CAP:
            raise InvalidRequestError(f"a native stream holds at most {PENDING_CAP} bytes of whitespace")
        rest_cap = len(stream.head) + len(stream.tail) + len(stream.number_tail) + 6 * (PENDING_CAP + _PIECE_MAX) + 96
        buffers = (ffi.new("char[]", stream.head or b"\0"), ffi.new("char[]", stream.tail or b"\0"),
                   ffi.new("char[]", PENDING_CAP), ffi.new("char[]", rest_cap),
                   ffi.new("char[]", stream.number_tail or b"\0"))
        keep.append(buffers)
        ffi.memmove(buffers[2], pending, len(pending))
        s.fd = stream.fd
        s.head, s.head_len = buffers[0], len(stream.head)
        s.tail, s.tail_len = buffers[1], len(stream.tail)
        s.number = stream.number
        s.number_tail, s.number_tail_len = buffers[4], len(stream.number_tail)
        s.rstrip = int(stream.rstrip)
        s.budget = stream.budget
        s.pending, s.pending_len, s.pending_cap = buffers[2], len(pending), PENDING_CAP
        s.n_sent = s.error = s.rest_len = 0
        s.rest, s.rest_cap = buffers[3], rest_cap
    return native, keep
