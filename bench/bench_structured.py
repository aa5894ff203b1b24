"""Generation speed with a JSON schema vs. unconstrained, same prompts, same model.

    LocalLLM (scheduler + engine + SamplerChain, as the server runs it)
      constrained:   chat(prompt, schema=S)    grammar from llama.cpp's converter, prefilled
      unconstrained: chat(prompt)              the same prompt text, no grammar
    -> decode tokens/s per mode: (completion tokens - 1) / (total - time to first token),
       summed over the requests; ratio constrained / unconstrained (target >= 0.8)

Both modes run the same prompts (temperature 0 unless --temperature), alternating mode per
round so that a slow phase of a shared host hits both. `--concurrency C` runs C requests at
once (batched decode); sampler time per token (the grammar's cost) comes from the worker's
metrics.

    PYTHONPATH=. python bench/bench_structured.py [--model NAME] [-t 2] [--rounds 3]
                                                  [--concurrency 1] [--max-tokens 96]
                                                  [--temperature 0] [--json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
# The installed package (pip install .) has the compiled module; a checkout's tree has it only
# after a development build: the checkout goes on the path only when nothing is installed, and
# behind site-packages (ahead of it, it shadowed the installed package: "native module is not built").
if importlib.util.find_spec("botframework") is None:
    sys.path.append(str(REPO_ROOT))

from botframework import LocalLLM  # noqa: E402
from botframework.api import _collect  # noqa: E402
from botframework.errors import OutputValidationError  # noqa: E402

DEFAULT_MODEL = "smollm2-135m-instruct"

PROMPTS: list[tuple[str, dict[str, Any]]] = [
    ("Describe a person as JSON.", {
        "type": "object", "additionalProperties": False, "required": ["name", "age", "email_verified"],
        "properties": {"name": {"type": "string", "maxLength": 40}, "age": {"type": "integer", "minimum": 0,
                                                                             "maximum": 120},
                       "email_verified": {"type": "boolean"}}}),
    ("Give the weather forecast for three cities as JSON.", {
        "type": "object", "required": ["forecasts"], "additionalProperties": False,
        "properties": {"forecasts": {"type": "array", "minItems": 1, "maxItems": 3, "items": {
            "type": "object", "required": ["city", "celsius", "sky"], "additionalProperties": False,
            "properties": {"city": {"type": "string", "maxLength": 30}, "celsius": {"type": "integer",
                                                                                   "minimum": -40, "maximum": 50},
                           "sky": {"enum": ["sunny", "cloudy", "rain", "snow"]}}}}}}),
    ("Write a shopping list as JSON.", {
        "type": "object", "required": ["items"], "additionalProperties": False,
        "properties": {"items": {"type": "array", "maxItems": 5, "items": {
            "type": "object", "required": ["name", "quantity"], "additionalProperties": False,
            "properties": {"name": {"type": "string", "maxLength": 30},
                           "quantity": {"type": "integer", "minimum": 1, "maximum": 20}}}}}}),
    ("Summarise a book as JSON with a title, an author and a short summary.", {
        "type": "object", "required": ["title", "author", "summary"], "additionalProperties": False,
        "properties": {"title": {"type": "string", "maxLength": 60}, "author": {"type": "string", "maxLength": 40},
                       "summary": {"type": "string", "maxLength": 200}}}),
    ("Describe an order in an online shop as JSON.", {
        "type": "object", "required": ["order_id", "status", "total_cents"], "additionalProperties": False,
        "properties": {"order_id": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{6}$"},
                       "status": {"enum": ["pending", "shipped", "delivered"]},
                       "total_cents": {"type": "integer", "minimum": 0, "maximum": 1000000},
                       "note": {"type": "string", "maxLength": 80}}}),
    ("Describe a meeting as JSON.", {
        "type": "object", "required": ["topic", "date", "attendees"], "additionalProperties": False,
        "properties": {"topic": {"type": "string", "maxLength": 50}, "date": {"type": "string", "format": "date"},
                       "attendees": {"type": "array", "minItems": 1, "maxItems": 4,
                                     "items": {"type": "string", "maxLength": 20}}}}),
]


@dataclass
class ModeResult:
    mode: str
    num_requests: int = 0
    num_tokens: int = 0
    decode_s: float = 0.0
    sample_ms: float = 0.0
    num_invalid: int = 0

    @property
    def tokens_per_s(self) -> float:
        return self.num_tokens / self.decode_s if self.decode_s else 0.0


def run_mode(llm: LocalLLM, constrained: bool, max_tokens: int, concurrency: int,
             temperature: float = 0.0) -> ModeResult:
    out = ModeResult("json_schema" if constrained else "unconstrained")
    metrics = llm.worker.metrics
    sample_before = metrics.sample_ms

    def timed(item: tuple[str, dict[str, Any]]) -> tuple[int, float, bool]:
        """One request through the same path as LocalLLM.chat, keeping its timings."""
        prompt, schema = item
        kwargs: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temperature, "seed": 7}
        if constrained:
            plan = llm._plan_chat(prompt, None, "error", kwargs, schema=schema)
        else:
            plan = llm._plan_chat(prompt, None, "error", kwargs)
        result = _collect(llm._stream_plan(plan, kwargs))
        valid = True
        if constrained and result.finish_reason == "stop":
            try:
                plan.structured.parse(plan.parser.parse(result.text).content or "")  # type: ignore[union-attr]
            except OutputValidationError:
                valid = False
        decode_s = max(result.timings.get("total_ms", 0.0) - result.timings.get("ttft_ms", 0.0), 0.0) / 1e3
        return max(result.usage.completion_tokens - 1, 0), decode_s, valid

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for tokens, decode_s, valid in pool.map(timed, PROMPTS):
            out.num_requests += 1
            out.num_tokens += tokens
            out.decode_s += decode_s / concurrency  # concurrent requests share the wall time
            out.num_invalid += 0 if valid else 1
    out.sample_ms = metrics.sample_ms - sample_before
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("-t", "--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy (default); >0: seeded sampling")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()

    with LocalLLM(args.model, n_ctx=4096, num_slots=max(4, args.concurrency), n_threads=args.threads,
                  n_threads_batch=args.threads) as llm:
        run_mode(llm, True, 8, 1)  # warm up both paths
        run_mode(llm, False, 8, 1)
        rounds: dict[str, list[ModeResult]] = {"json_schema": [], "unconstrained": []}
        t0 = time.perf_counter()
        for r in range(args.rounds):
            order = (True, False) if r % 2 == 0 else (False, True)
            for constrained in order:
                res = run_mode(llm, constrained, args.max_tokens, args.concurrency, args.temperature)
                rounds[res.mode].append(res)
        wall = time.perf_counter() - t0

    summary: dict[str, Any] = {"model": args.model, "threads": args.threads, "concurrency": args.concurrency,
                               "temperature": args.temperature,
                               "max_tokens": args.max_tokens, "rounds": args.rounds, "wall_s": round(wall, 1)}
    for mode, results in rounds.items():
        rates = [r.tokens_per_s for r in results]
        tokens = sum(r.num_tokens for r in results)
        summary[mode] = {
            "tokens_per_s": round(sum(r.num_tokens for r in results) / sum(r.decode_s for r in results), 2),
            "tokens_per_s_rounds": [round(x, 2) for x in rates],
            "stdev": round(statistics.stdev(rates), 2) if len(rates) > 1 else 0.0,
            "num_tokens": tokens,
            "sample_ms_per_token": round(sum(r.sample_ms for r in results) / max(tokens, 1), 3),
            "num_invalid": sum(r.num_invalid for r in results),
        }
    summary["ratio"] = round(summary["json_schema"]["tokens_per_s"] / summary["unconstrained"]["tokens_per_s"], 3)
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"model {args.model}, {args.threads} threads, concurrency {args.concurrency}, temperature "
          f"{args.temperature}, max_tokens {args.max_tokens}, {args.rounds} rounds ({summary['wall_s']} s)")
    for mode in ("unconstrained", "json_schema"):
        m = summary[mode]
        print(f"  {mode:14s} {m['tokens_per_s']:8.2f} t/s  (rounds {m['tokens_per_s_rounds']}, "
              f"{m['num_tokens']} tokens, sampling {m['sample_ms_per_token']} ms/token, "
              f"invalid {m['num_invalid']})")
    print(f"  ratio json_schema / unconstrained: {summary['ratio']:.3f}  (target >= 0.8)")


if __name__ == "__main__":
    main()
