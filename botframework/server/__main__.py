"""python -m botframework.server [flags]: the same as `botframework serve [flags]` (one parser,
botframework.cli's), for environments that run modules rather than console scripts."""

from __future__ import annotations

import sys

from botframework.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
