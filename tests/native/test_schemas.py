"""JSON Schema support without generating: the fail-closed check, the published capability
list, response_format forms, and the grammar sampler's shortcuts against the plain method.

    corpus schema --check_schema--> ok | UnsupportedSchemaError(problems naming each keyword)
    ENFORCED_KEYWORDS == what the corpus exercises (no capability is claimed untested)
    SamplerChain(grammar) fast paths  ==  grammar over every candidate, then greedy (token by token)
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from schema_corpus import RECURSIVE, SUPPORTED, UNSUPPORTED  # noqa: E402

from botframework.chat.schema import (  # noqa: E402
    ENFORCED_KEYWORDS,
    SCHEMA_CAPABILITIES,
    SchemaValidator,
    check_schema,
    pattern_problem,
    schema_grammar,
)
from botframework.chat.structured import JSON_OBJECT_SCHEMA, structured_output  # noqa: E402
from botframework.errors import (  # noqa: E402
    GrammarError,
    InvalidRequestError,
    OutputValidationError,
    UnsupportedSchemaError,
)
from botframework.native import (  # noqa: E402
    Batch,
    Context,
    ContextParams,
    Model,
    SamplerChain,
    SamplerSpec,
)
from botframework.native import sampler as sampler_module  # noqa: E402
from botframework.native.shim import ChatTemplates  # noqa: E402
from botframework.specs import GrammarSpec  # noqa: E402


@pytest.mark.parametrize("name,schema", [(n, s) for n, _, s in SUPPORTED] + [("recursive", RECURSIVE)],
                         ids=[n for n, _, _ in SUPPORTED] + ["recursive"])
def test_supported_schemas_pass_and_convert(name: str, schema: dict[str, Any]) -> None:
    check_schema(schema)
    assert "root ::=" in schema_grammar(schema)


@pytest.mark.parametrize("name,schema,fragments", UNSUPPORTED, ids=[u[0] for u in UNSUPPORTED])
def test_unsupported_schemas_are_refused_naming_why(name: str, schema: dict[str, Any],
                                                    fragments: tuple[str, ...]) -> None:
    with pytest.raises(UnsupportedSchemaError) as info:
        schema_grammar(schema)
    assert isinstance(info.value, InvalidRequestError)  # -> HTTP 400
    assert info.value.param == "response_format"
    for fragment in fragments:
        assert fragment in str(info.value)
    assert all(problem.startswith("#") for problem in info.value.problems)


def test_several_problems_are_all_listed() -> None:
    schema = {"type": "object", "properties": {
        "a": {"type": "string", "pattern": "^\\d$"}, "b": {"type": "number", "maximum": 3},
        "c": {"type": "array", "items": {"type": "string", "format": "uri"}, "uniqueItems": True}}}
    with pytest.raises(UnsupportedSchemaError) as info:
        check_schema(schema)
    assert sorted(p.split(":")[0] for p in info.value.problems) == [
        "#/properties/a", "#/properties/b", "#/properties/c", "#/properties/c/items"], info.value.problems


@pytest.mark.parametrize("schema", [{"type": "wizard"}, {"type": "object", "properties": 5},
                                    {"type": "integer", "minimum": "ten"}, {"enum": []}, 5])
def test_invalid_schemas_are_grammar_errors_not_problem_lists(schema: Any) -> None:
    with pytest.raises(GrammarError) as info:
        schema_grammar(schema)
    assert not isinstance(info.value, UnsupportedSchemaError)


def keywords_in(schema: Any) -> Iterator[str]:
    if isinstance(schema, dict):
        for key, value in schema.items():
            yield key
            if key in ("properties", "$defs", "definitions"):
                for sub in value.values():
                    yield from keywords_in(sub)
            elif key not in ("enum", "const", "required", "examples", "default"):
                yield from keywords_in(value)
    elif isinstance(schema, list):
        for item in schema:
            yield from keywords_in(item)


def test_every_published_keyword_is_exercised_by_the_corpus() -> None:
    used = {k for _, _, schema in SUPPORTED for k in keywords_in(schema)}
    assert set(ENFORCED_KEYWORDS) <= used, set(ENFORCED_KEYWORDS) - used
    assert SCHEMA_CAPABILITIES["enforced_keywords"] is ENFORCED_KEYWORDS
    assert SCHEMA_CAPABILITIES["formats"] == ["date", "time", "date-time", "uuid"]


@pytest.mark.parametrize("pattern,reason", [
    ("^[a-z]{2,4}$", None), ("^(ab|cd)+x?$", None), ("^a.b$", None),
    ("^\\d+$", "\\d"), ("^\\s*$", "\\s"), ("[a-z]+", "anchored"), ("^(?!x).$", "lookaround"),
    ("^(a)\\1$", "backreference"), ("^(a$", "not a valid"),
])
def test_pattern_support_comes_from_the_converter(pattern: str, reason: str | None) -> None:
    problem = pattern_problem(pattern)
    if reason is None:
        assert problem is None
    else:
        assert problem is not None and reason in problem


def test_response_format_forms() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    assert structured_output({"type": "text"}) is None
    assert structured_output({"type": "json_object"}).schema == JSON_OBJECT_SCHEMA  # type: ignore[union-attr]
    assert structured_output({"type": "json_object", "schema": schema}).schema == schema  # type: ignore[union-attr]
    out = structured_output({"type": "json_schema", "json_schema": {"name": "thing", "schema": schema,
                                                                    "strict": True}})
    assert out is not None and out.schema == schema and out.name == "thing"
    assert structured_output({"mode": "structured", "schema": schema}).schema == schema  # type: ignore[union-attr]
    for bad in ({"type": "json_schema"}, {"type": "json_schema", "json_schema": {"name": "x"}}, {"type": "yaml"},
                {"mode": "free"}, {"mode": "structured"}, "json"):
        with pytest.raises(InvalidRequestError):
            structured_output(bad)
    with pytest.raises(UnsupportedSchemaError):
        structured_output({"mode": "structured", "schema": {"type": "string", "format": "email"}})


def test_pydantic_class_schema_and_instances() -> None:
    from pydantic import BaseModel, Field

    class Item(BaseModel):
        name: str = Field(max_length=10)
        count: int = Field(ge=0)

    out = structured_output(Item)
    assert out is not None and out.model_class is Item
    assert out.parse('{"name": "pen", "count": 2}') == Item(name="pen", count=2)
    with pytest.raises(OutputValidationError):
        out.parse('{"name": "pen", "count": -2}')
    with pytest.raises(OutputValidationError):
        out.parse('{"name": "pen", "count": 2')


def test_validator_checks_formats() -> None:
    validator = SchemaValidator({"type": "string", "format": "date"})
    assert validator.parse('"2024-02-29"') == "2024-02-29"
    with pytest.raises(OutputValidationError):
        validator.parse('"2023-02-30"')


# --- the grammar sampler -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def context(model: Model) -> Iterator[Context]:
    with Context(model, ContextParams(n_ctx=1024, n_batch=512, n_threads=2, n_threads_batch=2)) as ctx:
        yield ctx


def decode_prompt(model: Model, ctx: Context, prompt: str) -> tuple[Batch, int, int]:
    ctx.memory.clear()
    tokens = model.tokenize(prompt, add_special=True, parse_special=True)
    batch = Batch(len(tokens))
    index = batch.add_sequence(tokens, 0, 0, logits_last=True)
    ctx.decode(batch)
    return batch, index, len(tokens)


def test_prefill_feeds_the_generation_prompt_to_the_grammar(model: Model, context: Context) -> None:
    with ChatTemplates(model) as templates:
        params = templates.apply({"messages": [{"role": "user", "content": "Give JSON."}],
                                  "json_schema": {"type": "object", "properties": {"ok": {"type": "boolean"}},
                                                  "required": ["ok"]}})
    spec = GrammarSpec(params["grammar"], prefill=params["generation_prompt"])
    _, index, _ = decode_prompt(model, context, params["prompt"])
    with SamplerChain(model, SamplerSpec(temperature=0.0, grammar=spec)) as sampler:
        first = model.token_to_piece(sampler.sample(context, index)).decode()
    assert "<|im_start|>" not in first and "assistant" not in first
    # without the prefill the grammar wants the generation prompt as text
    with SamplerChain(model, SamplerSpec(temperature=0.0, grammar=GrammarSpec(params["grammar"]))) as sampler:
        piece = model.token_to_piece(sampler.sample(context, index), special=True).decode()
        assert piece and "<|im_start|>assistant\n".startswith(piece)
    # a prefill the grammar does not start with is refused when the sampler is built
    with pytest.raises(GrammarError):
        SamplerChain(model, SamplerSpec(grammar=GrammarSpec(params["grammar"], prefill="<|im_start|>user\n")))
    # lazy grammars are never prefilled (upstream: only output-format and tool-call grammars)
    SamplerChain(model, SamplerSpec(grammar=GrammarSpec('root ::= "x"', lazy=True, trigger_patterns=("x",),
                                                        prefill="anything"))).close()


@pytest.mark.parametrize("sampling", ["greedy", "greedy-penalty", "sampled"])
def test_grammar_shortcuts_choose_what_the_full_grammar_would(model: Model, context: Context,
                                                              monkeypatch: pytest.MonkeyPatch, sampling: str) -> None:
    """Greedy: every token equals argmax over the grammar-masked vocabulary (the plain way).
    Sampled: every token is allowed, and the shortcuts were taken."""
    spec_base = {"greedy": SamplerSpec(temperature=0.0),
                 "greedy-penalty": SamplerSpec(temperature=0.0, repeat_penalty=1.3, logit_bias={11: 2.0}),
                 "sampled": SamplerSpec(temperature=0.9, seed=5)}[sampling]
    counts = {"fast": 0, "kept": 0, "short": 0, "full": 0}
    for name, prompt, schema in SUPPORTED[::5]:
        gbnf = schema_grammar(schema)
        spec = SamplerSpec(temperature=spec_base.temperature, seed=spec_base.seed,
                           repeat_penalty=spec_base.repeat_penalty, logit_bias=spec_base.logit_bias,
                           grammar=GrammarSpec(gbnf))
        batch, index, pos = decode_prompt(model, context, f"<|im_start|>user\n{prompt} Reply in JSON.<|im_end|>\n"
                                                          "<|im_start|>assistant\n")
        with SamplerChain(model, spec) as ours:
            monkeypatch.setattr(sampler_module, "GRAMMAR_TIERS", ())
            monkeypatch.setattr(sampler_module, "GREEDY_PROBES", 0)
            plain = SamplerChain(model, spec)  # no tiers, no probes: grammar over everything
            monkeypatch.undo()
            for _ in range(48):
                if spec.greedy:
                    expected = reference_greedy(plain, context, index)
                token = ours.sample(context, index)
                if spec.greedy:
                    assert token == expected, (name, model.detokenize([token]), model.detokenize([expected]))
                    plain.accept(token)
                if model.is_eog(token):
                    break
                batch.clear()
                index = batch.add(token, pos, 0, want_logits=True)
                pos += 1
                context.decode(batch)
            plain.close()
            counts["fast"] += ours.num_grammar_fast
            counts["kept"] += ours.num_grammar_kept
            counts["short"] += ours.num_grammar_short
            counts["full"] += ours.num_grammar_full
    assert counts["fast"] > 0 and counts["kept"] + counts["short"] > 0, counts


def reference_greedy(plain: SamplerChain, context: Context, index: int) -> int:
    """argmax of the adjusted logits over every token the grammar allows (nothing accepted)."""
    cand = np.zeros(len(plain._ids), dtype=sampler_module._TOKEN_DATA)  # its own: not the samplers' scratch
    cand["id"] = plain._ids
    cand["logit"] = np.array(context.logits_ith(index), dtype=np.float32)
    array = plain._array
    data = sampler_module.ffi.cast("llama_token_data *", sampler_module.ffi.from_buffer(cand))
    array.data, array.size, array.selected, array.sorted = data, len(cand), -1, False
    sampler_module.lib().llama_sampler_apply(plain._pre, array)  # bias, penalties (its own history)
    sampler_module.lib().llama_sampler_apply(plain._grammar, array)
    return int(cand["id"][int(np.argmax(cand["logit"]))])


def _grammar_takes(model: Model, gbnf: str, text: str) -> bool:
    """The grammar accepts every token of `text` in turn (a prefix check: enough to see a rejection)."""
    with SamplerChain(model, SamplerSpec(temperature=0.0, grammar=GrammarSpec(gbnf))) as chain:
        for token in model.tokenize(text, add_special=False):
            try:
                chain.accept(token)
            except GrammarError:
                return False
    return True


@pytest.mark.parametrize("fmt, suffix", [("date", ""), ("date-time", "T10:20:30Z")])
def test_format_date_takes_only_calendar_dates(model: Model, fmt: str, suffix: str) -> None:
    """llama.cpp's `date` rule took 2023-02-30 and year 0000 (then validation failed: a 500);
    chat.schema.calendar_dates replaces it. The validator is Python's date, as jsonschema's."""
    import datetime

    gbnf = schema_grammar({"type": "string", "format": fmt})
    assert "bf-date-leap-year ::=" in gbnf  # the replacement happened
    validator = SchemaValidator({"type": "string", "format": fmt})
    cases = ["2023-02-28", "2023-02-29", "2023-02-30", "2024-02-29", "2000-02-29", "1900-02-29", "2400-02-29",
             "0004-02-29", "0000-01-01", "0001-01-01", "9999-12-31", "2023-04-31", "2023-04-30", "2023-06-31",
             "2023-11-31", "2023-12-31", "2023-13-01", "2023-00-10", "2023-01-00", "2023-01-32", "2023-08-31"]
    for day in cases:
        try:
            datetime.date.fromisoformat(day)
            real = True
        except ValueError:
            real = False
        text = json.dumps(day + suffix)
        assert _grammar_takes(model, gbnf, text) == real, day
        if real:
            assert validator.parse(text) == day + suffix  # what the grammar takes, validation takes


@pytest.mark.parametrize("fmt, prefix", [("time", ""), ("date-time", "2024-02-29T")])
def test_format_time_grammar_within_validator(model: Model, fmt: str, prefix: str) -> None:
    """llama.cpp's `time` rule (hours 00-23, minutes and seconds 00-59, an optional 3-digit
    fraction, Z or an offset up to 23:59) is narrower than the validator (rfc3339-validator takes
    any fraction and a lowercase z): whatever the grammar takes must validate, and the parts the
    validator refuses (hour 24, minute or second 60, offset hour 24) the grammar refuses too.
    So no generated time can fail validation after the fact."""
    gbnf = schema_grammar({"type": "string", "format": fmt})
    validator = SchemaValidator({"type": "string", "format": fmt})
    taken = ["00:00:00Z", "23:59:59Z", "12:34:56.789Z", "12:34:56+05:30", "07:08:09-23:59", "19:00:00.000+00:00"]
    for time in taken:
        text = json.dumps(prefix + time)
        assert _grammar_takes(model, gbnf, text), time
        assert validator.parse(text) == prefix + time
    for time in ["24:00:00Z", "12:60:00Z", "12:00:60Z", "12:00:00+24:00", "12:00:00+05:60", "1:02:03Z"]:
        text = json.dumps(prefix + time)
        assert not _grammar_takes(model, gbnf, text), time
        assert validator.errors(prefix + time), time  # the validator refuses it too
