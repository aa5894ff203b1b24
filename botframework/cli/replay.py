"""`botframework replay TRACE --policy fcfs --policy spf`: scheduling policies compared offline.

    TRACE (serve --trace) -> botframework.replay: step cost fitted to the recorded steps,
        one simulated run per policy -> a table (or --json) beside the recorded run's numbers
"""

from __future__ import annotations

import argparse
import json
import math
import sys

# botframework.replay.POLICIES, spelled out: importing it (numpy, the scheduler) would slow
# every `botframework` command's start (a test checks the two agree)
POLICY_HELP = {"fcfs": "first come, first served within a priority (aging as configured)",
               "spf": "shortest prompt first within a priority level (aging still applies)"}


def add_replay_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    policies = "; ".join(f"{name}: {what}" for name, what in POLICY_HELP.items())
    p = sub.add_parser(
        "replay", help="replay a step trace (serve --trace) against scheduling policies, offline",
        description="Replay a trace's requests (arrival times, prompt sizes and shared prefixes, tokens generated) "
                    "through the scheduler on a simulated engine whose step times are fitted to the recorded "
                    f"steps, once per policy. Policies: {policies}. Add scheduler knobs as "
                    "NAME,knob=value (e.g. fcfs,max_batch_tokens=128).")
    p.add_argument("trace", help="a JSONL trace written by serve --trace")
    p.add_argument("--policy", action="append", metavar="NAME[,KNOB=VALUE...]",
                   help="a policy to replay (repeatable; default: fcfs and spf)")
    p.add_argument("--model", help="the model whose requests to replay (default: the trace's first)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=cmd_replay)


def cmd_replay(args: argparse.Namespace) -> int:
    from botframework.replay import compare, load_trace, parse_policy

    policies = args.policy or list(POLICY_HELP)
    try:
        for policy in policies:
            parse_policy(policy)
        trace = load_trace(args.trace, args.model)
        cost, reports = compare(trace, policies)
    except (OSError, ValueError) as exc:
        print(f"botframework: error: {exc}", file=sys.stderr)
        return 2
    rows = [report.summary() for report in reports]
    if args.json:
        step_cost = {"base_ms": cost.base_ms, "per_token_ms": cost.per_token_ms,
                     "per_sequence_ms": cost.per_sequence_ms, "r2": cost.r2, "num_steps": cost.num_steps}
        print(json.dumps({"model": trace.model, "step_cost": step_cost, "results": rows}, indent=2))
        return 0
    span = trace.arrivals[-1].t - trace.arrivals[0].t
    print(f"trace {args.trace}: model {trace.model}, {len(trace.arrivals)} requests arriving over {span:.1f} s"
          + (f" ({trace.num_unfinished} unfinished, left out)" if trace.num_unfinished else ""))
    print(f"step time ~ {cost.base_ms:.2f} ms + {cost.per_token_ms:.3f} ms/token + {cost.per_sequence_ms:.3f} "
          f"ms/sequence  (fitted to {cost.num_steps} recorded steps, R^2 {cost.r2:.2f})")
    print(_table(rows))
    return 0


COLUMNS = [("policy", "policy", "{}"), ("requests", "reqs", "{}"), ("tokens_per_s", "tok/s", "{:.1f}"),
           ("ttft_p50_ms", "TTFT p50", "{:.0f}"), ("ttft_p90_ms", "p90", "{:.0f}"), ("ttft_p99_ms", "p99", "{:.0f}"),
           ("total_p50_ms", "latency p50", "{:.0f}"), ("total_p90_ms", "p90", "{:.0f}"),
           ("total_p99_ms", "p99", "{:.0f}"), ("queue_p50_ms", "queue p50", "{:.0f}"),
           ("preemptions", "preempt", "{}"), ("steps", "steps", "{}")]


def _table(rows: list[dict[str, float | int | str]]) -> str:
    def cell(row: dict[str, float | int | str], key: str, fmt: str) -> str:
        value = row.get(key)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        return fmt.format(value)

    cells = [[title for _key, title, _fmt in COLUMNS]] + [[cell(row, key, fmt) for key, _t, fmt in COLUMNS]
                                                          for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n(times in ms; recorded: the run itself; the others: simulated on the fitted step time)"
