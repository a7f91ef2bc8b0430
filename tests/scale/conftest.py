"""The scale checks' database: 10,000,000 delivery rows in a PostgreSQL schema of their own.

Collected only by ``make scale`` (``HUB_SCALE=1``): building the rows takes a minute or two, too long for
``make test``. ``HUB_SCALE_DELIVERIES`` changes the size; ``HUB_SCALE_SCHEMA`` reuses a schema built
before with ``python -m benchmarks.scale_data --keep`` (and leaves it in place).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from benchmarks.scale_data import build, drop
from hub.context import Hub, build_hub
from tests.conftest import PG_URL, REDIS_URL, make_settings

#: Only ``make scale`` runs these (see the Makefile); ``make test`` does not even collect them.
collect_ignore_glob = [] if os.environ.get("HUB_SCALE") else ["test_*.py"]

DELIVERIES = int(os.environ.get("HUB_SCALE_DELIVERIES", "10000000"))


@pytest.fixture(scope="session")
def scale_schema() -> Iterator[str]:
    reused = os.environ.get("HUB_SCALE_SCHEMA")
    if reused:
        yield reused
        return
    schema = f"scale_{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    try:
        build(PG_URL, schema, DELIVERIES)
        print(f"\nscale: {DELIVERIES:,} deliveries built in {time.perf_counter() - started:.0f} s")
        yield schema
    finally:
        drop(PG_URL, schema)


@pytest.fixture
async def scale_hub(scale_schema: str) -> AsyncIterator[Hub]:
    """A hub on the big schema, without Redis (nothing here queues jobs); email is its one channel."""
    # The shipped lease and staleness (the suite's own are seconds long, for quick crash tests).
    settings = make_settings(
        PG_URL, REDIS_URL, 2525, scale_schema, lease_seconds=60.0, stale_after_seconds=300.0
    )
    hub = await build_hub(settings, with_redis=False)
    try:
        yield hub
    finally:
        await hub.close()
