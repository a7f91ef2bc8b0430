# ruff: noqa: E501  (expected texts read better unwrapped)
"""Rendering: Indonesian first, strict about missing values, sandboxed, and never glued together."""

from __future__ import annotations

import importlib.util
from datetime import UTC, datetime

import pytest
from jinja2.exceptions import SecurityError

from hub import kinds
from hub.announcements import build_context
from hub.render import Renderer, RenderError, format_hours, format_moment, localized, schedule
from tests.conftest import ROOT

OFFICE = {
    "id": "kota-pekalongan",
    "name": "Dindukcapil Kota Pekalongan",
    "timezone": "Asia/Jakarta",
    "profile": {},
}


@pytest.fixture
def renderer() -> Renderer:
    return Renderer(ROOT / "templates")


def render(renderer: Renderer, kind: str, data: dict, channel: str, locale: str, **times):
    stored, _ = kinds.validate(kind, data)
    context = build_context(kind, stored, OFFICE, [], times.get("valid_from"), times.get("valid_until"))
    return renderer.render("announcements", kind, channel=channel, locale=locale, context=context)


def test_a_tag_ending_a_line_keeps_its_line_break(renderer):
    """Defect 7: trim_blocks glued "per hari." to "Protokol kesehatan:" and URLs to the next word."""
    source = (
        "{% if quota %}Kuota: {{ quota }} orang per hari.{% endif %}\n"
        "{% if protocol %}\n"
        "Protokol kesehatan:\n"
        "{% for item in protocol %}\n"
        "- {{ item }}\n"
        "{% endfor %}\n"
        "{% endif %}\n"
        "Tautan: {% if url %}{{ url }}{% endif %}\n"
        "Berlaku sampai 6 April."
    )
    out = renderer.env.from_string(source).render(
        quota=50, protocol=["masker", "cek suhu"], url="https://x.id"
    )
    assert out == (
        "Kuota: 50 orang per hari.\n"
        "Protokol kesehatan:\n"
        "- masker\n"
        "- cek suhu\n"
        "Tautan: https://x.id\n"
        "Berlaku sampai 6 April."
    )


def test_hours_rendered_whole_with_days_collapsed(renderer):
    hours = {d: "08:00-11:00" for d in ("monday", "tuesday", "wednesday", "thursday")} | {
        "friday": "08:00-10:00"
    }
    out = render(
        renderer,
        "hours_changed",
        {"hours": hours, "daily_quota": 50, "health_protocol": ["masker"]},
        "email",
        "id",
        valid_from=datetime(2020, 3, 23, 1, 0),
        valid_until=datetime(2020, 4, 6, 1, 0),
    )
    assert out.subject == "Dindukcapil Kota Pekalongan: jam layanan baru"
    assert out.text.split("\n\n--\n")[0] == (
        "DINDUKCAPIL KOTA PEKALONGAN\n"
        "Jam layanan berubah:\n"
        "- Senin–Kamis: 08.00–11.00 WIB\n"
        "- Jumat: 08.00–10.00 WIB\n"
        "Kuota: 50 orang per hari.\n"
        "\n"
        "Protokol kesehatan:\n"
        "- masker\n"
        "\n"
        "Berlaku Senin, 23 Maret 2020 sampai Senin, 06 April 2020."
    )


def test_schedule_joins_only_consecutive_days_with_equal_hours():
    hours = {"friday": "08:00-10:00", "monday": "08:00-11:00", "wednesday": "08:00-11:00", "tuesday": "08:00-11:00",
             "saturday": "08:00-11:00"}  # fmt: skip
    assert schedule(hours, "id", "Asia/Makassar") == [
        ("Senin–Rabu", "08.00–11.00 WITA"),
        ("Jumat", "08.00–10.00 WITA"),
        ("Sabtu", "08.00–11.00 WITA"),
    ]
    assert schedule(hours, "en", "Asia/Jayapura", plain=True) == [
        ("Monday-Wednesday", "08:00-11:00"),
        ("Friday", "08:00-10:00"),
        ("Saturday", "08:00-11:00"),
    ]


def test_zones_outside_java():
    assert format_hours("08:00-11:00", "id", "Asia/Makassar") == "08.00–11.00 WITA"
    assert (
        format_moment(datetime(2020, 3, 23, 0, 0), "id", "Asia/Jayapura")
        == "Senin, 23 Maret 2020 pukul 09.00 WIT"
    )
    # An aware time is shown in the office's zone, not re-read as UTC.
    assert (
        format_moment(datetime(2020, 3, 23, 8, 0, tzinfo=UTC), "en", "Asia/Makassar")
        == "Monday, 23 March 2020 at 16:00 WITA"
    )


def test_english_rendering_never_carries_indonesian_text(renderer):
    """Defect 7: a text given in Indonesian only leaves the announcement without an English rendering."""
    data = {
        "hours": {"monday": "08:00-11:00"},
        "health_protocol": [{"id": "masker", "en": "masks"}],
        "note": "Bawa KK",
    }
    _, missing = kinds.validate("hours_changed", data, ["id", "en"])
    assert missing == {"en": ["note"]}
    with pytest.raises(RenderError, match="no 'en' text for 'Bawa KK'"):
        render(renderer, "hours_changed", data, "email", "en")
    assert localized({"id": "masker", "en": "masks"}, "en") == "masks"


def test_missing_value_is_an_error_not_a_blank(renderer):
    with pytest.raises(RenderError, match="'daily_quota' is undefined"):
        renderer.render(
            "announcements",
            "hours_changed",
            channel="email",
            locale="id",
            context={"office": OFFICE, "tz": "Asia/Jakarta", "valid_from": None, "valid_until": None,
                     "hours": {"monday": "08:00-11:00"}, "service_hours": [], "contacts": [],
                     "health_protocol": [], "basis": None, "note": None, "link": None},
        )  # fmt: skip


def test_staff_text_cannot_run_code(renderer):
    with pytest.raises(SecurityError):
        renderer.env.from_string("{{ ''.__class__.__mro__[1].__subclasses__() }}").render()
    # Values are data, never templates: braces in a citizen-facing text stay braces.
    out = render(
        renderer, "free_text", {"title": "Info", "text": "{{ 7*7 }} <script>x</script>"}, "telegram", "id"
    )
    assert out.text == (
        "DINDUKCAPIL KOTA PEKALONGAN\nInfo\n\n{{ 7*7 }} <script>x</script>\n\n"
        "Kirim /berhenti untuk berhenti berlangganan."
    )
    assert out.html == (
        "<b>Dindukcapil Kota Pekalongan</b>\n<b>Info</b>\n\n{{ 7*7 }} &lt;script&gt;x&lt;/script&gt;\n\n"
        "<i>Kirim /berhenti untuk berhenti berlangganan.</i>"
    )


def test_unknown_template_names_the_known_ones(renderer):
    with pytest.raises(RenderError, match=r"unknown template 'nope' \(known: closure, free_text"):
        renderer.render("announcements", "nope", channel="email", locale="id", context={})


# ---------------------------------------------------------------------------------------------------------
# Defect 8: kinds that fit what offices announce


def test_closure_never_says_counters_closed_when_only_visits_are_restricted(renderer):
    with pytest.raises(kinds.KindError, match="use the template 'restriction'"):
        kinds.validate("closure", {"mode": "restricted", "period_days": 14})
    data = {"period_days": 14, "online_app": "Smartdukcapil",
            "urgent_in_person": [{"id": "pendaftaran BPJS", "en": "BPJS enrolment"}]}  # fmt: skip
    assert render(renderer, "restriction", data, "sms", "id").text == (
        "Dindukcapil Kota Pekalongan: kunjungan ke kantor dibatasi 14 hari. Ajukan permohonan daring lewat "
        "Smartdukcapil. Loket tetap buka utk keperluan mendesak: pendaftaran BPJS.\n"
        "Balas BERHENTI utk berhenti."
    )


def test_suspension_until_further_notice_with_its_alternative(renderer):
    data = {
        "service": {"id": "jemput bola Sijempol", "en": "Sijempol mobile registration"},
        "since": "2020-03-16",
        "alternative": {"id": "datang ke kantor Disdukcapil.", "en": "come to the Disdukcapil office."},
        "link": {"name": "Info", "url": "https://dukcapil.example.go.id/info"},
        "note": {"id": "Mohon maaf.", "en": "We apologise."},
    }
    assert render(renderer, "suspension", data, "sms", "en").text == (
        "Dindukcapil Kota Pekalongan: the Sijempol mobile registration service is suspended from Monday, "
        "16 March 2020 until further notice. Instead: come to the Disdukcapil office. "
        "Info: https://dukcapil.example.go.id/info We apologise.\nReply BERHENTI to stop."
    )
    with pytest.raises(kinds.KindError, match="until must not be before since"):
        kinds.validate("suspension", {**data, "until": "2020-03-01"})


def test_hours_name_what_is_wrong():
    with pytest.raises(kinds.KindError, match=r"hours: 'pickup' is not a day .* \"service_hours\""):
        kinds.validate("hours_changed", {"hours": {"pickup": "08:00-11:00"}})
    with pytest.raises(
        kinds.KindError, match=r"hours: hours for 'senin' must look like 08:00-11:00, not '8-11'"
    ):
        kinds.validate("hours_changed", {"hours": {"senin": "8-11"}})


def test_migration_0002_moves_old_announcement_data_into_the_kinds():
    path = ROOT / "hub" / "store" / "migrations" / "versions" / "0002_issue8.py"
    spec = importlib.util.spec_from_file_location("migration_0002", path)
    assert spec and spec.loader
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    old = [
        ("closure", {"mode": "restricted", "period_days": 14, "exceptions": ["pengambilan dokumen"]}),
        ("closure", {"mode": "closed", "reason": "COVID-19"}),
        ("free_text", {"title": "Libur", "text": "Tutup.", "title_en": "Holiday", "text_en": "Closed."}),
        ("hours_changed", {"hours": {"monday": "08:00-11:00", "pickup": "08:00-11:00"},
                           "contacts": {"KK": "0858-7031-0341"}}),
    ]  # fmt: skip
    new = [migration._kind_up(t, d) for t, d in old]
    assert new == [
        ("restriction", {"period_days": 14, "urgent_in_person": ["pengambilan dokumen"]}),
        ("closure", {"reason": "COVID-19"}),
        ("free_text", {"title": {"id": "Libur", "en": "Holiday"}, "text": {"id": "Tutup.", "en": "Closed."}}),
        ("hours_changed", {"hours": {"monday": "08:00-11:00"},
                           "service_hours": [{"service": "pickup", "hours": "08:00-11:00"}],
                           "contacts": [{"service": "KK", "number": "0858-7031-0341"}]}),
    ]  # fmt: skip
    for template, data in new:
        kinds.validate(template, data)  # every migrated row is valid data of its kind
    assert migration._kind_down(*new[0]) == ("closure", old[0][1])
