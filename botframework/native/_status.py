"""The one place where native return codes become typed exceptions."""

from __future__ import annotations

from botframework.errors import DecodeError, KVCacheFullError, NativeError

# llama_decode: 0 ok, 1 no KV slot for the batch, 2 aborted, -1 invalid batch, < -1 fatal.
_DECODE_MESSAGES = {
    1: "no KV cache slot for the batch (context full: reduce sequences or prompt size)",
    2: "decode aborted",
    -1: "invalid batch (bad token id, position or sequence id)",
}


def check_decode(rc: int, op: str = "llama_decode") -> None:
    """Raise the exception that matches llama_decode's return code, if any."""
    if rc == 0:
        return
    message = f"{op} failed: {_DECODE_MESSAGES.get(rc, f'fatal error (rc={rc})')}"
    if rc == 1:
        raise KVCacheFullError(message, op=op, code=rc)
    raise DecodeError(message, op=op, code=rc)


def check(ok: bool, op: str, detail: str = "") -> None:
    """Raise NativeError when a boolean-returning native call failed."""
    if not ok:
        raise NativeError(f"{op} failed" + (f": {detail}" if detail else ""), op=op)
