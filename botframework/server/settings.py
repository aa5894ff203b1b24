"""ServerSettings: everything `botframework serve` is configured with, frozen.

    defaults  <-  TOML config file (--config / BOTFRAMEWORK_CONFIG)  <-  BOTFRAMEWORK_* environment
              <-  CLI flags (replace / from_args)
       -> check_bind() before binding: no non-loopback address without an API key
       -> worker_config() (how the model runs), request_limits (what a request may ask for)
       -> model_entries(): the registry's declared models: `[[models]]` tables (or repeated
          --model flags), else the one `model`; plus every .gguf in `models_dir`, lazily
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botframework.config import WorkerConfig, memory_budget_default, parse_gpu_layers, parse_rpc_servers
from botframework.processors import load_registry
from botframework.runtime.catalog import DEFAULT_MODEL
from botframework.runtime.handle import model_id_for
from botframework.runtime.registry import (
    KEEP_FOREVER,
    LoadPolicy,
    ModelEntry,
    RemoteSpec,
    best_quantizations,
    gguf_files,
)
from botframework.runtime.requests import RequestLimits
from botframework.trace import TraceWriter

_ENV_PREFIX = "BOTFRAMEWORK_"
MAX_STOP_CHARS = 1024  # characters in one stop string


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    model: str = DEFAULT_MODEL                 # catalog name, .gguf path or hf: spec
    model_id: str | None = None                # id clients name; None: the catalog name / file stem
    models_dirs: tuple[Path, ...] = ()         # where local model paths may live (empty: anywhere)
    models: tuple[Mapping[str, Any], ...] = ()  # [[models]] tables / repeated --model: several models
    models_dir: Path | None = None             # serve every .gguf in this folder, loaded on first use
    memory_budget_mb: int | None = None        # loaded models' memory; None: 80% of the RAM available at start
    keep_alive_s: float = KEEP_FOREVER         # idle seconds before a lazily loaded model unloads (-1: never)
    shutdown_grace_s: float = 30.0             # on SIGTERM: how long requests in flight may take to finish
    stream_write_timeout_s: float = 30.0       # a client that takes no bytes this long is dropped (0: never)
    sessions_dir: Path | None = None           # chat sessions saved here on drain and unload, restored after
    pull_missing: bool = True                  # fetch a catalog model that is not cached yet
    api_keys: tuple[str, ...] = ()             # empty: no authentication
    cors_origins: tuple[str, ...] = ()
    allow_non_loopback: bool = False           # bind a public address without an API key
    max_body_bytes: int = 4 << 20
    max_tokens_cap: int = 4096                 # largest max_tokens a request may ask for
    max_stop_strings: int = 4
    max_choices: int = 8                       # largest n (choices per request)
    max_logit_bias: int = 1024                 # entries in logit_bias
    max_embedding_inputs: int = 256
    max_queue: int = 256                       # requests waiting for a slot per model; more get 503 + Retry-After
    num_slots: int | None = None               # concurrent sequences per model; None: sized from its context
    n_ctx: int = 8192
    n_threads: int | None = None
    n_threads_batch: int | None = None
    n_gpu_layers: int | str = "auto"          # "auto": as many layers as fit the GPUs' / RPC servers' free memory
    rpc_servers: tuple[str, ...] = ()          # `botframework rpc-server` host:port for the default model's layers
    hugepages: bool = True                     # weights and KV cache in 2 MiB pages (Linux THP)
    repack: bool = True                        # weights in the CPU's own layouts where it has kernels
    prefix_cache_mb: int = 1024                # host RAM for idle prompt caches (0: keep them in the KV cache)
    session_ram_mb: int = 512                  # host RAM for stored chat sessions' states (the rest spills
                                               # to sessions_dir when set, else the oldest are dropped)
    direct_stream: bool = True                 # running streams' chunks written by the engine thread (direct.py)
    draft: str = "none"                        # speculative decoding by default: "ngram" | "model" | "none"
    draft_max: int = 8                         # draft tokens per sequence and step, at most
    draft_by_cost: bool = True                 # only as many drafts as pay (measured step costs and
                                               # acceptance); False: always the drafter's own length
    draft_model: str | None = None             # a draft model (catalog name, .gguf path): every model's
                                               # unless its [[models]] table names its own draft_model
    log_level: str = "info"
    # logits processors requests may name ("logits_processors": ["name"]): name -> "module:attr",
    # imported once here at start (botframework.processors.load_processor); never from a request
    processors: Mapping[str, str] = field(default_factory=dict)
    trace_path: Path | None = None             # a JSONL step trace of the run (botframework.trace)
    trace_prompts: bool = False                # ...with each prompt's text and token ids

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, not {self.port}")
        for name in ("max_body_bytes", "max_tokens_cap", "max_stop_strings", "max_choices", "num_slots", "n_ctx",
                     "max_embedding_inputs", "max_queue"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.prefix_cache_mb < 0:
            raise ValueError("prefix_cache_mb must be >= 0")
        if self.session_ram_mb < 0:
            raise ValueError("session_ram_mb must be >= 0")
        if self.draft not in ("none", "ngram", "model") or self.draft_max < 1:
            raise ValueError("draft must be 'none', 'ngram' or 'model', and draft_max >= 1")
        if self.draft == "model" and not self.draft_model and not any(t.get("draft_model") for t in self.models):
            raise ValueError("draft 'model' needs a draft model: --draft-model SPEC (draft_model), or "
                             "draft_model in a [[models]] table")
        if any(not key for key in self.api_keys):
            raise ValueError("API keys must not be empty strings")
        if self.shutdown_grace_s < 0:
            raise ValueError("shutdown_grace_s must be >= 0")
        if self.stream_write_timeout_s < 0:
            raise ValueError("stream_write_timeout_s must be >= 0 (0: never)")
        if self.memory_budget_mb is not None and self.memory_budget_mb < 1:
            raise ValueError("memory_budget_mb must be >= 1")
        # imported now: a bad path stops the start, not a request; one writer for every model
        object.__setattr__(self, "_processor_registry", load_registry(dict(self.processors)))
        object.__setattr__(self, "_trace", TraceWriter(self.trace_path, prompts=self.trace_prompts)
                           if self.trace_path is not None else None)
        self.model_entries()  # a bad [[models]] table is an error now, not at the first request

    @property
    def processor_registry(self) -> Mapping[str, Any]:
        """The registered logits processors by name (objects, imported at start)."""
        return self._processor_registry  # type: ignore[attr-defined, no-any-return]

    @property
    def served_model_id(self) -> str:
        return self.model_id or model_id_for(self.model)

    def worker_config(self) -> WorkerConfig:
        """How the model runs: the same WorkerConfig LocalLLM builds from its arguments."""
        return WorkerConfig(n_ctx=self.n_ctx, num_slots=self.num_slots, memory_budget_bytes=self.memory_budget_bytes(),
                            n_threads=self.n_threads,
                            n_threads_batch=self.n_threads_batch, n_gpu_layers=self.n_gpu_layers,
                            rpc_servers=self.rpc_servers,
                            hugepages=self.hugepages, repack=self.repack, prefix_cache_bytes=self.prefix_cache_mb << 20,
                            session_ram_bytes=self.session_ram_mb << 20,
                            max_waiting=self.max_queue, draft_max=self.draft_max, draft_model=self.draft_model,
                            draft_by_cost=self.draft_by_cost,
                            # a model without a draft model (only some [[models]] tables name
                            # one) does not draft by default under draft "model"
                            speculative="none" if self.draft == "model" and not self.draft_model else self.draft,
                            trace=self._trace)  # type: ignore[attr-defined]

    @property
    def allowed_dirs(self) -> list[Path] | None:
        """Where local model files may live (None: anywhere)."""
        dirs = [*self.models_dirs, *([self.models_dir] if self.models_dir else [])]
        return dirs or None

    def memory_budget_bytes(self) -> int:
        if self.memory_budget_mb is not None:
            return self.memory_budget_mb << 20
        return memory_budget_default()

    def model_entries(self) -> list[ModelEntry]:
        """The declared models, the default (first) one first."""
        if self.models:
            entries = [self._entry(table) for table in self.models]
        else:  # the one model of a plain `serve`, loaded at start as before
            entries = [ModelEntry(name=self.served_model_id, source=self.model, config=self.worker_config(),
                                  load=LoadPolicy.PRELOAD)]
        if self.models_dir is not None:
            if not self.models_dir.is_dir():
                raise ValueError(f"models_dir {self.models_dir} is not a folder")
            taken = {name for entry in entries for name in entry.names}
            files = gguf_files(self.models_dir)
            # a model kept in several quantizations also answers to its base name: the best that fits
            best = {path: base for base, path in best_quantizations(files, self.memory_budget_bytes()).items()
                    if base not in taken}
            for path in files:
                if path.stem not in taken:
                    aliases = (best[path],) if path in best else ()
                    entries.append(ModelEntry(name=path.stem, source=str(path), config=self.worker_config(),
                                              keep_alive_s=self.keep_alive_s, aliases=aliases))
        return entries

    def entry_for_load(self, spec: str) -> ModelEntry:
        """A model that POST /v1/models/{spec}/load names but no one declared: a catalog name or
        hf: spec already in the cache, or a .gguf path inside the configured model folders (no
        folders configured: no paths over HTTP). Loaded lazily, kept alive as --keep-alive says.
        Blocking (it checks the file)."""
        from botframework.errors import InvalidRequestError, ModelNotFoundError
        from botframework.runtime.catalog import CATALOG
        from botframework.runtime.hub import HF_PREFIX
        from botframework.runtime.pull import resolve_model

        is_path = spec.endswith(".gguf") and not spec.startswith(HF_PREFIX)
        if spec not in CATALOG and not spec.startswith(HF_PREFIX) and not is_path:
            raise ModelNotFoundError(f"The model '{spec}' does not exist: not declared, not in the catalog, "
                                     "not a .gguf path")
        if is_path and not self.allowed_dirs:
            raise InvalidRequestError("this server loads model files only from its configured folders, and has "
                                      "none: start it with --models-dir DIR", param="model",
                                      code="model_path_not_allowed")
        path = resolve_model(spec, allowed_dirs=self.allowed_dirs)  # confined, cached, a GGUF: or an error
        name = model_id_for(spec)
        aliases = tuple(dict.fromkeys(alias for alias in (spec, str(path)) if alias != name))
        return ModelEntry(name=name, source=str(path) if is_path else spec, aliases=aliases,
                          config=self.worker_config(), keep_alive_s=self.keep_alive_s)

    def _entry(self, table: Mapping[str, Any]) -> ModelEntry:
        """One [[models]] table: name, aliases, source (or model / path), kind, load, keep_alive,
        sha256, chat_template, and how it runs (n_ctx, parallel, threads, threads_batch,
        n_gpu_layers, hugepages, repack, prefix_cache_mb, session_ram_mb, draft_model; the server's values where
        left out)."""
        unknown = sorted(set(table) - _MODEL_KEYS)
        if unknown:
            raise ValueError(f"unknown key(s) in a [[models]] table: {', '.join(unknown)} "
                             f"(known: {', '.join(sorted(_MODEL_KEYS))})")
        remote = _remote_spec(table)
        if remote is not None and "rpc" in table:
            raise ValueError(f"a [[models]] table has a url or rpc servers, not both: {dict(table)}")
        source = table.get("source") or table.get("model") or table.get("path") or (remote and remote.urls[0])
        if not source:
            raise ValueError(f"a [[models]] table needs a source (catalog name, .gguf path or hf: spec): {dict(table)}")
        base = self.worker_config()
        config = dataclasses.replace(
            base, n_ctx=int(table.get("n_ctx", base.n_ctx)), num_slots=table.get("parallel", base.num_slots),
            n_threads=table.get("threads", base.n_threads),
            n_threads_batch=table.get("threads_batch", base.n_threads_batch),
            n_gpu_layers=table.get("n_gpu_layers", base.n_gpu_layers),  # WorkerConfig parses both
            rpc_servers=table.get("rpc", ()),
            hugepages=bool(_coerce("hugepages", table.get("hugepages", base.hugepages))),
            repack=bool(_coerce("repack", table.get("repack", base.repack))),
            prefix_cache_bytes=int(table.get("prefix_cache_mb", base.prefix_cache_bytes >> 20)) << 20,
            session_ram_bytes=int(table.get("session_ram_mb", base.session_ram_bytes >> 20)) << 20)
        if table.get("kind") == "embedding":  # nothing to draft for
            config = dataclasses.replace(config, draft_model=None, speculative="none")
        elif "draft_model" in table:
            if remote is not None:
                raise ValueError(f"model {source!r}: a remote model (url) has no draft_model here")
            draft_model = table["draft_model"] or None
            config = dataclasses.replace(config, draft_model=draft_model, speculative=(
                "model" if self.draft == "model" and draft_model else
                "none" if self.draft == "model" else self.draft))
        try:
            load = LoadPolicy(table.get("load", "lazy"))
        except ValueError:
            raise ValueError(f"model {source!r}: load must be 'preload' or 'lazy'") from None
        aliases = table.get("aliases", ())
        # a model loaded at start stays loaded unless its table says otherwise
        keep_alive = table.get("keep_alive", KEEP_FOREVER if load is LoadPolicy.PRELOAD or remote is not None
                               else self.keep_alive_s)
        return ModelEntry(name=str(table.get("name") or model_id_for(str(source))), source=str(source),
                          aliases=(aliases,) if isinstance(aliases, str) else tuple(aliases), config=config,
                          load=load, keep_alive_s=float(keep_alive),
                          sha256=table.get("sha256"), kind=table.get("kind"), chat_template=table.get("chat_template"),
                          remote=remote)

    @property
    def request_limits(self) -> RequestLimits:
        """What one request may ask for; max_tokens left out means what fits the context."""
        return RequestLimits(max_tokens=self.max_tokens_cap, default_max_tokens=None,
                             max_stop_strings=self.max_stop_strings, max_stop_chars=MAX_STOP_CHARS,
                             max_logit_bias=self.max_logit_bias)

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:  # a host name other than localhost: assume it is reachable
            return False

    def check_bind(self) -> None:
        """Refuse to expose an unauthenticated server beyond this machine."""
        if not self.is_loopback and not self.api_keys and not self.allow_non_loopback:
            raise ValueError(
                f"refusing to bind {self.host!r} without an API key: anyone who can reach it could use "
                "the model. Set an API key (--api-key / BOTFRAMEWORK_API_KEYS), bind 127.0.0.1, or pass "
                "--allow-non-loopback (BOTFRAMEWORK_ALLOW_NON_LOOPBACK=1) to do it anyway.")

    def replace(self, **overrides: Any) -> ServerSettings:
        """A copy with the given fields changed; None values keep the current value. Several
        models given as `model` (repeated --model flags) declare one model each, the first
        loaded at start and the default."""
        values = {k: _coerce(k, v) for k, v in overrides.items() if v is not None}
        if isinstance(values.get("model"), list):
            specs = values.pop("model")
            values["model"] = specs[0]
            values["models"] = tuple({"source": spec, "load": "preload" if i == 0 else "lazy"}
                                     for i, spec in enumerate(specs))
        elif "model" in values and self.models and "models" not in values:
            # one model named here replaces the config's [[models]] tables, as several would
            values["models"] = ({"source": values["model"], "load": "preload"},)
        return dataclasses.replace(self, **values)

    @classmethod
    def from_args(cls, *, config: str | Path | None = None, **overrides: Any) -> ServerSettings:
        """Config file, then environment, then these overrides (None: not given)."""
        return cls.from_env(config=config).replace(**overrides)

    @classmethod
    def from_file(cls, path: str | Path) -> dict[str, Any]:
        """Settings from a TOML file: top-level keys (or a [server] table) named like the fields."""
        try:
            with open(path, "rb") as handle:
                data = tomllib.load(handle)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ValueError(f"cannot read config file {path}: {exc}") from None
        models = data.get("models")
        data = data.get("server", data)
        if models is not None:
            data = {**data, "models": models}  # [[models]] tables may sit beside a [server] table
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown setting(s) in {path}: {', '.join(unknown)}")
        return {k: _coerce(k, v) for k, v in data.items()}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *,
                 config: str | Path | None = None) -> ServerSettings:
        env = os.environ if environ is None else environ
        config = config or env.get(_ENV_PREFIX + "CONFIG") or None
        values: dict[str, Any] = cls.from_file(config) if config else {}
        for f in dataclasses.fields(cls):
            raw = env.get(_ENV_PREFIX + f.name.upper())
            if raw is None and f.name == "api_keys":
                raw = env.get(_ENV_PREFIX + "API_KEY")
            if raw is not None and raw != "":
                values[f.name] = _parse(f.name, raw)
        return cls(**values)


_MODEL_KEYS = {"name", "aliases", "source", "model", "path", "kind", "load", "keep_alive", "sha256", "chat_template",
               "url", "urls", "api_key", "remote_model", "timeout_s",
               "n_ctx", "parallel", "threads", "threads_batch", "n_gpu_layers", "hugepages", "repack",
               "prefix_cache_mb", "session_ram_mb", "rpc", "draft_model"}
_BOOLS = {"pull_missing", "allow_non_loopback", "hugepages", "repack", "direct_stream", "trace_prompts",
          "draft_by_cost"}
_BOOL = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}
_INTS = {"port", "max_body_bytes", "max_tokens_cap", "max_stop_strings", "max_choices", "max_logit_bias",
         "max_embedding_inputs", "num_slots", "n_ctx", "n_threads", "n_threads_batch",
         "prefix_cache_mb", "session_ram_mb", "memory_budget_mb", "max_queue", "draft_max"}


def _remote_spec(table: Mapping[str, Any]) -> RemoteSpec | None:
    """A [[models]] table's `url` (or `urls`, replicas), `api_key`, `remote_model`, `timeout_s`."""
    urls = table.get("urls", table.get("url"))
    if urls is None:
        for key in ("api_key", "remote_model", "timeout_s"):
            if key in table:
                raise ValueError(f"'{key}' in a [[models]] table needs 'url' (a remote model)")
        return None
    return RemoteSpec(urls=(urls,) if isinstance(urls, str) else tuple(str(u) for u in urls),
                      api_key=table.get("api_key"), model=table.get("remote_model"),
                      timeout_s=float(table.get("timeout_s", 600.0)))


def _parse(name: str, raw: str) -> Any:
    """One environment value: ints, booleans, comma-separated tuples, plain strings."""
    if name in _INTS:
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"{_ENV_PREFIX}{name.upper()} must be an integer, not {raw!r}") from None
    if name in _BOOLS:
        try:
            return _BOOL[raw.strip().lower()]
        except KeyError:
            raise ValueError(f"{_ENV_PREFIX}{name.upper()} must be a boolean, not {raw!r}") from None
    if name in ("api_keys", "cors_origins", "models_dirs", "processors"):
        return _coerce(name, [part.strip() for part in raw.split(",") if part.strip()])
    if name in ("keep_alive_s", "shutdown_grace_s", "stream_write_timeout_s"):
        try:
            return float(raw)
        except ValueError:
            raise ValueError(f"{_ENV_PREFIX}{name.upper()} must be a number, not {raw!r}") from None
    return _coerce(name, raw)


def _coerce(name: str, value: Any) -> Any:
    if name in _BOOLS and not isinstance(value, bool):  # a config file's "off" is not true
        try:
            return _BOOL[str(value).strip().lower()]
        except KeyError:
            raise ValueError(f"{name} must be a boolean, not {value!r}") from None
    if name == "models_dirs":
        return tuple(Path(p) for p in value)
    if name in ("models_dir", "sessions_dir", "trace_path"):
        return Path(value).expanduser()
    if name == "processors":  # a table, or NAME=MODULE:ATTR strings (--processor, the environment)
        if isinstance(value, Mapping):
            pairs = list(value.items())
        else:
            items = [value] if isinstance(value, str) else list(value)
            if not all(isinstance(item, str) and "=" in item for item in items):
                raise ValueError(f"processors are NAME=MODULE:ATTR, not {value!r}")
            pairs = [tuple(item.split("=", 1)) for item in items]
        return {str(k).strip(): str(v).strip() for k, v in pairs}
    if name in ("keep_alive_s", "shutdown_grace_s", "stream_write_timeout_s"):
        return float(value)
    if name == "n_gpu_layers":
        return parse_gpu_layers(value)
    if name == "rpc_servers":
        return parse_rpc_servers(value)
    if name == "model" and not isinstance(value, str):  # repeated --model flags
        specs = [str(v) for v in value]
        return specs[0] if len(specs) == 1 else specs
    if name == "models":
        if not isinstance(value, (list, tuple)) or not all(isinstance(t, Mapping) for t in value):
            raise ValueError("models must be a list of tables ([[models]] in TOML)")
        return tuple(dict(t) for t in value)
    if name in ("api_keys", "cors_origins"):
        return (value,) if isinstance(value, str) else tuple(value)
    return value
