"""Model text -> AssistantMessage, for every way a chat can be constrained.

    TEXT           content (+ reasoning_content split by common_chat_parse for thinking models)
    STRUCTURED     common_chat_parse: the JSON (fences and thinking stripped) is the content
    GRAMMAR        a raw GBNF grammar: the text as generated
    TOOLS_NATIVE   common_chat_parse with the template's tool-call parser; if it finds no call,
                   a bare or fenced JSON object naming a tool still counts (small models)
    TOOLS_GENERIC  our JSON format (chat.tools) for templates that know no tools

Never an error for model output: output common_chat_parse cannot read becomes content.
A finished tool call whose arguments do not validate against the tool's schema is not
returned as a call (the text is returned as content instead).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from botframework.chat.jsoncalls import find_calls, scan_calls
from botframework.chat.message import AssistantMessage, ToolCall
from botframework.chat.schema import SchemaValidator
from botframework.chat.tools import Tool, ToolChoice, ToolChoiceMode
from botframework.errors import InvalidRequestError

if TYPE_CHECKING:
    from botframework.native.shim import ChatParser

log = logging.getLogger("botframework.chat")


class OutputMode(Enum):
    TEXT = "text"                    # plain chat
    STRUCTURED = "structured"        # JSON constrained by a schema
    GRAMMAR = "grammar"              # constrained by a caller's GBNF
    TOOLS_NATIVE = "tools_native"    # the template's own tool-call format
    TOOLS_GENERIC = "tools_generic"  # our JSON tool-call format


@dataclass(frozen=True)
class OutputParser:
    mode: OutputMode
    params: Mapping[str, Any] = field(default_factory=dict)  # from ChatTemplates.apply
    tools: tuple[Tool, ...] = ()
    choice: ToolChoice = field(default_factory=lambda: ToolChoice(ToolChoiceMode.NONE))
    _validators: dict[str, SchemaValidator] = field(default_factory=dict, init=False, repr=False, compare=False)
    _native: dict[str, ChatParser] = field(default_factory=dict, init=False, repr=False, compare=False)
    # a stream's last partial scan for JSON calls: (content, where the next scan may resume)
    _scan: list[tuple[str, int]] = field(default_factory=list, init=False, repr=False, compare=False)

    @property
    def tool_names(self) -> frozenset[str]:
        return frozenset(t.name for t in self.tools)

    @property
    def plain(self) -> bool:
        """parse(text) is AssistantMessage(content=text), whatever the text: nothing to parse."""
        return self._plain_split and not (self.choice.calls_tools and self.tools)

    @property
    def _plain_split(self) -> bool:
        thinking = bool(self.params.get("supports_thinking"))
        return self.mode is OutputMode.GRAMMAR or (self.mode in (OutputMode.TEXT, OutputMode.TOOLS_GENERIC)
                                                   and not thinking) or not self.params

    def parse(self, text: str, *, partial: bool = False) -> AssistantMessage:
        message = self._split(text, partial)
        if self.choice.calls_tools and self.tools:
            if self.mode is OutputMode.TOOLS_GENERIC or not message.tool_calls:
                anywhere = not (self.mode is OutputMode.TOOLS_GENERIC and self.choice.forced)
                message = self._json_calls(message, partial, anywhere)
            if not partial and message.tool_calls and not self._arguments_valid(message.tool_calls):
                return AssistantMessage(content=text or None, reasoning_content=message.reasoning_content)
        return message

    def _split(self, text: str, partial: bool) -> AssistantMessage:
        """Content / reasoning / native tool calls, via common_chat_parse when it is needed."""
        if self._plain_split:
            return AssistantMessage(content=text)
        native_tools = self.mode is OutputMode.TOOLS_NATIVE and self.choice.calls_tools
        try:
            parser = self._native.get("parser")
            if parser is None:  # loaded once: a stream parses its whole text again at every delta
                from botframework.native.shim import ChatParser

                parser = self._native["parser"] = ChatParser(
                    {**self.params, "reasoning_format": "auto", "parse_tool_calls": native_tools})
            out = parser.parse(text, partial=partial)
        except InvalidRequestError as exc:  # the model did not follow the format: keep its text
            if not partial:
                log.debug("chat output does not parse (%s); returning it as content", exc)
            return AssistantMessage(content=text)
        calls = tuple(ToolCall(str(c.get("function", {}).get("name", "")),
                               str(c.get("function", {}).get("arguments", "")), str(c.get("id") or ""))
                      for c in out.get("tool_calls") or ())
        content, reasoning = out.get("content") or "", out.get("reasoning_content") or None
        calls = tuple(c for c in calls if c.name)
        if not partial and not calls and not content and not reasoning and text.strip():
            content = text  # the parser swallowed an unfinished call: keep what the model wrote
        return AssistantMessage(content=content or ("" if partial else None), reasoning_content=reasoning,
                                tool_calls=calls)

    def _json_calls(self, message: AssistantMessage, partial: bool, anywhere: bool) -> AssistantMessage:
        content = message.content or ""
        if partial:  # streaming: go on from the last scan while the content only grows
            last = self._scan[0] if self._scan else ("", 0)
            resume = last[1] if content.startswith(last[0]) else 0
            found, resume = scan_calls(content, self.tool_names, partial=True, anywhere=anywhere, resume=resume)
            self._scan[:] = [(content, resume)]
        else:
            found = find_calls(content, self.tool_names, partial=False, anywhere=anywhere)
        if found is None:
            return message
        if not partial and not found.complete:
            return message
        before = content[: found.start].rstrip()
        return AssistantMessage(content=before or ("" if partial else None),
                                reasoning_content=message.reasoning_content,
                                tool_calls=message.tool_calls + found.calls)

    def _arguments_valid(self, calls: tuple[ToolCall, ...]) -> bool:
        for call in calls:
            tool = next((t for t in self.tools if t.name == call.name), None)
            if tool is None:
                return False
            try:
                value = json.loads(call.arguments or "{}")
            except json.JSONDecodeError:
                return False
            validator = self._validators.get(tool.name)
            if validator is None:
                validator = self._validators[tool.name] = SchemaValidator(dict(tool.parameters))
            if validator.errors(value):
                log.debug("tool call %s: arguments do not validate: %s", call.name, call.arguments)
                return False
        return True
