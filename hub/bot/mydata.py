"""A citizen's own data: ``dataku`` shows what the hub holds, ``hapus`` erases it."""

from __future__ import annotations

from hub.bot.conversation import Conversation, deactivate
from hub.subscriptions import subscriber_view, unsubscribe_endpoint


async def cmd_mydata(convo: Conversation, args: list[str]) -> None:
    target = await convo.here()
    view = await subscriber_view(convo.hub, target.id)
    subs = ", ".join(slug for slug, state in view["subscriptions"].items() if state == "confirmed")
    await convo.reply(
        convo.t(
            "mydata",
            channel=view["channel"],
            address=convo.channel.mask_address(view["address"]),
            subs=subs or convo.t("none"),
        ),
        to=target,
    )


async def cmd_erase(convo: Conversation, args: list[str]) -> None:
    target = await convo.here()
    await convo.reply(convo.t("erased"), to=target)
    async with convo.hub.db.transaction() as session:
        await unsubscribe_endpoint(session, target.id, None)
    # The reply above is already planned; the endpoint itself goes once it has been sent.
    await deactivate(
        convo.hub, convo.record.channel, target.address, "erased at the citizen's request", forget=True
    )
