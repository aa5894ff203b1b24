"""POST /tokenize and POST /detokenize, shaped like llama-server's."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from fastapi import APIRouter, Depends
from fastapi import Request as HTTPRequest

from botframework.server.auth import require_api_key
from botframework.server.errors import APIError
from botframework.server.generation import INLINE_TOKENIZE_CHARS, get_runtime
from botframework.server.protocol import DetokenizeRequest, TokenizeRequest

router = APIRouter(dependencies=[Depends(require_api_key)])


@router.post("/tokenize")
async def tokenize(body: TokenizeRequest, http: HTTPRequest) -> dict[str, Any]:
    runtime = get_runtime(http)
    work = functools.partial(runtime.tokenize, body.content, add_special=body.add_special,
                             parse_special=body.parse_special)
    tokens = work() if len(body.content) <= INLINE_TOKENIZE_CHARS else await asyncio.to_thread(work)
    if not body.with_pieces:
        return {"tokens": tokens}
    pieces = []
    for t in tokens:
        raw = runtime.token_bytes(t)
        try:
            piece: str | list[int] = raw.decode("utf-8")
        except UnicodeDecodeError:  # part of a multi-byte character: the bytes, as llama-server does
            piece = list(raw)
        pieces.append({"id": t, "piece": piece})
    return {"tokens": pieces}


@router.post("/detokenize")
async def detokenize(body: DetokenizeRequest, http: HTTPRequest) -> dict[str, Any]:
    runtime = get_runtime(http)
    bad = [t for t in body.tokens if t >= runtime.n_vocab]
    if bad:
        raise APIError(400, f"token id {bad[0]} is out of the vocabulary (0..{runtime.n_vocab - 1})",
                       param="tokens")
    if len(body.tokens) <= INLINE_TOKENIZE_CHARS // 4:
        return {"content": runtime.detokenize(body.tokens)}
    return {"content": await asyncio.to_thread(runtime.detokenize, body.tokens)}
