"""PTB's HTTP transport on aiohttp (PTB ships httpx only), chosen by the ``http_client`` setting."""

from __future__ import annotations

import logging
from typing import Any

from telegram.error import (
    NetworkError,
    TimedOut,
)
from telegram.request import BaseRequest, HTTPXRequest, RequestData

log = logging.getLogger("channels.telegram")


class AiohttpRequest(BaseRequest):
    """PTB's HTTP transport on aiohttp instead of httpx.

    Measured here (benchmarks/telegram.py, docs/benchmarks.md): PTB on httpx managed about 300
    sendMessage calls a second per process, and fewer the more calls were in flight at once (about 100/s
    with 16 waiting on a pool of 4), where aiohttp sends thousands. At 30/s either will do; a paid
    broadcast at up to 1000/s needs this. Errors map as PTB's own transport maps them.
    """

    __slots__ = ("_connections", "_session", "_timeout")

    def __init__(self, connections: int = 8, timeout: float = 10.0) -> None:
        self._connections = connections
        self._timeout = timeout
        self._session: Any = None

    @property
    def read_timeout(self) -> float | None:
        return self._timeout

    async def initialize(self) -> None:
        import aiohttp

        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._connections, keepalive_timeout=30),
                headers={"User-Agent": self.USER_AGENT},
            )

    async def shutdown(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: Any = BaseRequest.DEFAULT_NONE,
        write_timeout: Any = BaseRequest.DEFAULT_NONE,
        connect_timeout: Any = BaseRequest.DEFAULT_NONE,
        pool_timeout: Any = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        import aiohttp

        if self._session is None:
            raise RuntimeError("This AiohttpRequest is not initialized!")

        def pick(value: Any) -> float | None:
            # PTB passes its DefaultValue sentinel when the caller gave no timeout.
            return value if value is None or isinstance(value, int | float) else self._timeout

        read, connect, pool = pick(read_timeout), pick(connect_timeout), pick(pool_timeout)
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=None if pool is None or connect is None else pool + connect,
            sock_connect=connect,
            sock_read=read,
        )
        data: Any = None
        if request_data is not None and request_data.contains_files:
            form = aiohttp.FormData()
            for name, value in request_data.multipart_data.items():
                if isinstance(value, tuple):
                    filename, content, mimetype = (*value, None)[:3]
                    form.add_field(name, content, filename=filename, content_type=mimetype)
                else:
                    form.add_field(name, value)
            data = form
        elif request_data is not None:
            data = request_data.json_parameters
        try:
            async with self._session.request(method, url, data=data, timeout=timeout) as response:
                return response.status, await response.read()
        except TimeoutError as err:
            raise TimedOut from err
        except aiohttp.ClientError as err:
            raise NetworkError(f"aiohttp.{err.__class__.__name__}: {err}") from err


def _make_request(client: str, connections: int, timeout: float) -> BaseRequest:
    if client == "aiohttp":
        try:
            import aiohttp  # noqa: F401
        except ImportError:
            log.warning("telegram: aiohttp is not installed; sending through httpx")
        else:
            return AiohttpRequest(connections=connections, timeout=timeout)
    return HTTPXRequest(
        connection_pool_size=connections,
        read_timeout=timeout,
        write_timeout=timeout,
        connect_timeout=timeout,
        pool_timeout=timeout,
    )
