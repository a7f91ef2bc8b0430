"""SMS end to end: the real hub (SQLite or PostgreSQL, Redis) sending through a real Kannel.

One Kannel per session (bearerbox + smsbox + fakesmsc, all on 127.0.0.1). Its sms-service get-url points at
a fixed loopback port; each test serves the hub's own HTTP API (``hub.api.app.create_app``) there under
uvicorn, and the hub's ``public_url`` is that server, so Kannel's delivery reports (``dlr-url``) and inbound
SMS (``get-url``) both land on the hub's ``/v1/channels/sms/webhook`` route. Every hub gets a fresh
``dlr_secret``: a late report from an earlier test's Kannel traffic is refused instead of touching this
test's rows. uvicorn, worker tasks, the private redis-server and Kannel are all stopped in teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from aiohttp import web

from hub.api.app import create_app
from hub.context import Hub
from hub.delivery import build_workers
from tests.conftest import make_settings, start_hub
from tests.services.kannel import SHORT_CODE, Kannel, SmscMessage, free_port, require_kannel, start_kannel

WEBHOOK = "/v1/channels/sms/webhook"
MO_SECRET = "integration-mo-secret"
SENDER = "DUKCAPIL"


# ---------------------------------------------------------------------------------------------------------
# Session services: a private redis-server, the API port Kannel calls, Kannel itself


@pytest.fixture(scope="session")
def api_port() -> int:
    """Where each test serves the hub's API; Kannel's sms-service get-url is fixed to it."""
    return free_port()


@pytest.fixture(scope="session")
def kannel(tmp_path_factory: pytest.TempPathFactory, api_port: int) -> Iterator[Kannel]:
    require_kannel()
    mo_url = f"http://127.0.0.1:{api_port}{WEBHOOK}?kind=mo&k={MO_SECRET}&from=%p&text=%a"
    instance = start_kannel(tmp_path_factory.mktemp("kannel-hub"), mo_url=mo_url)
    try:
        yield instance
    finally:
        instance.stop()


# ---------------------------------------------------------------------------------------------------------
# The hub with the SMS channel, its HTTP API under uvicorn, and optionally workers in the background


def sms_conf(gateways: list[dict[str, Any]], **overrides: Any) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "enabled": True,
        "sender": SENDER,
        "number": SHORT_CODE,
        "dlr_secret": secrets.token_hex(16),
        "mo_secret": MO_SECRET,
        "transliterate": True,
        "max_segments": 6,
        "concurrency": 16,
        "failure_threshold": 5,
        "cooloff_seconds": 0.5,
        "gateways": gateways,
    }
    conf.update(overrides)
    return conf


class ApiServer:
    """``create_app(hub)`` under uvicorn on 127.0.0.1, in this event loop."""

    def __init__(self, hub: Hub, port: int) -> None:
        config = uvicorn.Config(
            create_app(hub),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
        )
        self.server = uvicorn.Server(config)
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self.server.serve())
        deadline = time.monotonic() + 10
        while not self.server.started:
            if self.task.done():
                self.task.result()
                raise RuntimeError("uvicorn stopped before it started")
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start within 10 s")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self.task is None:
            return
        self.server.should_exit = True
        try:
            await asyncio.wait_for(self.task, 10)
        except TimeoutError:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


class BackgroundWorkers:
    """The hub's arq workers (both lanes, no cron) as tasks in this loop, like ``hub worker`` runs them."""

    def __init__(self, hub: Hub) -> None:
        self.workers = build_workers(hub, cron=False)
        self.tasks = [asyncio.create_task(w.main()) for w in self.workers]

    def check(self) -> None:
        for task in self.tasks:
            if task.done():
                task.result()

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


@dataclass
class SmsHub:
    hub: Hub
    kannel: Kannel
    api: ApiServer
    workers: BackgroundWorkers | None = None

    def received(self, receiver: str | None = None) -> list[SmscMessage]:
        return smsc_messages(self.kannel, receiver)


HubFactory = Callable[..., Awaitable[SmsHub]]


@pytest.fixture
async def make_sms_hub(
    database: tuple[str, str | None], redis_url: str, kannel: Kannel, api_port: int
) -> AsyncIterator[HubFactory]:
    """``await make_sms_hub(gateways=None, workers=False, queue={...}, **sms_settings)``: one hub per test.

    ``gateways`` defaults to the session's Kannel (10,000 sends/s allowed, i.e. unpaced).
    """
    url, schema = database
    made: list[SmsHub] = []

    async def make(
        gateways: list[dict[str, Any]] | None = None,
        *,
        workers: bool = False,
        queue: dict[str, Any] | None = None,
        **sms: Any,
    ) -> SmsHub:
        assert not made, "one hub per test: Kannel's get-url points at one API port"
        kannel.clear()
        settings = make_settings(url, redis_url, None, schema, **{"retry_base_seconds": 0.2, **(queue or {})})
        settings.hub.public_url = f"http://127.0.0.1:{api_port}"
        settings.channels = {
            "sms": sms_conf(gateways or [kannel.gateway_settings(rate_per_second=10_000)], **sms)
        }
        hub = await start_hub(settings)
        api = ApiServer(hub, api_port)
        try:
            await api.start()
        except BaseException:
            await hub.close()
            raise
        instance = SmsHub(hub, kannel, api)
        made.append(instance)
        if workers:
            instance.workers = BackgroundWorkers(hub)
        return instance

    try:
        yield make
    finally:
        for instance in made:
            if instance.workers is not None:
                await instance.workers.stop()
            await instance.api.stop()
            await instance.hub.close()


# ---------------------------------------------------------------------------------------------------------
# A tiny sendsms front that answers 503 a few times before it lets requests through to Kannel


@dataclass
class FlakyFront:
    """Kannel's sendsms, but the first ``failures`` calls get Kannel's own 503 "Temporal failure"."""

    target: str
    failures: int
    port: int = field(default_factory=free_port)
    calls: int = 0
    refused: int = 0
    passed: int = 0
    _runner: web.AppRunner | None = None
    _session: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, request: web.Request) -> web.Response:
        self.calls += 1
        if self.refused < self.failures:
            self.refused += 1
            return web.Response(status=503, text="Temporal failure, try again later.")
        self.passed += 1
        async with self._session.get(f"{self.target}/cgi-bin/sendsms", params=request.query) as upstream:
            return web.Response(status=upstream.status, text=await upstream.text())

    async def start(self) -> None:
        import aiohttp

        self._session = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_get("/cgi-bin/sendsms", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()


@pytest.fixture
async def flaky_front(kannel: Kannel) -> AsyncIterator[FlakyFront]:
    front = FlakyFront(kannel.sendsms_url, failures=8)
    await front.start()
    try:
        yield front
    finally:
        await front.stop()


# ---------------------------------------------------------------------------------------------------------
# Reading what the SMSC received


_NUMBER = re.compile(r"^\+?\d+$")


def smsc_messages(kannel: Kannel, receiver: str | None = None) -> list[SmscMessage]:
    """What the SMSC received, one record per SMS part, in arrival order.

    Kannel's fake SMSC protocol is one line per message and sends single-part GSM-7 text as is, so a text
    with line breaks reaches fakesmsc as several lines (and ``Kannel.received`` as several records). A
    line that does not start ``<sender> <number> text|data|udh`` continues the text before it.
    """
    merged: list[SmscMessage] = []
    for record in kannel.received():
        starts = record.kind in ("text", "data", "udh") and _NUMBER.match(record.receiver)
        if not starts and merged and merged[-1].kind == "text":
            last = merged[-1]
            merged[-1] = dataclasses.replace(last, data=last.data + b"\n" + record.raw.encode())
        else:
            merged.append(record)
    return [m for m in merged if receiver is None or m.receiver == receiver]


async def wait_smsc(kannel: Kannel, count: int, receiver: str | None = None, timeout: float = 20.0) -> None:
    """Wait until the SMSC received ``count`` parts (for ``receiver``), then a little longer: a duplicate
    or the last lines of a multi-line text would arrive within that."""
    await wait_for(
        lambda: len(smsc_messages(kannel, receiver)) >= count,
        timeout=timeout,
        what=f"{count} SMS parts at fakesmsc",
    )
    await asyncio.sleep(0.3)


def assemble(parts: list[SmscMessage], *, ucs2: bool = False) -> list[tuple[str, int]]:
    """The complete messages among one receiver's ``parts``, as (text, segments), in arrival order.

    A single-part GSM-7 message is a ``text`` line; concatenated parts carry their bytes and a UDH; UCS-2
    text is UTF-16BE (what the hub asks for with ``coding=2``).
    """
    encoding = "utf-16-be" if ucs2 else "utf-8"
    out: list[tuple[str, int]] = []
    groups: dict[int, dict[int, SmscMessage]] = {}
    for part in parts:
        concat = part.concat
        if concat is None:
            out.append((part.data.decode(encoding), 1))
            continue
        ref, total, number = concat
        groups.setdefault(ref, {})[number] = part
        if len(groups[ref]) == total:
            data = b"".join(groups[ref][n].data for n in range(1, total + 1))
            out.append((data.decode(encoding), total))
    return out


async def wait_for(predicate: Callable[[], Any], *, timeout: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)
