"""Request plumbing: the hub instance, API-key auth, idempotency, error bodies."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Annotated, Any

from fastapi import Depends, Header, HTTPException, Request
from fastapi.responses import JSONResponse
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.applicants import Within
from hub.clock import utcnow
from hub.context import Hub
from hub.keys import authenticate
from hub.store.models import ApiKey, IdempotentRequest


def get_hub(request: Request) -> Hub:
    return request.app.state.hub


HubDep = Annotated[Hub, Depends(get_hub)]


async def api_key(
    hub: HubDep,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> ApiKey:
    presented = x_api_key or (
        authorization[7:] if authorization and authorization.startswith("Bearer ") else None
    )
    if not presented:
        raise HTTPException(401, "missing API key (header 'Authorization: Bearer <key>' or 'X-API-Key')")
    key = await authenticate(hub, presented)
    if key is None:
        raise HTTPException(401, "API key not recognised or revoked")
    return key


def role(*allowed: str) -> Callable[[ApiKey], Awaitable[ApiKey]]:
    async def check(key: Annotated[ApiKey, Depends(api_key)]) -> ApiKey:
        if key.role not in allowed:
            raise HTTPException(
                403, f"this endpoint needs a key with role {' or '.join(allowed)}, not {key.role}"
            )
        return key

    return check


StaffKey = Annotated[ApiKey, Depends(role("staff"))]
IntakeKey = Annotated[ApiKey, Depends(role("intake"))]
AnyKey = Annotated[ApiKey, Depends(api_key)]


Answer = Callable[[dict[str, Any]], tuple[int, dict[str, Any]]]
Run = Callable[[Within | None], Awaitable[tuple[int, dict[str, Any]]]]


async def idempotent(
    hub: Hub,
    key: ApiKey,
    idempotency_key: str | None,
    body: Any,
    run: Run,
    answer: Answer | None = None,
) -> JSONResponse:
    """Run once per (API key, Idempotency-Key); a repeat gets the first answer, a changed body a 422.

    A placeholder row is claimed before the work starts, so two concurrent requests with one key cannot
    both run: the second gets 409 until the first has answered. When the work takes ``within`` (given
    with ``answer``, which turns what it stored into the response), the answer is written in the work's
    own transaction: the request either completes with its record or leaves nothing behind, and a retry
    with the same key can never do the work twice.
    """
    if not idempotency_key:
        status, payload = await run(None)
        return JSONResponse(payload, status_code=status)
    if len(idempotency_key) > 200:
        raise HTTPException(422, "Idempotency-Key is longer than 200 characters")
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()
    ttl = timedelta(hours=hub.settings.api.idempotency_ttl_hours)
    where = (IdempotentRequest.api_key_id == key.id, IdempotentRequest.key == idempotency_key)
    async with hub.db.transaction() as session:
        await session.execute(delete(IdempotentRequest).where(IdempotentRequest.created_at < utcnow() - ttl))
        claimed = await session.execute(
            hub.db.insert(IdempotentRequest)
            .values(
                api_key_id=key.id,
                key=idempotency_key,
                request_hash=digest,
                status_code=0,
                response={},
                created_at=utcnow(),
            )
            .on_conflict_do_nothing(index_elements=["api_key_id", "key"])
        )
        seen = None if claimed.rowcount else await session.scalar(select(IdempotentRequest).where(*where))
    if seen is not None:
        if seen.request_hash != digest:
            raise HTTPException(422, "Idempotency-Key was already used with a different request body")
        if seen.status_code == 0:
            raise HTTPException(409, "a request with this Idempotency-Key is still being processed")
        return JSONResponse(
            seen.response, status_code=seen.status_code, headers={"Idempotent-Replayed": "true"}
        )

    async def within(work_session: AsyncSession, facts: dict[str, Any]) -> None:
        assert answer is not None
        status, payload = answer(facts)
        await work_session.execute(
            update(IdempotentRequest).where(*where).values(status_code=status, response=payload)
        )

    try:
        status, payload = await run(within if answer is not None else None)
    except BaseException:
        # Only a placeholder is released: an answer written with the work means the work committed.
        async with hub.db.transaction() as session:
            await session.execute(delete(IdempotentRequest).where(*where, IdempotentRequest.status_code == 0))
        raise
    async with hub.db.transaction() as session:
        await session.execute(
            update(IdempotentRequest)
            .where(*where, IdempotentRequest.status_code == 0)
            .values(status_code=status, response=payload)
        )
    return JSONResponse(payload, status_code=status)
