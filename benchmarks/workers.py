"""The hub's arq workers in processes of their own (``spawn``), as ``hub worker`` runs them in a deployment,
with optional cProfile files and per-step timers (the breakdown in the pipeline's notes)."""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import os
import queue as queue_mod
import subprocess
import time
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, make_settings, quiet_logs, resolve


def _hub_process(
    ov: dict[str, Any],
    channels: str | None,
    lanes: tuple[str, ...],
    cron: bool,
    stop: Any,
    ready: Any,
    profile_path: str | None,
    breakdown_path: str | None,
) -> None:
    quiet_logs()
    profiler = None
    if profile_path:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    timings = _instrument() if breakdown_path else None
    try:
        asyncio.run(_serve(ov, channels, lanes, cron, stop, ready))
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile_path)
        if timings is not None and breakdown_path:
            Path(breakdown_path).write_text(json.dumps(timings))


async def _serve(
    ov: dict[str, Any], channels: str | None, lanes: tuple[str, ...], cron: bool, stop: Any, ready: Any
) -> None:
    from hub.context import build_hub
    from hub.delivery import build_workers

    hub = await build_hub(make_settings(ov), extra_channels=resolve(channels)() if channels else None)
    workers = build_workers(hub, cron=cron, lanes=lanes)
    tasks = [asyncio.create_task(w.main()) for w in workers]
    ready.put(os.getpid())
    try:
        while not stop.is_set():
            await asyncio.sleep(0.05)
            for task in tasks:
                if task.done():
                    task.result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await hub.close()


def _instrument() -> dict[str, list[float]]:
    """Wrap the hub's steps with wall-clock timers (benchmark-only monkeypatching, in the worker process).

    Wall time of awaited calls: concurrent jobs overlap, so the sums can exceed the elapsed time; the
    shares still say where jobs wait.
    """
    import functools

    from hub.delivery import jobs, plan, sender
    from hub.queue import Queue

    timings: dict[str, list[float]] = {}

    def wrap(owner: Any, name: str, label: str) -> None:
        original = getattr(owner, name)
        slot = timings.setdefault(label, [0.0, 0.0])

        @functools.wraps(original)
        async def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await original(*args, **kwargs)
            finally:
                slot[0] += time.perf_counter() - t0
                slot[1] += 1

        setattr(owner, name, timed)

    # The modules call these by their own names, so that is where they are wrapped.
    wrap(jobs, "send_batch", "send_batch (whole job)")
    wrap(jobs, "claim", "delivery.claim")
    wrap(sender, "record", "delivery.record")
    wrap(sender, "renew_lease", "delivery.renew_lease")
    wrap(plan, "plan_chunk", "delivery.plan_chunk")  # plan_and_enqueue calls it there
    wrap(Queue, "send_many", "Queue.send_many")
    return timings


class HubWorkers:
    """``count`` processes, each running the hub's arq workers (both lanes) as ``hub worker`` does."""

    def __init__(
        self,
        ov: dict[str, Any],
        *,
        channels: str | None = None,
        count: int = 1,
        lanes: tuple[str, ...] = ("urgent", "bulk"),
        cron: bool = True,
        profile_dir: Path | None = None,
        breakdown_dir: Path | None = None,
    ) -> None:
        self.ov, self.channels, self.count, self.lanes, self.cron = ov, channels, count, lanes, cron
        self.profile_dir, self.breakdown_dir = profile_dir, breakdown_dir
        self.ctx = mp.get_context("spawn")
        self.stop_event = self.ctx.Event()
        self.procs: list[Any] = []

    def profile_files(self) -> list[Path]:
        return sorted(self.profile_dir.glob("worker-*.prof")) if self.profile_dir else []

    def breakdown(self) -> dict[str, list[float]]:
        total: dict[str, list[float]] = {}
        for path in sorted(self.breakdown_dir.glob("worker-*.json")) if self.breakdown_dir else []:
            for label, (secs, calls) in json.loads(path.read_text()).items():
                slot = total.setdefault(label, [0.0, 0.0])
                slot[0] += secs
                slot[1] += calls
        return total

    def __enter__(self) -> HubWorkers:
        ready = self.ctx.Queue()
        for i in range(self.count):
            profile = str(self.profile_dir / f"worker-{i}.prof") if self.profile_dir else None
            breakdown = str(self.breakdown_dir / f"worker-{i}.json") if self.breakdown_dir else None
            proc = self.ctx.Process(
                target=_hub_process,
                args=(
                    self.ov,
                    self.channels,
                    self.lanes,
                    self.cron,
                    self.stop_event,
                    ready,
                    profile,
                    breakdown,
                ),
                name=f"hub-worker-{i}",
                daemon=True,
            )
            proc.start()
            self.procs.append(proc)
        deadline = time.monotonic() + 60
        started = 0
        while started < self.count:
            try:
                ready.get(timeout=0.5)
                started += 1
            except queue_mod.Empty:
                if any(not p.is_alive() for p in self.procs) or time.monotonic() > deadline:
                    self.__exit__(None, None, None)
                    raise RuntimeError("a hub worker process failed to start") from None
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        for proc in self.procs:
            proc.join(timeout=20)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
        self.procs.clear()

    def check(self) -> None:
        dead = [p.name for p in self.procs if not p.is_alive()]
        if dead:
            raise RuntimeError(f"hub worker process died: {', '.join(dead)}")


def profile_summary(files: list[Path], limit: int = 25) -> str:
    """The top functions by own time (tottime) across the worker profiles."""
    import io
    import pstats

    if not files:
        return ""
    out = io.StringIO()
    stats = pstats.Stats(*[str(f) for f in files], stream=out)
    stats.sort_stats("tottime").print_stats(limit)
    stats.sort_stats("cumulative").print_stats(limit)
    return out.getvalue()


class ServedProcess:
    """An HTTP server in a process of its own (the hub's API, a benchmark's server), up once ``/healthz``
    answers 200, terminated on exit."""

    def __init__(self, cmd: list[str], port: int, *, env: dict[str, str] | None = None, what: str) -> None:
        self.cmd, self.port, self.env, self.what = cmd, port, env, what
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServedProcess:
        import httpx

        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env=self.env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.what} exited with {self.proc.returncode}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.__exit__()
        raise RuntimeError(f"{self.what} did not answer /healthz within 60 s")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
