"""The one small interface every channel adapter implements.

This module is a leaf: it imports nothing from ``hub`` and no channel library. The hub hands an adapter
ready-rendered content and an address; the adapter sends it and says what came of each send, using one
of the five outcomes below. Adapters never touch the database, the queue or the templates.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

# Re-exported: adapters take everything of the interface from here.
from channels.config import ChannelSettings as ChannelSettings
from channels.config import ChannelSettingsError as ChannelSettingsError
from channels.config import validate_table

_log = logging.getLogger("channels")

EndpointKind = Literal["person", "group", "channel"]
Lane = Literal["urgent", "bulk"]


class InvalidAddress(ValueError):
    """An address a channel cannot send to; the message names what is wrong."""


class WebhookRejected(Exception):
    """A webhook call that is not authentic (bad secret, bad token)."""


# --------------------------------------------------------------------------------------------------------
# What the hub hands an adapter


@dataclass(frozen=True, slots=True)
class Button:
    """An inline button: a link (``url``) or a callback (``data``) the bot receives back."""

    text: str
    url: str | None = None
    data: str | None = None


@dataclass(frozen=True, slots=True)
class Content:
    """One rendering of a message for one channel and locale.

    ``html`` uses the inline subset every rich channel understands (``b i u s a code pre``) with
    newlines as line breaks; adapters adapt it (email wraps it in a page, Matrix turns newlines into
    ``<br>``). ``text`` is the plain form, always present.
    """

    text: str
    html: str | None = None
    subject: str | None = None
    buttons: tuple[Button, ...] = ()
    locale: str = "id"


@dataclass(frozen=True, slots=True)
class Outbound:
    """One delivery to send: the ``delivery_id`` is unique and stable across retries."""

    delivery_id: int
    address: str
    content: Content
    endpoint_kind: EndpointKind = "person"
    lane: Lane = "bulk"
    unsubscribe_url: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)
    #: What the message is (``announcement``, ``correction``, ``applicant``, ``confirmation``, ``reply``,
    #: ...): a provider that treats business-initiated messages apart from answers (WhatsApp's templates
    #: outside the customer-service window) chooses the form by it.
    kind: str = ""


# --------------------------------------------------------------------------------------------------------
# The outcomes of a send (DESIGN.md rule 6)


@dataclass(frozen=True, slots=True)
class Sent:
    provider_id: str | None = None


@dataclass(frozen=True, slots=True)
class RetryLater:
    """Try again; ``delay`` is the provider's own "retry after", if it gave one.

    ``provider`` says the trouble is the provider's (flood control, a gateway or homeserver down), not
    the recipient's: the hub retries without spending one of the delivery's attempts. False (the
    default) keeps the old meaning: an attempt was spent on this recipient.

    ``quota`` says the provider's allowance per moving window is used up (a messaging limit of so many
    recipients per 24 h): nothing is broken, the send waits its turn, so the hub keeps retrying past
    ``queue.retry_horizon_seconds`` until the message's valid-until. Use it with ``provider=True``.
    """

    reason: str
    delay: float | None = None
    provider: bool = False
    quota: bool = False


@dataclass(frozen=True, slots=True)
class RecipientGone:
    """Blocked bot, left room, invalid number: the endpoint is deactivated and never tried again.

    ``fallback`` names a channel to try once instead (WhatsApp's "undeliverable" to SMS): the hub sends
    the same message there to the subscriber's endpoint with the same address, if it has one.
    """

    reason: str
    fallback: str | None = None


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str


@dataclass(frozen=True, slots=True)
class Moved:
    """The endpoint has a new address (a Telegram group became a supergroup); send there."""

    new_address: str


Outcome = Sent | RetryLater | RecipientGone | Rejected | Moved

#: Exceptions that say nothing about the recipient: the network or the provider failed for now.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (OSError, TimeoutError, ConnectionError)


def outcome_of_error(channel: str, item: Outbound, exc: Exception, *, log: bool = True) -> Outcome:
    """What an exception an adapter did not expect while sending ``item`` comes to; logged once, here.

    A send must end as an outcome, never as a row left "sending": a transient error (network, timeout)
    is "retry later" at no cost to the delivery, anything else is "rejected" with the reason, so that
    staff see why in the status and the same bug does not loop.
    """
    reason = f"{channel} adapter error: {type(exc).__name__}: {exc}"
    if log:
        _log.error("%s: delivery %s failed: %s", channel, item.delivery_id, reason, exc_info=exc)
    if isinstance(exc, TRANSIENT_ERRORS):
        return RetryLater(reason, provider=True)
    return Rejected(reason)


async def send_each(
    channel: str,
    items: Sequence[Outbound],
    send_one: Callable[[Outbound], Awaitable[Outcome]],
    slots: asyncio.Semaphore,
) -> AsyncIterator[tuple[int, Outcome]]:
    """``send_one`` for every item at once, at most ``slots`` in flight; each outcome as it is known.

    For adapters whose provider takes one request per recipient (SMS gateways, WhatsApp): ``slots`` is
    the adapter's, shared by every batch it sends at once. An exception ``send_one`` did not expect is
    that item's outcome (``outcome_of_error``), never the batch's; closing the iterator cancels the rest.
    """

    async def run(item: Outbound) -> tuple[int, Outcome]:
        async with slots:
            try:
                return item.delivery_id, await send_one(item)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one recipient's surprise must not sink the batch
                return item.delivery_id, outcome_of_error(channel, item, exc)

    tasks = [asyncio.ensure_future(run(item)) for item in items]
    try:
        for next_done in asyncio.as_completed(tasks):
            yield await next_done
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)


# --------------------------------------------------------------------------------------------------------
# Pacing: limits are enforced by the hub, shared across every worker (DESIGN.md rule 5)


@dataclass(frozen=True, slots=True)
class Rate:
    """At most ``count`` sends per ``period`` seconds for ``key``, e.g. ``Rate("tg:bot:1", 30, 1.0)``."""

    key: str
    count: float
    period: float = 1.0


class Paused(Exception):
    """A pause on one of the rates (a provider's "retry after") holds longer than the caller would wait."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"paused for {seconds:.1f}s")
        self.seconds = seconds


class Pacer(Protocol):
    async def wait(self, rates: Sequence[Rate], lane: Lane = "bulk") -> None:
        """Return when one more send is allowed under every rate in ``rates``."""

    async def acquire(
        self, rates: Sequence[Rate], lane: Lane = "bulk", *, max_pause: float | None = None
    ) -> Any:
        """Like ``wait``, and hold the send's place in each rate until ``release(permit)``.

        Use it around a request whose provider counts requests strictly: the place frees one period
        after the provider answered, so however late a request arrives, no period at the provider ever
        holds more than the rate allows. Raises ``Paused`` instead of waiting out a pause longer than
        ``max_pause`` seconds.
        """

    async def release(self, permit: Any) -> None:
        """The provider has answered the request ``permit`` (from ``acquire``) was taken for."""

    async def pause(self, key: str, seconds: float) -> None:
        """Hold every send on ``key`` for ``seconds`` (a provider said "retry after"), in every worker."""

    async def paused_for(self, key: str) -> float:
        """Seconds a pause on ``key`` still holds; 0 when there is none."""


class NoPacing:
    """A pacer that never waits; for adapters and tests that run without Redis."""

    async def wait(self, rates: Sequence[Rate], lane: Lane = "bulk") -> None:
        return None

    async def acquire(
        self, rates: Sequence[Rate], lane: Lane = "bulk", *, max_pause: float | None = None
    ) -> None:
        return None

    async def release(self, permit: Any) -> None:
        return None

    async def pause(self, key: str, seconds: float) -> None:
        return None

    async def paused_for(self, key: str) -> float:
        return 0.0


# --------------------------------------------------------------------------------------------------------
# What comes back: neutral inbound records


@dataclass(frozen=True, slots=True)
class Inbound:
    """Something a citizen, a group or a provider sent us, in channel-neutral terms.

    ``kind`` is ``command`` (``/jam``, ``!jam``, ``JAM``), ``button`` (``data`` holds the callback),
    ``text`` (anything else), ``receipt`` (a delivery report for ``delivery_id``: delivered, read or failed,
    in whatever order the provider sends them; or gone, a report that the address cannot be reached on
    this channel, which deactivates the endpoint like ``RecipientGone`` and tries ``fallback`` once
    instead) or ``member`` (the bot
    was added to or removed from a group: ``text`` is ``added`` or ``removed``) or ``reaction`` (someone
    reacted to the message whose provider id is ``reply_ref``; ``text`` is the reaction's key).
    ``address`` is where a reply goes; ``sender`` identifies the person who wrote.
    ``sender_is_admin`` says, for a command or button press in a group or channel, whether the sender
    may manage that chat (a Telegram creator or administrator; on Matrix, power enough to change the
    room's state): the hub lets only them change what the chat receives. None: not a group record, or
    the adapter could not find out.
    """

    channel: str
    kind: Literal["command", "button", "text", "receipt", "member", "reaction"]
    address: str = ""
    sender: str = ""
    chat_kind: EndpointKind = "person"
    command: str = ""
    args: tuple[str, ...] = ()
    text: str = ""
    data: str = ""
    locale: str = "id"
    delivery_id: int | None = None
    receipt_status: Literal["delivered", "read", "failed", "gone", ""] = ""
    receipt_token: str = ""
    reply_ref: str = ""
    sender_is_admin: bool | None = None
    #: For a ``gone`` receipt: the channel to try once instead (as ``RecipientGone.fallback``).
    fallback: str | None = None


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    headers: Mapping[str, str]
    query: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class WebhookResponse:
    status: int = 200
    body: str = ""
    media_type: str = "text/plain"


InboundSink = Callable[[Inbound], Awaitable[None]]


# --------------------------------------------------------------------------------------------------------
# The adapter interface


Listening = Literal["none", "worker", "listener"]


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What an adapter can do, declared in one place; the hub decides from this and nothing else.

    ``listening`` says where inbound is pulled (``listen``): ``none`` (nothing to pull: webhooks only, or
    no inbound), ``worker`` (in every worker process that sends, because the session belongs to the
    sender: a Matrix device syncs where it sends), or ``listener`` (in exactly one process per
    deployment: ``hub listen <channel>`` or ``hub run``; Telegram's getUpdates allows one poller per bot).
    """

    listening: Listening = "none"
    #: Inbound arrives by ``handle_webhook`` on ``/v1/channels/<name>/webhook``.
    webhooks: bool = False
    #: The hub opens one instance per lane, so urgent sends never queue for connections bulk sends hold.
    #: An adapter whose session must be unique per process (a Matrix device) says False.
    instance_per_lane: bool = True
    #: ``Content.buttons`` are shown; otherwise the hub spells choices out in the text.
    buttons: bool = False
    #: Reactions to the hub's own messages come back as ``reaction`` records (Matrix ``m.reaction``): a
    #: kelurahan relay confirms a broadcast by reacting to it (``hub.relays``).
    reactions: bool = False
    #: The bot may open a private conversation with a person (Matrix can; Telegram cannot).
    initiates_direct: bool = False
    #: What commands start with on this channel: ``/jam`` (Telegram), ``!jam`` (Matrix), ``JAM`` (SMS).
    command_prefix: str = "/"
    #: A bare stop command leaves every topic at once (the SMS convention: STOP means stop everything).
    bare_stop_leaves_all: bool = False
    #: Largest batch the hub should hand to ``send`` at once.
    batch_size: int = 100
    #: The cost facts ``describe`` reports for a preview (``segments`` for SMS, ``parts`` for Telegram).
    costs: tuple[str, ...] = ()
    #: Sends this adapter has in flight at most per process (its pool, its settings); 0: the hub uses 4.
    concurrency: int = 0
    #: Only worker processes may open this adapter (it logs in to a session another process must not
    #: take over, such as a Matrix device); an API process never opens it.
    worker_only: bool = False
    #: The provider lets a business write first only to people who opted in to it (WhatsApp's opt-in
    #: rule): staff subscriptions and imports stay ``pending`` and send no confirmation; the citizen's
    #: own subscribe command from the chat is the opt-in that confirms them.
    opt_in_by_message: bool = False


class Channel(ABC):
    """A channel adapter. One instance per worker process (or per lane), opened once and reused.

    ``capabilities`` is a class attribute; an adapter whose abilities depend on its settings (Telegram's
    polling or webhook mode) assigns its own value per instance in ``__init__``.
    """

    name: ClassVar[str]
    capabilities: Capabilities = Capabilities()
    #: The pydantic model of the adapter's ``[channels.<name>]`` table (see ``ChannelSettings``).
    settings_model: ClassVar[type[ChannelSettings]] = ChannelSettings

    @classmethod
    def validate_settings(cls, table: Mapping[str, Any]) -> ChannelSettings:
        """The table checked against ``settings_model``; errors name the key (``channels.email.port``)."""
        return validate_table(cls.name, cls.settings_model, table)

    @classmethod
    @abstractmethod
    def from_settings(cls, settings: Mapping[str, Any], *, public_url: str) -> Channel:
        """Build the adapter from its ``[channels.<name>]`` table in settings.toml."""

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Open connections; called once before the first send."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Close connections; called once at shutdown."""

    def use_shared_limits(self, count: Callable[..., Awaitable[bool]]) -> None:  # noqa: B027
        """Optional hook: the hub's count shared by every process (Redis), for the adapter's own limits.

        ``await count(name, key, limit, window_seconds)`` records one event of ``key`` and is True while
        ``key`` is within ``limit`` events per window. ``await count(name, key, limit, window_seconds,
        member=m)`` counts distinct members instead: True when ``m`` is already in the window (its time
        is refreshed) or fewer than ``limit`` members are (a provider's "unique recipients per moving
        24 h"). ``await count.wait(...)`` with the same arguments counts nothing and returns the seconds
        until it would be True (0.0: now). The hub keeps keyed hashes of ``key`` and ``m``, never them.
        """

    async def ready(self) -> bool:
        """False while this process may not send (another process owns the session); jobs wait."""
        return True

    async def check_credentials(self) -> str:
        """Optional (``hub doctor``): ask the provider whether the configured credentials work.

        Sends nothing to anyone and takes over no session (a Matrix login would end the workers' own).
        Returns a short line of what was found, never a secret; raises when they do not work. The
        default raises ``NotImplementedError``: the adapter has no way to check without sending.
        """
        raise NotImplementedError(f"channel {self.name!r} cannot check its credentials without sending")

    @abstractmethod
    def normalize_address(self, raw: str) -> str:
        """The canonical form of an address, or raise ``InvalidAddress`` naming what is wrong."""

    def mask_address(self, address: str) -> str:
        """A form of the address safe for logs and staff screens."""
        if len(address) <= 4:
            return "***"
        return address[:2] + "***" + address[-2:]

    @staticmethod
    def mask_phone(number: str) -> str:
        """``+6281234567890`` → ``+62*******890``: the country code and the last three digits, no more.

        Enough to tell a citizen's numbers apart in logs and on staff screens, far too little to call
        one; always seven stars, so the mask does not tell the number's length either. Digits without a
        ``+`` keep only the last three; anything shorter than a phone number or not all digits is ``***``.
        """
        from phonenumbers import COUNTRY_CODE_TO_REGION_CODE  # only when a number is masked

        plus = number.startswith("+")
        digits = number[1:] if plus else number
        if not digits.isdigit() or len(digits) < 8:
            return "***"
        codes = [digits[:n] for n in (1, 2, 3) if int(digits[:n]) in COUNTRY_CODE_TO_REGION_CODE]
        kept = "+" + codes[0] if plus and codes else ""
        return f"{kept}*******{digits[-3:]}"

    def address_kind(self, address: str) -> EndpointKind:
        """What a normalised address reaches (a person, a group); imports store endpoints by it."""
        return "person"

    def deep_link(self, payload: str) -> str | None:
        """A link that opens a conversation with the bot carrying ``payload`` (printed on receipts)."""
        return None

    def describe(self, content: Content) -> dict[str, Any]:
        """Cost facts for a preview (SMS segments, parts of a long Telegram text)."""
        return {}

    @abstractmethod
    def send(self, items: Sequence[Outbound], pacer: Pacer) -> AsyncIterator[tuple[int, Outcome]]:
        """Send ``items``; yield ``(delivery_id, outcome)`` as each send finishes.

        Yield as soon as a send is known, not at the end, so that a crash loses the fewest records.
        Never raise for one recipient's failure: say it with an outcome.
        """

    async def handle_webhook(self, request: WebhookRequest) -> tuple[list[Inbound], WebhookResponse]:
        """Turn a provider's webhook call into inbound records; raise ``WebhookRejected`` if forged."""
        raise NotImplementedError(f"channel {self.name!r} takes no webhooks")

    async def listen(self, sink: InboundSink) -> None:
        """Pull inbound records (long polling) and hand each to ``sink``; runs until cancelled."""
        raise NotImplementedError(f"channel {self.name!r} has no polling mode")


def load_channel_class(name: str) -> type[Channel]:
    """Find the adapter for ``name``: module ``channels.<name>`` exposes it as ``CHANNEL``.

    Adding a channel therefore touches ``channels/`` and settings.toml, and nothing in ``hub/``.
    """
    if not name.isidentifier():
        raise ValueError(f"invalid channel name {name!r}")
    try:
        module = importlib.import_module(f"channels.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"channels.{name}":
            raise ValueError(
                f"no channel adapter named {name!r} (expected module channels/{name}.py)"
            ) from exc
        raise
    cls = getattr(module, "CHANNEL", None)
    if not (isinstance(cls, type) and issubclass(cls, Channel)):
        raise ValueError(f"channels.{name} does not define CHANNEL as a Channel subclass")
    return cls
