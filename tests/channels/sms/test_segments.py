import pytest

from channels.sms.segments import (
    TooManySegments,
    analyze,
    check_segments,
    is_gsm7,
    transliterate,
)


@pytest.mark.parametrize(
    ("length", "segments"),
    [(0, 0), (1, 1), (160, 1), (161, 2), (306, 2), (307, 3), (459, 3), (460, 4)],
)
def test_gsm7_plain(length: int, segments: int) -> None:
    info = analyze("a" * length)
    assert (info.encoding, info.segments, info.characters, info.units) == ("GSM-7", segments, length, length)


@pytest.mark.parametrize("ch", [*"^{}\\[~]|€", "\f"])
def test_extension_characters_cost_two_septets(ch: str) -> None:
    assert analyze(ch).units == 2
    assert analyze(ch * 80).segments == 1  # 160 septets
    assert analyze(ch * 81).segments == 2  # 162 septets
    assert analyze("a" * 158 + ch).segments == 1
    assert analyze("a" * 159 + ch).segments == 2


def test_escape_pair_is_not_split_across_segments() -> None:
    # 152 septets of "a", then € (2 septets) would straddle the 153-septet boundary: it moves to part 2.
    text = "a" * 152 + "€" + "a" * 152
    info = analyze(text)
    assert info.units == 306
    assert info.segments == 3
    assert analyze("a" * 151 + "€" + "a" * 153).segments == 2


def test_gsm_basic_accents_stay_gsm() -> None:
    text = "Pengambilan KTP-el: Senin–Jumat"  # en dash is not GSM
    assert analyze(text).encoding == "UCS-2"
    assert analyze("àéèùìòÇÄÖÑÜäöñüÅåØøÆæßÉΔΦΓΛΩΠΨΣΘΞ¡¿£¥§¤@").encoding == "GSM-7"


@pytest.mark.parametrize(
    ("length", "segments"), [(1, 1), (70, 1), (71, 2), (134, 2), (135, 3), (201, 3), (202, 4)]
)
def test_ucs2(length: int, segments: int) -> None:
    info = analyze("ش" * length)
    assert (info.encoding, info.segments, info.units) == ("UCS-2", segments, length)


def test_emoji_counts_two_units() -> None:
    info = analyze("😀")
    assert (info.encoding, info.units, info.characters, info.segments) == ("UCS-2", 2, 1, 1)
    assert analyze("😀" * 35).segments == 1  # 70 units
    assert analyze("😀" * 35 + "a").segments == 2  # 71 units


def test_emoji_is_never_split_across_segments() -> None:
    # 66 units + an emoji: the emoji cannot occupy unit 67 and 68 of part one, so it starts part two.
    assert analyze("a" * 66 + "😀" + "a" * 66).segments == 3  # 66 | 2+66 = 68 > 67 → 66 | 2+65 | 1
    assert analyze("a" * 65 + "😀" + "a" * 67).segments == 2  # 67 | 67


def test_bmp_symbols_count_one() -> None:
    assert analyze("✓" * 70).segments == 1


def test_check_segments_raises_a_clear_error() -> None:
    assert check_segments("a" * 918, 6).segments == 6
    with pytest.raises(TooManySegments, match=r"7 SMS segments but at most 6.*GSM-7"):
        check_segments("a" * 919, 6)
    with pytest.raises(TooManySegments, match=r"UCS-2.*force UCS-2: '😀'"):
        check_segments("😀" + "a" * 500, 6)


def test_transliterate_quotes_dashes_ellipsis_nbsp_accents() -> None:
    text = "“Kantor” buka 08.00\u00a0–\u00a014.00… Jl. Diponegoro ‘No. 5’ — café ĀŌ"
    out = transliterate(text)
    assert out == "\"Kantor\" buka 08.00 - 14.00... Jl. Diponegoro 'No. 5' - café AO"
    assert is_gsm7(out)
    assert analyze(text).encoding == "UCS-2"
    assert analyze(out).encoding == "GSM-7"


def test_transliterate_leaves_text_that_needs_ucs2_anyway() -> None:
    for text in ("“Selamat” 😀", "Jadwal – ‏مرحبا", "数据"):
        assert transliterate(text) == text
    assert transliterate("plain text") == "plain text"
