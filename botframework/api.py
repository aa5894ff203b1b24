"""LocalLLM: the in-process API. Same model handle, request builder and stream as the server, no HTTP.

    LocalLLM("smollm2-135m-instruct")
      -> runtime.handle.load_model (pull on first use) -> ModelHandle (engine thread + templates)
      chat(messages, schema= | tools= | grammar=) -> chat.plan_chat: chat template (llama.cpp
         Jinja, sandboxed) -> tokens + grammar + output parser
      keyword options -> GenerationOptions --runtime.requests.build_request--> Request
         -> runtime.stream.DeltaStream -> collect -> ChatResult(text, finish_reason, usage,
         message, tool_calls); schema=...: the validated object itself (a pydantic instance
         for a model class)
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from botframework.chat.message import AssistantMessage, MessageDelta, ToolCall
from botframework.chat.plan import ChatOptions, ChatPlan, check_message, finish_message
from botframework.chat.stream import MessageStreamer
from botframework.chat.structured import StructuredOutput, structured_output
from botframework.chat.tools import parse_tool_choice, parse_tools
from botframework.config import WorkerConfig
from botframework.errors import InvalidRequestError, OutputValidationError
from botframework.runtime.catalog import DEFAULT_MODEL
from botframework.runtime.handle import ModelHandle, load_model, overflow_policy
from botframework.runtime.requests import (
    GenerationOptions,
    RequestLimits,
    build_request,
)
from botframework.runtime.stream import DeltaStream, collect
from botframework.scheduler.output import Usage
from botframework.session import Session
from botframework.specs import GrammarSpec

if TYPE_CHECKING:
    from botframework.native.shim import ChatTemplates
    from botframework.runtime.worker import ModelWorker

Messages = str | Sequence[dict[str, Any]]

LIMITS = RequestLimits()  # in-process: no caps but the model's; max_tokens defaults to DEFAULT_MAX_TOKENS
PARAM_NAMES = {"num_logprobs": "logprobs"}  # LocalLLM's keyword for a GenerationOptions field


@dataclass(frozen=True)
class GenerationResult:
    text: str
    finish_reason: str
    usage: Usage
    token_ids: tuple[int, ...] = ()
    timings: dict[str, float] = field(default_factory=dict)
    # per generated token, when asked with logprobs=k: (token, logprob, ((alt, logprob), ...k))
    logprobs: tuple[tuple[int, float, tuple[tuple[int, float], ...]], ...] = ()
    # chat only: the parsed assistant message (text is its content)
    message: AssistantMessage | None = None
    id: str = ""  # the request's id: what cancel() takes while it runs

    @property
    def tool_calls(self) -> tuple[ToolCall, ...]:
        return self.message.tool_calls if self.message is not None else ()

    @property
    def reasoning_content(self) -> str | None:
        return self.message.reasoning_content if self.message is not None else None

    def __str__(self) -> str:
        return self.text


ChatResult = GenerationResult
CompletionResult = GenerationResult


def generation_options(*, logprobs: int | None = None, **options: Any) -> GenerationOptions:
    """LocalLLM's keyword options: GenerationOptions' fields, `logprobs` for its num_logprobs.
    An unknown keyword is a TypeError, as for any Python call."""
    if logprobs is not None:
        options["num_logprobs"] = logprobs
    return GenerationOptions(**options)


class LocalLLM:
    """A local model you can chat with, complete text with, and embed text with.

    `model` is a catalog name (pulled on first use), a path to a .gguf file, or
    `hf:owner/repo/file.gguf`. Thread-safe: many threads may call it at once; their requests
    are batched together on the model's engine thread.

    Generation options (keywords of chat, complete and their stream_ forms): max_tokens,
    temperature, top_p, top_k, min_p, repeat_penalty, presence_penalty, frequency_penalty,
    seed, stop, logprobs, logit_bias, ignore_eos, session_id, priority, context_shift,
    num_keep, logits_processors. One left out takes its default from
    botframework.specs.SAMPLING_DEFAULTS (the server's too); max_tokens' is
    specs.DEFAULT_MAX_TOKENS. `logits_processors` is a list of callables
    `(logits, histories) -> None` that change the request's logits in place before each token
    is sampled, batched with every other request naming the same object (botframework.processors
    has built-ins; docs/low-level.md explains the contract and its costs). `speculative`
    (True/False) turns drafting on or off for one request.

    Speculative decoding for requests that do not say: `draft` "ngram" (prompt lookup),
    "model" (the greedy tokens of `draft_model`, a smaller model with the same vocabulary:
    catalog name or .gguf path, loaded beside this one) or "none"; `draft_max` draft tokens per
    step at most; `draft_by_cost` False drafts that many even where the measured step costs
    say it does not pay. Greedy output is the same with drafts as without.
    """

    def __init__(self, model: str | os.PathLike[str] = DEFAULT_MODEL, *, n_ctx: int = 8192,
                 num_slots: int | None = None, n_threads: int | None = None,
                 n_threads_batch: int | None = None,
                 n_gpu_layers: int | str = "auto", pull: bool = True, chat_template: str | None = None,
                 flash_attn: str = "auto", hugepages: bool = True, repack: bool = True,
                 rpc_servers: Sequence[str] = (),
                 draft: str = "none", draft_model: str | os.PathLike[str] | None = None, draft_max: int = 8,
                 draft_by_cost: bool = True) -> None:
        config = WorkerConfig(n_ctx=n_ctx, num_slots=num_slots, n_threads=n_threads,
                              n_threads_batch=n_threads_batch, n_gpu_layers=n_gpu_layers, flash_attn=flash_attn,
                              hugepages=hugepages, repack=repack, rpc_servers=tuple(rpc_servers), speculative=draft,
                              draft_model=str(draft_model) if draft_model is not None else None, draft_max=draft_max,
                              draft_by_cost=draft_by_cost)
        self.handle = load_model(str(model), config, pull_missing=pull, progress=pull, chat_template=chat_template)

    @classmethod
    def from_handle(cls, handle: ModelHandle) -> LocalLLM:
        """A LocalLLM over a model that is already loaded (closing it closes the handle)."""
        llm = cls.__new__(cls)
        llm.handle = handle
        return llm

    @property
    def worker(self) -> ModelWorker:
        """The model's ModelWorker (its engine thread, scheduler and native model)."""
        return self.handle.worker

    @property
    def templates(self) -> ChatTemplates:
        return self.handle.templates

    @property
    def model_path(self) -> Path | None:
        return self.handle.path

    # -- lifetime ---------------------------------------------------------------------------
    def close(self) -> None:
        self.handle.close()

    def __enter__(self) -> LocalLLM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- chat -------------------------------------------------------------------------------
    def render_chat(self, messages: Messages, *, system: str | None = None) -> dict[str, Any]:
        return self.handle.render_prompt(_messages(messages, system))

    def chat(self, messages: Messages, *, system: str | None = None, schema: Any = None,
             response_format: Any = None, grammar: str | None = None, tools: Sequence[Any] | None = None,
             tool_choice: Any = None, parallel_tool_calls: bool = False, overflow: str = "error",
             **options: Any) -> Any:
        """Answer a message (a string) or an OpenAI-style message list.

        Returns a ChatResult (`.text`, `.tool_calls`, `.reasoning_content`, `.usage`). With
        `schema` (a JSON schema dict or a pydantic model class) or a JSON `response_format`,
        returns the validated object itself (an instance of the model class for a class);
        OutputValidationError if the answer was cut off or does not validate. `tools` (OpenAI
        tool definitions) with `tool_choice` ("auto", "required", "none" or
        {"type": "function", "function": {"name": ...}}) fill `.tool_calls`; `grammar` is raw GBNF.
        """
        plan = self._plan_chat(messages, system, overflow, options, schema=schema, response_format=response_format,
                               grammar=grammar, tools=tools, tool_choice=tool_choice,
                               parallel_tool_calls=parallel_tool_calls)
        result = _collect(self._stream_plan(plan, options, stream=False))
        message = finish_message(plan, result.text, result.finish_reason)
        if plan.structured is not None:
            if result.finish_reason != "stop":
                raise OutputValidationError(f"the answer was cut off ({result.finish_reason}) before the JSON was "
                                            "complete: raise max_tokens", output=result.text)
            return message.parsed
        return replace(result, text=message.content or "", message=message)

    def stream_chat(self, messages: Messages, *, system: str | None = None, **options: Any) -> Iterator[str]:
        """Yield the answer's text (its content) as it is generated."""
        for delta in self.stream_chat_message(messages, system=system, **options):
            if delta.content:
                yield delta.content

    def stream_chat_message(self, messages: Messages, *, system: str | None = None, schema: Any = None,
                            response_format: Any = None, grammar: str | None = None,
                            tools: Sequence[Any] | None = None, tool_choice: Any = None,
                            parallel_tool_calls: bool = False, overflow: str = "error",
                            **options: Any) -> Iterator[MessageDelta]:
        """Yield content, reasoning_content and tool-call pieces as OpenAI streams them; the
        last piece has been checked (structured output validated when it finished)."""
        plan = self._plan_chat(messages, system, overflow, options, schema=schema, response_format=response_format,
                               grammar=grammar, tools=tools, tool_choice=tool_choice,
                               parallel_tool_calls=parallel_tool_calls)
        streamer = MessageStreamer(plan.parser)
        finish_reason = "stop"
        deltas = self._stream_plan(plan, options)
        try:
            for delta in deltas:
                yield from streamer.feed(delta.text)
                if delta.finish_reason is not None:
                    finish_reason = delta.finish_reason.value
        finally:
            deltas.close()  # a consumer that stops early cancels the request
        last, message = streamer.finish()
        check_message(plan, message, finish_reason)
        yield from last

    def stream_chat_deltas(self, messages: Messages, *, system: str | None = None,
                           overflow: str = "error", **options: Any) -> DeltaStream:
        """Stream the engine's raw deltas; overflow="truncate" drops the oldest turns when the chat is too long."""
        plan = self._plan_chat(messages, system, overflow, options)
        return self._stream_plan(plan, options)

    def _plan_chat(self, messages: Messages, system: str | None, overflow: str, options: dict[str, Any], *,
                   schema: Any = None, response_format: Any = None, grammar: str | None = None,
                   tools: Sequence[Any] | None = None, tool_choice: Any = None,
                   parallel_tool_calls: bool = False) -> ChatPlan:
        policy = overflow_policy(overflow)
        if schema is not None and response_format is not None:
            raise InvalidRequestError("give schema or response_format, not both", param="schema")
        if response_format is not None:
            structured = structured_output(response_format)
        elif schema is None or isinstance(schema, (type, StructuredOutput)):
            structured = structured_output(schema)  # a pydantic class (or None)
        else:
            structured = structured_output({"type": "json_schema", "json_schema": {"schema": schema}})
        parsed_tools = parse_tools(tools)
        constraints = ChatOptions(structured=structured, grammar=grammar, tools=parsed_tools,
                                  tool_choice=parse_tool_choice(tool_choice, parsed_tools),
                                  parallel_tool_calls=parallel_tool_calls)
        return self.handle.plan_chat(_messages(messages, system), constraints,
                                     max_tokens=generation_options(**options).planned_max_tokens, overflow=policy)

    def _stream_plan(self, plan: ChatPlan, options: dict[str, Any], *, stream: bool = True) -> DeltaStream:
        return self._stream(plan.tokens, generation_options(**options), extra_stops=plan.rendered.additional_stops,
                            grammar=plan.grammar, truncated_tokens=plan.rendered.truncated_tokens, stream=stream)

    # -- completion -------------------------------------------------------------------------
    def complete(self, prompt: str, **options: Any) -> CompletionResult:
        return _collect(self._complete_deltas(prompt, options, stream=False))

    def stream_complete(self, prompt: str, **options: Any) -> Iterator[str]:
        deltas = self.stream_complete_deltas(prompt, **options)
        try:
            for delta in deltas:
                if delta.text:
                    yield delta.text
        finally:
            deltas.close()  # a consumer that stops early cancels the request

    def stream_complete_deltas(self, prompt: str, **options: Any) -> DeltaStream:
        return self._complete_deltas(prompt, options, stream=True)

    def _complete_deltas(self, prompt: str, options: dict[str, Any], *, stream: bool) -> DeltaStream:
        if not prompt:
            raise InvalidRequestError("prompt must not be empty", param="prompt")
        return self._stream(self.handle.tokenize(prompt, add_special=True), generation_options(**options),
                            stream=stream)

    # -- embeddings -------------------------------------------------------------------------
    def embed(self, texts: str | Sequence[str]) -> list[list[float]]:
        """L2-normalised mean-pooled embeddings, one per input text."""
        items = [texts] if isinstance(texts, str) else list(texts)
        if not items:
            raise InvalidRequestError("input must not be empty", param="input")
        return [v.tolist() for v in self.handle.embed(items)]

    def tokenize(self, text: str) -> list[int]:
        return self.handle.tokenize(text, add_special=False)

    # -- sessions, cancellation, models (as botframework.client.Client has them) -------------
    def session(self, session_id: str | None = None, *, system: str | None = None, **defaults: Any) -> Session:
        """A conversation whose turns reuse the model's KV state: each turn prefills only its
        new tokens (botframework.session)."""
        return Session(self, session_id, system=system, **defaults)

    def drop_session(self, session_id: str) -> bool:
        """Free a session's KV state; False if it had none."""
        return self.handle.drop_session(session_id)

    def cancel(self, request_or_session_id: str) -> int:
        """Stop a running or queued request (a result's or stream's `id`) or a session's
        requests, from any thread; the number stopped."""
        return self.handle.cancel(request_or_session_id)

    def models(self) -> list[dict[str, Any]]:
        """This model's card, in the shape Client.models() returns."""
        handle = self.handle
        return [{"id": handle.model_id, "object": "model", "owned_by": "botframework",
                 "meta": {"state": "loaded", "n_ctx": handle.n_ctx, "n_vocab": handle.n_vocab, "kind": handle.kind,
                          "num_slots": handle.worker.num_slots, "memory_bytes": handle.memory_bytes()}}]

    # -- shared -----------------------------------------------------------------------------
    def _stream(self, tokens: list[int], options: GenerationOptions, *, extra_stops: tuple[str, ...] = (),
                grammar: GrammarSpec | None = None, truncated_tokens: int = 0, stream: bool = True) -> DeltaStream:
        """Submit; `stream` False when the caller collects the whole answer (Request.stream)."""
        handle = self.handle
        request = build_request(options, tokens, request_id=handle.new_request_id(), n_ctx=handle.n_ctx,
                                n_vocab=handle.n_vocab, limits=LIMITS, extra_stops=extra_stops, grammar=grammar,
                                truncated_tokens=truncated_tokens, param_names=PARAM_NAMES, stream=stream)
        return DeltaStream(handle.submit(request))


def _messages(messages: Messages, system: str | None) -> list[dict[str, Any]]:
    msgs = [{"role": "user", "content": messages}] if isinstance(messages, str) else list(messages)
    if system is not None:
        msgs.insert(0, {"role": "system", "content": system})
    return msgs


def _collect(deltas: DeltaStream) -> GenerationResult:
    """A whole result from a stream (runtime.stream.collect, the server's accumulator too)."""
    done = collect(deltas)
    finish_reason, usage = done.final()
    return GenerationResult(text=done.text, finish_reason=finish_reason.value, usage=usage,
                            token_ids=tuple(done.token_ids), timings=done.timings, logprobs=tuple(done.logprobs),
                            id=deltas.handle.request_id)
