"""Rendering: Indonesian first, strict about missing values, and sandboxed."""

from __future__ import annotations

from datetime import datetime

import pytest
from jinja2.exceptions import SecurityError

from hub.render import Renderer, RenderError, format_hours, format_moment
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


def context(**data):
    return {
        "office": OFFICE,
        "tz": "Asia/Jakarta",
        "services": [],
        "valid_from": None,
        "valid_until": None,
        "note": None,
        **data,
    }


def test_hours_in_indonesian_with_zone(renderer):
    out = renderer.render(
        "announcements",
        "hours_changed",
        channel="email",
        locale="id",
        context=context(
            hours={"monday": "08:00-11:00", "friday": "08:00-10:00"},
            daily_quota=50,
            health_protocol=["masker"],
            basis="Surat Edaran Wali Kota Pekalongan Nomor 443.1/001",
            valid_from=datetime(2020, 3, 23, 1, 0),
            valid_until=datetime(2020, 4, 6, 1, 0),
        ),
    )
    assert out.subject == "Dindukcapil Kota Pekalongan: jam layanan baru"
    assert "- Senin: 08.00–11.00 WIB" in out.text and "- Jumat: 08.00–10.00 WIB" in out.text
    assert "Berlaku Senin, 23 Maret 2020 sampai Senin, 06 April 2020." in out.text
    assert "<b>08.00–11.00 WIB</b>" in out.html


def test_english_is_the_second_locale(renderer):
    out = renderer.render(
        "announcements",
        "hours_changed",
        channel="email",
        locale="en",
        context=context(hours={"monday": "08:00-11:00"}, daily_quota=50, health_protocol=[], basis=None),
    )
    assert "- Monday: 08:00–11:00 WIB" in out.text and "Quota: 50 people a day." in out.text


def test_zones_outside_java():
    assert format_hours("08:00-11:00", "id", "Asia/Makassar") == "08.00–11.00 WITA"
    assert (
        format_moment(datetime(2020, 3, 23, 0, 0), "id", "Asia/Jayapura")
        == "Senin, 23 Maret 2020 pukul 09.00 WIT"
    )


def test_missing_value_is_an_error_not_a_blank(renderer):
    with pytest.raises(RenderError, match="'daily_quota' is undefined"):
        renderer.render(
            "announcements",
            "hours_changed",
            channel="email",
            locale="id",
            context=context(hours={"monday": "08:00-11:00"}, health_protocol=[], basis=None),
        )


def test_staff_text_cannot_run_code(renderer):
    with pytest.raises(SecurityError):
        renderer.env.from_string("{{ ''.__class__.__mro__[1].__subclasses__() }}").render()
    # Values are data, never templates: braces in a citizen-facing text stay braces.
    out = renderer.render(
        "announcements",
        "free_text",
        channel="email",
        locale="id",
        context=context(title="Info", text="{{ 7*7 }} <script>x</script>", title_en=None, text_en=None),
    )
    assert "{{ 7*7 }}" in out.text
    assert "<script>" not in out.html and "&lt;script&gt;" in out.html


def test_unknown_template_names_the_known_ones(renderer):
    with pytest.raises(RenderError, match=r"unknown template 'nope' \(known: closure, free_text"):
        renderer.render("announcements", "nope", channel="email", locale="id", context={})
