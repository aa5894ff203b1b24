"""Record a step trace of a burst of requests, then replay it offline against two admission
policies: first come first served, and shortest prompt first. (A server records the same
trace with `botframework serve --trace FILE`; `botframework replay FILE` prints this table.)

    python examples/lowlevel_trace_replay.py [trace.jsonl]
"""

import sys
import tempfile
from pathlib import Path

from botframework import LocalLLM
from botframework.replay import compare, load_trace
from botframework.trace import TraceWriter

path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp()) / "trace.jsonl"
story = "Once upon a time there was a lighthouse keeper who wrote letters to the sea. " * 24
long_prompts = [f"Story {i}: {story}\nSummarise it in one line:" for i in range(3)]  # ~400 tokens each
short_prompts = [f"Say hello in language number {i}." for i in range(8)]

with LocalLLM("smollm2-135m-instruct", num_slots=2, n_ctx=2048) as llm:
    writer = TraceWriter(path)   # no prompt text goes in: TraceWriter(path, prompts=True) adds it
    writer.attach(llm.worker)
    # the long prompts first, then the short ones, all queued at once; two slots, so most wait
    streams = [llm.stream_complete_deltas(p, max_tokens=8, temperature=0, ignore_eos=True)
               for p in long_prompts + short_prompts]
    for stream in streams:
        for _delta in stream:
            pass
    writer.close()

trace = load_trace(str(path))
cost, reports = compare(trace, ["fcfs", "spf"])
print(f"trace: {path} ({len(trace.arrivals)} requests, {len(trace.steps)} steps)")
print(f"fitted step time: {cost.base_ms:.1f} ms + {cost.per_token_ms:.3f} ms/token "
      f"+ {cost.per_sequence_ms:.2f} ms/sequence (R^2 {cost.r2:.2f})")
print(f"{'policy':10} {'tok/s':>7} {'TTFT p50':>9} {'TTFT p90':>9} {'latency p50':>12} {'latency p90':>12}")
for report in reports:
    row = report.summary()
    print(f"{row['policy']:10} {row['tokens_per_s']:7.1f} {row['ttft_p50_ms']:9.0f} {row['ttft_p90_ms']:9.0f} "
          f"{row['total_p50_ms']:12.0f} {row['total_p90_ms']:12.0f}")
fcfs, spf = reports[1], reports[2]
print(f"shortest-prompt-first: median TTFT {spf.percentile('ttft_ms', 50):.0f} ms vs "
      f"{fcfs.percentile('ttft_ms', 50):.0f} ms first-come-first-served")
