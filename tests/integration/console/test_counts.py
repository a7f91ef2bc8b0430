"""The console's recipient counts come from the stored counts (hub.audience) and say when they were made."""

from __future__ import annotations

import re
from datetime import datetime
from html import unescape

from sqlalchemy import update

from hub import audience, subscriptions
from hub.console.auth import Role
from hub.regions import SERVICES
from hub.store.models import AudienceCount
from tests.console import csrf_of, make_staff, sign_in

PASSWORD = "sandi-rahasia-panjang"
COUNTED = datetime(2026, 12, 1, 3, 0)  # 10.00 WIB


async def _signed_in(hub, client, role=Role.EDITOR, office="banten-provinsi") -> None:
    email = f"{role.name.lower()}@{office}.example.go.id"
    _, secret = await make_staff(hub, email, role, office, PASSWORD)
    assert (await sign_in(client, email, PASSWORD, secret)).status_code == 303


async def _subscribe(hub, slug: str, address: str) -> None:
    await subscriptions.subscribe(hub, slug, "email", address, confirmed=True, send_confirmation=False)


async def _counted_at(hub, when: datetime) -> None:
    async with hub.db.transaction() as session:
        await session.execute(update(AudienceCount).values(counted_at=when))


def _text(html: str) -> str:
    return unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))).strip()


def _rows(html: str, table_start: str) -> list[list[str]]:
    body = html[html.index(table_start) :]
    body = body[body.index("<tbody>") : body.index("</tbody>")]
    return [
        [_text(cell) for cell in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row, re.S)]
        for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)
    ]


async def test_pages_show_the_stored_counts_and_when_they_were_counted(hub, client):
    await _subscribe(hub, "kota-serang", "a@mail.example.com")
    await _subscribe(hub, "kabupaten-serang", "a@mail.example.com")
    await _subscribe(hub, "kabupaten-serang", "b@mail.example.com")
    await audience.refresh(hub)
    await _counted_at(hub, COUNTED)
    await _subscribe(hub, "kota-serang", "later@mail.example.com")  # not counted yet: not shown
    await _signed_in(hub, client)

    page = await client.get("/console/pelanggan")
    assert "Dihitung 1 Des 2026 10.00 WIB;" in page.text
    assert _rows(page.text, 'id="counts"') == [
        ["DP3AKKB Provinsi Banten (bidang kependudukan) (banten-provinsi)", "0", "0"],
        *(
            [f"DP3AKKB Provinsi Banten (bidang kependudukan): {name} (banten-provinsi/{key})", "0", "0"]
            for key, name in sorted(SERVICES.items())
        ),
        ["Disdukcapil Kabupaten Serang (kabupaten-serang)", "2", "2"],
        *(
            [f"Disdukcapil Kabupaten Serang: {name} (kabupaten-serang/{key})", "0", "0"]
            for key, name in sorted(SERVICES.items())
        ),
        ["Disdukcapil Kota Serang (kota-serang)", "1", "1"],
        *(
            [f"Disdukcapil Kota Serang: {name} (kota-serang/{key})", "0", "0"]
            for key, name in sorted(SERVICES.items())
        ),
    ]

    composer = await client.get("/console/pengumuman/baru?jenis=free_text")
    regions = composer.text[composer.text.index("Seluruh wilayah") :]
    assert re.findall(r'<label for="region-\d+">([^<]*)</label>\s*<small>([^<]*)</small>', regions) == [
        ("Provinsi Banten (36)", "email 2"),  # a once, though in two offices
        ("Kabupaten Serang (36.04)", "email 2"),
        ("Kota Serang (36.73)", "email 1"),
    ]
    assert "Dihitung 1 Des 2026 10.00 WIB." in composer.text

    form = {
        "template": "free_text",
        "title_id": "Layanan tutup",
        "text_id": "Kantor tutup.",
        "action": "preview",
    }
    one = await client.post(
        "/console/pengumuman/baru", data={**form, "regions": "36", "csrf": csrf_of(composer.text)}
    )
    assert one.status_code == 200, one.text
    assert "Total penerima: 2</p>" in one.text and "paling banyak" not in one.text
    assert "Jumlah penerima dihitung 1 Des 2026 10.00 WIB; saat dikirim" in one.text
    both = await client.post(
        "/console/pengumuman/baru",
        data={**form, "topics": ["kota-serang", "kabupaten-serang"], "csrf": csrf_of(composer.text)},
    )
    assert both.status_code == 200, both.text
    section = both.text[both.text.index('<section id="preview"') : both.text.index('<div class="channels">')]
    assert _text(section) == (
        "Pratinjau setiap kanal Total penerima: paling banyak 3 "
        "kabupaten-serang: email 2 kota-serang: email 1 "
        "Jumlah per pilihan di atas dijumlahkan: pelanggan yang ada di lebih dari satu pilihan "
        "terhitung lebih dari sekali. Saat dikirim, hub menghitung setiap penerima sekali. "
        "Belum ada teks bahasa Inggris untuk: title, text. Pembaca bahasa Inggris menerima versi Indonesia."
    )
