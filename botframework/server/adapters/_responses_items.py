"""Responses items <-> the chat messages and message pieces the core speaks.

    input items (message / function_call / function_call_output / reasoning)
        --chat_messages--> the message dicts ChatTemplates.apply reads (as ChatTurn.to_template
        gives them): function calls join the assistant turn before them, reasoning the next one
    MessageDelta pieces (chat.stream.MessageStreamer, or message_pieces of a whole message)
        --OutputBuilder.feed--> output items (reasoning, message, function_call; each opened
        when its first piece comes) + the stream events for them, without sequence numbers
    OutputBuilder.finish(status) --> the closing events; .items(status) --> the output list

The whole answer and the stream build their items with the same builder from the same
pieces, so a streamed response's items equal the non-streamed one's.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from botframework.chat.message import AssistantMessage, MessageDelta, ToolCallDelta
from botframework.server.adapters._responses_protocol import (
    ContentPart,
    FunctionCallItem,
    FunctionCallOutputItem,
    InputItem,
    MessageItem,
    ReasoningItem,
    RefusalPart,
    TextPart,
)
from botframework.server.errors import unsupported

Event = dict[str, Any]  # a stream event without its sequence_number


def new_item_id(prefix: str) -> str:
    """OpenAI-style ids: resp_..., msg_..., fc_..., rs_..."""
    return f"{prefix}_{uuid.uuid4().hex}"


# -- input -----------------------------------------------------------------------------------

def _text(content: str | Sequence[ContentPart], where: str) -> str:
    if isinstance(content, str):
        return content
    texts = []
    for j, part in enumerate(content):
        if isinstance(part, TextPart):
            texts.append(part.text)
        elif not isinstance(part, RefusalPart):  # a refusal adds nothing the model should read again
            raise unsupported(f"{where}[{j}].type", f"'{part.type}' content is not supported: this server reads "
                                                    "text parts only (input_text, output_text)")
    return "".join(texts)


def chat_messages(items: Sequence[InputItem], where: str = "input") -> list[dict[str, Any]]:
    """Items -> chat messages; an item type we do not handle is a 400 naming it."""
    messages: list[dict[str, Any]] = []
    reasoning = ""  # a reasoning item belongs to the assistant turn that follows it

    def assistant_turn(content: str) -> dict[str, Any]:
        nonlocal reasoning
        turn: dict[str, Any] = {"role": "assistant", "content": content}
        if reasoning:
            turn["reasoning_content"], reasoning = reasoning, ""
        return turn

    for i, item in enumerate(items):
        at = f"{where}[{i}]"
        if isinstance(item, MessageItem):
            text = _text(item.content, f"{at}.content")
            messages.append(assistant_turn(text) if item.role == "assistant" else {"role": item.role, "content": text})
        elif isinstance(item, FunctionCallItem):
            call = {"id": item.call_id, "type": "function",
                    "function": {"name": item.name, "arguments": item.arguments}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and not reasoning:  # calls of the same turn
                messages[-1] = {**last, "tool_calls": [*last.get("tool_calls", ()), call]}
            else:
                messages.append({**assistant_turn(""), "tool_calls": [call]})
        elif isinstance(item, FunctionCallOutputItem):
            output = _text(item.output, f"{at}.output")
            messages.append({"role": "tool", "tool_call_id": item.call_id, "content": output})
        elif isinstance(item, ReasoningItem):
            reasoning += _text(item.content if item.content is not None else item.summary, f"{at}.content")
        else:
            raise unsupported(f"{at}.type", f"'{item.type}' items are not supported: only message, function_call, "
                                            "function_call_output and reasoning")
    if reasoning:  # reasoning that no answer followed: kept as an assistant turn of its own
        messages.append(assistant_turn(""))
    return messages


# -- output ----------------------------------------------------------------------------------

def message_pieces(message: AssistantMessage) -> list[MessageDelta]:
    """A whole message as the pieces a stream of it would have had (in their order)."""
    pieces = []
    if message.reasoning_content:
        pieces.append(MessageDelta(reasoning_content=message.reasoning_content))
    if message.content:
        pieces.append(MessageDelta(content=message.content))
    for index, call in enumerate(message.tool_calls):
        pieces.append(MessageDelta(tool_call=ToolCallDelta(index, id=call.id, name=call.name)))
        if call.arguments:
            pieces.append(MessageDelta(tool_call=ToolCallDelta(index, arguments=call.arguments)))
    return pieces


@dataclass
class _Item:
    kind: str        # "reasoning" | "message" | "function_call"
    item_id: str
    output_index: int
    text: str = ""   # the reasoning, the message text or the call's arguments
    name: str = ""
    call_id: str = ""

    def to_json(self, status: str) -> dict[str, Any]:
        if self.kind == "message":
            content = [{"type": "output_text", "text": self.text, "annotations": [], "logprobs": []}]
            return {"id": self.item_id, "type": "message", "role": "assistant", "status": status,
                    "content": content if status != "in_progress" else []}
        if self.kind == "reasoning":
            parts = [{"type": "reasoning_text", "text": self.text}] if status != "in_progress" else []
            return {"id": self.item_id, "type": "reasoning", "summary": [], "content": parts, "status": status}
        return {"id": self.item_id, "type": "function_call", "call_id": self.call_id, "name": self.name,
                "arguments": self.text if status != "in_progress" else "", "status": status}

    def part(self) -> dict[str, Any]:
        """The content part of a message or reasoning item, with the text so far."""
        if self.kind == "message":
            return {"type": "output_text", "text": self.text, "annotations": [], "logprobs": []}
        return {"type": "reasoning_text", "text": self.text}


class OutputBuilder:
    def __init__(self) -> None:
        self._items: list[_Item] = []
        self._open: dict[str, _Item] = {}     # the reasoning and the message item
        self._calls: dict[int, _Item] = {}    # by tool call index

    def feed(self, piece: MessageDelta) -> list[Event]:
        events: list[Event] = []
        if piece.reasoning_content:
            item = self._item("reasoning", events)
            item.text += piece.reasoning_content
            events.append(self._at(item, "response.reasoning_text.delta", content_index=0,
                                   delta=piece.reasoning_content))
        if piece.content:
            item = self._item("message", events)
            item.text += piece.content
            events.append(self.text_delta(item, piece.content))
        call = piece.tool_call
        if call is not None:
            if call.id is not None:  # announced: its id and name
                item = self._add("function_call", new_item_id("fc"), events, name=call.name or "", call_id=call.id)
                self._calls[call.index] = item
            item = self._calls[call.index]
            if call.arguments:
                item.text += call.arguments
                events.append(self._at(item, "response.function_call_arguments.delta", delta=call.arguments))
        return events

    def finish(self, status: str) -> list[Event]:
        """Every item's closing events (a message with no text if nothing came at all)."""
        events: list[Event] = []
        if not self._items:
            self._item("message", events)
        for item in self._items:
            if item.kind == "message":
                events.append(self._at(item, "response.output_text.done", content_index=0, text=item.text,
                                       logprobs=[]))
            elif item.kind == "reasoning":
                events.append(self._at(item, "response.reasoning_text.done", content_index=0, text=item.text))
            else:
                events.append(self._at(item, "response.function_call_arguments.done", arguments=item.text,
                                       name=item.name))
            if item.kind != "function_call":
                events.append(self._at(item, "response.content_part.done", content_index=0, part=item.part()))
            events.append({"type": "response.output_item.done", "output_index": item.output_index,
                           "item": item.to_json(status)})
        return events

    def open_message(self) -> _Item | None:
        """The message item once it is open: the next content piece is one text_delta event."""
        return self._open.get("message")

    def text_delta(self, item: _Item, text: str) -> Event:
        return self._at(item, "response.output_text.delta", content_index=0, delta=text, logprobs=[])

    def items(self, status: str) -> list[dict[str, Any]]:
        return [item.to_json(status) for item in self._items]

    @property
    def reasoning_text(self) -> str:
        item = self._open.get("reasoning")
        return item.text if item is not None else ""

    def _item(self, kind: str, events: list[Event]) -> _Item:
        item = self._open.get(kind)
        if item is None:
            item = self._open[kind] = self._add(kind, new_item_id("msg" if kind == "message" else "rs"), events)
            events.append(self._at(item, "response.content_part.added", content_index=0, part=item.part()))
        return item

    def _add(self, kind: str, item_id: str, events: list[Event], **fields: str) -> _Item:
        item = _Item(kind, item_id, len(self._items), **fields)
        self._items.append(item)
        events.append({"type": "response.output_item.added", "output_index": item.output_index,
                       "item": item.to_json("in_progress")})
        return item

    @staticmethod
    def _at(item: _Item, kind: str, **fields: Any) -> Event:
        return {"type": kind, "item_id": item.item_id, "output_index": item.output_index, **fields}
