"""What a citizen sees: the hub's inline HTML as WhatsApp markup, and the one-line template parameters
Meta accepts (no newline, no tab, no run of more than 4 spaces, within the body's length)."""

from __future__ import annotations

import re

import pytest

from channels.base import Button, Content
from channels.whatsapp import TemplateSettings, flatten, free_form, template_parameters, to_whatsapp

#: Meta's rule for a template parameter (132018).
FORBIDDEN = re.compile(r"[\n\t]| {5,}")


@pytest.mark.parametrize(
    ("html", "expected"),
    [
        ("<b>Tutup</b> hari ini", "*Tutup* hari ini"),
        ("<strong>Tutup</strong> dan <em>libur</em>", "*Tutup* dan _libur_"),
        ("<b>Tutup </b>hari ini", "*Tutup* hari ini"),  # markers hug the words or WhatsApp shows them
        ("<b> </b>kosong", "kosong"),
        ("<s>08.00</s> 09.00", "~08.00~ 09.00"),
        ("Kode <code>K7Q2</code>", "Kode `K7Q2`"),
        ("<pre>Senin  08.00\nJumat  07.30</pre>", "```Senin  08.00\nJumat  07.30```"),
        ("<u>Penting</u>: bawa KK", "Penting: bawa KK"),  # WhatsApp has no underline
        ('<a href="https://x.example/a">Formulir</a>', "Formulir (https://x.example/a)"),
        ('<a href="https://x.example/a">https://x.example/a</a>', "https://x.example/a"),
        ("<b>KTP &amp; KK</b> &lt;baru&gt;", "*KTP & KK* <baru>"),
        ("<b><i>Sangat</i> penting</b>", "*_Sangat_ penting*"),
        ("Baris 1\n\n\n\nBaris 2<br>Baris 3", "Baris 1\n\nBaris 2\nBaris 3"),
        ("<b>tidak ditutup", "*tidak ditutup*"),
    ],
)
def test_inline_html_becomes_whatsapp_markup(html: str, expected: str) -> None:
    assert to_whatsapp(Content(text="(plain)", html=html)) == expected


def test_without_inline_html_the_plain_text_is_sent() -> None:
    assert to_whatsapp(Content(text=" Kantor buka 08.00 \n")) == "Kantor buka 08.00"
    page = "<html><body><p>Email</p></body></html>"
    assert to_whatsapp(Content(text="Kantor buka 08.00", html=page)) == "Kantor buka 08.00"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Kantor tutup.\nBuka lagi Senin.", "Kantor tutup. Buka lagi Senin."),
        ("*Kota Serang*\nLayanan ditutup", "*Kota Serang* · Layanan ditutup"),
        ("Dilayani:\n• KIA\n• akta\n\n_Berlaku 1 April._\n", "Dilayani: • KIA • akta · _Berlaku 1 April._"),
        ("Langkah:\n1. isi formulir\n2) datang", "Langkah: 1. isi formulir 2) datang"),
        ("Kolom\tA     B", "Kolom A B"),
    ],
)
def test_flatten_joins_lines_as_meta_requires(text: str, expected: str) -> None:
    assert flatten(text, 900) == expected
    assert not FORBIDDEN.search(expected)


def test_flatten_cuts_at_a_word_and_says_so() -> None:
    text = "Layanan tatap muka ditutup sementara selama tujuh hari kerja"
    assert flatten(text, 30) == "Layanan tatap muka ditutup…"
    assert flatten("x" * 40, 30) == "x" * 29 + "…"


def test_parameters_share_the_bodys_length_and_a_missing_subject_is_the_first_line() -> None:
    template = TemplateSettings(name="pengumuman", parameters=["subject", "text"], max_length=60)
    content = Content(
        text="Kantor Kota Serang\nLayanan tatap muka ditutup sementara selama tujuh hari kerja."
    )
    subject, text = template_parameters(content, template)
    assert (subject, text) == ("Kantor Kota Serang", "Kantor Kota Serang · Layanan tatap muka…")
    assert len(subject) + len(text) <= 60


def test_an_empty_parameter_is_a_dash_not_a_refusal() -> None:
    template = TemplateSettings(name="status", parameters=["text"])
    assert template_parameters(Content(text="  \n "), template) == ["-"]


def test_repeated_or_long_button_titles_are_made_to_fit() -> None:
    buttons = (
        Button("Kartu Identitas Anak (KIA)", data="s:1"),
        Button("Kartu Identitas Anak (KIA) baru", data="s:2"),
    )
    kind, body = free_form(Content(text="Pilih:", buttons=buttons))
    titles = [b["reply"]["title"] for b in body["action"]["buttons"]]
    assert (kind, titles) == ("interactive", ["Kartu Identitas Ana…", "Kartu Identitas An 2"])


def test_a_body_too_long_for_buttons_goes_as_text_with_the_choices() -> None:
    content = Content(text="x" * 1100, buttons=(Button("Ya", data="y"), Button("Tidak", data="n")))
    assert free_form(content) == ("text", {"body": "x" * 1100 + "\n\n• Ya\n• Tidak", "preview_url": False})


def test_a_link_button_is_written_into_the_text_once() -> None:
    template = TemplateSettings(name="pengumuman", parameters=["text"])
    named = Content(
        text="E-pusda: https://e-pusda.example/",
        html='<a href="https://e-pusda.example/">E-pusda</a>',
        buttons=(Button("Buka E-pusda", url="https://e-pusda.example/"),),
    )
    unnamed = Content(
        text="Formulir baru tersedia.", buttons=(Button("Buka formulir", url="https://f.example/"),)
    )
    assert template_parameters(named, template) == ["E-pusda (https://e-pusda.example/)"]
    assert template_parameters(unnamed, template) == [
        "Formulir baru tersedia. Buka formulir: https://f.example/"
    ]
    assert free_form(unnamed) == (
        "text",
        {"body": "Formulir baru tersedia.\n\nBuka formulir: https://f.example/", "preview_url": False},
    )


def test_entities_are_resolved_once() -> None:
    assert (
        to_whatsapp(Content(text="", html="Tulis &amp;lt;nama&amp;gt; lalu kirim"))
        == "Tulis &lt;nama&gt; lalu kirim"
    )
