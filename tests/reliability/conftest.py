"""Shared by the reliability suite: real servers through tests/e2e/server_proc.py."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
