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
from pydantic import BaseModel, Field
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
        detail, status = exc.detail, exc.status_code
        if status == 400 and detail == "There was an error parsing the body":
            # FastAPI's answer to a body that is not UTF-8 JSON: invalid input like any other (422).
            return JSONResponse({"error": "body: is not JSON in UTF-8"}, status_code=422)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no such endpoint: {request.method} {request.url.path} (see /docs)"
        elif exc.status_code == 405:
            detail = f"method {request.method} is not allowed on {request.url.path} (see /docs)"
        return JSONResponse({"error": detail}, status_code=status, headers=exc.headers)

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


# --------------------------------------------------------------------------------------------------------
# The error responses each route documents in OpenAPI


class ErrorBody(BaseModel):
    """Every error the API answers."""

    error: str = Field(description="What is wrong, naming the field, header or thing concerned")


class InvalidBody(ErrorBody):
    """A 422: what the request got wrong; ``details`` lists each field's problem when FastAPI found it."""

    details: list[dict[str, Any]] | None = None


_RETRY = {
    "Retry-After": {"description": "Seconds after which trying again may work", "schema": {"type": "integer"}}
}

_ERRORS: dict[int, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "The request could not be read"},
    401: {"model": ErrorBody, "description": "Missing, unknown or revoked API key"},
    403: {"model": ErrorBody, "description": "The key's role or office does not cover this"},
    404: {"model": ErrorBody, "description": "Not found, or outside the key's office (the two look alike)"},
    409: {
        "model": ErrorBody,
        "description": "Clashes with the current state, or the same request is running",
    },
    422: {"model": InvalidBody, "description": "Invalid input; the error names the field"},
    429: {"model": ErrorBody, "description": "Too many requests from this client", "headers": _RETRY},
    503: {"model": ErrorBody, "description": "The database or Redis is not answering", "headers": _RETRY},
}

#: What every route with an API key can answer besides its own errors.
KEYED = (401, 403, 422, 429, 503)


def documented(
    *statuses: int, html: bool = False, **override: dict[str, Any]
) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: the listed error statuses, each with its body and description.

    ``html``: the route answers pages, but its errors are JSON all the same (FastAPI would list a model
    under the route's own media type). ``override`` replaces one entry by status (``_400={...}``).
    """
    answer: dict[int | str, dict[str, Any]] = {}
    for code in statuses:
        entry = dict(_ERRORS[code])
        if html:
            schema = entry.pop("model").model_json_schema()
            entry["content"] = {"application/json": {"schema": schema}}
        answer[code] = entry
    for key, value in override.items():
        answer[int(key.lstrip("_"))] = value
    return answer


#: /readyz answers its usual body with ``error`` added when a part is down.
UNHEALTHY: dict[str, Any] = {
    "description": "The database or Redis is down, or the schema is not this release's; the body says which",
    "headers": _RETRY,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": {"type": "string"}},
                "additionalProperties": True,
            }
        }
    },
}
