"""What logits processors cost in a batched step, at 1 and at 8 streams.

    Model + Context + Engine.execute(StepPlan): per round and stream count, each mode's
    streams (greedy sequences over short prompts, prefilled untimed) share one KV cache and
    their decode steps interleave, the order turning every step
    modes:  off         no sequence names a processor (the engine's path without them)
            identity    a processor that does nothing: the mechanism's own cost
            repetition  RepetitionWindowPenalty(1.3, 64) on every sequence
            typical     TypicalP(0.9) on every sequence (softmax + partition over the vocabulary)
            ban         BanStrings (5 phrases) on every sequence
    so a slow phase of a shared host hits every mode alike; rounds alternate the stream counts.
    -> per (streams, mode): median step time (engine.execute wall), llama_decode time,
       processor time (StepResult.processor_ms) and its share of the step, side by side

"Steps without processors cost nothing extra": in mode off StepResult.processor_ms is 0 on
every step (the processor path is never entered); what the feature adds to such a step is a
dict check per step and two default PlanItem fields per sequence, timed here directly
(timeit) against the step time.

    PYTHONPATH=. python bench/bench_processors.py [--model NAME|PATH] [-t THREADS] [--steps 32]
                                                  [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
import timeit
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
# The installed package (pip install .) has the compiled module; a checkout's tree has it only
# after a development build: the checkout goes on the path only when nothing is installed, and
# behind site-packages (ahead of it, it shadowed the installed package: "native module is not built").
if importlib.util.find_spec("botframework") is None:
    sys.path.append(str(REPO_ROOT))

from botframework.engine import Engine, PlanItem, StepPlan  # noqa: E402
from botframework.native import Context, ContextParams, Model, SamplerSpec  # noqa: E402
from botframework.processors import BanStrings, RepetitionWindowPenalty, TypicalP  # noqa: E402

GREEDY = SamplerSpec(temperature=0.0)
STREAMS = (1, 8)
TARGET_SHARE = 0.05
PROMPTS = ["The capital of France is", "def add(a, b):", "Once upon a time", "The best way to learn is",
           "In 1492,", "Water boils at", "My favourite colour is", "SELECT * FROM"]
BANNED = ["As an AI", "I'm sorry", "I cannot", "language model", "Certainly!"]


def identity(logits: object, histories: object) -> None:
    """Changes nothing: what is left is the engine's cost of running processors at all."""


def resolve_model(spec: str) -> Path:
    path = Path(spec)
    if path.is_file():
        return path
    from botframework.runtime.pull import pull

    return pull(spec)


class Streams:
    """`streams` greedy sequences of one mode, at sequence ids base..base+streams-1."""

    def __init__(self, model: Model, engine: Engine, mode: str, processors: tuple[object, ...], streams: int,
                 base: int, tag: str) -> None:
        self.engine, self.mode, self.processors = engine, mode, processors
        self.seq_ids = list(range(base, base + streams))
        self.ids = [f"{tag}-{mode}-{i}" for i in range(streams)]
        self.histories = [model.tokenize(PROMPTS[i % len(PROMPTS)]) for i in range(streams)]
        items = tuple(PlanItem(self.ids[i], self.seq_ids[i], tuple(h), 0, True, GREEDY, processors=processors,
                               history=h) for i, h in enumerate(self.histories))
        self.last = engine.execute(StepPlan(items))  # the prefill: not timed

    def step(self) -> tuple[float, float, float]:
        """One decode step of every stream: (step ms, decode ms, processor ms)."""
        tokens = {s.request_id: s.token for s in self.last.sampled}
        items = []
        for i, history in enumerate(self.histories):
            history.append(tokens[self.ids[i]])
            items.append(PlanItem(self.ids[i], self.seq_ids[i], (history[-1],), len(history) - 1, True, GREEDY,
                                  processors=self.processors, history=history))
        t0 = time.perf_counter()
        self.last = self.engine.execute(StepPlan(tuple(items)))
        step_ms = (time.perf_counter() - t0) * 1e3
        if any(s.error is not None for s in self.last.sampled):
            raise RuntimeError(f"a processor failed: {[s.error for s in self.last.sampled if s.error]}")
        return step_ms, self.last.decode_ms, self.last.processor_ms

    def close(self) -> None:
        for request_id in self.ids:
            self.engine.release(request_id)


def run_round(model: Model, engine: Engine, modes: dict[str, tuple[object, ...]], streams: int, steps: int,
              tag: str) -> dict[str, list[tuple[float, float, float]]]:
    """Every mode's streams side by side in one cache, their steps interleaved (the order turning
    each step), so a busy moment of the host falls on all modes alike."""
    engine.context.memory.clear()
    # mode off on an Engine of its own over the same context: one that holds no request with
    # processors, as in a server where none names one
    plain = Engine(model, engine.context)
    groups = [Streams(model, plain if not processors else engine, mode, processors, streams, k * max(STREAMS), tag)
              for k, (mode, processors) in enumerate(modes.items())]
    out: dict[str, list[tuple[float, float, float]]] = {mode: [] for mode in modes}
    for step in range(steps):
        for k in range(len(groups)):
            group = groups[(step + k) % len(groups)]
            out[group.mode].append(group.step())
    for group in groups:
        group.close()
    plain.close()
    return out


def added_cost_without_processors(engine: Engine) -> dict[str, float]:
    """Microseconds the feature adds to a step where no sequence names a processor."""
    number = 200_000
    check_us = timeit.timeit(lambda: bool(engine._processors), number=number) / number * 1e6
    empty_us = timeit.timeit(lambda: None, number=number) / number * 1e6
    plain = timeit.timeit(lambda: PlanItem("r", 0, (1,), 5, True, GREEDY, None), number=number)
    fields = timeit.timeit(lambda: PlanItem("r", 0, (1,), 5, True, GREEDY, None, processors=(), history=()),
                           number=number)
    return {"check_us_per_step": max(0.0, check_us - empty_us),
            "plan_item_fields_us_per_sequence": max(0.0, (fields - plain) / number * 1e6)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("-t", "--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=32, help="decode steps per run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of every mode")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    model = Model(resolve_model(args.model))
    ban = BanStrings(BANNED).bind(model)  # built once per model, as the engine would
    modes: dict[str, tuple[object, ...]] = {"off": (), "identity": (identity,),
                                            "repetition": (RepetitionWindowPenalty(1.3, 64),),
                                            "typical": (TypicalP(0.9),), "ban": (ban,)}
    samples: dict[tuple[int, str], list[tuple[float, float, float]]] = {}
    with Context(model, ContextParams(n_ctx=4096, n_batch=512, n_ubatch=512, n_seq_max=len(modes) * max(STREAMS),
                                      n_threads=args.threads, n_threads_batch=args.threads)) as ctx:
        engine = Engine(model, ctx)
        run_round(model, engine, modes, max(STREAMS), 2, "warmup")
        for r in range(args.rounds):
            for streams in STREAMS if r % 2 == 0 else reversed(STREAMS):
                for mode, runs in run_round(model, engine, modes, streams, args.steps, f"r{r}").items():
                    samples.setdefault((streams, mode), []).extend(runs)
        added = added_cost_without_processors(engine)
        engine.close()
    model.close()

    rows: list[dict[str, Any]] = []
    for (streams, mode), runs in sorted(samples.items(), key=lambda kv: (kv[0][0], list(modes).index(kv[0][1]))):
        step = statistics.median(r[0] for r in runs)
        processor = statistics.median(r[2] for r in runs)
        rows.append({"streams": streams, "mode": mode, "steps": len(runs), "step_ms": step,
                     "decode_ms": statistics.median(r[1] for r in runs), "processor_ms": processor,
                     "processor_share": processor / step, "max_processor_ms": max(r[2] for r in runs)})
    off_step = {row["streams"]: row["step_ms"] for row in rows if row["mode"] == "off"}
    off_zero = all(row["max_processor_ms"] == 0.0 for row in rows if row["mode"] == "off")
    if args.json:
        print(json.dumps({"rows": rows, "off_processor_ms_always_zero": off_zero, "added_without": added}, indent=2))
        return 0
    print(f"model {args.model}, {args.threads} threads, {args.rounds} rounds x {args.steps} steps per mode "
          "(medians; step = engine.execute wall time)")
    print(f"{'streams':>7}  {'mode':10} {'step ms':>9} {'decode ms':>10} {'processor ms':>13} {'share':>7}  vs off")
    for row in rows:
        versus = row["step_ms"] / off_step[row["streams"]] - 1
        print(f"{row['streams']:>7}  {row['mode']:10} {row['step_ms']:9.2f} {row['decode_ms']:10.2f} "
              f"{row['processor_ms']:13.3f} {row['processor_share']:7.2%}  {versus:+6.1%}")
    for mode in modes:
        if mode in ("off", "identity"):
            continue
        shares = {row["streams"]: row["processor_share"] for row in rows if row["mode"] == mode}
        verdict = "under" if all(s < TARGET_SHARE for s in shares.values()) else "NOT under"
        print(f"{mode}: processor time {', '.join(f'{s:.2%} at {k}' for k, s in shares.items())} of the step: "
              f"{verdict} {TARGET_SHARE:.0%}")
    per_step_us = added["check_us_per_step"] + max(STREAMS) * added["plan_item_fields_us_per_sequence"]
    print(f"off: processor_ms is 0 on every step: {off_zero}; the feature adds {added['check_us_per_step']:.3f} us "
          f"per step + {added['plan_item_fields_us_per_sequence']:.3f} us per sequence (PlanItem fields) = "
          f"{per_step_us:.2f} us at {max(STREAMS)} streams, {per_step_us / 1e3 / off_step[max(STREAMS)]:.4%} "
          "of its step")
    return 0


if __name__ == "__main__":
    sys.exit(main())
