"""Every error the API answers has one shape, ``{"error": "what is wrong"}``, as the README promises.

``HubError`` carries its own status (422 invalid input, 404 not found, 409 conflict, 503 unavailable).
A database or Redis that does not answer is a 503 with ``Retry-After``, never a 500: the intake system
retries with its Idempotency-Key and nothing is done twice.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from hub.errors import HubError
from hub.logs import log
from hub.queue import REDIS_DOWN

RETRY_AFTER = 5


def install(app: FastAPI) -> None:
    """Register the handlers that give every error response the ``{"error": ...}`` shape."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no such endpoint: {request.method} {request.url.path} (see /docs)"
        elif exc.status_code == 405:
            detail = f"method {request.method} is not allowed on {request.url.path} (see /docs)"
        return JSONResponse({"error": detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        messages = [f"{_where(e)}: {_msg(e)}" for e in errors]
        return JSONResponse({"error": "; ".join(messages), "details": jsonable(errors)}, status_code=422)

    @app.exception_handler(HubError)
    async def hub_error(request: Request, exc: HubError) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
        return JSONResponse({"error": str(exc)}, status_code=exc.status, headers=headers)

    for down in (*REDIS_DOWN, OperationalError, InterfaceError):
        app.add_exception_handler(down, _unavailable)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("api_internal_error", path=request.url.path)
        return JSONResponse({"error": "internal error; it has been logged"}, status_code=500)


async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, RedisError):
        what = "the queue (Redis)"
    elif isinstance(exc, OperationalError | InterfaceError):
        what = "the database"
    else:
        what = "a service the hub needs (database or Redis)"
    log.warning("api_dependency_down", path=request.url.path, down=what, error=str(exc)[:200])
    return JSONResponse(
        {"error": f"{what} is not answering; nothing was done, try again shortly"},
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER)},
    )


def _where(error: Any) -> str:
    return ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"


def _msg(error: Any) -> str:
    msg = str(error.get("msg", "invalid"))
    return msg.removeprefix("Value error, ")


def jsonable(errors: Any) -> Any:
    return [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in errors]
