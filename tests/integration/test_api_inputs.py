"""Issue 9, hole 8: no input makes the API answer 500; every bad request gets 4xx and ``{"error": ...}``.

Each case here answered 500 before (a non-ASCII link token, ids beyond 64 bits, a NUL that PostgreSQL
cannot store, a time at the edge of the calendar, an adapter that could not read its webhook) or could
open a worker-only channel (the Matrix webhook route).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from channels.base import Capabilities, WebhookRequest, WebhookResponse
from channels.matrix import MatrixChannel
from channels.testing import ScriptedChannel
from hub.api import limits
from hub.api.app import create_app
from hub.keys import create_key

BIG = "99999999999999999999999"  # beyond 64 bits
BAD_LINK = "Tautan ini tidak valid atau sudah tidak berlaku."
BAD_LINK_PAGE = (
    '<!DOCTYPE html><html lang="id"><head><meta charset="utf-8"><title>Disdukcapil</title></head>'
    '<body style="font-family: Arial, sans-serif; max-width: 560px; margin: 40px auto;">'
    f"{BAD_LINK}</body></html>"
)
NUL_TEXT = "holds a NUL character or an unpaired surrogate, which no field may contain"


@pytest.fixture
async def api(hub) -> AsyncIterator[httpx.AsyncClient]:
    # A 500 comes back as a response (as a real server sends it), not as an exception in the test.
    transport = httpx.ASGITransport(app=create_app(hub), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as client:
        yield client


async def _key(hub, office: str = "kota-pekalongan", role: str = "staff") -> dict[str, str]:
    return {"Authorization": f"Bearer {await create_key(hub, office, role, role)}"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/confirm/{}"),
        ("GET", "/v1/unsubscribe/{}"),
        ("POST", "/v1/unsubscribe/{}"),
    ],
)
async def test_link_tokens_that_are_not_tokens_answer_the_bad_link_text(hub, api, method, path):
    """Non-ASCII (``1.2.é`` reached the HMAC comparison and raised), overlong or odd tokens: 400 with
    the citizen's text, as ``{"error": ...}`` to a client that asks for JSON, else as a page."""
    tokens = ["1.2.%C3%A9", "%C3%A9abc.def", "a" * 300, "1.2.abc%20def"]
    if path != "/v1/unsubscribe/{}" or method == "POST":  # the GET page only shows a button
        tokens.append("1.99999999999999999999999.AAAA")
    for token in tokens:
        machine = await api.request(method, path.format(token), headers={"Accept": "application/json"})
        assert (machine.status_code, machine.json()) == (400, {"error": BAD_LINK}), token
        for accept in ("text/html,application/xhtml+xml,*/*;q=0.8", "*/*"):  # a browser, curl
            page = await api.request(method, path.format(token), headers={"Accept": accept})
            assert page.status_code == 400 and page.headers["content-type"].startswith("text/html")
            assert page.text == BAD_LINK_PAGE


async def test_ids_and_cursors_beyond_64_bits_answer_422_naming_the_parameter(hub, api):
    staff = await _key(hub)
    correction = {"template": "free_text", "topics": ["kota-pekalongan"], "data": {"title": "a", "text": "b"}}
    too_large = "Input should be less than or equal to 9223372036854775807"
    answers = {
        f"GET /v1/announcements/{BIG}": await api.get(f"/v1/announcements/{BIG}", headers=staff),
        "publish": await api.post(f"/v1/announcements/{BIG}/publish", headers=staff),
        "cancel": await api.post(f"/v1/announcements/{BIG}/cancel", headers=staff),
        "corrections": await api.post(f"/v1/announcements/{BIG}/corrections", json=correction, headers=staff),
        "message": await api.get(f"/v1/messages/{BIG}", headers=staff),
        "after": await api.get(f"/v1/subscribers?after={BIG}", headers=staff),
    }
    errors = {name: (r.status_code, r.json()["error"]) for name, r in answers.items()}
    assert errors == {
        f"GET /v1/announcements/{BIG}": (422, f"path.announcement_id: {too_large}"),
        "publish": (422, f"path.announcement_id: {too_large}"),
        "cancel": (422, f"path.announcement_id: {too_large}"),
        "corrections": (422, f"path.announcement_id: {too_large}"),
        "message": (422, f"path.message_id: {too_large}"),
        "after": (422, f"query.after: {too_large}"),
    }
    negative = await api.get(f"/v1/messages/-{BIG}", headers=staff)
    assert negative.status_code == 422
    assert negative.json()["error"] == "path.message_id: Input should be greater than or equal to 1"
    for cursor in (BIG, f"-{BIG}", "%C3%A9"):
        page = await api.get(f"/v1/subscribers?cursor={cursor}", headers=staff)
        shown = httpx.QueryParams(f"c={cursor}")["c"]
        assert (page.status_code, page.json()) == (
            422,
            {"error": f"cursor: {shown!r} is not a cursor this API returned"},
        )


async def test_nul_and_unpaired_surrogates_are_refused_by_field_name(hub, api):
    """PostgreSQL cannot store U+0000 (the request failed with a 500 there); no field may hold one."""
    staff, intake = await _key(hub), await _key(hub, role="intake")
    text = {"template": "free_text", "topics": ["kota-pekalongan"], "data": {"title": "a", "text": "b"}}
    cases = [
        ("POST", "/v1/subscriptions/email", {"topic": "\x00", "email": "a@mail.example.com"}, {}, "topic"),
        ("POST", "/v1/applicants", {"reference": "KK-1", "document": "KK\x00"}, intake, "document"),
        (
            "POST",
            "/v1/applicants",
            {"reference": "KK-1", "document": "KK", "contacts": [{"channel": "email", "address": "\ud800"}]},
            intake,
            "contacts.0.address",
        ),
        ("POST", "/v1/applicants/KK-1/updates", {"status": "received", "note": "\x00"}, intake, "note"),
        ("POST", "/v1/applicants/%00/updates", {"status": "received"}, intake, "path.reference"),
        ("POST", "/v1/announcements/preview", {**text, "regions": ["\x00"]}, staff, "regions.0"),
        ("POST", "/v1/announcements", {**text, "data": {"title": "a\x00", "text": "b"}}, staff, "data.title"),
        ("GET", "/v1/subscribers?topic=%00", None, staff, "query.topic"),
        ("GET", "/v1/stats", None, {"X-API-Key": "hub_a\x00_b"}, "header.x-api-key"),
        (
            "POST",
            "/v1/applicants",
            {"reference": "KK-2", "document": "KK"},
            {**intake, "Idempotency-Key": "a\x00"},
            "header.idempotency-key",
        ),
    ]
    for method, path, body, headers, field in cases:
        content = json.dumps(body).encode() if body is not None else None
        response = await api.request(
            method, path, content=content, headers={**headers, "Content-Type": "application/json"}
        )
        assert (response.status_code, response.json()) == (422, {"error": f"{field}: {NUL_TEXT}"}), path


async def test_times_at_the_edge_of_the_calendar_answer_422(hub, api):
    """``9999-12-31T23:59:59-12:00`` is year 10000 in UTC: converting it raised OverflowError (500)."""
    staff = await _key(hub)
    body = {"template": "free_text", "topics": ["kota-pekalongan"], "data": {"title": "a", "text": "b"}}
    for path in ("/v1/announcements/preview", "/v1/announcements"):
        for field, value in [
            ("publish_at", "9999-12-31T23:59:59-12:00"),
            ("valid_from", "0001-01-01T00:00:00+14:00"),
            ("valid_until", "9999-12-31T23:59:59"),
        ]:
            response = await api.post(path, json={**body, field: value}, headers=staff)
            assert response.status_code == 422, (path, field)
            assert response.json()["error"] == f"{field}: must fall between 1970-01-01 and 9998-12-31"


async def test_matrix_webhook_answers_404_and_never_touches_the_homeserver(hub, api):
    """An API process must never log in to Matrix: the route answers before opening the adapter."""
    connections: list[str] = []

    async def homeserver(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(await reader.read(200))
        writer.close()

    server = await asyncio.start_server(homeserver, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    hub.channels["matrix"] = MatrixChannel(
        homeserver=f"http://127.0.0.1:{port}", user_id="@hub:hub.test", device_id="HUBAPI", password="pw"
    )
    hub.role = "api"
    try:
        for method in ("POST", "GET"):
            response = await api.request(method, "/v1/channels/matrix/webhook", content=b"{}")
            assert (response.status_code, response.json()) == (
                404,
                {"error": "channel 'matrix' takes no webhooks"},
            )
        await asyncio.sleep(0.1)
        assert connections == []
    finally:
        server.close()
        await server.wait_closed()


class _Hooked(ScriptedChannel):
    """A webhook adapter whose parsing fails the way a careless one does (``int("²")``)."""

    async def handle_webhook(self, request: WebhookRequest) -> tuple[list[Any], WebhookResponse]:
        if request.query.get("kind") == "odd":
            return [], WebhookResponse(400, "unknown webhook kind")
        int(request.query.get("d", ""))  # "²".isdigit() is True, int("²") raises ValueError
        return [], WebhookResponse(200, "ok")


async def test_webhooks_answer_4xx_with_an_error_for_what_they_cannot_read(hub, api):
    hub.channels["hooked"] = _Hooked(name="hooked", capabilities=Capabilities(webhooks=True))
    unreadable = await api.get("/v1/channels/hooked/webhook?d=%C2%B2")
    assert (unreadable.status_code, unreadable.json()) == (
        400,
        {"error": "the hooked webhook request could not be read"},
    )
    refused = await api.get("/v1/channels/hooked/webhook?kind=odd")
    assert (refused.status_code, refused.json()) == (400, {"error": "unknown webhook kind"})
    fine = await api.get("/v1/channels/hooked/webhook?d=7")
    assert (fine.status_code, fine.text) == (200, "ok")

    # A worker-only adapter that takes webhooks (none does today) is never opened by an API process.
    worker_only = _Hooked(name="device", capabilities=Capabilities(webhooks=True, worker_only=True))
    hub.channels["device"] = worker_only
    hub.role = "api"
    response = await api.post("/v1/channels/device/webhook?d=1")
    assert (response.status_code, response.json()) == (
        404,
        {"error": "channel 'device' takes no webhooks in an API process"},
    )
    assert worker_only.opened == 0


# -- every route, every kind of bad input --------------------------------------------------------------

PATH_VALUES = [BIG, f"-{BIG}", "0", "%C3%A9", "%F0%9F%98%80", "%00", "x" * 300, "1.5", "%20"]
BODIES: list[tuple[bytes | None, str | None]] = [
    (None, None),
    (b"", "application/json"),
    (b"{}", "application/json"),
    (b"[]", "application/json"),
    (b"null", "application/json"),
    (b'"text"', "application/json"),
    (b"{not json", "application/json"),
    (b"a=b&c=%00", "application/x-www-form-urlencoded"),
    (b"\xff\xfe\x00", "text/plain"),
    (
        json.dumps({"topics": [BIG], "reference": "\u00e9" * 70, "status": 1, "email": []}).encode(),
        "application/json",
    ),
    (
        json.dumps({"topic": "kota-pekalongan", "email": "x@" + "a" * 250 + ".com"}).encode(),
        "application/json",
    ),
    (
        b'{"template": "free_text", "topics": ["kota-pekalongan"], "data": {"title": 1e400}}',
        "application/json",
    ),
]


async def test_every_route_answers_bad_input_with_4xx_and_an_error(hub, api, monkeypatch):
    """Each operation in the OpenAPI, with bad path values and bad bodies, with a staff key, an intake
    key and none: never a 5xx, and every 4xx is ``{"error": "..."}``."""
    monkeypatch.setattr(limits, "EMAIL_SUBSCRIBES", 10_000)
    json_please = {"Accept": "application/json"}  # the link pages answer HTML otherwise
    keys = {
        "none": json_please,
        "staff": {**json_please, **await _key(hub)},
        "intake": {**json_please, **await _key(hub, role="intake")},
    }
    spec = (await api.get("/openapi.json")).json()
    failures: list[str] = []
    tried = 0
    for template, operations in spec["paths"].items():
        for method in operations:
            # Bad path values with an empty object as body, then every bad body on a plausible path.
            tries = [(re.sub(r"\{[^}]+\}", value, template), BODIES[2]) for value in PATH_VALUES]
            tries += [(re.sub(r"\{[^}]+\}", "1", template), body) for body in BODIES]
            for path, (content, content_type) in tries:
                for who, headers in keys.items():
                    sent = {**headers, **({"Content-Type": content_type} if content_type else {})}
                    response = await api.request(method.upper(), path, content=content, headers=sent)
                    tried += 1
                    where = f"{method.upper()} {path[:60]} {content!r:.60} ({who})"
                    if response.status_code >= 500:
                        failures.append(f"{where}: {response.status_code} {response.text[:200]}")
                    elif response.status_code >= 400 and not _names_an_error(response):
                        failures.append(f"{where}: {response.status_code} without an error")
    assert failures == []
    assert tried > 500


async def test_openapi_lists_the_errors_each_route_gives(api):
    """Every operation lists its 4xx (keyed ones: 401, 403, 422, 429, 503), each as ``{"error": ...}``."""
    spec = (await api.get("/openapi.json")).json()
    schemas = spec["components"]["schemas"]
    keyed = {"401", "403", "422", "429", "503"}
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            listed = {code for code in responses if code.startswith(("4", "5"))}
            assert any(code.startswith("4") for code in listed), f"{method} {path} lists no 4xx"
            if _uses_key(operation):
                assert keyed <= listed, f"{method} {path}: {sorted(listed)}"
            for code in listed:
                schema = responses[code]["content"]["application/json"]["schema"]
                if "$ref" in schema:
                    schema = schemas[schema["$ref"].rsplit("/", 1)[1]]
                assert "error" in schema.get("required", []), f"{method} {path} {code}: {schema}"
    assert "Retry-After" in spec["paths"]["/v1/subscriptions/email"]["post"]["responses"]["429"]["headers"]
    assert "HTTPValidationError" not in schemas


def _names_an_error(response: httpx.Response) -> bool:
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return False
    return isinstance(error, str) and bool(error)


def _uses_key(operation: dict[str, Any]) -> bool:
    names = {p["name"].lower() for p in operation.get("parameters", [])}
    return "authorization" in names or "x-api-key" in names


# -- schemathesis (optional extra): bounded, as a standing check ---------------------------------------

#: Per database; both together stay under a minute. `make fuzz` (CI, after `make test`) runs 2,000.
FUZZ_CASES = int(os.environ.get("HUB_FUZZ_CASES", "150"))


async def test_schemathesis_finds_no_5xx_and_no_answer_outside_the_openapi(hub, api, monkeypatch):
    """Cases generated from the OpenAPI (valid and invalid, deterministic), sent with no key, a staff key
    and an intake key in turn: no 5xx; every status, content type, header and body as documented."""
    if os.environ.get("HUB_FUZZ_CASES"):  # `make fuzz`: without schemathesis it fails, never skips
        import schemathesis
    else:
        schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st
    from schemathesis import checks

    monkeypatch.setattr(limits, "EMAIL_SUBSCRIBES", 1_000_000)
    monkeypatch.setattr(limits, "KEY_GUESSES", 1_000_000)
    schema = schemathesis.openapi.from_dict((await api.get("/openapi.json")).json())
    strategy = st.one_of(schema.as_strategy(mode) for mode in schemathesis.GenerationMode)
    cases: list[Any] = []

    @settings(
        max_examples=FUZZ_CASES,
        database=None,
        derandomize=True,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(st.data())
    def collect(data: st.DataObject) -> None:
        cases.append(data.draw(strategy))

    collect()
    keys = [{}, await _key(hub), await _key(hub, role="intake")]
    wanted = [
        checks.not_a_server_error,
        checks.status_code_conformance,
        checks.content_type_conformance,
        checks.response_headers_conformance,
        checks.response_schema_conformance,
    ]
    failures: list[str] = []
    for i, case in enumerate(cases):
        sent = case.as_transport_kwargs(base_url="http://hub.test")
        headers = {k: v for k, v in (sent.get("headers") or {}).items() if k.lower() != "user-agent"}
        if "authorization" not in {k.lower() for k in headers} and "x-api-key" not in {
            k.lower() for k in headers
        }:
            headers.update(keys[i % 3])
        response = await api.request(
            sent["method"],
            sent["url"],
            params=sent.get("params"),
            headers=headers,
            json=sent.get("json"),
            content=sent.get("data"),
        )
        try:
            case.validate_response(response, checks=wanted)
        except Exception as exc:  # each failure is collected and shown together
            failures.append(f"{case.method} {case.formatted_path}: {response.status_code} {exc!s:.300}")
    assert failures == []
    assert len(cases) == FUZZ_CASES
