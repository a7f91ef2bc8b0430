"""The hub as operators run it: `hub run` and `hub worker` processes started from a settings file.

Tests here drive the hub only through what a person or another system has: the `hub` CLI (a subprocess),
the HTTP API of a running `hub run`, and the real peers (the SMTP sink here; Synapse, Kannel and the
Telegram fake from their own fixtures). Nothing is imported from the hub's internals to act on it; a test
may read the database afterwards to check what a user could also see.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from hub.settings import Settings
from tests.conftest import PG_URL, ROOT, Mailbox, _drop_schema, free_port, make_settings
from tests.workers import write_settings

START_TIMEOUT = 60.0


@dataclass
class Deployment:
    """One installation of the hub in a folder of its own: a settings file, a database, its processes."""

    workdir: Path
    settings: Settings
    mailbox: Mailbox
    port: int
    env: dict[str, str] = field(default_factory=dict)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _logs: dict[int, Path] = field(default_factory=dict)
    _client: httpx.Client | None = None

    @property
    def settings_file(self) -> Path:
        return self.workdir / "settings.toml"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api(self) -> httpx.Client:
        """A client on the running hub's API (start it with ``start_run`` first)."""
        if self._client is None:
            self._client = httpx.Client(base_url=self.url, timeout=30.0)
        return self._client

    def configure(self, **sections: dict[str, Any]) -> None:
        """Change settings before processes start: ``configure(queue={"lease_seconds": 3})``.

        A section's keys are merged; ``channels={"sms": {...}}`` adds or replaces one channel's table.
        """
        data = self.settings.model_dump(by_alias=True)
        for name, values in sections.items():
            if name == "channels":
                data["channels"].update(values)
            else:
                data[name] = {**data.get(name, {}), **values}
        self.settings = Settings.model_validate(data)
        write_settings(self.settings, self.settings_file)

    def _environ(self, env: dict[str, str] | None) -> dict[str, str]:
        return {**os.environ, **self.env, **(env or {}), "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}

    def cli(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 120.0,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run `hub --settings FILE ARGS...` as an operator would; ``check`` fails on a non-zero exit."""
        result = subprocess.run(
            [sys.executable, "-m", "hub.cli", "--settings", str(self.settings_file), *args],
            cwd=self.workdir,
            env=self._environ(env),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            pytest.fail(
                f"`hub {' '.join(args)}` exited {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result

    def _start(self, args: list[str], env: dict[str, str] | None) -> subprocess.Popen[bytes]:
        log = self.workdir / f"{args[0]}-{len(self.procs)}.log"
        with log.open("wb") as sink:
            proc = subprocess.Popen(
                [sys.executable, "-m", "hub.cli", "--settings", str(self.settings_file), *args],
                cwd=self.workdir,
                env=self._environ(env),
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append(proc)
        self._logs[proc.pid] = log
        return proc

    def start_run(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start `hub run` (API and worker in one process) and wait until its API answers."""
        proc = self._start(["run", "--port", str(self.port), *args], env)
        self.wait_for(lambda: self._answers(proc), START_TIMEOUT, f"`hub run` answering on {self.url}", proc)
        return proc

    def start_worker(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start `hub worker`; it is running once the process is up (its jobs wait in Redis meanwhile)."""
        return self._start(["worker", *args], env)

    def start_listen(self, channel: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start `hub listen CHANNEL`: the channel's bot on its own, beside workers that send."""
        return self._start(["listen", channel], env)

    def _answers(self, proc: subprocess.Popen[bytes]) -> bool:
        if proc.poll() is not None:
            pytest.fail(f"`hub run` exited with {proc.returncode}:\n{self.log(proc)}")
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1.0).status_code < 500
        except httpx.HTTPError:
            return False

    def log(self, proc: subprocess.Popen[bytes]) -> str:
        """Everything the process wrote so far (stdout and stderr)."""
        return self._logs[proc.pid].read_text(encoding="utf-8", errors="replace")

    def stop(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Stop a process (SIGTERM as an operator's service manager would; SIGKILL for a crash)."""
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, sig)
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            except ProcessLookupError:
                pass
        return proc.returncode

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL: no cleanup, as a crash or an OOM kill would do."""
        self.stop(proc, signal.SIGKILL)

    @staticmethod
    def wait_for(
        condition: Callable[[], Any],
        timeout: float = 30.0,
        what: str = "condition",
        proc: subprocess.Popen[bytes] | None = None,
    ) -> Any:
        """Poll ``condition`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(0.1)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        for proc in self.procs:
            self.stop(proc)


@pytest.fixture
def make_deployment(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, smtp: tuple[Mailbox, int]
) -> Iterator[Callable[..., Deployment]]:
    """Build deployments: ``make_deployment(database="postgres", queue={...})``; each is initialised
    with `hub init` and the sample offices, and its processes are stopped at teardown."""
    made: list[Deployment] = []
    schemas: list[str] = []

    def build(database: str = "sqlite", init: bool = True, **sections: dict[str, Any]) -> Deployment:
        workdir = tmp_path_factory.mktemp("deployment")
        if database == "postgres":
            schema = f"d_{uuid.uuid4().hex[:12]}"
            schemas.append(schema)
            url, schema_name = PG_URL, schema
        else:
            url, schema_name = f"sqlite+aiosqlite:///{workdir / 'hub.db'}", None
        settings = make_settings(url, redis_url, smtp[1], schema_name)
        port = free_port()
        deployment = Deployment(workdir=workdir, settings=settings, mailbox=smtp[0], port=port)
        made.append(deployment)
        deployment.configure(hub={"public_url": deployment.url}, **sections)
        if init:
            deployment.cli("init")
            deployment.cli("regions", "load", str(ROOT / "data" / "offices.toml"))
        return deployment

    try:
        yield build
    finally:
        for deployment in made:
            deployment.close()
        for schema in schemas:
            asyncio.run(_drop_schema(schema))


@pytest.fixture
def deployment(make_deployment: Callable[..., Deployment]) -> Deployment:
    """One hub on SQLite with email to the SMTP sink, initialised, no process started yet."""
    return make_deployment()
