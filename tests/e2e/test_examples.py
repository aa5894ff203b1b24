"""The spec's Python examples run as written, as a user runs them: a fresh interpreter, from
outside the checkout (the installed package), the default model from our cache."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from server_proc import free_port

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("name", ["local_llm.py", "client.py"])
def test_the_spec_example_runs_as_written(name: str, model_path: Path) -> None:
    env = {**os.environ, "BOTFRAMEWORK_URL": f"http://127.0.0.1:{free_port()}"}  # client.py starts its own
    done = subprocess.run([sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, timeout=300,
                          cwd=tempfile.gettempdir(), env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip(), "the example printed no answer"
