"""What the /metrics page says about a provider's pushback and the pacer (hub.metrics): the 429/503 split
operators alert on, and no address or chat id in any label."""

from __future__ import annotations

import asyncio

from prometheus_client.parser import text_string_to_metric_families

from hub import metrics


def _values(name: str) -> dict[tuple[tuple[str, str], ...], float]:
    page, _ = asyncio.run(metrics.exposition(None))
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(page.decode())
        for s in family.samples
        if s.name == name
    }


def test_pushback_is_sorted_into_429_and_503_from_what_adapters_say() -> None:
    before = _values("hub_provider_pushback_total")
    said = [
        ("flood control: retry after 7s", 7.0, "429"),  # Telegram
        ("send: M_LIMIT_EXCEEDED Too Many Requests", None, "429"),  # Matrix
        ("gw1: HTTP 429: slow down", None, "429"),  # an HTTP SMS gateway
        ("gw1: HTTP 503: maintenance", 30.0, "503"),  # its Retry-After does not make it a 429
        ("421 4.3.2 Service not available", None, "503"),  # SMTP
        ("network: ClientConnectorError()", None, "503"),
    ]
    for reason, delay, _ in said:
        metrics.pushback("unit-test", reason, delay)
    after = _values("hub_provider_pushback_total")
    for status in ("429", "503"):
        key = (("channel", "unit-test"), ("status", status))
        expected = sum(1 for *_, s in said if s == status)
        assert after[key] - before.get(key, 0) == expected, status


def test_pacer_waits_are_labelled_by_the_rate_family_never_the_chat() -> None:
    metrics.pacer_waited("bulk", "tg:chat:6281234567890", 0.25)
    labels = {dict(key)["rate"] for key in _values("hub_pacer_wait_seconds_total")}
    assert "tg" in labels and not any("628" in label for label in labels)
