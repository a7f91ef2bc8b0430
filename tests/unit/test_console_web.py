"""The console's rendering helpers: texts of both locales, times in the office's zone, the CSV export."""

from __future__ import annotations

import time
from datetime import datetime
from types import SimpleNamespace

import pytest

from hub.console import audit, web
from hub.store.models import AuditEntry


def test_every_text_exists_in_both_locales():
    assert set(web.TEXTS["id"]) == set(web.TEXTS["en"])
    t_id, t_en = web.translator("id"), web.translator("en")
    assert (t_id("signin.title"), t_en("signin.title")) == ("Masuk", "Sign in")
    assert t_en("home.welcome", name="<b>") == "Welcome, <b>."  # escaped by the template, not here
    assert t_id("no.such.key") == "no.such.key"


def test_a_text_defined_twice_is_an_error(tmp_path):
    (tmp_path / "a.id.toml").write_text('[x]\ny = "1"\n', encoding="utf-8")
    (tmp_path / "b.id.toml").write_text('x.y = "2"\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"'x\.y' is defined twice"):
        web.load_texts(tmp_path)


def test_times_are_shown_in_the_office_zone_with_its_abbreviation():
    hub = object()
    request = SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(hub=hub)))
    web._zones[id(hub)] = (
        time.monotonic(),
        {"kota-makassar": "Asia/Makassar", "kota-jayapura": "Asia/Jayapura"},
    )
    try:
        when = datetime(2026, 12, 4, 1, 30)  # UTC, as the store keeps it
        local_id, local_en = web._local_time(request, "id"), web._local_time(request, "en")
        assert local_id(when, "kota-makassar") == "4 Des 2026 09.30 WITA"
        assert local_en(when, "kota-jayapura") == "4 Dec 2026 10:30 WIT"
        assert local_id(when, "unknown") == "4 Des 2026 08.30 WIB"
        assert local_id(None, "kota-makassar") == ""
    finally:
        del web._zones[id(hub)]


def test_the_csv_export_defuses_spreadsheet_formulas():
    row = AuditEntry(
        id=7,
        at=datetime(2026, 12, 4, 1, 30, 5),
        staff_id=3,
        staff_email='=HYPERLINK("http://x")@example.go.id',
        office_id="kota-serang",
        action="user.create",
        target="staff:4",
        detail={"name": "@SUM(1)", "role": "viewer"},
    )
    assert "".join(audit.csv_rows([row])) == (
        "id,at_utc,staff_id,staff_email,office_id,action,target,detail\r\n"
        '7,2026-12-04T01:30:05,3,"\'=HYPERLINK(""http://x"")@example.go.id",kota-serang,user.create,staff:4,'
        '"{""name"": ""@SUM(1)"", ""role"": ""viewer""}"\r\n'
    )
