"""Python side of native/bf_shim: JSON in, JSON out, errors as typed exceptions.

    dict --json--> bf_* (llama.cpp common: chat templates, tool-call parsing,
                         JSON Schema -> GBNF)  --json--> dict
"""

from __future__ import annotations

import json
from typing import Any

from botframework.errors import (
    GrammarError,
    InvalidRequestError,
    ModelLoadError,
)
from botframework.native._lib import ffi, lib
from botframework.native._owned import NativeHandle
from botframework.native.devices import take_json as _take_json
from botframework.native.jinja_guard import BUDGET_MARKER, TemplateRefused, guarded_source
from botframework.native.jsontext import bracket_depth, bracket_levels
from botframework.native.model import Model


def build_info() -> dict[str, Any]:
    """Compiler, CPU features compiled in and detected, devices, llama.cpp pin."""
    return json.loads(ffi.string(lib().bf_build_info()).decode("utf-8"))  # type: ignore[no-any-return]


def selftest_quantized() -> tuple[bool, str]:
    """Run the quantized-kernel self-test in this process. Returns (ok, report)."""
    buf = ffi.new("char[]", 8192)
    failures = lib().bf_selftest_quantized(buf, 8192)
    return failures == 0, ffi.string(buf).decode("utf-8", "replace")


def json_schema_to_grammar(schema: Any) -> str:
    """Convert a JSON Schema to GBNF with llama.cpp's converter; GrammarError if it cannot."""
    out = _take_json(lib().bf_json_schema_to_grammar(json.dumps({"schema": schema}).encode("utf-8")))
    if "error" in out:
        raise GrammarError(f"cannot convert the JSON schema to a grammar: {out['error']}", param="response_format")
    return str(out["grammar"])


class ChatTemplates(NativeHandle):
    """A model's chat template(s), rendered by llama.cpp's Jinja engine (no Python eval)."""

    _what = "chat templates"
    _frees = (("_handle", "bf_chat_templates_free"),)

    def __init__(self, model: Model | None, template_override: str | None = None) -> None:
        if model is None and not template_override:
            # common_chat_templates_init asserts (aborts the process) on a NULL model without one
            raise InvalidRequestError("chat templates need a model or a template_override", param="chat_template")
        try:  # depth limits and a render budget before llama.cpp's recursive Jinja engine sees it
            source = guarded_source(template_override, model.chat_template if model is not None else None)
        except TemplateRefused as exc:
            raise ModelLoadError(f"chat template refused: {exc}") from None
        handle = ffi.new("void **")
        model_ptr = model.handle if model is not None else ffi.NULL
        err = lib().bf_chat_templates_new(model_ptr, source.encode("utf-8"), handle)
        if err != ffi.NULL:
            raise ModelLoadError(_take_json(err).get("error", "cannot load chat template"))
        self._handle: Any = handle[0]
        self._model = model  # the templates keep token strings of the model's vocab
        caps = _take_json(lib().bf_chat_templates_caps(self._handle)).get("caps", {})
        self.caps: dict[str, bool] = {str(k): bool(v) for k, v in caps.items()}
        if source:
            self._trial_render()

    def _trial_render(self) -> None:
        """A template that spends its whole render budget on one short message would do so on
        every request: refuse it with the model, as a load error."""
        try:
            self.apply({"messages": [{"role": "user", "content": "hi"}], "add_generation_prompt": True})
        except InvalidRequestError as exc:
            if BUDGET_MARKER in str(exc):  # the guard's own raise_exception text, nothing of llama.cpp's
                self.close()
                reason = str(exc)[str(exc).rindex(BUDGET_MARKER):].splitlines()[0]  # past the source excerpt
                raise ModelLoadError(f"chat template refused: {reason}") from None

    @property
    def supports_tools(self) -> bool:
        """Whether the template renders tool definitions and tool calls itself (else the
        caller needs a generic tool format)."""
        return self.caps.get("supports_tools", False) and self.caps.get("supports_tool_calls", False)

    def apply(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Render OpenAI-style messages (+tools, schema) to a prompt and generation params."""
        out = _take_json(lib().bf_chat_apply(self.handle, json.dumps(inputs).encode("utf-8")))
        if "error" in out:
            raise InvalidRequestError(f"chat template: {out['error']}", param="messages")
        return out


MAX_PARSE_NESTING = 128  # tool arguments nest at most 64 levels (chat.schema.MAX_SCHEMA_DEPTH)
__all__ = ["MAX_PARSE_NESTING", "ChatParser", "ChatTemplates", "bracket_depth", "bracket_levels", "build_info",
           "chat_parse", "json_schema_to_grammar", "selftest_quantized"]

def chat_parse(text: str, params: dict[str, Any], *, partial: bool = False) -> dict[str, Any]:
    """Parse model output into an OpenAI assistant message (content, reasoning, tool_calls).

    `params` is what ChatTemplates.apply returned (format, parser, generation_prompt).
    One-off; a stream parses its growing text with one ChatParser.
    """
    _check_depth(text)
    return _parsed(lib().bf_chat_parse(text.encode("utf-8"), 1 if partial else 0, _parser_params(params)))


class ChatParser(NativeHandle):
    """chat_parse with the params (and the serialized PEG parser in them) loaded once."""

    _what = "chat parser"
    _frees = (("_handle", "bf_chat_parser_free"),)

    def __init__(self, params: dict[str, Any]) -> None:
        handle = lib().bf_chat_parser_init(_parser_params(params))
        if handle == ffi.NULL:
            raise InvalidRequestError("the chat template's output parser could not be loaded")
        self._handle: Any = handle

    def parse(self, text: str, *, partial: bool = False) -> dict[str, Any]:
        handle = self.handle
        _check_depth(text)
        return _parsed(lib().bf_chat_parser_parse(handle, text.encode("utf-8"), 1 if partial else 0))


def _parser_params(params: dict[str, Any]) -> bytes:
    wanted = {k: params[k] for k in ("format", "parser", "generation_prompt", "reasoning_format",
                                     "parse_tool_calls") if k in params}
    return json.dumps(wanted).encode("utf-8")


def _parsed(ptr: Any) -> dict[str, Any]:
    out = _take_json(ptr)
    if "error" in out:
        raise InvalidRequestError(f"cannot parse the model output: {out['error']}")
    return out


def _check_depth(text: str) -> None:
    depth = bracket_depth(text)
    if depth > MAX_PARSE_NESTING:  # llama.cpp's PEG parser recurses per level: ~20,000 overflow the stack
        raise InvalidRequestError(f"cannot parse the model output: it nests {depth} brackets deep")
