# ruff: noqa: E501  (the sample announcements read better unwrapped)
"""Every template, channel and language rendered whole and compared exactly with tests/golden/.

The data are the sample offices' own announcements (data/offices.toml, the same file as the shared
scenarios). A changed rendering fails here with a diff; after reviewing it, rewrite the files with
``HUB_UPDATE_GOLDEN=1 pytest tests/unit/test_golden.py`` and review ``git diff tests/golden``.
"""

from __future__ import annotations

import json
import os
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from channels.base import Content
from channels.sms import SmsChannel
from channels.sms.segments import analyze
from hub.announcements import build_context
from hub.kinds import validate
from hub.render import Rendered, Renderer
from tests.conftest import ROOT

GOLDEN = ROOT / "tests" / "golden"
UPDATE = os.environ.get("HUB_UPDATE_GOLDEN") == "1"
CHANNELS = ("email", "telegram", "matrix", "sms")
LOCALES = ("id", "en")
SHARED_OFFICES = ROOT.parent / "shared" / "scenarios" / "offices.toml"


def _offices() -> dict[str, dict[str, Any]]:
    sample = tomllib.loads((ROOT / "data" / "offices.toml").read_text(encoding="utf-8"))
    if SHARED_OFFICES.is_file():  # the scenarios the team shares; the repository's copy must agree
        assert tomllib.loads(SHARED_OFFICES.read_text(encoding="utf-8")) == sample
    return {office["id"]: office for office in sample["office"]}


OFFICES = _offices()


def _change(office: str, kind: str) -> dict[str, Any]:
    return next(c for c in OFFICES[office]["change"] if c["kind"] == kind)


def _examples() -> dict[str, tuple[str, str, dict[str, Any], dict[str, Any]]]:
    """name -> (template, office id, data, times): what each office announced, as staff would enter it."""
    banten = _change("banten-provinsi", "counter_closed")
    serang = _change("kota-serang", "visits_restricted")
    pekalongan = _change("kota-pekalongan", "hours_changed")
    sukabumi_hours = _change("kota-sukabumi", "hours_changed")
    march = {
        "valid_from": datetime(2020, 3, 23, 1, tzinfo=UTC),
        "valid_until": datetime(2020, 4, 6, 1, tzinfo=UTC),
    }
    contacts = [
        {"service": {"id": "KK dan KTP-el", "en": "KK and KTP-el"}, "number": OFFICES["kota-pekalongan"]["contacts"]["KK dan KTP-el"]},
        {"service": {"id": "pindah datang", "en": "moving in or out"}, "number": OFFICES["kota-pekalongan"]["contacts"]["pindah datang"]},
        {"service": {"id": "konfirmasi data", "en": "data confirmation"}, "number": OFFICES["kota-pekalongan"]["contacts"]["konfirmasi data"]},
    ]  # fmt: skip
    return {
        "banten_counters_closed": ("closure", "banten-provinsi", {
            "period_days": 7,
            "review_after_days": banten["review_after_days"],
            "reason": {"id": "Sesuai instruksi Gubernur Banten untuk mencegah penyebaran COVID-19.",
                       "en": "By order of the Governor of Banten, to slow the spread of COVID-19."},
            "exceptions": [
                {"id": "pengambilan dokumen", "en": banten["exceptions"][0]},
                {"id": "legalisir KTP-el untuk dokumen tanpa tanda tangan elektronik", "en": banten["exceptions"][1]},
                {"id": "perubahan data mendesak, misalnya untuk BPJS", "en": banten["exceptions"][2]},
            ],
        }, march),
        "serang_visits_restricted": ("restriction", "kota-serang", {
            "period_days": serang["period_days"],
            "online_app": OFFICES["kota-serang"]["online_app"],
            "urgent_in_person": [
                {"id": "persyaratan rumah sakit", "en": "hospital requirements"},
                {"id": "pendaftaran BPJS", "en": "BPJS enrolment"},
                {"id": "pengajuan paspor", "en": "passport applications"},
                {"id": "perekaman KTP-el", "en": "KTP-el biometric recording"},
                {"id": "pengambilan dokumen", "en": "document pickup"},
            ],
            "link": {"name": "Smartdukcapil", "url": "https://smartdukcapil.serangkota.example.go.id"},
        }, {"valid_from": datetime(2020, 3, 19, 1, tzinfo=UTC), "valid_until": datetime(2020, 4, 2, 1, tzinfo=UTC)}),
        "serang_e_pusda": ("link", "kota-serang", {
            "link_name": _change("kota-serang", "link")["link_name"],
            "url": "https://e-pusda.serangkota.example.go.id",
            "description": {
                "id": "Perpustakaan kota dan perpustakaan keliling (Pusling) tutup dua minggu. Koleksinya tetap bisa dibaca daring.",
                "en": "The city library and its mobile library (Pusling) are closed for two weeks. The collection stays readable online.",
            },
        }, {"valid_until": datetime(2020, 4, 2, 1, tzinfo=UTC)}),
        "kabupaten_serang_online": ("online_only", "kabupaten-serang", {
            "via": "WhatsApp",
            "online_services": [
                {"id": "akta kelahiran", "en": "birth certificates"},
                {"id": "akta kematian", "en": "death certificates"},
                {"id": "KTP-el dan KIA", "en": "KTP-el and KIA"},
                {"id": "pindah datang", "en": "moving in or out"},
            ],
            "note": {"id": "Semua 23 layanan administrasi kependudukan akan tersedia daring.",
                     "en": "All 23 civil-registration services are moving online."},
        }, {"valid_from": datetime(2020, 6, 10, 1, tzinfo=UTC)}),
        "pekalongan_hours": ("hours_changed", "kota-pekalongan", {
            "hours": pekalongan["hours"],
            "daily_quota": pekalongan["daily_quota"],
            "basis": pekalongan["basis"],
            "contacts": contacts,
            "health_protocol": [
                {"id": "jaga jarak antrean", "en": "distance in the queue"},
                {"id": "tempat cuci tangan", "en": "hand-washing station"},
                {"id": "masker untuk pemohon dan petugas", "en": "masks for applicants and staff"},
                {"id": "cek suhu di pintu masuk", "en": "temperature check at the door"},
            ],
            "note": {"id": "Urusan yang tidak mendesak mohon ditunda dua minggu.",
                     "en": "Please put off matters that are not urgent for two weeks."},
        }, march),
        "sukabumi_service_hours": ("hours_changed", "kota-sukabumi", {
            "service_hours": [
                {"service": {"id": "Pengambilan dokumen di kantor", "en": "Document pickup at the office"},
                 "hours": sukabumi_hours["hours"]["pickup"]},
                {"service": {"id": "Bantuan daring lewat WhatsApp", "en": "Online help over WhatsApp"},
                 "hours": sukabumi_hours["hours"]["online_whatsapp"]},
            ],
        }, {"valid_from": datetime(2020, 3, 28, 1, tzinfo=UTC)}),
        "sukabumi_sijempol": ("suspension", "kota-sukabumi", {
            "service": {"id": "jemput bola Sijempol", "en": "Sijempol mobile registration"},
            "since": _change("kota-sukabumi", "service_suspended")["date"],
            "alternative": {"id": "pelayanan dipusatkan di kantor Disdukcapil Kota Sukabumi.",
                            "en": "service is centralised at the Disdukcapil Kota Sukabumi office."},
        }, {}),
        "pekalongan_free_text": ("free_text", "kota-pekalongan", {
            "title": {"id": "Layanan lewat WhatsApp", "en": "Services over WhatsApp"},
            "text": {"id": "Permohonan KK paling banyak diajukan untuk syarat BLT.\nKirim berkas lewat WhatsApp ke nomor layanan.",
                     "en": "Most requests are for the KK needed for BLT cash aid.\nSend your documents over WhatsApp to the service numbers."},
        }, {}),
        # The README's hours.json, as written there.
        "readme_hours": ("hours_changed", "kota-pekalongan", README_HOURS, {}),
    }  # fmt: skip


def _readme_hours() -> dict[str, Any]:
    """The README's own ``hours.json``, read from the README so that the two never drift apart."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("Example `hours.json`:", 1)[1].split("```json\n", 1)[1].split("```", 1)[0]
    return json.loads(block)


README_HOURS = _readme_hours()
EXAMPLES = _examples()


def _office(office_id: str) -> dict[str, Any]:
    office = OFFICES[office_id]
    return {"id": office_id, "name": office["name"], "timezone": office["timezone"], "profile": {}}


def render_example(name: str, channel: str, locale: str) -> Rendered | None:
    """The example rendered as the hub renders it, or None when the example is not in that language."""
    template, office_id, data, times = EXAMPLES[name]
    stored, missing = validate(template, data, LOCALES)
    if locale in missing:
        return None
    context = build_context(
        template, stored, _office(office_id), [], times.get("valid_from"), times.get("valid_until")
    )
    return Renderer(ROOT / "templates").render(
        "announcements", template, channel=channel, locale=locale, context=context
    )


def _document(rendered: Rendered, channel: str) -> str:
    """A rendering as one reviewable text: subject, buttons, the text, and the HTML (not for SMS)."""
    parts = [f"subject: {rendered.subject}"]
    parts += [f"button: {b['text']} -> {b['url']}" for b in rendered.buttons]
    parts += ["----- text", rendered.text]
    if rendered.html and channel != "sms":
        parts += ["----- html", rendered.html]
    return "\n".join(parts) + "\n"


def check_golden(path: Path, actual: str) -> None:
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual, encoding="utf-8")
        return
    if not path.is_file():
        pytest.fail(f"{path.relative_to(ROOT)} is missing: write it with HUB_UPDATE_GOLDEN=1, then review it")
    assert actual == path.read_text(encoding="utf-8")


CASES = [(name, ch, loc) for name in EXAMPLES for ch in CHANNELS for loc in LOCALES]


@pytest.mark.parametrize(("name", "channel", "locale"), CASES, ids=["/".join(c) for c in CASES])
def test_announcement_renderings_match_golden_files(name: str, channel: str, locale: str) -> None:
    rendered = render_example(name, channel, locale)
    path = GOLDEN / "announcements" / name / f"{channel}.{locale}.txt"
    if rendered is None:
        # Not written in this language: its readers get the Indonesian rendering, so there is no file.
        assert not path.exists() or UPDATE, f"{path} exists but {name} has no {locale} texts"
        if UPDATE and path.exists():
            path.unlink()
        return
    check_golden(path, _document(rendered, channel))


def test_every_announcement_kind_has_an_example_in_both_languages() -> None:
    kinds = {template for template, _, _, _ in EXAMPLES.values()}
    assert kinds == set(Renderer(ROOT / "templates").names("announcements"))
    for name in EXAMPLES:
        assert render_example(name, "email", "en") is not None, name


SYSTEM = {
    "applicant/status": [
        ("received", {"status": "received"}),
        ("needs_document", {"status": "needs_document", "missing_documents": ["KK asli", "surat pengantar RT"]}),
        ("ready", {"status": "ready", "pickup_place": "loket 3", "pickup_hours": "08:00-11:00",
                   "note": "Bawa KTP-el lama."}),
        ("rejected", {"status": "rejected", "reason": "data tidak cocok dengan SIAK"}),
    ],
    "system/confirm_subscription": [("kota-pekalongan", {"topic_name": "Dindukcapil Kota Pekalongan"})],
}  # fmt: skip
SYSTEM_CASES = [
    (template, name, ch, loc) for template, items in SYSTEM.items() for name, _ in items
    for ch in CHANNELS for loc in LOCALES
]  # fmt: skip


@pytest.mark.parametrize(
    ("template", "name", "channel", "locale"), SYSTEM_CASES, ids=["/".join(c) for c in SYSTEM_CASES]
)
def test_applicant_and_system_renderings_match_golden_files(
    template: str, name: str, channel: str, locale: str
) -> None:
    group, kind = template.split("/")
    values = dict(SYSTEM[template])[name]
    context = {
        "office": _office("kota-pekalongan"), "tz": "Asia/Jakarta", "pickup_place": None,
        "pickup_hours": None, "reason": None, "note": None, "missing_documents": [],
        "reference": "KK-2020-0042", "document": "KK", **values,
    }  # fmt: skip
    rendered = Renderer(ROOT / "templates").render(
        group, kind, channel=channel, locale=locale, context=context
    )
    check_golden(GOLDEN / group / kind / f"{name}.{channel}.{locale}.txt", _document(rendered, channel))


def test_readme_hours_by_sms_need_no_more_segments_than_their_content() -> None:
    """SMS is paid per segment: the README's example stays GSM-7 (no dash, no bullet) and compact."""
    sms = SmsChannel([], public_url="http://hub.test", dlr_secret="golden")
    expected = {
        "id": "Dindukcapil Kota Pekalongan: jam layanan berubah. Senin 08.00-11.00, Jumat 08.00-10.00 WIB. "
        "Kuota 50 orang/hari. Prokes: jaga jarak antrean, cuci tangan, masker, cek suhu.\n"
        "Balas BERHENTI utk berhenti.",
        "en": "Dindukcapil Kota Pekalongan: new service hours. Monday 08:00-11:00, Friday 08:00-10:00 WIB. "
        "Quota 50 people/day. Health protocol: distance in the queue, hand-washing, masks, temperature check.\n"
        "Reply BERHENTI to stop.",
    }
    for locale, content in expected.items():
        rendered = render_example("readme_hours", "sms", locale)
        assert rendered is not None and rendered.text == content
        facts = sms.describe(Content(text=rendered.text))
        assert (facts["encoding"], facts["segments"]) == ("GSM-7", analyze(content).segments) == ("GSM-7", 2)
