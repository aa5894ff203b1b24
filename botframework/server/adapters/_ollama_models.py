"""What Ollama clients are told about models: /api/tags, /api/show, /api/ps.

    registry.describe() (declared models: state, memory, keep-alive) + the model's file
      + the loaded handle, when there is one (GGUF metadata, template, context)
      --> {name: "id:latest", model, size, digest, modified_at, details{format, family, ...}}
    runtime.pull.list_cached(): catalog / hf: files in the cache that no one declared yet
      (usable by name: the adapter declares them on first use)

Nothing here loads a model: a model that is not loaded is described from its entry and file
only (no GGUF metadata, no template).
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from pathlib import Path
from typing import Any

from botframework.errors import BotframeworkError
from botframework.runtime.pull import list_cached, resolve_model
from botframework.runtime.registry import KEEP_FOREVER, ModelEntry
from botframework.server.adapters._ollama_protocol import MAX_KEEP_ALIVE_S, display_name, timestamp
from botframework.server.runtime import Runtime
from botframework.server.settings import ServerSettings

_QUANT_TAG = re.compile(r"[-_.]((?:i?q\d[a-z0-9_]*|f16|bf16|f32))$", re.IGNORECASE)


def model_file(settings: ServerSettings, entry: ModelEntry, handle: Runtime | None) -> Path | None:
    """The model's file on this machine, if it is there (blocking: it may check the cache)."""
    path = getattr(handle, "path", None)
    if isinstance(path, Path):
        return path
    try:
        return resolve_model(entry.source, allowed_dirs=settings.allowed_dirs, pull_missing=False)
    except BotframeworkError:
        return None


def undeclared_cached(known: set[Path]) -> list[tuple[str, Path]]:
    """Cached catalog models and hf: files no declared model is (blocking)."""
    out = []
    for item in list_cached():
        path = Path(item["path"])
        if path.resolve() not in known:
            out.append((item["name"], path))
    return out


def card(model_id: str, path: Path | None, handle: Runtime | None) -> dict[str, Any]:
    """One model as /api/tags lists it."""
    stat = _stat(path)
    name = display_name(model_id)
    return {"name": name, "model": name, "modified_at": timestamp(stat.st_mtime if stat else None),
            "size": stat.st_size if stat else 0, "digest": digest(model_id, path), "details": details(handle, path)}


def digest(model_id: str, path: Path | None) -> str:
    """A stable id of the model's file (name, size, mtime): not a hash of its bytes, which would
    mean reading gigabytes for a listing."""
    stat = _stat(path)
    key = f"{model_id}:{path}:{stat.st_size if stat else 0}:{stat.st_mtime_ns if stat else 0}"
    return hashlib.sha256(key.encode()).hexdigest()


def details(handle: Runtime | None, path: Path | None) -> dict[str, Any]:
    meta = metadata(handle)
    family = meta.get("general.architecture", "")
    model = _native_model(handle)
    num_params = int(getattr(model, "num_params", 0) or 0)
    quant = _QUANT_TAG.search(path.stem) if path is not None else None
    return {"parent_model": "", "format": "gguf", "family": family, "families": [family] if family else None,
            "parameter_size": _parameter_size(num_params) if num_params else "",
            "quantization_level": quant.group(1).upper() if quant else ""}


def metadata(handle: Runtime | None) -> dict[str, str]:
    """The loaded model's GGUF key/values ({} if it is not loaded)."""
    model = _native_model(handle)
    reader = getattr(model, "metadata", None)
    return dict(reader()) if callable(reader) else {}


def model_info(handle: Runtime | None) -> dict[str, Any]:
    """/api/show's model_info: the GGUF metadata, numbers as numbers (arrays are summarised by llama.cpp)."""
    return {key: _number(value) for key, value in sorted(metadata(handle).items())}


def chat_template(handle: Runtime | None) -> str:
    model = _native_model(handle)
    reader = getattr(model, "chat_template", None)
    return (reader() or "") if callable(reader) else ""


def fills_in_middle(handle: Runtime | None) -> bool:
    special = getattr(_native_model(handle), "special", None)
    return special is not None and min(special.fim_pre, special.fim_suf, special.fim_mid) >= 0


def capabilities(handle: Runtime | None, kind: str | None) -> list[str]:
    """Ollama's capability names for what this server does with the model."""
    if (kind or getattr(handle, "kind", "chat")) == "embedding":
        return ["embedding"]
    caps = ["completion", "tools"]  # tools: the template's own format, or the generic one
    if fills_in_middle(handle):
        caps.append("insert")
    render = getattr(handle, "render_prompt", None)
    if callable(render):
        try:
            if render([{"role": "user", "content": "x"}]).get("supports_thinking"):
                caps.append("thinking")
        except BotframeworkError:
            pass
    return caps


def expires_at(info: dict[str, Any]) -> str:
    """When an idle model unloads: keep-alive less the idle time so far (Ollama's expires_at)."""
    keep = float(info["keep_alive_s"])
    left = MAX_KEEP_ALIVE_S if keep == KEEP_FOREVER else max(0.0, keep - float(info["idle_s"]))
    return timestamp(time.time() + left)


def _native_model(handle: Runtime | None) -> Any:
    return getattr(getattr(handle, "worker", None), "model", None)


def _stat(path: Path | None) -> Any:
    try:
        return path.stat() if path is not None else None
    except OSError:
        return None


def _parameter_size(num_params: int) -> str:
    return f"{num_params / 1e9:.1f}B" if num_params >= 1e9 else f"{num_params / 1e6:.0f}M"


def _number(value: str) -> Any:
    try:
        return int(value)
    except ValueError:
        pass
    try:
        number = float(value)
    except ValueError:
        return value
    return number if math.isfinite(number) else value
