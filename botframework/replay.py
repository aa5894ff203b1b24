"""Replay a step trace against the scheduler on a simulated engine: compare policies offline.

    trace (botframework.trace) -> arrivals (time, prompt size and shared prefixes, tokens
        generated, priority, session) + recorded steps
    StepCost.fit(steps): step ms ~ a + b * tokens + c * sequences, least squares (>= 0) over
        the recorded steps' wall time, so a batch shaped differently costs what this machine
        and model would have taken
    replay(trace, policy): Scheduler(the recorded SchedulerConfig + the policy's changes) on
        ReplayEngine, a virtual clock advanced by StepCost per step; each request arrives at
        its recorded time and generates as many tokens as it did -> ReplayReport (throughput,
        TTFT, latency, queue, preemptions)

A policy is a scheduler configuration: "fcfs" (the recorded one, first come first served
within a priority), "spf" (shortest prompt first: SchedulerConfig.admission="shortest"), each
optionally with SchedulerConfig knobs changed, written NAME[,knob=value...] (e.g.
"fcfs,max_batch_tokens=128" for smaller prefill chunks, "spf,priority_aging_s=1"). The
replayed fcfs next to the recorded numbers shows how far to trust the model.

What a replay does not model: attention's cost growing with context, the exact tokens a
request shares with others below BLOCK_TOKENS granularity (without --trace-prompts), and
answers that would have differed (each request generates its recorded count).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from botframework.engine.detokenizer import IncrementalDetokenizer
from botframework.engine.step import SampledToken, StepPlan, StepResult
from botframework.errors import BotframeworkError
from botframework.scheduler.output import FinishReason, RequestHandle
from botframework.scheduler.scheduler import Scheduler, SchedulerConfig
from botframework.scheduler.sequence import Priority, Request, Sequence
from botframework.scheduler.session_store import SessionStore
from botframework.specs import SamplerSpec, SamplingParams
from botframework.trace import read_trace

__all__ = ["POLICIES", "ReplayReport", "StepCost", "TraceData", "load_trace", "parse_policy", "replay"]

# name -> (SchedulerConfig changes, what it means)
POLICIES: dict[str, tuple[dict[str, Any], str]] = {
    "fcfs": ({"admission": "fcfs"}, "first come, first served within a priority (aging as configured)"),
    "spf": ({"admission": "shortest"}, "shortest prompt first within a priority level (aging still applies)"),
}
_GREEDY = SamplingParams(sampler=SamplerSpec(temperature=0.0))


@dataclass(frozen=True)
class Arrival:
    t: float
    request_id: str
    num_prompt: int
    num_generated: int          # what it generated in the recording (replayed as max_tokens)
    priority: int
    session: str | None
    blocks: tuple[str, ...]
    prompt_tokens: tuple[int, ...] | None
    finish_t: float | None      # recorded finish, for a request that generated nothing (cancelled)
    context_shift: bool = False
    num_keep: int = 0


@dataclass
class TraceData:
    model: str
    config: SchedulerConfig
    arrivals: list[Arrival]
    steps: list[dict[str, Any]]
    finishes: dict[str, dict[str, Any]]
    num_unfinished: int = 0
    kv_bytes_per_cell: int = 0


def load_trace(path: str, model: str | None = None) -> TraceData:
    """The events of one model (the first in the trace unless named)."""
    config: dict[str, Any] | None = None
    kv_bytes_per_cell = 0
    arrivals: dict[str, dict[str, Any]] = {}
    steps: list[dict[str, Any]] = []
    finishes: dict[str, dict[str, Any]] = {}
    for event in read_trace(path):
        kind = event.get("ev")
        if kind == "header":
            continue
        if model is None:
            model = event.get("model")
        if event.get("model") != model:
            continue
        if kind == "worker":
            config = event["config"]
            kv_bytes_per_cell = int(event.get("kv_bytes_per_cell", 0))
        elif kind == "arrival":
            arrivals[event["id"]] = event
        elif kind == "step":
            steps.append(event)
        elif kind == "finish":
            finishes[event["id"]] = event
    if model is None or not arrivals:
        raise ValueError(f"{path}: no requests{' for model ' + repr(model) if model else ''} in this trace")
    known = {f.name for f in dataclasses.fields(SchedulerConfig)}
    scheduler_config = SchedulerConfig(**{k: v for k, v in (config or {}).items() if k in known})
    out: list[Arrival] = []
    unfinished = 0
    for request_id, a in arrivals.items():
        finish = finishes.get(request_id)
        if finish is None:
            unfinished += 1
            continue
        tokens = a.get("prompt_tokens")
        out.append(Arrival(t=float(a["t"]), request_id=request_id, num_prompt=int(a["num_prompt"]),
                           num_generated=int(finish["num_generated"]), priority=int(a.get("priority", 0)),
                           session=a.get("session"), blocks=tuple(a.get("blocks", ())),
                           prompt_tokens=tuple(tokens) if tokens is not None else None,
                           finish_t=float(finish["t"]), context_shift=bool(a.get("context_shift", False)),
                           num_keep=int(a.get("num_keep", 0))))
    out.sort(key=lambda a: a.t)
    return TraceData(model, scheduler_config, out, steps, finishes, unfinished, kv_bytes_per_cell)


@dataclass(frozen=True)
class StepCost:
    """Milliseconds one step takes: base + per_token * tokens + per_sequence * sequences."""

    base_ms: float
    per_token_ms: float
    per_sequence_ms: float
    r2: float = 1.0
    num_steps: int = 0

    def __call__(self, num_tokens: int, num_sequences: int) -> float:
        return self.base_ms + self.per_token_ms * num_tokens + self.per_sequence_ms * num_sequences

    @classmethod
    def fit(cls, steps: list[dict[str, Any]]) -> StepCost:
        """Least squares with every coefficient >= 0 (the best of the 2^3 feature subsets whose
        plain fit is non-negative: exact for three features)."""
        rows = [(s["tokens"], len(s["items"]), s["ms"]) for s in steps if s.get("items")]
        if not rows:
            raise ValueError("the trace has no steps to learn step times from")
        data = np.array(rows, dtype=np.float64)
        x = np.column_stack([np.ones(len(data)), data[:, 0], data[:, 1]])
        y = data[:, 2]
        best: tuple[float, np.ndarray] | None = None
        for mask in itertools.product((True, False), repeat=3):
            cols = [i for i in range(3) if mask[i]]
            if not cols:
                continue
            coef, *_ = np.linalg.lstsq(x[:, cols], y, rcond=None)
            if (coef < 0).any():
                continue
            full = np.zeros(3)
            full[cols] = coef
            error = float(((x @ full - y) ** 2).sum())
            if best is None or error < best[0]:
                best = (error, full)
        assert best is not None  # the constant alone always fits (y >= 0)
        total = float(((y - y.mean()) ** 2).sum())
        r2 = 1.0 - best[0] / total if total > 0 else 1.0
        return cls(float(best[1][0]), float(best[1][1]), float(best[1][2]), r2, len(data))


class _Sized(bytes):
    """A saved state's stand-in: empty, but as long as the state would be (the stores budget
    by len())."""

    num_bytes: int

    def __new__(cls, num_bytes: int) -> _Sized:
        state = super().__new__(cls)
        state.num_bytes = num_bytes
        return state

    def __len__(self) -> int:
        return self.num_bytes


class ReplayEngine:
    """Executes plans instantly and says how long they would have taken (StepCost). A saved
    state counts as a slot's share of the cache (its real size is not known here)."""

    def __init__(self, cost: StepCost, state_bytes: int = 1) -> None:
        self.cost = cost
        self.state_bytes = state_bytes

    def execute(self, plan: StepPlan) -> tuple[StepResult, float]:
        sampled = tuple(SampledToken(item.request_id, 1) for item in plan.items if item.sample)
        ms = self.cost(plan.num_tokens, len(plan.items)) if plan.items else 0.0
        saved: dict[int, bytes] = {seq_id: _Sized(self.state_bytes) for seq_id in plan.save_states}
        return StepResult(sampled=sampled, num_tokens=plan.num_tokens, decode_ms=ms, sample_ms=0.0, step_ms=ms,
                          saved_states=saved), ms


class _Discard(RequestHandle):
    """A handle that keeps nothing: the replay reads outcomes from the scheduler's observer."""

    def __init__(self, request_id: str) -> None:
        super().__init__(request_id, lambda _: None)

    def publish(self, delta: Any) -> None:
        pass


@dataclass
class ReplayReport:
    policy: str
    num_requests: int = 0
    num_generated: int = 0
    duration_s: float = 0.0           # first arrival to last finish
    num_steps: int = 0
    num_preemptions: int = 0
    num_rejected: int = 0             # refused at arrival (queue full)
    ttft_ms: list[float] = field(default_factory=list)
    total_ms: list[float] = field(default_factory=list)
    queue_ms: list[float] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return self.num_generated / self.duration_s if self.duration_s > 0 else 0.0

    def percentile(self, name: str, q: float) -> float:
        values = getattr(self, name)
        return float(np.percentile(values, q)) if values else math.nan

    def summary(self) -> dict[str, float | int | str]:
        out: dict[str, float | int | str] = {
            "policy": self.policy, "requests": self.num_requests, "generated_tokens": self.num_generated,
            "duration_s": round(self.duration_s, 3), "tokens_per_s": round(self.tokens_per_s, 2),
            "steps": self.num_steps, "preemptions": self.num_preemptions, "rejected": self.num_rejected}
        for name in ("ttft_ms", "total_ms", "queue_ms"):
            for q in (50, 90, 99):
                out[f"{name.removesuffix('_ms')}_p{q}_ms"] = round(self.percentile(name, q), 1)
        return out


def recorded_report(trace: TraceData) -> ReplayReport:
    """The recorded run's own numbers, from its finish events."""
    report = ReplayReport("recorded")
    ids = {a.request_id for a in trace.arrivals}
    finishes = [f for request_id, f in trace.finishes.items() if request_id in ids]
    for f in finishes:
        report.num_requests += 1
        report.num_generated += int(f["num_generated"])
        report.num_preemptions += int(f.get("num_preemptions", 0))
        for name in ("ttft_ms", "total_ms", "queue_ms"):
            if f.get(name) is not None:
                getattr(report, name).append(float(f[name]))
    if finishes:
        report.duration_s = max(float(f["t"]) for f in finishes) - trace.arrivals[0].t
    report.num_steps = sum(1 for s in trace.steps if s.get("items"))
    return report


def parse_policy(spec: str) -> tuple[str, dict[str, Any]]:
    """NAME[,knob=value...] -> (spec, SchedulerConfig changes); ValueError naming what is wrong."""
    name, *knobs = [part.strip() for part in spec.split(",")]
    if name not in POLICIES:
        raise ValueError(f"unknown policy {name!r} (known: {', '.join(POLICIES)})")
    changes = dict(POLICIES[name][0])
    fields = {f.name: f for f in dataclasses.fields(SchedulerConfig)}
    for knob in knobs:
        key, sep, raw = knob.partition("=")
        if not sep or key not in fields or key == "admission":
            raise ValueError(f"policy {spec!r}: {knob!r} is not knob=value for one of "
                             f"{', '.join(k for k in fields if k != 'admission')}")
        kind = type(getattr(SchedulerConfig(), key))
        try:
            changes[key] = kind(raw)
        except ValueError:
            raise ValueError(f"policy {spec!r}: {key} takes a {kind.__name__}, not {raw!r}") from None
    return spec, changes


def _prompt(arrival: Arrival, block_tokens: int) -> tuple[int, ...]:
    """The recorded prompt, or tokens standing in for it: equal prefix hashes give equal
    blocks, so prompts that shared a prefix share it here; the rest is unique."""
    if arrival.prompt_tokens is not None:
        return arrival.prompt_tokens
    tokens: list[int] = []
    for digest in arrival.blocks:
        tokens.extend(np.random.default_rng(int(digest, 16)).integers(2, 30000, block_tokens).tolist())
    rest = arrival.num_prompt - len(tokens)
    if rest > 0:
        seed = int.from_bytes(arrival.request_id.encode()[-8:].rjust(8, b"\0"), "little") ^ len(tokens)
        tokens.extend(np.random.default_rng(seed).integers(30000, 60000, rest).tolist())
    return tuple(tokens[: arrival.num_prompt])


def replay(trace: TraceData, policy: str, cost: StepCost | None = None, *, block_tokens: int = 16) -> ReplayReport:
    """Run the trace's requests through a scheduler configured by `policy` on a virtual clock."""
    spec, changes = parse_policy(policy)
    config = dataclasses.replace(trace.config, **changes)
    cost = cost or StepCost.fit(trace.steps)
    now = [trace.arrivals[0].t]
    # sessions' states stay in (simulated) RAM: a replay writes nothing to disk
    scheduler = Scheduler(config, eog_tokens=frozenset(), sessions=SessionStore(disk_budget_bytes=0),
                          clock=lambda: now[0])
    report = ReplayReport(spec)

    class Outcomes:
        def request_added(self, seq: Sequence) -> None:
            pass

        def request_finished(self, seq: Sequence, reason: FinishReason) -> None:
            arrival = seq.request.arrival
            report.num_requests += 1
            report.num_generated += seq.num_generated
            report.total_ms.append((now[0] - arrival) * 1e3)
            if seq.first_token_at is not None:
                report.ttft_ms.append((seq.first_token_at - arrival) * 1e3)
            if seq.admitted_at is not None:
                report.queue_ms.append((seq.admitted_at - arrival) * 1e3)

    scheduler.observers.append(Outcomes())
    engine = ReplayEngine(cost, max(1, trace.kv_bytes_per_cell * config.num_ctx // config.num_slots))
    pending = list(trace.arrivals)
    cancels: list[tuple[float, str]] = []
    last_finish = now[0]
    idle_steps = 0
    while pending or scheduler.has_work or cancels:
        while pending and pending[0].t <= now[0]:
            if not _submit(scheduler, pending.pop(0), block_tokens, cancels):
                report.num_rejected += 1
        cancels.sort()
        while cancels and cancels[0][0] <= now[0]:
            scheduler.cancel(cancels.pop(0)[1])
        if not scheduler.has_work:
            upcoming = [t for t in (pending[0].t if pending else None, cancels[0][0] if cancels else None)
                        if t is not None]
            if not upcoming:
                break
            now[0] = max(now[0], min(upcoming))
            continue
        plan = scheduler.schedule()
        result, ms = engine.execute(plan)
        now[0] += ms / 1e3
        scheduler.update(plan, result)
        if plan.items:
            report.num_steps += 1
            idle_steps = 0
            last_finish = now[0]
        else:  # nothing could run (e.g. waiting for cells): move to the next event
            idle_steps += 1
            upcoming = [t for t in (pending[0].t if pending else None, cancels[0][0] if cancels else None)
                        if t is not None and t > now[0]]
            if upcoming:
                now[0] = min(upcoming)
            elif idle_steps > 3:
                raise RuntimeError(f"policy {spec!r}: the scheduler cannot make progress on this trace")
    report.num_preemptions = scheduler.num_preemptions
    report.duration_s = last_finish - trace.arrivals[0].t
    return report


def _submit(scheduler: Scheduler, arrival: Arrival, block_tokens: int, cancels: list[tuple[float, str]]) -> bool:
    """Queue the request as it arrived; False if the scheduler refused it (queue full, too long)."""
    params = dataclasses.replace(_GREEDY, max_tokens=max(1, arrival.num_generated), ignore_eos=True)
    request = Request(arrival.request_id, _prompt(arrival, block_tokens), params, session_id=arrival.session,
                      priority=Priority(min(max(arrival.priority, 0), 2)), context_shift=arrival.context_shift,
                      num_keep=arrival.num_keep, arrival=arrival.t)
    detokenizer = IncrementalDetokenizer(lambda token: b"", lambda token: "")
    try:
        scheduler.add(Sequence(request, _Discard(request.request_id), detokenizer))
    except BotframeworkError:
        return False
    if arrival.num_generated == 0 and arrival.finish_t is not None:
        cancels.append((arrival.finish_t, arrival.request_id))  # ended (cancelled) before its first token
    return True


def compare(trace: TraceData, policies: Iterable[str]) -> tuple[StepCost, list[ReplayReport]]:
    """The fitted step cost, the recorded report, then one replay per policy."""
    cost = StepCost.fit(trace.steps)
    return cost, [recorded_report(trace), *(replay(trace, policy, cost) for policy in policies)]
