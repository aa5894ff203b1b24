"""Compute devices this build can place layers on, and the JSON strings the shim returns.

    bf_devices() -> {"devices": [{"name", "description", "kind", "backend", "free_bytes",
                                  "total_bytes"}], "rpc": bool}
    kind: "cpu" | "gpu" | "igpu" | "accel". RPC servers' devices are not listed here: a model
    that names them (ModelParams.rpc_servers) gets them, and Model.placement lists them.
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

from botframework.native._lib import ffi, lib


def take_json(ptr: Any) -> dict[str, Any]:
    """Decode and free a char* returned by the shim."""
    if ptr == ffi.NULL:
        raise MemoryError("bf_shim returned NULL")
    try:
        return json.loads(ffi.string(ptr).decode("utf-8"))  # type: ignore[no-any-return]
    finally:
        lib().bf_string_free(ptr)


def devices() -> list[dict[str, Any]]:
    """Every device of this build (the CPU, and GPUs in a CUDA/Vulkan build) with its memory."""
    return list(take_json(lib().bf_devices())["devices"])


def rpc_supported() -> bool:
    """Whether llama.cpp's RPC backend is built in (GGML_RPC, on by default)."""
    return bool(take_json(lib().bf_devices())["rpc"])


def local_gpus() -> list[dict[str, Any]]:
    """This build's GPU devices (none in a CPU build)."""
    return [d for d in devices() if d["kind"] in ("gpu", "igpu")]


# ggml-rpc's handshake: | cmd HELLO=14 (1 byte) | size (u64) | conn_caps (24 bytes) |, answered
# by | size (u64) | major, minor, patch, pad, conn_caps (28 bytes) | (ggml-rpc.cpp, transport.h)
_RPC_HELLO = 14
_RPC_CAPS_SIZE = 24


def probe_rpc_server(endpoint: str, timeout_s: float = 5.0) -> tuple[int, int, int]:
    """Check that `endpoint` is an rpc-server of this build's protocol before llama.cpp connects:
    ggml-rpc aborts the whole process when a server does not answer. Returns its version;
    ConnectionError with the reason otherwise.

    An rpc-server serves one client at a time: while another process (or a model of this one)
    is connected, it does not answer, and this times out."""
    host, _, port = endpoint.rpartition(":")
    host = host.strip("[]")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s) as sock:
            sock.settimeout(timeout_s)
            sock.sendall(struct.pack("<BQ", _RPC_HELLO, _RPC_CAPS_SIZE) + bytes(_RPC_CAPS_SIZE))
            reply = b""
            while len(reply) < 8 + 4 + _RPC_CAPS_SIZE:
                chunk = sock.recv(8 + 4 + _RPC_CAPS_SIZE - len(reply))
                if not chunk:
                    break
                reply += chunk
    except TimeoutError:
        raise ConnectionError(f"RPC server {endpoint} did not answer within {timeout_s:g} s (it serves one "
                              "client at a time: is another server connected to it?)") from None
    except OSError as exc:
        raise ConnectionError(f"RPC server {endpoint}: {exc.strerror or exc} (is `botframework rpc-server` "
                              "running there?)") from None
    if len(reply) < 8 + 4 or struct.unpack_from("<Q", reply)[0] != 4 + _RPC_CAPS_SIZE:
        raise ConnectionError(f"RPC server {endpoint} did not complete the handshake (not an rpc-server, or "
                              "one of another llama.cpp version)")
    major, minor, patch = reply[8], reply[9], reply[10]
    ours = take_json(lib().bf_devices())["rpc_protocol"]
    if major != ours[0] or minor > ours[1]:
        raise ConnectionError(f"RPC server {endpoint} speaks protocol {major}.{minor}.{patch}, this build "
                              f"{ours[0]}.{ours[1]}.{ours[2]}: run the rpc-server of the same botframework version")
    return major, minor, patch
