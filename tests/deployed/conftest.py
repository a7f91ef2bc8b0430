"""The hub as operators run it: `hub run` and `hub worker` processes started from a settings file.

Tests here drive the hub only through what a person or another system has: the `hub` CLI (a subprocess),
the HTTP API of a running `hub run`, and the real peers (the SMTP sink here; Synapse, Kannel and the
Telegram fake from their own fixtures). Nothing is imported from the hub's internals to act on it; a test
may read the database afterwards to check what a user could also see.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from hub.settings import Settings
from tests import log_audit
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
            hooks = {"response": [_forbid_receipt]}
            self._client = httpx.Client(base_url=self.url, timeout=30.0, event_hooks=hooks)
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
        # The hub's most verbose logs, for the log audit (tests/log_audit.py); a test's env may lower it.
        debug = {"HUB_LOG__LEVEL": "DEBUG"}
        return {**os.environ, **debug, **self.env, **(env or {}), "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}

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
        log_audit.record_command(f"hub-{args[0] if args else 'help'}", result.stdout, result.stderr)
        if check and result.returncode != 0:
            pytest.fail(
                f"`hub {' '.join(args)}` exited {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result

    def _start(
        self, args: list[str], env: dict[str, str] | None, command: list[str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = self.workdir / f"{args[0]}-{len(self.procs)}.log"
        with log.open("wb") as sink:
            proc = subprocess.Popen(
                command or [sys.executable, "-m", "hub.cli", "--settings", str(self.settings_file), *args],
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

    def start_api(self) -> tuple[subprocess.Popen[bytes], str]:
        """The HTTP API alone, as a separate service runs it (uvicorn's app factory, HUB_SETTINGS)."""
        port = free_port()
        app = ["--factory", "hub.api.app:create_app", "--port", str(port)]
        uvicorn = [sys.executable, "-m", "uvicorn", *app]
        proc = self._start(["api"], {"HUB_SETTINGS": str(self.settings_file)}, command=uvicorn)
        url = f"http://127.0.0.1:{port}"

        def answers() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"the API exited with {proc.returncode}:\n{self.log(proc)}")
            try:
                return httpx.get(f"{url}/healthz", timeout=1.0).status_code < 500
            except httpx.HTTPError:
                return False

        self.wait_for(answers, START_TIMEOUT, "the API process", proc)
        return proc, url

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
        for log in self._logs.values():
            log_audit.watch(log)


def _forbid_receipt(response: httpx.Response) -> None:
    """A receipt's PIN and deep-link code, as the API hands them out, may appear in no log line."""
    request = response.request
    if request.method == "POST" and request.url.path == "/v1/applicants" and response.status_code < 300:
        response.read()
        receipt = response.json()
        log_audit.forbid(receipt.get("pin"), "PIN")
        log_audit.forbid(receipt.get("link_code"), "deep-link code")


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


# ---------------------------------------------------------------------------------------------------------
# A real browser for the console (issue 10): Debian's Chromium driven by Playwright, never a download.

#: Installed by scripts/install-chromium.sh (``make test-deps``); another path through this variable.
CHROMIUM = Path(os.environ.get("HUB_TEST_CHROMIUM", "/usr/bin/chromium"))
#: Where browser tests leave screenshots for docs/console.md.
SCREENSHOTS = ROOT / "docs" / "console"


@pytest.fixture
def browser() -> Iterator[Any]:
    """A headless Chromium for one test (about a second to start).

    Not shared across tests: Playwright's sync API holds an event loop on this thread while it runs,
    and every asyncio test the same process ran afterwards would fail to start its own.
    """
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/install-chromium.sh (make test-deps)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # As root (CI containers) Chromium's sandbox cannot start; the pages it opens are our own.
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)
        try:
            yield launched
        finally:
            launched.close()


@contextmanager
def browser_tab(browser: Any) -> Iterator[Any]:
    """A fresh browser tab (own cookies), Indonesian, a laptop-sized window; 15 s per action at most."""
    context = browser.new_context(locale="id-ID", viewport={"width": 1280, "height": 800})
    context.set_default_timeout(15_000)
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A tab of its own (``browser_tab``); a second user in the same test opens another with it."""
    with browser_tab(browser) as tab:
        yield tab


#: axe-core rule tags checked on console pages: WCAG 2.0 and 2.1, levels A and AA.
WCAG_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]


def accessibility_problems(page: Any) -> list[str]:
    """axe-core's serious and critical WCAG 2.1 AA violations on the page as shown, one line each.

    axe-core ships inside axe-playwright-python (no download); ``page.evaluate`` injects it past the
    console's Content-Security-Policy, as browser tooling does.
    """
    from axe_playwright_python.sync_playwright import Axe

    options = {"runOnly": {"type": "tag", "values": WCAG_AA}, "resultTypes": ["violations"]}
    found = Axe().run(page, options=options).response["violations"]
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {', '.join(str(n['target']) for n in v['nodes'][:3])}"
        for v in found
        if v["impact"] in ("serious", "critical")
    ]


def checked_screenshot(page: Any, name: str) -> None:
    """A whole-page screenshot ``docs/console/NAME.png`` for docs/console.md, once axe finds no serious
    accessibility problem on the page as shown."""
    assert accessibility_problems(page) == [], page.url
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def console_user(deployment: Deployment, office: str, email: str, role: str) -> str:
    """A console user made with `hub users create`, as an admin does; its one-time password."""
    shown = deployment.cli("users", "create", "--office", office, "--email", email, "--role", role).stdout
    found = re.search(r"one-time password: (\S+)", shown)
    assert found, shown
    log_audit.forbid(found.group(1), "one-time password")
    return found.group(1)


def first_sign_in(page: Any, base: str, email: str, one_time: str, password: str) -> None:
    """Sign in with the one-time password and change it to ``password``, as the console asks at first."""
    log_audit.forbid(password, "staff password")
    page.goto(f"{base}/console/masuk")
    page.fill("#email", email)
    page.fill("#password", one_time)
    page.click("form button[type=submit]")
    page.wait_for_url(re.compile(r".*/console/akun/sandi.*"))
    page.fill("#current", one_time)
    page.fill("#new", password)
    page.fill("#repeat", password)
    page.click("main form button[type=submit]")
    page.wait_for_url(re.compile(r".*selesai=1.*"))
