"""botframework: run local LLMs like the OpenAI API, offline, batched, on this machine.

    from botframework import LocalLLM
    llm = LocalLLM("smollm2-135m-instruct")
    print(llm.chat("Rewrite this code using asyncio.").text)

Public surface: the names in `__all__` here and in botframework.errors, .specs, .config, and
for people who build on the engine itself .native, .engine, .scheduler, .chat and .server
(tests/unit/test_public_api.py holds them to it). Other modules are internal and may change;
modules whose names start with `_` are private to their package.
"""

from botframework.errors import (
    APIStatusError,
    AuthenticationError,
    BotframeworkError,
    BusyError,
    CancelledError,
    ClosedError,
    ContextLengthExceededError,
    GrammarError,
    InvalidRequestError,
    ModelError,
    ModelFetchError,
    ModelLoadError,
    ModelNotFoundError,
    NativeError,
    OutputValidationError,
    ServerUnavailableError,
    UnsupportedSchemaError,
)

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # LocalLLM pulls in the chat layer, numpy and jsonschema: import it on first use so that
    # `import botframework` (CLI --help, errors) stays cheap.
    if name in ("LocalLLM", "ChatResult", "CompletionResult", "GenerationResult"):
        from botframework import api

        return getattr(api, name)
    if name in ("Client", "AsyncClient", "Session", "AsyncSession"):
        from botframework import client

        return getattr(client, name)
    raise AttributeError(f"module 'botframework' has no attribute {name!r}")


__all__ = [
    "APIStatusError", "AsyncClient", "AsyncSession", "AuthenticationError", "Client", "Session",
    "ServerUnavailableError",
    "BotframeworkError", "BusyError", "CancelledError", "ChatResult", "ClosedError", "CompletionResult",
    "ContextLengthExceededError", "GenerationResult", "GrammarError", "InvalidRequestError", "LocalLLM",
    "ModelError", "ModelFetchError", "ModelLoadError", "ModelNotFoundError", "NativeError", "OutputValidationError",
    "UnsupportedSchemaError",
]
