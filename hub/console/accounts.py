"""Staff accounts: argon2 passwords, sealed TOTP secrets, lock-out, one-time passwords.

Used by the console's pages and by ``hub users``. A password is kept only as an argon2id hash
(argon2-cffi's defaults); a TOTP secret only sealed with AES-GCM under a key derived from the deployment
secret and bound to its user (like saved API answers, ``hub.api.deps._seal``): the database alone gives
back neither. ``MAX_FAILURES`` wrong passwords or codes in a row lock an account for ``LOCK_MINUTES``.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from Crypto.Cipher import AES
from Crypto.Hash import SHA256
from Crypto.Protocol.KDF import HKDF
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.clock import utcnow
from hub.console.auth import Role
from hub.context import Hub
from hub.errors import InvalidInput
from hub.store.models import Office, StaffSession, StaffUser

#: Wrong passwords or TOTP codes in a row before an account locks ...
MAX_FAILURES = 5
#: ... for this long (an admin's password reset unlocks it at once).
LOCK_MINUTES = 15
MIN_PASSWORD = 10
TOTP_ISSUER = "Disdukcapil Hub"

_hasher = PasswordHasher()


@functools.cache
def _dummy() -> str:
    """Verified against when the email is unknown, so a wrong email costs as long as a wrong password.

    Made on first use, not at import: every `hub` command imports this module.
    """
    return _hasher.hash("not-a-password-" + secrets.token_hex(8))


class AccountError(InvalidInput):
    """A bad account request (unknown office, taken email, ...): ``field`` names the form field."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


def one_time_password() -> str:
    """16 URL-safe characters (96 bits): read aloud or copied once, then changed at first sign-in."""
    return secrets.token_urlsafe(12)


def normal_email(text: str) -> str:
    try:
        return validate_email(text.strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError:
        raise AccountError(f"not a valid email address: {text!r}", "email") from None


def password_problem(password: str, email: str) -> str | None:
    """The text key of what is wrong with a new password, or None."""
    if len(password) < MIN_PASSWORD:
        return "password.too_short"
    if password.strip().lower() == email.lower():
        return "password.same_as_email"
    return None


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def password_matches(user: StaffUser | None, password: str) -> bool:
    try:
        return _hasher.verify(user.password_hash if user else _dummy(), password) and user is not None
    except (VerificationError, InvalidHashError):
        return False


# -- TOTP secrets, sealed ------------------------------------------------------------------------------


def _cipher_key(deployment_key: bytes, staff_id: int) -> bytes:
    return HKDF(deployment_key, 32, b"hub-staff-totp-v1", SHA256, context=f"staff:{staff_id}".encode())


def seal_totp(deployment_key: bytes, staff_id: int, secret: str) -> str:
    nonce = secrets.token_bytes(12)
    cipher = AES.new(_cipher_key(deployment_key, staff_id), AES.MODE_GCM, nonce=nonce)
    text, tag = cipher.encrypt_and_digest(secret.encode())
    return "v1:" + base64.b64encode(nonce + text + tag).decode()


def unseal_totp(keys: tuple[bytes, ...], staff_id: int, sealed: str) -> str:
    raw = base64.b64decode(sealed.removeprefix("v1:"))
    for deployment_key in keys:
        cipher = AES.new(_cipher_key(deployment_key, staff_id), AES.MODE_GCM, nonce=raw[:12])
        try:
            return cipher.decrypt_and_verify(raw[12:-16], raw[-16:]).decode()
        except ValueError:
            continue
    raise ValueError("TOTP secret sealed with a deployment key the hub no longer has")


def totp_uri(secret: str, email: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=TOTP_ISSUER)


def totp_step(secret: str, code: str, after: int | None, now: float | None = None) -> int | None:
    """The time step ``code`` belongs to (this one or a neighbour, for clock drift), once per step."""
    code = code.strip().replace(" ", "")
    if not (code.isascii() and code.isdigit() and len(code) == 6):
        return None
    totp = pyotp.TOTP(secret)
    current = int((now if now is not None else time.time()) // totp.interval)
    for step in (current - 1, current, current + 1):
        if (after is None or step > after) and secrets.compare_digest(totp.at(step * totp.interval), code):
            return step
    return None


# -- sign-in -------------------------------------------------------------------------------------------


@dataclass
class Attempt:
    """What a sign-in attempt found: ``ok``, ``wrong`` (counted) or ``locked`` (not even checked)."""

    outcome: str
    user: StaffUser | None


async def check_password(hub: Hub, email: str, password: str) -> Attempt:
    """Check a password and count a failure; the ``MAX_FAILURES``-th in a row locks the account.

    argon2 takes a sizeable fraction of a second on purpose: it runs in a thread, so the API and a
    worker sharing this event loop (``hub run``) carry on meanwhile.
    """
    try:
        email = normal_email(email)
    except AccountError:
        await asyncio.to_thread(password_matches, None, password)
        return Attempt("wrong", None)
    async with hub.db.session() as session:
        user = await session.scalar(select(StaffUser).where(StaffUser.email == email))
    if user is not None and not user.active:
        user = None
    if user is not None and user.locked_until is not None and user.locked_until > utcnow():
        return Attempt("locked", user)
    if not await asyncio.to_thread(password_matches, user, password):
        if user is not None:
            await _count_failure(hub, user.id)
        return Attempt("wrong", user)
    assert user is not None
    if not user.totp_sealed:
        await _succeeded(hub, user.id)
    return Attempt("ok", user)


async def _count_failure(hub: Hub, user_id: int) -> None:
    """One more failure, counted in the database itself (concurrent failures each count)."""
    async with hub.db.transaction() as session:
        where = StaffUser.id == user_id
        counted = StaffUser.failed_logins + 1
        await session.execute(update(StaffUser).where(where).values(failed_logins=counted))
        failures = await session.scalar(select(StaffUser.failed_logins).where(where))
        if failures is not None and failures >= MAX_FAILURES:
            until = utcnow() + timedelta(minutes=LOCK_MINUTES)
            await session.execute(update(StaffUser).where(where).values(failed_logins=0, locked_until=until))


async def _succeeded(hub: Hub, user_id: int) -> None:
    async with hub.db.transaction() as session:
        await session.execute(
            update(StaffUser).where(StaffUser.id == user_id).values(failed_logins=0, locked_until=None)
        )


async def check_totp(hub: Hub, user_id: int, code: str) -> Attempt:
    """Check the second factor; a wrong code counts toward the same lock-out as a wrong password.

    A code is taken by a conditional update of ``totp_last_step``: of two requests racing with one
    code, one signs in and the other is refused.
    """
    async with hub.db.session() as session:
        user = await session.get(StaffUser, user_id)
    if user is None or not user.active or not user.totp_sealed:
        return Attempt("wrong", None)
    if user.locked_until is not None and user.locked_until > utcnow():
        return Attempt("locked", user)
    secret = unseal_totp(hub.verification_keys, user.id, user.totp_sealed)
    step = totp_step(secret, code, user.totp_last_step)
    if step is not None:
        async with hub.db.transaction() as session:
            taken = await session.execute(
                update(StaffUser)
                .where(
                    StaffUser.id == user_id,
                    or_(StaffUser.totp_last_step.is_(None), StaffUser.totp_last_step < step),
                )
                .values(totp_last_step=step, failed_logins=0, locked_until=None)
            )
        if taken.rowcount == 1:
            return Attempt("ok", user)
    await _count_failure(hub, user_id)
    return Attempt("wrong", user)


# -- changes -------------------------------------------------------------------------------------------


async def create_user(
    session: AsyncSession, office_id: str, role: Role, email: str, name: str
) -> tuple[StaffUser, str]:
    """A new user with a one-time password (returned once; they change it at first sign-in)."""
    email = normal_email(email)
    name = name.strip()
    if not name:
        raise AccountError("a name is needed", "name")
    if len(name) > 200:
        raise AccountError("a name has at most 200 characters", "name")
    if await session.get(Office, office_id) is None:
        raise AccountError(f"unknown office {office_id!r}", "office")
    if await session.scalar(select(func.count()).where(StaffUser.email == email)):
        raise AccountError(f"{email} already has an account", "email")
    password = one_time_password()
    user = StaffUser(
        email=email,
        name=name,
        office_id=office_id,
        role=role.key,
        password_hash=await asyncio.to_thread(hash_password, password),
        must_change_password=True,
        failed_logins=0,
        active=True,
    )
    session.add(user)
    await session.flush()
    return user, password


async def reset_password(
    hub: Hub, session: AsyncSession, user: StaffUser, *, reset_totp: bool = False
) -> str:
    """A new one-time password; the account unlocks and every session of it ends (after commit)."""
    password = one_time_password()
    user.password_hash = await asyncio.to_thread(hash_password, password)
    user.must_change_password = True
    user.failed_logins, user.locked_until = 0, None
    if reset_totp:
        user.totp_sealed, user.totp_last_step = None, None
    await end_sessions(session, user.id)
    return password


async def end_sessions(session: AsyncSession, staff_id: int) -> None:
    await session.execute(delete(StaffSession).where(StaffSession.staff_id == staff_id))


async def set_password(hub: Hub, user_id: int, password: str) -> None:
    """The user's own new password: every session of theirs ends (the caller starts a fresh one)."""
    hashed = await asyncio.to_thread(hash_password, password)
    async with hub.db.transaction() as session:
        user = await session.get(StaffUser, user_id)
        assert user is not None
        user.password_hash = hashed
        user.must_change_password = False
        await end_sessions(session, user_id)


async def enrol_totp(hub: Hub, user_id: int, secret: str, step: int) -> None:
    async with hub.db.transaction() as session:
        user = await session.get(StaffUser, user_id)
        assert user is not None
        user.totp_sealed = seal_totp(hub.secret, user_id, secret)
        user.totp_last_step = step
