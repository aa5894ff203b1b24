"""systemd: the unit (systemd-analyze verify, the settings the drain relies on), the sd_notify
client against a real AF_UNIX datagram socket, and logging that fits journald (no ANSI without a
tty, one line per event, the request id on the lines logged while a request runs)."""

from __future__ import annotations

import asyncio
import io
import logging
import logging.config
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from botframework.cli import service
from botframework.server import logs
from botframework.server.systemd import SystemdNotifier, watchdog_interval

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
ANSI = "\x1b["


def unit_settings(text: str) -> dict[str, list[str]]:
    """`Key=value` lines of a unit (all sections): key -> values in order."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(s|min)?", value)
    assert match, value
    return int(match[1]) * (60 if match[2] == "min" else 1)


# ---------------------------------------------------------------- the unit and the config


def test_deploy_files_are_what_the_installer_writes() -> None:
    assert (DEPLOY / "botframework.service").read_text() == service.UNIT_TEMPLATE
    assert (DEPLOY / "config.toml").read_text() == service.DEFAULT_CONFIG


def test_unit_has_what_the_service_relies_on() -> None:
    from botframework.server.settings import ServerSettings

    unit = unit_settings(service.UNIT_TEMPLATE)
    one = {key: values[-1] for key, values in unit.items()}
    assert one["Type"] == "notify" and one["NotifyAccess"] == "main"
    assert seconds(one["WatchdogSec"]) >= 10
    assert one["Restart"] == "on-failure" and one["KillMode"] == "mixed"
    # the drain must end before systemd's SIGKILL
    assert seconds(one["TimeoutStopSec"]) > ServerSettings().shutdown_grace_s
    for key, value in {"ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
                       "NoNewPrivileges": "yes", "PrivateDevices": "yes"}.items():
        assert one[key] == value, key
    assert one["MemoryMax"] and "AF_INET" in one["RestrictAddressFamilies"]
    assert one["User"] == service.DEFAULT_USER and "DynamicUser" not in unit
    assert "BOTFRAMEWORK_CONFIG=/etc/botframework/config.toml" in unit["Environment"]
    assert one["ExecStart"].endswith("serve --config /etc/botframework/config.toml")
    assert one["Alias"] == "botframework.service"
    # the cache (models) and the sessions live in the state directory, which the sandbox leaves writable
    assert f"BOTFRAMEWORK_CACHE={service.STATE_DIR}" in unit["Environment"]
    assert one["StateDirectory"].split() == ["botframework", "botframework/sessions"]


def test_default_config_is_one_the_server_accepts() -> None:
    from botframework.runtime.catalog import DEFAULT_MODEL
    from botframework.server.settings import ServerSettings

    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as handle:
        handle.write(service.DEFAULT_CONFIG)
    try:
        settings = ServerSettings.from_env({}, config=handle.name)
    finally:
        os.unlink(handle.name)
    settings.check_bind()
    assert (settings.host, settings.port, settings.model) == ("127.0.0.1", 8000, DEFAULT_MODEL)
    assert settings.sessions_dir == Path(service.STATE_DIR) / "sessions"
    assert settings.shutdown_grace_s == ServerSettings().shutdown_grace_s == 30
    assert tomllib.loads(service.DEFAULT_CONFIG)  # plain TOML, no [server] table needed


needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze is absent (apt-get install systemd; .ci/run installs it)")


def verify(unit_text: str, drop_in: str | None = None, name: str = service.UNIT_NAME) -> list[str]:
    """systemd-analyze verify on the unit (and a drop-in beside it): its complaints about our
    files. It exits 0 on unknown keys and bad values, so its messages are what counts."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_text(unit_text)
        if drop_in is not None:
            (Path(folder) / f"{name}.d").mkdir()
            (Path(folder) / f"{name}.d" / "gpu.conf").write_text(drop_in)
        done = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60)
        ours = [line for line in (done.stdout + done.stderr).splitlines() if name in line or folder in line]
        if done.returncode != 0:
            ours.append(f"exit code {done.returncode}: {done.stderr.strip()}")
        return ours


@needs_analyze
def test_systemd_analyze_verify_passes_on_the_installed_unit() -> None:
    unit = service.render_unit(service.default_exec_argv())
    assert verify(unit) == []


@needs_analyze
@pytest.mark.parametrize("drop_in", [service.gpu_drop_in("nvidia"),
                                     service.gpu_drop_in("dri", groups=["root"], kfd=True)], ids=["nvidia", "dri"])
def test_systemd_analyze_verify_passes_with_the_gpu_drop_ins(drop_in: str) -> None:
    assert verify(service.render_unit(service.default_exec_argv()), drop_in) == []


@needs_analyze
def test_systemd_analyze_verify_passes_with_an_awkward_executable_path(tmp_path: Path) -> None:
    folder = tmp_path / "my 100% $HOME"
    folder.mkdir()
    (folder / "botframework").symlink_to(service.default_exec_argv()[0])
    unit = service.render_unit([str(folder / "botframework"), "serve"],
                               config=service.PurePosixPath("/etc/b f/100% $x.toml"))
    executable = f"{folder}/botframework".replace("%", "%%")
    assert unit_settings(unit)["ExecStart"] == [f'"{executable}" serve --config "/etc/b f/100%% $$x.toml"']
    assert verify(unit) == []


@needs_analyze
def test_verify_finds_what_is_wrong() -> None:
    """The checks above are not vacuous: a bad value, an unknown key, a missing executable."""
    unit = service.render_unit(service.default_exec_argv())
    assert verify(unit.replace("KillMode=mixed", "KillMode=mixd"))
    assert verify(unit.replace("[Service]\n", "[Service]\nNoSuchKey=1\n"))
    assert verify(service.UNIT_TEMPLATE.replace(service.TEMPLATE_EXECUTABLE, "/nonexistent/botframework"))


def test_render_unit_substitutes_the_executable_user_and_config() -> None:
    unit = unit_settings(service.render_unit(["/opt/bf/bin/botframework", "serve"], "llm",
                                             service.PurePosixPath("/etc/bf.toml")))
    assert unit["ExecStart"] == ["/opt/bf/bin/botframework serve --config /etc/bf.toml"]
    assert unit["User"] == ["llm"]
    assert "BOTFRAMEWORK_CONFIG=/etc/bf.toml" in unit["Environment"]


def test_unit_words_escape_what_systemd_would_expand() -> None:
    assert service._unit_word("/opt/bf/bin/botframework") == "/opt/bf/bin/botframework"
    assert service._unit_word("/opt/my dir/bf") == '"/opt/my dir/bf"'
    assert service._unit_word("/opt/100%/$x") == "/opt/100%%/$$x"
    assert service._unit_word("/opt/100%/$x", executable=True) == "/opt/100%%/$x"  # no $ expansion there
    assert service._unit_word('a"b\\c') == 'a\\"b\\\\c'


# ---------------------------------------------------------------- sd_notify


@pytest.fixture
def notify_socket() -> Iterator[tuple[str, socket.socket]]:
    """A datagram socket standing in for systemd's: (its path, the socket to read)."""
    folder = tempfile.mkdtemp(prefix="sd")  # short: AF_UNIX paths are limited to 107 bytes
    path = os.path.join(folder, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    try:
        yield path, sock
    finally:
        sock.close()
        shutil.rmtree(folder)


def received(sock: socket.socket) -> list[str]:
    """Every datagram waiting on the socket."""
    messages = []
    sock.settimeout(0.2)
    try:
        while True:
            messages.append(sock.recv(4096).decode())
    except TimeoutError:
        return messages


def test_notifier_sends_each_message_as_one_datagram(notify_socket: tuple[str, socket.socket]) -> None:
    path, sock = notify_socket
    notifier = SystemdNotifier.from_env({"NOTIFY_SOCKET": path})
    assert notifier.enabled
    assert notifier.ready("serving smollm2 on 127.0.0.1:8000")
    assert notifier.status("draining: 3 requests\nin flight")
    assert notifier.watchdog()
    assert notifier.stopping("draining", timeout_s=45)
    assert notifier.extend_timeout(1.5)
    assert received(sock) == [
        "READY=1\nSTATUS=serving smollm2 on 127.0.0.1:8000",
        "STATUS=draining: 3 requests in flight",  # a newline would start a bogus assignment
        "WATCHDOG=1",
        "STOPPING=1\nSTATUS=draining",
        "EXTEND_TIMEOUT_USEC=45000000",  # apart, so that it applies to the stop state STOPPING=1 began
        "EXTEND_TIMEOUT_USEC=1500000",
    ]
    notifier.close()
    assert not notifier.watchdog()  # closed: nothing sent, nothing raised


def test_notifier_reads_the_environment(notify_socket: tuple[str, socket.socket],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    path, sock = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    assert SystemdNotifier.from_env().ready()
    assert received(sock) == ["READY=1"]


def test_notifier_reaches_an_abstract_socket() -> None:
    name = f"botframework-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        assert SystemdNotifier.from_env({"NOTIFY_SOCKET": "@" + name}).ready()
        assert received(sock) == ["READY=1"]


@pytest.mark.parametrize("value", [None, "", "relative/path", "vsock:2:1234"])
def test_notifier_is_a_no_op_without_systemd(value: str | None) -> None:
    notifier = SystemdNotifier.from_env({} if value is None else {"NOTIFY_SOCKET": value, "WATCHDOG_USEC": "1000"})
    assert not notifier.enabled
    assert not notifier.ready() and not notifier.stopping(timeout_s=1) and not notifier.watchdog()
    assert notifier.watchdog_interval() is None
    asyncio.run(asyncio.wait_for(notifier.watchdog_forever(), 1))  # returns at once


def test_notifier_never_raises_when_systemd_is_gone(tmp_path: Path) -> None:
    notifier = SystemdNotifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert notifier.enabled
    assert not notifier.ready() and not notifier.watchdog()


def test_watchdog_interval_is_for_this_process_only() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 30.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}) is None
    for bad in ({}, {"WATCHDOG_USEC": "0"}, {"WATCHDOG_USEC": "soon"}, {"WATCHDOG_USEC": "-5"}):
        assert watchdog_interval(bad) is None


def test_watchdog_pings_at_half_the_interval(notify_socket: tuple[str, socket.socket]) -> None:
    path, sock = notify_socket
    notifier = SystemdNotifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"})  # 0.4 s: every 0.2 s

    async def run_for(seconds: float, healthy: object = None) -> None:
        task = asyncio.ensure_future(notifier.watchdog_forever(healthy))  # type: ignore[arg-type]
        await asyncio.sleep(seconds)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(run_for(0.5))
    assert received(sock) == ["WATCHDOG=1"] * 3  # at 0, 0.2 and 0.4 s
    asyncio.run(run_for(0.3, lambda: False))  # unhealthy: no pings, so systemd restarts the service
    assert received(sock) == []

    def broken() -> bool:
        raise RuntimeError("health check broke")

    asyncio.run(run_for(0.3, broken))  # the task survives it; no ping either
    assert received(sock) == []


# ---------------------------------------------------------------- logs


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """dictConfig changes process-wide loggers: put them back afterwards."""
    names = ["", "uvicorn", "uvicorn.error", "uvicorn.access", "botframework"]
    saved = {name: (logging.getLogger(name).handlers[:], logging.getLogger(name).level,
                    logging.getLogger(name).propagate) for name in names}
    try:
        yield
    finally:
        for name, (handlers, level, propagate) in saved.items():
            logger = logging.getLogger(name)
            logger.handlers[:] = handlers
            logger.setLevel(level)
            logger.propagate = propagate


def configure(tty: bool, journald: bool = False, level: str = "info") -> io.StringIO:
    """Apply log_config; return what its handlers write."""
    logging.config.dictConfig(logs.log_config(level, tty, journald=journald))
    stream = io.StringIO()
    for name in ("uvicorn", "uvicorn.access", "botframework", ""):
        for handler in logging.getLogger(name).handlers:
            assert isinstance(handler, logging.StreamHandler)
            handler.setStream(stream)
    return stream


def log_everything() -> None:
    logging.getLogger("uvicorn.error").info("Started server process [%d]", 42)
    logging.getLogger("uvicorn.access").info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", "/health", "1.1", 200)
    logging.getLogger("botframework.registry").warning("model %r failed to load", "m")
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        logging.getLogger("botframework.server").exception("internal error")
    logging.getLogger("httpx").warning("from a library")


@pytest.mark.usefixtures("restore_logging")
def test_logs_without_a_tty_are_plain_and_one_line_per_event() -> None:
    stream = configure(tty=False)
    log_everything()
    lines = stream.getvalue().splitlines()
    assert ANSI not in stream.getvalue()
    assert len(lines) == 5  # one per event, the traceback included
    assert lines[0] == "INFO uvicorn: Started server process [42]"
    assert lines[1] == 'INFO uvicorn.access: 127.0.0.1:5000 - "GET /health HTTP/1.1" 200'
    assert lines[2] == "WARNING botframework.registry: model 'm' failed to load"
    assert lines[3].startswith("ERROR botframework.server: internal error | Traceback (most recent call last): | ")
    assert lines[3].endswith("| ValueError: bad | thing")
    assert lines[4] == "WARNING httpx: from a library"


@pytest.mark.usefixtures("restore_logging")
def test_logs_under_journald_carry_syslog_priorities() -> None:
    stream = configure(tty=False, journald=True)
    log_everything()
    assert [line[:3] for line in stream.getvalue().splitlines()] == ["<6>", "<6>", "<4>", "<3>", "<4>"]


@pytest.mark.usefixtures("restore_logging")
def test_logs_on_a_tty_have_colour_and_whole_tracebacks() -> None:
    stream = configure(tty=True)
    log_everything()
    text = stream.getvalue()
    assert text.startswith("\x1b[32mINFO\x1b[0m uvicorn: Started server process [42]\n")
    assert "\nTraceback (most recent call last):\n" in text


@pytest.mark.usefixtures("restore_logging")
def test_log_levels() -> None:
    stream = configure(tty=False, level="warning")
    log_everything()
    assert "Started server" not in stream.getvalue() and "failed to load" in stream.getvalue()
    with pytest.raises(ValueError, match="log level"):
        logs.log_config("loud", False)


def test_journald_is_detected_from_journal_stream(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with open(tmp_path / "stderr", "w") as fake_stderr:
        stat = os.fstat(fake_stderr.fileno())
        monkeypatch.setattr("sys.stderr", fake_stderr)
        monkeypatch.setenv("JOURNAL_STREAM", f"{stat.st_dev}:{stat.st_ino}")
        assert logs.under_journald()
        assert logs.log_config("info", False)["formatters"]["default"]["journald"] is True
        monkeypatch.setenv("JOURNAL_STREAM", f"{stat.st_dev}:{stat.st_ino + 1}")  # a child's inherited variable
        assert not logs.under_journald()
        monkeypatch.delenv("JOURNAL_STREAM")
        assert not logs.under_journald()


def request_id_app() -> object:
    """A FastAPI app that logs inside its routes, one of them streaming, behind the middleware."""
    from botframework.server.direct import CYCLE, ExposeConnection

    app = FastAPI()
    log = logging.getLogger("botframework.server")

    @app.get("/plain")
    async def plain() -> dict[str, str | None]:
        log.info("before the response id")
        logs.adopt_response_id("chatcmpl-abc123")
        log.info("handling")
        return {"id": "chatcmpl-abc123", "logged_as": logs.current_request_id()}

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> object:
            log.info("streaming")
            yield b"data: 1\n\n"
        return StreamingResponse(chunks(), media_type="text/event-stream")  # type: ignore[arg-type]

    @app.get("/direct")
    async def direct(request: Request) -> dict[str, bool]:
        return {"exposed": CYCLE in request.scope}

    return logs.RequestIdMiddleware(ExposeConnection(app))


@pytest.mark.usefixtures("restore_logging")
def test_request_ids_on_log_lines_and_in_the_header() -> None:
    stream = configure(tty=False)

    async def main() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=request_id_app())  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return [await client.get("/plain"),
                    await client.get("/plain", headers={"x-request-id": "client-7"}),
                    await client.get("/stream"),
                    await client.get("/plain", headers={"x-request-id": "bad id\twith spaces"})]

    plain, given, streamed, bad = asyncio.run(main())
    lines = stream.getvalue().splitlines()
    # a route's response id names the request from then on, and in the header
    assert plain.headers["x-request-id"] == plain.json()["logged_as"] == "chatcmpl-abc123"
    first_id = lines[0].split("[")[1].split("]")[0]
    assert re.fullmatch(r"req-[0-9a-f]{24}", first_id)
    assert lines[:2] == [f"INFO botframework.server: [{first_id}] before the response id",
                         "INFO botframework.server: [chatcmpl-abc123] handling"]
    # the client's own id wins, as sent
    assert given.headers["x-request-id"] == given.json()["logged_as"] == "client-7"
    assert lines[2:4] == ["INFO botframework.server: [client-7] before the response id",
                          "INFO botframework.server: [client-7] handling"]
    # lines logged while a stream is sent carry it too
    assert lines[4] == f"INFO botframework.server: [{streamed.headers['x-request-id']}] streaming"
    assert streamed.headers["x-request-id"].startswith("req-")
    # an id that could forge log lines is not taken: ours instead
    assert bad.headers["x-request-id"] == "chatcmpl-abc123"
    assert logs.current_request_id() is None  # nothing leaks out of a request


@pytest.mark.usefixtures("restore_logging")
def test_request_ids_through_uvicorn_access_log_and_direct_streaming() -> None:
    """The real server's path: uvicorn with log_config, its access log line carrying the id, and
    the middleware keeping uvicorn's `send` visible to ExposeConnection (direct streaming)."""
    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(request_id_app(), host="127.0.0.1", port=port, http="httptools",  # type: ignore[arg-type]
                            log_config=logs.log_config("info", False, journald=False), access_log=True,
                            lifespan="off")
    server = uvicorn.Server(config)
    stream = io.StringIO()
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.02)
        for name in ("uvicorn", "uvicorn.access", "botframework"):
            for handler in logging.getLogger(name).handlers:
                handler.setStream(stream)  # type: ignore[attr-defined]
        direct = httpx.get(f"http://127.0.0.1:{port}/direct", headers={"x-request-id": "abc"}, timeout=10)
        plain = httpx.get(f"http://127.0.0.1:{port}/plain", timeout=10)
    finally:
        server.should_exit = True
        thread.join(10)
    assert direct.json() == {"exposed": True}
    assert direct.headers["x-request-id"] == "abc"
    text = stream.getvalue()
    assert ANSI not in text
    assert 'INFO uvicorn.access: [abc] 127.0.0.1:' in text and '"GET /direct HTTP/1.1" 200' in text
    assert 'INFO uvicorn.access: [chatcmpl-abc123] 127.0.0.1:' in text
    assert plain.headers["x-request-id"] == "chatcmpl-abc123"
