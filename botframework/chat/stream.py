"""Streaming an assistant message the way OpenAI streams it.

    text deltas --accumulate--> OutputParser.parse(all text, partial=True) --diff against
    what was sent--> MessageDelta(content | reasoning_content | tool call piece)

Trailing whitespace is held back until more text follows (or the end). A tool call is
announced (index, id, name) once its name is complete (its arguments have started, another
call follows, or the text ended), then its arguments follow as fragments.
finish() parses the whole text once more (partial=False) and sends what is still missing,
so the pieces add up to the non-streamed message; the ids sent are the ids returned.

A partial parse reads the whole text again (common_chat_parse is not incremental): O(n) per
delta, O(n^2) per stream, ~0.3 ms a delta at 8 KB of reasoning, on the event loop, where the
rest of a token's work is ~0.1-0.2 ms. Once the text is MIN_SPACED_CHARS long and a parse takes
more than MIN_SPACED_PARSE_S of CPU, the next waits PARSE_SPACING times as long: deltas that come
sooner are held (their text goes out with a later one, or at finish), so a stream's costly
parses take at most 2% of the time; at 30 KB (~1 ms a parse) text then goes out every ~50 ms.
Shorter texts parse at every delta (a pause of the thread in a short parse spaces nothing).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from botframework.chat.message import (
    AssistantMessage,
    MessageDelta,
    ToolCallDelta,
    new_call_id,
)
from botframework.chat.parse import OutputParser

log = logging.getLogger("botframework.chat")

PARSE_SPACING = 50.0          # a costly parse is followed by 49 times its time without one
MIN_SPACED_PARSE_S = 100e-6   # CPU time: parses cheaper than this are never spaced
MIN_SPACED_CHARS = 2048       # nor are parses of shorter texts


class MessageStreamer:
    def __init__(self, parser: OutputParser, clock: Callable[[], float] = time.perf_counter,
                 cpu_clock: Callable[[], float] = time.thread_time) -> None:
        self.parser = parser
        self.text = ""
        self._clock = clock
        self._cpu_clock = cpu_clock
        self._next_parse = 0.0  # a delta before this time is held (see the module doc)
        self._content = ""
        self._reasoning = ""
        self._calls: list[tuple[str, str]] = []   # (id, arguments sent) per announced call
        self._call_ids: list[str] = []

    def feed(self, text: str) -> list[MessageDelta]:
        if not text:
            return []
        self.text += text
        start = self._clock()
        if start < self._next_parse:
            return []
        cpu = self._cpu_clock()
        message = self.parser.parse(self.text, partial=True)
        spent = self._cpu_clock() - cpu
        costly = spent >= MIN_SPACED_PARSE_S and len(self.text) >= MIN_SPACED_CHARS
        self._next_parse = start + spent * PARSE_SPACING if costly else 0.0
        return self._diff(message, final=False)

    def plain_pending(self) -> str | None:
        """The whitespace held back, when all that feed(text) does now is send (held +
        text).rstrip() as content (a plain parser, no parse spacing in effect, no reasoning or
        tool call so far): a server's native stream sends the same (server/direct.py); None
        otherwise."""
        if not self.parser.plain or self._next_parse or self._reasoning or self._calls \
                or not self.text.startswith(self._content):
            return None
        return self.text[len(self._content):]

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
