"""LocalLLM: the in-process API. Same engine and scheduler as the server, no HTTP.

    LocalLLM("smollm2-135m-instruct")
      -> resolve_model (pull on first use) -> ModelWorker (engine thread)
      chat(messages, schema= | tools= | grammar=) -> chat.plan_chat: chat template (llama.cpp
         Jinja, sandboxed) -> tokens + grammar + output parser -> Request(SamplerSpec.grammar)
         -> RequestHandle deltas -> ChatResult(text, finish_reason, usage, message, tool_calls)
         schema=...: the validated object itself (a pydantic instance for a model class)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any, Iterator, Sequence

from botframework.chat.message import AssistantMessage, MessageDelta, ToolCall
from botframework.chat.plan import (
    ChatOptions,
    ChatPlan,
    check_message,
    finish_message,
    plan_chat,
)
from botframework.chat.render import OverflowPolicy
from botframework.chat.stream import MessageStreamer
from botframework.chat.structured import StructuredOutput, structured_output
from botframework.chat.tools import parse_tool_choice, parse_tools
from botframework.specs import SamplingParams
from botframework.errors import (
    BotframeworkError,
    InvalidRequestError,
    OutputValidationError,
)
from botframework.specs import GrammarSpec, SamplerSpec
from botframework.native.shim import ChatTemplates
from botframework.runtime.catalog import DEFAULT_MODEL
from botframework.runtime.pull import resolve_model
from botframework.runtime.worker import ModelWorker, WorkerConfig
from botframework.scheduler.output import Delta, Usage
from botframework.scheduler.sequence import Priority, Request

Messages = str | Sequence[dict[str, Any]]


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


class LocalLLM:
    """A local model you can chat with, complete text with, and embed text with.

    `model` is a catalog name (pulled on first use), a path to a .gguf file, or
    `hf:owner/repo/file.gguf`. Thread-safe: many threads may call it at once; their requests
    are batched together on the model's engine thread.
    """

    def __init__(self, model: str | os.PathLike[str] = DEFAULT_MODEL, *, n_ctx: int = 8192,
                 num_slots: int = 4, n_threads: int | None = None, n_threads_batch: int | None = None,
                 n_gpu_layers: int = 0, pull: bool = True, chat_template: str | None = None,
                 flash_attn: str = "auto", hugepages: bool = True) -> None:
        path = resolve_model(str(model), pull_missing=pull, progress=pull)
        self.worker = ModelWorker(path, WorkerConfig(
            n_ctx=n_ctx, num_slots=num_slots, n_threads=n_threads, n_threads_batch=n_threads_batch,
            n_gpu_layers=n_gpu_layers, flash_attn=flash_attn, hugepages=hugepages))
        try:
            self.templates = ChatTemplates(self.worker.model, chat_template)
        except BaseException:
            self.worker.close()
            raise
        self.model_path = path

    # -- lifetime ---------------------------------------------------------------------------
    def close(self) -> None:
        self.templates.close()
        self.worker.close()

    def __enter__(self) -> LocalLLM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- chat -------------------------------------------------------------------------------
    def render_chat(self, messages: Messages, *, system: str | None = None) -> dict[str, Any]:
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        msgs = list(messages)
        if system is not None:
            msgs.insert(0, {"role": "system", "content": system})
        if not msgs:
            raise InvalidRequestError("messages must not be empty", param="messages")
        return self.templates.apply({"messages": msgs, "add_generation_prompt": True})

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
        result = _collect(self._stream_plan(plan, options))
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
            close = getattr(deltas, "close", None)
            if close is not None:
                close()  # a consumer that stops early cancels the request
        last, message = streamer.finish()
        check_message(plan, message, finish_reason)
        yield from last

    def stream_chat_deltas(self, messages: Messages, *, system: str | None = None,
                           overflow: str = "error", **options: Any) -> Iterator[Delta]:
        """Stream the engine's raw deltas; overflow="truncate" drops the oldest turns when the chat is too long."""
        plan = self._plan_chat(messages, system, overflow, options)
        return self._stream_plan(plan, options)

    def _plan_chat(self, messages: Messages, system: str | None, overflow: str, options: dict[str, Any], *,
                   schema: Any = None, response_format: Any = None, grammar: str | None = None,
                   tools: Sequence[Any] | None = None, tool_choice: Any = None,
                   parallel_tool_calls: bool = False) -> ChatPlan:
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        msgs = list(messages)
        if system is not None:
            msgs.insert(0, {"role": "system", "content": system})
        try:
            policy = OverflowPolicy(overflow)
        except ValueError:
            raise InvalidRequestError("overflow must be 'error' or 'truncate'", param="overflow") from None
        if schema is not None and response_format is not None:
            raise InvalidRequestError("give schema or response_format, not both", param="schema")
        if response_format is not None:
            structured = structured_output(response_format)
        elif schema is None or isinstance(schema, (type, StructuredOutput)):
            structured = structured_output(schema)  # a pydantic class (or None)
        else:
            structured = structured_output({"type": "json_schema", "json_schema": {"schema": schema}})
        parsed_tools = parse_tools(tools)
        chat_options = ChatOptions(structured=structured, grammar=grammar, tools=parsed_tools,
                                   tool_choice=parse_tool_choice(tool_choice, parsed_tools),
                                   parallel_tool_calls=parallel_tool_calls)
        return plan_chat(self.templates, self.worker.model, msgs, chat_options, n_ctx=self.worker.n_ctx,
                         max_tokens=int(options.get("max_tokens", 256)), overflow=policy)

    def _stream_plan(self, plan: ChatPlan, options: dict[str, Any]) -> Iterator[Delta]:
        return self._stream(plan.tokens, extra_stops=plan.rendered.additional_stops, grammar=plan.grammar,
                            truncated_tokens=plan.rendered.truncated_tokens, **options)

    # -- completion -------------------------------------------------------------------------
    def complete(self, prompt: str, **options: Any) -> CompletionResult:
        return _collect(self.stream_complete_deltas(prompt, **options))

    def stream_complete(self, prompt: str, **options: Any) -> Iterator[str]:
        for delta in self.stream_complete_deltas(prompt, **options):
            if delta.text:
                yield delta.text

    def stream_complete_deltas(self, prompt: str, **options: Any) -> Iterator[Delta]:
        if not prompt:
            raise InvalidRequestError("prompt must not be empty", param="prompt")
        return self._stream(self.worker.model.tokenize(prompt, add_special=True), **options)

    # -- embeddings -------------------------------------------------------------------------
    def embed(self, texts: str | Sequence[str]) -> list[list[float]]:
        """L2-normalised mean-pooled embeddings, one per input text."""
        items = [texts] if isinstance(texts, str) else list(texts)
        if not items:
            raise InvalidRequestError("input must not be empty", param="input")
        return [v.tolist() for v in self.worker.embed(items)]

    def tokenize(self, text: str) -> list[int]:
        return self.worker.model.tokenize(text, add_special=False)

    # -- shared -----------------------------------------------------------------------------
    def _stream(self, tokens: list[int], *, max_tokens: int = 256, temperature: float = 0.7,
                top_p: float = 0.95, top_k: int = 40, min_p: float = 0.05, repeat_penalty: float = 1.0,
                presence_penalty: float = 0.0, frequency_penalty: float = 0.0, seed: int | None = None,
                stop: str | Sequence[str] | None = None, extra_stops: tuple[str, ...] = (),
                ignore_eos: bool = False, logprobs: int | None = None, session_id: str | None = None,
                priority: Priority = Priority.INTERACTIVE, truncated_tokens: int = 0,
                context_shift: bool = False, num_keep: int = 0,
                logit_bias: dict[int, float] | None = None, grammar: GrammarSpec | None = None) -> Iterator[Delta]:
        if not tokens:
            raise InvalidRequestError("the prompt is empty", param="prompt")
        stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
        try:
            params = SamplingParams(
                max_tokens=max_tokens, stop=stops + extra_stops, ignore_eos=ignore_eos, num_logprobs=logprobs,
                sampler=SamplerSpec(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                                    repeat_penalty=repeat_penalty, presence_penalty=presence_penalty,
                                    frequency_penalty=frequency_penalty, seed=seed,
                                    logit_bias=dict(logit_bias or {}), grammar=grammar))
        except ValueError as exc:
            raise InvalidRequestError(str(exc)) from exc
        request = Request(self.worker.new_request_id(), tuple(tokens), params, session_id=session_id,
                          priority=priority, truncated_tokens=truncated_tokens, context_shift=context_shift,
                          num_keep=num_keep)
        handle = self.worker.submit(request)
        return _raise_errors(iter(handle), handle)


class DeltaStream(Iterator[Delta]):
    """A request's deltas; errors are raised. close() (or dropping it unfinished) cancels the
    request even before the first delta was read, which a plain generator cannot do."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle
        self._deltas = iter(handle)

    def __next__(self) -> Delta:
        delta = next(self._deltas)
        if delta.error is not None:
            self._handle.cancel()
            raise delta.error
        return delta

    def close(self) -> None:
        self._handle.cancel()

    def __del__(self) -> None:
        self._handle.cancel()


def _raise_errors(deltas: Iterator[Delta], handle: Any) -> Iterator[Delta]:
    return DeltaStream(handle)


def _collect(deltas: Iterator[Delta]) -> GenerationResult:
    parts: list[str] = []
    token_ids: list[int] = []
    logprobs: list[tuple[int, float, tuple[tuple[int, float], ...]]] = []
    last: Delta | None = None
    for delta in deltas:
        parts.append(delta.text)
        token_ids.extend(delta.token_ids)
        logprobs.extend(delta.logprobs)
        last = delta
    if last is None or last.usage is None or last.finish_reason is None:
        raise BotframeworkError("the request ended without a result")
    return GenerationResult(text="".join(parts), finish_reason=last.finish_reason.value, usage=last.usage,
                            token_ids=tuple(token_ids), timings=dict(last.timings), logprobs=tuple(logprobs))
