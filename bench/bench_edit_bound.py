"""How fast could drafts make bench_edit's workload here? An upper bound, measured.

    the edit prompts of bench_edit.py (same generator, same max_tokens rule), greedy, no drafts
        -> prompt tokens, output tokens, prefill time (ttft) and decode time of each
    a verification step of n tokens (logits at every position, as the engine asks for them),
    timed at the median prompt's context length, n = 1 .. 16
        -> c(n) ms
    for each output position i, the tokens a drafter could have proposed that greedy decoding
    then accepts:
        ngram:  our NgramDrafter's proposal (prompt lookup, its n-gram sizes), cut at the first
                token that differs from the output
        copy:   the longest piece of the output from i on that occurs anywhere in the prompt and
                output before i: what any drafter that copies from the context could get right
    an oracle that knows those lengths picks each step's draft length to minimise the total
    decode time (dynamic programming over positions: a step at i with j accepted drafts costs
    c(1 + j) and moves to i + 1 + j; a drafted token that would be rejected is never drafted)
        -> decode speedup bound; with the measured prefill, the bound on completion tokens / wall
           time against decoding without drafts (bench_edit's figure)

No drafter can beat its oracle: a real one also drafts tokens that are rejected and must guess
how long to draft. Compare the wall-time bound with bench_edit's target (ours with drafts >= 1.3x
llama-server's best n-gram setting at 1 stream, which bench_edit measures at ~0.95x llama-server
without drafts, itself ~ours without drafts).

Usage: python bench/bench_edit_bound.py [--prompts 8] [--lines 100-200] [--max-tokens 384] [--threads T]
                                        [--json FILE]
Runs against the installed botframework (after `pip install .`), like the other benchmarks.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_edit
if importlib.util.find_spec("botframework") is None:  # no installed package: the checkout
    sys.path.append(str(Path(__file__).resolve().parent.parent))

from bench_edit import MODEL_ID, edit_prompts  # noqa: E402

from botframework.api import LocalLLM  # noqa: E402
from botframework.config import default_threads  # noqa: E402
from botframework.native.batch import Batch  # noqa: E402
from botframework.native.context import Context, ContextParams  # noqa: E402
from botframework.scheduler.drafter import NgramDrafter  # noqa: E402

MAX_DRAFT = 15  # a step verifies at most 1 + this many tokens


def step_costs(llm: LocalLLM, prompt: list[int], output: list[int], threads: int, repeats: int = 15) -> list[float]:
    """c[n] = median ms of a decode of n tokens after `prompt`, logits at every position."""
    model = llm.worker.model
    ctx = Context(model, ContextParams(n_ctx=len(prompt) + 64, n_batch=512, n_ubatch=512, n_seq_max=1,
                                       n_threads=threads, n_threads_batch=threads))
    batch = Batch(512)
    try:
        for start in range(0, len(prompt), 512):
            batch.clear()
            batch.add_sequence(prompt[start:start + 512], start, 0, logits_last=True)
            ctx.decode(batch)
        costs = [0.0]
        for n in range(1, MAX_DRAFT + 2):
            times = []
            for _ in range(repeats):
                batch.clear()
                batch.add_sequence(output[:n], len(prompt), 0, logits_last=True)
                batch.logits[:n] = 1
                t0 = time.perf_counter()
                ctx.decode(batch)
                times.append((time.perf_counter() - t0) * 1e3)
                ctx.memory.seq_rm(0, len(prompt), -1)
            costs.append(statistics.median(times[2:]))
        return costs
    finally:
        batch.close()
        ctx.close()


def ngram_lengths(prompt: list[int], output: list[int]) -> list[int]:
    """At each output position, how many of NgramDrafter's proposed tokens greedy decoding keeps."""
    lengths = []
    # one drafter for the whole output: its index grows with the history (a new one at each
    # position indexed the whole prompt again); nothing is recorded, so its length stays MAX_DRAFT
    drafter = NgramDrafter(draft_max=MAX_DRAFT, draft_start=MAX_DRAFT)
    for i in range(len(output)):
        drafts = drafter.propose(prompt + output[:i], MAX_DRAFT)
        kept = 0
        while kept < len(drafts) and i + kept < len(output) and drafts[kept] == output[i + kept]:
            kept += 1
        lengths.append(kept)
    return lengths


def copy_lengths(prompt: list[int], output: list[int]) -> list[int]:
    """At each output position i, the longest output[i:i+L] (L <= MAX_DRAFT) that occurs in
    prompt + output[:i] (it may run on into output[:i] itself, as a copy would)."""
    lengths = []
    for i in range(len(output)):
        history = prompt + output[:i]
        best = 0
        for p in range(len(history)):
            length = 0
            while (length < MAX_DRAFT and i + length < len(output) and p + length < len(history)
                   and history[p + length] == output[i + length]):
                length += 1
            best = max(best, length)
            if best == MAX_DRAFT:
                break
        lengths.append(best)
    return lengths


def oracle_ms(lengths: list[int], costs: list[float]) -> float:
    """The least decode time for the whole output when step i may verify up to lengths[i] drafts."""
    n = len(lengths)
    best = [0.0] * (n + 1)
    for i in range(n - 1, -1, -1):
        best[i] = min(costs[1 + j] + best[min(n, i + 1 + j)] for j in range(lengths[i] + 1))
    return best[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--lines", default="100-200", help="module lengths, MIN-MAX lines")
    parser.add_argument("--max-tokens", type=int, default=384, help="cap on max_tokens (~ the module's tokens)")
    parser.add_argument("--threads", type=int, default=default_threads()[0])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    low, high = (int(x) for x in args.lines.split("-"))
    prompts = edit_prompts(max(args.prompts, 1), low, high)[:args.prompts]

    with LocalLLM(MODEL_ID, n_ctx=8192, num_slots=1, n_threads=args.threads, n_threads_batch=args.threads) as llm:
        runs = []
        for prompt in prompts:
            tokens = list(llm.handle.render_chat(prompt.messages)[0])
            max_tokens = min(args.max_tokens, int(len(prompt.messages[0]["content"]) / 3.5))
            llm.worker.clear_prefix_cache()  # every prompt prefilled in full, as in bench_edit
            result = llm.chat(prompt.messages, max_tokens=max_tokens, temperature=0.0)
            prefill_ms = result.timings["ttft_ms"]
            runs.append({"kind": prompt.kind, "prompt": tokens, "output": list(result.token_ids),
                         "prefill_ms": prefill_ms, "decode_ms": result.timings["total_ms"] - prefill_ms})
        middle = sorted(runs, key=lambda r: len(r["prompt"]))[len(runs) // 2]
        costs = step_costs(llm, middle["prompt"], middle["output"], args.threads)

    print(f"{MODEL_ID}, {args.threads} threads, {len(runs)} edit prompts ({args.lines} lines, <= {args.max_tokens} "
          f"tokens), greedy")
    steps = " ".join(f"{n}:{c:.1f}" for n, c in enumerate(costs) if n)
    print(f"verification step, ms by tokens (context {len(middle['prompt'])}): {steps}")
    print(f"{'kind':>10} | prompt | output | prefill ms | decode ms | mean kept ngram copy | decode bound ngram copy")
    totals = {"prefill": 0.0, "plain": 0.0, "ngram": 0.0, "copy": 0.0}
    for run in runs:
        output = run["output"]
        ngram, copy = ngram_lengths(run["prompt"], output), copy_lengths(run["prompt"], output)
        plain = costs[1] * len(output)
        run["bound_ngram_ms"], run["bound_copy_ms"] = oracle_ms(ngram, costs), oracle_ms(copy, costs)
        totals["prefill"] += run["prefill_ms"]
        totals["plain"] += plain
        totals["ngram"] += run["bound_ngram_ms"]
        totals["copy"] += run["bound_copy_ms"]
        kept = f"{sum(ngram) / max(1, len(output)):11.1f} {sum(copy) / max(1, len(output)):4.1f}"
        print(f"{run['kind']:>10} | {len(run['prompt']):6d} | {len(output):6d} | {run['prefill_ms']:10.0f} | "
              f"{run['decode_ms']:9.0f} | {kept} | "
              f"{plain / run['bound_ngram_ms']:17.2f}x {plain / run['bound_copy_ms']:4.2f}x")
    decode_ngram, decode_copy = totals["plain"] / totals["ngram"], totals["plain"] / totals["copy"]
    wall = totals["prefill"] + totals["plain"]
    wall_ngram = wall / (totals["prefill"] + totals["ngram"])
    wall_copy = wall / (totals["prefill"] + totals["copy"])
    print(f"prefill share of a round without drafts: {totals['prefill'] / wall:.0%}")
    print(f"decode speedup bound: {decode_ngram:.2f}x (n-gram drafter), {decode_copy:.2f}x (any copy)")
    print(f"completion tokens / wall time bound, against no drafts: {wall_ngram:.2f}x (n-gram), "
          f"{wall_copy:.2f}x (copy)")
    if args.json:
        args.json.write_text(json.dumps({"costs_ms": costs, "runs": [
            {k: v for k, v in r.items() if k not in ("prompt", "output")} | {"prompt_tokens": len(r["prompt"]),
                                                                           "output_tokens": len(r["output"])}
            for r in runs], "decode_bound": {"ngram": decode_ngram, "copy": decode_copy},
            "wall_bound": {"ngram": wall_ngram, "copy": wall_copy}}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
