"""A console client: httpx against ``create_app(hub)`` in-process, redirects not followed."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from argon2 import PasswordHasher

from hub.api.app import create_app
from hub.console import accounts
from hub.context import Hub


@pytest.fixture
async def client(hub: Hub) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(hub), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as http:
        yield http


@pytest.fixture
async def other_client(hub: Hub) -> AsyncIterator[httpx.AsyncClient]:
    """A second browser."""
    transport = httpx.ASGITransport(app=create_app(hub), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as http:
        yield http


@pytest.fixture(autouse=True)
def quick_password_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """argon2 at its cheapest in these in-process tests: each hash costs ~1 ms instead of ~100 ms.

    Hashes say their own parameters, so checking works whatever made them. The deployed tests
    (tests/deployed/test_console_*.py) run `hub` processes with the production parameters.
    """
    monkeypatch.setattr(accounts, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


def sqlite_only(sqlite_database: tuple[str, str | None]) -> tuple[str, str | None]:
    """For page modules whose SQL is the domain's (tested on both databases in tests/integration):
    a module opts in with ``database = pytest.fixture(sqlite_only)`` to keep the suite under 10 minutes."""
    return sqlite_database
