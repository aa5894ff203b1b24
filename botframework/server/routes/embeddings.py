"""POST /v1/embeddings: mean-pooled, L2-normalised vectors computed on the engine thread."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends
from fastapi import Request as HTTPRequest

from botframework.server.auth import require_api_key
from botframework.server.errors import unsupported
from botframework.server.generation import get_runtime
from botframework.server.protocol import EmbeddingRequest
from botframework.server.validation import embedding_inputs

router = APIRouter(dependencies=[Depends(require_api_key)])


@router.post("/v1/embeddings")
async def embeddings(body: EmbeddingRequest, http: HTTPRequest) -> dict[str, Any]:
    runtime = await get_runtime(http, body.model)
    if body.dimensions is not None:
        raise unsupported("dimensions")
    texts = embedding_inputs(body, http.app.state.settings)
    vectors = await asyncio.to_thread(runtime.embed, texts)
    num_tokens = sum(len(runtime.tokenize(t, add_special=True)) for t in texts)
    data = []
    for i, vector in enumerate(vectors):
        if body.encoding_format == "base64":
            value: Any = base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
        else:
            value = [float(x) for x in vector]
        data.append({"object": "embedding", "index": i, "embedding": value})
    return {"object": "list", "data": data, "model": runtime.model_id,
            "usage": {"prompt_tokens": num_tokens, "total_tokens": num_tokens}}
