"""Input nested deep enough to overflow a native stack is refused before llama.cpp sees it.

llama.cpp parses grammars, JSON schemas and chat output recursively: a raw grammar nested
20,000 groups deep, a chain of 100,000 rules, or a model answer of 20,000 nested brackets
killed the whole process (SIGSEGV) before these limits. The crash cases run in a child
process, so that a regression fails one test instead of ending the test run.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from botframework.chat.jsoncalls import find_calls
from botframework.chat.schema import MAX_SCHEMA_DEPTH, check_schema, json_depth
from botframework.errors import GrammarError, InvalidRequestError
from botframework.native.shim import MAX_PARSE_NESTING, bracket_depth, chat_parse
from botframework.specs import (
    MAX_GRAMMAR_NESTING,
    MAX_GRAMMAR_RULES,
    GrammarSpec,
    check_gbnf_limits,
)

TEMPLATE = Path(__file__).resolve().parents[2] / "vendor" / "llama.cpp" / "models" / "templates" / \
    "Qwen-Qwen2.5-7B-Instruct.jinja"


def run_child(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300,
                          cwd=tempfile.gettempdir())  # not the checkout: it would shadow the installed package


def nested_grammar(depth: int) -> str:
    return "root ::= " + "(" * depth + '"a"' + ")" * depth + "\n"


def rule_chain(n: int) -> str:
    return "root ::= r0\n" + "".join(f"r{i} ::= r{i + 1}\n" for i in range(n)) + f'r{n} ::= "a"\n'


def test_grammar_limits_count_only_real_groups_and_rules() -> None:
    check_gbnf_limits(nested_grammar(MAX_GRAMMAR_NESTING))
    check_gbnf_limits('root ::= "((((::=" [(((] # (((( ::=\n' * 3)  # in strings, classes and comments
    with pytest.raises(GrammarError, match="nests groups 257 deep"):
        GrammarSpec(nested_grammar(MAX_GRAMMAR_NESTING + 1))
    with pytest.raises(GrammarError, match=f"{MAX_GRAMMAR_RULES + 2} rules"):
        GrammarSpec(rule_chain(MAX_GRAMMAR_RULES))


def test_grammars_that_crashed_llama_are_refused(model_path: Path) -> None:
    result = run_child(
        "from botframework.errors import GrammarError\n"
        "from botframework.native import Model, SamplerChain, SamplerSpec\n"
        "from botframework.specs import GrammarSpec\n"
        f"model = Model({str(model_path)!r})\n"
        f"for gbnf in ({nested_grammar(20_000)!r}, "
        "'root ::= r0\\n' + ''.join(f'r{i} ::= r{i + 1}\\n' for i in range(60_000)) + 'r60000 ::= \"a\"\\n'):\n"
        "    try:\n"
        "        SamplerChain(model, SamplerSpec(temperature=0, grammar=GrammarSpec(gbnf)))\n"
        "        print('built')\n"
        "    except GrammarError as exc:\n"
        "        print('refused:', exc)\n")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("refused:") == 2, result.stdout


def test_schema_depth_is_limited_before_any_recursive_checker() -> None:
    def nested(levels: int) -> dict:  # type: ignore[type-arg]
        schema: dict = {"type": "string"}  # type: ignore[type-arg]
        for _ in range(levels):
            schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
        return schema

    check_schema(nested(MAX_SCHEMA_DEPTH // 2 - 1))
    assert json_depth(nested(5000)) == 2 * 5000 + 1
    with pytest.raises(GrammarError, match="nests 10001 levels deep"):
        check_schema(nested(5000))  # jsonschema alone raised RecursionError (a 500) from ~100 levels


def test_deeply_nested_model_output_is_content_not_a_crash() -> None:
    text = '<tool_call>\n{"name": "get_weather", "arguments": ' + "[" * 20_000 + "]" * 20_000 + "}\n</tool_call>"
    assert bracket_depth(text) == 20_001 and bracket_depth('"[[[" [ ] ] ] [') == 1
    assert bracket_depth("]" * 5 + "[" * 3) == 3  # stray closers do not hide what opens after them
    with pytest.raises(InvalidRequestError, match="nests 20000 brackets deep"):
        chat_parse("]" * 20_000 + "[" * 20_000, {})
    with pytest.raises(InvalidRequestError, match="nests 20001 brackets deep"):
        chat_parse(text, {})
    assert find_calls(text, frozenset({"get_weather"}), partial=False, anywhere=True) is None
    assert find_calls("[" * 20_000, frozenset({"get_weather"}), partial=False, anywhere=True) is None
    shallow = 'Sure ] ]: {"name": "get_weather", "arguments": {"city": [[["Paris"]]]}}'
    found = find_calls(shallow, frozenset({"get_weather"}), partial=False, anywhere=True)
    assert found is not None and [c.name for c in found.calls] == ["get_weather"]


def test_native_chat_parser_is_never_handed_output_that_crashed_it() -> None:
    depth = MAX_PARSE_NESTING * 200
    result = run_child(
        "from pathlib import Path\n"
        "from botframework.errors import InvalidRequestError\n"
        "from botframework.native.shim import ChatTemplates, chat_parse\n"
        f"templates = ChatTemplates(None, template_override=Path({str(TEMPLATE)!r}).read_text())\n"
        "tool = {'type': 'function', 'function': {'name': 'get_weather', 'parameters': {'type': 'object',"
        " 'properties': {'city': {'type': 'string'}}}}}\n"
        "params = templates.apply({'messages': [{'role': 'user', 'content': 'hi'}], 'tools': [tool]})\n"
        f"text = '<tool_call>\\n{{\"name\": \"get_weather\", \"arguments\": ' + '[' * {depth} + ']' * {depth} "
        "+ '}\\n</tool_call>'\n"
        "for partial in (False, True):\n"
        "    try:\n"
        "        chat_parse(text, {**params, 'parse_tool_calls': True}, partial=partial)\n"
        "        print('parsed')\n"
        "    except InvalidRequestError:\n"
        "        print('refused')\n")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["refused", "refused"]
