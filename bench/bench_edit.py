"""Code-edit benchmark: the IDE workload, where most of the answer repeats the input.

    24 prompts: a generated Python module (100-400 lines, deterministic) + an instruction
    (rename a symbol, add type hints, convert to asyncio, add docstrings), greedy,
    max_tokens ~ the module's length in tokens (capped by --max-tokens)
    servers, all started at once, same model, threads, slots and context:
        ours --draft ngram, ours --draft none,
        llama-server (same build) without drafts and with each --spec-type n-gram setting
        (ngram-simple, ngram-map-k, ngram-mod, ngram-cache; their default parameters)
    for each level (1 and 4 concurrent streams), R rounds; each round runs every server on the
    same prompts, in an order that rotates per round (the machine's speed drifts)
        -> completion tokens / wall time of the round, draft acceptance (ours: /metrics
           counters; llama-server: timings.draft_n / draft_n_accepted), and per-round ratios

Usage: python bench/bench_edit.py [--levels 1,4] [--rounds 3] [--prompts 24] [--lines 100-400]
                                  [--max-tokens 1024] [--threads T] [--servers ours-ngram,llama-none,...]
                                  [--json FILE]

Runs against the installed botframework (after `pip install .`); from a checkout without an
installed package it falls back to the checkout (PYTHONPATH or a built tree).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import importlib.util
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))  # build_llama_tools, bench_serving
if importlib.util.find_spec("botframework") is None:  # no installed package: the checkout
    sys.path.append(str(Path(__file__).resolve().parent.parent))

from bench_serving import free_port, running  # noqa: E402
from build_llama_tools import build_tools  # noqa: E402

from botframework.config import default_threads  # noqa: E402
from botframework.runtime.pull import pull  # noqa: E402

MODEL_ID = "smollm2-135m-instruct"
INSTRUCTIONS = {
    "rename": "Rename the function `{symbol}` to `{new}` everywhere in this module. Reply with the whole "
              "updated module in one code block.",
    "hints": "Add type hints to every function in this module. Reply with the whole updated module in one "
             "code block.",
    "asyncio": "Rewrite this module using asyncio: make the I/O functions async and await them. Reply with the "
               "whole updated module in one code block.",
    "docstrings": "Add a one-line docstring to every function in this module. Reply with the whole updated "
                  "module in one code block.",
}
NOUNS = ("user", "order", "invoice", "record", "config", "session", "payload", "report", "item", "account",
         "event", "message", "ticket", "product", "customer", "batch", "token", "entry", "job", "task")
VERBS = ("load", "save", "parse", "validate", "render", "fetch", "update", "merge", "filter", "count",
         "build", "format", "send", "check", "normalize", "export")


def make_module(seed: int, num_lines: int) -> tuple[str, list[str]]:
    """A plausible Python module of about num_lines lines, and its function names."""
    rng = random.Random(seed)
    lines = ["import json", "import os", "import time", "", ""]
    names: list[str] = []
    while len(lines) < num_lines:
        noun, verb = rng.choice(NOUNS), rng.choice(VERBS)
        name = f"{verb}_{noun}{'s' if rng.random() < 0.3 else ''}"
        if name in names:
            name += f"_{len(names)}"
        names.append(name)
        arg, other = noun, rng.choice(NOUNS)
        body = [f"def {name}({arg}, {other}_id, path=None):"]
        kind = rng.randrange(4)
        if kind == 0:
            body += [f"    path = path or os.path.join('data', str({other}_id) + '.json')",
                     "    with open(path) as f:",
                     "        data = json.load(f)",
                     f"    data['{noun}'] = {arg}",
                     "    with open(path, 'w') as f:",
                     "        json.dump(data, f, indent=2)",
                     "    return data"]
        elif kind == 1:
            body += ["    result = []",
                     f"    for value in {arg}:",
                     f"        if value is None or value == {other}_id:",
                     "            continue",
                     "        result.append(str(value).strip().lower())",
                     "    if path is not None:",
                     "        time.sleep(0.01)",
                     "    return result"]
        elif kind == 2:
            body += [f"    if not {arg}:",
                     f"        raise ValueError('{name}: empty {noun}')",
                     f"    total = sum(len(str(part)) for part in {arg})",
                     f"    return {{'{noun}': {arg}, 'id': {other}_id, 'total': total, 'path': path}}"]
        else:
            body += ["    start = time.time()",
                     "    count = 0",
                     f"    for key in sorted({arg}):",
                     "        count += 1",
                     f"        print(key, {other}_id)",
                     "    elapsed = time.time() - start",
                     "    return count, elapsed"]
        lines += body + ["", ""]
    return "\n".join(lines).rstrip() + "\n", names


@dataclass(frozen=True)
class EditPrompt:
    kind: str
    messages: list[dict[str, str]]
    num_lines: int


def edit_prompts(count: int, min_lines: int, max_lines: int) -> list[EditPrompt]:
    prompts = []
    kinds = list(INSTRUCTIONS)
    for i in range(count):
        num_lines = min_lines + (max_lines - min_lines) * (i * 7 % max(1, count)) // max(1, count - 1)
        source, names = make_module(1000 + i, num_lines)
        kind = kinds[i % len(kinds)]
        symbol = names[i % len(names)]
        text = INSTRUCTIONS[kind].format(symbol=symbol, new=f"{symbol}_v2")
        prompts.append(EditPrompt(kind, [{"role": "user", "content": f"{text}\n\n```python\n{source}```"}],
                                  num_lines))
    return prompts


@dataclass
class Round:
    tokens: int = 0
    seconds: float = 0.0
    drafted: int = 0
    accepted: int = 0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


@dataclass
class ServerRuns:
    name: str
    rounds: dict[int, list[Round]] = field(default_factory=dict)  # streams -> rounds


def _ours_counters(base: str) -> tuple[int, int]:
    text = httpx.get(f"{base}/metrics", timeout=30).text
    values = {}
    for line in text.splitlines():
        if line.startswith(("botframework_draft_tokens_total", "botframework_draft_accepted_tokens_total")):
            values[line.split("{")[0]] = int(float(line.rsplit(" ", 1)[1]))
    return values.get("botframework_draft_tokens_total", 0), values.get("botframework_draft_accepted_tokens_total", 0)


def one_request(base: str, prompt: EditPrompt, max_tokens: int) -> tuple[int, int, int]:
    """(completion tokens, drafted, accepted) of one greedy chat completion."""
    body = {"model": MODEL_ID, "messages": prompt.messages, "max_tokens": max_tokens, "temperature": 0.0,
            "stream": False}
    response = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=1800)
    response.raise_for_status()
    data = response.json()
    timings = data.get("timings") or {}
    return (int(data["usage"]["completion_tokens"]), int(timings.get("draft_n", 0)),
            int(timings.get("draft_n_accepted", 0)))


def run_level(name: str, base: str, prompts: list[EditPrompt], streams: int,
              max_tokens: Callable[[EditPrompt], int]) -> Round:
    """The prompts, `streams` at a time; tokens over the wall time."""
    ours = name.startswith("ours")
    before = _ours_counters(base) if ours else (0, 0)
    result = Round()
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(streams) as pool:
        for tokens, drafted, accepted in pool.map(lambda p: one_request(base, p, max_tokens(p)), prompts):
            result.tokens += tokens
            result.drafted += drafted
            result.accepted += accepted
    result.seconds = time.perf_counter() - t0
    if ours:
        after = _ours_counters(base)
        result.drafted, result.accepted = after[0] - before[0], after[1] - before[1]
    return result


SERVERS = ("ours-ngram", "ours-none", "llama-none", "llama-ngram-simple", "llama-ngram-map-k", "llama-ngram-mod",
           "llama-ngram-cache")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default="1,4")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=24, help="prompts (>= 20 for the full workload)")
    parser.add_argument("--per-round", type=int, default=0,
                        help="prompts each round runs per level (0: all; a round takes the next ones in turn)")
    parser.add_argument("--lines", default="100-400", help="module lengths, MIN-MAX lines")
    parser.add_argument("--max-tokens", type=int, default=1024, help="cap on max_tokens (~ the module's tokens)")
    parser.add_argument("--threads", type=int, default=default_threads()[0])
    parser.add_argument("--parallel", type=int, default=4, help="slots on every server")
    parser.add_argument("--ctx", type=int, default=16384)
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    min_lines, max_lines = (int(x) for x in args.lines.split("-"))
    prompts = edit_prompts(args.prompts, min_lines, max_lines)
    names = [s for s in args.servers.split(",") if s]
    unknown = set(names) - set(SERVERS)
    if unknown:
        parser.error(f"unknown servers: {', '.join(sorted(unknown))} (known: {', '.join(SERVERS)})")
    model = pull(MODEL_ID)
    llama_server = build_tools(("llama-server",))["llama-server"]

    def command(name: str, port: int) -> list[str]:
        common = ["--port", str(port), "--parallel" if name.startswith("ours") else "-np", str(args.parallel)]
        if name.startswith("ours"):
            return [sys.executable, "-m", "botframework.server", *common, "--ctx-size", str(args.ctx),
                    "--threads", str(args.threads), "--threads-batch", str(args.threads), "--log-level", "warning",
                    "--draft", name.removeprefix("ours-")]
        spec = name.removeprefix("llama-")
        return [str(llama_server), "-m", str(model), "--host", "127.0.0.1", *common, "-c", str(args.ctx),
                "-t", str(args.threads), "-tb", str(args.threads), "--kv-unified", "--no-webui",
                *([] if spec == "none" else ["--spec-type", spec])]

    def max_tokens(prompt: EditPrompt) -> int:  # ~ the module's tokens (~3.5 characters each), capped
        return min(args.max_tokens, len(prompt.messages[0]["content"]) * 2 // 7)

    runs = {name: ServerRuns(name) for name in names}
    print(f"{len(prompts)} edit prompts ({min_lines}-{max_lines} lines), {args.threads} threads, {args.parallel} "
          f"slots, {args.rounds} rounds per level; servers: {', '.join(names)} (logs in /tmp/bench-*.log)",
          flush=True)
    with contextlib.ExitStack() as stack:
        bases = {}
        for name in names:
            port = free_port()
            bases[name] = stack.enter_context(running(command(name, port), port, name))
        for name in names:  # warm-up: weights paged in, code paths compiled
            one_request(bases[name], prompts[0], 8)
        turn = 0
        for streams in levels:
            for r in range(args.rounds):
                count = args.per_round or len(prompts)
                chosen = [prompts[(turn + i) % len(prompts)] for i in range(count)]
                turn += count
                order = names[r % len(names):] + names[: r % len(names)]
                for name in order:
                    result = run_level(name, bases[name], chosen, streams, max_tokens)
                    runs[name].rounds.setdefault(streams, []).append(result)
                    rate = f"{result.accepted / result.drafted:.2f}" if result.drafted else "-"
                    print(f"  {streams} streams, round {r + 1}: {name:20} {result.tokens:6d} tokens "
                          f"{result.tokens_per_s:7.1f} t/s  drafted {result.drafted:6d} accepted {rate}", flush=True)
    report(runs, names, levels)
    if args.json:
        args.json.write_text(json.dumps({name: {str(k): [vars(r) for r in v] for k, v in run.rounds.items()}
                                         for name, run in runs.items()}, indent=2))
    return 0


def ratio(runs: dict[str, ServerRuns], medians: dict[str, float], streams: int, name: str, other: str | None) -> str:
    """name's median over other's, and the ratio of each round (both ran the same prompts)."""
    if other is None or other not in medians or other == name:
        return "-"
    per_round = [a.tokens_per_s / b.tokens_per_s
                 for a, b in zip(runs[name].rounds[streams], runs[other].rounds[streams], strict=True)]
    return f"{medians[name] / medians[other]:.2f} ({'/'.join(f'{x:.2f}' for x in per_round)})"


def report(runs: dict[str, ServerRuns], names: list[str], levels: list[int]) -> None:
    llama = [n for n in names if n.startswith("llama-") and n != "llama-none"]
    print(f"\n{'streams':>7} | {'server':20} | {'t/s (median)':>12} | {'accepted/drafted':>16} | "
          f"{'vs llama-none':>13} | {'vs best llama n-gram':>20}")
    for streams in levels:
        medians = {n: statistics.median(r.tokens_per_s for r in runs[n].rounds[streams]) for n in names}
        best = max(llama, key=lambda n: medians[n], default=None)
        for name in names:
            rounds = runs[name].rounds[streams]
            drafted = sum(r.drafted for r in rounds)
            accepted = sum(r.accepted for r in rounds)
            rate = f"{accepted / drafted:.2f} of {drafted}" if drafted else "-"

            vs_none = ratio(runs, medians, streams, name, "llama-none")
            vs_best = ratio(runs, medians, streams, name, best) if name.startswith("ours") else ""
            print(f"{streams:>7} | {name:20} | {medians[name]:12.1f} | {rate:>16} | {vs_none:>13} | {vs_best:>20}")
        if best is not None:
            print(f"{'':>7}   best llama-server n-gram setting at {streams} streams: {best}")


if __name__ == "__main__":
    sys.exit(main())
