"""`botframework rpc-server`: llama.cpp's RPC server (the vendored tools/rpc, built into the
package as botframework/bin/rpc-server), so that another machine's server can put a model's
layers on this machine's CPU or GPUs:

    this host:   botframework rpc-server --host 10.0.0.5 --port 50052 --allow-non-loopback
    the server:  [[models]] source = "..." rpc = ["10.0.0.5:50052", "10.0.0.6:50052"]

The RPC protocol has no authentication and no encryption: anyone who reaches the port can
run computations and read the tensors. It binds 127.0.0.1 unless told otherwise, and a public
address needs --allow-non-loopback; keep it on a private network. One server (one client at
a time) per machine and device set.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from pathlib import Path
from typing import Any


def rpc_server_binary() -> Path | None:
    """The installed rpc-server (or, from a source checkout, the one in the CMake build tree that
    built the module); None in a build with -DGGML_RPC=OFF."""
    candidates = [Path(__file__).resolve().parent.parent / "bin" / "rpc-server"]
    try:
        from botframework.native._build_info import BUILD_DIR
    except ImportError:
        pass
    else:
        candidates.append(Path(BUILD_DIR) / "bin" / "ggml-rpc-server")
    return next((path for path in candidates if path.is_file() and os.access(path, os.X_OK)), None)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def rpc_server_argv(args: argparse.Namespace, binary: Path) -> list[str]:
    from botframework.config import default_threads

    argv = [str(binary), "--host", args.host, "--port", str(args.port),
            "--threads", str(args.threads or default_threads()[0])]
    if args.device:
        argv += ["--device", args.device]
    if args.cache:
        argv.append("--cache")
    return argv


def cmd_rpc_server(args: argparse.Namespace) -> int:
    if not _loopback(args.host) and not args.allow_non_loopback:
        print(f"botframework: error: the RPC protocol has no authentication or encryption; binding {args.host} "
              "needs --allow-non-loopback (and a private network)", file=sys.stderr)
        return 2
    binary = rpc_server_binary()
    if binary is None:
        print("botframework: error: this install has no rpc-server (it was built with -DGGML_RPC=OFF; reinstall "
              "without it)", file=sys.stderr)
        return 2
    argv = rpc_server_argv(args, binary)
    sys.stdout.flush()
    os.execv(argv[0], argv)  # the server itself gets the signals (systemd, Ctrl-C)
    return 0  # not reached


def add_rpc_parser(sub: Any) -> None:
    p = sub.add_parser("rpc-server", help="serve this machine's CPU/GPUs to another botframework server's models "
                                          "(llama.cpp's RPC backend)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=50052, help="default 50052")
    p.add_argument("--threads", type=int, help="CPU threads (default: physical cores)")
    p.add_argument("--device", help="devices to serve, comma-separated (default: the GPUs, else the CPU)")
    p.add_argument("--cache", action="store_true",
                   help="keep received weights in a local file cache, so the next load sends only hashes")
    p.add_argument("--allow-non-loopback", action="store_true",
                   help="allow a non-loopback --host (the protocol has no authentication or encryption)")
    p.set_defaults(func=cmd_rpc_server)
