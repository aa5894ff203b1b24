"""Serving benchmark: botframework vs llama.cpp's llama-server, same build, same settings, one run.

    start both (ours: python -m botframework.server; theirs: llama-server from our build dir)
    on free loopback ports, wait for /health, warm up; then for each level
        N = 1, 4, 8, 16 concurrent streams of 128 tokens (/v1/completions, ignore_eos),
        R rounds alternating which server goes first (medians: the machine's speed drifts)
            -> aggregate tokens/s, TTFT p50/p95, single-stream decode t/s from inter-token time
    cached max_tokens=1 round trip p50; 1,000-token system prompt: cold vs repeated TTFT
    llama-bench tg128 (same build), once per single-stream round: the single-stream decode reference
    + our scheduler in-process (LocalLLM, threads) at the same levels
    -> table with ratios ours / llama-server: of the medians, and of each round (median, its 95%
       interval, rounds ahead)

Usage: python bench/bench_serving.py [--levels 1,4,8,16] [--tokens 128] [--parallel 8] [--threads T]
                                     [--rounds R] [--skip-inprocess] [--json FILE]
                                     [--reference llama-server|botframework]

`--reference botframework` puts a second instance of our server where llama-server was (an A/A
run): on a machine whose speed drifts, its ratios show how far from 1.0 two equal servers land,
which is the resolution of the comparison at each level.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import functools
import importlib.util
import itertools
import json
import math
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))  # build_llama_tools
# The installed package (pip install .) has the compiled module; a checkout's tree has it only
# after a development build. Put the checkout on the path only when nothing is installed, and
# behind site-packages: ahead of it, it shadowed the installed package ("native module is not built").
if importlib.util.find_spec("botframework") is None:
    sys.path.append(str(Path(__file__).resolve().parent.parent))

from build_llama_tools import build_tools  # noqa: E402

from botframework.config import default_threads  # noqa: E402
from botframework.runtime.pull import pull  # noqa: E402

SYSTEM_WORDS = ("You are a meticulous assistant for a software company. Follow the style guide: be brief, "
                "cite the relevant module, prefer examples over prose, and never invent APIs. ")


@dataclass
class LevelResult:
    streams: int
    tokens_per_s: float
    ttft_p50_ms: float
    ttft_p95_ms: float
    decode_tps_single: float = 0.0
    rounds: list[float] = field(default_factory=list)  # tokens/s of each round (medians above)


@dataclass
class ServerResult:
    name: str
    levels: list[LevelResult] = field(default_factory=list)
    cached_roundtrip_p50_ms: float = 0.0
    cached_roundtrips_ms: list[float] = field(default_factory=list)  # each round's median, in order
    system_cold_ttft_ms: float = 0.0
    system_warm_ttft_ms: float = 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running(cmd: list[str], port: int, name: str) -> Iterator[str]:
    log = open(f"/tmp/bench-{name}.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            cwd=tempfile.gettempdir())  # not the checkout: it would shadow the installed package
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited early; see /tmp/bench-{name}.log")
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        else:
            raise RuntimeError(f"{name} did not become healthy")
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _post(base: str, path: str, body: dict[str, object]) -> tuple[socket.socket, BinaryIO]:
    """Send one POST on a new connection (closed after the response); the headers are consumed."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=600)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    payload = json.dumps(body).encode()
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode() + payload)
    stream = sock.makefile("rb")
    try:
        status = stream.readline()
        headers = []
        while (line := stream.readline()) not in (b"\r\n", b""):
            headers.append(line.lower())
        if status.split()[1:2] != [b"200"]:
            raise RuntimeError(f"{base}{path}: {status.decode().strip()} {stream.read(2000).decode()}")
        if b"transfer-encoding: chunked\r\n" not in headers:
            raise RuntimeError(f"{base}{path}: the stream is not chunked")
    except BaseException:
        stream.close()
        sock.close()
        raise
    return sock, stream


def _chunks(stream: BinaryIO) -> Iterator[bytes]:
    """The body of a chunked (Transfer-Encoding) response, chunk by chunk as it arrives."""
    while True:
        line = stream.readline()
        if not line:
            raise RuntimeError("the connection closed before the last chunk")
        size = int(line.split(b";")[0].strip(), 16)
        if size == 0:
            return
        data = stream.read(size + 2)  # buffered: blocks until all of it is there
        if len(data) < size + 2:
            raise RuntimeError("the connection closed inside a chunk")
        yield data[:-2]


# a completion chunk whose text is not empty: "text":"..." (the only "text" key in either server's chunk)
_TEXT = re.compile(rb'"text":\s*"(?!")')


def stream_one(base: str, prompt: str, max_tokens: int) -> tuple[float, list[float]]:
    """Returns (ttft_ms, token arrival times).

    A blocking socket read by its own thread, not httpx on asyncio: on 2 cores the client shares
    the CPUs with the server it measures. httpx cost ~0.4 ms of CPU per token, asyncio streams
    ~0.2 ms; both servers paid it, while llama-bench, the single-stream reference, pays nothing."""
    body = {"model": "smollm2-135m-instruct", "prompt": prompt, "max_tokens": max_tokens, "stream": True,
            "temperature": 0.0, "ignore_eos": True}
    t0 = time.perf_counter()
    arrivals: list[float] = []
    sock, stream = _post(base, "/v1/completions", body)
    done = False
    try:
        pending = b""
        for data in _chunks(stream):
            now = time.perf_counter()
            *events, pending = (pending + data).split(b"\n\n")
            for event in events:
                done = done or event == b"data: [DONE]"
                if not event.startswith(b"data: ") or event == b"data: [DONE]":
                    continue
                if _TEXT.search(event):  # (not json.loads: less of the client on the servers' cores)
                    arrivals.append(now)
    finally:
        stream.close()
        sock.close()
    if not arrivals or not done:
        raise RuntimeError(f"{base}: the stream ended after {len(arrivals)} tokens without [DONE]")
    return (arrivals[0] - t0) * 1e3, arrivals


def level(base: str, n: int, max_tokens: int) -> LevelResult:
    """n concurrent streams, a thread each."""
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        t0 = time.perf_counter()
        futures = [pool.submit(stream_one, base, f"Story {i}: once upon a time,", max_tokens) for i in range(n)]
        results = [f.result() for f in futures]
        wall = time.perf_counter() - t0
    ttfts = sorted(r[0] for r in results)
    total = n * max_tokens
    single = 0.0
    if n == 1:
        gaps = [b - a for a, b in itertools.pairwise(results[0][1])]
        single = 1.0 / statistics.median(gaps) if gaps else 0.0
    return LevelResult(n, total / wall, percentile(ttfts, 50), percentile(ttfts, 95), single)


SETTLE_S = 0.05  # quiet before each server's run: the other's compute threads stop spinning (see bench)


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    k = (len(values) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


async def roundtrip(base: str, repeats: int = 30) -> float:
    body = {"model": "smollm2-135m-instruct", "prompt": "Hello", "max_tokens": 1, "temperature": 0.0}
    times = []
    async with httpx.AsyncClient(timeout=60) as client:
        for i in range(repeats + 3):
            t0 = time.perf_counter()
            (await client.post(f"{base}/v1/completions", json=body)).raise_for_status()
            if i >= 3:
                times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def system_prompt(base: str, tokens_target: int = 1000) -> tuple[float, float]:
    system = (SYSTEM_WORDS * (tokens_target // 30 + 1))

    def ttft(question: str) -> float:
        return stream_one(base, system + f"\nQ: what is {question}?\nA:", 8)[0]

    cold = ttft("a mutex")
    warm = [ttft(q) for q in ("a semaphore", "a monitor", "a latch", "a barrier", "a future")]
    return cold, statistics.median(warm)


def median_level(rounds: list[LevelResult]) -> LevelResult:
    return LevelResult(rounds[0].streams, statistics.median(r.tokens_per_s for r in rounds),
                       statistics.median(r.ttft_p50_ms for r in rounds),
                       statistics.median(r.ttft_p95_ms for r in rounds),
                       statistics.median(r.decode_tps_single for r in rounds),
                       [r.tokens_per_s for r in rounds])


def median_ci(values: list[float], confidence: float = 0.95) -> tuple[float, float]:
    """Distribution-free confidence interval for the median: the k-th smallest and k-th largest
    value, k the largest with P(Binomial(n, 1/2) < k) <= (1 - confidence) / 2 (sign-test
    interval). Below 6 values even (min, max) covers less than 95%; it is returned anyway."""
    ordered = sorted(values)
    n = len(ordered)
    tail, k, below = (1 - confidence) / 2, 0, 0.0
    while k < n // 2:
        below += math.comb(n, k) / 2 ** n  # P(X <= k) after adding k, i.e. P(X < k + 1)
        if below > tail:
            break
        k += 1
    k = max(k, 1)
    return ordered[k - 1], ordered[n - k]


@dataclass(frozen=True)
class PairedRatio:
    median: float
    ci_low: float    # 95% interval of the median (median_ci)
    ci_high: float
    ahead: int       # rounds where a was faster than b
    rounds: int


def paired_ratio(a: LevelResult, b: LevelResult) -> PairedRatio:
    """a's tokens/s over b's in the same round: median over rounds, its 95% interval, and how
    many rounds a won.

    The two ran back to back (alternating which went first), so a shift in the machine's
    speed between rounds, which moves both medians, cancels in each round's ratio."""
    ratios = [x / y for x, y in zip(a.rounds, b.rounds, strict=True)]
    low, high = median_ci(ratios)
    return PairedRatio(statistics.median(ratios), low, high, sum(r > 1.0 for r in ratios), len(ratios))


def rounds_for(n: int, rounds: int) -> int:
    """Rounds at n streams: a level below 4 streams gets more (4x at 1 stream), as its rounds
    are short (one 128-token stream is ~1 s) and drift moves a short round's ratio the most
    (the per-round ratios at 1 stream spread over 0.95-1.12 in 5 rounds)."""
    return rounds * max(1, 4 // max(1, n))


def bench_servers(servers: dict[str, str], levels: list[int], max_tokens: int, rounds: int,
                  reference: Callable[[], float] | None = None) -> tuple[list[ServerResult], float]:
    """Both servers are up the whole time; each level runs rounds_for(n, rounds) times, alternating which
    server goes first, so drift in the machine's speed hits both alike. Medians are reported.
    `reference` (llama-bench tg) runs once per single-stream round, after both servers' runs,
    while both idle: its median, taken at the same times as theirs, is returned. So each server
    follows the other in half the rounds and the reference in the other half. Each run starts
    after SETTLE_S of quiet: a server that starts right after the other's stream pays for the
    other's compute threads still spinning (llama-server's OpenMP workers spin ~5 ms after each
    decode, ours far less, 10,000 spins: botframework/native/_lib.py; only ours paid, up to
    ~5 ms of its first token in half the rounds; with the reference between the two, as until
    session 7, only one of them ever did)."""
    results = {name: ServerResult(name) for name in servers}
    references: list[float] = []
    for base in servers.values():
        level(base, 2, 16)  # warm up
    names = list(servers)
    for n in levels:
        runs: dict[str, list[LevelResult]] = {name: [] for name in names}
        for r in range(rounds_for(n, rounds)):
            for name in (names if r % 2 == 0 else names[::-1]):
                time.sleep(SETTLE_S)
                runs[name].append(level(servers[name], n, max_tokens))
            if n == 1 and reference is not None:
                references.append(reference())
        for name in names:
            results[name].levels.append(median_level(runs[name]))
            print(f"  {name} N={n}: {results[name].levels[-1]}", flush=True)
    trips: dict[str, list[float]] = {name: [] for name in names}
    # alternating too, as many rounds as at 1 stream: a round trip is ~6 ms, and a busy
    # neighbour shifts a round's median by ±0.5 ms (3 rounds put either server ahead by that)
    for r in range(rounds_for(1, rounds)):
        for name in (names if r % 2 == 0 else names[::-1]):
            time.sleep(SETTLE_S)
            trips[name].append(asyncio.run(roundtrip(servers[name], repeats=20)))
    for name in names:
        results[name].cached_roundtrips_ms = trips[name]
        results[name].cached_roundtrip_p50_ms = statistics.median(trips[name])
        results[name].system_cold_ttft_ms, results[name].system_warm_ttft_ms = system_prompt(servers[name])
    return [results[name] for name in names], statistics.median(references) if references else 0.0


def llama_bench_tg(model: Path, threads: int, n_gen: int, repetitions: int = 3) -> float:
    """llama-bench's tg (tokens/s) from the same build: the single-stream decode reference."""
    exe = build_tools(("llama-bench",))["llama-bench"]
    out = subprocess.run([str(exe), "-m", str(model), "-p", "0", "-n", str(n_gen), "-t", str(threads),
                          "-r", str(repetitions),
                          "-o", "json"], check=True, capture_output=True, text=True).stdout
    return float(json.loads(out)[0]["avg_ts"])


def bench_inprocess(model: Path, levels: list[int], max_tokens: int, args: argparse.Namespace) -> ServerResult:
    from botframework.api import LocalLLM

    result = ServerResult("in-process")
    with LocalLLM(str(model), n_ctx=args.ctx, num_slots=max(args.parallel, max(levels)), n_threads=args.threads,
                  n_threads_batch=args.threads, pull=False) as llm:
        llm.complete("warm up", max_tokens=8)
        for n in levels:
            ttfts: list[float] = []

            def work(i: int, ttfts: list[float] = ttfts) -> None:
                t0 = time.perf_counter()
                first = None
                for delta in llm.stream_complete_deltas(f"Story {i}: once upon a time,", max_tokens=max_tokens,
                                                         temperature=0.0, ignore_eos=True):
                    if first is None and delta.text:
                        first = time.perf_counter()
                ttfts.append(((first or time.perf_counter()) - t0) * 1e3)

            t0 = time.perf_counter()
            threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t0
            result.levels.append(LevelResult(n, n * max_tokens / wall, percentile(ttfts, 50), percentile(ttfts, 95)))
            print(f"  in-process N={n}: {result.levels[-1]}", flush=True)
        m = llm.worker.metrics
        print(f"  scheduler overhead: {m.schedule_ms / max(1, m.num_steps):.3f} ms/step of "
              f"{(m.schedule_ms + m.decode_ms + m.sample_ms) / max(1, m.num_steps):.3f} ms/step "
              f"({100 * m.schedule_ms / max(1e-9, m.schedule_ms + m.decode_ms + m.sample_ms):.1f}%)")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default="1,4,8,16")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--parallel", type=int, default=8, help="slots on both servers")
    parser.add_argument("--ctx", type=int, default=8192)
    parser.add_argument("--threads", type=int, default=default_threads()[0])
    parser.add_argument("--rounds", type=int, default=3,
                        help="runs per level and server, 4x at 1 stream and 2x at 2 (medians reported)")
    parser.add_argument("--skip-inprocess", action="store_true")
    parser.add_argument("--reference", choices=("llama-server", "botframework"), default="llama-server",
                        help="the server ours is compared with: botframework runs a second instance of ours "
                             "in llama-server's place (an A/A run: how far from 1.0 the ratios of two equal "
                             "servers land on this machine, i.e. the resolution of the comparison)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    model = pull("smollm2-135m-instruct")
    llama_server = build_tools(("llama-server",))["llama-server"]

    ours_port, theirs_port = free_port(), free_port()

    def botframework_cmd(port: int) -> list[str]:
        return [sys.executable, "-m", "botframework.server", "--port", str(port),
                "--parallel", str(args.parallel), "--ctx-size", str(args.ctx), "--threads", str(args.threads),
                "--threads-batch", str(args.threads), "--log-level", "warning"]

    ours_cmd = botframework_cmd(ours_port)
    if args.reference == "botframework":  # A/A: ours again on the other port, started second as llama-server is
        ref, theirs_cmd = "botframework#2", botframework_cmd(theirs_port)
    else:
        ref = "llama-server"
        theirs_cmd = [str(llama_server), "-m", str(model), "--host", "127.0.0.1", "--port", str(theirs_port),
                      "-np", str(args.parallel), "-c", str(args.ctx), "-t", str(args.threads),
                      "-tb", str(args.threads), "--kv-unified", "--metrics"]
    print(f"botframework server and {ref}: {args.parallel} slots, {args.threads} threads, "
          f"{args.rounds} alternating rounds per level (logs in /tmp/bench-*.log)", flush=True)
    build_tools(("llama-bench",))
    with running(ours_cmd, ours_port, "ours") as ours_base, running(theirs_cmd, theirs_port, ref) as theirs_base:
        results, tg = bench_servers({"botframework": ours_base, ref: theirs_base}, levels, args.tokens,
                                    args.rounds, functools.partial(llama_bench_tg, model, args.threads, args.tokens, 1))
    if not tg:  # no single-stream level
        tg = llama_bench_tg(model, args.threads, args.tokens)
    if not args.skip_inprocess:
        print("in-process scheduler", flush=True)
        results.append(bench_inprocess(model, levels, args.tokens, args))

    ours, theirs = results[0], results[1]
    short = "llama" if ref == "llama-server" else "ours#2"
    print(f"\n{'streams':>7} | {'ours t/s':>9} {short + ' t/s':>9} {'ratio':>6} | "
          f"{'per round: median [95% CI] ahead':>36} | {'ours TTFT p50/p95 ms':>21} | {short + ' TTFT p50/p95 ms':>22}"
          + (" | in-proc t/s" if len(results) > 2 else ""))
    for i, n in enumerate(levels):
        a, b = ours.levels[i], theirs.levels[i]
        pr = paired_ratio(a, b)
        row = (f"{n:>7} | {a.tokens_per_s:9.1f} {b.tokens_per_s:9.1f} {a.tokens_per_s / b.tokens_per_s:6.2f} | "
               f"{pr.median:11.3f} [{pr.ci_low:.3f}-{pr.ci_high:.3f}] {pr.ahead:>3}/{pr.rounds:<3} | "
               f"{a.ttft_p50_ms:9.1f} / {a.ttft_p95_ms:9.1f} | {b.ttft_p50_ms:10.1f} / {b.ttft_p95_ms:9.1f}")
        if len(results) > 2:
            row += f" | {results[2].levels[i].tokens_per_s:9.1f}"
        print(row)
    if ours.levels and ours.levels[0].decode_tps_single:
        a, b = ours.levels[0].decode_tps_single, theirs.levels[0].decode_tps_single
        print(f"single-stream decode (inter-token): ours {a:.1f} t/s, {ref} {b:.1f} t/s, ratio {a / b:.2f}; "
              f"llama-bench tg{args.tokens} {tg:.1f} t/s: ours {a / tg:.2f}x, {ref} {b / tg:.2f}x")
    trip_pairs = list(zip(ours.cached_roundtrips_ms, theirs.cached_roundtrips_ms, strict=True))
    print(f"cached max_tokens=1 round trip p50: ours {ours.cached_roundtrip_p50_ms:.1f} ms, "
          f"{ref} {theirs.cached_roundtrip_p50_ms:.1f} ms, "
          f"difference {ours.cached_roundtrip_p50_ms - theirs.cached_roundtrip_p50_ms:+.1f} ms; per round: "
          f"median difference {statistics.median(a - b for a, b in trip_pairs):+.2f} ms, ours faster in "
          f"{sum(a < b for a, b in trip_pairs)}/{len(trip_pairs)}")
    for r in (ours, theirs):
        print(f"1,000-token system prompt ({r.name}): cold TTFT {r.system_cold_ttft_ms:.1f} ms, repeated "
              f"{r.system_warm_ttft_ms:.1f} ms ({100 * r.system_warm_ttft_ms / r.system_cold_ttft_ms:.0f}% of cold)")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
