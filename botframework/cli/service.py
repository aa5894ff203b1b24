"""`botframework service install | uninstall | status`: the server as the systemd service bot.framework.

    install    plan_install() -> steps -> apply(steps)
                 write  /etc/systemd/system/bot.framework.service   (ours: rewritten by each install)
                 write  /etc/botframework/config.toml               (only if absent: the admin's after that)
                 write  /etc/systemd/system/bot.framework.service.d/gpu.conf   (--gpu nvidia|dri)
                 run    useradd --system ... (a missing user), chgrp (the new config), systemctl
                        daemon-reload, systemctl enable --now bot.framework.service
    uninstall  systemctl disable --now; the unit (and our drop-in) removed; daemon-reload.
               The config and /var/lib/botframework (models, sessions) stay unless --purge.
    status     systemctl status bot.framework, then GET /health at the configured host:port

Commands run only on the live system: root "/", no --dry-run, as root, with systemd running
(otherwise a one-line error, exit 2). With --root DIR the files are written under DIR and the
commands printed (an image being built; the tests); --dry-run alone writes nothing.

The unit and config texts live here because the wheel ships only botframework/; the same
files sit in deploy/systemd/ for reading and for installing by hand, and a test keeps them
identical.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TextIO

UNIT_NAME = "bot.framework.service"
UNIT_DIR = PurePosixPath("/etc/systemd/system")
CONFIG_PATH = PurePosixPath("/etc/botframework/config.toml")
CONFIG_DIR = CONFIG_PATH.parent
STATE_DIR = PurePosixPath("/var/lib/botframework")
DEFAULT_USER = "botframework"
TEMPLATE_EXECUTABLE = "/usr/local/bin/botframework"  # the template's ExecStart; install writes the real one
GPU_KINDS = ("nvidia", "dri", "none")
# ProtectHome=yes hides these from the service, and the service user could not read them anyway
HOME_DIRS = (PurePosixPath("/home"), PurePosixPath("/root"), PurePosixPath("/run/user"))
_USER_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")

UNIT_TEMPLATE = """\
# bot.framework.service: botframework, local LLMs behind an OpenAI-compatible API.
#
# `sudo botframework service install` writes this file as /etc/systemd/system/bot.framework.service,
# with ExecStart's executable, User= and the config path filled in (see deploy/README.md):
#     systemctl status bot.framework            journalctl -fu bot.framework
# A new install overwrites this file. Change settings in /etc/botframework/config.toml and limits
# in a drop-in, which installs keep: `systemctl edit bot.framework`, for instance
#     [Service]
#     MemoryMax=16G

[Unit]
Description=botframework LLM server (OpenAI-compatible API)
# the first start may download the model; a loopback-only server would not need the network
Wants=network-online.target
After=network-online.target

[Service]
# READY=1 once the models marked preload serve, STOPPING=1 when the drain begins, WATCHDOG=1
# from the event loop every WatchdogSec/2 (a hung loop gets the service restarted). Only the
# main process may notify: a child (pip, during a pull) cannot speak for it.
Type=notify
NotifyAccess=main
WatchdogSec=30s
ExecStart=/usr/local/bin/botframework serve --config /etc/botframework/config.toml
Environment=BOTFRAMEWORK_CONFIG=/etc/botframework/config.toml
# Downloaded models (models/, hf/) and saved sessions (sessions/) in the state directory: kept
# across restarts and upgrades. Not CacheDirectory=: a cache may be cleared, and an offline
# machine could not download its models again.
Environment=BOTFRAMEWORK_CACHE=/var/lib/botframework
# pip and huggingface_hub keep their own caches here, whatever the user's home
Environment=XDG_CACHE_HOME=/var/lib/botframework/.cache
Environment=PYTHONUNBUFFERED=1
SyslogIdentifier=botframework
WorkingDirectory=/var/lib/botframework

# A dedicated system user, created by the installer (useradd --system), rather than
# DynamicUser=: the models (GBs) and sessions keep one owner across reinstalls (no chown of
# the state directory when the dynamic uid changes), and an admin can pre-pull a model or
# read the files as that user (sudo -u botframework BOTFRAMEWORK_CACHE=/var/lib/botframework
# botframework pull NAME).
User=botframework
StateDirectory=botframework botframework/sessions
StateDirectoryMode=0750
ConfigurationDirectory=botframework
UMask=0027

Restart=on-failure
RestartSec=5s
# a first start may download the model before it can serve
TimeoutStartSec=15min
# Above the server's shutdown_grace_s (default 30 s): in-flight requests finish, sessions are
# saved, exit 0. A longer grace is asked for by the server itself (EXTEND_TIMEOUT_USEC).
TimeoutStopSec=45s
# SIGTERM to the server alone (it drains); whatever is left at the timeout gets SIGKILL
KillMode=mixed
LimitNOFILE=65536
# The server budgets its models at 80% of the RAM available at start; the cgroup stops it at
# 90% of the machine's before the rest of the system suffers. With a lower MemoryMax (a drop-in),
# set memory_budget_mb in config.toml below it.
MemoryMax=90%

# Sandbox: the file system is read-only but for the state directory and a private /tmp. A
# models_dir or sessions_dir elsewhere needs ReadWritePaths= (or ReadOnlyPaths=) in a drop-in.
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
# No device nodes but /dev/null and friends: a GPU needs a drop-in (`service install --gpu
# nvidia|dri`, or deploy/README.md) that sets PrivateDevices=no and allows only its devices.
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
SystemCallArchitectures=native
CapabilityBoundingSet=
# Not MemoryDenyWriteExecute=: GPU drivers compile kernels at run time into W+X memory.

[Install]
WantedBy=multi-user.target
# `systemctl enable` also links botframework.service, so both names work
Alias=botframework.service
"""

DEFAULT_CONFIG = """\
# botframework server settings for the systemd service (bot.framework.service).
#
# Read by `botframework serve --config /etc/botframework/config.toml`. BOTFRAMEWORK_* variables
# (in a drop-in: `systemctl edit bot.framework`) and command-line flags override what is here.
# `botframework service install` writes this file once and never overwrites it: it is yours.
# After an edit: `systemctl restart bot.framework` (requests in flight finish first, sessions are kept).

# Where to listen. A non-loopback host needs api_keys (or allow_non_loopback = true).
host = "127.0.0.1"
port = 8000

# The model served by default: a catalog name (`botframework models`), a .gguf path, or
# hf:owner/repo/file.gguf. A catalog or hf: model is downloaded on the first start into the
# state directory ($BOTFRAMEWORK_CACHE=/var/lib/botframework, set by the unit: models/, hf/).
model = "smollm2-135m-instruct"

# Chat sessions are written here when the server stops and restored after a restart.
sessions_dir = "/var/lib/botframework/sessions"

# Seconds that requests in flight get to finish on `systemctl stop` or `restart`; the rest end
# with an error event. The server asks systemd for this long (the unit's TimeoutStopSec is 45 s).
shutdown_grace_s = 30

# More settings (the names of `botframework serve`'s options; see its --help):
# api_keys = ["a-long-random-string"]     # required by clients as "Authorization: Bearer ..."
# memory_budget_mb = 8192                 # loaded models' memory; keep it under the unit's MemoryMax
# models_dir = "/var/lib/botframework/gguf"  # serve every .gguf here (the service user must read it)
# max_queue = 256                         # requests waiting per model; more get 503 + Retry-After
# log_level = "info"                      # "debug" also logs every request
"""


class ServiceError(Exception):
    """A one-line reason the command cannot go on (exit code 2)."""


@dataclass(frozen=True)
class WriteFile:
    path: PurePosixPath       # where on the target system
    text: str
    mode: int = 0o644
    keep_existing: bool = False  # the admin's file once it is there (the config)


@dataclass(frozen=True)
class Remove:
    path: PurePosixPath
    tree: bool = False


@dataclass(frozen=True)
class Run:
    argv: tuple[str, ...]
    check: bool = True        # a failure stops here (False: expected to fail sometimes)


Step = WriteFile | Remove | Run


@dataclass(frozen=True)
class Account:
    group: str                # the primary group's name
    home: str


class Host:
    """The machine: who runs this, whether systemd does, its users, running commands. Tests
    replace it."""

    def is_root(self) -> bool:
        return os.geteuid() == 0

    def systemd_running(self) -> bool:
        # sd_booted()'s test: systemd creates this directory when it is PID 1
        return os.path.isdir("/run/systemd/system") and shutil.which("systemctl") is not None

    def run(self, argv: Sequence[str]) -> int:
        return subprocess.run(list(argv), check=False).returncode

    def account(self, root: Path, name: str) -> Account | None:
        """The user `name` on the system at `root` (its /etc/passwd and /etc/group)."""
        if root == Path("/"):
            import grp
            import pwd

            try:
                entry = pwd.getpwnam(name)
            except KeyError:
                return None
            try:
                group = grp.getgrgid(entry.pw_gid).gr_name
            except KeyError:
                group = str(entry.pw_gid)
            return Account(group, entry.pw_dir)
        fields = _colon_file(root / "etc/passwd").get(name)
        if fields is None or len(fields) < 5:  # x:uid:gid:comment:home(:shell)
            return None
        gid = fields[2]
        groups = {group_fields[1]: group for group, group_fields in _colon_file(root / "etc/group").items()}
        return Account(groups.get(gid, gid), fields[4])

    def group_exists(self, root: Path, name: str) -> bool:
        if root == Path("/"):
            import grp

            try:
                grp.getgrnam(name)
            except KeyError:
                return False
            return True
        return name in _colon_file(root / "etc/group")


def _colon_file(path: Path) -> dict[str, list[str]]:
    """/etc/passwd or /etc/group: name -> its other fields."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    return {fields[0]: fields[1:] for fields in (line.split(":") for line in lines) if len(fields) >= 3}


# ---------------------------------------------------------------- unit text


def _unit_word(arg: str, *, executable: bool = False) -> str:
    """One ExecStart word: specifiers (%), variables ($: not in the executable's path, which
    systemd does not expand) and backslashes escaped; quoted if it has spaces."""
    escaped = arg.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    if not executable:
        escaped = escaped.replace("$", "$$")
    return f'"{escaped}"' if not arg or any(c.isspace() for c in arg) or arg == ";" else escaped


def _unit_assignment(name: str, value: str) -> str:
    """One Environment= assignment (no $ expansion there; specifiers and escapes apply)."""
    escaped = f"{name}={value}".replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return f'"{escaped}"' if any(c.isspace() for c in value) else escaped


def render_unit(exec_argv: Sequence[str], user: str = DEFAULT_USER, config: PurePosixPath = CONFIG_PATH) -> str:
    """The unit for this machine: ExecStart runs `exec_argv --config CONFIG`, as `user`."""
    replacements = {
        "ExecStart=": "ExecStart=" + " ".join(_unit_word(a, executable=i == 0)
                                             for i, a in enumerate([*exec_argv, "--config", str(config)])),
        "User=": f"User={user}",
        "Environment=BOTFRAMEWORK_CONFIG=": "Environment=" + _unit_assignment("BOTFRAMEWORK_CONFIG", str(config)),
    }
    lines = UNIT_TEMPLATE.splitlines(keepends=True)
    for prefix, line in replacements.items():
        found = [i for i, text in enumerate(lines) if text.startswith(prefix)]
        if len(found) != 1:  # a template edit that broke the installer: fail its tests, not a user's machine
            raise RuntimeError(f"the unit template needs exactly one {prefix} line, has {len(found)}")
        lines[found[0]] = line + "\n"
    return "".join(lines)


def gpu_drop_in(kind: str, groups: Sequence[str] = (), kfd: bool = False) -> str:
    """bot.framework.service.d/gpu.conf: the GPU device nodes PrivateDevices=yes hides, and no others."""
    lines = ["# Written by `botframework service install --gpu " + kind + "`; `--gpu none` removes it.",
             "# The unit's PrivateDevices=yes hides every device node; this allows the GPU's only.",
             "[Service]", "PrivateDevices=no", "DevicePolicy=closed"]
    if kind == "nvidia":  # /dev/nvidia0.., nvidiactl, nvidia-modeset; nvidia-uvm (CUDA); nvidia-caps (MIG)
        lines += ["DeviceAllow=char-nvidia-frontend rw", "DeviceAllow=char-nvidia-uvm rw",
                  "DeviceAllow=char-nvidia-caps r"]
    elif kind == "dri":  # Vulkan (any vendor) through /dev/dri; ROCm also needs /dev/kfd
        lines += ["DeviceAllow=char-drm rw", *(["DeviceAllow=/dev/kfd rw"] if kfd else [])]
    else:
        raise ValueError(f"GPU kind must be nvidia or dri, not {kind!r}")
    if groups:  # the render nodes' groups, on distributions that do not open them to all
        lines.append("SupplementaryGroups=" + " ".join(groups))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- plans


def default_exec_argv() -> list[str]:
    """How the service starts the server: the `botframework` script beside this Python (a
    venv's bin/), else the one on PATH, else this Python running the module. Not resolved:
    a venv's python is a symlink that must keep its path."""
    beside = Path(sys.executable).parent / "botframework"
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside.absolute()), "serve"]
    found = shutil.which("botframework")
    if found:
        return [str(Path(found).absolute()), "serve"]
    return [str(Path(sys.executable).absolute()), "-m", "botframework.server"]


def check_executable(path: str, user: str) -> None:
    """The service can run `path`: absolute, outside home folders, an executable file."""
    executable = PurePosixPath(path)
    if not executable.is_absolute():
        raise ServiceError(f"the executable must be an absolute path, not {path!r}")
    for home in HOME_DIRS:
        if executable.is_relative_to(home):
            raise ServiceError(
                f"{path} is under {home}, which the service cannot see (ProtectHome=yes) and user {user} could "
                "not read: install botframework outside home folders (python3 -m venv /opt/botframework && "
                "/opt/botframework/bin/pip install botframework) and run that one's `botframework service install`")
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        raise ServiceError(f"{path} is not an executable file: pass --executable PATH")


def _target(root: Path, path: PurePosixPath) -> Path:
    return root / path.relative_to("/")


def _drop_in(name: str) -> PurePosixPath:
    return UNIT_DIR / f"{UNIT_NAME}.d" / name


def plan_install(root: Path, *, exec_argv: Sequence[str], user: str = DEFAULT_USER,
                 config: PurePosixPath = CONFIG_PATH, gpu: str | None = None, host: Host | None = None) -> list[Step]:
    host = host or Host()
    steps: list[Step] = []
    new_config = not _target(root, config).exists()
    steps.append(WriteFile(config, DEFAULT_CONFIG, mode=0o640, keep_existing=True))
    steps.append(WriteFile(UNIT_DIR / UNIT_NAME, render_unit(exec_argv, user, config)))
    if gpu == "none":
        steps.append(Remove(_drop_in("gpu.conf")))
    elif gpu is not None:
        groups = [g for g in ("render", "video") if host.group_exists(root, g)] if gpu == "dri" else []
        kfd = gpu == "dri" and _target(root, PurePosixPath("/dev/kfd")).exists()
        steps.append(WriteFile(_drop_in("gpu.conf"), gpu_drop_in(gpu, groups, kfd)))
    account = host.account(root, user)
    if account is None:
        nologin = "/usr/sbin/nologin" if _target(root, PurePosixPath("/usr/sbin/nologin")).exists() else "/sbin/nologin"
        steps.append(Run(("useradd", "--system", "--user-group", "--home-dir", str(STATE_DIR), "--no-create-home",
                          "--shell", nologin, "--comment", "botframework LLM server", user)))
    if new_config:  # readable by the service, not by everyone: it may hold API keys
        steps.append(Run(("chgrp", account.group if account else user, str(config))))
    steps.append(Run(("systemctl", "daemon-reload")))
    steps.append(Run(("systemctl", "enable", "--now", UNIT_NAME)))
    return steps


def plan_uninstall(root: Path, *, user: str = DEFAULT_USER, config: PurePosixPath = CONFIG_PATH,
                   purge: bool = False, host: Host | None = None) -> list[Step]:
    host = host or Host()
    steps: list[Step] = [
        Run(("systemctl", "disable", "--now", UNIT_NAME), check=False),  # fails if it was never enabled
        Remove(UNIT_DIR / UNIT_NAME),
        # ours; an admin's own drop-ins (systemctl edit) go only with --purge
        Remove(_drop_in("gpu.conf")),
    ]
    if purge:
        steps.append(Remove(UNIT_DIR / f"{UNIT_NAME}.d", tree=True))
    steps += [Run(("systemctl", "daemon-reload")), Run(("systemctl", "reset-failed", UNIT_NAME), check=False)]
    if purge:
        steps += [Remove(config), Remove(CONFIG_DIR, tree=True), Remove(STATE_DIR, tree=True)]
        account = host.account(root, user)
        if account is not None and account.home == str(STATE_DIR):  # the user install created
            steps.append(Run(("userdel", user)))
    return steps


# ---------------------------------------------------------------- doing it


def _check_live(host: Host, action: str) -> None:
    if not host.systemd_running():
        raise ServiceError("systemd is not running on this machine (no /run/systemd/system): run `botframework "
                           "serve` yourself, or pass --dry-run or --root DIR to write the files anyway")
    if action != "status" and not host.is_root():  # status only reads
        raise ServiceError(f"`botframework service {action}` changes /etc and runs systemctl: run it as root "
                           f"(sudo botframework service {action} ...), or pass --dry-run to see what it would do")


def _write(target: Path, text: str, mode: int) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    partial.write_text(text)
    os.chmod(partial, mode)
    os.replace(partial, target)


def apply(steps: Sequence[Step], *, root: Path, write: bool, run: bool, host: Host, out: TextIO) -> None:
    """Files written under `root` if `write`, commands run if `run` (else both printed), in
    order. Stops at the first command that fails."""
    for step in steps:
        if isinstance(step, WriteFile):
            target = _target(root, step.path)
            if target.exists() and step.keep_existing:
                print(f"kept   {step.path} (already there: never overwritten)", file=out)
            elif target.is_file() and target.read_text() == step.text:
                print(f"same   {step.path}", file=out)
            elif write:
                _write(target, step.text, step.mode)
                print(f"wrote  {step.path}", file=out)
            else:
                print(f"would write {step.path}", file=out)
        elif isinstance(step, Remove):
            target = _target(root, step.path)
            if not target.exists() and not target.is_symlink():
                continue
            if write:
                if step.tree and target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                else:
                    target.unlink()
                print(f"removed {step.path}", file=out)
            else:
                print(f"would remove {step.path}", file=out)
        elif run:
            print(f"$ {shlex.join(step.argv)}", file=out, flush=True)
            code = host.run(step.argv)
            if code != 0 and step.check:
                raise ServiceError(f"`{shlex.join(step.argv)}` failed with exit code {code}")
        else:
            print(f"would run: {shlex.join(step.argv)}", file=out)


def config_problem(path: Path) -> str | None:
    """Why the server would refuse this config file, or None."""
    from botframework.server.settings import ServerSettings

    try:
        ServerSettings.from_env({}, config=path).check_bind()
    except ValueError as exc:
        return str(exc)
    return None


def health_url(config: Path) -> str:
    """Where the configured server answers /health (a wildcard bind is asked on loopback)."""
    try:
        with open(config, "rb") as handle:
            data = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError):
        data = {}
    data = data.get("server", data)
    host = str(data.get("host", "127.0.0.1"))
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{int(data.get('port', 8000))}/health"


# ---------------------------------------------------------------- the commands


def _runs(root: Path, args: argparse.Namespace) -> bool:
    """Commands run on the live system only."""
    return root == Path("/") and not args.dry_run


def _writes(root: Path, args: argparse.Namespace) -> bool:
    """Files are written under --root; on the live system, not with --dry-run."""
    return root != Path("/") or not args.dry_run


def _install(args: argparse.Namespace, root: Path, config: PurePosixPath, host: Host, out: TextIO) -> int:
    exec_argv = [args.executable, "serve"] if args.executable else default_exec_argv()
    check_executable(exec_argv[0], args.user)
    unit = _target(root, UNIT_DIR / UNIT_NAME)
    before = unit.read_text() if unit.is_file() else None
    steps = plan_install(root, exec_argv=exec_argv, user=args.user, config=config, gpu=args.gpu, host=host)
    apply(steps, root=root, write=_writes(root, args), run=_runs(root, args), host=host, out=out)
    config_file = _target(root, config)
    problem = config_problem(config_file) if config_file.is_file() else None
    if problem:
        print(f"warning: {config}: {problem}: the service will not start until it is fixed", file=out)
    if args.gpu is None and root == Path("/") and (os.path.exists("/dev/nvidiactl") or os.path.isdir("/dev/dri")):
        print("note: this machine has GPU devices, which the service cannot see (PrivateDevices=yes): "
              "install with --gpu nvidia or --gpu dri to allow them", file=out)
    if before is not None and _runs(root, args) and before != unit.read_text():
        print("note: the unit changed: `systemctl restart bot.framework` applies it "
              "(requests in flight finish first)", file=out)
    print(f"\nconfig: {config} (edit it, then: systemctl restart bot.framework)\n"
          f"logs:   journalctl -fu bot.framework\nhealth: curl {health_url(config_file)}", file=out)
    return 0


def _uninstall(args: argparse.Namespace, root: Path, config: PurePosixPath, host: Host, out: TextIO) -> int:
    steps = plan_uninstall(root, user=args.user, config=config, purge=args.purge, host=host)
    apply(steps, root=root, write=_writes(root, args), run=_runs(root, args), host=host, out=out)
    if not args.purge:
        print(f"kept {config} and {STATE_DIR} (models, sessions): `--purge` removes them", file=out)
    return 0


def _status(args: argparse.Namespace, root: Path, config: PurePosixPath, host: Host, out: TextIO) -> int:
    import httpx

    argv = ("systemctl", "status", "--no-pager", UNIT_NAME)
    code = 0
    if _runs(root, args):
        out.flush()
        code = host.run(argv)
    else:
        print(f"would run: {shlex.join(argv)}", file=out)
    url = health_url(_target(root, config))
    try:
        response = httpx.get(url, timeout=3)
    except httpx.HTTPError as exc:
        print(f"health: no answer from {url} ({exc.__class__.__name__})", file=out)
        return code or 1
    print(f"health: {url} -> {response.status_code} {response.text.strip()[:300]}", file=out)
    return code or (0 if response.status_code == 200 else 1)


_ACTIONS = {"install": _install, "uninstall": _uninstall, "status": _status}


def cmd_service(args: argparse.Namespace, host: Host | None = None, out: TextIO | None = None) -> int:
    host = host or Host()
    out = out or sys.stdout
    try:
        root = Path(args.root).absolute()
        config = PurePosixPath(args.config)
        if not config.is_absolute():
            raise ServiceError(f"--config must be an absolute path on the target system, not {args.config!r}")
        if not _USER_NAME.fullmatch(getattr(args, "user", DEFAULT_USER)):
            raise ServiceError(f"--user must be a system user name (a-z, 0-9, _ and -), not {args.user!r}")
        if _runs(root, args):
            _check_live(host, args.action)
        return _ACTIONS[args.action](args, root, config, host, out)
    except (ServiceError, OSError) as exc:
        print(f"botframework: error: {exc}", file=sys.stderr)
        return 2


def add_service_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """`botframework service ...` on the CLI's subcommand parser."""
    service = sub.add_parser("service", help="install, remove or inspect the systemd service bot.framework",
                             description="Run the server as the systemd service bot.framework (deploy/README.md).")
    actions = service.add_subparsers(dest="action", required=True)
    helps = {"install": "write the unit and /etc/botframework/config.toml, create the user, enable and start it",
             "uninstall": "stop and remove the unit (the config, models and sessions stay unless --purge)",
             "status": "systemctl status bot.framework, and the server's /health"}
    for action, text in helps.items():
        p = actions.add_parser(action, help=text, description=text)
        p.add_argument("--root", default="/",
                       help="act on the system under this folder (an image being built): files written there, "
                            "commands printed, not run (default /)")
        p.add_argument("--dry-run", action="store_true",
                       help="print the commands instead of running them (and the files, without --root)")
        p.add_argument("--config", default=str(CONFIG_PATH), help=f"the server's config file (default {CONFIG_PATH})")
        if action != "status":
            p.add_argument("--user", default=DEFAULT_USER,
                           help=f"the user the service runs as, created if missing (default {DEFAULT_USER})")
        if action == "install":
            p.add_argument("--executable", help="the botframework script the service runs (default: the one "
                                                "beside this Python, else on PATH)")
            p.add_argument("--gpu", choices=GPU_KINDS,
                           help="let the service use the GPU: nvidia (CUDA) or dri (Vulkan, ROCm); none removes it")
        if action == "uninstall":
            p.add_argument("--purge", action="store_true",
                           help="also remove the config, the models and sessions in /var/lib/botframework, and "
                                "the user install created")
        p.set_defaults(func=cmd_service)
