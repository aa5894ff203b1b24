"""Single-sequence speed of our engine vs llama.cpp's llama-bench, same tree, same threads.

    ours:   Model + Context(llama-bench's context settings) + Engine.execute(StepPlan)
              pp<P>: one P-token prefill in one step (random tokens, logits for the last)
              tg<N>: N single-token steps from an empty cache, greedy sampling included
              tg<N> run: the same N tokens, the first by Engine.execute and the rest in one native
                call (Engine.run_steps: decode, sample, decode... with no Python between steps,
                as the scheduler runs whole answers), against the same llama-bench tg<N>
    theirs: llama-bench -m MODEL -p P -n N -t T -r R -o json   (built by build_llama_tools)
    -> table of tokens/s (mean ± stdev over R repetitions) and ours/llama-bench ratios

Both sides warm up first (llama-bench: one full prompt run and one generation token), then
time R repetitions, clearing the KV cache before each (untimed), and average the per-run
tokens/s, which is how llama-bench computes `avg_ts`.

Matching llama-bench's defaults (tools/llama-bench/llama-bench.cpp, cmd_params_defaults and
to_llama_cparams): pp and tg are separate tests, each with its own context of n_ctx = P
(resp. N); n_batch 2048 (clamped by llama.cpp to n_ctx), n_ubatch 512, flash-attn auto,
F16 KV cache, n_threads = n_threads_batch = T. What we cannot match from Python: llama-bench
attaches a persistent ggml threadpool (poll=50), while llama_decode without one starts and
joins T-1 worker threads per call; that cost would show in tg (one decode per token), but at
T=2 it was within the noise. decode-only t/s (llama_decode alone, from StepResult.decode_ms)
separates the engine's Python and sampling overhead from llama.cpp's own time.

On a shared machine the spread between runs is large; --rounds K alternates the two sides K
times and pools the samples so that a slow phase of the host hits both.

    PYTHONPATH=. python bench/bench_engine.py [--model PATH] [-t 2] [-r 5] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # build_llama_tools
# The installed package (pip install .) has the compiled module; a checkout's tree has it only
# after a development build: the checkout goes on the path only when nothing is installed, and
# behind site-packages (ahead of it, it shadowed the installed package: "native module is not built").
if importlib.util.find_spec("botframework") is None:
    sys.path.append(str(REPO_ROOT))

from build_llama_tools import build_tools

from botframework.engine import Engine, PlanItem, StepPlan
from botframework.native import Context, ContextParams, Model, SamplerSpec
from botframework.native._lib import ffi

DEFAULT_MODEL = "smollm2-135m-instruct"
GREEDY = SamplerSpec(temperature=0.0)
_FA_NAMES: dict[object, str] = {-1: "auto", 0: "off", 1: "on"}  # llama-bench's json flash_attn


@dataclass(frozen=True)
class Measurement:
    test: str               # "pp512" / "tg128"
    side: str               # "ours" / "llama-bench"
    avg_ts: float           # tokens per second, mean over repetitions
    stddev_ts: float
    samples_ts: tuple[float, ...]
    decode_only_ts: float | None = None  # ours: the llama_decode time alone (no Python, no sampling)
    decode_only_samples_ts: tuple[float, ...] = ()


def merge(parts: list[Measurement]) -> Measurement:
    """Pool the samples of several rounds of one test into one measurement."""
    samples = [s for part in parts for s in part.samples_ts]
    decode = [s for part in parts for s in part.decode_only_samples_ts]
    avg, std = _stats(samples)
    return Measurement(parts[0].test, parts[0].side, avg, std, tuple(samples),
                       statistics.fmean(decode) if decode else None, tuple(decode))


def default_threads() -> int:
    try:
        import psutil  # type: ignore[import-untyped]

        physical = psutil.cpu_count(logical=False)
    except ImportError:
        physical = None
    return physical or os.cpu_count() or 1


def resolve_model(spec: str) -> Path:
    path = Path(spec)
    if path.is_file():
        return path
    from botframework.runtime.pull import pull

    return pull(spec)


def _stats(samples: list[float]) -> tuple[float, float]:
    return statistics.fmean(samples), (statistics.stdev(samples) if len(samples) > 1 else 0.0)


def _context(model: Model, n_ctx: int, threads: int) -> Context:
    # llama-bench: n_ctx = n_prompt + n_gen (+ depth), n_batch 2048, n_ubatch 512, fa auto.
    return Context(model, ContextParams(n_ctx=n_ctx, n_batch=2048, n_ubatch=512, n_seq_max=1,
                                        n_threads=threads, n_threads_batch=threads, flash_attn="auto"))


def bench_ours_pp(model: Model, n_prompt: int, threads: int, reps: int, seed: int) -> Measurement:
    rng = np.random.default_rng(seed)
    with _context(model, n_prompt, threads) as ctx:
        if ctx.n_batch < n_prompt:
            raise ValueError(f"n_batch {ctx.n_batch} < {n_prompt}: the prefill would not fit one step")
        engine = Engine(model, ctx)
        try:
            def run(request_id: str) -> tuple[float, float]:
                tokens = rng.integers(0, model.n_vocab, n_prompt).tolist()
                if model.special.add_bos:
                    tokens[0] = model.special.bos
                ctx.memory.clear()
                item = PlanItem(request_id, 0, tuple(tokens), 0, sample=True, sampler=GREEDY)
                t0 = time.perf_counter()
                result = engine.execute(StepPlan(items=(item,)))
                elapsed = time.perf_counter() - t0
                engine.release(request_id)
                return n_prompt / elapsed, n_prompt / (result.decode_ms / 1e3)

            run("warmup")
            samples = [run(f"pp-{i}") for i in range(reps)]
        finally:
            engine.close()
    avg, std = _stats([s for s, _ in samples])
    return Measurement(f"pp{n_prompt}", "ours", avg, std, tuple(s for s, _ in samples),
                       statistics.fmean(d for _, d in samples), tuple(d for _, d in samples))


def bench_ours_tg(model: Model, n_gen: int, threads: int, reps: int, seed: int, native_run: bool = False
                  ) -> Measurement:
    # llama-bench starts from BOS when the model adds one, else from a random token.
    rng = np.random.default_rng(seed)
    first = model.special.bos if model.special.add_bos else int(rng.integers(0, model.n_vocab))
    interrupt = ffi.new("int32_t[1]")  # (never set: the run goes on for n - 1 steps)
    with _context(model, n_gen, threads) as ctx:
        engine = Engine(model, ctx)
        try:
            def run(request_id: str, n: int) -> tuple[float, float]:
                ctx.memory.clear()
                token, decode_ms = first, 0.0
                t0 = time.perf_counter()
                for pos in range(1 if native_run else n):
                    item = PlanItem(request_id, 0, (token,), pos, sample=True, sampler=GREEDY)
                    result = engine.execute(StepPlan(items=(item,)))
                    token = result.sampled[0].token
                    decode_ms += result.decode_ms
                if native_run and n > 1:  # decode_ms: the run's decodes and samples
                    item = PlanItem(request_id, 0, (token,), 1, sample=True, sampler=GREEDY)
                    steps = engine.run_steps(StepPlan(items=(item,)), n - 1, (False,), interrupt)
                    assert steps.num_steps == n - 1
                    decode_ms += steps.decode_ms
                elapsed = time.perf_counter() - t0
                engine.release(request_id)
                return n / elapsed, n / (decode_ms / 1e3)

            run("warmup", n_gen)
            samples = [run(f"tg-{i}", n_gen) for i in range(reps)]
        finally:
            engine.close()
    avg, std = _stats([s for s, _ in samples])
    return Measurement(f"tg{n_gen}" + (" run" if native_run else ""), "ours", avg, std, tuple(s for s, _ in samples),
                       statistics.fmean(d for _, d in samples), tuple(d for _, d in samples))


def bench_llama(binary: Path, model_path: Path, n_prompt: int, n_gen: int, threads: int,
                reps: int) -> tuple[list[Measurement], dict[str, object]]:
    cmd = [str(binary), "-m", str(model_path), "-p", str(n_prompt), "-n", str(n_gen),
           "-t", str(threads), "-r", str(reps), "-o", "json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    out = []
    info: dict[str, object] = {}
    for test in json.loads(proc.stdout):
        name = f"pp{test['n_prompt']}" if test["n_prompt"] else f"tg{test['n_gen']}"
        out.append(Measurement(name, "llama-bench", float(test["avg_ts"]), float(test["stddev_ts"]),
                               tuple(float(s) for s in test["samples_ts"])))
        info = {k: test.get(k) for k in ("build_commit", "cpu_info", "backends", "model_type", "n_threads",
                                         "n_batch", "n_ubatch", "flash_attn", "type_k", "type_v")}
    return out, info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="our engine vs llama-bench (pp/tg tokens/s)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="GGUF path or catalog name")
    parser.add_argument("-p", "--n-prompt", type=int, default=512)
    parser.add_argument("-n", "--n-gen", type=int, default=128)
    parser.add_argument("-t", "--threads", type=int, default=default_threads())
    parser.add_argument("-r", "--reps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=1,
                        help="alternate ours / llama-bench this many times and pool the samples "
                             "(use 3+ on a shared or noisy machine: slow phases then hit both sides)")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--json", action="store_true", help="print machine-readable results only")
    args = parser.parse_args(argv)
    if min(args.n_prompt, args.n_gen, args.threads, args.reps, args.rounds) < 1:
        parser.error("-p, -n, -t, -r and --rounds must be >= 1")

    model_path = resolve_model(args.model)
    tools = build_tools(["llama-bench"])
    ours_parts: dict[str, list[Measurement]] = {}
    theirs_parts: dict[str, list[Measurement]] = {}
    info: dict[str, object] = {}
    with Model(model_path) as model:
        for round_index in range(args.rounds):
            seed = args.seed + round_index
            for m in (bench_ours_pp(model, args.n_prompt, args.threads, args.reps, seed),
                      bench_ours_tg(model, args.n_gen, args.threads, args.reps, seed),
                      bench_ours_tg(model, args.n_gen, args.threads, args.reps, seed, native_run=True)):
                ours_parts.setdefault(m.test, []).append(m)
            theirs_round, info = bench_llama(tools["llama-bench"], model_path, args.n_prompt, args.n_gen,
                                             args.threads, args.reps)
            for m in theirs_round:
                theirs_parts.setdefault(m.test, []).append(m)
    ours = [merge(parts) for parts in ours_parts.values()]
    by_test = {test: merge(parts) for test, parts in theirs_parts.items()}
    rows: list[dict[str, Any]] = []
    for mine in ours:
        ref = by_test.get(mine.test.removesuffix(" run"))
        rows.append({"test": mine.test, "ours": asdict(mine), "llama_bench": asdict(ref) if ref else None,
                     "ratio": mine.avg_ts / ref.avg_ts if ref else None,
                     "ratio_decode_only": (mine.decode_only_ts / ref.avg_ts
                                           if ref and mine.decode_only_ts else None)})
    report = {"model": str(model_path), "threads": args.threads, "reps": args.reps, "rounds": args.rounds,
              "llama_bench": info, "results": rows}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"model {model_path.name}  threads {args.threads}  reps {args.reps} x rounds {args.rounds}  "
          f"(llama-bench: n_batch {info.get('n_batch')}, n_ubatch {info.get('n_ubatch')}, "
          f"flash_attn {_FA_NAMES.get(info.get('flash_attn'), info.get('flash_attn'))}, kv {info.get('type_k')})")
    header = f"{'test':<10}{'ours t/s':>18}{'llama-bench t/s':>20}{'ours/ref':>10}{'decode-only t/s':>18}{'ratio':>8}"
    print(header)
    print("-" * len(header))
    for row in rows:
        ours_row: dict[str, Any] = row["ours"]
        ref_row: dict[str, Any] | None = row["llama_bench"]
        ours_cell = f"{ours_row['avg_ts']:.2f} ± {ours_row['stddev_ts']:.2f}"
        ref_cell = f"{ref_row['avg_ts']:.2f} ± {ref_row['stddev_ts']:.2f}" if ref_row else "n/a"
        ratio = f"{row['ratio']:.3f}" if row["ratio"] else "n/a"
        decode = f"{ours_row['decode_only_ts']:.2f}" if ours_row["decode_only_ts"] else "n/a"
        ratio_d = f"{row['ratio_decode_only']:.3f}" if row["ratio_decode_only"] else "n/a"
        print(f"{row['test']:<10}{ours_cell:>18}{ref_cell:>20}{ratio:>10}{decode:>18}{ratio_d:>8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
