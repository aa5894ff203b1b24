"""Stop strings matched across token boundaries.

    text delta -> buffer -> (text safe to emit, stopped?)

Text that could be the start of a stop string is held back until it either completes the
stop (generation ends, the stop is not emitted) or diverges (it is released).
"""

from __future__ import annotations

from collections.abc import Sequence


class StopMatcher:
    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self._held = ""
        self.stopped = False
        self.matched: str | None = None

    def feed(self, text: str) -> str:
        """Return the text that can be emitted now; sets `stopped` when a stop completes."""
        if self.stopped:
            return ""
        if not self.stops:
            return text
        buf = self._held + text
        # The stop that completes first wins (ties: the longer one), as if the text had come
        # one character at a time: the result must not depend on token boundaries.
        best: tuple[int, int, str] | None = None
        for stop in self.stops:
            i = buf.find(stop)
            if i != -1 and (best is None or (i + len(stop), i) < best[:2]):
                best = (i + len(stop), i, stop)
        if best is not None:
            self.stopped = True
            self.matched = best[2]
            self._held = ""
            return buf[: best[1]]
        hold = 0
        for stop in self.stops:
            # longest suffix of buf that is a proper prefix of this stop
            for k in range(min(len(stop) - 1, len(buf)), 0, -1):
                if buf.endswith(stop[:k]):
                    hold = max(hold, k)
                    break
        self._held = buf[len(buf) - hold:] if hold else ""
        return buf[: len(buf) - hold]

    @property
    def holding(self) -> bool:
        """Text is held back (it may be the start of a stop string)."""
        return bool(self._held)

    def flush(self) -> str:
        """At the end of generation, release held text that never became a stop."""
        held, self._held = self._held, ""
        return "" if self.stopped else held
