"""What an assistant turn parses into, independent of the OpenAI JSON shape.

    model text --OutputParser--> AssistantMessage(content, reasoning_content, tool_calls)
    AssistantMessage --to_openai()--> {"role": "assistant", "content", "tool_calls", ...}
"""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass, field, replace
from typing import Any

_ID_ALPHABET = string.ascii_letters + string.digits


def new_call_id() -> str:
    """An OpenAI-style tool call id for calls the model gave none."""
    return "call_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str  # JSON text, as the model wrote it
    id: str = ""    # empty until assigned (the model's own id, or new_call_id())

    def to_openai(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass(frozen=True)
class AssistantMessage:
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    parsed: Any = field(default=None, compare=False)  # the validated JSON value of structured output

    def with_ids(self, ids: list[str] | None = None) -> AssistantMessage:
        """Give every call an id: `ids[i]` when given, else the model's own, else a new one."""
        calls = tuple(replace(call, id=(ids[i] if ids and i < len(ids) else call.id or new_call_id()))
                      for i, call in enumerate(self.tool_calls))
        return replace(self, tool_calls=calls)

    def to_openai(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": "assistant", "content": self.content, "refusal": None}
        if self.reasoning_content:
            out["reasoning_content"] = self.reasoning_content
        if self.tool_calls:
            out["tool_calls"] = [call.to_openai() for call in self.tool_calls]
        return out


@dataclass(frozen=True)
class ToolCallDelta:
    """One piece of a streamed tool call: the first carries id and name, later ones arguments."""

    index: int
    arguments: str = ""
    id: str | None = None
    name: str | None = None

    def to_openai(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index}
        if self.id is not None:
            out["id"] = self.id
            out["type"] = "function"
        function: dict[str, Any] = {"arguments": self.arguments}
        if self.name is not None:
            function = {"name": self.name, "arguments": self.arguments}
        out["function"] = function
        return out


@dataclass(frozen=True)
class MessageDelta:
    content: str = ""
    reasoning_content: str = ""
    tool_call: ToolCallDelta | None = None
