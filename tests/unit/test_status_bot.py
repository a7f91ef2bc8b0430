"""``/jam`` and ``/layanan`` (and SMS ``JAM``/``LAYANAN``) answer from the office's status at the moment asked
(issue 11): before, during and after an hours announcement, compared whole with tests/golden/bot/.

The moment is passed in (what ``hub.clock.utcnow`` gives the bot, HUB_CLOCK_FILE in a deployment); the SMS
text is the one that goes over the air (GSM-7), and each must fit one SMS.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from channels.sms import SmsChannel
from channels.sms.segments import analyze
from channels.testing import ScriptedChannel
from hub.bot.offices import hours_text, services_text
from hub.bot.texts import load_texts
from hub.store.models import Office
from tests.conftest import ROOT
from tests.unit.test_golden import GOLDEN, check_golden
from tests.unit.test_status import _add, _at, db  # noqa: F401  (the fixture)

#: As settings.toml has it: no transliteration, so the reply itself must be GSM-7.
SMS = SmsChannel([], public_url="http://hub.test", dlr_secret="golden")
#: Monday 7 Dec 2026 09:00 WIB; the announcement holds Tuesday and Wednesday; Thursday 10 Dec, back.
MOMENTS = {
    "before": datetime(2026, 12, 7, 2, 0),
    "during": datetime(2026, 12, 8, 2, 0),
    "after": datetime(2026, 12, 10, 2, 0),
}


class Chat:
    """What the replies need of a conversation: its language, its channel, its texts."""

    def __init__(self, channel: Any, locale: str) -> None:
        self.channel, self.locale = channel, locale
        self.texts = load_texts(ROOT / "templates" / "bot")

    def t(self, key: str, **values: Any) -> str:
        return self.texts.get(self.locale, key).format(p=self.channel.capabilities.command_prefix, **values)


@pytest.mark.parametrize("locale", ["id", "en"])
async def test_jam_and_layanan_follow_the_status_at_the_clock(db, locale):  # noqa: F811
    await _add(
        db,
        template="hours_changed",
        data={
            "hours": {"monday": "08:00-12:00", "tuesday": "08:00-12:00", "wednesday": "08:00-12:00"},
            "daily_quota": 80,
            "contacts": [{"service": {"id": "legalisir"}, "number": "0857-0000-1111"}],
        },
        valid_from=datetime(2026, 12, 7, 17, 0),  # Tuesday 00:00 WIB
        valid_until=datetime(2026, 12, 9, 17, 0),  # Thursday 00:00 WIB
    )
    async with db.session() as session:
        office = await session.get(Office, "kota-pekalongan")
    chat = Chat(SMS, locale)
    answers = []
    for name, at in MOMENTS.items():
        eff = await _at(db, at)
        for what, text in (
            ("jam", hours_text(chat, office, eff)),
            ("layanan", services_text(chat, office, eff)),
        ):
            sent = SMS.prepare_text(text)
            assert analyze(sent).encoding == "GSM-7" and analyze(sent).segments == 1, sent
            check_golden(GOLDEN / "bot" / what / f"{name}.sms.{locale}.txt", sent + "\n")
            answers.append(sent)
    assert answers[0] == answers[4] and answers[1] == answers[5]  # after valid-until: as before
    assert answers[2] != answers[0]


async def test_jam_names_urgent_cases_and_the_next_holiday_as_far_as_one_sms_holds(db):  # noqa: F811
    await _add(
        db,
        template="restriction",
        data={"urgent_in_person": [{"id": "akta kematian"}, {"id": "rekam KTP-el"}]},
        valid_from=datetime(2026, 12, 1),
    )
    async with db.session() as session:
        office = await session.get(Office, "kota-pekalongan")
    eff = await _at(db, datetime(2026, 12, 22, 2, 0))  # Tuesday 22 Dec, three days before Christmas
    telegram = hours_text(Chat(ScriptedChannel(name="telegram"), "id"), office, eff)
    assert telegram.splitlines()[1:] == [
        "Hari ini: buka 08.00–11.00 WIB, khusus keperluan mendesak, kuota 50 orang",
        "Keperluan mendesak: akta kematian, rekam KTP-el.",
        "Senin–Kamis 08.00–11.00; Jumat 08.00–10.00 WIB",
        "25 Des: tutup (Hari Natal)",
    ]
    # By SMS each line that would make it a second SMS is left out; the holiday still fits.
    sms = hours_text(Chat(SMS, "id"), office, eff)
    assert sms.splitlines()[1:] == [
        "Hari ini: buka 08.00-11.00 WIB, khusus keperluan mendesak, kuota 50 orang",
        "25 Des: tutup (Hari Natal)",
    ]
    assert analyze(sms).segments == 1
