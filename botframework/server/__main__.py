"""python -m botframework.server [--host H] [--port P] [--model M] ...: serve without the CLI.

Flags override BOTFRAMEWORK_* environment variables (ServerSettings.from_args).
"""

from __future__ import annotations

import argparse
import sys

from botframework.server import ServerSettings, serve


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m botframework.server")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--model", action="append", help="repeat to serve several (the first is the default)")
    p.add_argument("--models-dir", help="serve every .gguf in this folder, loaded on first use")
    p.add_argument("--memory-budget", dest="memory_budget_mb", type=int, metavar="MB")
    p.add_argument("--keep-alive", dest="keep_alive_s", type=float, metavar="S")
    p.add_argument("--ctx-size", dest="n_ctx", type=int)
    p.add_argument("--parallel", dest="num_slots", type=int)
    p.add_argument("--threads", dest="n_threads", type=int)
    p.add_argument("--threads-batch", dest="n_threads_batch", type=int)
    p.add_argument("--api-key", dest="api_keys", action="append")
    p.add_argument("--cors-origin", dest="cors_origins", action="append")
    p.add_argument("--allow-non-loopback", action="store_true", default=None)
    p.add_argument("--no-hugepages", dest="hugepages", action="store_false", default=None,
                   help="mmap the model file instead of copying it into huge pages")
    p.add_argument("--no-direct-stream", dest="direct_stream", action="store_false", default=None,
                   help="send every streamed chunk from the event loop (see server/direct.py)")
    p.add_argument("--log-level")
    p.add_argument("--config", help="TOML settings file (flags and BOTFRAMEWORK_* override it)")
    args = vars(p.parse_args(argv))
    try:
        settings = ServerSettings.from_args(**args)
        serve(settings)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
