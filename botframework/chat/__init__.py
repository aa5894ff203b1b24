"""Chat: OpenAI-style messages -> prompt, grammar and output parser through the shim; model
text -> assistant message (content, reasoning, tool calls), checked.

    render     messages -> prompt tokens (context overflow policy)
    schema     which JSON Schema keywords the grammar enforces; fail-closed check; validation
    structured response_format / schema / pydantic class -> StructuredOutput
    tools      tools, tool_choice; the generic tool format for templates that know none
    plan       plan_chat: all of the above -> ChatPlan(tokens, GrammarSpec, OutputParser)
    parse      OutputParser: text -> AssistantMessage (common_chat_parse, JSON fallbacks)
    jsoncalls  bare / fenced JSON tool calls, complete or still streaming
    stream     MessageStreamer: OpenAI-style deltas (content, reasoning, tool-call pieces)
    message    AssistantMessage, ToolCall, MessageDelta, ToolCallDelta
"""

from botframework.chat.message import AssistantMessage, MessageDelta, ToolCall, ToolCallDelta
from botframework.chat.plan import ChatOptions, ChatPlan, finish_message, plan_chat
from botframework.chat.render import OverflowPolicy, RenderedChat, render_chat
from botframework.chat.schema import SCHEMA_CAPABILITIES, check_schema
from botframework.chat.stream import MessageStreamer
from botframework.chat.structured import StructuredOutput, structured_output
from botframework.chat.tools import (
           Tool,
           ToolChoice,
           ToolChoiceMode,
           parse_tool_choice,
           parse_tools,
)

__all__ = ["SCHEMA_CAPABILITIES", "AssistantMessage", "ChatOptions", "ChatPlan", "MessageDelta", "MessageStreamer",
           "OverflowPolicy", "RenderedChat", "StructuredOutput", "Tool", "ToolCall", "ToolCallDelta", "ToolChoice",
           "ToolChoiceMode", "check_schema", "finish_message", "parse_tool_choice", "parse_tools", "plan_chat",
           "render_chat", "structured_output"]
