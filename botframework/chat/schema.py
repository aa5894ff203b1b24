"""JSON Schema support: what the grammar enforces, a fail-closed check, output validation.

    schema --check_schema--> [problems] --any?--> UnsupportedSchemaError (HTTP 400, listed)
           --json_schema_to_grammar (llama.cpp common)--> GBNF        (only if none)
    finished output --validate_output (jsonschema)--> value | OutputValidationError

llama.cpp's converter (common/json-schema.cpp, json-schema-to-grammar.cpp) silently ignores
what it does not understand: a `pattern` with \\d becomes "any string" (a stderr warning),
`multipleOf` or `minimum` on a number are dropped, keywords beside `$ref` or `anyOf` vanish.
Each of those would be an unconstrained run, so check_schema walks the schema the way the
converter reads it and names every keyword that would not be enforced. SCHEMA_CAPABILITIES
is the list we publish (GET /v1/capabilities).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import jsonschema
from jsonschema.validators import validator_for

from botframework.errors import (
    GrammarError,
    OutputValidationError,
    UnsupportedSchemaError,
)

# keyword -> how it is enforced (published as-is)
ENFORCED_KEYWORDS: dict[str, str] = {
    "type": "string, number, integer, boolean, null, object, array; a list of types is a union",
    "properties": "each listed property, in the order given",
    "required": "required properties always appear; optional ones may",
    "additionalProperties": "false (the default here: objects are closed), true, or a schema for extra values",
    "items": "a schema for every item, or an array of schemas (a tuple)",
    "prefixItems": "a tuple of item schemas",
    "minItems": "for arrays with an item schema",
    "maxItems": "for arrays with an item schema",
    "enum": "any JSON values",
    "const": "any JSON value",
    "anyOf": "a union of the branches",
    "oneOf": "a union of the branches; that only one matches is checked after generation",
    "allOf": "object schemas (and $refs to them): their properties are merged, all required",
    "$ref": "references into the same document (#/...); recursion is allowed",
    "$defs": "definitions for $ref",
    "definitions": "definitions for $ref",
    "pattern": ("regular expressions anchored with ^ and $, built from literals, [classes], (groups), "
                "(?:groups), |, ?, *, +, {m,n} and . (not \\d \\w \\s \\b, lookarounds, backreferences)"),
    "format": "date, time, date-time, uuid",
    "minLength": "strings without pattern or format",
    "maxLength": "strings without pattern or format",
    "minimum": "integers only",
    "maximum": "integers only",
    "exclusiveMinimum": "integers only",
    "exclusiveMaximum": "integers only",
}
# keywords that describe and do not constrain: accepted and ignored
ANNOTATIONS = frozenset({
    "title", "description", "default", "examples", "example", "$schema", "$id", "$anchor", "$comment",
    "deprecated", "readOnly", "writeOnly", "discriminator", "contentMediaType", "contentEncoding",
    "nullable",
})
FORMATS = ("date", "time", "date-time", "uuid", "uuid1", "uuid2", "uuid3", "uuid4", "uuid5")
SCHEMA_CAPABILITIES: dict[str, Any] = {
    "enforced_keywords": ENFORCED_KEYWORDS,
    "ignored_annotations": sorted(ANNOTATIONS) + ["x-*"],
    "formats": list(FORMATS[:4]),
    "validation": "output that ends with finish_reason 'stop' is validated with jsonschema before it is returned",
    "unsupported": "any other keyword: the request is refused with HTTP 400 naming it",
}

# keywords that only apply to instances of one type: dropped from the other branches of a
# {"type": [...]} union, where JSON Schema ignores them too
_TYPE_KEYWORDS: dict[str, frozenset[str]] = {
    "object": frozenset({"properties", "required", "additionalProperties"}),
    "array": frozenset({"items", "prefixItems", "minItems", "maxItems"}),
    "string": frozenset({"pattern", "format", "minLength", "maxLength"}),
    "integer": frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}),
}
_TYPE_KEYWORDS["number"] = _TYPE_KEYWORDS["integer"]

_UNSUPPORTED_ESCAPE = re.compile(r"\\[dDwWsSbBAZzpPhHvV]")
_BACKREFERENCE = re.compile(r"\\[1-9]|\\k<")


MAX_SCHEMA_DEPTH = 64  # JSON nesting of the schema document (an object property is two levels)


def json_schema_to_grammar(schema: Any) -> str:
    """llama.cpp's JSON Schema -> GBNF converter (native: imported on first use)."""
    from botframework.native.shim import json_schema_to_grammar as convert

    return convert(schema)


def json_depth(value: Any) -> int:
    """Nesting depth of a JSON value (a scalar is 0), without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def check_schema(schema: Any, *, where: str = "#", param: str = "response_format") -> None:
    """Raise UnsupportedSchemaError listing every keyword the grammar would not enforce,
    GrammarError if the schema is not a valid JSON Schema at all."""
    if not isinstance(schema, dict):
        raise GrammarError(f"the JSON schema at {where} must be an object", param=param)
    depth = json_depth(schema)
    if depth > MAX_SCHEMA_DEPTH:  # every checker and converter below recurses per level
        raise GrammarError(f"the JSON schema at {where} nests {depth} levels deep; at most {MAX_SCHEMA_DEPTH} "
                           "are allowed", param=param)
    try:
        validator_for(schema, default=jsonschema.Draft202012Validator).check_schema(schema)
    except jsonschema.SchemaError as exc:
        path = "/".join(str(p) for p in exc.absolute_path)
        raise GrammarError(f"invalid JSON schema at {where}{'/' + path if path else ''}: {exc.message}",
                           param=param) from None
    except RecursionError:  # a `pattern` nested past what Python's regex parser recurses through
        raise GrammarError(f"the JSON schema at {where} has a pattern nested too deeply to check",
                           param=param) from None
    try:
        problems = list(_Walker(schema, where).problems())
    except RecursionError:
        raise GrammarError(f"the JSON schema at {where} has a pattern nested too deeply to enforce",
                           param=param) from None
    if problems:
        listed = "; ".join(problems)
        raise UnsupportedSchemaError(
            f"the JSON schema uses keywords or constructs that cannot be enforced by the grammar: {listed}. "
            "See GET /v1/capabilities for what is supported.", problems=tuple(problems), param=param)


def schema_grammar(schema: dict[str, Any], *, param: str = "response_format") -> str:
    """check_schema, then llama.cpp's conversion to GBNF (with real calendar dates)."""
    check_schema(schema, param=param)
    try:
        return calendar_dates(json_schema_to_grammar(schema))
    except GrammarError as exc:
        raise GrammarError(str(exc), param=param) from None


# llama.cpp's rule for format "date" (and "date-time") takes any day 01-31 of any month, and
# year 0000: 2023-02-30 or 2023-04-31 passed the grammar and then failed validation (a 500).
_LLAMA_DATE_RULE = 'date ::= [0-9]{4} "-" ( "0" [1-9] | "1" [0-2] ) "-" ( "0" [1-9] | [1-2] [0-9] | "3" [0-1] )'
_DATE_RULES = {  # years 0001-9999; February 29 in leap years only (Gregorian, as Python's date)
    "date": 'bf-date-year "-" ( bf-date-m31 "-" bf-date-d31 | bf-date-m30 "-" bf-date-d30 | "02-" bf-date-d28 )'
            ' | bf-date-leap-year "-02-29"',
    "bf-date-year": '[1-9] [0-9]{3} | "0" [1-9] [0-9]{2} | "00" [1-9] [0-9] | "000" [1-9]',
    "bf-date-leap-year": '[0-9] [0-9] bf-date-q | bf-date-q "00"',  # divisible by 4, not by 100 unless by 400
    "bf-date-q": '"0" [48] | [2468] [048] | [13579] [26]',  # 04..96 in steps of 4 (not 00)
    "bf-date-m31": '"0" [13578] | "1" [02]',
    "bf-date-m30": '"0" [469] | "11"',
    "bf-date-d31": '"0" [1-9] | [12] [0-9] | "3" [01]',
    "bf-date-d30": '"0" [1-9] | [12] [0-9] | "30"',
    "bf-date-d28": '"0" [1-9] | "1" [0-9] | "2" [0-8]',
}


def calendar_dates(gbnf: str) -> str:
    """llama.cpp's `date` rule, if the grammar has it, replaced by one that takes only real dates."""
    lines = gbnf.splitlines()
    if _LLAMA_DATE_RULE not in lines or any(line.startswith("bf-date-") for line in lines):
        return gbnf  # no date (or a vendored converter that writes it differently; or our names taken)
    out = [line for line in lines if line != _LLAMA_DATE_RULE]
    out += [f"{name} ::= {body}" for name, body in _DATE_RULES.items()]
    return "\n".join(out) + ("\n" if gbnf.endswith("\n") else "")


class SchemaValidator:
    """Validates finished output against a schema (formats checked too)."""

    def __init__(self, schema: dict[str, Any]) -> None:
        cls = validator_for(schema, default=jsonschema.Draft202012Validator)
        self.schema = schema
        self._validator = cls(schema, format_checker=cls.FORMAT_CHECKER)

    def errors(self, value: Any) -> list[str]:
        return [f"{'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}"
                for e in self._validator.iter_errors(value)]

    def parse(self, text: str) -> Any:
        """The JSON value of `text`; OutputValidationError if it is not JSON or not valid."""
        try:
            value = json.loads(text)
        except (json.JSONDecodeError, TypeError, RecursionError) as exc:
            raise OutputValidationError(f"the model output is not valid JSON: {exc}", output=text) from None
        try:
            errors = self.errors(value)
        except RecursionError:  # a recursive schema ($ref) and output nested past Python's stack
            raise OutputValidationError("the model output nests too deeply to validate", output=text) from None
        if errors:
            raise OutputValidationError("the model output does not match the JSON schema: " + "; ".join(errors[:5]),
                                        output=text)
        return value


# --- the walk -------------------------------------------------------------------------------

class _Walker:
    """Reads a schema the way common/json-schema.cpp builds its nodes, noting what it drops."""

    def __init__(self, root: dict[str, Any], where: str) -> None:
        self.root = root
        self.where = where
        self._seen_refs: set[str] = set()

    def problems(self) -> Iterator[str]:
        yield from self._visit(self.root, self.where)

    def _visit(self, schema: Any, path: str) -> Iterator[str]:
        if not isinstance(schema, dict):
            yield f"{path}: boolean schemas are not supported here (use an object schema)"
            return
        keys = {k for k in schema if k not in ANNOTATIONS and not k.startswith("x-")}
        unknown = sorted(k for k in keys if k not in ENFORCED_KEYWORDS)
        for key in unknown:
            yield f"{path}: '{key}' is not enforced"
        keys -= set(unknown)
        keys -= {"$defs", "definitions"}
        if "$ref" in schema:
            yield from _ignored(path, keys - {"$ref"}, "beside '$ref'")
            yield from self._visit_ref(schema["$ref"], path)
            return
        if "oneOf" in schema or "anyOf" in schema:
            key = "oneOf" if "oneOf" in schema else "anyOf"
            yield from _ignored(path, keys - {key}, f"beside '{key}'")
            for i, branch in enumerate(_as_list(schema[key])):
                yield from self._visit(branch, f"{path}/{key}/{i}")
            return
        types = schema.get("type")
        if isinstance(types, list):
            for t in types:
                others = frozenset().union(*(kw for name, kw in _TYPE_KEYWORDS.items() if name != t))
                own = _TYPE_KEYWORDS.get(t, frozenset())
                yield from self._visit({k: v for k, v in schema.items() if k in own or k not in others}
                                       | {"type": t}, f"{path}(type {t})")
            return
        if "const" in schema or "enum" in schema:
            key = "const" if "const" in schema else "enum"
            yield from _ignored(path, keys - {key, "type"}, f"beside '{key}'")
            return
        yield from self._visit_typed(schema, keys, types if isinstance(types, str) else "", path)

    def _visit_typed(self, schema: dict[str, Any], keys: set[str], type_name: str, path: str) -> Iterator[str]:
        has_properties = "properties" in schema or schema.get("additionalProperties", True) is not True
        kind = type_name
        if not kind:
            if has_properties:
                kind = "object"
            elif "allOf" in schema:
                kind = "allOf"
            elif "items" in schema or "prefixItems" in schema:
                kind = "array"
            elif keys & {"pattern", "minLength", "maxLength", "format"}:
                kind = "string"
            else:
                yield from _ignored(path, keys - {"type"}, "without a 'type' they apply to")
                return
        if kind in ("object", "string") and "allOf" in schema and not (kind == "object" and has_properties):
            kind = "allOf"
        if kind == "allOf":
            yield from _ignored(path, keys - {"allOf", "type"}, "beside 'allOf'")
            yield from self._visit_all_of(schema["allOf"], path)
        elif kind == "object":
            yield from self._visit_object(schema, keys, path)
        elif kind == "array":
            yield from self._visit_array(schema, keys, path)
        elif kind == "string":
            yield from self._visit_string(schema, keys, path)
        elif kind == "integer":
            yield from _ignored(path, keys - {"type", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"},
                                "for an integer")
            if "minimum" in schema and "exclusiveMinimum" in schema:
                yield f"{path}: 'exclusiveMinimum' beside 'minimum' is not enforced"
            if "maximum" in schema and "exclusiveMaximum" in schema:
                yield f"{path}: 'exclusiveMaximum' beside 'maximum' is not enforced"
        else:  # number, boolean, null
            yield from _ignored(path, keys - {"type"}, f"for a {kind}" + (" (bounds are enforced for integers only)"
                                                                      if kind == "number" else ""))

    def _visit_ref(self, ref: Any, path: str) -> Iterator[str]:
        if not isinstance(ref, str) or not ref.startswith("#/"):
            yield f"{path}: only local references ('#/...') are supported, not {ref!r}"
            return
        if ref in self._seen_refs:
            return
        self._seen_refs.add(ref)
        target = self._resolve(ref)
        if target is None:
            yield f"{path}: cannot resolve $ref {ref!r}"
            return
        yield from self._visit(target, ref)

    def _resolve(self, ref: str) -> Any:
        node: Any = self.root
        for raw in ref[2:].split("/"):
            part = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return None
        return node

    def _visit_object(self, schema: dict[str, Any], keys: set[str], path: str) -> Iterator[str]:
        yield from _ignored(path, keys - {"type", "properties", "required", "additionalProperties"}, "for an object")
        properties = schema.get("properties", {})
        if not isinstance(properties, dict):
            return
        for name in schema.get("required", []) or []:
            if name not in properties:
                yield f"{path}: required property {name!r} is not listed in 'properties'"
        for name, sub in properties.items():
            yield from self._visit(sub, f"{path}/properties/{name}")
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            yield from self._visit(extra, f"{path}/additionalProperties")

    def _visit_array(self, schema: dict[str, Any], keys: set[str], path: str) -> Iterator[str]:
        yield from _ignored(path, keys - {"type", "items", "prefixItems", "minItems", "maxItems"}, "for an array")
        key = "items" if "items" in schema else "prefixItems" if "prefixItems" in schema else None
        items = schema.get(key) if key else None
        if "items" in schema and "prefixItems" in schema:
            yield f"{path}: 'items' beside 'prefixItems' is not enforced"
        if isinstance(items, list):  # a tuple: exactly these items, counts must agree
            n = len(items)
            if schema.get("minItems", 0) > n or schema.get("maxItems", n) < n:
                yield f"{path}: 'minItems'/'maxItems' disagree with the {n} tuple items and are not enforced"
            for i, sub in enumerate(items):
                yield from self._visit(sub, f"{path}/{key}/{i}")
        elif items is not None:
            yield from self._visit(items, f"{path}/{key}")

    def _visit_string(self, schema: dict[str, Any], keys: set[str], path: str) -> Iterator[str]:
        yield from _ignored(path, keys - {"type", "pattern", "format", "minLength", "maxLength"}, "for a string")
        if "pattern" in schema:
            yield from _ignored(path, keys & {"format", "minLength", "maxLength"}, "beside 'pattern'")
            reason = pattern_problem(schema["pattern"])
            if reason:
                yield f"{path}: pattern {schema['pattern']!r} {reason}"
        elif "format" in schema:
            if schema["format"] not in FORMATS:
                yield (f"{path}: format {schema['format']!r} is not enforced "
                       f"(supported: {', '.join(FORMATS[:4])})")
            else:
                yield from _ignored(path, keys & {"minLength", "maxLength"}, "beside 'format'")

    def _visit_all_of(self, members: Any, path: str) -> Iterator[str]:
        targets: list[Any] = []
        for i, member in enumerate(_as_list(members)):
            sub = f"{path}/allOf/{i}"
            target = member
            if isinstance(member, dict) and "$ref" in member and isinstance(member["$ref"], str):
                target = self._resolve(member["$ref"]) if member["$ref"].startswith("#/") else None
            targets.append(target)
            alternatives = target.get("anyOf") if isinstance(target, dict) and "anyOf" in target else [target]
            for alt in _as_list(alternatives):
                if not _is_object_schema(alt):
                    yield f"{sub}: only object schemas can be combined with 'allOf'"
                    break
            yield from self._visit(member, sub)
        # the merged object has every member's properties: a closed member rejects the others'
        names = {name for t in targets if isinstance(t, dict) for name in (t.get("properties") or {})}
        for i, target in enumerate(targets):
            if isinstance(target, dict) and target.get("additionalProperties") is False:
                missing = sorted(names - set(target.get("properties") or {}))
                if missing:
                    yield (f"{path}/allOf/{i}: 'additionalProperties': false rejects {', '.join(map(repr, missing))} "
                           "of the other allOf members: no object can match")


def _is_object_schema(schema: Any) -> bool:
    return isinstance(schema, dict) and (schema.get("type") == "object" or "properties" in schema)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _ignored(path: str, keys: set[str], where: str) -> Iterator[str]:
    for key in sorted(keys):
        yield f"{path}: '{key}' {where} is not enforced"


@lru_cache(maxsize=512)
def pattern_problem(pattern: Any) -> str | None:
    """Why the converter would not enforce `pattern`, or None if it would.

    The converter itself is the oracle: an unsupported pattern turns into `root ::= string`
    (any string; a supported one is always `root ::= "\"" (...) "\""`). The reasons below
    only make the message helpful.
    """
    if not isinstance(pattern, str):
        return "is not a string"
    try:
        grammar = json_schema_to_grammar({"type": "string", "pattern": pattern})
    except GrammarError as exc:
        return f"is not a valid regular expression ({exc})"
    if "\nroot ::= string\n" not in "\n" + grammar:
        return None
    if not (pattern.startswith("^") and pattern.endswith("$")):
        return "must be anchored with '^' at the start and '$' at the end"
    escape = _UNSUPPORTED_ESCAPE.search(pattern)
    if escape:
        return f"uses {escape.group()}, which is not supported (write a class such as [0-9] or [A-Za-z0-9_])"
    if _BACKREFERENCE.search(pattern):
        return "uses a backreference, which is not supported"
    if "(?" in pattern.replace("(?:", ""):
        return "uses a lookaround, named group or inline flag, which is not supported"
    return "uses a construct the grammar converter does not support"

