"""Remote models (server/remote.py): a front server forwards a model's requests to other servers
over real sockets. Two botframework replicas behind one name: whole and streamed answers pass
through (the same text at temperature 0), a key is sent to the remote, and killing one replica
while requests run loses none that had not started streaming. Against llama-server (slow: it
builds llama.cpp's server from the vendored tree first) the same forwarding works."""

from __future__ import annotations

import concurrent.futures
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai import OpenAI
from server_proc import free_port, served, wait_healthy

MODEL = "smollm2-135m-instruct"


def front_config(tmp_path: Path, urls: list[str], extra: str = "") -> Path:
    config = tmp_path / "front.toml"
    config.write_text(f'''
[[models]]
name = "far"
urls = {urls!r}
remote_model = "{MODEL}"
timeout_s = 120
{extra}
'''.replace("'", '"'))
    return config


@pytest.fixture(scope="module")
def replicas(model_path: Path) -> Iterator[list[tuple[str, object]]]:
    with served(["--model", MODEL, "--parallel", "4", "--ctx-size", "2048", "--api-key", "inner"]) as one, \
            served(["--model", MODEL, "--parallel", "4", "--ctx-size", "2048", "--api-key", "inner"]) as two:
        yield [one, two]


def ask(client: OpenAI, **extra: object) -> str:
    reply = client.chat.completions.create(model="far", messages=[{"role": "user", "content": "Say hello."}],
                                           max_tokens=16, temperature=0, **extra)  # type: ignore[call-overload]
    return reply.choices[0].message.content or ""


def test_a_remote_model_answers_whole_and_streamed(replicas: list[tuple[str, object]], tmp_path: Path) -> None:
    config = front_config(tmp_path, [f"{url}/v1" for url, _ in replicas], 'api_key = "inner"')
    with served(["--config", str(config), "--api-key", "outer"]) as (front, _proc):
        client = OpenAI(base_url=f"{front}/v1", api_key="outer")
        whole = ask(client)
        stream = client.chat.completions.create(model="far", messages=[{"role": "user", "content": "Say hello."}],
                                                max_tokens=16, temperature=0, stream=True)
        streamed = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
        assert whole and streamed == whole
        vectors = client.embeddings.create(model="far", input=["a", "b"])
        assert len(vectors.data) == 2
        card = next(c for c in httpx.get(f"{front}/v1/models", headers={"authorization": "Bearer outer"},
                                         timeout=10).json()["data"] if c["id"] == "far")
        assert [r["healthy"] for r in card["meta"]["replicas"]] == [True, True]
        # the outer key is ours; the inner one only the front knows
        assert httpx.post(f"{front}/v1/chat/completions", json={"model": "far", "messages": []},
                          timeout=10).status_code == 401
        refused = httpx.post(f"{front}/tokenize", json={"model": "far", "content": "x"},
                             headers={"authorization": "Bearer outer"}, timeout=10)
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "remote_model"


def test_killing_a_replica_loses_no_request_that_had_not_started(model_path: Path, tmp_path: Path) -> None:
    with served(["--model", MODEL, "--parallel", "2", "--ctx-size", "2048"]) as (spare, _), \
            served(["--model", MODEL, "--parallel", "2", "--ctx-size", "2048"]) as (doomed, doomed_proc):
        config = front_config(tmp_path, [f"{doomed}/v1", f"{spare}/v1"])
        with served(["--config", str(config)]) as (front, _proc):
            client = OpenAI(base_url=f"{front}/v1", api_key="none", max_retries=0, timeout=120)

            def long() -> str:
                reply = client.chat.completions.create(
                    model="far", messages=[{"role": "user", "content": "Tell a story."}], max_tokens=96,
                    temperature=0, extra_body={"ignore_eos": True})
                return reply.choices[0].finish_reason

            with concurrent.futures.ThreadPoolExecutor(6) as pool:
                futures = [pool.submit(long) for _ in range(6)]
                for _ in range(3000):  # until the first replica is generating
                    if httpx.get(f"{doomed}/v1/stats", timeout=5).json()["num_running"]:
                        break
                    time.sleep(0.01)
                else:
                    raise AssertionError("no request reached the first replica")
                doomed_proc.send_signal(signal.SIGKILL)  # type: ignore[attr-defined]
                reasons = [f.result(timeout=300) for f in futures]
            assert reasons == ["length"] * 6  # every one answered in full, by the spare
            card = next(c for c in httpx.get(f"{front}/v1/models", timeout=10).json()["data"] if c["id"] == "far")
            assert [r["healthy"] for r in card["meta"]["replicas"]] == [False, True]
            assert ask(client)  # and the next ones go to the spare


@pytest.mark.slow
def test_llama_server_as_a_remote(model_path: Path, tmp_path: Path) -> None:
    import subprocess

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    from build_llama_tools import build_tools

    binary = build_tools(["llama-server"])["llama-server"]
    port = free_port()
    proc = subprocess.Popen([str(binary), "-m", str(model_path), "--port", str(port), "-c", "2048", "-np", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc)  # type: ignore[arg-type]
        config = front_config(tmp_path, [f"http://127.0.0.1:{port}/v1"])
        with served(["--config", str(config)]) as (front, _):
            client = OpenAI(base_url=f"{front}/v1", api_key="none")
            whole = ask(client)
            stream = client.chat.completions.create(model="far", messages=[{"role": "user", "content": "Say hello."}],
                                                    max_tokens=16, temperature=0, stream=True)
            assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == whole
    finally:
        proc.terminate()
        proc.wait(timeout=30)
