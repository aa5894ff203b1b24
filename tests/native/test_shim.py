"""native/bf_shim through botframework.native.shim, against the real model and real templates.

    JSON Schema --json_schema_to_grammar--> GBNF --GrammarSpec--> SamplerChain --> text
        --json.loads--> jsonschema.validate            (greedy and sampled, fixed seeds)
    vendor/llama.cpp/models/templates/*.jinja --ChatTemplates(None, override).apply-->
        prompt + format + parser --chat_parse(canned model output)--> tool_calls / content

The canned outputs are the ones llama.cpp's own tests/test-chat.cpp feeds each family's
parser, with `special_function(arg1=1)` replaced by `get_weather(location="Paris")`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from botframework.errors import ClosedError, GrammarError, InvalidRequestError, ModelLoadError
from botframework.native import (
    Batch,
    Context,
    ContextParams,
    Model,
    SamplerChain,
    SamplerSpec,
)
from botframework.native.shim import ChatParser, ChatTemplates, chat_parse, json_schema_to_grammar
from botframework.specs import GrammarSpec

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "vendor" / "llama.cpp" / "models" / "templates"
MAX_TOKENS = 200

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}},
            "required": ["location"],
        },
    },
}
SYSTEM_TEXT = "You are a terse weather assistant."
USER_TEXT = "What is the weather in Paris right now?"
MESSAGES = [{"role": "system", "content": SYSTEM_TEXT}, {"role": "user", "content": USER_TEXT}]


# --- generation helper ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def context(model: Model) -> Iterator[Context]:
    with Context(model, ContextParams(n_ctx=1024, n_batch=512, n_threads=2, n_threads_batch=2)) as ctx:
        yield ctx


@pytest.fixture(scope="module")
def own_templates(model: Model) -> Iterator[ChatTemplates]:
    with ChatTemplates(model) as templates:
        yield templates


def generate(model: Model, ctx: Context, prompt: str, spec: SamplerSpec, *,
             prefill: str = "", max_tokens: int = MAX_TOKENS) -> tuple[str, bool]:
    """Decode the prompt, then sample -> decode one token at a time.

    Returns (text, ended_at_eog). With a grammar, llama.cpp's grammar sampler only lets EOG
    tokens through once the grammar is complete, so a finished grammar ends at EOG even
    under greedy sampling. `prefill` is fed to the sampler (grammar) without being decoded:
    the generation prompt that chat grammars start with, as common/sampling.cpp does.
    """
    ctx.memory.clear()
    tokens = model.tokenize(prompt, add_special=True, parse_special=True)
    assert 0 < len(tokens) < ctx.n_ctx - max_tokens
    batch = Batch(max(len(tokens), 1))
    index = batch.add_sequence(tokens, 0, 0, logits_last=True)
    ctx.decode(batch)
    out: list[int] = []
    pos = len(tokens)
    with SamplerChain(model, spec) as sampler:
        for token in model.tokenize(prefill, add_special=False, parse_special=True) if prefill else ():
            sampler.accept(token)
        for _ in range(max_tokens):
            token = sampler.sample(ctx, index)
            if model.is_eog(token):
                return model.detokenize(out), True
            out.append(token)
            batch.clear()
            index = batch.add(token, pos, 0, want_logits=True)
            pos += 1
            ctx.decode(batch)
    return model.detokenize(out), False


# --- JSON Schema -> grammar -> constrained generation --------------------------------------

SCHEMAS: dict[str, dict[str, Any]] = {
    "object_required": {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 30}, "age": {"type": "integer"},
                       "nickname": {"type": "string", "maxLength": 20}},
        "required": ["name", "age"],
        "additionalProperties": False,
    },
    "nested_object": {
        "type": "object",
        "properties": {
            "person": {
                "type": "object",
                "properties": {"city": {"type": "string", "maxLength": 25},
                               "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
                "required": ["city", "zip"],
                "additionalProperties": False,
            },
            "verified": {"type": "boolean"},
        },
        "required": ["person", "verified"],
        "additionalProperties": False,
    },
    "array_bounds": {
        "type": "array",
        "items": {"type": "integer", "minimum": 0, "maximum": 9},
        "minItems": 2,
        "maxItems": 4,
    },
    "enum": {"type": "string", "enum": ["red", "green", "blue"]},
    "integer_range": {"type": "integer", "minimum": 10, "maximum": 99},
    "string_pattern": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"},
}

SAMPLINGS = {
    "greedy": SamplerSpec(temperature=0.0),
    "t0.8-seed1234": SamplerSpec(temperature=0.8, seed=1234),
    "t0.8-seed7": SamplerSpec(temperature=0.8, seed=7),
}


@pytest.mark.parametrize("sampling", list(SAMPLINGS))
@pytest.mark.parametrize("schema_name", list(SCHEMAS))
def test_schema_grammar_constrains_generation(model: Model, context: Context,
                                              own_templates: ChatTemplates,
                                              schema_name: str, sampling: str) -> None:
    schema = SCHEMAS[schema_name]
    gbnf = json_schema_to_grammar(schema)
    assert "root ::=" in gbnf
    prompt = own_templates.apply({"messages": [
        {"role": "user", "content": f"Reply with JSON that matches this schema: {json.dumps(schema)}"}]})["prompt"]
    base = SAMPLINGS[sampling]
    spec = SamplerSpec(temperature=base.temperature, seed=base.seed, grammar=GrammarSpec(gbnf))
    text, ended = generate(model, context, prompt, spec)
    assert ended, f"grammar never completed in {MAX_TOKENS} tokens: {text!r}"
    jsonschema.validate(json.loads(text), schema)


def test_schema_conversion_is_deterministic() -> None:
    schema = SCHEMAS["nested_object"]
    assert json_schema_to_grammar(schema) == json_schema_to_grammar(json.loads(json.dumps(schema)))


@pytest.mark.parametrize("schema", [
    {"type": "object", "properties": 5},
    {"$ref": "#/definitions/missing"},
    {"type": "object", "properties": {"a": {"$ref": "#/$defs/nope"}}},
    {"type": "nosuchtype"},
    {"type": "integer", "minimum": "ten"},
    {"type": "array", "items": 3},
    5,
    None,
], ids=["properties-not-object", "missing-ref", "missing-defs-ref", "unknown-type",
        "minimum-not-number", "items-not-schema", "int", "null"])
def test_invalid_schema_raises_grammar_error(schema: Any) -> None:
    with pytest.raises(GrammarError) as info:
        json_schema_to_grammar(schema)
    assert isinstance(info.value, InvalidRequestError)  # -> HTTP 400
    assert info.value.param == "response_format"
    # the converter is stateless: a valid conversion right after still works
    assert "root ::=" in json_schema_to_grammar({"type": "object", "properties": {"ok": {"type": "boolean"}}})


@pytest.mark.xfail(strict=True, reason="llama.cpp's converter does not support \\d in patterns and silently "
                                       "falls back to 'any string' (a warning on stderr only); see report")
def test_unsupported_pattern_is_not_silently_dropped() -> None:
    assert "[0-9]" in json_schema_to_grammar({"type": "string", "pattern": "^[0-9]{3}$"})
    assert "[0-9]" in json_schema_to_grammar({"type": "string", "pattern": "^\\d{3}$"})


def test_invalid_gbnf_raises_grammar_error(model: Model) -> None:
    for gbnf, root in [("root ::= undefined-rule", "root"), ("root ::= (", "root"), ('root ::= "a"', "nope")]:
        with pytest.raises(GrammarError):
            SamplerChain(model, SamplerSpec(grammar=GrammarSpec(gbnf, root=root)))
    with SamplerChain(model, SamplerSpec(grammar=GrammarSpec('root ::= "ok"'))):
        pass


def test_chat_json_schema_grammar_needs_the_generation_prompt_prefilled(
        model: Model, context: Context, own_templates: ChatTemplates) -> None:
    """Grammars from apply() start with the generation prompt (common/sampling.cpp prefills it).

    Without the prefill the model is forced to re-emit "<|im_start|>assistant\\n" as text and
    chat_parse rejects the result; with it, the output parses and validates.
    """
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
                                               "celsius": {"type": "integer"}},
              "required": ["city", "celsius"], "additionalProperties": False}
    params = own_templates.apply({
        "messages": [{"role": "user", "content": "Give the weather in Paris as JSON."}],
        "json_schema": schema,
    })
    assert params["grammar"] and not params["grammar_lazy"]
    root = next(line for line in params["grammar"].splitlines() if line.startswith("root ::="))
    assert json.dumps(params["generation_prompt"]) in root
    text, ended = generate(model, context, params["prompt"],
                           SamplerSpec(temperature=0.0, grammar=GrammarSpec(params["grammar"])),
                           prefill=params["generation_prompt"])
    assert ended, text
    message = chat_parse(text, params)
    jsonschema.validate(json.loads(message["content"]), schema)


# --- chat templates: rendering ---------------------------------------------------------------

def load_template(name: str) -> str:
    path = TEMPLATES / f"{name}.jinja"
    if not path.is_file():
        pytest.skip(f"{path.name} is not in the vendored llama.cpp tree")
    return path.read_text(encoding="utf-8")


# family -> (template file, format_name, renders tools)
# This llama.cpp parses every family with a generated PEG parser: the per-family formats of
# older releases ("Hermes 2 Pro", "Llama 3.x", ...) are all "peg-native" now, except the two
# families with their own PEG flavour.
FAMILIES: dict[str, tuple[str, str, bool]] = {
    "qwen2.5-hermes": ("Qwen-Qwen2.5-7B-Instruct", "peg-native", True),
    "hermes-3": ("NousResearch-Hermes-3-Llama-3.1-8B-tool_use", "peg-native", True),
    "llama-3.1": ("meta-llama-Llama-3.1-8B-Instruct", "peg-native", True),
    "llama-3.3": ("meta-llama-Llama-3.3-70B-Instruct", "peg-native", True),
    "mistral-nemo": ("mistralai-Mistral-Nemo-Instruct-2407", "peg-native", True),
    "functionary-v3.1": ("meetkai-functionary-medium-v3.1", "peg-native", True),
    "functionary-v3.2": ("meetkai-functionary-medium-v3.2", "peg-native", True),
    "deepseek-r1": ("llama-cpp-deepseek-r1", "peg-native", True),
    "command-r7b": ("CohereForAI-c4ai-command-r7b-12-2024-tool_use", "peg-native", True),
    "command-r-plus": ("CohereForAI-c4ai-command-r-plus-tool_use", "peg-native", True),
    "granite-4.0": ("ibm-granite-granite-4.0", "peg-native", True),
    "qwen3-coder": ("Qwen3-Coder", "peg-native", True),
    "gpt-oss": ("openai-gpt-oss-120b", "peg-native", True),
    "gemma-4": ("google-gemma-4-31B-it", "peg-gemma4", True),
    "minimax-m3": ("MiniMax-M3", "peg-minimax-m3", True),
    "phi-3.5": ("microsoft-Phi-3.5-mini-instruct", "peg-native", False),
}


def templates_for(family: str, cache: dict[str, ChatTemplates]) -> ChatTemplates:
    if family not in cache:
        cache[family] = ChatTemplates(None, template_override=load_template(FAMILIES[family][0]))
    return cache[family]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_template_renders_messages_and_tools(family: str, family_templates: dict[str, ChatTemplates]) -> None:
    _, format_name, renders_tools = FAMILIES[family]
    templates = templates_for(family, family_templates)
    params = templates.apply({"messages": MESSAGES, "tools": [WEATHER_TOOL], "tool_choice": "auto",
                              "parallel_tool_calls": False, "add_generation_prompt": True})
    prompt = params["prompt"]
    assert SYSTEM_TEXT in prompt
    assert USER_TEXT in prompt
    assert prompt.index(SYSTEM_TEXT) < prompt.index(USER_TEXT)
    assert prompt.endswith(params["generation_prompt"])
    assert params["format_name"] == format_name
    assert isinstance(params["format"], int)
    assert params["parser"], "a PEG parser is always serialized"
    if renders_tools:
        assert "get_weather" in prompt
    # without tools there is no tool-call grammar
    plain = templates.apply({"messages": MESSAGES})
    assert USER_TEXT in plain["prompt"]
    assert "get_weather" not in plain["prompt"]
    assert plain["grammar"] == ""


@pytest.mark.parametrize("family", ["qwen2.5-hermes", "mistral-nemo", "functionary-v3.1", "granite-4.0"])
def test_tool_choice_shapes_the_grammar(family: str, family_templates: dict[str, ChatTemplates]) -> None:
    templates = templates_for(family, family_templates)
    base = {"messages": MESSAGES, "tools": [WEATHER_TOOL]}
    auto = templates.apply({**base, "tool_choice": "auto"})
    assert auto["grammar_lazy"] and auto["grammar_triggers"] and "get_weather" in auto["grammar"]
    for trigger in auto["grammar_triggers"]:
        assert set(trigger) == {"type", "value", "token"}
    required = templates.apply({**base, "tool_choice": "required"})
    assert not required["grammar_lazy"] and "get_weather" in required["grammar"]
    none = templates.apply({**base, "tool_choice": "none"})
    assert none["grammar"] == ""


def test_template_errors_are_typed() -> None:
    with pytest.raises(ModelLoadError):
        ChatTemplates(None, template_override="{% for x in %}")
    templates = ChatTemplates(None, template_override=load_template("Qwen-Qwen2.5-7B-Instruct"))
    with pytest.raises(InvalidRequestError):
        templates.apply({"messages": [{"content": "no role"}]})
    with pytest.raises(InvalidRequestError):
        templates.apply({"messages": MESSAGES, "tool_choice": "sometimes"})
    with pytest.raises(InvalidRequestError):
        templates.apply({"messages": MESSAGES, "tools": [{"type": "function"}]})
    assert USER_TEXT in templates.apply({"messages": MESSAGES})["prompt"]  # still usable
    templates.close()


# --- chat output parsing: canned model outputs ----------------------------------------------

# family -> (reasoning_format for apply, canned tool-call output, expected id, expected reasoning,
#            canned plain answer, expected content of the plain answer)
CALL = '{"name": "get_weather", "arguments": {"location": "Paris"}}'
DS = ("<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n"
      '```json\n{"location": "Paris"}```<｜tool▁call▁end｜><｜tool▁calls▁end｜>')
MM = "]<]minimax[>["
ANSWER = "It is sunny in Paris."
CANNED: dict[str, tuple[str, str, str | None, str | None, str, str]] = {
    "qwen2.5-hermes": ("none", f"<tool_call>\n{CALL}\n</tool_call>", None, None, ANSWER, ANSWER),
    "hermes-3": ("none", f"<tool_call>\n{CALL}\n</tool_call>", None, None, ANSWER, ANSWER),
    "llama-3.1": ("none", '{"name": "get_weather", "parameters": {"location": "Paris"}}', None, None,
                  ANSWER, ANSWER),
    "mistral-nemo": ("none", ('[TOOL_CALLS][{"name": "get_weather", "arguments": {"location": "Paris"}, '
                             '"id": "123456789"}]'), "123456789", None, ANSWER, ANSWER),
    "functionary-v3.1": ("none", '<function=get_weather>{"location": "Paris"}</function>', None, None,
                         ANSWER, ANSWER),
    # the generation prompt ends with ">>>": the model writes the recipient first
    "functionary-v3.2": ("none", 'get_weather\n{"location": "Paris"}', None, None, f"all\n{ANSWER}", ANSWER),
    # the generation prompt opens <think>: the model writes the thoughts, then </think>
    "deepseek-r1": ("deepseek", f"I need the weather tool.</think>{DS}", None, "I need the weather tool.",
                    f"No tool needed.</think>{ANSWER}", ANSWER),
    "command-r7b": ("deepseek", ("<|START_THINKING|>I need the weather tool.<|END_THINKING|><|START_ACTION|>[\n"
                                '    {"tool_call_id": "0", "tool_name": "get_weather", '
                                '"parameters": {"location": "Paris"}}\n]<|END_ACTION|>'),
                    "0", "I need the weather tool.",
                    f"<|START_RESPONSE|>{ANSWER}<|END_RESPONSE|>", ANSWER),
    "command-r-plus": ("none", 'Action:\n```json\n[{"tool_name": "get_weather", "parameters": {"location": "Paris"}}]\n```',
                       None, None, f"<|CHATBOT_TOKEN|>{ANSWER}<|END_OF_TURN_TOKEN|>", ANSWER),
    "granite-4.0": ("none", f"<tool_call>\n{CALL}\n</tool_call>", None, None, ANSWER, ANSWER),
    "qwen3-coder": ("none", ("<tool_call>\n<function=get_weather>\n<parameter=location>\nParis\n</parameter>\n"
                            "</function>\n</tool_call>"), None, None, ANSWER, ANSWER),
    "gpt-oss": ("auto", '<|channel|>commentary to=functions.get_weather<|message|>{"location": "Paris"}',
                None, None, f"<|channel|>final<|message|>{ANSWER}", ANSWER),
    "gemma-4": ("auto", '<|tool_call>call:get_weather{location:<|"|>Paris<|"|>}<tool_call|>', None, None,
                ANSWER, ANSWER),
    "minimax-m3": ("auto", (f'</mm:think>{MM}<tool_call>\n{MM}<invoke name="get_weather">{MM}<location>Paris'
                           f"{MM}</location>{MM}</invoke>\n{MM}</tool_call>"), None, None,
                   f"</mm:think>{ANSWER}", ANSWER),
}


def apply_with_tools(family: str, cache: dict[str, ChatTemplates]) -> dict[str, Any]:
    reasoning_format = CANNED[family][0]
    return templates_for(family, cache).apply({
        "messages": [{"role": "user", "content": USER_TEXT}], "tools": [WEATHER_TOOL],
        "tool_choice": "auto", "reasoning_format": reasoning_format})


@pytest.mark.parametrize("family", list(CANNED))
def test_canned_tool_call_parses(family: str, family_templates: dict[str, ChatTemplates]) -> None:
    _, text, call_id, reasoning, _, _ = CANNED[family]
    params = apply_with_tools(family, family_templates)
    message = chat_parse(text, params)
    assert message["role"] == "assistant"
    assert not message.get("content")
    calls = message["tool_calls"]
    assert len(calls) == 1
    assert calls[0]["type"] == "function"
    assert calls[0]["function"]["name"] == "get_weather"
    assert json.loads(calls[0]["function"]["arguments"]) == {"location": "Paris"}
    if call_id is not None:
        assert calls[0]["id"] == call_id
    if reasoning is not None:
        assert message["reasoning_content"].strip() == reasoning


@pytest.mark.parametrize("family", list(CANNED))
def test_canned_plain_answer_parses_to_content_only(family: str,
                                                    family_templates: dict[str, ChatTemplates]) -> None:
    _, _, _, _, text, content = CANNED[family]
    message = chat_parse(text, apply_with_tools(family, family_templates))
    assert message["content"] == content
    assert not message.get("tool_calls")


@pytest.mark.parametrize("family", list(CANNED))
def test_a_loaded_chat_parser_answers_like_chat_parse_every_time(family: str,
                                                                family_templates: dict[str, ChatTemplates]) -> None:
    _, call, _, _, answer, _ = CANNED[family]
    params = apply_with_tools(family, family_templates)
    parser = ChatParser(params)
    for text in (call, answer, call):  # one parser, many texts, as a stream uses it
        for end in sorted({1, len(text) // 2, len(text)}):
            assert parser.parse(text[:end], partial=True) == chat_parse(text[:end], params, partial=True)
        assert parser.parse(text) == chat_parse(text, params)
    parser.close()
    with pytest.raises(ClosedError):
        parser.parse(answer)


@pytest.mark.parametrize("family", ["qwen2.5-hermes", "mistral-nemo", "deepseek-r1", "qwen3-coder", "gpt-oss"])
def test_streaming_prefixes_parse_partially(family: str, family_templates: dict[str, ChatTemplates]) -> None:
    """Every prefix of a tool call parses with partial=True; the name never changes once seen."""
    text = CANNED[family][1]
    params = apply_with_tools(family, family_templates)
    for end in range(1, len(text) + 1):
        message = chat_parse(text[:end], params, partial=True)
        for call in message.get("tool_calls", []):
            name = call["function"]["name"]
            assert "get_weather".startswith(name), (end, name)
    assert chat_parse(text, params)["tool_calls"][0]["function"]["name"] == "get_weather"


def test_parse_without_parser_is_content_only() -> None:
    assert chat_parse("just text <tool_call>", {"format": 0}) == {"role": "assistant", "content": "just text <tool_call>"}


def test_broken_parser_is_a_typed_error() -> None:
    with pytest.raises(InvalidRequestError):
        chat_parse("hello", {"format": 2, "parser": "not a serialized parser"})


# --- crashes: run in a child process so a native abort cannot take the test run down -------

def run_child(code: str, model_path: Path | None = None) -> subprocess.CompletedProcess[str]:
    prelude = f"MODEL = {str(model_path)!r}\n" if model_path else ""
    return subprocess.run([sys.executable, "-c", prelude + code], check=False, capture_output=True, text=True,
                          timeout=120, cwd=tempfile.gettempdir())  # not the checkout: it would shadow the installed package


def test_templates_without_model_or_override_raise() -> None:
    result = run_child(
        "from botframework.native.shim import ChatTemplates\n"
        "from botframework.errors import BotframeworkError\n"
        "try:\n    ChatTemplates(None)\nexcept (BotframeworkError, ValueError) as exc:\n    print('raised', type(exc).__name__)\n")
    assert result.returncode == 0 and "raised" in result.stdout, result.stderr[-2000:]


def test_unsatisfiable_grammar_does_not_abort(model_path: Path) -> None:
    result = run_child(
        "from botframework.native import Model, Context, ContextParams, Batch, SamplerChain, SamplerSpec\n"
        "from botframework.specs import GrammarSpec\n"
        "from botframework.errors import BotframeworkError\n"
        "m = Model(MODEL); ctx = Context(m, ContextParams(n_ctx=256, n_batch=64, n_threads=2))\n"
        "b = Batch(8); i = b.add_sequence(m.tokenize('Hello'), 0, 0, True); ctx.decode(b)\n"
        "s = SamplerChain(m, SamplerSpec(temperature=0.0, grammar=GrammarSpec('root ::= [\\\\x00]')))\n"
        "try:\n    s.sample(ctx, i)\nexcept BotframeworkError as exc:\n    print('raised', type(exc).__name__)\n",
        model_path)
    assert result.returncode == 0 and "raised" in result.stdout, result.stderr[-2000:]


def test_accepting_a_rejected_token_does_not_abort(model_path: Path) -> None:
    result = run_child(
        "from botframework.native import Model, SamplerChain, SamplerSpec\n"
        "from botframework.specs import GrammarSpec\n"
        "from botframework.errors import BotframeworkError\n"
        "m = Model(MODEL)\n"
        "s = SamplerChain(m, SamplerSpec(temperature=0.0, grammar=GrammarSpec('root ::= \"a\"')))\n"
        "try:\n    s.accept(m.tokenize('b', add_special=False)[0])\n"
        "except BotframeworkError as exc:\n    print('raised', type(exc).__name__)\n",
        model_path)
    assert result.returncode == 0 and "raised" in result.stdout, result.stderr[-2000:]
