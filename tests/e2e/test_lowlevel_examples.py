"""The low-level examples run as a user runs them: a fresh interpreter, from a temporary
folder, the default model from our cache; each prints what it claims to show. And the real
server with registered processors and a trace, as `botframework serve` runs them."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
from server_proc import served

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


def test_the_server_runs_registered_processors_and_writes_a_replayable_trace(model_path: Path,
                                                                             tmp_path: Path) -> None:
    trace = tmp_path / "serve.jsonl"
    args = ["--model", "smollm2-135m-instruct", "--parallel", "2", "--ctx-size", "1024", "--trace", str(trace),
            "--processor", "typical=botframework.processors:TypicalP",
            "--processor", "rep=botframework.processors:RepetitionWindowPenalty"]
    with served(args) as (url, _proc):
        body = {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "Name a colour."}],
                "max_tokens": 8, "temperature": 0}
        plain = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120).json()
        named = httpx.post(f"{url}/v1/chat/completions", json={**body, "logits_processors": ["rep", "typical"]},
                           timeout=120)
        assert named.status_code == 200, named.text
        completion = httpx.post(f"{url}/v1/completions", json={"model": "smollm2-135m-instruct", "prompt": "1, 2, 3,",
                                                              "max_tokens": 4, "logits_processors": ["typical"]},
                                timeout=120)
        assert completion.status_code == 200, completion.text
        unknown = httpx.post(f"{url}/v1/chat/completions", json={**body, "logits_processors": ["os:system"]},
                             timeout=120)
        assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "logits_processors"
        assert plain["choices"][0]["message"]["content"]
    events = [line for line in trace.read_text().splitlines() if line]
    assert sum('"ev":"finish"' in line for line in events) == 3  # the 400 never reached the engine
    assert "colour" not in trace.read_text()  # no prompt text
    done = subprocess.run([sys.executable, "-m", "botframework.cli", "replay", str(trace)], capture_output=True,
                          text=True, timeout=120, cwd=tempfile.gettempdir())
    assert done.returncode == 0, done.stderr
    assert "recorded" in done.stdout and "spf" in done.stdout
