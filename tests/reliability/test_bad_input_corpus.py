"""Bad input against the real server and model: a written corpus of >= 1,000 malformed requests.

tests/server/test_schemathesis.py fuzzes the OpenAPI document over the fake runtime; this corpus
is what a generator does not think of, sent to the real engine: token ids -1 and 999999, negative
and huge numbers, infinities, 10k-deep JSON, 30,000 '(' in a grammar, `{}` and self-referencing
schemas, oversized bodies, wrong content types, JSON syntax errors, invalid UTF-8 and lone
surrogates, on every generation route of every protocol (OpenAI chat/completions/embeddings/infill,
Responses, Anthropic, Ollama). Each answer must be a 4xx in that protocol's own error shape;
afterwards /health answers and the process is alive. The p99 rejection time is printed (the issue
asks < 100 ms; the assertion is only a generous "it did not hang" bound).

Two 500s this corpus found (a lone surrogate in a completions prompt, a 1,000-deep schema pattern)
are fixed (7466b6f); their requests stay below as regression tests.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from server_proc import served

MODEL = "smollm2-135m-instruct"
OPENAI = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/infill", "/v1/responses")
ANTHROPIC = ("/v1/messages",)
OLLAMA = ("/api/chat", "/api/generate")
ROUTES = OPENAI + ANTHROPIC + OLLAMA

# a valid body per route, and the content field that carries text
BASE: dict[str, tuple[dict, tuple[str, ...]]] = {  # type: ignore[type-arg]
    "/v1/chat/completions": ({"model": MODEL, "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]},
                             ("messages", 0, "content")),
    "/v1/completions": ({"model": MODEL, "max_tokens": 2, "prompt": "hi"}, ("prompt",)),
    "/v1/embeddings": ({"model": MODEL, "input": "hi"}, ("input",)),
    "/infill": ({"model": MODEL, "n_predict": 2, "input_prefix": "hi", "input_suffix": "b"}, ("input_prefix",)),
    "/v1/responses": ({"model": MODEL, "max_output_tokens": 2, "input": "hi"}, ("input",)),
    "/v1/messages": ({"model": MODEL, "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]},
                     ("messages", 0, "content")),
    "/api/chat": ({"model": MODEL, "stream": False, "options": {"num_predict": 2},
                   "messages": [{"role": "user", "content": "hi"}]}, ("messages", 0, "content")),
    "/api/generate": ({"model": MODEL, "stream": False, "options": {"num_predict": 2}, "prompt": "hi"}, ("prompt",)),
}

# numeric fields per route that have bounds, and values no bound admits
NUMERIC: dict[str, tuple[str, ...]] = {
    "/v1/chat/completions": ("max_tokens", "temperature", "top_p", "n", "presence_penalty", "frequency_penalty",
                             "top_logprobs", "max_completion_tokens"),
    "/v1/completions": ("max_tokens", "temperature", "top_p", "n", "presence_penalty", "frequency_penalty",
                        "logprobs"),
    "/v1/embeddings": ("dimensions",),
    "/infill": ("n_predict", "temperature", "top_p"),
    "/v1/responses": ("max_output_tokens", "temperature", "top_p"),
    "/v1/messages": ("max_tokens", "temperature", "top_p", "top_k"),
    # Ollama's num_predict takes any negative number as "until the context", as Ollama does
    "/api/chat": ("options.temperature", "options.top_p"),
    "/api/generate": ("options.temperature", "options.top_p"),
}
BAD_NUMBERS: tuple[object, ...] = (-10**30, 10**30, -1e308, "x", "1e309", [1], {"a": 1}, -7.5)
BAD_NUMBERS_RAW = ("1e400", "-1e400", "NaN", "Infinity", "-Infinity", "0x10", "01", "1.", ".5", "+1", "1e")

INVALID_UTF8 = (b"\xff", b"\xfe\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82", b"\xf8\x88\x80\x80\x80", b"\x80")
LONE_SURROGATES = ("\\ud800", "\\udfff", "\\udbff\\u0041", "a\\udc00b")
SYNTAX = (b"", b"{", b"}", b'{"model":', b'{"a":1,}', b"{'model':'x'}", b'{"a":1} trailing', b'{"a":"\x01"}',
          b'{"a":"\\u12"}', b'{"a":"\\x"}', b"\xef\xbb\xbf{}", b"[" * 10_000 + b"]" * 10_000,
          b'{"a":' * 10_000 + b"1" + b"}" * 10_000, b"null", b"true", b"1", b'"x"', b"[]", b"[{}]", b"{}")
CONTENT_TYPES = (None, "text/plain", "application/xml", "application/x-www-form-urlencoded",
                 "multipart/form-data; boundary=x", "image/png", "application/jsonx")

DEEP_PATTERN = {"type": "string", "pattern": "(" * 1000}  # valid JSON Schema, a regex nested 1,000 deep


@dataclass
class Case:
    name: str
    path: str
    body: bytes
    content_type: str | None = "application/json"
    any_4xx_or_ok: bool = False  # a well-formed request the server may also answer (a `{}` schema)


def _dump(body: object) -> bytes:
    return json.dumps(body).encode()


def _with(path: str, dotted: str, raw: str) -> bytes:
    """The route's base body with `dotted` set to the raw JSON text `raw`."""
    body = json.loads(json.dumps(BASE[path][0]))
    *parents, leaf = dotted.split(".")
    target = body
    for key in parents:
        target = target.setdefault(key, {})
    target[leaf] = "@@RAW@@"
    return _dump(body).replace(b'"@@RAW@@"', raw.encode())


def _with_text(path: str, text_json: bytes) -> bytes:
    """The base body with its text field replaced by raw JSON string bytes (no escaping)."""
    body = json.loads(json.dumps(BASE[path][0]))
    *parents, leaf = BASE[path][1]
    target = body
    for key in parents:
        target = target[key]
    target[leaf] = "@@TEXT@@"
    return _dump(body).replace(b'"@@TEXT@@"', b'"' + text_json + b'"')


def corpus() -> list[Case]:
    cases: list[Case] = []
    for path in ROUTES:
        for i, raw in enumerate(SYNTAX):
            cases.append(Case(f"syntax{i}", path, raw))
        for i, bad in enumerate(INVALID_UTF8):
            cases.append(Case(f"utf8-{i}", path, _with_text(path, b"ab" + bad + b"cd")))
            cases.append(Case(f"utf8-key-{i}", path, b'{"' + bad + b'":1}'))
        for i, sur in enumerate(LONE_SURROGATES):
            cases.append(Case(f"surrogate{i}", path, _with_text(path, sur.encode())))
        if path not in OLLAMA:  # Ollama, like Ollama itself, reads any body as JSON whatever its type
            for ct in CONTENT_TYPES:
                cases.append(Case(f"ctype {ct}", path, _dump(BASE[path][0]), ct))
        else:
            for ct in CONTENT_TYPES:  # with a body that is not JSON: still a 4xx
                cases.append(Case(f"ctype {ct} form body", path, b"model=x&prompt=y", ct))
        for field in NUMERIC[path]:
            for bad in BAD_NUMBERS:
                cases.append(Case(f"{field}={bad!r}", path, _with(path, field, json.dumps(bad))))
            for raw in BAD_NUMBERS_RAW:
                cases.append(Case(f"{field}={raw}", path, _with(path, field, raw)))
        cases.append(Case("oversized 5 MiB", path, _with_text(path, b"a" * (5 << 20))))
        cases.append(Case("oversized 5 MiB no json", path, b"x" * (5 << 20)))
        cases.append(Case("model missing", path, _with(path, "model", "null")))
        cases.append(Case("model unknown", path, _with(path, "model", '"no-such-model"')))
        cases.append(Case("model deep", path, _with(path, "model", "[" * 5000 + "]" * 5000)))
        cases.append(Case("text deep", path, _with_text(path, b"x").replace(b'"x"', b"[" * 3000 + b"]" * 3000)))
        cases.append(Case("text number", path, _with_text(path, b"x").replace(b'"x"', b"3")))
        cases.append(Case("text 10k-deep object", path,
                          _with_text(path, b"x").replace(b'"x"', b'{"a":' * 10_000 + b"1" + b"}" * 10_000)))
        if path not in OLLAMA:  # Ollama ignores unknown fields, as Ollama does
            cases.append(Case("unknown field object", path, _with(path, "zzz", '{"$ref":"#"}')))
    # token ids out of the vocabulary
    for ids in ([-1], [999999], [[-1]], [[999999]], [1, 2, -1], [2**63], [-(2**63)], [2**70], [1.5], [[]], [[[1]]]):
        cases.append(Case(f"prompt ids {ids}", "/v1/completions", _with("/v1/completions", "prompt", json.dumps(ids))))
        cases.append(Case(f"input ids {ids}", "/v1/embeddings", _with("/v1/embeddings", "input", json.dumps(ids))))
    for bias in ({"-1": 5}, {"999999": 5}, {"x": 5}, {"1": 1e400}, {"1": "x"}, {"1": 1000}):
        for path in ("/v1/chat/completions", "/v1/completions"):
            raw = json.dumps(bias).replace("Infinity", "1e400")
            cases.append(Case(f"logit_bias {bias}", path, _with(path, "logit_bias", raw)))
    # grammars
    chat = "/v1/chat/completions"
    for i, grammar in enumerate(("(" * 30_000, "root ::= " + "(" * 30_000, "root ::= " + "(" * 30_000 + '"a"',
                                 "root ::= undefined-rule", "root ::= [", "root ::= \"a\" | ", "::=", "",
                                 "root ::= " + "a ::= " * 1000, "root ::= \"\\x\"", "root ::= [z-a]",
                                 "root ::= " + " ".join(["root"] * 5000))):
        cases.append(Case(f"grammar{i}", chat, _with(chat, "grammar", json.dumps(grammar)),
                          any_4xx_or_ok=grammar == 'root ::= "a" | '))  # an empty alternative is valid GBNF
    # schemas: a self-referencing one, a ref loop, deep ones, junk. `{}` and a recursive-but-finite
    # schema are well formed: any non-5xx answer will do for them
    schemas: list[tuple[object, bool]] = [
        ({"$ref": "#"}, True), ({}, True),
        ({"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}, False),
        ({"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}, False),
        ({"type": "object", "properties": {"a": {"$ref": "#"}}}, True),
        ({"$ref": "#/nowhere"}, False), ({"$ref": "http://example.com/x.json"}, False),
        ({"type": "nonsense"}, False), ({"type": 5}, False), ({"minLength": -1, "type": "string"}, False),
        ({"type": "string", "pattern": "(" * 50 + "a" + ")" * 50}, True), (DEEP_PATTERN, False),
        ({"type": "string", "pattern": "[z-a]"}, False), ({"type": "string", "pattern": "("}, False),
        ({"type": "integer", "minimum": 10, "maximum": 1}, True), ({"enum": []}, True),
        ({"type": "array", "minItems": 10**9, "items": {"type": "integer"}}, True),
        ({"type": "string", "minLength": 10**9}, True),
        ("not a schema", False), ([], False), (5, False),
    ]
    nested: dict = {"type": "string"}  # type: ignore[type-arg]
    for _ in range(400):  # deep but within what json.dumps here can write
        nested = {"type": "array", "items": nested}
    schemas.append((nested, True))
    for i, (schema, well_formed) in enumerate(schemas):
        body = {**BASE[chat][0], "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}}
        cases.append(Case(f"schema{i}", chat, _dump(body), any_4xx_or_ok=well_formed))
        tool = {**BASE[chat][0], "tools": [{"type": "function", "function": {"name": "f", "parameters": schema}}],
                "tool_choice": "required"}
        cases.append(Case(f"tool schema{i}", chat, _dump(tool), any_4xx_or_ok=well_formed))
        anth = {**BASE["/v1/messages"][0], "tools": [{"name": "f", "input_schema": schema}],
                "tool_choice": {"type": "any"}}
        cases.append(Case(f"anthropic tool schema{i}", "/v1/messages", _dump(anth), any_4xx_or_ok=well_formed))
        oll = {**BASE["/api/chat"][0], "format": schema}
        cases.append(Case(f"ollama format{i}", "/api/chat", _dump(oll), any_4xx_or_ok=well_formed))
    return cases


def error_shape_ok(path: str, response: httpx.Response) -> bool:
    try:
        body = response.json()
    except ValueError:
        return False
    if path in ANTHROPIC:
        return body.get("type") == "error" and isinstance(body.get("error", {}).get("message"), str)
    if path in OLLAMA:
        return isinstance(body.get("error"), str)
    error = body.get("error")
    return isinstance(error, dict) and isinstance(error.get("message"), str) and isinstance(error.get("type"), str)


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    with served(["--model", MODEL, "--parallel", "2", "--ctx-size", "2048", "--log-level", "critical"],
                env={"BOTFRAMEWORK_MAX_TOKENS_CAP": "4"}) as (url, proc):
        yield url, proc


def send(client: httpx.Client, case: Case) -> httpx.Response:
    headers = {} if case.content_type is None else {"content-type": case.content_type}
    return client.post(case.path, content=case.body, headers=headers)


def test_a_thousand_malformed_requests_get_4xx_in_their_protocols_shape(
        server: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, proc = server
    cases = corpus()
    assert len(cases) >= 1000, len(cases)
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    rejection_s: list[float] = []
    with httpx.Client(base_url=url, timeout=60) as client:
        for case in cases:
            t0 = time.perf_counter()
            try:
                r = send(client, case)
            except httpx.HTTPError as exc:
                failures.append(f"{case.path} {case.name}: {type(exc).__name__}: {exc}")
                continue
            elapsed = time.perf_counter() - t0
            statuses[r.status_code] += 1
            if 400 <= r.status_code < 500:
                rejection_s.append(elapsed)
                if not error_shape_ok(case.path, r):
                    failures.append(f"{case.path} {case.name}: {r.status_code} not in the protocol's shape: {r.text[:200]}")
            elif not (case.any_4xx_or_ok and r.status_code == 200):
                failures.append(f"{case.path} {case.name}: {r.status_code} {r.text[:200]}")
    rejection_s.sort()
    p99 = rejection_s[int(len(rejection_s) * 0.99) - 1] if rejection_s else 0.0
    p50 = rejection_s[len(rejection_s) // 2] if rejection_s else 0.0
    print(f"\nbad input: {len(cases)} requests, statuses {dict(sorted(statuses.items()))}, "
          f"rejection p50 {p50 * 1000:.1f} ms p99 {p99 * 1000:.1f} ms")
    assert not failures, f"{len(failures)} of {len(cases)}:\n" + "\n".join(failures[:40])
    assert p99 < 5.0, f"p99 rejection {p99:.2f} s: the server stalls on bad input"
    assert proc.poll() is None, "the server died"
    assert httpx.get(f"{url}/health", timeout=10).json()["status"] == "ok"
    ok = httpx.post(f"{url}/v1/completions", json=BASE["/v1/completions"][0], timeout=60)
    assert ok.status_code == 200 and ok.json()["choices"][0]["text"] is not None


@pytest.mark.parametrize("surrogate", [s.encode() for s in LONE_SURROGATES] + [b"ab\xed\xa0\x80cd"])
def test_lone_surrogate_in_a_completions_prompt_is_a_4xx(
        server: tuple[str, subprocess.Popen[bytes]], surrogate: bytes) -> None:
    """Also the UTF-8 encoding of a surrogate (ED A0 80), which the body's decoder lets through."""
    url, proc = server
    with httpx.Client(base_url=url, timeout=60) as client:
        r = send(client, Case("surrogate", "/v1/completions", _with_text("/v1/completions", surrogate)))
    assert proc.poll() is None
    assert 400 <= r.status_code < 500, r.text[:200]


@pytest.mark.parametrize("path", ["/v1/chat/completions json_schema", "/v1/chat/completions tools",
                                  "/v1/messages tools", "/api/chat format"])
def test_a_schema_with_a_1000_deep_pattern_is_a_4xx(server: tuple[str, subprocess.Popen[bytes]], path: str) -> None:
    url, proc = server
    route, kind = path.split()
    if kind == "json_schema":
        body = {**BASE[route][0], "response_format": {"type": "json_schema",
                                                      "json_schema": {"name": "s", "schema": DEEP_PATTERN}}}
    elif route == "/v1/chat/completions":
        body = {**BASE[route][0], "tools": [{"type": "function", "function": {"name": "f", "parameters": DEEP_PATTERN}}]}
    elif route == "/v1/messages":
        body = {**BASE[route][0], "tools": [{"name": "f", "input_schema": DEEP_PATTERN}]}
    else:
        body = {**BASE[route][0], "format": DEEP_PATTERN}
    r = httpx.post(f"{url}{route}", json=body, timeout=60)
    assert proc.poll() is None
    assert 400 <= r.status_code < 500, r.text[:200]
