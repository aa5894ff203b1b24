"""The benchmark's verdict statistics (bench/bench_serving.py): paired ratios and their interval."""

from __future__ import annotations

import itertools
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import bench_serving  # noqa: E402
from bench_serving import LevelResult, median_ci, paired_ratio  # noqa: E402


def test_median_ci_is_the_sign_test_interval() -> None:
    # n = 20: P(Binomial(20, 1/2) <= 5) = 0.021 <= 0.025 < P(<= 6): the 6th smallest and 6th largest
    assert median_ci([float(v) for v in range(20, 0, -1)]) == (6.0, 15.0)
    # n = 6: only (min, max) is narrow enough (P(X = 0) = 1/64); n = 5 gets (min, max) too
    assert median_ci([3.0, 1.0, 2.0, 6.0, 5.0, 4.0]) == (1.0, 6.0)
    assert median_ci([2.0, 1.0, 3.0, 5.0, 4.0]) == (1.0, 5.0)
    # n = 80 (a 1-stream level at --rounds 20): P(X <= 30) <= 0.025 < P(X <= 31), k = 31
    assert median_ci([float(v) for v in range(1, 81)]) == (31.0, 50.0)


def test_median_ci_covers_the_median_95_percent_of_the_time() -> None:
    rng = random.Random(7)
    trials = 3000
    covered = sum(lo <= 0.0 <= hi for lo, hi in (median_ci([rng.gauss(0.0, 1.0) for _ in range(20)])
                                                 for _ in range(trials)))
    assert 0.94 <= covered / trials <= 0.975  # 0.9586 exactly, for 20 values


def test_paired_ratio_compares_round_by_round() -> None:
    ours = LevelResult(1, 0.0, 0.0, 0.0, rounds=[100.0, 90.0, 120.0, 80.0, 110.0, 100.0])
    theirs = LevelResult(1, 0.0, 0.0, 0.0, rounds=[95.0, 100.0, 100.0, 80.0, 100.0, 125.0])
    pr = paired_ratio(ours, theirs)
    ratios = sorted([100 / 95, 0.9, 1.2, 1.0, 1.1, 0.8])
    assert pr.median == (ratios[2] + ratios[3]) / 2
    assert (pr.ci_low, pr.ci_high) == (ratios[0], ratios[-1])
    assert (pr.ahead, pr.rounds) == (3, 6)  # a tie is not a win
    assert bench_serving.rounds_for(1, 5) == 20


def test_each_server_follows_the_other_as_often_as_it_is_followed(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A server that starts right after the other's stream pays more to its first token: the
    order of runs (and of the llama-bench reference between them) must not favour either."""
    events: list[str] = []

    def fake_level(base: str, n: int, max_tokens: int) -> LevelResult:
        events.append(base if n == 1 else "other")
        return LevelResult(n, 100.0, 10.0, 10.0, 100.0)

    async def fake_roundtrip(base: str, repeats: int = 30) -> float:
        return 10.0

    monkeypatch.setattr(bench_serving, "level", fake_level)
    monkeypatch.setattr(bench_serving, "roundtrip", fake_roundtrip)
    monkeypatch.setattr(bench_serving, "system_prompt", lambda base: (100.0, 1.0))
    bench_serving.bench_servers({"ours": "A", "llama": "B"}, [1], 16, rounds=3,
                                reference=lambda: events.append("ref") or 120.0)  # type: ignore[func-returns-value]
    runs = events[2:]  # after the warm-ups
    assert runs.count("A") == runs.count("B") == 12 and runs.count("ref") == 12
    after = [(prev, cur) for prev, cur in itertools.pairwise(runs) if cur in "AB"]
    assert after.count(("B", "A")) == after.count(("A", "B")) > 0
    assert after.count(("ref", "A")) + (runs[0] == "A") == after.count(("ref", "B")) + (runs[0] == "B")


def test_a_token_counts_when_its_chunk_has_text_in_either_servers_shape() -> None:
    """stream_one's check for a token's chunk (a regex, not json.loads: less client CPU)."""
    import json

    def event(choice: dict[str, object], first: bool) -> bytes:
        ours = {"id": "cmpl-1", "object": "text_completion", "choices": [choice]}
        theirs = {"choices": [choice], "object": "text_completion", "id": "cmpl-2"}
        return b"data: " + json.dumps(ours if first else theirs, separators=(",", ":")).encode()

    for first in (True, False):
        for text, counts in (("Hello", True), (" ", True), ('"', True), ("\\", True), ("", False)):
            for choice in ({"index": 0, "text": text, "finish_reason": None},
                           {"text": text, "index": 0, "logprobs": None, "finish_reason": None}):
                line = event(choice, first)
                assert bool(bench_serving._TEXT.search(line)) is counts, line
