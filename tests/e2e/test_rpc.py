"""llama.cpp's RPC backend: a model's layers spread over two loopback `botframework rpc-server`s.

Greedy output through the RPC servers equals the local model's token for token (alone and
batched) when the local one keeps the plain kernels the RPC servers run (repack off: a CPU's
own kernels, AMX or AVX512 repacks, round differently, and greedy output parts after a few
tokens), each server holds part of the weights, n_gpu_layers="auto" fits them, and a server
that is down or busy is a clear load error for that model only: ggml-rpc itself would abort
the process, so the server is probed first.
"""

from __future__ import annotations

import concurrent.futures
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from server_proc import free_port, served

PROMPTS = ("Write a short poem about the sea and the wind.",
           "List three uses of a paperclip, one per line.",
           "Explain in two sentences why the sky is blue.")


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    import socket

    deadline = time.monotonic() + timeout_s
    while True:
        assert proc.poll() is None, "rpc-server exited at start"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return  # connecting and closing at once: the server sees no HELLO and goes on
        except OSError:
            assert time.monotonic() < deadline, "rpc-server did not start listening"
            time.sleep(0.1)


@pytest.fixture(scope="module")
def rpc_servers() -> Iterator[list[tuple[str, subprocess.Popen[bytes]]]]:
    from botframework.cli.rpc import rpc_server_binary
    from botframework.native.devices import rpc_supported

    if not rpc_supported() or rpc_server_binary() is None:
        pytest.skip("built with -DGGML_RPC=OFF")
    servers = []
    try:
        for _ in range(2):
            port = free_port()
            # through our CLI, as a user starts it (it execs the vendored rpc-server)
            proc = subprocess.Popen([sys.executable, "-m", "botframework.cli", "rpc-server", "--port", str(port),
                                     "--threads", "1"], cwd=tempfile.gettempdir(),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            servers.append((f"127.0.0.1:{port}", proc))
            _wait_listening(port, proc)
        yield servers
    finally:
        for _, proc in servers:
            proc.terminate()
            proc.wait(timeout=10)


def _generate(llm: object, prompts: tuple[str, ...]) -> list[tuple[int, ...]]:
    """Each prompt's greedy tokens, all submitted at once (one batch)."""
    with concurrent.futures.ThreadPoolExecutor(len(prompts)) as pool:
        results = list(pool.map(lambda p: llm.chat(p, max_tokens=40, temperature=0),  # type: ignore[attr-defined]
                                prompts))
    return [r.token_ids for r in results]


def test_rpc_greedy_equals_local_token_for_token(model_path: Path, rpc_servers: list) -> None:
    from botframework.api import LocalLLM

    endpoints = tuple(endpoint for endpoint, _ in rpc_servers)
    with LocalLLM(str(model_path), n_ctx=1024, num_slots=3, n_gpu_layers=0, repack=False) as llm:
        alone = _generate(llm, PROMPTS[:1])
        batched = _generate(llm, PROMPTS)
    before = [_rss_mib(proc.pid) for _, proc in rpc_servers]
    with LocalLLM(str(model_path), n_ctx=1024, num_slots=3, n_gpu_layers=-1, rpc_servers=endpoints) as llm:
        placement = llm.worker.model.placement
        assert placement["n_gpu_layers"] == -1
        assert [d["description"] for d in placement["devices"]] == list(endpoints)
        held = [_rss_mib(proc.pid) - b for (_, proc), b in zip(rpc_servers, before, strict=True)]
        assert all(mib > 10 for mib in held), f"each rpc-server holds part of the weights: {held} MiB"
        assert _generate(llm, PROMPTS[:1]) == alone
        assert _generate(llm, PROMPTS) == batched
    assert all(len(tokens) > 10 for tokens in batched)


def test_auto_layers_fit_the_rpc_servers(model_path: Path, rpc_servers: list) -> None:
    from botframework.native.model import Model, ModelParams

    endpoints = tuple(endpoint for endpoint, _ in rpc_servers)
    with Model(model_path, ModelParams(n_gpu_layers="auto", rpc_servers=endpoints, fit_n_ctx=1024)) as model:
        assert model.placement["n_gpu_layers"] != 0  # the whole model fits two hosts' RAM
        assert "fit" in model.placement
    with Model(model_path, ModelParams(n_gpu_layers="auto")) as model:  # no GPU, no RPC: all on the CPU
        assert model.placement["n_gpu_layers"] == 0


def test_unreachable_or_busy_rpc_server_is_a_load_error(model_path: Path, rpc_servers: list) -> None:
    from botframework.errors import ModelLoadError
    from botframework.native.devices import probe_rpc_server
    from botframework.native.model import Model, ModelParams

    with pytest.raises(ModelLoadError, match="Connection refused|not answer"):
        Model(model_path, ModelParams(n_gpu_layers=-1, rpc_servers=(f"127.0.0.1:{free_port()}",)))
    endpoint, _ = rpc_servers[0]
    with Model(model_path, ModelParams(n_gpu_layers=-1, rpc_servers=(endpoint,))):
        # connected: a second client (another process) waits in the server's backlog
        with pytest.raises(ConnectionError, match="one client at a time"):
            probe_rpc_server(endpoint, timeout_s=1)
        # a second model of this process shares the connection
        with Model(model_path, ModelParams(n_gpu_layers=-1, rpc_servers=(endpoint,))) as second:
            assert second.placement["n_gpu_layers"] == -1
    assert probe_rpc_server(endpoint)[0] >= 1  # free again once its models are closed


def test_server_model_entry_with_rpc_streams(model_path: Path, rpc_servers: list, tmp_path: Path) -> None:
    endpoints = [endpoint for endpoint, _ in rpc_servers]
    config = tmp_path / "config.toml"
    config.write_text(
        f'[[models]]\nname = "local"\nsource = "{model_path}"\nload = "preload"\nn_gpu_layers = 0\nrepack = false\n\n'
        f'[[models]]\nname = "spread"\nsource = "{model_path}"\nrpc = {endpoints!r}\n'.replace("'", '"') +
        f'\n[[models]]\nname = "down"\nsource = "{model_path}"\nrpc = ["127.0.0.1:{free_port()}"]\n')
    with served(["--config", str(config), "--ctx-size", "1024"]) as (url, _):
        from openai import OpenAI

        client = OpenAI(base_url=f"{url}/v1", api_key="none")
        texts = {}
        for name in ("local", "spread"):
            stream = client.chat.completions.create(
                model=name, messages=[{"role": "user", "content": PROMPTS[0]}], max_tokens=32, temperature=0,
                stream=True)
            chunks = list(stream)
            assert chunks[-1].choices[0].finish_reason in ("length", "stop")
            texts[name] = "".join(c.choices[0].delta.content or "" for c in chunks)
        assert texts["spread"] == texts["local"] and texts["local"]
        cards = {c["id"]: c["meta"] for c in httpx.get(f"{url}/v1/models", timeout=10).json()["data"]}
        placement = cards["spread"]["placement"]
        assert placement["n_gpu_layers"] != 0
        assert [d.split(" (")[1].rstrip(")") for d in placement["devices"]] == endpoints
        # a model whose RPC server is down: a clear error for its requests, the others keep serving
        down = httpx.post(f"{url}/v1/chat/completions", timeout=60, json={
            "model": "down", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]})
        assert 400 <= down.status_code < 600 and down.status_code != 500, down.text
        assert "RPC server" in down.json()["error"]["message"]
        ok = httpx.post(f"{url}/v1/chat/completions", timeout=60, json={
            "model": "local", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]})
        assert ok.status_code == 200


def test_rpc_server_refuses_public_address_without_flag() -> None:
    out = subprocess.run([sys.executable, "-m", "botframework.cli", "rpc-server", "--host", "0.0.0.0"],
                         cwd=tempfile.gettempdir(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "--allow-non-loopback" in out.stderr
