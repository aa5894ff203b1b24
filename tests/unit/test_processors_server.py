"""Logits processors over HTTP, on the fake runtime: registered at start by import path,
named by requests, never imported from one; and the serve flags that set them up."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
from fake_runtime import FakeRuntime, serve_fake  # noqa: E402

from botframework.cli import build_parser  # noqa: E402
from botframework.processors import RepetitionWindowPenalty, TypicalP  # noqa: E402
from botframework.server.settings import ServerSettings  # noqa: E402
from botframework.trace import TraceWriter  # noqa: E402

PROCESSORS = {"typical": "botframework.processors:TypicalP", "rep": "botframework.processors:RepetitionWindowPenalty"}


def post(path: str, body: dict[str, Any], runtime: FakeRuntime, **settings: Any) -> tuple[int, dict[str, Any]]:
    async def go() -> tuple[int, dict[str, Any]]:
        async with serve_fake(runtime, **settings) as client:
            response = await client.post(path, json={"model": "fake-model", **body})
            return response.status_code, response.json()

    return asyncio.run(asyncio.wait_for(go(), 30))


@pytest.mark.parametrize("path, body", [
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
    ("/v1/completions", {"prompt": "Once upon"}),
])
def test_a_request_names_registered_processors_in_order(path: str, body: dict[str, Any]) -> None:
    runtime = FakeRuntime()
    status, _ = post(path, {**body, "logits_processors": ["rep", "typical"]}, runtime, processors=PROCESSORS)
    assert status == 200
    rep, typical = runtime.requests[-1].logits_processors
    assert isinstance(rep, RepetitionWindowPenalty) and isinstance(typical, TypicalP)
    status, _ = post(path, body, runtime, processors=PROCESSORS)
    assert status == 200 and runtime.requests[-1].logits_processors == ()


def test_an_unknown_name_is_a_400_and_nothing_is_imported() -> None:
    runtime = FakeRuntime()
    status, body = post("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}],
                                                 "logits_processors": ["tests_never_imported_module:thing"]},
                        runtime, processors=PROCESSORS)
    assert status == 400 and body["error"]["param"] == "logits_processors"
    assert "rep, typical" in body["error"]["message"]
    assert "tests_never_imported_module" not in sys.modules and not runtime.requests
    status, body = post("/v1/completions", {"prompt": "x", "logits_processors": ["typical"]}, runtime)
    assert status == 400 and "serve --processor" in body["error"]["message"]


@pytest.mark.parametrize("names", [[""], ["x" * 65], "typical", [1], ["a"] * 17])
def test_malformed_names_are_400s(names: object) -> None:
    status, body = post("/v1/completions", {"prompt": "x", "logits_processors": names}, FakeRuntime(),
                        processors=PROCESSORS)
    assert status == 400, body


def test_infill_takes_no_processors() -> None:
    status, _ = post("/infill", {"input_prefix": "a", "logits_processors": ["typical"]}, FakeRuntime(),
                     processors=PROCESSORS)
    assert status == 400


def test_settings_import_processors_at_start_and_refuse_bad_ones() -> None:
    settings = ServerSettings(processors=PROCESSORS)
    assert isinstance(settings.processor_registry["typical"], TypicalP)
    with pytest.raises(ValueError, match="cannot be imported"):
        ServerSettings(processors={"x": "no_such_module_xyz:thing"})
    with pytest.raises(ValueError, match="NAME=MODULE:ATTR"):
        ServerSettings().replace(processors=["no-equals-sign"])
    env = ServerSettings.from_env({"BOTFRAMEWORK_PROCESSORS": "t=botframework.processors:TypicalP, "
                                                              "r=botframework.processors:RepetitionWindowPenalty"})
    assert sorted(env.processor_registry) == ["r", "t"]


def test_config_file_table(tmp_path: Path) -> None:
    config = tmp_path / "bf.toml"
    config.write_text('trace_path = "run.jsonl"\n[processors]\ntypical = "botframework.processors:TypicalP"\n')
    settings = ServerSettings.from_env({}, config=config)
    assert list(settings.processor_registry) == ["typical"] and settings.trace_path == Path("run.jsonl")


def test_serve_flags_register_processors_and_a_trace(tmp_path: Path) -> None:
    args = build_parser().parse_args(["serve", "--processor", "typical=botframework.processors:TypicalP",
                                      "--trace", str(tmp_path / "t.jsonl"), "--trace-prompts"])
    settings = ServerSettings().replace(processors=args.processor, trace_path=args.trace,
                                        trace_prompts=args.trace_prompts)
    trace = settings.worker_config().trace
    assert isinstance(trace, TraceWriter) and trace.path == tmp_path / "t.jsonl" and trace.prompts
    assert all(entry.config.trace is trace for entry in settings.model_entries())  # one file for every model
    assert not (tmp_path / "t.jsonl").exists()  # opened by the first event, not by settings
    assert ServerSettings().worker_config().trace is None
