"""`botframework ps` and the server half of `botframework models`: ask a running server.

    --url (or BOTFRAMEWORK_URL, default http://127.0.0.1:8000), --api-key (or BOTFRAMEWORK_API_KEY)
    GET /v1/models -> every declared model: state, memory, idle time, requests in flight
"""

from __future__ import annotations

import argparse
import os
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8000"


def add_server_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=None, help=f"the server (default $BOTFRAMEWORK_URL or {DEFAULT_URL})")
    parser.add_argument("--api-key", dest="server_api_key", default=None,
                        help="its API key (default $BOTFRAMEWORK_API_KEY)")


def fetch_models(args: argparse.Namespace) -> list[dict[str, Any]] | None:
    """The server's model cards, or None if no server answers there."""
    import httpx

    url = (args.url or os.environ.get("BOTFRAMEWORK_URL") or DEFAULT_URL).rstrip("/")
    key = args.server_api_key or os.environ.get("BOTFRAMEWORK_API_KEY")
    headers = {"authorization": f"Bearer {key}"} if key else {}
    try:
        response = httpx.get(f"{url}/v1/models", headers=headers, timeout=5)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        raise SystemExit(f"botframework: {url} answered {response.status_code}: {response.text[:200]}")
    cards: list[dict[str, Any]] = response.json()["data"]
    return cards


def _mib(num_bytes: int) -> str:
    return f"{num_bytes / (1 << 20):.0f} MiB" if num_bytes else "-"


def _idle(meta: dict[str, Any]) -> str:
    if meta.get("state") != "loaded":
        return "-"
    if meta.get("num_in_flight"):
        return "busy"
    return f"{meta.get('idle_s', 0.0):.0f} s"


def cmd_ps(args: argparse.Namespace) -> int:
    cards = fetch_models(args)
    if cards is None:
        print("botframework: no server answers (start one with `botframework serve`, or pass --url)")
        return 1
    loaded = [c for c in cards if c["meta"].get("state") in ("loaded", "loading")]
    print(f"{'MODEL':28} {'STATE':9} {'MEMORY':>10} {'IDLE':>7} {'REQUESTS':>8}  KEEP ALIVE")
    for card in loaded:
        meta = card["meta"]
        keep = meta.get("keep_alive_s", -1)
        keep_text = "forever" if keep < 0 else f"{keep:g} s"
        print(f"{card['id']:28} {meta['state']:9} {_mib(meta.get('memory_bytes', 0)):>10} {_idle(meta):>7} "
              f"{meta.get('num_in_flight', 0):>8}  {keep_text}")
    if not loaded:
        print("(no model is loaded)")
    return 0


def print_server_models(cards: list[dict[str, Any]]) -> None:
    print(f"\nserved ({len(cards)} declared):")
    for card in cards:
        meta = card["meta"]
        error = f"  {meta['error']}" if meta.get("error") else ""
        print(f"  {card['id']:26} {meta.get('state', '?'):9} {_mib(meta.get('memory_bytes', 0)):>10}{error}")
