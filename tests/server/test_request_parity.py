"""The server and LocalLLM build the same engine Request from the same options (no model).

Both go through runtime.requests.build_request: the server from a pydantic body (through
server.validation), LocalLLM from keyword arguments, each over the same fake model.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import httpx
import pytest
from fake_runtime import FakeRuntime, serve_fake

from botframework.api import LocalLLM
from botframework.errors import InvalidRequestError
from botframework.scheduler.output import Delta, FinishReason, RequestHandle, Usage
from botframework.scheduler.sequence import Request
from botframework.specs import DEFAULT_MAX_TOKENS, SAMPLING_DEFAULTS


class SyncFake(FakeRuntime):
    """FakeRuntime that also answers LocalLLM: a handle without a loop, finished at once."""

    def new_request_id(self) -> str:
        return f"local-{len(self.requests)}"

    def submit(self, request: Request, loop: asyncio.AbstractEventLoop | None = None, *,
               inline: bool = False) -> RequestHandle:
        if loop is not None:
            return super().submit(request, loop, inline=inline)
        self.requests.append(request)
        handle = RequestHandle(request.request_id, lambda _: None)
        handle.publish(Delta(request.request_id, text="ok", token_ids=(7,), finish_reason=FinishReason.STOP,
                             usage=Usage(len(request.prompt_tokens), 1)))
        return handle


def comparable(request: Request) -> Request:
    return dataclasses.replace(request, request_id="-", arrival=0.0)


# the same options as LocalLLM keywords and as the server's JSON fields
SAME: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({"max_tokens": 5}, {"max_tokens": 5}),
    ({"max_tokens": 9, "temperature": 0.2, "top_p": 0.5, "top_k": 7, "min_p": 0.1, "repeat_penalty": 1.1,
      "presence_penalty": 0.3, "frequency_penalty": -0.3, "seed": 11, "stop": ["x", "yz"], "ignore_eos": True,
      "logit_bias": {5: -100.0}, "session_id": "s", "context_shift": True, "num_keep": 2},
     {"max_tokens": 9, "temperature": 0.2, "top_p": 0.5, "top_k": 7, "min_p": 0.1, "repeat_penalty": 1.1,
      "presence_penalty": 0.3, "frequency_penalty": -0.3, "seed": 11, "stop": ["x", "yz"], "ignore_eos": True,
      "logit_bias": {"5": -100.0}, "session_id": "s", "context_shift": True, "n_keep": 2}),
    ({"max_tokens": 3, "logprobs": 2, "seed": -1}, {"max_tokens": 3, "logprobs": 2, "seed": -1}),
]


async def _server_request(runtime: SyncFake, path: str, body: dict[str, Any]) -> Request:
    async with serve_fake(runtime) as client:
        response = await client.post(path, json={"model": "fake-model", **body})
        assert response.status_code == 200, response.text
    return runtime.requests[-1]


@pytest.mark.parametrize("local,wire", SAME)
def test_completion_requests_are_the_same(run, local: dict[str, Any], wire: dict[str, Any]) -> None:
    runtime = SyncFake()
    LocalLLM.from_handle(runtime).complete("Once upon", **local)  # type: ignore[arg-type]
    from_local = runtime.requests[-1]
    from_server = run(_server_request(runtime, "/v1/completions", {"prompt": "Once upon", **wire}))
    assert comparable(from_local) == comparable(from_server)


@pytest.mark.parametrize("local,wire", SAME[:2])
def test_chat_requests_are_the_same(run, local: dict[str, Any], wire: dict[str, Any]) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    runtime = SyncFake()
    LocalLLM.from_handle(runtime).chat(messages, **local)  # type: ignore[arg-type]
    from_local = runtime.requests[-1]
    from_server = run(_server_request(runtime, "/v1/chat/completions", {"messages": messages, **wire}))
    assert from_local.params.stop[-1] == "<end>"  # the template's stop, on both
    assert comparable(from_local) == comparable(from_server)


def test_defaults_are_the_one_table_on_both_and_only_max_tokens_differs(run) -> None:
    runtime = SyncFake()
    LocalLLM.from_handle(runtime).complete("Once upon")  # type: ignore[arg-type]
    from_local = runtime.requests[-1]
    from_server = run(_server_request(runtime, "/v1/completions", {"prompt": "Once upon"}))
    assert from_local.params.sampler == from_server.params.sampler == SAMPLING_DEFAULTS
    assert from_local.params.max_tokens == DEFAULT_MAX_TOKENS
    assert from_server.params.max_tokens == runtime.n_ctx - len(from_server.prompt_tokens)  # what fits
    same_max = dataclasses.replace(from_server.params, max_tokens=DEFAULT_MAX_TOKENS)
    assert comparable(dataclasses.replace(from_server, params=same_max)) == comparable(from_local)


def test_the_same_bad_option_is_the_same_error_on_both(run) -> None:
    runtime = SyncFake()
    llm = LocalLLM.from_handle(runtime)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError) as info:
        llm.complete("Once upon", logit_bias={runtime.n_vocab: 1.0})
    assert info.value.param == "logit_bias"
    with pytest.raises(InvalidRequestError) as info:
        llm.complete("Once upon", logprobs=30)
    assert (info.value.param, info.value.code) == ("logprobs", "invalid_value")

    async def go() -> httpx.Response:
        async with serve_fake(runtime) as client:
            return await client.post("/v1/completions", json={"model": "fake-model", "prompt": "Once upon",
                                                               "logit_bias": {str(runtime.n_vocab): 1.0}})

    response = run(go())
    assert response.status_code == 400 and response.json()["error"]["param"] == "logit_bias"
