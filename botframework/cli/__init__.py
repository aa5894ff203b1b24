"""The `botframework` command: serve | pull | models | ps | info | chat | run | replay | service |
rpc-server.

Each subcommand imports what it needs when it runs, so `botframework --help` is instant.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from botframework.errors import BotframeworkError


def _add_model_args(parser: argparse.ArgumentParser, *, defaults: bool = True) -> None:
    """Model flags. Without defaults (serve), unset flags leave the config file/env values alone."""
    from botframework.runtime.catalog import DEFAULT_MODEL

    if defaults:
        parser.add_argument("--model", "-m", default=DEFAULT_MODEL,
                            help=f"catalog name, .gguf path or hf:owner/repo/file.gguf (default {DEFAULT_MODEL})")
    else:  # serve: several models, the first the default
        parser.add_argument("--model", "-m", action="append",
                            help=f"catalog name, .gguf path or hf:owner/repo/file.gguf (default {DEFAULT_MODEL}); "
                                 "repeat it to serve several: the first loads at start, the others on first use")
    parser.add_argument("--ctx-size", type=int, default=8192 if defaults else None,
                        help="KV cells shared by all sequences (default 8192)")
    parser.add_argument("--parallel", type=int, default=None,
                        help="concurrent sequences (KV slots; default: one per 1,024 cells, 2 to 16)")
    parser.add_argument("--threads", type=int, default=None, help="decode threads (default: physical cores)")
    parser.add_argument("--threads-batch", type=int, default=None, help="prompt threads (default: all CPUs)")
    parser.add_argument("--n-gpu-layers", type=_gpu_layers, default="auto" if defaults else None,
                        help="layers to offload to a GPU build's GPUs and the --rpc servers (-1: all); default "
                             "auto: as many as fit their free memory (none without a GPU or RPC server)")
    parser.add_argument("--rpc", metavar="HOST:PORT,...",
                        help="spread the model's layers over these `botframework rpc-server`s (llama.cpp's RPC "
                             "backend)")
    parser.add_argument("--no-hugepages", dest="hugepages", action="store_false", default=None,
                        help="mmap the model file instead of copying it into 2 MiB pages (default: huge pages "
                             "where the kernel offers them; ~7%% faster decoding)")
    parser.add_argument("--no-repack", dest="repack", action="store_false", default=None,
                        help="keep the weights in the GGUF's layout, not the CPU's own where it has kernels "
                             "(AMX, AVX512, ARM): the same rounding as an RPC server or another machine")


def _gpu_layers(value: str) -> int | str:
    from botframework.config import parse_gpu_layers

    try:
        return parse_gpu_layers(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_serve(args: argparse.Namespace) -> int:
    from botframework.runtime.pull import resolve_model
    from botframework.server import ServerSettings, serve

    try:
        settings = ServerSettings.from_env(config=args.config).replace(
            host=args.host, port=args.port, model=args.model, n_ctx=args.ctx_size, num_slots=args.parallel,
            n_threads=args.threads, n_threads_batch=args.threads_batch, n_gpu_layers=args.n_gpu_layers,
            rpc_servers=args.rpc, hugepages=args.hugepages, repack=args.repack,
            api_keys=tuple(args.api_key or ()) or None, cors_origins=tuple(args.cors_origin or ()) or None,
            allow_non_loopback=args.allow_non_loopback, direct_stream=args.direct_stream,
            models_dir=args.models_dir, memory_budget_mb=args.memory_budget, keep_alive_s=args.keep_alive,
            max_queue=args.max_queue, log_level=args.log_level, shutdown_grace_s=args.shutdown_grace,
            stream_write_timeout_s=args.stream_write_timeout,
            sessions_dir=args.sessions_dir, processors=args.processor, trace_path=args.trace,
            trace_prompts=args.trace_prompts, draft=args.draft, draft_max=args.draft_max,
            draft_model=args.draft_model, draft_by_cost=args.draft_by_cost)
        settings.check_bind()
    except ValueError as exc:
        print(f"botframework: error: {exc}", file=sys.stderr)
        return 2
    if settings.pull_missing:  # pull what loads at start before the server starts, with a progress bar
        from botframework.runtime.registry import LoadPolicy

        for entry in settings.model_entries():
            if entry.load is LoadPolicy.PRELOAD:
                # a bar on a terminal; under journald its carriage returns would pile up in the log
                resolve_model(entry.source, allowed_dirs=settings.allowed_dirs, pull_missing=True,
                              progress=sys.stderr.isatty())
                if entry.config.draft_model is not None:
                    resolve_model(str(entry.config.draft_model), allowed_dirs=settings.allowed_dirs,
                                  pull_missing=True, progress=sys.stderr.isatty())
    serve(settings)
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from botframework.runtime.pull import pull

    path = pull(args.name, progress=not args.quiet, force=args.force)
    print(path)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from botframework.runtime.catalog import CATALOG
    from botframework.runtime.pull import list_cached

    cached = {m["name"]: m for m in list_cached()}
    for name, entry in CATALOG.items():
        state = "pulled" if name in cached else "available"
        print(f"{name:28} {entry.size_bytes / 1e6:8.1f} MB  {state:9}  {entry.description}")
    for name, m in cached.items():
        if name not in CATALOG:
            print(f"{name:28} {m['size_bytes'] / 1e6:8.1f} MB  pulled")
    from botframework.cli.remote import fetch_models, print_server_models

    cards = fetch_models(args)
    if cards is not None:  # a server runs: what it declares and what it has loaded
        print_server_models(cards)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from botframework.cli.rpc import rpc_server_binary
    from botframework.config import default_threads
    from botframework.native import shim
    from botframework.native.devices import devices, local_gpus, rpc_supported

    info = shim.build_info()
    info["devices"] = devices()
    gpus = local_gpus()
    info["rpc"] = {"backend": rpc_supported(), "rpc_server": str(rpc_server_binary() or "")}
    info["n_gpu_layers_auto"] = (
        "as many layers as fit the free memory of " + ", ".join(d["name"] for d in gpus) + " (per model, logged "
        "when it loads)" if gpus else "0: no GPU in this build (models with rpc servers: what fits those)")
    decode_threads, batch_threads = default_threads()
    info["default_threads"] = {"decode": decode_threads, "prompt": batch_threads}
    from botframework.config import WorkerConfig, auto_slots
    from botframework.server.settings import ServerSettings

    config = WorkerConfig()
    info["serve_defaults"] = {"memory_budget_mb": ServerSettings().memory_budget_bytes() >> 20,
                              "num_slots": config.num_slots or auto_slots(config.n_ctx), "n_ctx": config.n_ctx}
    if args.selftest:
        ok, report = shim.selftest_quantized()
        info["selftest"] = {"ok": ok, "report": report.splitlines()}
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    features = [k for k, v in info["cpu_features"].items() if v]
    print(f"llama.cpp      {info['llama_cpp']}")
    print(f"compiler       {info['compiler']}  (AMX dead-store workaround: {info['amx_dse_workaround']})")
    print(f"build flags    {info['ggml_flags']}")
    print(f"CPU features   {' '.join(features)}")
    print(f"system info    {info['system_info'].strip()}")
    for i, d in enumerate(info["devices"]):
        print(f"{'devices' if i == 0 else '':15}{d['name']}: {d['description']} ({d['kind']}, "
              f"{d['free_bytes'] >> 20} of {d['total_bytes'] >> 20} MiB free)")
    print(f"GPU layers     n_gpu_layers auto -> {info['n_gpu_layers_auto']}")
    rpc = info["rpc"]
    print(f"RPC            backend {'built in' if rpc['backend'] else 'not built (-DGGML_RPC=OFF)'}; "
          f"rpc-server: {rpc['rpc_server'] or 'not installed'}")
    print(f"threads        decode {decode_threads}, prompt {batch_threads}  (physical cores / usable CPUs)")
    serve = info["serve_defaults"]
    print(f"serve          up to {serve['n_ctx']} KV cells per model (fewer if its weights and cache would not fit the "
          f"memory budget, {serve['memory_budget_mb']} MiB: 80% of the RAM available now), one slot per "
          f"1,024 cells: {serve['num_slots']}")
    if args.selftest:
        print("self-test      " + ("OK" if info["selftest"]["ok"] else "FAILED"))
        for line in info["selftest"]["report"]:
            print(f"  {line}")
    return 0


def _llm(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from botframework.api import LocalLLM
    from botframework.config import parse_rpc_servers

    return LocalLLM(args.model, n_ctx=args.ctx_size, num_slots=args.parallel, n_threads=args.threads,
                    n_threads_batch=args.threads_batch, n_gpu_layers=args.n_gpu_layers,
                    hugepages=args.hugepages is not False, repack=args.repack is not False,
                    rpc_servers=parse_rpc_servers(args.rpc))


def cmd_run(args: argparse.Namespace) -> int:
    with _llm(args) as llm:
        prompt = args.prompt if args.prompt is not None else sys.stdin.read()
        stream = llm.stream_chat(prompt, max_tokens=args.max_tokens, temperature=args.temperature)
        for text in stream:
            print(text, end="", flush=True)
        print()
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    with _llm(args) as llm:
        messages: list[dict[str, str]] = []
        while True:
            try:
                line = input("> ")
            except EOFError:
                print()
                return 0
            if line.strip() in ("/exit", "/quit"):
                return 0
            messages.append({"role": "user", "content": line})
            parts = []
            for text in llm.stream_chat(messages, max_tokens=args.max_tokens, temperature=args.temperature,
                                        session_id="cli"):
                parts.append(text)
                print(text, end="", flush=True)
            print()
            messages.append({"role": "assistant", "content": "".join(parts)})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="botframework", description="Local LLMs behind an OpenAI-compatible API.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="serve a model over an OpenAI-compatible HTTP API")
    _add_model_args(p, defaults=False)
    p.add_argument("--host", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="default 8000")
    p.add_argument("--api-key", action="append", help="require this API key (repeatable)")
    p.add_argument("--cors-origin", action="append", help="allow this CORS origin (repeatable)")
    p.add_argument("--allow-non-loopback", action="store_true", default=None,
                   help="allow binding a non-loopback address without an API key")
    p.add_argument("--no-direct-stream", dest="direct_stream", action="store_false", default=None,
                   help="send every streamed chunk from the event loop, not the engine thread")
    p.add_argument("--draft", choices=("ngram", "model", "none"),
                   help="speculative decoding for requests that do not say (\"speculative\": true/false): "
                        "ngram drafts tokens by prompt lookup, model by the --draft-model's greedy tokens, "
                        "verified in the batch (default none: only requests that ask draft, with the draft "
                        "model if there is one)")
    p.add_argument("--draft-model", metavar="SPEC",
                   help="a small model with the same vocabulary (catalog name or .gguf path) that drafts "
                        "tokens for the served model(s), in the same worker (a [[models]] table's draft_model "
                        "overrides it)")
    p.add_argument("--draft-max", type=int, metavar="N", help="draft tokens per sequence and step, at most (default 8)")
    p.add_argument("--draft-always", dest="draft_by_cost", action="store_const", const=False,
                   help="draft up to each drafter's own length even where it does not pay (by default only as "
                        "many tokens as this machine's measured step costs and each sequence's acceptance "
                        "make worth verifying)")
    p.add_argument("--models-dir", help="serve every .gguf file in this folder, each loaded on first use")
    p.add_argument("--memory-budget", type=int, metavar="MB",
                   help="memory for loaded models; the least recently used idle one unloads to make room "
                        "(default: 80%% of the RAM available at start)")
    p.add_argument("--keep-alive", type=float, metavar="S",
                   help="unload a lazily loaded model after this many idle seconds (default -1: never; 0: "
                        "after each request)")
    p.add_argument("--max-queue", type=int, metavar="N",
                   help="requests that may wait for a slot per model; more are refused with 503 and "
                        "Retry-After (default 256)")
    p.add_argument("--shutdown-grace", type=float, metavar="S",
                   help="on SIGTERM, how long requests in flight may take to finish before they are ended "
                        "(default 30)")
    p.add_argument("--stream-write-timeout", type=float, metavar="S",
                   help="drop a client that takes no bytes of its response for this long, and cancel its "
                        "request (default 30; 0: never)")
    p.add_argument("--sessions-dir", metavar="DIR",
                   help="save chat sessions here when the server stops or a model unloads, and restore them")
    p.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug", "trace"],
                   help="default info; debug also logs every request")
    p.add_argument("--processor", action="append", metavar="NAME=MODULE:ATTR",
                   help="register a logits processor that requests may name (\"logits_processors\": [NAME]); "
                        "imported at start, e.g. typical=botframework.processors:TypicalP (repeatable)")
    p.add_argument("--trace", metavar="FILE",
                   help="append a JSONL step trace of this run (arrivals, plans, step times, finishes; no "
                        "prompt text): replay it with `botframework replay FILE`")
    p.add_argument("--trace-prompts", action="store_true", default=None,
                   help="also write each prompt's text and token ids into the trace")
    p.add_argument("--config", help="TOML settings file (flags and BOTFRAMEWORK_* override it)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("pull", help="download a model into the cache")
    p.add_argument("name")
    p.add_argument("--force", action="store_true", help="download again even if cached")
    p.add_argument("--quiet", "-q", action="store_true")
    p.set_defaults(func=cmd_pull)

    from botframework.cli.remote import add_server_args, cmd_ps

    p = sub.add_parser("models", help="list catalog and pulled models, and a running server's")
    add_server_args(p)
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("ps", help="a running server's loaded models: memory, idle time, requests in flight")
    add_server_args(p)
    p.set_defaults(func=cmd_ps)

    p = sub.add_parser("info", help="show the native build: CPU features, compiler, devices")
    p.add_argument("--json", action="store_true")
    p.add_argument("--selftest", action="store_true", help="run the quantized-kernel self-test")
    p.set_defaults(func=cmd_info)

    for name, func, helptext in (("run", cmd_run, "answer one prompt (argument or stdin)"),
                                 ("chat", cmd_chat, "interactive chat in the terminal")):
        p = sub.add_parser(name, help=helptext)
        _add_model_args(p)
        if name == "run":
            p.add_argument("prompt", nargs="?")
        p.add_argument("--max-tokens", type=int, default=512)
        p.add_argument("--temperature", type=float, default=None,
                       help="default: botframework.specs.SAMPLING_DEFAULTS (llama.cpp's)")
        p.set_defaults(func=func)

    from botframework.cli.service import add_service_parser

    add_service_parser(sub)  # botframework service install | uninstall | status
    from botframework.cli.replay import add_replay_parser

    add_replay_parser(sub)  # botframework replay TRACE --policy ...
    from botframework.cli.rpc import add_rpc_parser

    add_rpc_parser(sub)  # botframework rpc-server --host --port
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except BotframeworkError as exc:
        print(f"botframework: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
