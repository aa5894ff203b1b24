"""Ollama's native API over the same core as /v1: Open WebUI, Continue, Twinny, the `ollama` package.

    POST /api/chat      messages (+ tools, format, think) --runtime.plan_chat--> ChatPlan
    POST /api/generate  prompt [+ system] as one user turn --plan_chat--> ChatPlan;
                        raw: the prompt's own tokens; suffix: fill-in-the-middle tokens
        --build_request (the shared builder, the server's limits)--> generation.start
        --> one JSON object (stream: false) or NDJSON lines (default): _ollama_stream.Answer
        messages: [] / prompt "": load the model (keep_alive 0: unload it)
    POST /api/embed, /api/embeddings   runtime.embed_submit, as /v1/embeddings
    GET  /api/tags, /api/ps; POST /api/show   declared (+ cached) models: _ollama_models
    POST /api/pull      our pull (catalog names, hf: specs): NDJSON status lines, then declared
    GET  /api/version, GET|HEAD /   open, like /health: clients probe them to find a server

Every error is Ollama's {"error": "..."} with the status errors.to_api_error gives the
exception (404 unknown model, 400 bad input, 503 busy with Retry-After, 401 without the API
key): _OllamaRoute renders whatever a route, its body parsing or its auth dependency raises.
keep_alive rides on the request's model lease (Registry.acquire): it decides how long the
model stays loaded once idle after this request, as Ollama's does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import numpy as np
import pydantic_core
from fastapi import APIRouter, Depends
from fastapi import Request as HTTPRequest
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from botframework.chat.parse import OutputMode, OutputParser
from botframework.chat.plan import ChatOptions, ChatPlan
from botframework.chat.render import RenderedChat
from botframework.chat.schema import schema_grammar
from botframework.chat.structured import StructuredOutput
from botframework.chat.tools import parse_tool_choice, parse_tools
from botframework.errors import BotframeworkError, InvalidRequestError, ModelNotFoundError
from botframework.runtime import pull as pulling
from botframework.runtime.catalog import CATALOG
from botframework.runtime.hub import HF_PREFIX
from botframework.runtime.registry import ModelEntry, Registry
from botframework.runtime.requests import GenerationOptions, build_request
from botframework.server.adapters._ollama_models import (
    capabilities,
    card,
    chat_template,
    details,
    digest,
    expires_at,
    fills_in_middle,
    model_file,
    model_info,
    undeclared_cached,
)
from botframework.server.adapters._ollama_protocol import (
    PARAM_NAMES,
    ChatBody,
    EmbedBody,
    EmbeddingsBody,
    GenerateBody,
    ModelBody,
    Options,
    Think,
    context_room,
    display_name,
    generation_options,
    keep_alive_seconds,
    name_candidates,
    no_images,
    parse_body,
    require_model,
    structured_format,
    template_messages,
    thinking_wanted,
    timestamp,
)
from botframework.server.adapters._ollama_stream import Answer, Clock, line, ndjson_response
from botframework.server.auth import require_api_key
from botframework.server.errors import APIError, to_api_error
from botframework.server.generation import embed_vectors, get_registry, get_runtime, new_id, start, tokenizer_call
from botframework.server.protocol import EmbeddingRequest
from botframework.server.routes.embeddings import _shortened
from botframework.server.runtime import Runtime
from botframework.server.settings import ServerSettings
from botframework.server.sse import json_response
from botframework.server.validation import embedding_inputs
from botframework.specs import GrammarSpec

# The Ollama release whose API this adapter follows (clients gate features on it: format
# schemas 0.5, think 0.9, tool_name and logprobs 0.12)
OLLAMA_VERSION = "0.12.0"
PULL_HEARTBEAT_S = 1.0  # a status line this often while a pull runs (clients time out on silence)


def error_response(exc: BaseException) -> JSONResponse:
    """Any exception as Ollama's {"error": "..."}, with to_api_error's status and headers (an
    HTTP error of Starlette's, such as a 405, with its own)."""
    if isinstance(exc, HTTPException):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)
    err = to_api_error(exc)
    return JSONResponse({"error": err.message}, status_code=err.status, headers=err.headers)


class _OllamaRoute(APIRoute):
    """Errors from the route, its auth dependency included, in Ollama's shape (not OpenAI's)."""

    def get_route_handler(self) -> Callable[[HTTPRequest], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def ollama_handler(request: HTTPRequest) -> Response:
            try:
                return await handler(request)
            except Exception as exc:  # noqa: BLE001 - every error becomes an Ollama error answer
                return error_response(exc)

        return ollama_handler


router = APIRouter(route_class=_OllamaRoute, tags=["ollama"])
_AUTH = [Depends(require_api_key)]  # per route: /, /api/version and the 405s answer without a key
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "QUERY")
_ALLOWED = {"/api/chat": ("POST",), "/api/generate": ("POST",), "/api/embed": ("POST",), "/api/embeddings": ("POST",),
            "/api/show": ("POST",), "/api/pull": ("POST",), "/api/tags": ("GET", "HEAD"), "/api/ps": ("GET",),
            "/api/version": ("GET", "HEAD"), "/": ("GET", "HEAD")}


async def _method_not_allowed(http: HTTPRequest) -> Response:
    """Other methods on these paths: a 405 in Ollama's shape, like every answer of theirs (a CORS
    preflight, when CORS is on, is answered by its middleware first)."""
    raise HTTPException(405, "method not allowed", headers={"Allow": ", ".join(_ALLOWED[http.url.path])})


for _path, _allowed in _ALLOWED.items():
    router.add_api_route(_path, _method_not_allowed, methods=[m for m in _METHODS if m not in _allowed],
                         include_in_schema=False)


def _body_doc(kind: type[BaseModel]) -> dict[str, Any]:
    """openapi_extra for a route that parses its own body: the body's JSON schema ($defs inlined).
    (FastAPI's own parsing would refuse curl's default form content type, and answer in OpenAI's
    error shape.)"""
    schema = kind.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(defs[ref.rsplit("/", 1)[-1]])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(value) for value in node]
        return node

    return {"requestBody": {"required": True, "content": {"application/json": {"schema": inline(schema)}}}}


# -- models by name --------------------------------------------------------------------------

async def _model_id(http: HTTPRequest, name: str) -> str:
    """The declared model a client's name means: an id or alias, with or without `:latest`. A
    catalog model or hf: file already in the cache is declared on first use, as POST
    /v1/models/{name}/load declares it; anything else is Ollama's 404."""
    registry = get_registry(http)
    candidates = name_candidates(require_model(name))
    for candidate in candidates:
        try:
            return registry.entry(candidate).name
        except ModelNotFoundError:
            pass
    settings: ServerSettings = http.app.state.settings
    for candidate in candidates:
        if candidate in CATALOG or candidate.startswith(HF_PREFIX):
            try:
                entry = await asyncio.to_thread(settings.entry_for_load, candidate)
            except BotframeworkError:
                continue  # not in the cache
            return _declare(http, entry)
    raise ModelNotFoundError(f'model "{name}" not found, try pulling it first')


def _declare(http: HTTPRequest, entry: ModelEntry) -> str:
    try:
        return get_registry(http).declare(entry, same=lambda known: known.source == entry.source).name
    except ValueError as exc:  # its name is another model's
        raise InvalidRequestError(str(exc), param="model") from None


async def _load_or_unload(http: HTTPRequest, model_id: str, name: str, keep_alive_s: float | None,
                          fragment: dict[str, Any]) -> Response:
    """An empty chat or prompt: load the model, or with keep_alive 0 unload it now (503 busy
    while it has requests in flight)."""
    if keep_alive_s == 0:
        await get_registry(http).unload(model_id)
        reason = "unload"
    else:
        await get_runtime(http, model_id, keep_alive_s=keep_alive_s)
        reason = "load"
    return json_response({"model": name, "created_at": timestamp(), **fragment, "done": True, "done_reason": reason})


# -- chat and generate -------------------------------------------------------------------------

def _check_think(think: Think | None, plan: ChatPlan, name: str) -> None:
    if thinking_wanted(think) and not plan.rendered.params.get("supports_thinking"):
        raise InvalidRequestError(f'"{name}" does not support thinking', param="think")


async def _run(http: HTTPRequest, answer: Answer, generation: GenerationOptions, options: Options | None,
               stream: bool) -> Response:
    """The plan's tokens through the shared request builder and scheduler, answered whole or streamed."""
    runtime, plan = answer.runtime, answer.plan
    room = context_room(options, len(plan.tokens), runtime.n_ctx)
    if room is not None:
        generation = dataclasses.replace(generation, max_tokens=min(generation.max_tokens or room, room))
    settings: ServerSettings = http.app.state.settings
    request = build_request(generation, plan.tokens, request_id=new_id("ollama"), n_ctx=runtime.n_ctx,
                            n_vocab=runtime.n_vocab, limits=settings.request_limits,
                            extra_stops=plan.rendered.additional_stops, grammar=plan.grammar,
                            truncated_tokens=plan.rendered.truncated_tokens, param_names=PARAM_NAMES, stream=stream)
    first, deltas = await start(http, runtime, request)
    return answer.stream(first, deltas) if stream else await answer.whole(first, deltas)


@router.post("/api/chat", dependencies=_AUTH, openapi_extra=_body_doc(ChatBody), response_model=None)
async def chat(http: HTTPRequest) -> Response:
    clock = Clock(time.perf_counter_ns())
    body = parse_body(await http.body(), ChatBody)
    keep_alive = keep_alive_seconds(body.keep_alive)
    model_id = await _model_id(http, body.model)
    if not body.messages:
        return await _load_or_unload(http, model_id, body.model, keep_alive,
                                     {"message": {"role": "assistant", "content": ""}})
    messages = template_messages(body.messages)
    generation = generation_options(body.options, logprobs=body.logprobs, top_logprobs=body.top_logprobs)
    structured = structured_format(body.format)
    tools = parse_tools(body.tools)
    if structured is not None and tools:
        raise InvalidRequestError("format and tools cannot be combined in one request", param="format")
    # Ollama has no tool_choice: the model may call any tool (or several), or answer
    constraints = ChatOptions(structured=structured, tools=tools, tool_choice=parse_tool_choice(None, tools),
                              parallel_tool_calls=bool(tools), enable_thinking=body.think is not False)
    runtime = await get_runtime(http, model_id, keep_alive_s=keep_alive)
    clock.loaded()
    plan = await asyncio.to_thread(runtime.plan_chat, messages, constraints,
                                   max_tokens=generation.planned_max_tokens, overflow=_overflow(body.truncate))
    _check_think(body.think, plan, body.model)
    answer = Answer(http, runtime, plan, body.model, clock, chat=True, want_logprobs=body.logprobs)
    return await _run(http, answer, generation, body.options, body.stream)


def _overflow(truncate: bool | None) -> str:
    """Ollama truncates a chat too long for the context by default (the oldest turns go)."""
    return "error" if truncate is False else "truncate"


def _raw_template(template: str | None) -> bool:
    """`template`: Go templates are not run here; the one that is the prompt itself means raw."""
    if not template:
        return False
    if "".join(template.split()) in ("{{.Prompt}}", "{{-.Prompt-}}"):
        return True
    raise InvalidRequestError("'template' is not supported: Go templates are not run here; the model's own "
                              "chat template is used (or send raw: true with a prompt formatted yourself)",
                              param="template")


async def _raw_plan(tokens: list[int], structured: StructuredOutput | None) -> ChatPlan:
    """A prompt that is not a chat: its own tokens, `format` enforced by the schema's grammar."""
    if structured is None:
        return ChatPlan(RenderedChat(tokens, ()), None, OutputParser(OutputMode.TEXT))
    gbnf = await asyncio.to_thread(schema_grammar, dict(structured.schema), param="format")
    return ChatPlan(RenderedChat(tokens, ()), GrammarSpec(gbnf), OutputParser(OutputMode.STRUCTURED), structured)


@router.post("/api/generate", dependencies=_AUTH, openapi_extra=_body_doc(GenerateBody), response_model=None)
async def generate(http: HTTPRequest) -> Response:
    clock = Clock(time.perf_counter_ns())
    body = parse_body(await http.body(), GenerateBody)
    keep_alive = keep_alive_seconds(body.keep_alive)
    model_id = await _model_id(http, body.model)
    if body.images:
        raise no_images("images")
    raw = body.raw or _raw_template(body.template)
    if raw and (body.system or body.context):
        raise InvalidRequestError("raw mode does not support template, system, or context", param="raw")
    if not body.prompt:
        return await _load_or_unload(http, model_id, body.model, keep_alive, {"response": ""})
    generation = generation_options(body.options, logprobs=body.logprobs, top_logprobs=body.top_logprobs)
    structured = structured_format(body.format)
    runtime = await get_runtime(http, model_id, keep_alive_s=keep_alive)
    clock.loaded()
    context: list[int] | None = None
    if raw or body.suffix:  # no chat template: the prompt's tokens, or fill-in-the-middle
        if thinking_wanted(body.think):
            raise InvalidRequestError("'think' needs the chat template: not with raw or suffix", param="think")
        if raw:
            tokens = await tokenizer_call(len(body.prompt), runtime.tokenize, body.prompt, add_special=True,
                                          parse_special=True)
        else:
            tokens = await asyncio.to_thread(runtime.infill_tokens, body.prompt, body.suffix or "")
        plan = await _raw_plan(tokens, structured)
        context = None if raw else plan.tokens
    else:
        messages = ([{"role": "system", "content": body.system}] if body.system else []) + [
            {"role": "user", "content": body.prompt}]
        constraints = ChatOptions(structured=structured, enable_thinking=body.think is not False)
        plan = await asyncio.to_thread(runtime.plan_chat, messages, constraints,
                                       max_tokens=generation.planned_max_tokens, overflow=_overflow(body.truncate))
        _check_think(body.think, plan, body.model)
        if body.context:  # an earlier answer's context (deprecated in Ollama): it comes first
            plan = await _after_context(runtime, plan, body.context)
        context = plan.tokens
    answer = Answer(http, runtime, plan, body.model, clock, chat=False, want_logprobs=body.logprobs,
                    context=context)
    return await _run(http, answer, generation, body.options, body.stream)


async def _after_context(runtime: Runtime, plan: ChatPlan, context: list[int]) -> ChatPlan:
    bos = await tokenizer_call(0, runtime.tokenize, "", add_special=True)
    tokens = plan.tokens[len(bos):] if bos and plan.tokens[:len(bos)] == bos else plan.tokens
    return dataclasses.replace(plan, rendered=dataclasses.replace(plan.rendered, tokens=[*context, *tokens]))


# -- embeddings ---------------------------------------------------------------------------------

async def _vectors(http: HTTPRequest, model_id: str, keep_alive: float | None, texts: list[str],
                   clock: Clock) -> tuple[list[np.ndarray], int]:
    """The texts' vectors as /v1/embeddings computes them (the same checks: count, empty texts)."""
    runtime = await get_runtime(http, model_id, keep_alive_s=keep_alive)
    clock.loaded()
    if not texts:
        return [], 0
    inputs = embedding_inputs(EmbeddingRequest(model=model_id, input=texts), http.app.state.settings, runtime)
    return await embed_vectors(http, runtime, inputs)


def _floats(vector: np.ndarray) -> list[float]:
    return np.asarray(vector, dtype=np.float32).tolist()  # type: ignore[no-any-return]


@router.post("/api/embed", dependencies=_AUTH, openapi_extra=_body_doc(EmbedBody), response_model=None)
async def embed(http: HTTPRequest) -> Response:
    clock = Clock(time.perf_counter_ns())
    body = parse_body(await http.body(), EmbedBody)
    model_id = await _model_id(http, body.model)
    texts = [body.input] if isinstance(body.input, str) and body.input else list(body.input or ())
    if not isinstance(body.input, str) and any(not t for t in texts):
        raise InvalidRequestError("'input' strings must not be empty", param="input")
    vectors, num_tokens = await _vectors(http, model_id, keep_alive_seconds(body.keep_alive), texts, clock)
    if body.dimensions:  # Ollama shortens (and normalises again) only below the model's size
        vectors = [_shortened(v, body.dimensions) if body.dimensions < len(v) else v for v in vectors]
    result = {"model": body.model, "embeddings": [_floats(v) for v in vectors],
              **{k: v for k, v in clock.metrics(None, {}).items() if k in ("total_duration", "load_duration")},
              "prompt_eval_count": num_tokens}
    return Response(pydantic_core.to_json(result), media_type="application/json")


@router.post("/api/embeddings", dependencies=_AUTH, openapi_extra=_body_doc(EmbeddingsBody), response_model=None)
async def embeddings(http: HTTPRequest) -> Response:
    """The older single-text endpoint: {"embedding": [...]}; an empty prompt only loads the model."""
    body = parse_body(await http.body(), EmbeddingsBody)
    model_id = await _model_id(http, body.model)
    texts = [body.prompt] if body.prompt else []
    vectors, _ = await _vectors(http, model_id, keep_alive_seconds(body.keep_alive), texts,
                                Clock(time.perf_counter_ns()))
    return Response(pydantic_core.to_json({"embedding": _floats(vectors[0]) if vectors else []}),
                    media_type="application/json")


# -- models ---------------------------------------------------------------------------------------

def _local(registry: Registry[Runtime]) -> list[dict[str, Any]]:
    """The declared models this server runs itself: remote ones ([[models]] with a url) are only
    reached through /v1, so Ollama clients are not offered them."""
    return [info for info in registry.describe() if getattr(registry.entry(info["id"]), "remote", None) is None]


@router.get("/api/tags", dependencies=_AUTH)
@router.head("/api/tags", dependencies=_AUTH, include_in_schema=False)
async def tags(http: HTTPRequest) -> dict[str, Any]:
    """Declared models, then cached catalog / hf: models nobody declared yet (usable by name)."""
    registry = get_registry(http)
    settings: ServerSettings = http.app.state.settings
    declared = [(info["id"], registry.entry(info["id"]), registry.peek(info["id"])) for info in _local(registry)]

    def listing() -> list[dict[str, Any]]:
        out, known = [], set()
        for model_id, entry, handle in declared:
            path = model_file(settings, entry, handle)
            if path is not None:
                known.add(path.resolve())
            out.append(card(model_id, path, handle))
        out += [card(name, path, None) for name, path in undeclared_cached(known)]
        return out

    return {"models": await asyncio.to_thread(listing)}


@router.post("/api/show", dependencies=_AUTH, openapi_extra=_body_doc(ModelBody))
async def show(http: HTTPRequest) -> dict[str, Any]:
    """What a model is: from its file, and from the model itself when it is loaded (GGUF
    metadata as model_info, its chat template, capabilities, the context as num_ctx)."""
    body = parse_body(await http.body(), ModelBody)
    model_id = await _model_id(http, body.model_name)
    registry = get_registry(http)
    entry, handle = registry.entry(model_id), registry.peek(model_id)
    settings: ServerSettings = http.app.state.settings
    path = await asyncio.to_thread(model_file, settings, entry, handle)
    num_ctx = getattr(handle, "n_ctx", None) or entry.config.n_ctx
    parameters = f"num_ctx {num_ctx}"
    template = chat_template(handle)
    if fills_in_middle(handle):  # Continue offers autocomplete only for templates that take a suffix
        template = "{{- if .Suffix }}(fill-in-the-middle: the model's FIM tokens around {{ .Prompt }} and " \
                   "{{ .Suffix }}){{- else }}" + template + "{{- end }}"
    stat = await asyncio.to_thread(lambda: path.stat() if path is not None and path.exists() else None)
    return {
        "modelfile": f"# Modelfile of botframework's model {model_id}\nFROM {entry.source}\nPARAMETER {parameters}\n",
        "parameters": parameters, "template": template, "details": details(handle, path),
        "model_info": await asyncio.to_thread(model_info, handle),
        "capabilities": await asyncio.to_thread(capabilities, handle, entry.kind),
        "modified_at": timestamp(stat.st_mtime if stat else None),
    }


@router.get("/api/ps", dependencies=_AUTH)
async def ps(http: HTTPRequest) -> dict[str, Any]:
    """The models loaded now, longest to live first."""
    registry = get_registry(http)
    settings: ServerSettings = http.app.state.settings
    models = []
    for info in _local(registry):
        handle = registry.peek(info["id"])
        if handle is None:
            continue
        path = model_file(settings, registry.entry(info["id"]), handle)
        name = display_name(info["id"])
        models.append({"name": name, "model": name, "size": info["memory_bytes"], "digest": digest(info["id"], path),
                       "details": details(handle, path), "expires_at": expires_at(info),
                       "size_vram": _offloaded_bytes(info, handle),
                       "context_length": getattr(handle, "n_ctx", 0)})
    models.sort(key=lambda m: m["expires_at"], reverse=True)
    return {"models": models}


def _offloaded_bytes(info: dict[str, Any], handle: Any) -> int:
    """Ollama's size_vram: the share of the model's memory on GPUs / RPC servers, by layers
    (registry.describe's placement; 0 with every layer on the CPU)."""
    layers = (info.get("placement") or {}).get("n_gpu_layers", 0)
    if layers == 0:
        return 0
    total = getattr(getattr(getattr(handle, "worker", None), "model", None), "num_layers", 0) + 1
    share = 1.0 if layers < 0 or layers >= total else layers / total
    return int(info["memory_bytes"] * share)


# -- pull ---------------------------------------------------------------------------------------------

def _pull_spec(name: str) -> str:
    for candidate in name_candidates(require_model(name)):
        if candidate in CATALOG or candidate.startswith(HF_PREFIX):
            return candidate
    raise ModelNotFoundError(f'pull model manifest: "{name}" is not a model this server can pull: a catalog '
                             f'name ({", ".join(sorted(CATALOG))}) or hf:owner/repo[/file.gguf]')


def _cached(spec: str) -> Path | None:
    try:
        return pulling.resolve_model(spec, pull_missing=False)
    except BotframeworkError:
        return None


async def _pull_statuses(http: HTTPRequest, spec: str) -> AsyncIterator[dict[str, Any]]:
    """Ollama's pull statuses for our pull: the model is fetched (pip / Hugging Face) unless it is
    cached and verified, then declared, so that chat and /api/tags know it at once."""
    settings: ServerSettings = http.app.state.settings
    yield {"status": "pulling manifest"}
    entry = CATALOG.get(spec)
    layer = {"digest": f"sha256:{entry.sha256}", "total": entry.size_bytes} if entry is not None else {}
    path = await asyncio.to_thread(_cached, spec)
    if path is None:
        if not settings.pull_missing:
            raise APIError(403, f"{spec} is not in the cache and this server does not download models "
                                "(pull_missing is off)", type="permission_error", code="pull_disabled")
        # pip / huggingface_hub report no progress we could relay: a status line every second
        # (the fetch goes on if the client leaves; a later pull finds the file)
        task = asyncio.ensure_future(asyncio.to_thread(pulling.pull, spec))
        while not task.done():
            await asyncio.wait({task}, timeout=PULL_HEARTBEAT_S)
            if not task.done():
                yield {"status": f"pulling {spec}", **layer}
        path = task.result()
    total = layer.get("total") or (await asyncio.to_thread(path.stat)).st_size
    yield {"status": f"pulling {spec}", **layer, "total": total, "completed": total}
    yield {"status": "verifying sha256 digest"}
    yield {"status": "writing manifest"}
    await _model_id(http, spec)  # declared (if it was not), usable by name
    yield {"status": "success"}


async def _pull_lines(statuses: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    async for status in statuses:
        yield line(status)


@router.post("/api/pull", dependencies=_AUTH, openapi_extra=_body_doc(ModelBody), response_model=None)
async def pull(http: HTTPRequest) -> Response:
    body = parse_body(await http.body(), ModelBody)
    statuses = _pull_statuses(http, _pull_spec(body.model_name))
    if body.stream:
        return ndjson_response(_pull_lines(statuses))
    last: dict[str, Any] = {}
    async for status in statuses:
        last = status
    return json_response(last)


# -- probes -------------------------------------------------------------------------------------------

@router.get("/api/version")
@router.head("/api/version", include_in_schema=False)
async def version() -> dict[str, str]:
    from botframework import __version__

    return {"version": OLLAMA_VERSION, "botframework": __version__}


@router.get("/", response_class=PlainTextResponse)
@router.head("/", response_class=PlainTextResponse, include_in_schema=False)
async def root() -> str:
    return "Ollama is running"
