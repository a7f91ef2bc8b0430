"""An asyncio server in a thread of its own, so sync and async tests and workers in other processes can
all reach it: the lifecycle every loopback fake shares (Telegram's Bot API, WhatsApp's Cloud API, the fault
proxy). A subclass serves in ``_serve(sock)``, cleans up in ``_shutdown()`` and, if it can, says in
``_probe()`` when its first real request is answered."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any, Self


class ThreadedServer:
    #: The thread's name, for tracebacks and ``py-spy``.
    thread_name = "fake-server"
    port: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _serve(self, sock: socket.socket) -> None:
        raise NotImplementedError

    async def _shutdown(self) -> None:
        raise NotImplementedError

    def _probe(self) -> None:
        """Block until the server answers as its users will call it; the default trusts ``_serve``."""

    def start(self) -> Self:
        """Serve on a free port of 127.0.0.1 and return once ``_probe`` is satisfied."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._serve(sock))
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

        self._thread = threading.Thread(target=run, name=self.thread_name, daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError(f"{self.thread_name} did not start")
        if failure:
            raise RuntimeError(f"{self.thread_name} failed to start") from failure[0]
        self._probe()
        return self

    def stop(self) -> None:
        """Stop serving and join the thread; safe to call twice."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
        self._loop = self._thread = None


def wait_for_json(request: urllib.request.Request | str, answered: Callable[[Any], bool]) -> None:
    """Ask ``request`` until its JSON answer satisfies ``answered`` (10 s at most): a fake's ``_probe``."""
    deadline = time.monotonic() + 10
    while True:
        try:
            with urllib.request.urlopen(request, timeout=2) as resp:
                if answered(json.load(resp)):
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
        else:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{request!r} never answered as expected")
        time.sleep(0.02)
