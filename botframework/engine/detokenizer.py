"""UTF-8-safe incremental detokenization.

    token -> piece bytes -> pending buffer -> longest complete UTF-8 prefix -> text

A token may end in the middle of a multi-byte character (byte-fallback vocabularies split
emoji and CJK into several tokens); those bytes wait for the rest of the character.
"""

from __future__ import annotations

from collections.abc import Callable


def _complete_prefix_len(data: bytes) -> int:
    """Length of the longest prefix of `data` that does not end inside a UTF-8 character."""
    n = len(data)
    # Look back at most 3 bytes for the lead byte of a possibly unfinished character.
    for back in range(1, min(4, n) + 1):
        byte = data[n - back]
        if byte & 0xC0 == 0x80:  # continuation byte: keep looking for the lead
            continue
        if byte & 0x80 == 0:  # ASCII
            return n
        need = 2 if byte & 0xE0 == 0xC0 else 3 if byte & 0xF0 == 0xE0 else 4 if byte & 0xF8 == 0xF0 else 1
        return n if back >= need else n - back
    return n  # only continuation bytes: invalid, let the decoder replace them


class IncrementalDetokenizer:
    """`piece`: a token's bytes. `text` (optional): a token's text when its piece is complete,
    valid UTF-8 on its own, else None (Model.piece_text): with nothing pending, that text is
    the answer, without the byte bookkeeping (the engine thread feeds one token per step)."""

    def __init__(self, piece: Callable[[int], bytes], text: Callable[[int], str | None] | None = None) -> None:
        self._piece = piece
        self._text = text
        self._pending = b""

    def feed(self, token: int) -> str:
        """Add one token; return the newly completed text (possibly empty)."""
        if not self._pending and self._text is not None:
            text = self._text(token)
            if text is not None:
                return text
        self._pending += self._piece(token)
        cut = _complete_prefix_len(self._pending)
        ready, self._pending = self._pending[:cut], self._pending[cut:]
        return ready.decode("utf-8", "replace")

    @property
    def idle(self) -> bool:
        """No bytes wait for the rest of a character: the next token's text is its own piece's."""
        return not self._pending

    def flush(self) -> str:
        """At the end of generation: whatever is left (invalid bytes become U+FFFD)."""
        ready, self._pending = self._pending, b""
        return ready.decode("utf-8", "replace")
