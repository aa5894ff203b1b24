"""GET /v1/capabilities: what structured output, tools and grammars enforce on this server.

    static: the JSON Schema keywords the grammar enforces (chat.schema.SCHEMA_CAPABILITIES),
            response_format forms, tool_choice values
    model:  whether its chat template renders tools itself ("native") or gets ours ("generic")
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi import Request as HTTPRequest

from botframework.chat.schema import SCHEMA_CAPABILITIES
from botframework.server.auth import require_api_key
from botframework.server.routes.infill import IGNORED_FIELDS

router = APIRouter(dependencies=[Depends(require_api_key)])

RESPONSE_FORMATS = [
    {"type": "text"},
    {"type": "json_object"},
    {"type": "json_schema", "json_schema": {"name": "...", "schema": {}, "strict": True}},
    {"mode": "structured", "schema": {}},
]
TOP_LEVEL_STRUCTURED = {"mode": "structured", "schema": {}}  # also accepted beside messages


@router.get("/v1/capabilities")
async def capabilities(http: HTTPRequest, model: str | None = None) -> dict[str, Any]:
    """`model`: which model's template capabilities (default: the first declared), if loaded."""
    registry = http.app.state.registry
    runtime = registry.peek(model) if registry is not None else None
    card: dict[str, Any] | None = None
    if runtime is not None:
        card = {"id": runtime.model_id, **runtime.chat_capabilities()}
    return {
        "object": "capabilities",
        "json_schema": SCHEMA_CAPABILITIES,
        "response_format": RESPONSE_FORMATS,
        "chat_structured_top_level": TOP_LEVEL_STRUCTURED,
        "tools": {"tool_choice": ["none", "auto", "required", {"type": "function", "function": {"name": "..."}}],
                  "parallel_tool_calls": True,
                  "arguments": "constrained by each tool's parameters schema (same keywords as json_schema)"},
        "grammar": "raw GBNF in the 'grammar' field of /v1/chat/completions",
        "infill": {"honoured": ["n_predict", "n_indent", "t_max_predict_ms", "input_extra",
                                "samplers: top_k, top_p, min_p, temperature, penalties"],
                   "no_effect": IGNORED_FIELDS, "refused": {"lora": "no adapters are loaded"}},
        "model": card,
    }
