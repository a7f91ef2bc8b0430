"""The plumbing of ``benchmarks.hosts``: namespaces and veth links, latency, the forwarder, child processes.

Everything it makes is named ``hubh*`` (namespaces ``hubhN``, links ``hubhNr``/``hubhNn``) so ``cleanup``
can find and remove it, a killed run's leftovers included.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "hubh"
SUBNET = "10.231"
PG_PORT = 5432
REDIS_PORT = 6379

# ---------------------------------------------------------------------------------------------------------
# The forwarder (root namespace): veth address -> 127.0.0.1, holding chunks for the delay if asked


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, data = await chunks.get()
            if not data:
                break
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()

    sender = asyncio.create_task(deliver())
    try:
        while data := await reader.read(65536):
            chunks.put_nowait((loop.time() + delay, data))
    except OSError:
        pass
    chunks.put_nowait((0.0, b""))
    with contextlib.suppress(OSError):
        await sender
        writer.close()


async def _forward(pairs: list[tuple[str, int, str, int]], delay: float) -> None:
    async def handler(target_host: str, target_port: int) -> Any:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                up_reader, up_writer = await asyncio.open_connection(target_host, target_port)
            except OSError:
                writer.close()
                return
            await asyncio.gather(_pipe(reader, up_writer, delay), _pipe(up_reader, writer, delay))

        return serve

    servers = [
        await asyncio.start_server(await handler(th, tp), host, port, reuse_address=True)
        for host, port, th, tp in pairs
    ]
    print("ready", flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


def forward_entry(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--delay", type=float, default=0.0)
    p.add_argument("pairs", nargs="+", help="LISTEN_HOST:PORT=TARGET_HOST:PORT")
    args = p.parse_args(argv)
    pairs = []
    for pair in args.pairs:
        listen, _, target = pair.partition("=")
        lh, _, lp = listen.rpartition(":")
        th, _, tp = target.rpartition(":")
        pairs.append((lh, int(lp), th, int(tp)))
    asyncio.run(_forward(pairs, args.delay))


# ---------------------------------------------------------------------------------------------------------
# Namespaces, links, latency


def run_ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def root_address(i: int) -> str:
    return f"{SUBNET}.{i}.1"


def host_address(i: int) -> str:
    return f"{SUBNET}.{i}.2"


def cleanup() -> list[str]:
    """Remove every namespace and root-side veth this harness makes (a killed run's leftovers too)."""
    removed = []
    for line in run_ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        if name.startswith(PREFIX):
            run_ip("netns", "del", name, check=False)
            removed.append(name)
    for line in run_ip("-o", "link", "show", check=False).stdout.splitlines():
        dev = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
        if dev.startswith(PREFIX):
            run_ip("link", "del", dev, check=False)
            removed.append(dev)
    return removed


def make_hosts(count: int, delay_ms: float) -> str:
    """``count`` namespaces linked to the root namespace; returns how latency is added: netem or forwarder."""
    latency = "netem" if delay_ms > 0 else "none"
    for i in range(count):
        ns, root_dev, host_dev = f"{PREFIX}{i}", f"{PREFIX}{i}r", f"{PREFIX}{i}n"
        run_ip("netns", "add", ns)
        run_ip("link", "add", root_dev, "type", "veth", "peer", "name", host_dev)
        run_ip("link", "set", host_dev, "netns", ns)
        run_ip("addr", "add", f"{root_address(i)}/30", "dev", root_dev)
        run_ip("link", "set", root_dev, "up")
        run_ip("netns", "exec", ns, "ip", "addr", "add", f"{host_address(i)}/30", "dev", host_dev)
        run_ip("netns", "exec", ns, "ip", "link", "set", host_dev, "up")
        run_ip("netns", "exec", ns, "ip", "link", "set", "lo", "up")
        if latency == "netem":
            ok = all(
                subprocess.run(
                    [*pre, "tc", "qdisc", "add", "dev", dev, "root", "netem", "delay", f"{delay_ms}ms"],
                    capture_output=True,
                ).returncode
                == 0
                for pre, dev in ((["ip", "netns", "exec", ns], host_dev), ([], root_dev))
            )
            if not ok:  # no sch_netem in this kernel: the forwarder holds the chunks instead
                latency = "forwarder"
                for j in range(i + 1):
                    subprocess.run(
                        ["tc", "qdisc", "del", "dev", f"{PREFIX}{j}r", "root"], capture_output=True
                    )
    return latency


# ---------------------------------------------------------------------------------------------------------
# Processes


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    """A child process whose output goes to a log file; ``wait_for`` waits for a line in it."""

    def __init__(self, cmd: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self.lines: list[str] = []
        self.seen = threading.Condition()
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT
        )
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.log.open("w") as out:
            for line in self.proc.stdout:
                out.write(line)
                with self.seen:
                    self.lines.append(line)
                    self.seen.notify_all()

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self.seen:
            while not any(text in line for line in self.lines):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{self.log.name}: no {text!r}: {''.join(self.lines[-20:])}")
                self.seen.wait(0.2)

    def stop(self, timeout: float = 30) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.thread.join(timeout=5)


def cpu_seconds(pids: Sequence[int]) -> float:
    import psutil

    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
    return total


@contextlib.contextmanager
def private_redis(scratch: Path) -> Iterator[tuple[int, Proc]]:
    port = free_port()
    proc = Proc(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        scratch / "redis.log",
    )
    try:
        proc.wait_for("Ready to accept connections", 30)
        yield port, proc
    finally:
        proc.stop()


def write_settings(path: Path, ov: dict[str, Any], host: int) -> Path:
    """The worker's settings file: the run's database and Redis, reached through host ``host``'s link."""
    from benchmarks.telegram import write_settings as write

    db = ov["database"]
    url = (
        db["url"]
        .replace("@127.0.0.1:", f"@{root_address(host)}:")
        .replace("@localhost:", f"@{root_address(host)}:")
    )
    return write(
        path,
        {
            "hub": ov["hub"],
            "database": {"url": url, "schema": db.get("schema") or None},
            "redis": {
                "url": f"redis://{root_address(host)}:{REDIS_PORT}/0",
                "embedded_fallback": False,
                "key_prefix": ov["redis"]["key_prefix"],
            },
            "queue": ov["queue"],
            "log": {"level": "WARNING"},
            "channels.email": {"enabled": False},
            "channels.null": {"enabled": True},
        },
    )
