"""One exception tree for the whole package.

    BotframeworkError
    ├── ModelError                 a model cannot be found, fetched or loaded
    │   ├── ModelNotFoundError     unknown name / missing file               (HTTP 404)
    │   ├── ModelLoadError         not a valid GGUF, or llama.cpp refused it
    │   └── ModelFetchError        pull failed: network, checksum, offline
    ├── InvalidRequestError        bad input from the caller                 (HTTP 400)
    │   ├── ContextLengthExceededError  prompt (+ max_tokens) does not fit the context
    │   └── GrammarError           schema / grammar cannot be built or enforced
    │       └── UnsupportedSchemaError  keywords the grammar would not enforce (listed)
    ├── NativeError                a llama.cpp call failed (status.check maps return codes)
    │   ├── DecodeError            llama_decode returned an error
    │   │   └── KVCacheFullError   no KV slot for the batch (rc == 1)
    │   └── StateRestoreError      a stored KV state would not load: retry   (HTTP 503)
    ├── OutputValidationError      finished constrained output fails its schema (HTTP 500)
    ├── BusyError                  admission queue full                      (HTTP 503)
    ├── CancelledError             the request was cancelled
    ├── ClosedError                the object was closed / the engine stopped
    │   └── ShuttingDownError      ended by the server's drain                (HTTP 503)
    │   HTTP clients (botframework.client) only:
    ├── ServerUnavailableError     no server answers at the URL (also a ConnectionError)
    ├── AuthenticationError        missing or wrong API key                  (HTTP 401)
    └── APIStatusError             any other error status the server answered

Callers map these by type (HTTP status, CLI exit code), never by message text.
"""

from __future__ import annotations

__all__ = [
    "APIStatusError", "AuthenticationError", "ServerUnavailableError",
    "BotframeworkError", "BusyError", "CancelledError", "ClosedError", "ContextLengthExceededError", "DecodeError",
    "GrammarError", "InvalidRequestError", "KVCacheFullError", "ModelError", "ModelFetchError", "ModelLoadError",
    "ModelNotFoundError", "NativeError", "OutputValidationError", "ShuttingDownError", "StateRestoreError",
    "UnsupportedSchemaError",
]


class BotframeworkError(Exception):
    """Base of every error raised by botframework."""


class ModelError(BotframeworkError):
    """A model cannot be found, fetched or loaded."""


class ModelNotFoundError(ModelError):
    """The model name is unknown, or its file does not exist."""


class ModelLoadError(ModelError):
    """The file is not a loadable GGUF model (truncated, garbage, a directory, ...)."""


class ModelFetchError(ModelError):
    """Pulling a model failed (no network, checksum mismatch, registry error)."""


class InvalidRequestError(BotframeworkError, ValueError):
    """The request is invalid; `param` names the offending field when known, `code` says how
    (e.g. "invalid_value", "unsupported_parameter") where the caller's protocol has codes."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        self.code = code


class ContextLengthExceededError(InvalidRequestError):
    """The prompt, or prompt plus requested tokens, does not fit the context window."""

    def __init__(self, message: str, *, num_prompt_tokens: int, num_ctx: int,
                 param: str | None = "messages") -> None:
        super().__init__(message, param=param)
        self.num_prompt_tokens = num_prompt_tokens
        self.num_ctx = num_ctx


class GrammarError(InvalidRequestError):
    """A JSON schema or grammar cannot be converted or enforced."""


class UnsupportedSchemaError(GrammarError):
    """The JSON schema uses keywords or constructs the grammar would not enforce; `problems`
    names each one (path: keyword and why)."""

    def __init__(self, message: str, *, problems: tuple[str, ...], param: str | None = None) -> None:
        super().__init__(message, param=param)
        self.problems = problems


class OutputValidationError(BotframeworkError):
    """Constrained output finished but does not validate: never returned as if it did."""

    def __init__(self, message: str, *, output: str = "") -> None:
        super().__init__(message)
        self.output = output


class NativeError(BotframeworkError):
    """A llama.cpp call reported failure."""

    def __init__(self, message: str, *, op: str, code: int | None = None) -> None:
        super().__init__(message)
        self.op = op
        self.code = code


class DecodeError(NativeError):
    """llama_decode failed."""


class KVCacheFullError(DecodeError):
    """llama_decode found no KV cache slot for the batch (return code 1)."""


class StateRestoreError(NativeError):
    """llama.cpp refused a stored KV state (an evicted session's, a cached prompt's) when it was
    brought back into a slot. The state is gone; the same request, retried, prefills afresh."""


class BusyError(BotframeworkError):
    """The admission queue is full; retry after `retry_after_s` seconds."""

    def __init__(self, message: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class CancelledError(BotframeworkError):
    """The request was cancelled before it finished."""


class ClosedError(BotframeworkError):
    """The model, context or engine has been closed."""


class ShuttingDownError(ClosedError):
    """The server is draining: a request still running when the grace period ended."""


class ServerUnavailableError(BotframeworkError, ConnectionError):
    """No botframework server answers at the client's URL (refused, unreachable, gone mid-way)."""


class AuthenticationError(BotframeworkError):
    """The server wants an API key and got none or a wrong one (HTTP 401)."""


class APIStatusError(BotframeworkError):
    """An error status the server answered that no other class here describes."""

    def __init__(self, message: str, *, status_code: int, code: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
