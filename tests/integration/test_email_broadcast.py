"""An announcement reaches each confirmed email subscriber exactly once, in Indonesian."""

from __future__ import annotations

from hub import announcements, subscriptions
from hub.delivery import drain


async def test_broadcast_reaches_each_confirmed_subscriber_once(hub, mailbox):
    confirmed = [f"warga{i}@mail.example.com" for i in range(300)]
    await subscriptions.import_csv(hub, "email\n" + "\n".join(confirmed), "kota-pekalongan", confirmed=True)
    await subscriptions.subscribe(
        hub, "kota-pekalongan", "email", "pending@mail.example.com", send_confirmation=False
    )
    await subscriptions.subscribe(hub, "kota-pekalongan", "email", "gone@mail.example.com", confirmed=True)
    await subscriptions.unsubscribe(hub, "email", "gone@mail.example.com")

    req = announcements.AnnouncementInput(
        template="hours_changed",
        topics=["kota-pekalongan"],
        data={"hours": {"monday": "08:00-11:00", "friday": "08:00-10:00"}, "daily_quota": 50},
    )
    await announcements.create(hub, req, publish=True)
    await drain(hub)

    assert sorted(m["To"] for m in mailbox.messages) == sorted(confirmed)
    sample = mailbox.to(confirmed[0])[0]
    body = sample.get_body(preferencelist=("plain",)).get_content()
    assert (
        "Jam layanan berubah" in body
        and "Senin: 08.00–11.00 WIB" in body
        and "Kuota: 50 orang per hari" in body
    )
    assert sample["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    # Folded when long (RFC 5322): the value is the link in angle brackets after the folding space.
    assert sample["List-Unsubscribe"].strip().startswith("<http://hub.test/v1/unsubscribe/")
