"""The ceiling of benchmarks/whatsapp.py: a bare httpx loop sending the hub's own template requests.

No database, no queue, no hub: ``processes`` processes (``python -m benchmarks.whatsapp_bare ARGS``), each
with one ``httpx.AsyncClient`` of ``connections`` connections and as many tasks, pace themselves locally at
their share of the limit and post the request body the hub sent (as the fake recorded it), each to
another recipient, into the same fake. No retries: what the fake refuses is counted, not sent again.
"""

from __future__ import annotations

import asyncio
import copy
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.telegram import arrival_stats

ROOT = Path(__file__).resolve().parent.parent


def request_body(sent: Any, to: str, n: int) -> dict[str, Any]:
    """The template request the hub sent (as the fake recorded it), to another recipient."""
    body = copy.deepcopy(sent.payload)
    body["to"] = to
    if "biz_opaque_callback_data" in body:
        body["biz_opaque_callback_data"] = str(n)
    return body


def bare_sender(
    url: str,
    token: str,
    body_file: str,
    first: int,
    count: int,
    step: int,
    rate: float,
    connections: int,
    start_at: float,
) -> int:
    """Send ``count`` templates (to ``first``, ``first + step``, ...) as fast as ``rate`` allows."""
    import httpx

    template = json.loads(Path(body_file).read_text(encoding="utf-8"))

    async def run() -> int:
        accepted = 0
        interval = 1.0 / rate
        next_slot = start_at
        numbers = [first + step * n for n in range(count)]
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(limits=limits, headers=headers, timeout=30.0) as client:

            async def one() -> None:
                nonlocal accepted, next_slot
                while numbers:
                    number = numbers.pop()
                    slot = next_slot  # pace locally, one send per interval: no bursts
                    next_slot = max(next_slot, time.time()) + interval
                    delay = slot - time.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    body = {**template, "to": str(number)}
                    if "biz_opaque_callback_data" in body:
                        body["biz_opaque_callback_data"] = str(number)
                    response = await client.post(url, json=body)
                    accepted += response.status_code == 200

            await asyncio.gather(*(one() for _ in range(connections)))
        return accepted

    return asyncio.run(run())


def measure_ceiling(
    fake: Any,
    sample: Any,
    count: int,
    first: int,
    directory: Path,
    connections: int,
    limit: float,
    processes: int = 2,
) -> dict[str, Any]:
    """What the fake accepts from the bare loop (numbers ``first + 1`` on), paced at ``limit`` in total."""
    url = f"{fake.base_url}/{fake.api_version}/{fake.phone_number_id}/messages"
    body_file = directory / f"body-{connections}.json"
    body_file.write_text(json.dumps(request_body(sample, "0", 0)), encoding="utf-8")
    limited_before = fake.rate_limit_errors
    start_at = time.time() + 3.0  # every process starts together, after its imports
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.whatsapp_bare",
                url,
                fake.token,
                str(body_file),
                str(first + 1 + k),
                str(len(range(k, count, processes))),
                str(processes),
                str(limit / processes),
                str(connections),
                repr(start_at),
            ],
            cwd=ROOT,
        )
        for k in range(processes)
    ]
    for proc in procs:
        try:
            proc.wait(timeout=max(120.0, count / 20))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    low, high = str(first + 1), str(first + count)
    sends = [m for m in fake.messages() if low <= m.to <= high and len(m.to) == len(low)]
    return {
        **arrival_stats([m.at for m in sends]),
        "connections": connections,
        "rate_limit_errors": fake.rate_limit_errors - limited_before,
    }


def main(argv: list[str] | None = None) -> None:
    """One process of the loop (see ``measure_ceiling``)."""
    url, token, body, first, count, step, rate, connections, start_at = argv or sys.argv[1:]
    bare_sender(
        url, token, body, int(first), int(count), int(step), float(rate), int(connections), float(start_at)
    )


if __name__ == "__main__":
    main()
