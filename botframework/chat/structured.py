"""Structured output: what the caller asked for -> one StructuredOutput, checked.

    {"type": "text"}                                         -> None
    {"type": "json_object"} (+ optional "schema")            -> any JSON object (or that schema)
    {"type": "json_schema", "json_schema": {"name", "schema", "strict"}}
    {"mode": "structured", "schema": {...}}                  (the original spec's form)
    a pydantic model class (LocalLLM.chat(schema=Model))     -> its JSON schema; results are
                                                                instances of the class
    StructuredOutput --check_schema--> fail closed (400 listing what cannot be enforced)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from botframework.chat.schema import SchemaValidator, check_schema
from botframework.errors import InvalidRequestError, OutputValidationError

JSON_OBJECT_SCHEMA: dict[str, Any] = {"type": "object"}


@dataclass(frozen=True)
class StructuredOutput:
    schema: Mapping[str, Any]
    name: str = "response"
    strict: bool = True              # always enforced by the grammar; kept for echoing back
    model_class: Any = None          # a pydantic BaseModel subclass, when given one
    validator: SchemaValidator = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_schema(dict(self.schema))
        object.__setattr__(self, "validator", SchemaValidator(dict(self.schema)))

    def parse(self, text: str) -> Any:
        """The validated value of finished output (a model instance for a pydantic class)."""
        value = self.validator.parse(text)
        if self.model_class is None:
            return value
        try:
            return self.model_class.model_validate(value)
        except Exception as exc:  # noqa: BLE001 - pydantic's ValidationError, kept typed as ours
            raise OutputValidationError(f"the model output does not validate as {self.model_class.__name__}: {exc}",
                                        output=text) from exc


def structured_output(spec: Any) -> StructuredOutput | None:
    """Normalise every accepted form (see the module docstring); InvalidRequestError if none."""
    if spec is None or isinstance(spec, StructuredOutput):
        return spec
    if isinstance(spec, type) and hasattr(spec, "model_json_schema"):
        return StructuredOutput(spec.model_json_schema(), name=spec.__name__, model_class=spec)
    if not isinstance(spec, Mapping):
        raise InvalidRequestError("response_format must be an object", param="response_format")
    kind = spec.get("type")
    if kind == "text":
        return None
    if kind is None:
        if spec.get("mode") != "structured":
            raise InvalidRequestError("response_format needs a 'type' (text, json_object, json_schema) "
                                      "or 'mode': 'structured'", param="response_format")
        return StructuredOutput(_schema_of(spec.get("schema"), "response_format.schema"))
    if kind == "json_object":
        schema = spec.get("schema")
        return StructuredOutput(_schema_of(schema, "response_format.schema") if schema is not None
                                else JSON_OBJECT_SCHEMA, name="json_object")
    if kind == "json_schema":
        wrapper = spec.get("json_schema")
        if wrapper is None and "schema" in spec:  # the schema given without the wrapper
            wrapper = {"schema": spec["schema"]}
        if not isinstance(wrapper, Mapping):
            raise InvalidRequestError("response_format.json_schema must be an object with a 'schema'",
                                      param="response_format")
        return StructuredOutput(_schema_of(wrapper.get("schema"), "response_format.json_schema.schema"),
                                name=str(wrapper.get("name") or "response"), strict=bool(wrapper.get("strict", True)))
    raise InvalidRequestError(f"response_format type {kind!r} is not one of text, json_object, json_schema",
                              param="response_format")


def _schema_of(schema: Any, where: str) -> dict[str, Any]:
    if not isinstance(schema, Mapping):
        raise InvalidRequestError(f"{where} must be a JSON schema object", param="response_format")
    return dict(schema)
