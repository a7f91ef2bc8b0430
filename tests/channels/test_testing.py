"""``channels.testing.ScriptedChannel``: outcomes a test scripts per address, including a raise."""

from __future__ import annotations

import pytest

from channels import Content, Inbound, NoPacing, Outbound, RecipientGone, Rejected, RetryLater, Sent
from channels.testing import ScriptedChannel


async def test_scripted_outcomes_per_address_then_sent() -> None:
    channel = ScriptedChannel(buttons=True)
    channel.script("warga-1", RetryLater("sibuk", 0.1), Sent("p-1"))
    channel.script("warga-2", RecipientGone("diblokir"))
    channel.script("warga-3", lambda item: Rejected(f"terlalu panjang: {len(item.content.text)}"))
    items = [Outbound(n, f"warga-{n}", Content(text="Info")) for n in (1, 2, 3, 4)]

    first = [o async for o in channel.send(items, NoPacing())]
    again = [o async for o in channel.send(items[:1], NoPacing())]

    assert first == [
        (1, RetryLater("sibuk", 0.1)),
        (2, RecipientGone("diblokir")),
        (3, Rejected("terlalu panjang: 4")),
        (4, Sent("scripted-4")),
    ]
    assert again == [(1, Sent("p-1"))]
    assert [i.address for i in channel.sent] == ["warga-4", "warga-1"]
    assert channel.capabilities.buttons and len(channel.calls) == 5


async def test_a_scripted_exception_is_raised_from_send() -> None:
    channel = ScriptedChannel().script("warga-1", RuntimeError("adapter bug"))
    with pytest.raises(RuntimeError, match="adapter bug"):
        [o async for o in channel.send([Outbound(1, "warga-1", Content(text="x"))], NoPacing())]


async def test_inbound_records_reach_the_listener() -> None:
    channel = ScriptedChannel(listening="worker")
    got: list[Inbound] = []
    record = Inbound(channel="scripted", kind="command", address="warga-1", command="jam")
    channel.receive(record)

    async def sink(item: Inbound) -> None:
        got.append(item)
        raise SystemExit  # stop listening after one

    with pytest.raises(SystemExit):
        await channel.listen(sink)
    assert got == [record] and channel.capabilities.listening == "worker"
