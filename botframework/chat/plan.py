"""One chat request -> prompt tokens, a grammar and an output parser; and its result, checked.

    ChatOptions(structured | grammar | tools + tool_choice, parallel_tool_calls)
      --plan_chat--> ChatPlan(rendered prompt, GrammarSpec, OutputParser, structured)
         structured: the template's json_schema grammar (begins with the generation prompt:
                     prefilled into the grammar), after check_schema (fail closed)
         tools:      native template -> its grammar (lazy for auto) and common_chat_parse;
                     no tool support -> chat.tools' generic format
         grammar:    the caller's GBNF as is
      (the worker builds the request's sampler on submit: a bad grammar is a GrammarError, 400)
    finished text --finish_message--> AssistantMessage (structured output validated when it
    ended with "stop": OutputValidationError otherwise, never returned as valid)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from botframework.chat.message import AssistantMessage
from botframework.chat.parse import OutputMode, OutputParser
from botframework.chat.render import OverflowPolicy, RenderedChat, render_chat
from botframework.chat.schema import calendar_dates
from botframework.chat.structured import StructuredOutput
from botframework.chat.tools import (
    Tool,
    ToolChoice,
    ToolChoiceMode,
    generic_grammar,
    generic_messages,
    offered_tools,
)
from botframework.errors import InvalidRequestError
from botframework.specs import GrammarSpec

if TYPE_CHECKING:
    from botframework.native.model import Model
    from botframework.native.shim import ChatTemplates

REASONING_FORMAT = "auto"  # split <think> (and each family's equivalent) into reasoning_content


@dataclass(frozen=True)
class ChatOptions:
    structured: StructuredOutput | None = None
    grammar: str | None = None            # raw GBNF, for experts
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice = field(default_factory=lambda: ToolChoice(ToolChoiceMode.NONE))
    parallel_tool_calls: bool = False
    enable_thinking: bool = True          # False: a reasoning template is asked not to think

    def __post_init__(self) -> None:
        constraints = [name for name, on in (("response_format", self.structured is not None),
                                             ("grammar", self.grammar is not None),
                                             ("tools", self.tool_choice.calls_tools and bool(self.tools))) if on]
        if len(constraints) > 1:
            raise InvalidRequestError(f"{' and '.join(constraints)} cannot be combined in one request",
                                      param=constraints[-1])
        if self.grammar is not None and not self.grammar.strip():
            raise InvalidRequestError("grammar must not be empty", param="grammar")

    @property
    def constrained(self) -> bool:
        return self.structured is not None or self.grammar is not None or (
            self.tool_choice.calls_tools and bool(self.tools))


@dataclass(frozen=True)
class ChatPlan:
    rendered: RenderedChat
    grammar: GrammarSpec | None
    parser: OutputParser
    structured: StructuredOutput | None = None

    @property
    def tokens(self) -> list[int]:
        return self.rendered.tokens


def plan_chat(templates: ChatTemplates, model: Model, messages: Sequence[Mapping[str, Any]],
              options: ChatOptions = ChatOptions(), *, n_ctx: int, max_tokens: int,
              overflow: OverflowPolicy = OverflowPolicy.ERROR) -> ChatPlan:
    inputs: dict[str, Any] = {"reasoning_format": REASONING_FORMAT, "enable_thinking": options.enable_thinking}
    msgs = [dict(m) for m in messages]
    grammar: GrammarSpec | None = None
    tools = offered_tools(options.tools, options.tool_choice)
    generic = bool(tools) and not templates.supports_tools
    if options.structured is not None:
        inputs["json_schema"] = dict(options.structured.schema)
        mode = OutputMode.STRUCTURED
    elif options.grammar is not None:
        mode = OutputMode.GRAMMAR
        grammar = GrammarSpec(options.grammar)
    elif tools and not generic:
        inputs.update(tools=[t.to_openai() for t in tools], parallel_tool_calls=options.parallel_tool_calls,
                      tool_choice="auto" if options.tool_choice.mode is ToolChoiceMode.AUTO else "required")
        mode = OutputMode.TOOLS_NATIVE
    elif tools:
        msgs = generic_messages(msgs, tools, options.tool_choice, options.parallel_tool_calls)
        grammar = generic_grammar(tools, options.tool_choice, options.parallel_tool_calls)
        mode = OutputMode.TOOLS_GENERIC
    else:
        if options.tools and templates.supports_tools:  # tool_choice "none": the template still sees them
            inputs.update(tools=[t.to_openai() for t in options.tools], tool_choice="none")
        elif options.tools:
            msgs = generic_messages(msgs, (), options.tool_choice, False)
        mode = OutputMode.TOOLS_NATIVE if options.tools and templates.supports_tools else OutputMode.TEXT
    rendered = render_chat(templates, model, msgs, n_ctx=n_ctx, max_tokens=max_tokens, overflow=overflow,
                           extra_inputs=inputs)
    params = rendered.params
    if mode is OutputMode.TOOLS_NATIVE and options.tool_choice.forced and not params.get("grammar"):
        # the template renders tools but llama.cpp found no call format to force: use ours
        msgs = generic_messages([dict(m) for m in messages], tools, options.tool_choice,
                                options.parallel_tool_calls)
        rendered = render_chat(templates, model, msgs, n_ctx=n_ctx, max_tokens=max_tokens, overflow=overflow,
                               extra_inputs={"reasoning_format": REASONING_FORMAT,
                                             "enable_thinking": options.enable_thinking})
        params = rendered.params
        grammar = generic_grammar(tools, options.tool_choice, options.parallel_tool_calls)
        mode = OutputMode.TOOLS_GENERIC
    if mode in (OutputMode.STRUCTURED, OutputMode.TOOLS_NATIVE) and params.get("grammar"):
        grammar = _template_grammar(model, params)
    if mode is OutputMode.STRUCTURED and grammar is None:
        raise InvalidRequestError("the chat template produced no grammar for the JSON schema", param="response_format")
    parser = OutputParser(mode, params, tools=tools if mode in (OutputMode.TOOLS_NATIVE, OutputMode.TOOLS_GENERIC)
                          else (), choice=options.tool_choice)
    return ChatPlan(rendered, grammar, parser, options.structured)


def _template_grammar(model: Model, params: Mapping[str, Any]) -> GrammarSpec:
    lazy = bool(params.get("grammar_lazy"))
    patterns: list[str] = []
    tokens: list[int] = []
    for trigger in params.get("grammar_triggers") or ():
        kind, value = int(trigger.get("type", 0)), str(trigger.get("value", ""))
        if kind == 0:    # TOKEN
            tokens.append(int(trigger.get("token", -1)))
        elif kind == 1:  # WORD: a literal
            patterns.append(_regex_escape(value))
        elif kind == 2:  # PATTERN: found anywhere
            patterns.append(value)
        elif kind == 3:  # PATTERN_FULL: must match the whole text so far
            patterns.append(("" if value.startswith("^") else "^") + value + ("" if value.endswith("$") else "$"))
    tokens = [t for t in tokens if 0 <= t < model.n_vocab]
    return GrammarSpec(calendar_dates(str(params["grammar"])), lazy=lazy, trigger_patterns=tuple(patterns),
                       trigger_tokens=tuple(tokens), prefill="" if lazy else str(params.get("generation_prompt", "")))


def _regex_escape(text: str) -> str:
    """common's regex_escape: escape ECMAScript metacharacters."""
    return "".join("\\" + c if c in r"\^$.|?*+()[]{}" else c for c in text)


def finish_message(plan: ChatPlan, text: str, finish_reason: str) -> AssistantMessage:
    """Parse the whole output; structured output that ended with "stop" must validate."""
    return check_message(plan, plan.parser.parse(text).with_ids(), finish_reason)


def check_message(plan: ChatPlan, message: AssistantMessage, finish_reason: str) -> AssistantMessage:
    if plan.structured is None or finish_reason != "stop":
        return message
    parsed = plan.structured.parse(message.content or "")
    return AssistantMessage(content=message.content, reasoning_content=message.reasoning_content,
                            tool_calls=message.tool_calls, parsed=parsed)
