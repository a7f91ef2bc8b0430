"""The chaos soak's peers that the tests' helpers do not already give: a counting SMTP sink that can refuse,
a private Redis it may kill, `hub worker` processes it may kill, and smsbox stopped and started again.

Synapse (tests/services/synapse.py), Kannel with its fake SMSC (tests/services/kannel.py), the Telegram
fake (tests/fakes/telegram_api.py) and the fault proxy (tests/fakes/fault_proxy.py) are reused as they are.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
#: Every broadcast's title carries ``Chaos-<channel>-<n>``: the sinks count copies per (recipient, marker).
MARKER = re.compile(rb"Chaos-(email|telegram|sms|matrix)-(\d+)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def marker_of(text: str | bytes) -> str | None:
    found = MARKER.search(text.encode() if isinstance(text, str) else text)
    return found.group(0).decode() if found else None


# ---------------------------------------------------------------------------------------------------------
# SMTP


class SmtpSink:
    """aiosmtpd on 127.0.0.1 that keeps only a count per (recipient, marker) and can answer 421 for a while.

    421 is what a busy or rate-limiting mail server says (RFC 5321 section 3.8: "service not available,
    closing transmission channel"); SMTP has no retry-after, so there is nothing to obey but the refusal.
    """

    def __init__(self) -> None:
        self.copies: Counter[tuple[str, str]] = Counter()
        self.refused = 0
        self._refuse_until = 0.0
        self._lock = threading.Lock()
        self.port = free_port()
        self._controller: Any = None

    def refuse(self, seconds: float) -> None:
        self._refuse_until = time.monotonic() + seconds

    def start(self) -> SmtpSink:
        from aiosmtpd.controller import Controller

        sink = self

        class Handler:
            async def handle_MAIL(
                self, server: Any, session: Any, envelope: Any, address: str, options: Any
            ) -> str:
                if time.monotonic() < sink._refuse_until:
                    with sink._lock:
                        sink.refused += 1
                    return "421 4.7.0 Too many messages, try again later"
                envelope.mail_from = address
                envelope.mail_options.extend(options)
                return "250 OK"

            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                head = envelope.content.split(b"\r\n\r\n", 1)[0]
                marker = marker_of(head) or "?"
                with sink._lock:
                    for rcpt in envelope.rcpt_tos:
                        sink.copies[(rcpt.strip("<>").lower(), marker)] += 1
                return "250 Message accepted for delivery"

        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


# ---------------------------------------------------------------------------------------------------------
# Redis


class PrivateRedis:
    """A redis-server of this run only, without persistence, on a fixed free port: killed and restarted
    empty, as a disposable Redis is in a deployment (never the shared one on 6379)."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server not found")
        self.binary, self.workdir, self.port = binary, workdir, free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        self.proc = subprocess.Popen(
            args,
            cwd=self.workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("private redis-server did not start")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: everything in it (queues, jobs, rate counters, pauses, the epoch marker) is gone."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def restart(self, down: float) -> None:
        self.kill()
        time.sleep(down)
        self.start()
        self.restarts += 1

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


# ---------------------------------------------------------------------------------------------------------
# hub worker processes


class Workers:
    """``count`` `hub worker` subprocesses from one settings file; any may be SIGKILLed and restarted."""

    def __init__(self, settings_file: Path, logdir: Path, count: int) -> None:
        self.settings_file, self.logdir, self.count = settings_file, logdir, count
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * count
        self.kills = 0
        self.starts = 0
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
        self.env["PYTHONUNBUFFERED"] = "1"

    def start(self, slot: int) -> None:
        log = self.logdir / f"worker-{slot}-{self.starts}.log"
        with log.open("wb") as out:
            self.procs[slot] = subprocess.Popen(
                [sys.executable, "-m", "hub.cli", "--settings", str(self.settings_file), "worker"],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1

    def start_all(self) -> None:
        for slot in range(self.count):
            self.start(slot)

    def alive(self) -> list[int]:
        return [i for i, p in enumerate(self.procs) if p is not None and p.poll() is None]

    def kill(self, slot: int) -> None:
        """SIGKILL, as an OOM kill or a power cut: no cleanup, outcomes not yet written stay unwritten."""
        proc = self.procs[slot]
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        self.kills += 1

    def died(self) -> list[int]:
        """Slots whose process ended without being killed here (a crash of its own)."""
        return [i for i, p in enumerate(self.procs) if p is not None and p.poll() not in (None, -9)]

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            if proc is None:
                continue
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


# ---------------------------------------------------------------------------------------------------------
# smsbox


def stop_smsbox(kannel: Any) -> None:
    """Stop Kannel's smsbox (SIGTERM to its process group): sendsms refuses connections meanwhile."""
    for proc in list(kannel._procs):
        if Path(str(proc.args[0])).name == "smsbox" and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            kannel._procs.remove(proc)


def start_smsbox(kannel: Any, timeout: float = 30.0) -> None:
    """Start smsbox again with the same kannel.conf and wait until bearerbox sees it and sendsms answers."""
    from tests.services.kannel import SMSBOX, _which

    kannel._spawn([_which(SMSBOX), "-v", "1", str(kannel.workdir / "kannel.conf")], "smsbox.out")
    deadline = time.monotonic() + timeout
    kannel._wait(kannel._online, deadline, "smsbox online again")
    kannel._wait(kannel._sendsms_answers, deadline, "smsbox sendsms port again")
