"""Chat: OpenAI-style messages -> prompt tokens (+ grammar, stops) through the shim."""

from botframework.chat.render import OverflowPolicy, RenderedChat, render_chat

__all__ = ["OverflowPolicy", "RenderedChat", "render_chat"]
