"""JSON schemas for the structured-output tests and benchmark: shapes people actually send.

SUPPORTED: every keyword is enforced by the grammar; strings, arrays and integers are
bounded so that a 135M model finishes each answer in a few dozen tokens.
RECURSIVE: converts (recursion through $ref), but nothing bounds its depth: a small model
may nest past any max_tokens, so it is checked once, greedy, not in the 10x corpus.
UNSUPPORTED: each uses something the grammar cannot enforce; the 400 must name it
(the listed fragments appear in the error message).
"""

from __future__ import annotations

from typing import Any

S30 = {"type": "string", "maxLength": 30}
S12 = {"type": "string", "minLength": 1, "maxLength": 12}
AGE = {"type": "integer", "minimum": 0, "maximum": 120}


def obj(properties: dict[str, Any], required: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties,
            "required": list(properties) if required is None else required,
            "additionalProperties": False, **extra}


# (name, prompt, schema)
SUPPORTED: list[tuple[str, str, dict[str, Any]]] = [
    ("person", "Describe a person.", obj({"name": S30, "age": AGE})),
    ("person-optional", "Describe a person; the nickname is optional.",
     obj({"name": S30, "age": AGE, "nickname": S12}, ["name", "age"])),
    ("all-optional", "Describe a pet.", obj({"species": S12, "legs": {"type": "integer", "minimum": 0,
                                                                        "maximum": 8}}, [])),
    ("boolean-flags", "Describe a user account.", obj({"active": {"type": "boolean"}, "admin": {"type": "boolean"}})),
    ("null-field", "Give a record whose deleted_at is null.", obj({"id": {"type": "integer", "minimum": 1,
                                                                          "maximum": 9999},
                                                                   "deleted_at": {"type": "null"}})),
    ("number", "Give a product with a price.", obj({"product": S30, "price": {"type": "number"}})),
    ("enum-string", "Pick a colour.", obj({"colour": {"enum": ["red", "green", "blue"]}})),
    ("enum-typed", "Pick a size.", obj({"size": {"type": "string", "enum": ["S", "M", "L", "XL"]}})),
    ("enum-mixed", "Pick a level.", obj({"level": {"enum": [1, 2, 3, "max", None]}})),
    ("const", "Give an API version.", obj({"version": {"const": "v2"}, "ok": {"type": "boolean"}})),
    ("integer-range", "Give a dice roll.", obj({"roll": {"type": "integer", "minimum": 1, "maximum": 6}})),
    ("integer-exclusive", "Give a percentage.", obj({"percent": {"type": "integer", "exclusiveMinimum": 0,
                                                                 "exclusiveMaximum": 100}})),
    ("negative-range", "Give a winter temperature.", obj({"celsius": {"type": "integer", "minimum": -40,
                                                                      "maximum": -1}})),
    ("string-lengths", "Give a short code word.", obj({"word": {"type": "string", "minLength": 3,
                                                                "maxLength": 8}})),
    ("pattern-code", "Give a product code.", obj({"code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"}})),
    ("pattern-alternation", "Give an HTTP method.", obj({"method": {"type": "string",
                                                                    "pattern": "^(GET|POST|PUT|DELETE)$"}})),
    ("pattern-optional-group", "Give a version number.",
     obj({"version": {"type": "string", "pattern": "^[0-9]{1,2}\\.[0-9]{1,2}(\\.[0-9]{1,3})?$"}})),
    ("pattern-hex-colour", "Give a colour as hex.", obj({"hex": {"type": "string", "pattern": "^#[0-9a-f]{6}$"}})),
    ("format-date", "Give a birthday.", obj({"name": S12, "birthday": {"type": "string", "format": "date"}})),
    ("format-date-time", "When does the meeting start?",
     obj({"starts": {"type": "string", "format": "date-time"}})),
    ("format-time", "Give an alarm time.", obj({"alarm": {"type": "string", "format": "time"}})),
    ("format-uuid", "Give a record id.", obj({"id": {"type": "string", "format": "uuid"}})),
    ("array-bounds", "List a few lucky numbers.", {"type": "array", "items": {"type": "integer", "minimum": 0,
                                                                                "maximum": 99},
                                                   "minItems": 2, "maxItems": 4}),
    ("array-of-strings", "List up to three fruits.", obj({"fruits": {"type": "array", "items": S12,
                                                                      "minItems": 1, "maxItems": 3}})),
    ("array-of-objects", "List two cities with their country.",
     obj({"cities": {"type": "array", "minItems": 1, "maxItems": 2,
                     "items": obj({"city": S12, "country": S12})}})),
    ("array-exact", "Give an RGB triple.", obj({"rgb": {"type": "array", "items": {"type": "integer",
                                                                                    "minimum": 0, "maximum": 255},
                                                      "minItems": 3, "maxItems": 3}})),
    ("nested-arrays", "Give a 2x2 matrix.", obj({"matrix": {"type": "array", "minItems": 2, "maxItems": 2, "items": {
        "type": "array", "minItems": 2, "maxItems": 2, "items": {"type": "integer", "minimum": 0, "maximum": 9}}}})),
    ("tuple", "Give a point as [x, y, label].", {"type": "array", "prefixItems": [
        {"type": "integer", "minimum": 0, "maximum": 100}, {"type": "integer", "minimum": 0, "maximum": 100}, S12],
        "minItems": 3, "maxItems": 3}),
    ("nested-object", "Describe a person and their address.",
     obj({"name": S12, "address": obj({"street": S30, "zip": {"type": "string", "pattern": "^[0-9]{5}$"}})})),
    ("deeply-nested", "Describe a company.", obj({"company": obj({"name": S12, "ceo": obj({"name": S12,
                                                                                          "age": AGE})})})),
    ("any-of-scalars", "Give an id that is a number or a short string.",
     obj({"id": {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 999}, S12]}})),
    ("any-of-objects", "Describe a shape: a circle or a square.",
     obj({"shape": {"anyOf": [obj({"kind": {"const": "circle"}, "radius": {"type": "integer", "minimum": 1,
                                                                          "maximum": 9}}),
                              obj({"kind": {"const": "square"}, "side": {"type": "integer", "minimum": 1,
                                                                        "maximum": 9}})]}})),
    ("one-of-disjoint", "Give a payment: card or cash.",
     obj({"payment": {"oneOf": [obj({"method": {"const": "card"}, "last4": {"type": "string",
                                                                            "pattern": "^[0-9]{4}$"}}),
                                obj({"method": {"const": "cash"}})]}})),
    ("nullable-union", "Give a middle name or null.", obj({"first": S12, "middle": {"type": ["string", "null"],
                                                                                     "maxLength": 12}})),
    ("optional-anyof-null", "Describe a book; the subtitle may be null.",
     obj({"title": S30, "subtitle": {"anyOf": [S30, {"type": "null"}]}})),
    ("ref-defs", "Describe a sender and a recipient.", {
        "$defs": {"contact": obj({"name": S12, "email_ok": {"type": "boolean"}})},
        **obj({"sender": {"$ref": "#/$defs/contact"}, "recipient": {"$ref": "#/$defs/contact"}})}),
    ("ref-definitions", "Describe an order line.", {
        "definitions": {"money": obj({"cents": {"type": "integer", "minimum": 0, "maximum": 99999},
                                      "currency": {"enum": ["EUR", "USD"]}})},
        **obj({"item": S12, "price": {"$ref": "#/definitions/money"}})}),
    ("ref-chain", "Describe a folder and its files.", {
        "$defs": {"folder": obj({"name": S12, "files": {"type": "array", "maxItems": 2,
                                                        "items": {"$ref": "#/$defs/file"}}}),
                  "file": obj({"name": S12, "bytes": {"type": "integer", "minimum": 0, "maximum": 9999}})},
        "$ref": "#/$defs/folder"}),
    ("all-of-merge", "Describe an employee.", {"allOf": [
        {"type": "object", "properties": {"name": S12}, "required": ["name"]},
        {"type": "object", "properties": {"team": S12}, "required": ["team"]}]}),
    ("annotations", "Describe a task.", {
        "$schema": "https://json-schema.org/draft/2020-12/schema", "title": "Task", "description": "A to-do item",
        **obj({"title": {**S30, "description": "what to do", "examples": ["buy milk"]},
               "done": {"type": "boolean", "default": False}})}),
    ("pydantic-style", "Describe a user.", {
        "$defs": {"Role": {"enum": ["admin", "user"], "title": "Role", "type": "string"}},
        "properties": {"name": {"maxLength": 20, "title": "Name", "type": "string"},
                       "role": {"$ref": "#/$defs/Role"},
                       "age": {"anyOf": [{"maximum": 120, "minimum": 0, "type": "integer"}, {"type": "null"}],
                               "default": None, "title": "Age"}},
        "required": ["name", "role"], "title": "User", "type": "object"}),
    ("two-keys", "Give a small JSON object with a digit and a word.",
     obj({"a": {"type": "integer", "minimum": 0, "maximum": 9}, "b": S12})),
    ("top-level-enum", "Answer yes or no.", {"enum": ["yes", "no"]}),
    ("top-level-integer", "Give a number from 1 to 10.", {"type": "integer", "minimum": 1, "maximum": 10}),
]

RECURSIVE = {"$defs": {"node": obj({"name": S12, "children": {"type": "array", "maxItems": 2,
                                                             "items": {"$ref": "#/$defs/node"}}}, ["name"])},
             "$ref": "#/$defs/node"}

# (name, schema, fragments the 400 must contain)
UNSUPPORTED: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    ("pattern-digit-escape", obj({"zip": {"type": "string", "pattern": "^\\d{5}$"}}), ("\\d",)),
    ("pattern-word-escape", obj({"user": {"type": "string", "pattern": "^\\w+$"}}), ("\\w",)),
    ("pattern-unanchored", obj({"code": {"type": "string", "pattern": "[A-Z]+"}}), ("anchored",)),
    ("pattern-lookahead", obj({"pw": {"type": "string", "pattern": "^(?=.*[0-9]).{8,}$"}}), ("lookaround",)),
    ("format-email", obj({"email": {"type": "string", "format": "email"}}), ("format 'email'",)),
    ("number-bounds", obj({"price": {"type": "number", "minimum": 0}}), ("'minimum'", "integers only")),
    ("multiple-of", obj({"even": {"type": "integer", "multipleOf": 2}}), ("'multipleOf'",)),
    ("unique-items", {"type": "array", "items": {"type": "integer"}, "uniqueItems": True}, ("'uniqueItems'",)),
    ("contains", {"type": "array", "items": {"type": "integer"}, "contains": {"const": 1}}, ("'contains'",)),
    ("pattern-properties", {"type": "object", "patternProperties": {"^x-": {"type": "string"}}},
     ("'patternProperties'",)),
    ("min-properties", {"type": "object", "minProperties": 1}, ("'minProperties'",)),
    ("not", obj({"name": {"type": "string", "not": {"const": "root"}}}), ("'not'",)),
    ("if-then-else", {"type": "object", "if": {"properties": {"a": {"const": 1}}}, "then": {"required": ["b"]}},
     ("'if'", "'then'")),
    ("ref-with-siblings", {"$defs": {"a": {"type": "string"}}, "$ref": "#/$defs/a", "maxLength": 3},
     ("beside '$ref'",)),
    ("all-of-closed", {"allOf": [obj({"name": S12}), obj({"team": S12})]}, ("no object can match",)),
    ("required-not-defined", {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["b"]},
     ("'b'",)),
    ("pattern-and-length", obj({"code": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 3}}),
     ("'maxLength' beside 'pattern'",)),
    ("remote-ref", obj({"a": {"$ref": "https://example.com/schema.json"}}), ("local references",)),
    ("several-problems", obj({"zip": {"type": "string", "pattern": "^\\d{5}$"},
                              "email": {"type": "string", "format": "email"}}), ("\\d", "format 'email'")),
]
