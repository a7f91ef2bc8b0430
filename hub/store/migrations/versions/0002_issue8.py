"""issue 8: what the deployed hub needs

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03 22:30:00

Every operation of issue 8 lives here (one migration for the issue); each helper adds its own block.
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Defect 8: announcement kinds that fit what offices announce (data migrated, no schema change).
    _migrate_announcement_kinds(upgrade=True)
    # Defect 6: the topic through which fan-out reached each endpoint, so a one-click unsubscribe leaves
    # exactly that topic and the footer names it. No foreign key: adding one would rebuild the deliveries
    # table on SQLite; the column is informative and a missing topic falls back to the message's topics.
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("topic_id", sa.Integer(), nullable=True))
    # Defect 10: a reply waits for the earlier replies to the same chat; they are found by endpoint.
    with op.batch_alter_table("message_endpoints", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_message_endpoints_endpoint_id"), ["endpoint_id"], unique=False)

    # Defect 3: one lease row per claim. Renewing a lease touches this one row, never the delivery rows
    # that outcome recording locks, so renewal and recording cannot deadlock; ``requeued`` makes the
    # reconciler queue a dead claim's rows again once, not on every tick.
    op.create_table(
        "claims",
        sa.Column("token", sa.String(length=32), nullable=False),
        sa.Column("lease_until", sa.DateTime(), nullable=False),
        sa.Column("requeued", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("token"),
    )
    op.create_index("ix_claims_lease", "claims", ["requeued", "lease_until"], unique=False)
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.create_index("ix_deliveries_claim", ["claim"], unique=False)


def downgrade() -> None:
    _migrate_announcement_kinds(upgrade=False)
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_claim")
    op.drop_index("ix_claims_lease", table_name="claims")
    op.drop_table("claims")
    with op.batch_alter_table("message_endpoints", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_message_endpoints_endpoint_id"))
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_column("topic_id")


# ---------------------------------------------------------------------------------------------------------
# Defect 8 (helper "render"): announcement data in the kinds of hub/kinds.py.

_DAYS = {"monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"}
_DAYS |= {"senin", "selasa", "rabu", "kamis", "jumat", "sabtu", "minggu"}


def _kind_up(template: str, data: dict) -> tuple[str, dict]:
    """closure/restricted becomes restriction (counters were never closed); English fields become texts."""
    data = dict(data)
    if template == "closure":
        mode = data.pop("mode", "closed")
        if mode == "restricted":
            template = "restriction"
            data["urgent_in_person"] = data.pop("exceptions", [])
    if template == "free_text":
        for name in ("title", "text"):
            english = data.pop(f"{name}_en", None)
            if english and isinstance(data.get(name), str):
                data[name] = {"id": data[name], "en": english}
    if template == "hours_changed":
        hours = data.get("hours") or {}
        services = {k: v for k, v in hours.items() if k.lower() not in _DAYS}
        if services:
            data["hours"] = {k: v for k, v in hours.items() if k.lower() in _DAYS}
            data["service_hours"] = [{"service": k, "hours": v} for k, v in services.items()]
    if template in ("hours_changed", "online_only") and isinstance(data.get("contacts"), dict):
        data["contacts"] = [{"service": k, "number": v} for k, v in data["contacts"].items()]
    return template, data


def _kind_down(template: str, data: dict) -> tuple[str, dict]:
    data = dict(data)
    if template == "restriction":
        template = "closure"
        data["mode"] = "restricted"
        data["exceptions"] = data.pop("urgent_in_person", [])
    if template == "free_text":
        for name in ("title", "text"):
            if isinstance(data.get(name), dict):
                data[f"{name}_en"] = data[name].get("en")
                data[name] = data[name].get("id", "")
    return template, data


def _migrate_announcement_kinds(*, upgrade: bool) -> None:
    announcements = sa.table(
        "announcements",
        sa.column("id", sa.Integer),
        sa.column("template", sa.String),
        sa.column("data", sa.JSON),
    )
    bind = op.get_bind()
    rows = bind.execute(sa.select(announcements.c.id, announcements.c.template, announcements.c.data)).all()
    change = _kind_up if upgrade else _kind_down
    for row_id, template, data in rows:
        new_template, new_data = change(template, data or {})
        if (new_template, new_data) != (template, data):
            bind.execute(
                announcements.update()
                .where(announcements.c.id == row_id)
                .values(template=new_template, data=new_data)
            )
