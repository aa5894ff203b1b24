"""Render a conversation to prompt tokens, applying the context-overflow policy.

    messages --ChatTemplates.apply (llama.cpp Jinja, sandboxed)--> prompt text
             --tokenize(parse_special)--> tokens
    too long?  overflow="error"    -> ContextLengthExceededError with the token counts
               overflow="truncate" -> drop the oldest turns (system prompt kept, an assistant
                                      tool call kept together with its tool results), re-render
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from botframework.errors import ContextLengthExceededError, InvalidRequestError

if TYPE_CHECKING:
    from botframework.native.model import Model
    from botframework.native.shim import ChatTemplates


class OverflowPolicy(Enum):
    ERROR = "error"        # refuse with context_length_exceeded
    TRUNCATE = "truncate"  # drop the oldest turns until the prompt fits


@dataclass(frozen=True)
class RenderedChat:
    tokens: list[int]
    additional_stops: tuple[str, ...]
    params: dict[str, Any] = field(default_factory=dict)   # what the template returned (format, parser...)
    truncated_tokens: int = 0
    num_dropped_messages: int = 0


def _turn_groups(messages: list[dict[str, Any]]) -> list[list[int]]:
    """Indices of non-system messages grouped so that tool calls stay with their results."""
    groups: list[list[int]] = []
    for i, msg in enumerate(messages):
        if msg.get("role") == "system" and not groups:
            continue  # leading system prompts are always kept
        if msg.get("role") == "tool" and groups:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def render_chat(templates: ChatTemplates, model: Model, messages: Sequence[dict[str, Any]], *,
                n_ctx: int, max_tokens: int, overflow: OverflowPolicy = OverflowPolicy.ERROR,
                extra_inputs: dict[str, Any] | None = None) -> RenderedChat:
    msgs = list(messages)
    if not msgs:
        raise InvalidRequestError("messages must not be empty", param="messages")
    inputs = dict(extra_inputs or {})

    def render(selected: list[dict[str, Any]]) -> tuple[list[int], dict[str, Any]]:
        params = templates.apply({**inputs, "messages": selected, "add_generation_prompt": True})
        tokens = model.tokenize(params["prompt"], add_special=True, parse_special=True)
        return tokens, params

    tokens, params = render(msgs)
    full_len = len(tokens)
    # The prompt must leave room for at least one generated token; truncation also keeps
    # room for max_tokens when it can.
    limit = n_ctx - 1
    dropped = 0
    if len(tokens) > limit:
        if overflow is OverflowPolicy.ERROR:
            raise ContextLengthExceededError(
                f"This model's maximum context length is {n_ctx} tokens. However, your messages "
                f"resulted in {len(tokens)} tokens. Shorten the conversation or use overflow='truncate'.",
                num_prompt_tokens=len(tokens), num_ctx=n_ctx)
        target = max(1, n_ctx - max_tokens) if n_ctx - max_tokens > 0 else limit
        groups = _turn_groups(msgs)
        keep_system = [m for m in msgs[: (groups[0][0] if groups else len(msgs))]]
        # always keep the last group (the question being asked)
        for first_kept in range(1, len(groups)):
            kept_idx = [i for g in groups[first_kept:] for i in g]
            selected = keep_system + [msgs[i] for i in kept_idx]
            tokens, params = render(selected)
            dropped = sum(len(g) for g in groups[:first_kept])
            if len(tokens) <= target:
                break
        if len(tokens) > limit:
            raise ContextLengthExceededError(
                f"Even the last message alone needs {len(tokens)} tokens; the context holds {n_ctx}.",
                num_prompt_tokens=len(tokens), num_ctx=n_ctx)
    return RenderedChat(tokens=tokens, additional_stops=tuple(params.get("additional_stops") or ()),
                        params=params, truncated_tokens=max(0, full_len - len(tokens)) if dropped else 0,
                        num_dropped_messages=dropped)
