"""SMS gateway drivers and weighted failover between them.

Offices rarely have one reliable SMS route: a Kannel box in the data centre, an aggregator's HTTP API as a
backup. Each driver turns one send into one of the hub's outcomes; ``Failover`` spreads sends by weight
and takes a gateway that keeps failing out of rotation for a while (a circuit breaker with a half-open
probe), so one dead route does not slow every message down.
"""

from __future__ import annotations

import json
import random
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from channels.base import Outcome, Rejected, RetryLater, Sent
from channels.sms.segments import Encoding

DEFAULT_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class AmbiguousRetry(RetryLater):
    """A failure after the request went out (read timeout, dropped connection).

    The gateway may have accepted the message, so the channel must not hand it to another gateway at
    once; it reports a plain ``RetryLater`` and leaves the retry to the hub's schedule.
    """


class Gateway(ABC):
    """One route to the SMS network."""

    driver: str = ""

    def __init__(
        self,
        name: str,
        *,
        weight: float = 1.0,
        rate_per_second: float = 10.0,
        timeout: float = DEFAULT_TIMEOUT,
    ):
        if weight < 0:
            raise ValueError(f"SMS gateway {name!r}: weight must be >= 0")
        if rate_per_second <= 0:
            raise ValueError(f"SMS gateway {name!r}: rate_per_second must be > 0")
        self.name = name
        self.weight = float(weight)
        self.rate_per_second = float(rate_per_second)
        self.timeout = timeout
        self._client: httpx.AsyncClient | None = None

    @property
    def rate_key(self) -> str:
        return f"sms:{self.name}"

    def client(self) -> httpx.AsyncClient:
        """The connection pool, opened on first use so that ``send`` works even without ``open``."""
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout)
        return self._client

    async def open(self) -> None:
        self.client()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    @abstractmethod
    async def send(self, to: str, text: str, *, coding: Encoding, delivery_id: int, dlr_url: str) -> Outcome:
        """Send one SMS; never raise for a failure of this message, return an outcome."""


def _transport_outcome(gateway: str, exc: httpx.HTTPError) -> RetryLater:
    """Classify a transport error: before the request left (safe to fail over) or after (ambiguous)."""
    reason = f"{gateway}: {type(exc).__name__}: {exc}".rstrip(": ")
    if isinstance(
        exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout | httpx.UnsupportedProtocol
    ):
        return RetryLater(reason, provider=True)
    return AmbiguousRetry(reason, provider=True)


def _retry_after(headers: httpx.Headers) -> float | None:
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


# --------------------------------------------------------------------------------------------------------
# Kannel


class KannelGateway(Gateway):
    """Kannel's smsbox ``/cgi-bin/sendsms`` interface."""

    driver = "kannel"

    def __init__(
        self,
        name: str,
        *,
        url: str,
        username: str,
        password: str,
        sender: str = "",
        smsc: str = "",
        dlr_mask: int = 31,
        **kwargs: Any,
    ):
        super().__init__(name, **kwargs)
        self.url = url.rstrip("/")
        if not self.url.endswith("/cgi-bin/sendsms"):
            self.url += "/cgi-bin/sendsms"
        self.username = username
        self.password = password
        self.sender = sender
        self.smsc = smsc
        self.dlr_mask = dlr_mask

    async def send(self, to: str, text: str, *, coding: Encoding, delivery_id: int, dlr_url: str) -> Outcome:
        params: dict[str, str] = {
            "username": self.username,
            "password": self.password,
            "to": to,
            "text": text,
            "charset": "UTF-8",
            "coding": "2" if coding == "UCS-2" else "0",
        }
        if self.sender:
            params["from"] = self.sender
        if self.smsc:
            params["smsc"] = self.smsc
        if dlr_url:
            params["dlr-mask"] = str(self.dlr_mask)
            params["dlr-url"] = dlr_url
        try:
            response = await self.client().get(self.url, params=params)
        except httpx.HTTPError as exc:
            return _transport_outcome(self.name, exc)
        return self.interpret(response.status_code, response.text, response.headers)

    def interpret(self, status: int, body: str, headers: httpx.Headers | None = None) -> Outcome:
        """Map Kannel's answer (status code and its "N: words" body) to an outcome."""
        body = body.strip()
        if 200 <= status < 300:
            # "0: Accepted for delivery" or "3: Queued for later delivery": both mean Kannel owns it now.
            return Sent(None)
        if status in (429, 503):  # 429: a rate limiter in front of smsbox (RFC 6585), never the recipient's
            delay = _retry_after(headers) if headers is not None else None
            return RetryLater(f"{self.name}: {body or 'temporal failure'}", delay, provider=True)
        if "authorization failed" in body.lower():
            return Rejected(f"{self.name}: Kannel refused the sendsms credentials for user {self.username!r}")
        if status >= 500:
            return RetryLater(f"{self.name}: HTTP {status}: {body[:200]}", provider=True)
        # 403 "Not routable. Do not try again.", 400 "Missing receiver number" and the like.
        return Rejected(f"{self.name}: HTTP {status}: {body[:200]}")


# --------------------------------------------------------------------------------------------------------
# Generic JSON over HTTP

_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def _substitute(template: Any, values: Mapping[str, str]) -> Any:
    """Fill ``{to}``-style placeholders inside the strings of a JSON structure.

    Substituting into parsed JSON (not into the JSON text) keeps quotes and newlines in the message from
    breaking the document.
    """
    if isinstance(template, str):
        # One pass, so that a "{from}" typed inside the message text is not itself replaced.
        return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)
    if isinstance(template, Mapping):
        return {k: _substitute(v, values) for k, v in template.items()}
    if isinstance(template, list):
        return [_substitute(v, values) for v in template]
    return template


def dotted_get(data: Any, path: str) -> Any:
    """``dotted_get({"a": [{"id": 7}]}, "a.0.id") == 7``; ``None`` when any step is missing."""
    current = data
    for part in path.split("."):
        if isinstance(current, Mapping):
            current = current.get(part)
        elif (
            isinstance(current, list)
            and part.lstrip("-").isdigit()
            and -len(current) <= int(part) < len(current)
        ):
            current = current[int(part)]
        else:
            return None
        if current is None:
            return None
    return current


class HttpJsonGateway(Gateway):
    """An aggregator's JSON API, described entirely by settings (URL, headers, body template, id path)."""

    driver = "http"
    DEFAULT_RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})

    def __init__(
        self,
        name: str,
        *,
        url: str,
        body: Mapping[str, Any] | str,
        method: str = "POST",
        headers: Mapping[str, str] | None = None,
        id_path: str = "",
        retry_statuses: Sequence[int] | None = None,
        reject_statuses: Sequence[int] | None = None,
        sender: str = "",
        **kwargs: Any,
    ):
        super().__init__(name, **kwargs)
        self.url = url
        self.method = method.upper()
        self.headers = dict(headers or {})
        self.body_template = json.loads(body) if isinstance(body, str) else dict(body)
        self.id_path = id_path
        self.retry_statuses = (
            frozenset(retry_statuses) if retry_statuses is not None else self.DEFAULT_RETRY_STATUSES
        )
        self.reject_statuses = frozenset(reject_statuses or ())
        self.sender = sender

    async def send(self, to: str, text: str, *, coding: Encoding, delivery_id: int, dlr_url: str) -> Outcome:
        values = {
            "to": to,
            "to_digits": to.lstrip("+"),
            "text": text,
            "from": self.sender,
            "dlr_url": dlr_url,
            "delivery_id": str(delivery_id),
            "coding": coding,
        }
        payload = _substitute(self.body_template, values)
        try:
            response = await self.client().request(self.method, self.url, json=payload, headers=self.headers)
        except httpx.HTTPError as exc:
            return _transport_outcome(self.name, exc)
        return self.interpret(response)

    def interpret(self, response: httpx.Response) -> Outcome:
        status = response.status_code
        if 200 <= status < 300 and status not in self.retry_statuses and status not in self.reject_statuses:
            provider_id = None
            if self.id_path:
                try:
                    found = dotted_get(response.json(), self.id_path)
                except ValueError:
                    found = None
                provider_id = None if found is None else str(found)
            return Sent(provider_id)
        reason = f"{self.name}: HTTP {status}: {response.text.strip()[:200]}"
        if status in self.retry_statuses or (status >= 500 and status not in self.reject_statuses):
            return RetryLater(reason, _retry_after(response.headers), provider=True)
        return Rejected(reason)


# --------------------------------------------------------------------------------------------------------
# Failover


class CircuitBreaker:
    """Closed → open after ``threshold`` consecutive failures → half-open after ``cooloff`` seconds.

    Half-open lets exactly one probe through: success closes the breaker, failure opens it again.
    """

    def __init__(
        self, threshold: int = 5, cooloff: float = 30.0, clock: Callable[[], float] = time.monotonic
    ):
        self.threshold = max(1, threshold)
        self.cooloff = cooloff
        self.clock = clock
        self.failures = 0
        self.opened_at: float | None = None
        self.probe_started: float | None = None

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        if self.clock() - self.opened_at < self.cooloff:
            return "open"
        return "half-open"

    def eligible(self) -> bool:
        """Could a send go here now (without reserving the half-open probe)?"""
        state = self.state
        if state == "closed":
            return True
        if state == "open":
            return False
        # A probe whose sender vanished (cancelled) must not block the gateway for ever.
        return self.probe_started is None or self.clock() - self.probe_started >= self.cooloff

    def acquire(self) -> bool:
        """Reserve a send; in half-open state only the first caller gets the probe."""
        if not self.eligible():
            return False
        if self.state == "half-open":
            self.probe_started = self.clock()
        return True

    def hold(self, seconds: float) -> None:
        """Open for ``seconds`` from now: another worker found the gateway down (a shared circuit)."""
        self.opened_at = self.clock() - self.cooloff + seconds
        self.probe_started = None

    def record_success(self) -> None:
        self.failures = 0
        self.opened_at = None
        self.probe_started = None

    def record_failure(self) -> None:
        self.failures += 1
        self.probe_started = None
        if self.opened_at is not None or self.failures >= self.threshold:
            self.opened_at = self.clock()

    def retry_in(self) -> float:
        if self.opened_at is None:
            return 0.0
        return max(0.0, self.opened_at + self.cooloff - self.clock())


class Failover:
    """Weighted choice among healthy gateways, then the others in weighted order as fallbacks.

    A weight of 0 makes a standby gateway: used only when every weighted one is unavailable or failed.
    """

    def __init__(
        self,
        gateways: Sequence[Gateway],
        *,
        threshold: int = 5,
        cooloff: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ):
        names = [g.name for g in gateways]
        if len(set(names)) != len(names):
            raise ValueError(f"SMS gateway names must be unique, got {names}")
        self.gateways = list(gateways)
        self.breakers = {g.name: CircuitBreaker(threshold, cooloff, clock) for g in gateways}
        self.rng = rng or random.Random()

    def attempts(self) -> Iterator[Gateway]:
        """Gateways to try for one message, in order; stops early when none is available."""
        remaining = list(self.gateways)
        while remaining:
            eligible = [g for g in remaining if self.breakers[g.name].eligible()]
            if not eligible:
                return
            weighted = [g for g in eligible if g.weight > 0]
            if weighted:
                chosen = self.rng.choices(weighted, weights=[g.weight for g in weighted])[0]
            else:
                chosen = self.rng.choice(eligible)
            remaining.remove(chosen)
            if self.breakers[chosen.name].acquire():
                yield chosen

    def record(self, gateway: Gateway, outcome: Outcome) -> bool:
        """Feed an outcome to the gateway's breaker: only "retry later" counts as the gateway failing.

        True when this outcome opened the circuit (the caller shares that with the other workers).
        """
        breaker = self.breakers[gateway.name]
        if isinstance(outcome, RetryLater):
            breaker.record_failure()
            return breaker.state == "open"
        breaker.record_success()
        return False

    def retry_in(self) -> float:
        """Seconds until the first gateway comes out of its cool-off."""
        return min((b.retry_in() for b in self.breakers.values()), default=0.0)


# --------------------------------------------------------------------------------------------------------
# Construction from settings

_DRIVERS: dict[str, type[Gateway]] = {"kannel": KannelGateway, "http": HttpJsonGateway}


def build_gateway(conf: Any, *, index: int, sender: str = "") -> Gateway:
    """One validated ``[[gateways]]`` table (``channels.sms.config``) → a driver."""
    values = conf.model_dump(exclude={"driver", "name"})
    if not values.get("sender"):
        values["sender"] = sender
    name = conf.name or f"{conf.driver}{index + 1}"
    return _DRIVERS[conf.driver](name, **values)
