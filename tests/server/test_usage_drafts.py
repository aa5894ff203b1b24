"""Speculative drafts in OpenAI's usage JSON (usage.completion_tokens_details, the Predicted
Outputs fields), on the fake runtime: present only when the request drafted; streamed == whole."""

from __future__ import annotations

import json
from typing import Any

from fake_runtime import serve_fake

CHAT = "/v1/chat/completions"
REPLY = "Hello from the fake model."


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], **extra}


def last_usage(text: str) -> dict[str, Any]:
    events = [line[len("data: "):] for line in text.split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    usage_chunk = json.loads(events[-2])
    assert usage_chunk["choices"] == []
    return usage_chunk["usage"]


def test_drafting_request_reports_accepted_and_rejected(run) -> None:
    async def go() -> None:
        async with serve_fake() as c:
            r = await c.post(CHAT, json=chat_body(speculative=True))
            assert r.status_code == 200, r.text
            usage = r.json()["usage"]
            n = len(REPLY)  # the fake drafts one token per generated one and keeps n // 2
            assert usage["completion_tokens"] == n
            assert usage["completion_tokens_details"] == {
                "accepted_prediction_tokens": n // 2, "rejected_prediction_tokens": n - n // 2}
            r = await c.post(CHAT, json=chat_body(speculative=True, stream=True,
                                                  stream_options={"include_usage": True}))
            assert r.status_code == 200
            assert last_usage(r.text) == usage
    run(go())


def test_n_choices_sum_their_drafts(run) -> None:
    async def go() -> None:
        async with serve_fake() as c:
            r = await c.post(CHAT, json=chat_body(speculative=True, n=2, max_tokens=5))
            usage = r.json()["usage"]
            assert usage["completion_tokens"] == 10
            assert usage["completion_tokens_details"] == {"accepted_prediction_tokens": 4,
                                                          "rejected_prediction_tokens": 6}
            r = await c.post("/v1/completions", json={"model": "fake-model", "prompt": "hi", "max_tokens": 5,
                                                      "speculative": True})
            assert r.json()["usage"]["completion_tokens_details"]["accepted_prediction_tokens"] == 2
    run(go())


def test_no_drafts_no_details(run) -> None:
    async def go() -> None:
        async with serve_fake() as c:
            for extra in ({}, {"speculative": False}):
                r = await c.post(CHAT, json=chat_body(**extra))
                usage = r.json()["usage"]
                assert set(usage) == {"prompt_tokens", "completion_tokens", "total_tokens", "prompt_tokens_details"}
                r = await c.post(CHAT, json=chat_body(stream=True, stream_options={"include_usage": True}, **extra))
                assert last_usage(r.text) == usage
    run(go())
