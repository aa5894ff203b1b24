"""Embedding benchmark: botframework vs llama.cpp's llama-server --embeddings, same GGUF, same build.

    pull all-minilm-l6-v2 (our converted GGUF); start both on free loopback ports:
        ours:   python -m botframework.server --model all-minilm-l6-v2
        theirs: llama-server -m <the same file> --embeddings, from our build tree
    check they agree (cosine of their vectors for a few sentences), warm up; then R rounds,
    alternating which server goes first, each server in each round:
        one at a time: 256 sentences, one POST /v1/embeddings each, sequentially on one
                       keep-alive connection (latency per request: what a chat app's retrieval sees)
        batched:       the same 256 sentences in one request (throughput: what an indexer sees)
    -> inputs/s per mode: medians, and ours / theirs per round (median, 95% interval, rounds ahead),
       which cancels the drift of a shared machine's speed between rounds

Usage: python bench/bench_embeddings.py [--rounds 7] [--threads T] [--sentences 256]
                                        [--encoding base64|float] [--parallel 256] [--json FILE]
                                        [--reference llama-server|botframework]

Both servers get the same threads. Tokens per decode: ours packs up to 256 tokens of up to 256
inputs into one llama_decode (WorkerConfig.embed_batch_tokens; one longer input decodes alone,
up to the model's 512); llama-server batches up to --parallel slots, default 256 too, into
-b = -ub 512, which it needs for an embedding model's longest input (its pack is its ubatch). `--encoding base64` (the
default) is what the openai package asks for; float sends JSON numbers both ways.
Each pass starts after bench_serving's SETTLE_S (50 ms) of quiet: llama-server's OpenMP workers
spin ~5 ms after its last decode, and a pass started at once paid for them.
`--reference botframework` runs a second instance of ours in llama-server's place (an A/A
run): how far from 1.0 two equal servers land on this machine.
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_serving, build_llama_tools
# The installed package (pip install .) has the compiled module; a checkout's tree has it only
# after a development build: the checkout goes on the path only when nothing is installed, and
# behind site-packages (ahead of it, it shadowed the installed package: "native module is not built").
if importlib.util.find_spec("botframework") is None:
    sys.path.append(str(REPO_ROOT))

from bench_serving import SETTLE_S, free_port, median_ci, running  # noqa: E402
from build_llama_tools import build_tools  # noqa: E402

from botframework.config import default_threads  # noqa: E402
from botframework.runtime.pull import pull  # noqa: E402

MODEL = "all-minilm-l6-v2"
MODES = ("one at a time", "batched")

_SUBJECTS = ["The committee", "A small dog", "Our new database", "The quarterly report", "My neighbour",
             "This recipe", "The research team", "An old lighthouse", "The football club", "A junior developer"]
_VERBS = ["announced", "chased", "replicated", "summarised", "repaired", "combined", "measured", "painted",
          "defended", "refactored"]
_OBJECTS = ["the results of the long experiment", "a red ball across the park", "every table to three regions",
            "revenue growth in the northern markets", "the broken fence behind the garage",
            "garlic, lemon and fresh basil", "the temperature of the deep ocean", "its walls in bright colours",
            "the title for the second year running", "the payment service into smaller modules"]
_TAILS = ["", " yesterday.", " before the deadline, as everyone expected.", " because nobody else would.",
          " while the rest of the office watched in silence and wondered what would happen next.", "!",
          " on a cold Tuesday morning in early November.", " - again."]


def sentences(n: int) -> list[str]:
    """n varied English sentences (5 to ~35 tokens), the same every run."""
    rng = np.random.default_rng(42)
    return [f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}{rng.choice(_TAILS)}"
            for _ in range(n)]


def decode(item: dict[str, object]) -> np.ndarray:
    value = item["embedding"]
    if isinstance(value, str):
        return np.frombuffer(base64.b64decode(value), dtype="<f4")
    return np.asarray(value, dtype=np.float32)


def embed(client: httpx.Client, base: str, inputs: str | list[str], encoding: str) -> list[np.ndarray]:
    r = client.post(f"{base}/v1/embeddings", json={"model": MODEL, "input": inputs, "encoding_format": encoding})
    if r.status_code != 200:
        raise RuntimeError(f"{base}: {r.status_code} {r.text[:500]}")
    data = sorted(r.json()["data"], key=lambda d: d["index"])
    return [decode(d) for d in data]


def run_mode(base: str, mode: str, texts: list[str], encoding: str) -> float:
    """inputs/s of one pass over `texts` in `mode`."""
    with httpx.Client(timeout=600) as client:  # a fresh keep-alive connection per pass, for both alike
        t0 = time.perf_counter()
        if mode == "batched":
            got = len(embed(client, base, texts, encoding))
        else:
            got = sum(len(embed(client, base, text, encoding)) for text in texts)
        wall = time.perf_counter() - t0
    if got != len(texts):
        raise RuntimeError(f"{base}: {got} vectors for {len(texts)} inputs")
    return len(texts) / wall


@dataclass
class ModeResult:
    mode: str
    rounds: dict[str, list[float]] = field(default_factory=dict)  # server -> inputs/s of each round


def agreement(servers: dict[str, str], texts: list[str], encoding: str) -> float:
    """The lowest cosine between the two servers' vectors for the same texts: same model, same
    math (both L2-normalise a mean-pooled vector), so ~1."""
    with httpx.Client(timeout=120) as client:
        a, b = (np.asarray(embed(client, base, texts, encoding)) for base in servers.values())
    return float(min((a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))


def bench(servers: dict[str, str], texts: list[str], rounds: int, encoding: str) -> list[ModeResult]:
    names = list(servers)
    results = [ModeResult(mode, {name: [] for name in names}) for mode in MODES]
    for base in servers.values():  # warm up: first decodes, first connections, the embedding context
        run_mode(base, "batched", texts[:64], encoding)
        run_mode(base, "one at a time", texts[:16], encoding)
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            for result in results:
                time.sleep(SETTLE_S)  # the other server's compute threads stop spinning first
                result.rounds[name].append(run_mode(servers[name], result.mode, texts, encoding))
        line = ", ".join(f"{res.mode}: " + " / ".join(f"{res.rounds[n][-1]:.0f}" for n in names) for res in results)
        print(f"  round {r + 1}/{rounds} ({' / '.join(names)} inputs/s) {line}", flush=True)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--sentences", type=int, default=256)
    parser.add_argument("--threads", type=int, default=default_threads()[1])
    parser.add_argument("--encoding", choices=("base64", "float"), default="base64")
    parser.add_argument("--parallel", type=int, default=256,
                        help="llama-server's slots, its inputs per decode at most (ours: up to 256 as well)")
    parser.add_argument("--reference", choices=("llama-server", "botframework"), default="llama-server")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    model = pull(MODEL)
    texts = sentences(args.sentences)
    ours_port, theirs_port = free_port(), free_port()

    def botframework_cmd(port: int) -> list[str]:
        return [sys.executable, "-m", "botframework.server", "--port", str(port), "--model", MODEL,
                "--threads", str(args.threads), "--threads-batch", str(args.threads), "--log-level", "warning"]

    if args.reference == "botframework":
        ref, theirs_cmd = "botframework#2", botframework_cmd(theirs_port)
    else:
        ref = "llama-server"
        llama_server = build_tools(("llama-server",))["llama-server"]
        theirs_cmd = [str(llama_server), "-m", str(model), "--embeddings", "--host", "127.0.0.1",
                      "--port", str(theirs_port), "-t", str(args.threads), "-tb", str(args.threads),
                      "-np", str(args.parallel), "--kv-unified", "-c", "512", "-b", "512", "-ub", "512"]
    print(f"{MODEL} ({model.name}): botframework server vs {ref}, {args.threads} threads, {len(texts)} sentences, "
          f"{args.rounds} alternating rounds, {args.encoding} (logs in /tmp/bench-*.log)", flush=True)
    with running(botframework_cmd(ours_port), ours_port, "ours-embed") as ours_base, \
            running(theirs_cmd, theirs_port, f"{ref}-embed") as theirs_base:
        servers = {"botframework": ours_base, ref: theirs_base}
        cosine = agreement(servers, texts[:32], args.encoding)
        print(f"  lowest cosine between the two servers' vectors (32 sentences): {cosine:.6f}", flush=True)
        results = bench(servers, texts, args.rounds, args.encoding)

    short = "llama" if ref == "llama-server" else "ours#2"
    print(f"\n{'mode':>14} | {'ours in/s':>9} {short + ' in/s':>10} {'ratio':>6} | "
          f"{'per round: median [95% CI] ahead':>34} | per-round ratios")
    for result in results:
        ours, theirs = result.rounds["botframework"], result.rounds[ref]
        ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
        low, high = median_ci(ratios)
        a, b = statistics.median(ours), statistics.median(theirs)
        print(f"{result.mode:>14} | {a:9.1f} {b:10.1f} {a / b:6.2f} | {statistics.median(ratios):11.3f} "
              f"[{low:.3f}-{high:.3f}] {sum(r > 1 for r in ratios):>3}/{len(ratios):<3} | "
              + " ".join(f"{r:.2f}" for r in ratios))
    if args.json:
        args.json.write_text(json.dumps({"reference": ref, "cosine": cosine, "threads": args.threads,
                                         "results": [asdict(r) for r in results]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
