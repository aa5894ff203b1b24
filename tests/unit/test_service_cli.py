"""`botframework service install | uninstall | status` without systemd: files written under a
temporary --root, the commands printed (or run by a fake host), and the one-line errors for a
machine where it cannot run."""

from __future__ import annotations

import argparse
import http.server
import io
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from botframework.cli import build_parser, main, service

UNIT = Path("etc/systemd/system/bot.framework.service")
CONFIG = Path("etc/botframework/config.toml")
GPU = Path("etc/systemd/system/bot.framework.service.d/gpu.conf")


class FakeHost(service.Host):
    """A machine with or without root and systemd, whose commands are recorded (and fail on demand)."""

    def __init__(self, *, root: bool = True, systemd: bool = True, fail: str | None = None, code: int = 9) -> None:
        self.root, self.systemd, self.fail, self.code = root, systemd, fail, code
        self.commands: list[tuple[str, ...]] = []

    def is_root(self) -> bool:
        return self.root

    def systemd_running(self) -> bool:
        return self.systemd

    def run(self, argv: Sequence[str]) -> int:
        self.commands.append(tuple(argv))
        return self.code if self.fail and argv[0] == self.fail else 0


def cli(*argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["service", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def commands(out: str) -> list[str]:
    return [line.removeprefix("would run: ") for line in out.splitlines() if line.startswith("would run: ")]


def test_install_dry_run_writes_under_root_and_prints_the_commands(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli("install", "--root", str(tmp_path), "--dry-run", capsys=capsys)
    assert (code, err) == (0, "")
    unit = (tmp_path / UNIT).read_text()
    assert unit == service.render_unit(service.default_exec_argv())
    executable = service.default_exec_argv()[0]
    assert f"\nExecStart={executable} serve --config /etc/botframework/config.toml\n" in unit
    assert (tmp_path / CONFIG).read_text() == service.DEFAULT_CONFIG
    assert (tmp_path / CONFIG).stat().st_mode & 0o777 == 0o640  # it may hold API keys
    assert commands(out) == [
        "useradd --system --user-group --home-dir /var/lib/botframework --no-create-home --shell "
        f"{'/usr/sbin/nologin' if (tmp_path / 'usr/sbin/nologin').exists() else '/sbin/nologin'} "
        "--comment 'botframework LLM server' botframework",
        "chgrp botframework /etc/botframework/config.toml",
        "systemctl daemon-reload",
        "systemctl enable --now bot.framework.service",
    ]
    assert "journalctl -fu bot.framework" in out
    assert "health: curl http://127.0.0.1:8000/health" in out


def test_a_second_install_keeps_an_edited_config_and_restores_the_unit(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    cli("install", "--root", str(tmp_path), "--dry-run", capsys=capsys)
    edited = service.DEFAULT_CONFIG.replace("port = 8000", "port = 9000")
    (tmp_path / CONFIG).write_text(edited)
    (tmp_path / UNIT).write_text("# broken by hand\n")
    code, out, _ = cli("install", "--root", str(tmp_path), "--dry-run", capsys=capsys)
    assert code == 0
    assert (tmp_path / CONFIG).read_text() == edited
    assert "kept   /etc/botframework/config.toml" in out
    assert (tmp_path / UNIT).read_text() == service.render_unit(service.default_exec_argv())
    assert "chgrp" not in out  # not our file any more
    assert "health: curl http://127.0.0.1:9000/health" in out
    code, out, _ = cli("install", "--root", str(tmp_path), "--dry-run", capsys=capsys)
    assert "same   /etc/systemd/system/bot.framework.service" in out


def test_install_for_an_existing_user_creates_no_user(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\nllm:x:990:991::/srv/llm:/bin/false\n")
    (tmp_path / "etc/group").write_text("root:x:0:\nllmers:x:991:\n")
    code, out, _ = cli("install", "--root", str(tmp_path), "--dry-run", "--user", "llm", capsys=capsys)
    assert code == 0
    assert "\nUser=llm\n" in (tmp_path / UNIT).read_text()
    assert commands(out)[:1] == ["chgrp llmers /etc/botframework/config.toml"]


def test_install_with_another_config_path_and_executable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    executable = tmp_path / "opt" / "bf" / "botframework"
    executable.parent.mkdir(parents=True)
    executable.write_text("#!/bin/sh\n")
    executable.chmod(0o755)
    code, out, _ = cli("install", "--root", str(tmp_path / "image"), "--dry-run", "--config", "/etc/bf/server.toml",
                       "--executable", str(executable), capsys=capsys)
    assert code == 0
    unit = (tmp_path / "image" / UNIT).read_text()
    assert f"\nExecStart={executable} serve --config /etc/bf/server.toml\n" in unit
    assert "\nEnvironment=BOTFRAMEWORK_CONFIG=/etc/bf/server.toml\n" in unit
    assert (tmp_path / "image/etc/bf/server.toml").read_text() == service.DEFAULT_CONFIG


def test_gpu_drop_in_is_written_and_removed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cli("install", "--root", str(tmp_path), "--dry-run", "--gpu", "nvidia", capsys=capsys)
    drop_in = (tmp_path / GPU).read_text()
    assert "PrivateDevices=no" in drop_in and "DevicePolicy=closed" in drop_in
    assert "DeviceAllow=char-nvidia-frontend rw" in drop_in and "DeviceAllow=char-nvidia-uvm rw" in drop_in
    cli("install", "--root", str(tmp_path), "--dry-run", capsys=capsys)  # no --gpu: left as it is
    assert (tmp_path / GPU).exists()
    (tmp_path / "etc/group").write_text("render:x:108:\n")
    cli("install", "--root", str(tmp_path), "--dry-run", "--gpu", "dri", capsys=capsys)
    drop_in = (tmp_path / GPU).read_text()
    assert "DeviceAllow=char-drm rw" in drop_in and "SupplementaryGroups=render\n" in drop_in  # video: not there
    assert "/dev/kfd" not in drop_in
    code, out, _ = cli("install", "--root", str(tmp_path), "--dry-run", "--gpu", "none", capsys=capsys)
    assert not (tmp_path / GPU).exists() and "removed /etc/systemd/system/bot.framework.service.d/gpu.conf" in out


def test_uninstall_removes_the_unit_and_keeps_config_and_state(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    cli("install", "--root", str(tmp_path), "--dry-run", "--gpu", "nvidia", capsys=capsys)
    (tmp_path / "var/lib/botframework/models").mkdir(parents=True)
    override = tmp_path / "etc/systemd/system/bot.framework.service.d/override.conf"
    override.write_text("[Service]\nMemoryMax=8G\n")  # the admin's `systemctl edit`
    code, out, err = cli("uninstall", "--root", str(tmp_path), "--dry-run", capsys=capsys)
    assert (code, err) == (0, "")
    assert not (tmp_path / UNIT).exists() and not (tmp_path / GPU).exists()
    assert override.exists() and (tmp_path / CONFIG).exists() and (tmp_path / "var/lib/botframework/models").exists()
    assert commands(out) == ["systemctl disable --now bot.framework.service", "systemctl daemon-reload",
                             "systemctl reset-failed bot.framework.service"]
    assert "`--purge` removes them" in out


def test_uninstall_purge_removes_config_state_and_the_user_install_made(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    cli("install", "--root", str(tmp_path), "--dry-run", capsys=capsys)
    (tmp_path / "var/lib/botframework/sessions").mkdir(parents=True)
    (tmp_path / "etc/passwd").write_text("botframework:x:990:990::/var/lib/botframework:/usr/sbin/nologin\n")
    code, out, _ = cli("uninstall", "--root", str(tmp_path), "--dry-run", "--purge", capsys=capsys)
    assert code == 0
    assert not (tmp_path / "etc/botframework").exists() and not (tmp_path / "var/lib/botframework").exists()
    assert commands(out)[-1] == "userdel botframework"
    # a user the installer did not make (another home) is never deleted
    (tmp_path / "etc/passwd").write_text("www:x:33:33::/var/www:/usr/sbin/nologin\n")
    code, out, _ = cli("uninstall", "--root", str(tmp_path), "--dry-run", "--purge", "--user", "www", capsys=capsys)
    assert "userdel" not in out


def test_dry_run_on_the_live_system_writes_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["service", "install", "--dry-run"])
    out = io.StringIO()
    host = FakeHost(root=False, systemd=False)
    existed = {path: Path(path).exists() for path in ("/etc/systemd/system/bot.framework.service",
                                                      "/etc/botframework/config.toml")}
    assert service.cmd_service(args, host=host, out=out) == 0
    assert {path: Path(path).exists() for path in existed} == existed
    assert "would write /etc/systemd/system/bot.framework.service" in out.getvalue() and host.commands == []


@pytest.mark.parametrize("action", ["install", "uninstall", "status"])
def test_one_line_errors_where_it_cannot_run(action: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["service", action])
    code = service.cmd_service(args, host=FakeHost(systemd=False), out=io.StringIO())
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("botframework: error: systemd is not running")
    if action != "status":  # status only reads: no root needed
        code = service.cmd_service(args, host=FakeHost(root=False), out=io.StringIO())
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and "run it as root (sudo botframework service" in err


@pytest.mark.parametrize("executable, reason", [("/root/.local/bin/botframework", "under /root"),
                                                ("/home/me/venv/bin/botframework", "under /home"),
                                                ("/nonexistent/botframework", "not an executable file"),
                                                ("bin/botframework", "absolute path")])
def test_an_executable_the_service_could_not_run_is_refused(tmp_path: Path, executable: str, reason: str,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli("install", "--root", str(tmp_path), "--dry-run", "--executable", executable, capsys=capsys)
    assert code == 2 and reason in err and err.count("\n") == 1
    assert not (tmp_path / UNIT).exists()


def test_bad_user_name_and_relative_config_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli("install", "--root", str(tmp_path), "--user", "Robert'); DROP", capsys=capsys)
    assert code == 2 and "--user" in err
    code, _, err = cli("install", "--root", str(tmp_path), "--config", "config.toml", capsys=capsys)
    assert code == 2 and "--config must be an absolute path" in err


def test_live_commands_run_in_order_and_stop_at_a_failure(tmp_path: Path) -> None:
    """What a real install runs (here under a temporary root, with a fake host)."""
    steps = service.plan_install(tmp_path, exec_argv=["/usr/bin/botframework", "serve"])
    host = FakeHost()
    out = io.StringIO()
    service.apply(steps, root=tmp_path, write=True, run=True, host=host, out=out)
    assert [argv[:2] for argv in host.commands] == [("useradd", "--system"), ("chgrp", "botframework"),
                                                    ("systemctl", "daemon-reload"), ("systemctl", "enable")]
    assert "$ systemctl enable --now bot.framework.service" in out.getvalue()
    host = FakeHost(fail="useradd")
    with pytest.raises(service.ServiceError, match="useradd .* failed with exit code 9"):
        service.apply(steps, root=tmp_path, write=True, run=True, host=host, out=io.StringIO())
    assert len(host.commands) == 1
    # uninstall goes on when disable fails (a unit never enabled)
    host = FakeHost(fail="systemctl")
    with pytest.raises(service.ServiceError, match="daemon-reload"):
        service.apply(service.plan_uninstall(tmp_path), root=tmp_path, write=True, run=True, host=host,
                      out=io.StringIO())
    assert host.commands[0] == ("systemctl", "disable", "--now", "bot.framework.service")


def test_config_problem_names_what_the_server_would_refuse(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(service.DEFAULT_CONFIG)
    assert service.config_problem(good) is None
    bad = tmp_path / "bad.toml"
    bad.write_text(service.DEFAULT_CONFIG.replace('host = "127.0.0.1"', 'host = "0.0.0.0"'))
    assert "without an API key" in (service.config_problem(bad) or "")
    bad.write_text("colour = 'blue'\n")
    assert "unknown setting" in (service.config_problem(bad) or "")


def test_health_url_from_the_config(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    assert service.health_url(config) == "http://127.0.0.1:8000/health"  # no file: the defaults
    config.write_text('host = "0.0.0.0"\nport = 9001\n')
    assert service.health_url(config) == "http://127.0.0.1:9001/health"
    config.write_text('[server]\nhost = "::"\n')
    assert service.health_url(config) == "http://[::1]:8000/health"


@pytest.fixture
def health_server() -> Iterator[int]:
    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the standard library's name
            body = b'{"status": "ok"}'
            self.send_response(200 if self.path == "/health" else 404)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_status_shows_systemctl_and_health(tmp_path: Path, health_server: int) -> None:
    (tmp_path / "etc/botframework").mkdir(parents=True)
    (tmp_path / CONFIG).write_text(f"port = {health_server}\n")
    args = build_parser().parse_args(["service", "status", "--root", str(tmp_path)])
    out = io.StringIO()
    assert service.cmd_service(args, host=FakeHost(), out=out) == 0
    assert "would run: systemctl status --no-pager bot.framework.service" in out.getvalue()
    assert f'health: http://127.0.0.1:{health_server}/health -> 200 {{"status": "ok"}}' in out.getvalue()


def test_status_live_returns_systemctls_code_and_reports_no_server(tmp_path: Path) -> None:
    args = argparse.Namespace(action="status", root="/", dry_run=False, config=str(tmp_path / "c.toml"))
    (tmp_path / "c.toml").write_text("port = 1\n")  # nothing listens on port 1
    host = FakeHost(fail="systemctl", code=3)
    out = io.StringIO()
    assert service.cmd_service(args, host=host, out=out) == 3  # systemctl's: not running
    assert host.commands == [("systemctl", "status", "--no-pager", "bot.framework.service")]
    assert "health: no answer from http://127.0.0.1:1/health" in out.getvalue()
