"""The low-level examples run as a user runs them: a fresh interpreter, from a temporary
folder, the default model from our cache; each prints what it claims to show."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run_example(name: str, *args: str) -> str:
    done = subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True,
                          timeout=300, cwd=tempfile.gettempdir())
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_best_of_n_shares_the_prompt_and_picks_one(model_path: Path) -> None:
    out = run_example("lowlevel_best_of_n.py")
    assert out.count("mean logprob") == 4 and "best of 4:" in out


def test_numpy_sampler_runs_batched_in_the_scheduler(model_path: Path) -> None:
    out = run_example("lowlevel_numpy_sampler.py")
    assert out.count(" -> ") == 4
    most = int(out.rsplit("most rows in one call:", 1)[1])
    assert most > 1  # several requests' rows in one call: batched, not one sequence at a time


def test_beam_search_prints_its_beams(model_path: Path) -> None:
    lines = run_example("lowlevel_beam_search.py", "The capital of France is").strip().splitlines()
    assert len(lines) == 3 and all("The capital of France is" in line for line in lines)


def test_trace_replay_compares_two_policies(model_path: Path, tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    out = run_example("lowlevel_trace_replay.py", str(trace))
    assert trace.exists() and "Once upon a time" not in trace.read_text()  # no prompt text in a trace
    for policy in ("recorded", "fcfs", "spf"):
        assert f"\n{policy} " in out
    spf, fcfs = out.rsplit("median TTFT", 1)[1].split(" vs ")
    assert float(spf.split()[0]) < float(fcfs.split()[0])  # a burst behind long prompts: short first helps
    done = subprocess.run([sys.executable, "-m", "botframework.cli", "replay", str(trace), "--policy", "fcfs",
                           "--policy", "spf,max_batch_tokens=128"], capture_output=True, text=True, timeout=120,
                          cwd=tempfile.gettempdir())
    assert done.returncode == 0, done.stderr
    assert "spf,max_batch_tokens=128" in done.stdout and "step time ~" in done.stdout
