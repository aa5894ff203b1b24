"""Tools and tool_choice, checked; the generic tool format for templates that know no tools.

    tools (OpenAI dicts or Tool) --parse_tools--> Tool(name, description, parameters)
        each parameters schema passes chat.schema.check_schema (fail closed, 400 listing why)
    tool_choice --parse_tool_choice--> ToolChoice(NONE | AUTO | REQUIRED | NAMED)

    Templates with native tool support render tools themselves (ChatTemplates.apply) and
    their output is parsed by common_chat_parse. For the others, the generic format:
        system text listing the tools + "reply with {"name": ..., "arguments": {...}}"
        grammar from the call schema: required/named -> the whole answer is the call(s);
        auto -> lazy, triggered when the model starts such an object
        earlier tool turns rewritten as text the template can render
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from botframework.chat.schema import check_schema, schema_grammar
from botframework.errors import InvalidRequestError
from botframework.specs import GrammarSpec

_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_ROOT_RULE = re.compile(r"^root ::= ", re.MULTILINE)
_GENERIC_TRIGGERS = (r"\[\s*\{\s*\"name\"\s*:", r"\{\s*\"name\"\s*:")


def _empty_parameters() -> dict[str, Any]:
    return {"type": "object", "properties": {}}


@dataclass(frozen=True)
class Tool:
    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(default_factory=_empty_parameters)

    def to_openai(self) -> dict[str, Any]:
        function: dict[str, Any] = {"name": self.name, "parameters": dict(self.parameters)}
        if self.description:
            function["description"] = self.description
        return {"type": "function", "function": function}


class ToolChoiceMode(Enum):
    NONE = "none"          # never call a tool; answer in text
    AUTO = "auto"          # the model decides whether to call
    REQUIRED = "required"  # call at least one of the tools
    NAMED = "named"        # call this one function


@dataclass(frozen=True)
class ToolChoice:
    mode: ToolChoiceMode = ToolChoiceMode.AUTO
    name: str | None = None

    @property
    def calls_tools(self) -> bool:
        return self.mode is not ToolChoiceMode.NONE

    @property
    def forced(self) -> bool:
        return self.mode in (ToolChoiceMode.REQUIRED, ToolChoiceMode.NAMED)


def parse_tools(raw: Sequence[Any] | None) -> tuple[Tool, ...]:
    """OpenAI tool definitions ({"type": "function", "function": {...}} or the bare function)."""
    if not raw:
        return ()
    tools: list[Tool] = []
    for i, item in enumerate(raw):
        if isinstance(item, Tool):
            tool = item
        else:
            if not isinstance(item, Mapping):
                raise InvalidRequestError(f"tools[{i}] must be an object", param="tools")
            if item.get("type", "function") != "function":
                raise InvalidRequestError(f"tools[{i}].type must be 'function'", param="tools")
            fn = item.get("function", item)
            if not isinstance(fn, Mapping):
                raise InvalidRequestError(f"tools[{i}].function must be an object", param="tools")
            name = fn.get("name")
            if not isinstance(name, str) or not _NAME.match(name):
                raise InvalidRequestError(f"tools[{i}].function.name must be 1-64 letters, digits, '_', '-' or '.'",
                                          param="tools")
            parameters = fn.get("parameters") or _empty_parameters()
            description = fn.get("description") or ""
            if not isinstance(description, str):
                raise InvalidRequestError(f"tools[{i}].function.description must be a string", param="tools")
            tool = Tool(name, description, parameters)
        check_schema(tool.parameters, where=f"tools[{i}].function.parameters", param="tools")
        tools.append(tool)
    names = [t.name for t in tools]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise InvalidRequestError(f"tool {duplicate!r} is defined twice", param="tools")
    return tuple(tools)


def parse_tool_choice(value: Any, tools: Sequence[Tool]) -> ToolChoice:
    if value is None:
        return ToolChoice(ToolChoiceMode.AUTO if tools else ToolChoiceMode.NONE)
    if isinstance(value, ToolChoice):
        choice = value
    elif isinstance(value, str):
        try:
            mode = ToolChoiceMode(value)
        except ValueError:
            raise InvalidRequestError("tool_choice must be 'none', 'auto', 'required' or "
                                      "{'type': 'function', 'function': {'name': ...}}", param="tool_choice") from None
        if mode is ToolChoiceMode.NAMED:
            raise InvalidRequestError("tool_choice 'named' needs a function name", param="tool_choice")
        choice = ToolChoice(mode)
    elif isinstance(value, Mapping) and value.get("type", "function") == "function":
        fn = value.get("function", value)
        name = fn.get("name") if isinstance(fn, Mapping) else None
        if not isinstance(name, str):
            raise InvalidRequestError("tool_choice.function.name must be a string", param="tool_choice")
        choice = ToolChoice(ToolChoiceMode.NAMED, name)
    else:
        raise InvalidRequestError("tool_choice must be a string or a function choice", param="tool_choice")
    if choice.forced and not tools:
        raise InvalidRequestError(f"tool_choice {choice.mode.value!r} needs tools", param="tool_choice")
    if choice.mode is ToolChoiceMode.NAMED and choice.name not in {t.name for t in tools}:
        raise InvalidRequestError(f"tool_choice names {choice.name!r}, which is not among the tools",
                                  param="tool_choice")
    return choice


def offered_tools(tools: Sequence[Tool], choice: ToolChoice) -> tuple[Tool, ...]:
    """The tools the model sees: the named one only for a named choice, none for 'none'."""
    if choice.mode is ToolChoiceMode.NONE:
        return ()
    if choice.mode is ToolChoiceMode.NAMED:
        return tuple(t for t in tools if t.name == choice.name)
    return tuple(tools)


# --- the generic format ----------------------------------------------------------------------

def generic_system_text(tools: Sequence[Tool], choice: ToolChoice, parallel: bool) -> str:
    lines = ["You can use these tools. Each is given with the JSON Schema of its arguments:"]
    for tool in tools:
        about = f": {tool.description}" if tool.description else ""
        lines.append(f"- {tool.name}{about}\n  arguments schema: {json.dumps(tool.parameters)}")
    lines.append('\nTo call a tool, reply with only this JSON object and nothing else:\n'
                 '{"name": "<tool name>", "arguments": {<the arguments>}}')
    if parallel:
        lines.append("To call several tools at once, reply with a JSON array of such objects.")
    if choice.mode is ToolChoiceMode.AUTO:
        lines.append("Call a tool only when it helps; otherwise answer the user directly.")
    elif choice.mode is ToolChoiceMode.NAMED:
        lines.append(f"Reply with a call to {choice.name}.")
    else:
        lines.append("Reply with a tool call.")
    return "\n".join(lines)


def generic_messages(messages: Sequence[Mapping[str, Any]], tools: Sequence[Tool], choice: ToolChoice,
                     parallel: bool) -> list[dict[str, Any]]:
    """Messages for a template without tool support: the tool list joins the system prompt,
    earlier calls become the JSON the model is asked to write, results become user turns."""
    names_by_id: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for msg in messages:
        role = msg.get("role")
        if role == "assistant" and msg.get("tool_calls"):
            calls = []
            for call in msg["tool_calls"]:
                fn = call.get("function", {})
                names_by_id[str(call.get("id", ""))] = str(fn.get("name", ""))
                try:
                    arguments = json.loads(fn.get("arguments") or "{}")
                except (json.JSONDecodeError, TypeError):
                    arguments = fn.get("arguments")
                calls.append({"name": fn.get("name"), "arguments": arguments})
            text = json.dumps(calls[0] if len(calls) == 1 else calls)
            content = _text(msg.get("content"))
            out.append({"role": "assistant", "content": f"{content}\n{text}" if content else text})
        elif role == "tool":
            name = names_by_id.get(str(msg.get("tool_call_id", "")), msg.get("name") or "the tool")
            out.append({"role": "user", "content": f"Result of {name}:\n{_text(msg.get('content'))}"})
        else:
            out.append(dict(msg))
    if tools and choice.calls_tools:
        text = generic_system_text(tools, choice, parallel)
        if out and out[0].get("role") in ("system", "developer"):
            out[0] = {**out[0], "role": "system", "content": f"{_text(out[0].get('content'))}\n\n{text}"}
        else:
            out.insert(0, {"role": "system", "content": text})
    return out


def generic_call_schema(tools: Sequence[Tool], parallel: bool) -> dict[str, Any]:
    """JSON Schema of the generic answer: one call object (or, if parallel, an array of them)."""
    defs: dict[str, Any] = {}
    calls = []
    for i, tool in enumerate(tools):
        arguments: Any = dict(tool.parameters)
        if _has_ref(arguments):  # keep its $refs resolvable: move it under the root's $defs
            key = f"tool{i}"
            defs[key] = _rebase_refs(arguments, f"#/$defs/{key}")
            arguments = {"$ref": f"#/$defs/{key}"}
        calls.append({"type": "object", "properties": {"name": {"const": tool.name}, "arguments": arguments},
                      "required": ["name", "arguments"], "additionalProperties": False})
    call: dict[str, Any] = calls[0] if len(calls) == 1 else {"anyOf": calls}
    schema: dict[str, Any] = {"anyOf": [call, {"type": "array", "items": call, "minItems": 1}]} if parallel else call
    if defs:
        schema = {**schema, "$defs": defs}
    return schema


def generic_grammar(tools: Sequence[Tool], choice: ToolChoice, parallel: bool) -> GrammarSpec:
    gbnf = schema_grammar(generic_call_schema(tools, parallel), param="tools")
    if choice.forced:
        return GrammarSpec(gbnf)
    # auto: constrain from the moment the model opens a call object, and let it close a fence
    gbnf = _ROOT_RULE.sub("generic-tool-call ::= ", gbnf, count=1)
    gbnf += 'root ::= generic-tool-call ([ \\t\\n]* "```")?\n'
    return GrammarSpec(gbnf, lazy=True, trigger_patterns=_GENERIC_TRIGGERS if parallel else _GENERIC_TRIGGERS[1:])


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return "" if content is None else str(content)


def _has_ref(schema: Any) -> bool:
    if isinstance(schema, Mapping):
        return "$ref" in schema or any(_has_ref(v) for v in schema.values())
    if isinstance(schema, list):
        return any(_has_ref(v) for v in schema)
    return False


def _rebase_refs(schema: Any, base: str) -> Any:
    if isinstance(schema, Mapping):
        out = {k: _rebase_refs(v, base) for k, v in schema.items()}
        ref = schema.get("$ref")
        if isinstance(ref, str) and (ref == "#" or ref.startswith("#/")):
            out["$ref"] = base + ref[1:]
        return out
    if isinstance(schema, list):
        return [_rebase_refs(v, base) for v in schema]
    return schema
