"""Limits on a chat template before llama.cpp's Jinja engine sees it.

llama.cpp parses and renders templates by recursion without a depth limit and runs loops
without a budget, so a hostile template (a [[models]] chat_template, LocalLLM(chat_template=),
or the one inside a GGUF) could overflow the stack and kill the process, or keep a load busy
for minutes. Two guards, both in Python over the template's source:

    source --check()------> refused (TemplateRefused) when it nests too deep:
                            {% if/for/macro/... %} blocks (elif counts as a level),
                            ( [ { in one tag, or more tokens in one tag than a sane template
                            writes (a left-deep chain of operators is as deep as it is long)
           --instrument()-> the same template with a render budget: a namespace counter that
                            every loop iteration and macro call steps, a macro call depth,
                            both ending the render by raise_exception(BUDGET_MARKER ...)

The instrumented template renders byte for byte what the original does (the inserted tags
output nothing and copy the whitespace control of the tag they follow or precede; this
follows the lexer in vendor/llama.cpp/common/jinja/lexer.cpp, trim_blocks and lstrip_blocks
on). Depth limits sit far below the depths that crash on an 8 MiB stack (about 5,000 nested
parentheses, 10,000 nested ifs or chained operators, measured on the pinned llama.cpp).

The third guard is native: one expression that allocates a lot at once ('x' * 1000000000,
range(1000000000)) is stopped by the memory budget of the module's operator new during a render
(native/bf_shim.cpp, render_budget: 256 MiB + 32 bytes per input byte held at once), whose
message carries BUDGET_MARKER too; it also caps a render's output.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

MAX_BLOCK_DEPTH = 64  # nested {% if/for/macro/call/filter/set %} blocks (+ elif chains)
MAX_BRACKET_DEPTH = 32  # ( [ { nested inside one tag
MAX_TAG_TOKENS = 256  # tokens in one {{ }} / {% %} tag; 70 real templates stay under 60
MAX_MACRO_DEPTH = 32  # nested macro calls at render time (recursive macros render nested schemas)
# loop iterations + macro calls in one render: a base plus an allowance per message and tool, so
# the budget grows with the input, not with the template; a bomb's cost stays about a second
# (llama.cpp renders a template ~30 times to load it and again per request, ~20 us an iteration)
BASE_RENDER_STEPS = 2_000
RENDER_STEPS_PER_ITEM = 100
BUDGET_MARKER = "chat template budget exceeded"
_GUARD = "__bf_guard"

_BLOCK_OPENERS = frozenset({"if", "for", "macro", "call", "filter"})  # + set without '='
_TOKEN = re.compile(r"""\s+|"(?:\\.|[^"\\])*"?|'(?:\\.|[^'\\])*'?|\w+|==|!=|<=|>=|\*\*|//|.""", re.S)


class TemplateRefused(ValueError):
    """The template nests deeper than the limits above."""


@dataclass(frozen=True)
class _Tag:
    kind: str  # "{%" or "{{"
    start: int  # index of "{"
    body_start: int  # after the opening marker (and its '-' / '+')
    body_end: int  # before the closing marker (and its '-')
    end: int  # after "}"
    open_marker: str  # "{%", "{%-", "{{-", ...
    close_marker: str  # "%}", "-%}", "}}", "-}}"
    tokens: tuple[str, ...]  # the tag's tokens, whitespace left out

    @property
    def keyword(self) -> str:
        return self.tokens[0] if self.kind == "{%" and self.tokens else ""


def _tags(source: str) -> list[_Tag]:
    """The template's tags in order. Comments are skipped; an unterminated tag ends the scan
    (llama.cpp's parser refuses such a template itself)."""
    tags: list[_Tag] = []
    pos = 0
    n = len(source)
    while True:
        pos = source.find("{", pos)
        if pos < 0 or pos + 1 >= n:
            return tags
        second = source[pos + 1]
        if second == "#":
            close = source.find("#}", pos + 2)
            if close < 0:
                return tags
            pos = close + 2
            continue
        if second not in "%{":
            pos += 1
            continue
        kind = "{" + second
        closer = "%}" if second == "%" else "}}"
        body_start = pos + 2
        if body_start < n and source[body_start] in "-+":
            body_start += 1
        tokens: list[str] = []
        curly = 0
        i = body_start
        end = -1
        while i < n:
            if source.startswith(closer, i) and not (closer == "}}" and curly > 0):
                end = i
                break
            if source.startswith("-" + closer, i) and not (closer == "}}" and curly > 0):
                end = i
                break
            match = _TOKEN.match(source, i)
            assert match is not None  # the pattern's last branch matches any character
            token = match.group()
            if token == "{":
                curly += 1
            elif token == "}":
                curly = max(curly - 1, 0)
            if not token.isspace():
                tokens.append(token)
            i = match.end()
        if end < 0:
            return tags
        trim = source[end] == "-"
        body_end = end
        tag_end = end + (3 if trim else 2)
        tags.append(_Tag(kind, pos, body_start, body_end, tag_end, source[pos:body_start],
                         source[body_end:tag_end], tuple(tokens)))
        pos = tag_end


def _is_block_set(tag: _Tag) -> bool:
    depth = 0
    for token in tag.tokens[1:]:
        if token in "([{":
            depth += 1
        elif token in ")]}":
            depth -= 1
        elif token == "=" and depth == 0:
            return False
    return True


def check(source: str) -> None:
    """TemplateRefused if the template nests deeper than the renderer can take safely."""
    levels: list[int] = []  # one entry per open block: 1, + 1 per elif of an if
    for tag in _tags(source):
        if len(tag.tokens) > MAX_TAG_TOKENS:
            raise TemplateRefused(f"a tag at offset {tag.start} has {len(tag.tokens)} tokens "
                                  f"(at most {MAX_TAG_TOKENS})")
        depth = deepest = 0
        for token in tag.tokens:
            if token in ("(", "[", "{"):
                depth += 1
                deepest = max(deepest, depth)
            elif token in (")", "]", "}"):
                depth -= 1
        if deepest > MAX_BRACKET_DEPTH:
            raise TemplateRefused(f"an expression at offset {tag.start} nests {deepest} brackets deep "
                                  f"(at most {MAX_BRACKET_DEPTH})")
        keyword = tag.keyword
        if keyword in _BLOCK_OPENERS or (keyword == "set" and _is_block_set(tag)):
            levels.append(1)
        elif keyword == "elif" and levels:
            levels[-1] += 1  # llama.cpp parses an elif as an if nested in the else branch
        elif keyword.startswith("end") and keyword != "endgeneration" and levels:
            levels.pop()
        if sum(levels) > MAX_BLOCK_DEPTH:
            raise TemplateRefused(f"blocks nest more than {MAX_BLOCK_DEPTH} deep (offset {tag.start})")


def instrument(source: str) -> str:
    """The template with its render budget (see the module docstring); check() it first."""
    step = (f"{{% set {_GUARD}.steps = {_GUARD}.steps + 1 if {_GUARD}.steps < {_GUARD}.limit "
            f"else raise_exception('{BUDGET_MARKER}: more loop iterations and macro calls than "
            f"{BASE_RENDER_STEPS} + {RENDER_STEPS_PER_ITEM} per message and tool') ")
    enter = (f"{{% set {_GUARD}.depth = {_GUARD}.depth + 1 if {_GUARD}.depth < {MAX_MACRO_DEPTH} "
             f"else raise_exception('{BUDGET_MARKER}: macro calls nested more than {MAX_MACRO_DEPTH} deep') ")
    leave = f" set {_GUARD}.depth = {_GUARD}.depth - 1 %}}"
    items = ("(messages|length if messages is defined and messages else 0)"
             " + (tools|length if tools is defined and tools else 0)")
    init = (f" set {_GUARD} = namespace(steps=0, depth=0, "
            f"limit={BASE_RENDER_STEPS} + {RENDER_STEPS_PER_ITEM} * ({items})) %}}")
    out: list[str] = []
    pos = 0
    for tag in _tags(source):
        if tag.kind == "{%" and not out:
            # right before the first statement (every loop and macro is one), with its opening
            # marker so lstrip_blocks and '-' strip the same text; no line moves in errors
            out.append(source[pos:tag.start] + tag.open_marker + init)
            pos = tag.start
        if tag.keyword == "endmacro":
            out.append(source[pos:tag.start])
            out.append(tag.open_marker + leave)  # its '-' strips what the endmacro's did
            out.append(source[tag.start:tag.end])
        elif tag.keyword in ("for", "macro"):
            out.append(source[pos:tag.end])
            out.append(step + (tag.close_marker if tag.keyword == "for" else "%}" + enter + tag.close_marker))
        else:
            continue
        pos = tag.end
    out.append(source[pos:])
    return "".join(out)


def guarded(source: str) -> str:
    """check() then instrument(): what the shim hands to llama.cpp."""
    check(source)
    return instrument(source)


def guarded_source(template_override: str | None, model_template: Callable[[str | None], str | None] | None) -> str:
    """What bf_chat_templates_new gets: the override, or else the model's own template, checked
    and instrumented; "" leaves the choice to llama.cpp (no template in the model: ChatML).

    `model_template(name)` reads the GGUF's tokenizer.chat_template[.name]. A model with a
    separate "tool_use" template keeps both in llama.cpp's hands (one override cannot carry
    two): they are checked, not instrumented.
    """
    if template_override:
        return template_override if template_override == "chatml" else guarded(template_override)
    if model_template is None:
        return ""
    default, tool_use = model_template(None), model_template("tool_use")
    for source in (default, tool_use):
        if source:
            check(source)
    if default and default != "chatml" and not tool_use:
        return instrument(default)  # what llama.cpp would take from the model, with the budget
    return ""
