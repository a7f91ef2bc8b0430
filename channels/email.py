"""Email through SMTP (aiosmtplib), with a pool of reused connections.

One connection sends one message at a time, so parallelism comes from several connections, each kept
open across batches; a dropped connection is reopened once before the send is called "retry later".
A broadcast's message is built once per rendering and patched per recipient (``channels.email_mime``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import replace
from email.message import EmailMessage
from email.utils import formataddr, formatdate, parseaddr
from typing import Any

import aiosmtplib
from aiosmtplib.email import extract_sender
from email_validator import EmailNotValidError, validate_email
from pydantic import Field

from channels.base import (
    Capabilities,
    Channel,
    ChannelSettings,
    InvalidAddress,
    Outbound,
    Outcome,
    Pacer,
    Rate,
    RecipientGone,
    Rejected,
    RetryLater,
    Sent,
    outcome_of_error,
)
from channels.email_mime import Piece, Templates, page_of

log = logging.getLogger(__name__)

#: Enhanced status codes and words that mean the mailbox does not exist (RFC 3463: X.1.1, X.1.2, X.1.6).
_GONE_CODES = ("5.1.1", "5.1.2", "5.1.6", "5.1.10")
_GONE_WORDS = (
    "user unknown",
    "no such user",
    "unknown user",
    "does not exist",
    "mailbox not found",
    "recipient address rejected: user",
    "no mailbox",
    "invalid recipient",
)


class EmailSettings(ChannelSettings):
    """``[channels.email]``."""

    host: str = "127.0.0.1"
    port: int = Field(25, ge=1, le=65535)
    #: ``Name <address>`` the mail comes from.
    sender: str
    username: str | None = None
    password: str | None = None
    #: Implicit TLS from the first byte (port 465).
    use_tls: bool = False
    #: STARTTLS after connecting; unset: when the server offers it.
    start_tls: bool | None = None
    pool_size: int = Field(4, ge=1)
    timeout: float = Field(30.0, gt=0)
    #: 0: no shared limit (the server paces with 4xx answers).
    rate_per_second: float = Field(0.0, ge=0)
    #: Accept addresses at reserved test domains (example.com, .test): for tests only.
    allow_test_domains: bool = False


class EmailChannel(Channel):
    name = "email"
    capabilities = Capabilities(batch_size=100)
    settings_model = EmailSettings

    def __init__(
        self,
        *,
        host: str,
        port: int,
        sender: str,
        username: str | None = None,
        password: str | None = None,
        use_tls: bool = False,
        start_tls: bool | None = None,
        pool_size: int = 4,
        timeout: float = 30.0,
        rate_per_second: float = 0.0,
        allow_test_domains: bool = False,
    ) -> None:
        self.host, self.port, self.sender = host, port, sender
        self.username, self.password = username, password
        self.use_tls, self.start_tls, self.timeout = use_tls, start_tls, timeout
        self.pool_size = max(1, pool_size)
        self.capabilities = replace(type(self).capabilities, concurrency=self.pool_size)
        self.rate = rate_per_second
        self.allow_test_domains = allow_test_domains
        self.domain = parseaddr(sender)[1].rpartition("@")[2] or "localhost"
        self._idle: asyncio.Queue[aiosmtplib.SMTP] | None = None
        self._templates: Templates | None = None

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], *, public_url: str) -> EmailChannel:
        conf = cls.validate_settings(settings)
        assert isinstance(conf, EmailSettings)
        return cls(**conf.model_dump(exclude={"enabled"}))

    # -- addresses --------------------------------------------------------------------------------------

    def normalize_address(self, raw: str) -> str:
        try:
            result = validate_email(
                raw.strip(), check_deliverability=False, test_environment=self.allow_test_domains
            )
        except EmailNotValidError as exc:
            raise InvalidAddress(f"invalid email address: {exc}") from exc
        # Local parts are case-sensitive in theory and never in practice: one mailbox, one endpoint.
        return result.normalized.lower()

    def mask_address(self, address: str) -> str:
        """The first character and the domain: ``w***@example.com``."""
        local, at, domain = address.partition("@")
        return f"{local[:1]}***@{domain}" if local and at and domain else "***"

    # -- connections ------------------------------------------------------------------------------------

    async def open(self) -> None:
        self._idle = asyncio.Queue()
        for _ in range(self.pool_size):
            self._idle.put_nowait(self._client())

    async def close(self) -> None:
        if self._idle is None:
            return
        while not self._idle.empty():
            client = self._idle.get_nowait()
            if client.is_connected:
                try:
                    await client.quit()
                except (aiosmtplib.SMTPException, OSError):
                    client.close()
        self._idle = None

    async def check_credentials(self) -> str:
        """Connect, log in when a username is set, NOOP, QUIT: the server took us (``hub doctor``)."""
        client = self._client()
        await client.connect()
        try:
            await client.noop()
        finally:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                await client.quit()
        login = " and accepted the login" if self.username else ""
        return f"SMTP {self.host}:{self.port} answered{login}"

    def _client(self) -> aiosmtplib.SMTP:
        return aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            username=self.username,
            password=self.password,
            use_tls=self.use_tls,
            start_tls=self.start_tls,
            timeout=self.timeout,
        )

    # -- sending ----------------------------------------------------------------------------------------

    async def send(self, items: Sequence[Outbound], pacer: Pacer) -> AsyncIterator[tuple[int, Outcome]]:
        if self._idle is None:
            await self.open()
        results: asyncio.Queue[tuple[int, Outcome]] = asyncio.Queue()
        todo: asyncio.Queue[Outbound] = asyncio.Queue()
        for item in items:
            todo.put_nowait(item)

        async def worker() -> None:
            assert self._idle is not None
            client = await self._idle.get()
            try:
                while not todo.empty():
                    item = todo.get_nowait()
                    try:
                        if self.rate > 0:
                            await pacer.wait([Rate(f"email:{self.host}", self.rate)], item.lane)
                    except Exception as exc:  # every item gets its outcome, or the batch would hang
                        results.put_nowait((item.delivery_id, outcome_of_error(self.name, item, exc)))
                        continue
                    client, outcome = await self._send_one(client, item)
                    results.put_nowait((item.delivery_id, outcome))
            finally:
                self._idle.put_nowait(client)

        workers = [asyncio.create_task(worker()) for _ in range(min(self.pool_size, len(items)))]
        try:
            for _ in range(len(items)):
                yield await results.get()
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    async def _send_one(self, client: aiosmtplib.SMTP, item: Outbound) -> tuple[aiosmtplib.SMTP, Outcome]:
        """One message; whatever goes wrong becomes this item's outcome, never an exception."""
        try:
            message_id = self.message_id(item)
            piece = self._render(item, message_id)
            message = None if piece is not None else self.build(item)
        except (ValueError, TypeError) as exc:  # e.g. a line break in the subject: no header can hold it
            log.warning("email: delivery %s cannot be built: %s", item.delivery_id, exc)
            return client, Rejected(f"the message cannot be built: {exc}")
        try:
            return await self._transmit(client, item, message_id, piece, message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an adapter bug must not hang the batch nor leave the row "sending"
            return await self._reset(client), outcome_of_error(self.name, item, exc)

    def _render(self, item: Outbound, message_id: str) -> Piece | None:
        """The patched copy; None (build it whole) when it cannot be had, even through a bug of the cache."""
        try:
            return self.templates.render(item, message_id)
        except (ValueError, TypeError):  # the message itself cannot be built: the caller says why
            raise
        except Exception:
            log.exception("email: delivery %s: template cache failed, building it whole", item.delivery_id)
            return None

    @property
    def templates(self) -> Templates:
        if self._templates is None:
            self._templates = Templates(self.build)
        return self._templates

    @functools.cached_property
    def envelope_from(self) -> str:
        """MAIL FROM, read from the From header the way ``send_message`` reads it."""
        probe = EmailMessage()
        probe["From"] = self.sender
        return extract_sender(probe) or ""

    async def _transmit(
        self,
        client: aiosmtplib.SMTP,
        item: Outbound,
        message_id: str,
        piece: Piece | None,
        message: EmailMessage | None,
    ) -> tuple[aiosmtplib.SMTP, Outcome]:
        for attempt in (1, 2):
            try:
                if not client.is_connected:
                    await client.connect()
                if client.is_ehlo_or_helo_needed:  # as send_message does, to know the extensions
                    try:
                        await client.ehlo()
                    except aiosmtplib.SMTPHeloError:
                        await client.helo()
                if piece is not None and client.supports_extension("8bitmime"):
                    # What send_message would pass for this message: 8-bit body, ASCII envelope.
                    errors, _ = await client.sendmail(
                        self.envelope_from, [item.address], piece.data, mail_options=["BODY=8BITMIME"]
                    )
                else:
                    if message is None:  # a server without 8BITMIME: the email package encodes for 7 bits
                        message = self.build(item)
                    errors, _ = await client.send_message(message)
                if errors:
                    code, text = next(iter(errors.values()))
                    return client, classify(code, text)
                return client, Sent(provider_id=message_id)
            except aiosmtplib.SMTPRecipientsRefused as exc:
                refused = exc.recipients[0]
                return client, classify(refused.code, refused.message)
            except aiosmtplib.SMTPResponseException as exc:
                if exc.code in (421,) and attempt == 1:
                    client = await self._reset(client)
                    continue
                if exc.code == 421:  # the server is going away: its trouble, not the recipient's
                    return client, RetryLater(f"{exc.code} {exc.message}", provider=True)
                return client, classify(exc.code, exc.message)
            except (
                aiosmtplib.SMTPServerDisconnected,
                aiosmtplib.SMTPConnectError,
                aiosmtplib.SMTPTimeoutError,
                OSError,
            ) as exc:
                client = await self._reset(client)
                if attempt == 2:
                    return client, RetryLater(f"SMTP connection: {exc}", provider=True)
        return client, RetryLater("SMTP connection lost", provider=True)

    async def _reset(self, client: aiosmtplib.SMTP) -> aiosmtplib.SMTP:
        client.close()
        return self._client()

    def message_id(self, item: Outbound) -> str:
        # Derived from the delivery: a resend after a crash carries the same id, which mailboxes dedupe.
        digest = hashlib.sha256(f"{item.delivery_id}:{item.address}".encode()).hexdigest()[:16]
        return f"<d{item.delivery_id}.{digest}@{self.domain}>"

    def build(self, item: Outbound, *, date: str | None = None) -> EmailMessage:
        """The whole message with the ``email`` package: the reference ``email_mime`` patches copies of."""
        content = item.content
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = formataddr(("", item.address))
        message["Subject"] = content.subject or content.text.splitlines()[0][:120]
        message["Date"] = date or formatdate(localtime=False)
        message["Message-ID"] = self.message_id(item)
        message["Auto-Submitted"] = "auto-generated"
        if item.unsubscribe_url:
            message["List-Unsubscribe"] = f"<{item.unsubscribe_url}>"
            message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        message.set_content(content.text)
        message.add_alternative(page_of(content.text, content.html), subtype="html")
        message["Content-Language"] = content.locale  # after set_content, which clears Content-* headers
        return message


def classify(code: int, text: str) -> Outcome:
    """SMTP reply -> outcome: 4xx retry later; 5xx unknown user -> gone; other 5xx -> rejected."""
    reason = f"{code} {text}".strip()
    if 400 <= code < 500:
        return RetryLater(reason)
    lowered = text.lower()
    if code in (550, 551, 553) and (
        any(c in text for c in _GONE_CODES) or any(w in lowered for w in _GONE_WORDS)
    ):
        return RecipientGone(reason)
    return Rejected(reason)


CHANNEL = EmailChannel
