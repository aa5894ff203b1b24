"""sd_notify without libsystemd: tell systemd (Type=notify) where the server is in its life.

    systemd starts the unit with NOTIFY_SOCKET (a path, or "@name": an abstract socket) and,
    with WatchdogSec=, WATCHDOG_USEC (and WATCHDOG_PID: whom it is meant for)
    SystemdNotifier.from_env()
      .ready(status)        READY=1        the models marked preload serve, the port listens
      .status(text)         STATUS=...     one line for `systemctl status`
      .stopping(status, timeout_s)  STOPPING=1, then EXTEND_TIMEOUT_USEC: the drain has begun
      .watchdog()           WATCHDOG=1     "still alive"
      .extend_timeout(s)    EXTEND_TIMEOUT_USEC=...  more time for the current start or stop
      .watchdog_forever()   WATCHDOG=1 every half WATCHDOG_USEC, from the event loop, so a loop
                            that hangs misses its pings and systemd restarts the service
    each message: one AF_UNIX datagram of "KEY=VALUE" lines to NOTIFY_SOCKET

Not under systemd (no NOTIFY_SOCKET): every call is a no-op. Nothing here raises into the
server: a send that fails is logged at debug level and reported as False.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Mapping

log = logging.getLogger("botframework.systemd")

_SEND_TIMEOUT_S = 1.0  # systemd reads its socket at once; never hold the event loop for long


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """The watchdog timeout systemd set for this process, in seconds (ping at half of it), or
    None: no WatchdogSec=, or WATCHDOG_PID names another process."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 1e6


def _address(value: str | None) -> str | bytes | None:
    """NOTIFY_SOCKET as a socket address: an absolute path, or "@name" for an abstract socket
    (a leading NUL byte). Anything else (unset, relative, vsock:...) is not ours to use."""
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None


class SystemdNotifier:
    """One service's messages to systemd. Safe to call from any thread, from a signal handler,
    and without systemd: the socket is made up front and each message is one sendto, so
    there is no lock to hold."""

    def __init__(self, notify_socket: str | None, watchdog_s: float | None = None) -> None:
        self._address = _address(notify_socket)
        self._watchdog_s = watchdog_s
        self._sock: socket.socket | None = None
        if self._address is not None:
            try:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.settimeout(_SEND_TIMEOUT_S)
            except OSError as exc:
                log.debug("sd_notify: no socket: %s", exc)
                self._address = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SystemdNotifier:
        env = os.environ if environ is None else environ
        return cls(env.get("NOTIFY_SOCKET"), watchdog_interval(env))

    @property
    def enabled(self) -> bool:
        """Whether a service manager listens (NOTIFY_SOCKET was set)."""
        return self._address is not None

    def watchdog_interval(self) -> float | None:
        """Seconds of systemd's watchdog timeout (WATCHDOG_USEC), None if there is none."""
        return self._watchdog_s if self.enabled else None

    def notify(self, *assignments: str) -> bool:
        """Send "KEY=VALUE" assignments as one message; True if it was sent."""
        sock, address = self._sock, self._address
        if sock is None or address is None or not assignments:
            return False
        # one line per assignment: a newline inside a value would start a bogus one
        data = "\n".join(a.replace("\n", " ") for a in assignments).encode()
        try:
            sock.sendto(data, address)
            return True
        except OSError as exc:  # systemd gone, socket full or missing: the server goes on regardless
            log.debug("sd_notify %r failed: %s", data, exc)
            return False

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *self._status(status))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def stopping(self, status: str | None = None, *, timeout_s: float | None = None) -> bool:
        """The drain has begun. `timeout_s`: how long it may still take; systemd's stop timeout
        is extended to it (sent apart, after STOPPING=1, so it applies to the stop state)."""
        sent = self.notify("STOPPING=1", *self._status(status))
        if timeout_s is not None:
            self.extend_timeout(timeout_s)
        return sent

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for `seconds` more of the current state's timeout (start, runtime or stop)."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={max(0, int(seconds * 1e6))}")

    async def watchdog_forever(self, healthy: Callable[[], bool] | None = None) -> None:
        """WATCHDOG=1 every half watchdog interval until cancelled (returns at once if systemd
        set no watchdog). Run it as a task on the server's event loop: the pings prove the loop
        turns. `healthy`, if given, must say True for a ping to be sent (keep it cheap)."""
        interval = self.watchdog_interval()
        if interval is None:
            return
        while True:
            try:
                if healthy is None or healthy():
                    self.watchdog()
            except Exception:  # noqa: BLE001 - a broken health check must not end the pings' task
                log.exception("watchdog health check failed")
            await asyncio.sleep(interval / 2)

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    @staticmethod
    def _status(status: str | None) -> tuple[str, ...]:
        return (f"STATUS={status}",) if status else ()
