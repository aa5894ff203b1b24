"""Tool calling without generating: plan_chat per template family, OutputParser and
MessageStreamer over canned model outputs, the generic format, bare/fenced JSON calls.

    test_shim.py's 14 families (real templates from vendor/llama.cpp/models/templates and the
    canned outputs of llama.cpp's own tests) --OutputParser--> the same call, with an id
    --MessageStreamer, fed in pieces--> pieces that add up to it (id and name first)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_shim import CANNED, USER_TEXT, WEATHER_TOOL, templates_for  # noqa: E402

from botframework.chat.jsoncalls import find_calls, scan_calls  # noqa: E402
from botframework.chat.message import AssistantMessage, MessageDelta, new_call_id  # noqa: E402
from botframework.chat.parse import OutputMode, OutputParser  # noqa: E402
from botframework.chat.plan import ChatOptions, plan_chat  # noqa: E402
from botframework.chat.stream import MessageStreamer  # noqa: E402
from botframework.chat.structured import structured_output  # noqa: E402
from botframework.chat.tools import (  # noqa: E402
    Tool,
    ToolChoice,
    ToolChoiceMode,
    generic_call_schema,
    generic_messages,
    parse_tool_choice,
    parse_tools,
)
from botframework.errors import InvalidRequestError, UnsupportedSchemaError  # noqa: E402
from botframework.native import Model  # noqa: E402
from botframework.native.shim import ChatTemplates  # noqa: E402

TOOLS = parse_tools([WEATHER_TOOL])
AUTO = ToolChoice(ToolChoiceMode.AUTO)
REQUIRED = ToolChoice(ToolChoiceMode.REQUIRED)
NAMES = frozenset({"get_weather"})


def family_parser(family: str, cache: dict[str, ChatTemplates], choice: ToolChoice = AUTO) -> OutputParser:
    params = templates_for(family, cache).apply({
        "messages": [{"role": "user", "content": USER_TEXT}], "tools": [t.to_openai() for t in TOOLS],
        "tool_choice": choice.mode.value, "reasoning_format": CANNED[family][0]})
    return OutputParser(OutputMode.TOOLS_NATIVE, params, tools=TOOLS, choice=choice)


def stream(parser: OutputParser, text: str, step: int) -> tuple[list[MessageDelta], AssistantMessage]:
    streamer = MessageStreamer(parser)
    deltas: list[MessageDelta] = []
    for start in range(0, len(text), step):
        deltas += streamer.feed(text[start:start + step])
    last, message = streamer.finish()
    return deltas + last, message


def assemble(deltas: list[MessageDelta]) -> AssistantMessage:
    from botframework.chat.message import ToolCall

    calls: list[list[str]] = []
    for d in deltas:
        if d.tool_call is not None:
            if d.tool_call.id is not None:
                assert d.tool_call.index == len(calls) and d.tool_call.name and d.tool_call.arguments == ""
                calls.append([d.tool_call.id, d.tool_call.name, ""])
            else:
                calls[d.tool_call.index][2] += d.tool_call.arguments
    content = "".join(d.content for d in deltas)
    reasoning = "".join(d.reasoning_content for d in deltas)
    return AssistantMessage(content=content or None, reasoning_content=reasoning or None,
                            tool_calls=tuple(ToolCall(name, args, call_id) for call_id, name, args in calls))


# --- native families: canned outputs ----------------------------------------------------------

@pytest.mark.parametrize("family", list(CANNED))
def test_canned_call_parses_streams_and_gets_an_id(family: str, family_templates: dict[str, ChatTemplates]) -> None:
    _, text, call_id, reasoning, _, _ = CANNED[family]
    parser = family_parser(family, family_templates)
    whole = parser.parse(text).with_ids()
    assert [(c.name, json.loads(c.arguments)) for c in whole.tool_calls] == [("get_weather", {"location": "Paris"})]
    assert whole.tool_calls[0].id == (call_id or whole.tool_calls[0].id)
    assert whole.tool_calls[0].id.startswith("call_") or call_id is not None
    for step in (1, 3, 7):
        deltas, final = stream(parser, text, step)
        streamed = assemble(deltas)
        assert [(c.name, c.arguments) for c in streamed.tool_calls] == [
            (c.name, c.arguments) for c in final.tool_calls] == [(c.name, c.arguments) for c in whole.tool_calls]
        assert [c.id for c in streamed.tool_calls] == [c.id for c in final.tool_calls]  # the ids streamed
        assert (streamed.content or None) == (final.content or None)
        if reasoning is not None:
            assert (streamed.reasoning_content or "").strip() == reasoning


@pytest.mark.parametrize("family", list(CANNED))
def test_canned_answer_streams_as_content(family: str, family_templates: dict[str, ChatTemplates]) -> None:
    _, _, _, _, text, content = CANNED[family]
    parser = family_parser(family, family_templates)
    deltas, final = stream(parser, text, 2)
    assert final.content == content and not final.tool_calls
    assert assemble(deltas).content == content


class _TimedParser:
    """Wraps a parser: each partial parse advances a fake clock by `cost` seconds."""

    def __init__(self, parser: OutputParser, clock: list[float], cost: float) -> None:
        self.parser, self.clock, self.cost = parser, clock, cost
        self.partial_texts: list[str] = []

    def parse(self, text: str, *, partial: bool = False) -> AssistantMessage:
        if partial:
            self.partial_texts.append(text)
            self.clock[0] += self.cost
        return self.parser.parse(text, partial=partial)


@pytest.mark.parametrize("cost_s, head, parsed_every", [(50e-6, 2048, 1), (1e-3, 2048, 9), (1e-3, 100, 1)])
def test_costly_partial_parses_are_spaced(cost_s: float, head: int, parsed_every: int) -> None:
    # A delta every 6 ms. A 1 ms parse of 2 KB or more is followed by 49 ms without one: every
    # 9th delta is parsed, the text of the others goes out with it. A 50 us parse, or any parse
    # of a short text, runs at every delta.
    clock = [0.0]
    timed = _TimedParser(OutputParser(OutputMode.TEXT), clock, cost_s)
    streamer = MessageStreamer(timed, clock=lambda: clock[0], cpu_clock=lambda: clock[0])  # type: ignore[arg-type]
    pieces = ["x" * head + " "] + [f"word{i} " for i in range(1, 40)]
    deltas: list[MessageDelta] = []
    for i, piece in enumerate(pieces):
        clock[0] = i * 6e-3
        got = streamer.feed(piece)
        assert bool(got) == (i % parsed_every == 0)
        deltas += got
    assert len(timed.partial_texts) == -(-len(pieces) // parsed_every)
    last, final = streamer.finish()
    assert assemble(deltas + last).content == final.content == "".join(pieces)


def test_long_reasoning_stream_adds_up_with_spaced_parses(family_templates: dict[str, ChatTemplates]) -> None:
    # 30 KB of reasoning, then a call: the real parser takes well over 0.1 ms per partial parse
    # here, so fed back to back most deltas are held; what streams still adds up to the message.
    _, text, _, reasoning, _, _ = CANNED["deepseek-r1"]
    assert reasoning is not None
    long_reasoning = ("Let me think about the weather in Paris step by step. " * 560) + reasoning
    text = text.replace(reasoning, long_reasoning, 1)
    clock = [0.0]
    timed = _TimedParser(family_parser("deepseek-r1", family_templates), clock, 0.0)
    streamer = MessageStreamer(timed)  # type: ignore[arg-type]
    deltas: list[MessageDelta] = []
    for start in range(0, len(text), 4):
        deltas += streamer.feed(text[start:start + 4])
    last, final = streamer.finish()
    streamed = assemble(deltas + last)
    assert len(timed.partial_texts) < len(range(0, len(text), 4)) // 2
    assert [(c.name, json.loads(c.arguments)) for c in streamed.tool_calls] == [("get_weather", {"location": "Paris"})]
    assert [(c.name, c.arguments, c.id) for c in streamed.tool_calls] == [
        (c.name, c.arguments, c.id) for c in final.tool_calls]
    assert (streamed.reasoning_content or "").strip() == (final.reasoning_content or "").strip() == long_reasoning


@pytest.mark.parametrize("family", ["qwen2.5-hermes", "llama-3.1", "mistral-nemo", "gpt-oss"])
def test_bare_or_fenced_json_counts_when_the_family_tags_are_missing(
        family: str, family_templates: dict[str, ChatTemplates]) -> None:
    parser = family_parser(family, family_templates)
    if family == "gpt-oss":  # its parser needs its channel tags: content first
        prefix = "<|channel|>final<|message|>"
    else:
        prefix = ""
    for text in ['{"name": "get_weather", "arguments": {"location": "Paris"}}',
                 'Sure.\n```json\n{"name": "get_weather", "arguments": {"location": "Paris"}}\n```',
                 '{"type": "function", "function": {"name": "get_weather", "arguments": {"location": "Paris"}}}']:
        message = parser.parse(prefix + text)
        assert [c.name for c in message.tool_calls] == ["get_weather"], (text, message)
        assert json.loads(message.tool_calls[0].arguments) == {"location": "Paris"}
    # not a call: an unknown tool, arguments that do not validate, or tool_choice none
    for text in ['{"name": "get_time", "arguments": {}}', '{"name": "get_weather", "arguments": {"city": 1}}']:
        assert not parser.parse(prefix + text).tool_calls
    none = OutputParser(OutputMode.TOOLS_NATIVE, parser.params, tools=TOOLS, choice=ToolChoice(ToolChoiceMode.NONE))
    assert not none.parse(prefix + '{"name": "get_weather", "arguments": {"location": "Paris"}}').tool_calls


@pytest.mark.parametrize("text", ["<tool_call>\n{not json</tool_call>", "<tool_call>", "\x00\xff garbage {", ""])
def test_output_that_does_not_parse_is_content_never_an_error(
        text: str, family_templates: dict[str, ChatTemplates]) -> None:
    parser = family_parser("qwen2.5-hermes", family_templates, REQUIRED)
    message = parser.parse(text)
    assert not message.tool_calls
    assert (message.content or "") in (text, text.strip())
    stream(parser, text, 1)  # never raises either


# --- plan_chat per family ---------------------------------------------------------------------

@pytest.mark.parametrize("family", ["qwen2.5-hermes", "llama-3.1", "mistral-nemo", "functionary-v3.2",
                                    "deepseek-r1", "granite-4.0", "phi-3.5"])
def test_plan_chat_grammar_per_tool_choice(family: str, model: Model, family_templates: dict[str, ChatTemplates]) -> None:
    templates = templates_for(family, family_templates)
    messages = [{"role": "user", "content": USER_TEXT}]
    plans = {name: plan_chat(templates, model, messages, ChatOptions(tools=TOOLS, tool_choice=choice),
                             n_ctx=4096, max_tokens=64)
             for name, choice in (("auto", AUTO), ("required", REQUIRED),
                                  ("none", ToolChoice(ToolChoiceMode.NONE)))}
    generic = not templates.supports_tools
    assert plans["none"].grammar is None
    required = plans["required"].grammar
    assert required is not None and not required.lazy and "get_weather" in required.gbnf
    assert plans["required"].parser.mode is (OutputMode.TOOLS_GENERIC if generic else OutputMode.TOOLS_NATIVE) \
        or plans["required"].parser.mode is OutputMode.TOOLS_GENERIC
    if plans["required"].parser.mode is OutputMode.TOOLS_NATIVE:
        # the template's grammar starts with its generation prompt: prefilled, not generated
        assert required.prefill == plans["required"].rendered.params["generation_prompt"]
    auto = plans["auto"].grammar
    if auto is not None:
        assert auto.lazy and (auto.trigger_patterns or auto.trigger_tokens) and not auto.prefill
    if generic:
        assert "get_weather" in plans["auto"].rendered.params["prompt"]  # our system text lists it
        assert "get_weather" not in plans["none"].rendered.params["prompt"]


def test_structured_plan_prefills_and_checks(model: Model) -> None:
    with ChatTemplates(model) as templates:
        schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
        plan = plan_chat(templates, model, [{"role": "user", "content": "n?"}],
                         ChatOptions(structured=structured_output({"mode": "structured", "schema": schema})),
                         n_ctx=2048, max_tokens=32)
        assert plan.grammar is not None and plan.grammar.prefill == plan.rendered.params["generation_prompt"]
        assert plan.parser.parse('```json\n{"n": 3}\n```').content == '{"n": 3}'
        with pytest.raises(InvalidRequestError):
            ChatOptions(structured=plan.structured, tools=TOOLS, tool_choice=AUTO)
        with pytest.raises(InvalidRequestError):
            ChatOptions(grammar='root ::= "a"', structured=plan.structured)


# --- the generic format -----------------------------------------------------------------------

def test_generic_messages_list_tools_and_rewrite_tool_turns() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather",
                                                             "arguments": '{"location": "Paris"}'}}
    out = generic_messages([{"role": "system", "content": "Be brief."},
                            {"role": "user", "content": USER_TEXT},
                            {"role": "assistant", "content": None, "tool_calls": [call]},
                            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}], TOOLS, AUTO, False)
    assert out[0]["role"] == "system" and out[0]["content"].startswith("Be brief.") and "get_weather" in out[0]["content"]
    assert json.loads(out[2]["content"]) == {"name": "get_weather", "arguments": {"location": "Paris"}}
    assert out[3] == {"role": "user", "content": "Result of get_weather:\nsunny"}


def test_generic_schema_keeps_refs_resolvable() -> None:
    tool = Tool("order", "Place an order", {"$defs": {"item": {"type": "object", "properties": {
        "sku": {"type": "string", "maxLength": 8}}, "required": ["sku"]}},
        "type": "object", "properties": {"item": {"$ref": "#/$defs/item"}}, "required": ["item"]})
    schema = generic_call_schema([tool, *TOOLS], parallel=True)
    from botframework.chat.schema import schema_grammar

    assert "root ::=" in schema_grammar(schema)
    assert schema["$defs"]["tool0"]["properties"]["item"]["$ref"] == "#/$defs/tool0/$defs/item"


@pytest.mark.parametrize("choice,parallel", [(REQUIRED, False), (REQUIRED, True), (AUTO, False), (AUTO, True)])
def test_generic_parser_and_streamer(choice: ToolChoice, parallel: bool) -> None:
    parser = OutputParser(OutputMode.TOOLS_GENERIC, {}, tools=TOOLS, choice=choice)
    one = '{"name": "get_weather", "arguments": {"location": "Paris"}}'
    texts = [one, f"[{one}, {one}]"] if parallel else [one]
    if choice.mode is ToolChoiceMode.AUTO:
        texts += [f"Let me look.\n```json\n{one}\n```", "It is {warm} in [Paris]; no tool needed."]
    for text in texts:
        whole = parser.parse(text)
        deltas, _ = stream(parser, text, 4)
        streamed = assemble(deltas)
        assert [(c.name, c.arguments) for c in streamed.tool_calls] == [(c.name, c.arguments)
                                                                        for c in whole.tool_calls]
        assert (streamed.content or None) == whole.content
        if "tool needed" in text:
            assert not whole.tool_calls and whole.content == text
        else:
            assert whole.tool_calls and all(json.loads(c.arguments) == {"location": "Paris"}
                                            for c in whole.tool_calls)


# --- tools and tool_choice: checked -------------------------------------------------------------

def test_tools_and_tool_choice_are_checked() -> None:
    assert parse_tools([{"name": "bare", "parameters": {"type": "object"}}])[0].name == "bare"
    assert parse_tools([{"type": "function", "function": {"name": "noparams"}}])[0].parameters == {
        "type": "object", "properties": {}}
    for bad in ([{"type": "retrieval"}], [{"type": "function", "function": {"name": "has space"}}],
                [WEATHER_TOOL, WEATHER_TOOL], ["tool"]):
        with pytest.raises(InvalidRequestError):
            parse_tools(bad)
    with pytest.raises(UnsupportedSchemaError) as info:
        parse_tools([{"type": "function", "function": {"name": "f", "parameters": {
            "type": "object", "properties": {"n": {"type": "number", "multipleOf": 2}}}}}])
    assert info.value.param == "tools" and "tools[0].function.parameters" in str(info.value)
    assert parse_tool_choice(None, TOOLS).mode is ToolChoiceMode.AUTO
    assert parse_tool_choice(None, ()).mode is ToolChoiceMode.NONE
    named = parse_tool_choice({"type": "function", "function": {"name": "get_weather"}}, TOOLS)
    assert named == ToolChoice(ToolChoiceMode.NAMED, "get_weather")
    for bad_choice, tools in (("sometimes", TOOLS), ("required", ()), ({"type": "function", "function": {
            "name": "nope"}}, TOOLS), ("named", TOOLS), (5, TOOLS)):
        with pytest.raises(InvalidRequestError):
            parse_tool_choice(bad_choice, tools)


# --- bare / fenced JSON, complete and partial ---------------------------------------------------

@pytest.mark.parametrize("text,calls", [
    ('{"name": "get_weather", "arguments": {"location": "Paris"}}', [("get_weather", '{"location": "Paris"}')]),
    ('{"name": "get_weather", "parameters": {"location": "P"}}', [("get_weather", '{"location": "P"}')]),
    ('{"tool_call": {"name": "get_weather", "arguments": {}}}', [("get_weather", "{}")]),
    ('{"tool_calls": [{"name": "get_weather", "arguments": {}}]}', [("get_weather", "{}")]),
    ('{"name": "get_weather", "arguments": "{\\"location\\": \\"Paris\\"}"}', [("get_weather", '{"location": "Paris"}')]),
    ('```\n[{"name": "get_weather", "arguments": {}}]\n```', [("get_weather", "{}")]),
    ('{"name": "get_time", "arguments": {}}', []),
    ('{"name": "get_weather", "arguments": {}, "extra": 1}', []),
    ('```python\n{"name": "get_weather", "arguments": {}}\n```', [("get_weather", "{}")]),  # the object counts
    ('{"name": "get_weather", "arguments": {}', []),
])
def test_find_calls_complete(text: str, calls: list[tuple[str, str]]) -> None:
    found = find_calls(text, NAMES, partial=False, anywhere=True)
    assert [(c.name, c.arguments) for c in (found.calls if found else ())] == calls


def test_find_calls_partial_holds_back_and_grows() -> None:
    text = 'Checking.\n```json\n{"name": "get_weather", "arguments": {"location": "Paris"}}\n```'
    arguments_seen = ""
    assert find_calls("Checking.\n", NAMES, partial=True, anywhere=True) is None
    for end in range(len("Checking.\n") + 1, len(text) + 1):
        found = find_calls(text[:end], NAMES, partial=True, anywhere=True)
        assert found is not None and found.start == len("Checking.\n"), text[:end]
        if found.calls:
            assert found.calls[0].arguments.startswith(arguments_seen)
            arguments_seen = found.calls[0].arguments
    assert arguments_seen == '{"location": "Paris"}'
    assert find_calls("I like {curly} things", NAMES, partial=True, anywhere=True) is None


@pytest.mark.parametrize("text", [
    'It is {warm} in [Paris]; ```python\nx = 1\n``` {"name": "get_time", "arguments": {}} then '
    '{"name": "get_weather", "arguments": {"location": "Paris"}} and more {"x": 1}',
    '[[[[ {"na": 1} {"name": 5} ["a", {"name": "get_weather"}] {"name": "get_weather", "arguments": {}}',
    'Sure.\n```json\n[{"name": "get_weather", "arguments": {"location": "Rome"}}]\n```\nDone.',
    '{"name": "get_weather", "arguments": {"location": "Par',
])
def test_resumed_partial_scans_equal_fresh_scans(text: str) -> None:
    """A stream's scans resume where the last one stopped; at every prefix they must find what
    a scan of the whole prefix from 0 finds (a refused candidate stays refused)."""
    resume = 0
    for end in range(len(text) + 1):
        prefix = text[:end]
        found, resume = scan_calls(prefix, NAMES, partial=True, anywhere=True, resume=resume)
        assert found == find_calls(prefix, NAMES, partial=True, anywhere=True), prefix


def test_call_ids_are_openai_shaped_and_unique() -> None:
    ids = {new_call_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(i.startswith("call_") and len(i) == 29 and i[5:].isalnum() for i in ids)
