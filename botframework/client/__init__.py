"""HTTP clients with LocalLLM's surface: code moves between in-process and a server by changing
one line.

    from botframework.client import Client            # or AsyncClient
    llm = Client("smollm2-135m-instruct")              # was: LocalLLM("smollm2-135m-instruct")
    print(llm.chat("Rewrite this code using asyncio.").text)

Results are LocalLLM's (GenerationResult, the structured value, MessageDelta pieces), errors
the package's own (BusyError with retry_after_s, ModelNotFoundError, ContextLengthExceededError,
AuthenticationError, ServerUnavailableError, ...), sessions botframework.session's.
"""

from botframework.client.aio import AsyncClient, AsyncStream
from botframework.client.sync import Client, Stream
from botframework.session import AsyncSession, Session

__all__ = ["AsyncClient", "AsyncSession", "AsyncStream", "Client", "Session", "Stream"]
