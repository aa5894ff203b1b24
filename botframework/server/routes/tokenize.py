"""POST /tokenize and POST /detokenize, shaped like llama-server's."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi import Request as HTTPRequest

from botframework.server.auth import require_api_key
from botframework.server.generation import get_runtime, tokenizer_call
from botframework.server.protocol import DetokenizeRequest, TokenizeRequest
from botframework.server.validation import check_token_ids

router = APIRouter(dependencies=[Depends(require_api_key)])


@router.post("/tokenize")
async def tokenize(body: TokenizeRequest, http: HTTPRequest) -> dict[str, Any]:
    runtime = await get_runtime(http, body.model)
    tokens = await tokenizer_call(len(body.content), runtime.tokenize, body.content, add_special=body.add_special,
                                  parse_special=body.parse_special)
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
    runtime = await get_runtime(http, body.model)
    check_token_ids(body.tokens, runtime, "tokens")
    # ~4 characters a token
    return {"content": await tokenizer_call(4 * len(body.tokens), runtime.detokenize, body.tokens)}
