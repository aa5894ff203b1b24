"""Several models in one server, on the real engine over real sockets: lazy loads (one load for
eight first requests), the others serving meanwhile, a broken file that is only its own
model's error, a path outside the configured folders refused, idle unload after keep-alive,
LRU eviction under a memory budget that fits one model, and never evicting a model in use."""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_proc import pulled, served


def _place(src: Path, dst: Path) -> None:
    """The test model under another name: a hard link where possible (no 100 MB copy)."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


@pytest.fixture(scope="module")
def models_dir(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    for name in ("alpha", "beta"):
        _place(model_path, folder / f"{name}.gguf")
    (folder / "broken.gguf").write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + os.urandom(4096))  # a header, then noise
    return folder


def states(url: str) -> dict[str, dict[str, Any]]:
    cards = httpx.get(f"{url}/v1/models", timeout=10).json()["data"]
    return {card["id"]: card["meta"] for card in cards}


def chat(url: str, model: str, max_tokens: int = 4, timeout: float = 120) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", timeout=timeout, json={
        "model": model, "max_tokens": max_tokens, "temperature": 0,
        "messages": [{"role": "user", "content": "Say hi"}]})


def wait_for(what: str, check: Any, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


@pytest.fixture(scope="module")
def server(models_dir: Path, model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    outside = tmp_path_factory.mktemp("elsewhere") / "gamma.gguf"
    _place(model_path, outside)
    args = ["--model", str(models_dir / "alpha.gguf"), "--model", str(outside), "--models-dir", str(models_dir),
            "--keep-alive", "2", "--ctx-size", "2048", "--parallel", "4", "--memory-budget", "100000"]
    with served(args) as (url, _proc):
        yield url


def test_every_declared_model_is_listed_with_its_state(server: str) -> None:
    listed = states(server)
    assert set(listed) == {"alpha", "gamma", "beta", "broken"}
    assert (listed["alpha"]["n_ctx"], listed["alpha"]["num_slots"]) == (2048, 4)  # as --ctx-size/--parallel say
    assert listed["alpha"]["state"] == "loaded" and listed["alpha"]["memory_bytes"] > 50 << 20
    assert listed["beta"]["state"] == "unloaded" and listed["broken"]["state"] == "unloaded"
    unknown = chat(server, "nope")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    assert "alpha, beta, broken, gamma" in unknown.json()["error"]["message"]


def test_eight_first_requests_load_a_lazy_model_once_while_the_other_serves(server: str) -> None:
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(chat, server, "beta") for _ in range(8)]
        wait_for("beta never started loading", lambda: states(server)["beta"]["state"] != "unloaded")
        t0 = time.monotonic()
        other = chat(server, "alpha", max_tokens=2)  # served while beta loads
        alpha_s = time.monotonic() - t0
        results = [f.result() for f in futures]
    assert other.status_code == 200 and alpha_s < 30
    assert [r.status_code for r in results] == [200] * 8, [r.text for r in results if r.status_code != 200]
    assert {r.json()["model"] for r in results} == {"beta"}
    beta = states(server)["beta"]
    assert beta["state"] == "loaded" and beta["num_loads"] == 1


def test_a_broken_model_is_its_own_error_and_the_others_serve(server: str) -> None:
    broken = chat(server, "broken")
    assert broken.status_code == 503 and broken.json()["error"]["code"] == "model_unavailable"
    assert "broken" in broken.json()["error"]["message"]
    listed = states(server)
    assert listed["broken"]["state"] == "failed" and listed["broken"]["error"]
    assert chat(server, "alpha").status_code == 200
    health = httpx.get(f"{server}/health", timeout=10)
    assert health.status_code == 200 and health.json()["models"]["broken"] == "failed"
    again = chat(server, "broken")  # the next request tries again, and says why again
    assert again.status_code == 503 and states(server)["broken"]["num_loads"] == 0


def test_a_model_outside_the_configured_folders_is_refused(server: str) -> None:
    refused = chat(server, "gamma")
    assert refused.status_code == 503
    assert "outside" in refused.json()["error"]["message"], refused.text
    assert states(server)["gamma"]["state"] == "failed"


def test_idle_models_unload_after_keep_alive_and_load_again(server: str) -> None:
    assert chat(server, "beta").status_code == 200
    wait_for("beta stayed loaded past its keep-alive", lambda: states(server)["beta"]["state"] == "unloaded")
    assert states(server)["alpha"]["state"] == "loaded"  # the first --model never unloads by itself
    assert chat(server, "beta").status_code == 200
    assert states(server)["beta"]["num_loads"] == 2


def test_load_and_unload_endpoints(server: str) -> None:
    unloaded = httpx.post(f"{server}/v1/models/alpha/unload", timeout=30).json()
    assert unloaded["unloaded"] is True and unloaded["meta"]["state"] == "unloaded"
    loaded = httpx.post(f"{server}/v1/models/alpha/load", timeout=120).json()
    assert loaded["meta"]["state"] == "loaded"
    assert httpx.post(f"{server}/v1/models/nope/load", timeout=10).status_code == 404


def test_lru_eviction_under_a_budget_that_fits_one_model(models_dir: Path) -> None:
    args = ["--model", str(models_dir / "alpha.gguf"), "--models-dir", str(models_dir), "--ctx-size", "2048",
            "--parallel", "4", "--memory-budget", "220"]
    with served(args) as (url, _proc):
        assert states(url)["alpha"]["state"] == "loaded"
        assert chat(url, "beta").status_code == 200  # alpha, idle, makes room
        listed = states(url)
        assert listed["alpha"]["state"] == "unloaded" and listed["beta"]["state"] == "loaded"
        with concurrent.futures.ThreadPoolExecutor(1) as pool:  # beta busy: it cannot go, alpha cannot come
            long = pool.submit(httpx.post, f"{url}/v1/completions", timeout=120, json={
                "model": "beta", "prompt": "Once upon a time", "max_tokens": 400, "ignore_eos": True})
            wait_for("beta's long request never started", lambda: states(url)["beta"]["num_in_flight"] == 1)
            busy = chat(url, "alpha")
            assert busy.status_code == 503 and int(busy.headers["retry-after"]) >= 1
            assert busy.json()["error"]["code"] == "server_busy"
            assert long.result().status_code == 200
        assert chat(url, "alpha").status_code == 200  # beta idle again: now it goes
        listed = states(url)
        assert listed["alpha"]["state"] == "loaded" and listed["beta"]["state"] == "unloaded"


def test_a_session_survives_the_unloading_of_its_model(server: str) -> None:
    messages = [{"role": "user", "content": "Name three colours."}]
    first = httpx.post(f"{server}/v1/chat/completions", timeout=120, json={
        "model": "beta", "messages": messages, "max_tokens": 16, "temperature": 0, "session_id": "s-unload"}).json()
    assert httpx.post(f"{server}/v1/models/beta/unload", timeout=30).json()["meta"]["state"] == "unloaded"
    parked = httpx.get(f"{server}/v1/sessions/s-unload", timeout=10).json()  # found without naming the model
    assert (parked["model"], parked["state"]) == ("beta", "parked") and parked["num_cached_tokens"] > 0
    messages += [{"role": "assistant", "content": first["choices"][0]["message"]["content"]},
                 {"role": "user", "content": "And three animals?"}]
    second = httpx.post(f"{server}/v1/chat/completions", timeout=120, json={
        "model": "beta", "messages": messages, "max_tokens": 8, "temperature": 0, "session_id": "s-unload"}).json()
    cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
    # the reloaded model restored the session: only the new turn is prefilled
    assert cached >= first["usage"]["prompt_tokens"], second["usage"]
    back = httpx.get(f"{server}/v1/sessions/s-unload", timeout=10).json()
    assert back["model"] == "beta" and back["state"] == "idle"
    assert httpx.delete(f"{server}/v1/sessions/s-unload", timeout=10).json()["deleted"] is True
    assert httpx.get(f"{server}/v1/sessions/s-unload", timeout=10).status_code == 404
    fresh = httpx.post(f"{server}/v1/chat/completions", timeout=120, json={
        "model": "beta", "messages": [{"role": "user", "content": "Count to three."}], "max_tokens": 4}).json()
    assert fresh["usage"]["prompt_tokens_details"]["cached_tokens"] < fresh["usage"]["prompt_tokens"]


def test_ps_and_models_show_a_running_servers_models(server: str) -> None:
    import subprocess
    import sys
    import tempfile

    assert chat(server, "alpha").status_code == 200
    assert chat(server, "broken").status_code == 503
    ps = subprocess.run([sys.executable, "-m", "botframework.cli", "ps", "--url", server], capture_output=True,
                        text=True, timeout=60, cwd=tempfile.gettempdir())
    assert ps.returncode == 0, ps.stderr
    rows = {line.split()[0]: line.split() for line in ps.stdout.splitlines()[1:]}
    assert rows["alpha"][1] == "loaded" and "MiB" in rows["alpha"][3] and "broken" not in rows
    models = subprocess.run([sys.executable, "-m", "botframework.cli", "models", "--url", server],
                            capture_output=True, text=True, timeout=60, cwd=tempfile.gettempdir())
    assert models.returncode == 0, models.stderr
    served = models.stdout.split("served (")[1]
    assert "alpha" in served and "beta" in served and "failed" in served  # broken shows its state and error


def test_a_chat_model_and_an_embedding_model_served_at_once() -> None:
    from botframework.runtime.catalog import DEFAULT_MODEL

    pulled("all-minilm-l6-v2")  # pulled (and converted) through our own pull
    with served(["--model", DEFAULT_MODEL, "--model", "all-minilm-l6-v2", "--ctx-size", "2048"]) as (url, _proc):
        sentences = [f"Sentence number {i} about cats and mats." for i in range(64)]
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            stream = pool.submit(httpx.post, f"{url}/v1/completions", timeout=120, json={
                "model": DEFAULT_MODEL, "prompt": "Once upon a time", "max_tokens": 64, "ignore_eos": True})
            vectors = pool.submit(httpx.post, f"{url}/v1/embeddings", timeout=120, json={
                "model": "all-minilm-l6-v2", "input": sentences, "encoding_format": "float"})
            completion, embedded = stream.result(), vectors.result()
        assert completion.status_code == 200 and completion.json()["usage"]["completion_tokens"] == 64
        assert embedded.status_code == 200 and len(embedded.json()["data"]) == 64
        assert len(embedded.json()["data"][0]["embedding"]) == 384
        listed = states(url)
        assert (listed[DEFAULT_MODEL]["kind"], listed["all-minilm-l6-v2"]["kind"]) == ("chat", "embedding")
        refused = chat(url, "all-minilm-l6-v2")  # an embedding model generates nothing
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "model_not_supported"


def test_tokenize_and_stats_name_their_model(server: str) -> None:
    tokens = httpx.post(f"{server}/tokenize", json={"content": "hello world", "model": "beta"}, timeout=60).json()
    assert tokens["tokens"] and states(server)["beta"]["state"] == "loaded"  # loaded for it
    text = httpx.post(f"{server}/detokenize", json={"tokens": tokens["tokens"], "model": "beta"}, timeout=60).json()
    assert text["content"].strip() == "hello world"
    assert httpx.get(f"{server}/v1/stats", params={"model": "beta"}, timeout=60).json()["model"] == "beta"
    assert httpx.post(f"{server}/tokenize", json={"content": "x", "model": "nope"}, timeout=10).status_code == 404


def test_the_context_and_slots_fit_the_memory_budget(models_dir: Path) -> None:
    with served(["--model", str(models_dir / "alpha.gguf"), "--memory-budget", "130"]) as (url, _proc):
        meta = states(url)["alpha"]
        # 130 MiB minus ~92 MiB of weights leaves ~1,700 cells of 22.5 KiB: not the default 8,192
        assert meta["n_ctx"] < 8192 and meta["n_ctx"] % 256 == 0 and meta["memory_bytes"] <= 130 << 20
        assert meta["num_slots"] == 2  # one per 1,024 cells, at least 2
        stats = httpx.get(f"{url}/v1/stats", timeout=30).json()
        assert stats["num_busy_slots"] == 0 and chat(url, "alpha").status_code == 200


def test_load_declares_a_file_dropped_in_the_folder_or_a_cached_catalog_model(
        server: str, models_dir: Path, model_path: Path, tmp_path: Path) -> None:
    """What the SDKs' New("path/to/model.gguf") does: POST /v1/models/{path}/load declares a
    .gguf inside the configured folders (once: the same file again is the same model), or a
    catalog model already in the cache; a file elsewhere and an unknown name are refused."""
    dropped = models_dir / "delta.gguf"
    _place(model_path, dropped)
    loaded = httpx.post(f"{server}/v1/models/{dropped}/load", timeout=120)
    assert loaded.status_code == 200, loaded.text
    assert loaded.json()["id"] == "delta" and loaded.json()["meta"]["state"] == "loaded"
    assert chat(server, str(dropped)).status_code == 200  # the path is an alias of the model
    again = httpx.post(f"{server}/v1/models/{dropped}/load", timeout=120)
    assert again.json()["id"] == "delta"
    assert states(server)["alpha"]["state"] in ("loaded", "unloaded")  # a file declared at start stays itself
    assert httpx.post(f"{server}/v1/models/{models_dir / 'alpha.gguf'}/load", timeout=120).json()["id"] == "alpha"

    elsewhere = tmp_path / "epsilon.gguf"
    _place(model_path, elsewhere)
    refused = httpx.post(f"{server}/v1/models/{elsewhere}/load", timeout=30)
    assert refused.status_code == 400 and "outside" in refused.json()["error"]["message"], refused.text
    assert "epsilon" not in states(server)

    unknown = httpx.post(f"{server}/v1/models/no-such-model/load", timeout=30)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found", unknown.text

    catalog = httpx.post(f"{server}/v1/models/smollm2-135m-instruct/load", timeout=120)
    assert catalog.status_code == 200, catalog.text
    assert catalog.json()["id"] == "smollm2-135m-instruct"
    assert chat(server, "smollm2-135m-instruct").status_code == 200
