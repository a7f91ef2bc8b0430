"""Request plumbing: the hub instance, API-key auth, idempotency, error bodies."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Annotated, Any

from Crypto.Cipher import AES
from Crypto.Hash import SHA256
from Crypto.Protocol.KDF import HKDF
from fastapi import Depends, Header, HTTPException, Request
from fastapi.responses import JSONResponse
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.api import limits
from hub.applicants import Within
from hub.clock import utcnow
from hub.context import Hub
from hub.keys import authenticate, note_use
from hub.store.models import ApiKey, IdempotentRequest


async def get_hub(request: Request) -> Hub:
    """Async: a sync dependency would cost every request a hop through the thread pool."""
    return request.app.state.hub


HubDep = Annotated[Hub, Depends(get_hub)]


async def refuse_bad_text(request: Request) -> None:
    """Refuse (422) a request whose path, query, headers or JSON body hold a NUL or a lone surrogate.

    PostgreSQL cannot store either in a text column and would fail the request with a 500; SQLite
    would keep them and give them back to staff screens. No field of this API may hold one.
    """
    where = _bad_text_in(request)
    if where is None:
        body = await request.body()
        if body:
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = body.decode("latin-1")
            where = _bad_text(parsed, "")
            if where == "":
                where = "body"
    if where is not None:
        raise HTTPException(
            422, f"{where}: holds a NUL character or an unpaired surrogate, which no field may contain"
        )


def _bad_text_in(request: Request) -> str | None:
    for name, value in request.path_params.items():
        if unusable_text(str(value)):
            return f"path.{name}"
    if unusable_text(request.url.path):
        return "path"
    for name, value in request.query_params.multi_items():
        if unusable_text(name) or unusable_text(value):
            return f"query.{name}"
    for name, value in request.headers.items():
        if unusable_text(value):
            return f"header.{name}"
    return None


def _bad_text(value: Any, where: str) -> str | None:
    """The dotted path (``contacts.0.address``) of the first bad string in a parsed JSON body."""
    if isinstance(value, str):
        return where if unusable_text(value) else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        inner = f"{where}.{key}" if where else str(key)
        if isinstance(key, str) and unusable_text(key):
            return inner
        found = _bad_text(item, inner)
        if found is not None:
            return found
    return None


def unusable_text(text: str) -> bool:
    """A NUL or a lone surrogate: text no database column or log line can hold (answered 4xx)."""
    if "\x00" in text:
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


async def api_key(
    request: Request,
    hub: HubDep,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> ApiKey:
    """The caller's key; a client that presented too many wrong keys lately gets 429 (``limits``)."""
    presented = x_api_key or (
        authorization[7:] if authorization and authorization.startswith("Bearer ") else None
    )
    if not presented:
        raise HTTPException(401, "missing API key (header 'Authorization: Bearer <key>' or 'X-API-Key')")
    who = limits.client(hub, request)
    await limits.key_guesses_left(hub, who)
    key = await authenticate(hub, presented) if _plausible_key(presented) else None
    if key is None:
        await limits.wrong_key(hub, who)
        raise HTTPException(401, "API key not recognised or revoked")
    await note_use(hub, key)
    return key


def _plausible_key(presented: str) -> bool:
    """Keys are ``hub_<prefix>_<secret>`` in ASCII: anything else is wrong without a database lookup."""
    return presented.isascii() and presented.isprintable() and len(presented) <= 200


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

    The answer may hold a receipt's PIN and deep-link code, so it is kept sealed (``_seal``) and the row
    names the Idempotency-Key only by its hash: the database alone gives back neither.
    """
    if not idempotency_key:
        status, payload = await run(None)
        return JSONResponse(payload, status_code=status)
    if len(idempotency_key) > 200:
        raise HTTPException(422, "Idempotency-Key is longer than 200 characters")
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()
    ttl = timedelta(hours=hub.settings.api.idempotency_ttl_hours)
    row_key = idempotency_row_key(idempotency_key)
    where = (IdempotentRequest.api_key_id == key.id, IdempotentRequest.key == row_key)
    async with hub.db.transaction() as session:
        await session.execute(delete(IdempotentRequest).where(IdempotentRequest.created_at < utcnow() - ttl))
        claimed = await session.execute(
            hub.db.insert(IdempotentRequest)
            .values(
                api_key_id=key.id,
                key=row_key,
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
        replayed = _unseal(hub.verification_keys, idempotency_key, f"{key.id}:{row_key}", seen.response)
        return JSONResponse(replayed, status_code=seen.status_code, headers={"Idempotent-Replayed": "true"})

    def sealed(payload: dict[str, Any]) -> dict[str, Any]:
        return _seal(hub.secret, idempotency_key, f"{key.id}:{row_key}", payload)

    async def within(work_session: AsyncSession, facts: dict[str, Any]) -> None:
        assert answer is not None
        status, payload = answer(facts)
        await work_session.execute(
            update(IdempotentRequest).where(*where).values(status_code=status, response=sealed(payload))
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
            .values(status_code=status, response=sealed(payload))
        )
    return JSONResponse(payload, status_code=status)


def idempotency_row_key(idempotency_key: str) -> str:
    """What the database keeps of an Idempotency-Key: a hash, so the key stays a secret of the caller."""
    return hashlib.sha256(f"idempotency:{idempotency_key}".encode()).hexdigest()


def _cipher_key(deployment_key: bytes, idempotency_key: str) -> bytes:
    """AES-256 key of one saved answer: both the deployment key and the caller's Idempotency-Key."""
    return HKDF(deployment_key, 32, b"hub-idempotent-answer-v1", SHA256, context=idempotency_key.encode())


def _seal(deployment_key: bytes, idempotency_key: str, row: str, payload: dict[str, Any]) -> dict[str, Any]:
    """A saved answer as ``{"sealed": base64(nonce, ciphertext, tag)}`` (AES-GCM, bound to its row)."""
    nonce = secrets.token_bytes(12)
    cipher = AES.new(_cipher_key(deployment_key, idempotency_key), AES.MODE_GCM, nonce=nonce)
    cipher.update(row.encode())
    text, tag = cipher.encrypt_and_digest(json.dumps(payload, separators=(",", ":")).encode())
    return {"sealed": base64.b64encode(nonce + text + tag).decode()}


def _unseal(keys: tuple[bytes, ...], idempotency_key: str, row: str, saved: dict[str, Any]) -> Any:
    """The saved answer, opened with the current or a previous deployment key."""
    if "sealed" not in saved:  # saved in clear before answers were sealed (no PIN: migration 0004)
        return saved
    raw = base64.b64decode(saved["sealed"])
    for deployment_key in keys:
        cipher = AES.new(_cipher_key(deployment_key, idempotency_key), AES.MODE_GCM, nonce=raw[:12])
        cipher.update(row.encode())
        try:
            return json.loads(cipher.decrypt_and_verify(raw[12:-16], raw[-16:]))
        except ValueError:
            continue
    raise HTTPException(
        409,
        "this request was done, but its saved answer was sealed with a deployment key the hub no longer "
        "has (hub secret rotate --drop-old): look the result up instead of retrying",
    )
