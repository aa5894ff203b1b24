"""Step traces: what a serving run scheduled and how long each step took, as JSONL.

    botframework serve --trace FILE        (or TraceWriter(FILE).attach(worker) in-process)
      worker start    {"ev": "worker", model, config: the SchedulerConfig, n_vocab}
      Scheduler.add   {"ev": "arrival", t, id, num_prompt, max_tokens, priority, session,
                       blocks: hashes of the prompt's 16-token prefixes, ...}
      each step       {"ev": "step", t, ms, decode_ms, sample_ms, processor_ms, tokens,
                       items: [[id, num_tokens, sample], ...], kv_ops, release}
      finish          {"ev": "finish", t, id, reason, num_generated, num_cached, queue_ms,
                       ttft_ms, total_ms, num_preemptions}
    botframework replay FILE --policy ...  (botframework.replay) reads it back

`t` is seconds since the trace started (a step's t is when it began), times in ms. No
prompt text or token ids unless prompts=True (serve --trace-prompts): then arrivals also
carry prompt_tokens and prompt (the text). Without them, `blocks` still tells replay which
prompts share a prefix: blake2b of each 16-token prefix under a random key that is never
written, so the hashes only compare prompts within one trace and cannot be looked up.
Session ids are written as s1, s2, ... in order of appearance.

Writing costs a json.dumps and a line write per step on the engine thread (tens of
microseconds); one TraceWriter may serve several models (lines carry the model's name).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from botframework.engine.step import StepPlan, StepResult
from botframework.scheduler.output import FinishReason
from botframework.scheduler.sequence import Sequence

if TYPE_CHECKING:
    from botframework.runtime.worker import ModelWorker

__all__ = ["BLOCK_TOKENS", "TRACE_VERSION", "TraceWriter", "read_trace"]

TRACE_VERSION = 1
BLOCK_TOKENS = 16  # prefix granularity of `blocks` (the scheduler's min_prefix_copy)


class TraceWriter:
    """Appends one JSON object per line to `path` for every worker it is attached to.

    The file opens on the first event (a settings object that is never used writes
    nothing); lines are flushed as written, so a killed server leaves a readable trace.
    """

    def __init__(self, path: str | os.PathLike[str], *, prompts: bool = False) -> None:
        self.path = Path(path)
        self.prompts = prompts
        self._file: IO[str] | None = None
        self._lock = threading.Lock()
        self._t0 = time.monotonic()
        self._key = os.urandom(16)  # the block hashes' key: never written
        self._sessions: dict[str, str] = {}

    def attach(self, worker: ModelWorker) -> None:
        """Record this worker's requests and steps (its scheduler's observer and a step hook)."""
        recorder = _WorkerTrace(self, worker)
        self.write({"ev": "worker", "t": self.now(), "model": worker.name, "n_vocab": worker.model.n_vocab,
                    "kv_bytes_per_cell": worker.kv_bytes_per_cell, "config": asdict(worker.scheduler.config)})
        worker.scheduler.observers = [*worker.scheduler.observers, recorder]  # replaced: the engine may be reading it
        worker.add_step_hook(recorder)

    def now(self) -> float:
        return round(time.monotonic() - self._t0, 6)

    def since(self, monotonic: float) -> float:
        return round(monotonic - self._t0, 6)

    def write(self, event: dict[str, Any]) -> None:
        line = json.dumps(event, separators=(",", ":")) + "\n"
        with self._lock:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = open(self.path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - kept open
                self._file.write(json.dumps({"ev": "header", "version": TRACE_VERSION, "created": time.time(),
                                             "prompts": self.prompts, "block_tokens": BLOCK_TOKENS},
                                            separators=(",", ":")) + "\n")
            self._file.write(line)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def session_label(self, session_id: str | None) -> str | None:
        if session_id is None:
            return None
        label = self._sessions.get(session_id)
        if label is None:
            label = self._sessions[session_id] = f"s{len(self._sessions) + 1}"
        return label

    def blocks(self, tokens: tuple[int, ...] | list[int]) -> list[str]:
        """Keyed hashes of each full BLOCK_TOKENS-token prefix: equal prompts' prefixes have equal
        hashes, and nothing else can be learnt from them."""
        data = np.asarray(tokens, dtype=np.int32).tobytes()
        out: list[str] = []
        digest = b""
        step = BLOCK_TOKENS * 4
        for start in range(0, len(data) - step + 1, step):
            digest = hashlib.blake2b(digest + data[start:start + step], digest_size=8, key=self._key).digest()
            out.append(digest.hex())
        return out


class _WorkerTrace:
    """One worker's recorder: scheduler observer + step hook, writing through the TraceWriter."""

    def __init__(self, writer: TraceWriter, worker: ModelWorker) -> None:
        self.writer = writer
        self.model = worker.name
        self._worker = worker

    def request_added(self, seq: Sequence) -> None:
        request = seq.request
        writer = self.writer
        event: dict[str, Any] = {
            "ev": "arrival", "model": self.model, "t": writer.since(request.arrival), "id": request.request_id,
            "num_prompt": seq.num_prompt, "max_tokens": request.params.max_tokens, "priority": int(request.priority),
            "session": writer.session_label(request.session_id), "blocks": writer.blocks(request.prompt_tokens),
            "context_shift": request.context_shift, "num_keep": request.num_keep,
            "num_processors": len(request.logits_processors)}
        if writer.prompts:
            event["prompt_tokens"] = list(request.prompt_tokens)
            event["prompt"] = self._worker.model.detokenize(list(request.prompt_tokens))
        writer.write(event)

    def request_finished(self, seq: Sequence, reason: FinishReason) -> None:
        writer = self.writer
        arrival = seq.request.arrival

        def ms(at: float | None) -> float | None:
            return None if at is None else round((at - arrival) * 1e3, 3)

        writer.write({"ev": "finish", "model": self.model, "t": writer.now(), "id": seq.request_id,
                      "reason": reason.value, "num_generated": seq.num_generated, "num_cached": seq.num_cached,
                      "num_preemptions": seq.num_preemptions, "queue_ms": ms(seq.admitted_at),
                      "ttft_ms": ms(seq.first_token_at), "total_ms": round((time.monotonic() - arrival) * 1e3, 3)})

    def __call__(self, plan: StepPlan, result: StepResult) -> None:
        writer = self.writer
        writer.write({"ev": "step", "model": self.model, "t": round(writer.now() - result.step_ms / 1e3, 6),
                      "ms": round(result.step_ms, 3), "decode_ms": round(result.decode_ms, 3),
                      "sample_ms": round(result.sample_ms, 3), "processor_ms": round(result.processor_ms, 3),
                      "tokens": result.num_tokens,
                      "items": [[item.request_id, len(item.tokens), int(item.sample)] for item in plan.items],
                      "kv_ops": len(plan.kv_ops), "release": len(plan.release)})


def read_trace(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """The trace's events in order; ValueError for a line that is not JSON or an unknown
    version (a last line cut off by a killed server is skipped)."""
    with open(path, encoding="utf-8") as handle:
        lines = handle.readlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines) and not line.endswith("\n"):
                return  # the last line of a trace whose writer was killed mid-line
            raise ValueError(f"{path}:{number}: not a JSON line") from None
        if event.get("ev") == "header" and event.get("version") != TRACE_VERSION:
            raise ValueError(f"{path}: trace version {event.get('version')}, this botframework reads {TRACE_VERSION}")
        yield event
