"""A real Kannel (bearerbox + smsbox) with ``fakesmsc`` as the SMS centre, all on 127.0.0.1.

``start_kannel(workdir, mo_url=...)`` writes a kannel.conf on free ports, starts the three processes in
their own process groups, waits until the SMSC and smsbox are online and returns a ``Kannel`` handle:

* ``kannel.sendsms_url``, ``kannel.username``, ``kannel.password`` (or ``kannel.gateway_settings()``,
  a ready ``[[gateways]]`` table for ``SmsChannel.from_settings``);
* ``kannel.messages`` — what the SMSC received (``SmscMessage``), parsed from fakesmsc's output;
  ``await kannel.wait_messages(n, receiver=...)`` waits for them;
* ``kannel.inject_mo(sender, text)`` — an SMS from a phone, typed into fakesmsc's interactive mode;
  bearerbox hands it to smsbox, whose sms-service calls ``mo_url``;
* ``kannel.stop()`` — always call it (the fixture does); it kills the process groups.

``require_kannel()`` skips without Kannel locally and fails under CI.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import quote, unquote_to_bytes

import pytest

FAKESMSC = os.environ.get("KANNEL_FAKESMSC", "/usr/lib/kannel/test/fakesmsc")
BEARERBOX = os.environ.get("KANNEL_BEARERBOX", "bearerbox")
SMSBOX = os.environ.get("KANNEL_SMSBOX", "smsbox")
#: The MSISDN/short code the fake phones write to.
SHORT_CODE = "1500537"

_GOT = re.compile(r"Got message \d+: <(.*)>\s*$")


def kannel_missing() -> str | None:
    """Why Kannel cannot run here (a missing binary), or ``None``."""
    for binary in (BEARERBOX, SMSBOX):
        if shutil.which(binary) is None and shutil.which(binary, path="/usr/sbin:/usr/local/sbin") is None:
            return f"Kannel's {binary} is not installed (apt-get install kannel kannel-extras)"
    if not os.access(FAKESMSC, os.X_OK):
        return f"fakesmsc not found at {FAKESMSC} (apt-get install kannel-extras)"
    return None


def require_kannel() -> None:
    """Skip without Kannel on a developer's machine; under CI a missing Kannel is a failure, not a skip."""
    reason = kannel_missing()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must install it (scripts/install-kannel.sh)")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _decode(value: str) -> bytes:
    """fakesmsc's url-encoding (Kannel's ``octstr_url_encode``: space as ``+``)."""
    return unquote_to_bytes(value.replace("+", " "))


@dataclass(frozen=True)
class SmscMessage:
    """One message the SMSC received: one line of fakesmsc output, i.e. one part of a long SMS."""

    sender: str
    receiver: str
    kind: str  # "text", "data" or "udh"
    data: bytes  # message bytes: UTF-8 for text lines, raw (e.g. UTF-16BE for UCS-2) otherwise
    udh: bytes = b""
    raw: str = ""

    @classmethod
    def parse(cls, line: str) -> SmscMessage:
        sender, receiver, kind, rest = (line.split(" ", 3) + [""] * 4)[:4]
        if kind == "text":
            return cls(sender, receiver, kind, rest.encode(), raw=line)
        if kind == "udh":
            udh, _, data = rest.partition(" ")
            if data.startswith("data "):
                data = data[5:]
            return cls(sender, receiver, kind, _decode(data), _decode(udh), raw=line)
        return cls(sender, receiver, kind, _decode(rest), raw=line)

    @property
    def concat(self) -> tuple[int, int, int] | None:
        """(reference, total parts, part number) from a concatenation UDH, if any."""
        udh = self.udh
        i = 1
        while i + 1 < len(udh):
            iei, length = udh[i], udh[i + 1]
            body = udh[i + 2 : i + 2 + length]
            if iei == 0x00 and length == 3:
                return body[0], body[1], body[2]
            if iei == 0x08 and length == 4:
                return (body[0] << 8) | body[1], body[2], body[3]
            i += 2 + length
        return None

    def text(self, encoding: str = "utf-8") -> str:
        return self.data.decode(encoding)


@dataclass
class Kannel:
    workdir: Path
    admin_port: int
    smsbox_port: int
    smsc_port: int
    sendsms_port: int
    username: str = "hub"
    password: str = "hub-secret"
    admin_password: str = "admin-secret"
    messages: list[SmscMessage] = field(default_factory=list)
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _fakesmsc: subprocess.Popen[bytes] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stdin_lock: threading.Lock = field(default_factory=threading.Lock)
    _stopping: threading.Event = field(default_factory=threading.Event)

    @property
    def sendsms_url(self) -> str:
        return f"http://127.0.0.1:{self.sendsms_port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def gateway_settings(self, **extra: object) -> dict[str, object]:
        """A ``[[channels.sms.gateways]]`` table pointing at this Kannel."""
        conf: dict[str, object] = {
            "driver": "kannel",
            "name": "kannel",
            "url": self.sendsms_url,
            "username": self.username,
            "password": self.password,
            "timeout": 5.0,
        }
        conf.update(extra)
        return conf

    # -- what the SMSC received -------------------------------------------------------------------------

    def received(self, receiver: str | None = None) -> list[SmscMessage]:
        with self._lock:
            return [m for m in self.messages if receiver is None or m.receiver == receiver]

    def clear(self) -> None:
        with self._lock:
            self.messages.clear()

    async def wait_messages(
        self, count: int, *, receiver: str | None = None, timeout: float = 10.0
    ) -> list[SmscMessage]:
        """Wait until at least ``count`` messages (for ``receiver``) arrived; return them all."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.received(receiver)
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"fakesmsc got {len(found)} of {count} messages within {timeout}s: {found}"
                )
            await asyncio.sleep(0.05)

    # -- what phones send ---------------------------------------------------------------------------------

    def inject_mo(self, sender: str, text: str, receiver: str = SHORT_CODE) -> None:
        """Make fakesmsc deliver an SMS from ``sender``: bearerbox → smsbox → the sms-service get-url."""
        if self._fakesmsc is None or self._fakesmsc.stdin is None:
            raise RuntimeError("Kannel is not running")
        if text.isascii() and "\n" not in text:
            line = f"{sender} {receiver} text {text}\n"
        else:
            line = f"{sender} {receiver} data {quote(text.encode())}\n"
        if len(line) > 250:
            raise ValueError("fakesmsc reads at most 255 bytes per line")
        with self._stdin_lock:
            self._fakesmsc.stdin.write(line.encode())
            self._fakesmsc.stdin.flush()

    # -- life cycle ---------------------------------------------------------------------------------------

    def _spawn(self, args: list[str], log_name: str, **kwargs: object) -> subprocess.Popen[bytes]:
        log = open(self.workdir / log_name, "wb")  # noqa: SIM115 - the child owns it
        proc = subprocess.Popen(
            args, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **kwargs
        )
        log.close()
        self._procs.append(proc)
        return proc

    def _read_fakesmsc(self, stream: IO[bytes]) -> None:
        with open(self.workdir / "fakesmsc.log", "a", encoding="utf-8", errors="replace") as log:
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", "replace")
                log.write(line)
                log.flush()
                match = _GOT.search(line)
                if match:
                    message = SmscMessage.parse(match.group(1))
                    with self._lock:
                        self.messages.append(message)

    def _tick_fakesmsc(self) -> None:
        # fakesmsc's interactive mode polls stdin for a second before it reads the SMSC socket;
        # an empty line every 50 ms makes it read what bearerbox sent at once.
        while not self._stopping.wait(0.05):
            proc = self._fakesmsc
            if proc is None or proc.poll() is not None or proc.stdin is None:
                return
            try:
                with self._stdin_lock:
                    proc.stdin.write(b"\n")
                    proc.stdin.flush()
            except (BrokenPipeError, ValueError, OSError):
                return

    def start(self, *, timeout: float = 20.0) -> None:
        conf = self.workdir / "kannel.conf"
        deadline = time.monotonic() + timeout
        self._spawn([_which(BEARERBOX), "-v", "1", str(conf)], "bearerbox.out")
        self._wait(lambda: "fake" in self._status().lower(), deadline, "bearerbox admin interface")
        # The fake SMSC listens once bearerbox is up; fakesmsc (interactive mode: no messages given)
        # connects to it, prints what it receives and sends whatever lines we write to its stdin.
        self._fakesmsc = subprocess.Popen(
            [FAKESMSC, "-H", "127.0.0.1", "-r", str(self.smsc_port), "-i", "0"],
            cwd=self.workdir,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._procs.append(self._fakesmsc)
        threading.Thread(target=self._read_fakesmsc, args=(self._fakesmsc.stdout,), daemon=True).start()
        threading.Thread(target=self._tick_fakesmsc, daemon=True).start()
        self._spawn([_which(SMSBOX), "-v", "1", str(conf)], "smsbox.out")
        self._wait(self._online, deadline, "fake SMSC and smsbox online")
        self._wait(self._sendsms_answers, deadline, "smsbox sendsms port")

    def _status(self) -> str:
        url = f"{self.admin_url}/status.txt?password={self.admin_password}"
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return response.read().decode("utf-8", "replace")
        except (OSError, urllib.error.URLError):
            return ""

    def _online(self) -> bool:
        status = self._status()
        smsc_online = re.search(r"^\s*FAKE\b.*\(online", status, re.MULTILINE) is not None
        box_online = re.search(r"smsbox.*\(on-line", status) is not None
        return smsc_online and box_online

    def _sendsms_answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.sendsms_port), timeout=0.5):
                return True
        except OSError:
            return False

    def _wait(self, ready: Callable[[], bool], deadline: float, what: str) -> None:
        while not ready():
            for proc in self._procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"Kannel: {proc.args[0]} exited ({proc.returncode}); {self._logs()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"Kannel: timed out waiting for {what}; {self._logs()}")
            time.sleep(0.05)

    def _logs(self) -> str:
        parts = []
        for name in ("bearerbox.out", "smsbox.out", "fakesmsc.log"):
            path = self.workdir / name
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-15:]
                parts.append(f"--- {name}\n" + "\n".join(tail))
        return "\n".join(parts) or "no logs"

    def stop(self) -> None:
        """Stop fakesmsc, smsbox and bearerbox: SIGTERM their process groups, SIGKILL what lingers."""
        self._stopping.set()
        for proc in reversed(self._procs):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
        end = time.monotonic() + 3
        for proc in reversed(self._procs):
            try:
                proc.wait(timeout=max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        if self._fakesmsc is not None and self._fakesmsc.stdin is not None:
            with contextlib.suppress(OSError):
                self._fakesmsc.stdin.close()
        self._procs.clear()


def _which(binary: str) -> str:
    return shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/usr/local/sbin") or binary


def write_config(kannel: Kannel, *, mo_url: str) -> Path:
    """kannel.conf: every port on 127.0.0.1, one fake SMSC, one sendsms user, one catch-all sms-service."""
    w = kannel.workdir
    # Kannel's config syntax: values with spaces or %-escapes are quoted; a quote inside would end it.
    if '"' in mo_url:
        raise ValueError("mo_url must not contain a double quote")
    conf = f"""
group = core
admin-port = {kannel.admin_port}
admin-interface = 127.0.0.1
admin-password = {kannel.admin_password}
admin-allow-ip = 127.0.0.1
smsbox-port = {kannel.smsbox_port}
smsbox-interface = 127.0.0.1
box-allow-ip = 127.0.0.1
log-file = "{w}/bearerbox.log"
log-level = 1
access-log = "{w}/access.log"
dlr-storage = internal
sms-resend-retry = 0

group = smsc
smsc = fake
smsc-id = FAKE
port = {kannel.smsc_port}
our-host = 127.0.0.1
connect-allow-ip = 127.0.0.1

group = smsbox
bearerbox-host = 127.0.0.1
bearerbox-port = {kannel.smsbox_port}
sendsms-port = {kannel.sendsms_port}
sendsms-interface = 127.0.0.1
log-file = "{w}/smsbox.log"
log-level = 1
access-log = "{w}/smsbox-access.log"

group = sendsms-user
username = {kannel.username}
password = {kannel.password}
user-allow-ip = 127.0.0.1
default-sender = KANNEL
max-messages = 10
concatenation = true

group = sms-service
keyword = default
catch-all = true
get-url = "{mo_url}"
max-messages = 0
"""
    path = w / "kannel.conf"
    path.write_text(conf.lstrip())
    return path


def start_kannel(workdir: Path, *, mo_url: str, timeout: float = 20.0) -> Kannel:
    """Configure and start Kannel in ``workdir``; the caller must ``stop()`` it (also on failure)."""
    workdir.mkdir(parents=True, exist_ok=True)
    ports: set[int] = set()
    while len(ports) < 4:
        ports.add(free_port())
    admin, smsbox, smsc, sendsms = sorted(ports)
    kannel = Kannel(
        workdir=workdir, admin_port=admin, smsbox_port=smsbox, smsc_port=smsc, sendsms_port=sendsms
    )
    write_config(kannel, mo_url=mo_url)
    try:
        kannel.start(timeout=timeout)
    except BaseException:
        kannel.stop()
        raise
    return kannel
