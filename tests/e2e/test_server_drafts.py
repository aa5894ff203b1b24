"""Speculative drafts over HTTP on the real model: usage.completion_tokens_details.

    "speculative": true on an edit-like prompt (the answer copies the code) -> accepted drafts
    reported as accepted_prediction_tokens; prompt and completion counts as without drafts;
    a request that does not draft keeps OpenAI's plain usage shape (no details)
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from server_proc import pulled, served

from botframework.runtime.catalog import DEFAULT_MODEL

SOURCE = '''def load_config(path):
    with open(path) as f:
        data = f.read()
    config = {}
    for line in data.splitlines():
        key, value = line.split("=", 1)
        config[key.strip()] = value.strip()
    return config
'''
MESSAGES = [{"role": "user", "content": f"Repeat this code exactly:\n```python\n{SOURCE}```"}]


def chat(url: str, **extra: Any) -> dict[str, Any]:
    r = httpx.post(f"{url}/v1/chat/completions", timeout=120,
                   json={"model": DEFAULT_MODEL, "messages": MESSAGES, "temperature": 0, "max_tokens": 48, **extra})
    r.raise_for_status()
    return r.json()  # type: ignore[no-any-return]


def streamed_usage(url: str, **extra: Any) -> dict[str, Any]:
    r = httpx.post(f"{url}/v1/chat/completions", timeout=120,
                   json={"model": DEFAULT_MODEL, "messages": MESSAGES, "temperature": 0, "max_tokens": 48,
                         "stream": True, "stream_options": {"include_usage": True}, **extra})
    r.raise_for_status()
    events = [line[len("data: "):] for line in r.text.split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return json.loads(events[-2])["usage"]  # type: ignore[no-any-return]


def test_drafted_and_accepted_in_usage() -> None:
    pulled(DEFAULT_MODEL)
    with served(["--model", DEFAULT_MODEL, "--parallel", "2", "--ctx-size", "2048", "--log-level", "warning",
                 "--draft-always"]) \
            as (url, _proc):
        plain = chat(url)
        drafted = chat(url, speculative=True)
        assert plain["choices"][0]["finish_reason"] == drafted["choices"][0]["finish_reason"] == "length"
        assert "completion_tokens_details" not in plain["usage"]
        details = drafted["usage"]["completion_tokens_details"]
        assert details["accepted_prediction_tokens"] > 0 and details["rejected_prediction_tokens"] >= 0
        for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
            assert drafted["usage"][key] == plain["usage"][key]
        stream = streamed_usage(url, speculative=True)
        assert stream["completion_tokens"] == plain["usage"]["completion_tokens"]
        assert stream["completion_tokens_details"]["accepted_prediction_tokens"] > 0
        assert "completion_tokens_details" not in streamed_usage(url, speculative=False)


def test_draft_model_server() -> None:
    """serve --draft model --draft-model SPEC: the catalog model drafting for itself, by default."""
    pulled(DEFAULT_MODEL)
    with served(["--model", DEFAULT_MODEL, "--parallel", "2", "--ctx-size", "2048", "--log-level", "warning",
                 "--draft", "model", "--draft-model", DEFAULT_MODEL, "--draft-always"]) as (url, _proc):
        drafted = chat(url)
        plain = chat(url, speculative=False)
        details = drafted["usage"]["completion_tokens_details"]
        assert details["accepted_prediction_tokens"] > 0.8 * (details["accepted_prediction_tokens"]
                                                               + details["rejected_prediction_tokens"])
        assert "completion_tokens_details" not in plain["usage"]
        for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
            assert drafted["usage"][key] == plain["usage"][key]
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
        assert "botframework_draft_accepted_tokens" in metrics
        seconds = [line for line in metrics.splitlines() if line.startswith("botframework_draft_seconds_total{")]
        assert seconds and float(seconds[0].split()[-1]) > 0


def test_every_protocol_reports_drafts_with_draft_ngram() -> None:
    """serve --draft ngram: Responses, Anthropic Messages and Ollama requests draft by default
    and their usage carries the same two counts (extension fields, read here through the
    official clients, Ollama's raw JSON); the OpenAI route's request that opts out reports none."""
    import anthropic
    import openai

    pulled(DEFAULT_MODEL)
    prompt = MESSAGES[0]["content"]
    with served(["--model", DEFAULT_MODEL, "--parallel", "2", "--ctx-size", "2048", "--log-level", "warning",
                 "--draft", "ngram", "--draft-always"]) as (url, _proc):
        with openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120) as client:
            response = client.responses.create(model=DEFAULT_MODEL, input=prompt, temperature=0, max_output_tokens=48)
        details = response.usage.output_tokens_details.model_dump()  # type: ignore[union-attr]
        with anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0, timeout=120) as claude:
            message = claude.messages.create(model=DEFAULT_MODEL, max_tokens=48, extra_body={"temperature": 0},
                                             messages=[{"role": "user", "content": prompt}])
        usage = message.usage.model_dump()
        # the ollama package drops fields it does not know (its models ignore extras): its raw JSON
        answer = httpx.post(f"{url}/api/chat", timeout=120, json={
            "model": DEFAULT_MODEL, "messages": [{"role": "user", "content": prompt}], "stream": False,
            "options": {"temperature": 0, "num_predict": 48}})
        answer.raise_for_status()
        last = answer.json()
        plain = chat(url, speculative=False)
    for name, counts in (("responses", details), ("anthropic", usage), ("ollama", last)):
        assert counts.get("accepted_prediction_tokens", 0) > 0, (name, counts)
        assert counts["rejected_prediction_tokens"] >= 0, (name, counts)
    assert response.usage.output_tokens == message.usage.output_tokens == last["eval_count"] == 48  # type: ignore[union-attr]
    assert "completion_tokens_details" not in plain["usage"]
