"""What ``benchmarks.hosts`` measures besides CPU: Redis commands, PostgreSQL connections, worker profiles."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any


def profile_on_signal() -> Any:
    """A CPU-time cProfile started by SIGUSR1 (sent when the round's clock starts): start-up left out."""
    import cProfile
    import signal

    profiler = cProfile.Profile(time.process_time)  # CPU, not wall: 8 processes share 2 cores
    signal.signal(signal.SIGUSR1, lambda *_: profiler.enable())
    return profiler


def redis_calls(port: int) -> Counter[str]:
    """Commands the private Redis has run so far, by command (``INFO commandstats``): the harness's own
    included, and those a Lua script runs counted one by one (https://redis.io/commands/info/)."""
    import redis

    with redis.Redis(port=port) as r:
        stats = r.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()})


async def count_connections(hub: Any, peak: list[int]) -> None:
    """The most PostgreSQL connections open at once during the round (every client of the server)."""
    from sqlalchemy import text

    while True:
        async with hub.db.session() as session:
            n = (await session.execute(text("SELECT count(*) FROM pg_stat_activity"))).scalar_one()
        peak[0] = max(peak[0], int(n))
        await asyncio.sleep(0.25)


async def connection_budget(hub: Any, workers: int) -> str | None:
    """A warning when ``workers`` processes could open more connections than PostgreSQL allows."""
    from sqlalchemy import text

    from hub.store.db import pool_sizes

    q = hub.settings.queue
    sizes = pool_sizes(q.urgent_jobs + q.bulk_jobs)
    each = sizes["pool_size"] + sizes["max_overflow"]
    async with hub.db.session() as session:
        allowed = int((await session.execute(text("SHOW max_connections"))).scalar_one())
        used = int((await session.execute(text("SELECT count(*) FROM pg_stat_activity"))).scalar_one())
    if used + workers * each <= allowed:
        return None
    return (
        f"{workers} workers may open {workers} x {each} connections, PostgreSQL allows {allowed} "
        f"({used} in use): lower --queue bulk_jobs/urgent_jobs if a round fails with 'too many clients'"
    )


def top(by_command: dict[str, int]) -> str:
    return ", ".join(f"{name} {n:,}" for name, n in list(by_command.items())[:20])


def keep_profiles(sink: Path, into: str, workers: int) -> None:
    """The workers' profiles merged into one file per round: ``<into>/hosts-<W>.prof``."""
    import pstats

    files = sorted(str(p) for p in sink.glob("profile-*.prof"))
    if files:
        Path(into).mkdir(parents=True, exist_ok=True)
        pstats.Stats(*files).dump_stats(str(Path(into) / f"hosts-{workers}.prof"))
