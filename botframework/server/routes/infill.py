"""POST /infill: llama.cpp-compatible fill-in-the-middle for code editors (llama.vscode, llama.vim).

    input_extra (files) + input_prefix + prompt, input_suffix -> <PRE> .. <SUF> .. <MID> tokens
    -> {"content", "stop", "tokens_predicted", "tokens_evaluated", "tokens_cached", "timings",
        "generation_settings", ...} or SSE {"content", "stop"}

llama-server's own fields, as llama.vscode sends them:
    n_predict         max_tokens (-1: what fits); 0 prefills and caches the prompt and returns no
                      text (llama.vscode warms the cache with it as the user moves around)
    n_indent          the answer stops before a new line indented less than this
    t_max_predict_ms  the answer stops at the first line end after this many ms of generating
    samplers          of llama.cpp's names (or letters), ours (top_k, top_p, min_p, temperature,
                      penalties) are used when listed and left out otherwise; dry, typ_p, xtc,
                      infill and top_n_sigma are llama.cpp's own and have no effect here
                      (/v1/capabilities lists them)
    cache_prompt      always on here; t_max_prompt_ms: no effect (a prompt is prefilled whole)
    lora              refused: no adapters are loaded
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends
from fastapi import Request as HTTPRequest
from fastapi.responses import StreamingResponse

from botframework.runtime.requests import GenerationOptions
from botframework.runtime.stream import DeltaStream
from botframework.scheduler.output import Delta, FinishReason, Usage
from botframework.server.auth import require_api_key
from botframework.server.generation import get_runtime, new_id, record, start
from botframework.server.protocol import INFILL_SAMPLERS, InfillChunk, InfillRequest
from botframework.server.sse import SSE_HEADERS, EventStreamResponse, sse, sse_error
from botframework.server.validation import engine_request, generation_options

router = APIRouter(dependencies=[Depends(require_api_key)])

IGNORED_FIELDS = {"t_max_prompt_ms": "a prompt is always prefilled whole",
                  "cache_prompt": "prompt prefixes are always reused",
                  "samplers: dry, typ_p, xtc, infill, top_n_sigma": "llama.cpp samplers this server does not have"}


def _extra_text(extra: list[InfillChunk]) -> str:
    # llama.cpp's repo-level FIM layout: each file as "<filename>\n<text>\n" before the prefix.
    return "".join(f"{chunk.filename}\n{chunk.text}\n" for chunk in extra)


def infill_options(body: InfillRequest) -> GenerationOptions:
    """The body's options, with `samplers` applied: ours that the list leaves out are neutral."""
    options = generation_options(body)
    if body.samplers is None:
        return options
    listed = {INFILL_SAMPLERS[name] for name in body.sampler_names}
    changes: dict[str, Any] = {}
    if "top_k" not in listed:
        changes["top_k"] = 0
    if "top_p" not in listed:
        changes["top_p"] = 1.0
    if "min_p" not in listed:
        changes["min_p"] = 0.0
    if "temperature" not in listed and (body.temperature is None or body.temperature > 0):
        changes["temperature"] = 1.0  # no temperature sampler: the plain distribution
    if "penalties" not in listed:
        changes.update(repeat_penalty=1.0, presence_penalty=0.0, frequency_penalty=0.0)
    return dataclasses.replace(options, **changes)


@dataclasses.dataclass
class Cutoff:
    """Where llama-server would stop an infill early: n_indent and t_max_predict_ms. Fed the
    answer's pieces; `feed` returns the part to keep and whether to stop after it."""

    n_indent: int = 0
    max_predict_s: float | None = None
    text: str = ""
    started: float | None = None

    def feed(self, piece: str) -> tuple[str, bool]:
        now = time.monotonic()
        if self.started is None:
            self.started = now
        start = len(self.text)
        self.text += piece
        if self.n_indent > 0:
            cut = self._underindented(start)
            if cut is not None:  # as llama-server: the text ends with that line end
                self.text = self.text[:max(cut + 1, start)]
                return self.text[start:], True
        late = self.max_predict_s is not None and now - self.started >= self.max_predict_s
        return piece, late and "\n" in self.text

    def _underindented(self, start: int) -> int | None:
        """The first line end, from the one before `start` on, whose next line (once it has
        a non-blank character) is indented less than n_indent."""
        newline = self.text.rfind("\n", 0, start)
        if newline < 0:
            newline = self.text.find("\n")
        while newline >= 0:
            rest = self.text[newline + 1:]
            end = rest.find("\n")
            line = rest if end < 0 else rest[:end]
            stripped = line.lstrip(" \t")
            if stripped and len(line) - len(stripped) < self.n_indent:
                return newline
            newline = self.text.find("\n", newline + 1)
        return None


@router.post("/infill", response_model=None)
async def infill(body: InfillRequest, http: HTTPRequest) -> dict[str, Any] | StreamingResponse:
    runtime = await get_runtime(http, body.model or None)
    body.check_supported()
    tokens = await asyncio.to_thread(runtime.infill_tokens, body.input_prefix + body.prompt, body.input_suffix,
                                     _extra_text(body.input_extra))
    options = infill_options(body)
    request = engine_request(body, tokens, runtime, http.app.state.settings, new_id("infill"), options=options)
    first, deltas = await start(http, runtime, request)
    limit_ms = body.t_max_predict_ms
    cutoff = Cutoff(n_indent=body.n_indent, max_predict_s=limit_ms / 1000 if limit_ms and limit_ms > 0 else None)
    if body.stream:
        return EventStreamResponse(_stream(http, first, deltas, cutoff, body.n_predict == 0),
                                 media_type="text/event-stream", headers=SSE_HEADERS)
    text, finish, usage, timings = await _collect(http, first, deltas, cutoff, len(tokens))
    if body.n_predict == 0:
        text, usage = "", Usage(usage.prompt_tokens, 0, usage.cached_tokens)
    return {"content": text, "stop": True, "model": runtime.model_id,
            "stop_type": "limit" if finish is FinishReason.LENGTH else "eos", "truncated": False,
            "tokens_predicted": usage.completion_tokens, "tokens_evaluated": usage.prompt_tokens,
            "tokens_cached": usage.cached_tokens, "timings": llama_timings(usage, timings),
            "generation_settings": {"n_predict": body.n_predict if body.n_predict is not None else -1,
                                    "temperature": options.temperature, "top_k": options.top_k,
                                    "top_p": options.top_p, "min_p": options.min_p, "n_indent": body.n_indent,
                                    "samplers": body.sampler_names}}


def llama_timings(usage: Usage, timings: dict[str, float]) -> dict[str, float]:
    """llama-server's timings from ours (queue, first token, total)."""
    prompt_ms = max(0.0, timings.get("ttft_ms", 0.0) - timings.get("queue_ms", 0.0))
    predicted_ms = max(0.0, timings.get("total_ms", 0.0) - timings.get("ttft_ms", 0.0))
    prompt_n = usage.prompt_tokens - usage.cached_tokens
    predicted_n = usage.completion_tokens
    return {"prompt_n": prompt_n, "prompt_ms": prompt_ms,
            "prompt_per_second": prompt_n / prompt_ms * 1e3 if prompt_ms else 0.0,
            "predicted_n": predicted_n, "predicted_ms": predicted_ms,
            "predicted_per_second": predicted_n / predicted_ms * 1e3 if predicted_ms else 0.0}


async def _collect(http: HTTPRequest, first: Delta, deltas: DeltaStream, cutoff: Cutoff,
                   num_prompt: int) -> tuple[str, FinishReason | None, Usage, dict[str, float]]:
    """The whole answer, stopped where the cutoff says (the request is cancelled then)."""
    pieces: list[str] = []
    usage, timings, finish = Usage(num_prompt, 0), {}, None
    num_generated = 0
    try:
        delta: Delta | None = first
        while delta is not None:
            if delta.error is not None:
                raise delta.error
            kept, stop = cutoff.feed(delta.text) if delta.text else ("", False)
            pieces.append(kept)
            num_generated += len(delta.token_ids)
            if delta.usage is not None:
                usage = delta.usage
            if delta.finish_reason is not None:
                finish, timings = delta.finish_reason, dict(delta.timings)
                record(http, delta.timings, delta.usage)
                break
            if stop:  # cut here: what was generated up to the cut is the answer
                finish, usage = FinishReason.STOP, Usage(num_prompt, num_generated)
                break
            delta = await anext(deltas, None)
    finally:
        await deltas.aclose()
    return "".join(pieces), finish, usage, timings


async def _stream(http: HTTPRequest, first: Delta, deltas: DeltaStream, cutoff: Cutoff,
                  warm_only: bool) -> AsyncIterator[bytes]:
    try:
        delta: Delta | None = first
        while delta is not None:
            if delta.error is not None:
                yield sse_error(delta.error)
                break
            done = delta.finish_reason is not None
            kept, stop = cutoff.feed(delta.text) if delta.text and not warm_only else ("", False)
            if kept or done or stop:
                yield sse({"content": kept, "stop": done or stop})
            if done:
                record(http, delta.timings, delta.usage)
                break
            if stop:
                break
            delta = await anext(deltas, None)
    finally:
        await deltas.aclose()
