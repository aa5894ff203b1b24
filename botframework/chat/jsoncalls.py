"""Tool calls written as bare or fenced JSON, complete or still streaming.

    text --find candidates ({, [, ```)--> JSON scanned member by member (no json.loads of
    partial text) --> ToolCall(name, raw argument text) for objects naming a known tool:
        {"name": N, "arguments": {...}}   {"name": N, "parameters": {...}}
        {"type": "function", "function": {...}}   {"tool_call": {...}}   {"tool_calls": [...]}
        [ ...any of these... ]

Used for the generic tool format (templates that know no tools) and as a fallback when a
model writes such an object instead of its family's tags (small models do). Arguments keep
the model's exact text, so streamed fragments always add up to the final arguments.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from botframework.chat.message import ToolCall
from botframework.native.jsontext import bracket_levels

_WRAPPER_KEYS = frozenset({"name", "arguments", "parameters", "id", "type", "function", "tool_call", "tool_calls"})
_SCALAR_CHARS = frozenset("0123456789+-.eEtruefalsnl")


@dataclass(frozen=True)
class FoundCalls:
    start: int                   # where the call text (or its fence) begins
    calls: tuple[ToolCall, ...]  # complete names only; arguments may be partial while streaming
    complete: bool               # the JSON (and fence) is finished


def find_calls(text: str, tool_names: frozenset[str], *, partial: bool, anywhere: bool) -> FoundCalls | None:
    """The first JSON tool call(s) in `text` (at its start only unless `anywhere`).

    Complete (partial=False): only a finished JSON value naming known tools counts.
    Partial: a value that may still become one counts too (the caller holds text back).
    """
    return scan_calls(text, tool_names, partial=partial, anywhere=anywhere)[0]


def scan_calls(text: str, tool_names: frozenset[str], *, partial: bool, anywhere: bool,
               resume: int = 0) -> tuple[FoundCalls | None, int]:
    """find_calls, and where a scan of a longer text that starts with this one may resume.

    A streamed answer is scanned again at every delta. With partial=True a candidate that is
    refused stays refused however the text goes on (a finished value that names no tool, a
    key that is no wrapper key, a name that is no tool, malformed JSON, a candidate too deep
    in brackets: all decided by text already written), so the next scan starts at the first
    candidate not refused yet instead of at 0: the scans stay linear in the text, not
    quadratic. `resume` must come from this function, for a text this one starts with."""
    if not anywhere:
        start = _first_non_space(text)
        return (None, 0) if start is None else (_calls_at(text, start, tool_names, partial), 0)
    levels: np.ndarray | None = None  # computed for the first bracket candidate, if there is one
    pos = resume
    while True:
        start = _next_candidate(text, pos)
        if start is None:
            return None, len(text)
        if text[start] != "`" and levels is None:
            levels = _levels(text)
        # a call written among prose starts outside any bracket (a few stray ones allowed); the
        # candidates inside "[[[[..." would each be scanned MAX_DEPTH deep: quadratic
        if text[start] == "`" or (levels is not None and levels[start] <= MAX_CANDIDATE_LEVEL):
            found = _calls_at(text, start, tool_names, partial)
            if found is not None:
                return found, start
        pos = start + 1


def _levels(text: str) -> np.ndarray:
    """Bracket depth before each character (strings masked; closers never take it below 0)."""
    after = bracket_levels(text)
    return np.concatenate(([0], after[:-1])) if len(after) else after


def _first_non_space(text: str) -> int | None:
    i = _skip_ws(text, 0)
    return i if i < len(text) else None


def _next_candidate(text: str, pos: int) -> int | None:
    found = [i for i in (text.find("{", pos), text.find("[", pos), text.find("`", pos)) if i != -1]
    return min(found) if found else None


def _calls_at(text: str, start: int, names: frozenset[str], partial: bool) -> FoundCalls | None:
    i = start
    fenced = text.startswith("`", i)
    if fenced:
        line_end = text.find("\n", i)
        opener = (text[i:] if line_end == -1 else text[i:line_end]).rstrip()
        if line_end == -1:  # still writing "```json"
            return FoundCalls(start, (), False) if partial and "```json".startswith(opener) else None
        if opener not in ("```", "```json"):
            return None
        i = _skip_ws(text, line_end)
        if i >= len(text):
            return FoundCalls(start, (), False) if partial else None
    try:
        calls, end, possible = _calls_in_value(text, i, names)
    except _Malformed:
        return None
    if end is None:  # unfinished JSON
        return FoundCalls(start, tuple(calls), False) if partial and possible else None
    if not possible or not calls:
        return None
    if fenced:
        j = _skip_ws(text, end)
        if not text.startswith("```", j):
            if partial and "```".startswith(text[j:]):
                return FoundCalls(start, tuple(calls), False)
            return None
    return FoundCalls(start, tuple(calls), True)


MAX_DEPTH = 128  # deeper JSON is not taken for a tool call (tool schemas nest at most 64 levels)
MAX_CANDIDATE_LEVEL = 4


class _Malformed(Exception):
    """Not JSON: whatever this is, it is not a tool call."""


def _calls_in_value(text: str, i: int, names: frozenset[str], depth: int = 0
                    ) -> tuple[list[ToolCall], int | None, bool]:
    """(calls, end of the value or None if unfinished, whether it is or may become calls)."""
    if depth > MAX_DEPTH:
        raise _Malformed
    if i >= len(text):
        return [], None, True
    if text[i] == "[":
        calls: list[ToolCall] = []
        elements, end = _elements(text, i, depth)
        for start, _stop in elements:
            sub, sub_end, possible = _calls_in_value(text, start, names, depth + 1)
            if not possible:
                return [], end, False
            calls.extend(sub)
            if sub_end is None:
                break
        return calls, end, True
    if text[i] != "{":
        return [], None, False
    members, end = _members(text, i, depth)
    spans = {key: (s, e) for key, s, e in members}
    if any(key not in _WRAPPER_KEYS for key in spans):
        return [], end, False
    for wrapper in ("tool_calls", "tool_call", "function"):
        if wrapper in spans:
            sub, _, possible = _calls_in_value(text, spans[wrapper][0], names, depth + 1)
            return sub, end, possible
    name_span = spans.get("name")
    if name_span is None or name_span[1] is None:
        return [], end, end is None  # the name may still come
    try:
        name = json.loads(text[name_span[0]:name_span[1]])
    except json.JSONDecodeError:
        return [], end, False
    if not isinstance(name, str) or name not in names:
        return [], end, False
    args_span = spans.get("arguments") or spans.get("parameters")
    if args_span is None:
        return ([], end, True) if end is None else ([ToolCall(name, "{}")], end, True)
    args_start, args_end = args_span
    raw = text[args_start:args_end] if args_end is not None else text[args_start:]
    if text[args_start] == '"':  # arguments given as a JSON string: only whole, once decoded
        if args_end is None:
            return [ToolCall(name, "")], end, True
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            return [], end, False
    return [ToolCall(name, raw)], end, True


# --- a JSON scanner that tolerates the text ending anywhere ---------------------------------

def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def _scan_string(text: str, i: int) -> int | None:
    """`text[i]` is '"': index after the closing quote, or None if the text ends first."""
    i += 1
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
        elif c == '"':
            return i + 1
        else:
            i += 1
    return None


def _scan_value(text: str, i: int, depth: int) -> int | None:
    if depth > MAX_DEPTH:
        raise _Malformed
    if i >= len(text):
        return None
    c = text[i]
    if c == '"':
        return _scan_string(text, i)
    if c == "{":
        return _members(text, i, depth)[1]
    if c == "[":
        return _elements(text, i, depth)[1]
    j = i
    while j < len(text) and text[j] in _SCALAR_CHARS:
        j += 1
    if j == i:
        raise _Malformed
    return None if j == len(text) else j


def _members(text: str, i: int, depth: int = 0) -> tuple[list[tuple[str, int, int | None]], int | None]:
    """Members (key, value start, value end) of the object at `text[i]` == '{', and its end."""
    members: list[tuple[str, int, int | None]] = []
    i = _skip_ws(text, i + 1)
    while i < len(text):
        if text[i] == "}":
            return members, i + 1
        if text[i] == ",":
            i = _skip_ws(text, i + 1)
            continue
        if text[i] != '"':
            raise _Malformed
        key_end = _scan_string(text, i)
        if key_end is None:
            return members, None
        try:
            key = json.loads(text[i:key_end])
        except json.JSONDecodeError:
            raise _Malformed from None
        i = _skip_ws(text, key_end)
        if i >= len(text):
            return members, None
        if text[i] != ":":
            raise _Malformed
        value_start = _skip_ws(text, i + 1)
        if value_start >= len(text):
            return members, None
        value_end = _scan_value(text, value_start, depth + 1)
        members.append((key, value_start, value_end))
        if value_end is None:
            return members, None
        i = _skip_ws(text, value_end)
    return members, None


def _elements(text: str, i: int, depth: int = 0) -> tuple[list[tuple[int, int | None]], int | None]:
    elements: list[tuple[int, int | None]] = []
    i = _skip_ws(text, i + 1)
    while i < len(text):
        if text[i] == "]":
            return elements, i + 1
        if text[i] == ",":
            i = _skip_ws(text, i + 1)
            continue
        end = _scan_value(text, i, depth + 1)
        elements.append((i, end))
        if end is None:
            return elements, None
        i = _skip_ws(text, end)
    return elements, None
