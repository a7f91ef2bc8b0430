"""A scripted channel for tests, as httpx ships ``MockTransport``: a double of an adapter, not of a service.

A test says per address what each send comes to, and may make a send raise, to see what the hub does
with every outcome (and with an adapter that breaks)::

    channel = ScriptedChannel()
    channel.script("warga-1", RetryLater("busy", 0.1), Sent("p-1"))   # first try, then the retry
    channel.script("warga-2", RecipientGone("blocked"))
    channel.script("warga-3", RuntimeError("adapter bug"))            # raised from send()
    channel.script("warga-4", lambda item: Rejected(item.content.text[:10]))
    hub = await build_hub(settings, extra_channels={"scripted": channel})

An address without a script (or whose script is used up) gets ``Sent``. Every item handed over is kept
in ``calls``, each one that ended ``Sent`` in ``sent``. ``receive(record)`` queues an inbound record for
``listen``, for tests of the inbound path (``ScriptedChannel(listening="worker")`` makes a worker listen).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, ClassVar

from channels.base import (
    Capabilities,
    Channel,
    Inbound,
    InboundSink,
    InvalidAddress,
    Outbound,
    Outcome,
    Pacer,
    Sent,
)

Step = Outcome | BaseException | Callable[[Outbound], Outcome]


class ScriptedChannel(Channel):
    """Outcomes scripted per address; ``capabilities`` and ``name`` may be chosen per instance."""

    name: ClassVar[str] = "scripted"
    capabilities = Capabilities(batch_size=100)

    def __init__(
        self,
        *,
        name: str | None = None,
        capabilities: Capabilities | None = None,
        delay: float = 0.0,
        **changes: Any,
    ) -> None:
        if name is not None:
            self.name = name  # type: ignore[misc]
        base = capabilities or type(self).capabilities
        self.capabilities = replace(base, **changes) if changes else base
        #: Seconds each send takes (a slow provider), so a test can act while a batch is under way.
        self.delay = delay
        self.calls: list[Outbound] = []
        self.sent: list[Outbound] = []
        self.opened = self.closed = 0
        self._scripts: dict[str, deque[Step]] = defaultdict(deque)
        self._inbox: asyncio.Queue[Inbound] | None = None

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], *, public_url: str) -> ScriptedChannel:
        cls.validate_settings(settings)
        return cls()

    def script(self, address: str, *steps: Step) -> ScriptedChannel:
        """What the next sends to ``address`` come to, in order (appended to what is scripted)."""
        self._scripts[address].extend(steps)
        return self

    async def open(self) -> None:
        self.opened += 1

    async def close(self) -> None:
        self.closed += 1

    def normalize_address(self, raw: str) -> str:
        value = raw.strip()
        if not value:
            raise InvalidAddress("empty address")
        return value

    async def send(self, items: Sequence[Outbound], pacer: Pacer) -> AsyncIterator[tuple[int, Outcome]]:
        for item in items:
            self.calls.append(item)
            if self.delay:
                await asyncio.sleep(self.delay)
            steps = self._scripts.get(item.address)
            step: Step = steps.popleft() if steps else Sent(f"scripted-{item.delivery_id}")
            if isinstance(step, BaseException):
                raise step
            outcome = step(item) if callable(step) else step
            if isinstance(outcome, Sent):
                self.sent.append(item)
            yield item.delivery_id, outcome

    # Inbound: a test hands records in, ``listen`` passes them on as a polling adapter would.

    def receive(self, record: Inbound) -> None:
        self._queue().put_nowait(record)

    async def listen(self, sink: InboundSink) -> None:
        queue = self._queue()
        while True:
            await sink(await queue.get())

    def _queue(self) -> asyncio.Queue[Inbound]:
        if self._inbox is None:
            self._inbox = asyncio.Queue()
        return self._inbox


__all__ = ["ScriptedChannel", "Step"]
