"""Streaming an assistant message the way OpenAI streams it.

    text deltas --accumulate--> OutputParser.parse(all text, partial=True) --diff against
    what was sent--> MessageDelta(content | reasoning_content | tool call piece)

Trailing whitespace is held back until more text follows (or the end). A tool call is announced (index, id, name) once its name is complete (its arguments have
started, another call follows, or the text ended), then its arguments follow as fragments.
finish() parses the whole text once more (partial=False) and sends what is still missing,
so the pieces add up to the non-streamed message; the ids sent are the ids returned.
"""

from __future__ import annotations

import logging

from botframework.chat.message import (
    AssistantMessage,
    MessageDelta,
    ToolCallDelta,
    new_call_id,
)
from botframework.chat.parse import OutputParser

log = logging.getLogger("botframework.chat")


class MessageStreamer:
    def __init__(self, parser: OutputParser) -> None:
        self.parser = parser
        self.text = ""
        self._content = ""
        self._reasoning = ""
        self._calls: list[tuple[str, str]] = []   # (id, arguments sent) per announced call
        self._call_ids: list[str] = []

    def feed(self, text: str) -> list[MessageDelta]:
        if not text:
            return []
        self.text += text
        return self._diff(self.parser.parse(self.text, partial=True), final=False)

    def finish(self) -> tuple[list[MessageDelta], AssistantMessage]:
        """The last deltas and the whole message (with the ids that were streamed)."""
        message = self.parser.parse(self.text, partial=False)
        deltas = self._diff(message, final=True)
        return deltas, message.with_ids(self._call_ids)

    def _diff(self, message: AssistantMessage, *, final: bool) -> list[MessageDelta]:
        out: list[MessageDelta] = []
        # trailing whitespace waits for what follows it: the final parse may strip it (text
        # before a tool call, reasoning before its end tag)
        reasoning = message.reasoning_content or ""
        if not final:
            reasoning = reasoning.rstrip()
        if reasoning.startswith(self._reasoning) and len(reasoning) > len(self._reasoning):
            out.append(MessageDelta(reasoning_content=reasoning[len(self._reasoning):]))
            self._reasoning = reasoning
        content = message.content or ""
        if not final:
            content = content.rstrip()
        if content.startswith(self._content):
            if len(content) > len(self._content):
                out.append(MessageDelta(content=content[len(self._content):]))
                self._content = content
        elif final:
            log.warning("streamed content is not a prefix of the final content")
        calls = message.tool_calls
        for index, call in enumerate(calls):
            name_done = final or bool(call.arguments) or index < len(calls) - 1
            if index == len(self._calls):
                if not name_done or not call.name:
                    break
                call_id = call.id or new_call_id()
                self._call_ids.append(call_id)
                self._calls.append((call_id, ""))
                out.append(MessageDelta(tool_call=ToolCallDelta(index, id=call_id, name=call.name)))
            if index < len(self._calls):
                call_id, sent = self._calls[index]
                if call.arguments.startswith(sent) and len(call.arguments) > len(sent):
                    out.append(MessageDelta(tool_call=ToolCallDelta(index, arguments=call.arguments[len(sent):])))
                    self._calls[index] = (call_id, call.arguments)
                elif final and not call.arguments.startswith(sent):
                    log.warning("streamed arguments of tool call %d are not a prefix of the final ones", index)
        return out
