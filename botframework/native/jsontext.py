"""Bracket nesting of JSON-ish text, in numpy: no native code, so the chat layer uses it
without the compiled module, and the shim checks it before llama.cpp's recursive parser."""

from __future__ import annotations

import re

import numpy as np

_JSON_STRING = re.compile(r'"(?:\\.|[^"\\])*"')


def bracket_levels(text: str) -> np.ndarray:
    """Nesting of [ and { after each character of `text` (JSON strings masked; unbalanced
    closers never take it below 0)."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).copy()  # one entry per character
    for match in _JSON_STRING.finditer(text):
        codes[match.start():match.end()] = 32
    steps = ((codes == 91) | (codes == 123)).astype(np.int64) - ((codes == 93) | (codes == 125))
    levels = np.cumsum(steps)
    levels -= np.minimum(np.minimum.accumulate(levels), 0) if len(levels) else 0
    return levels


def bracket_depth(text: str) -> int:
    """Deepest nesting of [ and { outside JSON strings."""
    levels = bracket_levels(text)
    return int(levels.max()) if len(levels) else 0
