"""What the SMS channel needs to fit the hub: its settings table as the hub passes it, the hub's command
words as keywords, the per-number inbound limit, and the short SMS templates."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from channels.base import WebhookRequest
from channels.sms import MoLimiter, SmsChannel, parse_mo
from channels.sms.segments import analyze, non_gsm7_characters

from .conftest import MO_SECRET, make_channel

KANNEL = {"driver": "kannel", "url": "http://kannel.invalid:13013", "username": "u", "password": "p"}
TEMPLATES = Path(__file__).resolve().parents[3] / "templates"


def test_hub_settings_table_is_accepted() -> None:
    """``hub.context.load_channels`` passes the whole ``[channels.sms]`` table, ``enabled`` included."""
    channel = SmsChannel.from_settings(
        {"enabled": True, "number": "1500537", "dlr_secret": "s", "mo_per_minute": 3, "gateways": [KANNEL]},
        public_url="https://hub.example",
    )
    assert channel.mo_limit.per_minute == 3


@pytest.mark.parametrize(
    ("text", "command", "locale"),
    [
        ("LANGGANAN kota-pekalongan", "langganan", "id"),
        ("bantuan", "bantuan", "id"),
        ("Dataku", "dataku", "id"),
        ("HAPUS", "hapus", "id"),
        ("mydata", "dataku", "en"),
    ],
)
def test_the_hubs_own_command_words_are_keywords(text: str, command: str, locale: str) -> None:
    record = parse_mo("+6281234567890", text)
    assert (record.kind, record.command, record.locale) == ("command", command, locale)


def test_mo_limiter_window() -> None:
    limiter = MoLimiter(2, window=60)
    assert limiter.allow("+62811", now=0) and limiter.allow("+62811", now=1)
    assert not limiter.allow("+62811", now=2)
    assert limiter.allow("+62812", now=2)  # per number
    assert limiter.allow("+62811", now=60.5)  # the first one left the window
    assert MoLimiter(0).allow("+62811")  # off


def test_mo_limiter_forgets_the_oldest_numbers() -> None:
    limiter = MoLimiter(1, max_numbers=2)
    for number in ("a", "b", "c"):
        assert limiter.allow(number, now=0)
    assert list(limiter._seen) == ["b", "c"]


async def test_inbound_over_the_limit_gets_no_record() -> None:
    channel = make_channel([dict(KANNEL)], "https://hub.example", mo_per_minute=2)
    query = {"kind": "mo", "k": MO_SECRET, "from": "081234567890", "text": "JAM"}
    results = [await channel.handle_webhook(WebhookRequest({}, query, b"")) for _ in range(3)]
    assert [len(records) for records, _ in results] == [1, 1, 0]
    assert all(response.status == 200 for _, response in results)  # Kannel must not retry


# ---------------------------------------------------------------------------------------------------------
# templates/**/sms.*.j2: short, GSM-7 clean


OFFICE = {"id": "kota-pekalongan", "name": "Dindukcapil Kota Pekalongan", "timezone": "Asia/Jakarta",
          "profile": {}}  # fmt: skip
ANNOUNCEMENTS = {
    "hours_changed": {
        "hours": {d: "08:00-11:00" for d in ("monday", "tuesday", "wednesday", "thursday")}
        | {"friday": "08:00-10:00"},
        "daily_quota": 50, "basis": "SE 443.1/001",
        "health_protocol": [{"id": "jaga jarak", "en": "keep your distance"},
                            {"id": "wajib masker", "en": "masks"}],
    },
    "closure": {"reason": {"id": "Pencegahan COVID-19.", "en": "To slow COVID-19."}, "period_days": 14,
                "online_app": "Dukcapil Online",
                "exceptions": [{"id": "pengambilan dokumen", "en": "document pickup"}]},
    "restriction": {"period_days": 14, "online_app": "Smartdukcapil",
                    "urgent_in_person": [{"id": "pendaftaran BPJS", "en": "BPJS enrolment"}]},
    "suspension": {"service": {"id": "jemput bola", "en": "mobile registration"}, "since": "2020-03-16",
                   "alternative": {"id": "datang ke kantor dinas.", "en": "come to the main office."}},
    "online_only": {"via": "WhatsApp", "contacts": [
        {"service": {"id": "KK dan KTP-el", "en": "KK and KTP-el"}, "number": "0858-7031-0341"},
        {"service": {"id": "pindah datang", "en": "moving"}, "number": "0857-1250-7533"}]},
    "link": {"link_name": "Formulir daring", "url": "https://dukcapil.example.go.id/form",
             "description": {"id": "Isi formulir permohonan KK secara daring.",
                             "en": "Apply for a KK online."}},
    "free_text": {"title": {"id": "Libur nasional", "en": "Public holiday"},
                  "text": {"id": "Kantor tutup 1 Mei. Layanan daring tetap buka.",
                           "en": "The office is closed on 1 May. Online services stay open."}},
}  # fmt: skip


@pytest.mark.parametrize("locale", ["id", "en"])
@pytest.mark.parametrize("kind", sorted(ANNOUNCEMENTS))
def test_sms_announcements_are_short_and_gsm7(kind: str, locale: str) -> None:
    from hub.render import Renderer

    assert (TEMPLATES / "announcements" / kind / f"sms.{locale}.txt.j2").is_file()
    from hub.announcements import build_context
    from hub.kinds import validate

    data, missing = validate(kind, ANNOUNCEMENTS[kind])
    assert missing == {}
    context = build_context(kind, data, OFFICE, [], None, datetime(2020, 4, 6, 10, tzinfo=UTC))
    text = (
        Renderer(TEMPLATES).render("announcements", kind, channel="sms", locale=locale, context=context).text
    )
    info = analyze(text)
    assert non_gsm7_characters(text) == [], text
    assert 1 <= info.segments <= 3, (info, text)
    assert text.startswith("Dindukcapil Kota Pekalongan: ")
    assert text.endswith("Reply BERHENTI to stop." if locale == "en" else "Balas BERHENTI utk berhenti.")


@pytest.mark.parametrize("locale", ["id", "en"])
@pytest.mark.parametrize(
    ("status", "extra"),
    [
        ("received", {}),
        ("verified", {}),
        ("needs_document", {"missing_documents": ["KK asli", "surat pengantar RT"]}),
        ("ready", {"pickup_place": "loket 3", "pickup_hours": "08:00-11:00"}),
        ("rejected", {"reason": "data tidak cocok."}),
        ("done", {}),
    ],
)
def test_sms_applicant_status_is_one_gsm7_segment(status: str, extra: dict, locale: str) -> None:
    from hub.render import Renderer

    context = {"office": OFFICE, "tz": "Asia/Jakarta", "pickup_place": None, "pickup_hours": None,
               "reason": None, "note": None, "missing_documents": [], **extra, "status": status,
               "reference": "KK-2020-0042", "document": "KK"}  # fmt: skip
    text = (
        Renderer(TEMPLATES).render("applicant", "status", channel="sms", locale=locale, context=context).text
    )
    assert non_gsm7_characters(text) == [] and analyze(text).segments == 1, text
    assert "KK-2020-0042" in text and "BERHENTI" not in text  # not an announcement: no opt-out line
