"""The CI version of the load test: 16 clients for 60 s (BOTFRAMEWORK_LOAD_S) over every endpoint
and protocol (bench/soak.py's mix: OpenAI chat whole / streamed / JSON schema / tools / sessions,
completions, embeddings, Anthropic, Responses, Ollama chat / generate / embed), two models (the
chat model and the embedding model, the second loaded on first use).

0 5xx, 0 timeouts, every stream read to its end carries its finish reason and end marker, the
OpenAI streams' usage equals the tokens streamed, and every model's /v1/stats shows nothing busy
within 2 s of the last answer: no busy slot, nothing running or waiting, and no KV cell beyond the
slots' cached prefixes (llama.cpp's last position of each idle slot's sequence is its cached
prefix's, and cells used <= cached tokens). The 30-minute soak with process sampling: bench/soak.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from server_proc import served

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from soak import CHAT_MODEL, EMBED_MODEL, Load  # noqa: E402

LOAD_S = float(os.environ.get("BOTFRAMEWORK_LOAD_S", "60"))


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    with served(["--model", CHAT_MODEL, "--model", EMBED_MODEL, "--parallel", "4", "--ctx-size", "8192",
                 "--log-level", "critical"]) as (url, proc):
        yield url, proc


def test_16_clients_for_60_s_over_every_protocol_and_two_models(server: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, proc = server
    tasks_before = _asyncio_tasks(url)  # idle, the chat model loaded
    report = Load(url, CHAT_MODEL, EMBED_MODEL).run(LOAD_S, clients=16, seed=21)
    summary = report.summary()
    print(f"\nload: {summary}")
    assert not report.failures, report.failures[:10]
    assert summary["5xx"] == 0 and report.timeouts == 0
    assert len(report.done) == 12, f"not every kind of request ran: {dict(report.done)}"
    assert report.streams_checked > 20 and report.tokens_checked > 0
    assert report.idle_after_s <= 2.0, f"busy {report.idle_after_s:.2f} s after the last answer"
    for model, idle in report.idle_stats.items():  # what wait_idle saw last: nothing busy, no cell leaked
        assert idle["num_busy_slots"] == 0 and idle["num_running"] == 0 and idle["num_waiting"] == 0, (model, idle)
        assert idle["num_uncached_kv_tokens"] == 0, (model, idle)
        assert idle["num_cells_used"] <= idle["num_cached_tokens"], (model, idle)
    assert proc.poll() is None
    assert httpx.get(f"{url}/health", timeout=10).json()["status"] == "ok"
    tasks_after = _asyncio_tasks(url)
    for _ in range(50):  # the last connections' tasks end as their sockets close
        if tasks_after <= tasks_before:
            break
        time.sleep(0.1)
        tasks_after = _asyncio_tasks(url)
    assert tasks_after <= tasks_before, f"{tasks_after} asyncio tasks once idle, {tasks_before} before the load"


def _asyncio_tasks(url: str) -> int:
    return int(httpx.get(f"{url}/v1/stats", params={"model": CHAT_MODEL}, timeout=30).json()["asyncio_tasks"])
