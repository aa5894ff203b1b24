"""Structured output and tool calling on the real default model, in process (LocalLLM).

    44 schemas x 10 seeded generations, 16 at a time (one batched decode per step):
        each ends with "stop" and validates (jsonschema, independently of our own check)
    19 unsupported schemas: refused before generating, the error naming why
    tools: required / named always give a call whose arguments validate; none never does;
           streamed pieces add up to the non-streamed message
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jsonschema
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from schema_corpus import RECURSIVE, SUPPORTED, UNSUPPORTED  # noqa: E402

from botframework import LocalLLM  # noqa: E402
from botframework.chat.message import AssistantMessage, MessageDelta  # noqa: E402
from botframework.errors import (  # noqa: E402
    GrammarError,
    OutputValidationError,
    UnsupportedSchemaError,
)

NUM_GENERATIONS = 10
MAX_TOKENS = 160
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30},
                                                    "unit": {"enum": ["celsius", "fahrenheit"]}},
                   "required": ["city"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "Get the local time in a timezone",
    "parameters": {"type": "object", "properties": {"timezone": {"type": "string", "pattern": "^[A-Z][a-z]{1,12}/[A-Z][a-z]{1,12}$"}},
                   "required": ["timezone"], "additionalProperties": False}}}
TOOLS = [WEATHER, TIME]
PARAMETERS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
QUESTIONS = ["What is the weather in Paris?", "Is it raining in Tokyo right now?", "What time is it in Europe/Berlin?",
             "Tell me a joke.", "How warm is it in Cairo, in fahrenheit?"]


@pytest.fixture(scope="module")
def llm() -> Iterator[LocalLLM]:
    with LocalLLM("smollm2-135m-instruct", n_ctx=8192, num_slots=16, n_threads=2, n_threads_batch=2) as model:
        yield model


def validator(schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def test_every_corpus_schema_validates_ten_times(llm: LocalLLM) -> None:
    jobs = [(name, prompt, schema, seed) for name, prompt, schema in SUPPORTED for seed in range(NUM_GENERATIONS)]

    def run(job: tuple[str, str, dict[str, Any], int]) -> tuple[str, int, Any, str | None]:
        name, prompt, schema, seed = job
        try:
            value = llm.chat(prompt, schema=schema, max_tokens=MAX_TOKENS, temperature=0.8, seed=seed)
        except OutputValidationError as exc:
            return name, seed, None, f"{exc} | {exc.output[-200:]!r}"
        return name, seed, value, None

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(run, jobs))
    failures = [f"{name} seed {seed}: {error}" for name, seed, _, error in results if error]
    schemas = {name: schema for name, _, schema in SUPPORTED}
    for name, seed, value, error in results:
        if error is None:
            errors = [e.message for e in validator(schemas[name]).iter_errors(value)]
            if errors:
                failures.append(f"{name} seed {seed}: {value!r} does not validate: {errors}")
    assert len(SUPPORTED) >= 40
    assert not failures, "\n".join(failures)
    # ten seeds are ten different answers for open-ended schemas
    assert len({json.dumps(v) for n, _, v, _ in results if n == "person"}) > 1


def test_a_recursive_schema_converts_and_generates(llm: LocalLLM) -> None:
    try:
        value = llm.chat("Describe a small folder tree.", schema=RECURSIVE, max_tokens=400, temperature=0)
    except OutputValidationError as exc:  # only a cut-off answer may end like this
        assert "cut off" in str(exc)
        return
    jsonschema.validate(value, RECURSIVE)


@pytest.mark.parametrize("name,schema,fragments", UNSUPPORTED, ids=[u[0] for u in UNSUPPORTED])
def test_unsupported_schema_is_refused_before_generating(llm: LocalLLM, name: str, schema: dict[str, Any],
                                                         fragments: tuple[str, ...]) -> None:
    before = llm.worker.stats()["num_prompt_tokens"]
    with pytest.raises(UnsupportedSchemaError) as info:
        llm.chat("Reply in JSON.", schema=schema, max_tokens=8)
    for fragment in fragments:
        assert fragment in str(info.value), info.value.problems
    assert info.value.problems
    assert llm.worker.stats()["num_prompt_tokens"] == before  # nothing was submitted


def test_pydantic_model_class_returns_an_instance(llm: LocalLLM) -> None:
    from pydantic import BaseModel, Field

    class City(BaseModel):
        name: str = Field(max_length=30)
        country: str = Field(max_length=30)
        population: int = Field(ge=0, le=50_000_000)

    city = llm.chat("Describe Paris.", schema=City, max_tokens=MAX_TOKENS, temperature=0)
    assert isinstance(city, City)


def test_json_object_and_structured_mode_forms(llm: LocalLLM) -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
              "additionalProperties": False}
    assert llm.chat("Is the sky blue?", response_format={"mode": "structured", "schema": schema},
                    max_tokens=40, temperature=0) in ({"ok": True}, {"ok": False})
    value = llm.chat("Give a JSON object with a key 'a' set to 1.", max_tokens=120, temperature=0,
                     response_format={"type": "json_object", "schema": {"type": "object", "properties": {
                         "a": {"type": "integer", "minimum": 0, "maximum": 9}}, "required": ["a"]}})
    assert isinstance(value, dict) and 0 <= value["a"] <= 9


def test_raw_grammar_constrains_and_a_dead_end_grammar_does_not_kill_the_engine(llm: LocalLLM) -> None:
    result = llm.chat("Answer yes or no: is water wet?", grammar='root ::= "yes" | "no"', max_tokens=8,
                      temperature=0)
    assert result.text in ("yes", "no") and result.finish_reason == "stop"
    # no token can ever satisfy this grammar: the request fails saying so (never an empty
    # "stop" answer that looks like the model's), the engine goes on
    with pytest.raises(GrammarError, match="generation stopped after 0 tokens"):
        llm.chat("Hello", grammar="root ::= [\\x00]", max_tokens=8, temperature=0)
    with pytest.raises(GrammarError):
        llm.chat("Hello", grammar="root ::= (", max_tokens=8)
    assert llm.chat("Say hi.", max_tokens=4, temperature=0).usage.completion_tokens >= 1


# --- tools -----------------------------------------------------------------------------------

def check_call_arguments(message: AssistantMessage) -> None:
    for call in message.tool_calls:
        assert call.id.startswith("call_") and len(call.id) > 10
        jsonschema.validate(json.loads(call.arguments), PARAMETERS[call.name])


@pytest.mark.parametrize("choice", ["required", "named"])
def test_forced_tool_choice_always_yields_a_valid_call(llm: LocalLLM, choice: str) -> None:
    tool_choice: Any = "required" if choice == "required" else {"type": "function",
                                                                "function": {"name": "get_time"}}

    def run(job: tuple[str, int]) -> AssistantMessage:
        question, seed = job
        result = llm.chat(question, tools=TOOLS, tool_choice=tool_choice, max_tokens=MAX_TOKENS,
                          temperature=0.8, seed=seed)
        assert result.finish_reason == "stop", result
        assert result.message is not None
        return result.message

    with ThreadPoolExecutor(max_workers=16) as pool:
        messages = list(pool.map(run, [(q, seed) for q in QUESTIONS for seed in range(4)]))
    for message in messages:
        assert len(message.tool_calls) == 1, message
        if choice == "named":
            assert message.tool_calls[0].name == "get_time"
        check_call_arguments(message)


def test_tool_choice_none_never_calls(llm: LocalLLM) -> None:
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(lambda q: llm.chat(q, tools=TOOLS, tool_choice="none", max_tokens=48,
                                                   temperature=0.8, seed=1), QUESTIONS))
    for result in results:
        assert result.tool_calls == ()
        assert result.text


def test_tool_choice_auto_answers_or_calls_validly(llm: LocalLLM) -> None:
    for question in QUESTIONS:
        result = llm.chat(question, tools=TOOLS, max_tokens=MAX_TOKENS, temperature=0)
        assert result.message is not None
        check_call_arguments(result.message)
        assert result.tool_calls or result.text


def assemble(deltas: list[MessageDelta]) -> dict[str, Any]:
    content = "".join(d.content for d in deltas)
    calls: list[dict[str, str]] = []
    for d in deltas:
        if d.tool_call is None:
            continue
        if d.tool_call.id is not None:
            assert d.tool_call.index == len(calls) and d.tool_call.name and not d.tool_call.arguments
            calls.append({"id": d.tool_call.id, "name": d.tool_call.name, "arguments": ""})
        else:
            assert d.tool_call.name is None
            calls[d.tool_call.index]["arguments"] += d.tool_call.arguments
    return {"content": content, "calls": [(c["name"], c["arguments"]) for c in calls]}


@pytest.mark.parametrize("tool_choice", ["required", "auto", "none"])
def test_streamed_and_whole_tool_answers_agree(llm: LocalLLM, tool_choice: str) -> None:
    for question in QUESTIONS[:3]:
        # greedy, cache warmed: a cached prefix gives slightly other logits than a fresh prompt,
        # enough to tip a near-tie in a long answer
        options = {"tools": TOOLS, "tool_choice": tool_choice, "max_tokens": MAX_TOKENS, "temperature": 0,
                   "parallel_tool_calls": True}
        llm.chat(question, **options)  # from now on the prompt comes from the prefix cache, as below
        whole = llm.chat(question, **options)
        streamed = assemble(list(llm.stream_chat_message(question, **options)))
        assert streamed["calls"] == [(c.name, c.arguments) for c in whole.tool_calls]
        assert streamed["content"] == whole.text


def test_streamed_structured_output_is_the_validated_json(llm: LocalLLM) -> None:
    schema = SUPPORTED[0][2]
    llm.chat("Describe a person.", schema=schema, max_tokens=MAX_TOKENS, temperature=0)  # warm the prefix cache
    value = llm.chat("Describe a person.", schema=schema, max_tokens=MAX_TOKENS, temperature=0)  # as the stream sees it
    text = "".join(d.content for d in llm.stream_chat_message("Describe a person.", schema=schema,
                                                                max_tokens=MAX_TOKENS, temperature=0))
    assert json.loads(text) == value


def test_tool_results_go_back_to_the_model(llm: LocalLLM) -> None:
    first = llm.chat(QUESTIONS[0], tools=TOOLS, tool_choice="required", max_tokens=MAX_TOKENS, temperature=0)
    call = first.tool_calls[0]
    history = [{"role": "user", "content": QUESTIONS[0]},
               {"role": "assistant", "content": None, "tool_calls": [call.to_openai()]},
               {"role": "tool", "tool_call_id": call.id, "content": '{"celsius": 21, "sky": "sunny"}'}]
    answer = llm.chat(history, tools=TOOLS, tool_choice="none", max_tokens=48, temperature=0)
    assert answer.text and not answer.tool_calls
