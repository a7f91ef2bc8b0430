"""issue 12: indexes for the hot queries at province scale (tests/scale/test_explain.py, 10M deliveries)

- ``ix_deliveries_lane_pending``: ``/metrics`` reports the age of the oldest due delivery per lane
  (``hub.metrics.oldest_due``). Through ``ix_deliveries_due`` (state, next_attempt_at) a ``min()`` for one
  lane walks every older pending row of the other lane; this partial index holds the pending rows only,
  led by the lane, so each lane's minimum is one descent.
- ``ix_deliveries_pending_enqueued``: the reconciler looks for due rows not enqueued for a while (a lost
  enqueue) every few seconds. Through the state index it read every pending row to check
  ``enqueued_at`` (a million while a province-wide broadcast drains); this one finds the stale ones only.
- ``ix_messages_state_send_at``: the reconciler's messages to start or plan, and the burst worker's
  "anything planning?", read the few scheduled or planning messages instead of every message.

- ``ix_deliveries_claim`` and ``ix_deliveries_provider_id`` become partial (``IS NOT NULL``): a row gets
  its claim and its provider id after it is planned, so planning a broadcast inserts no entry into them
  (two of nine index insertions per planned row). Lookups by ``claim = …`` or ``provider_id = …`` still
  use them (https://www.postgresql.org/docs/15/indexes-partial.html, https://www.sqlite.org/partialindex.html).

- ``claims.requeued_at``: when the reconciler queued a dead claim's rows again. If that job is lost too
  (Redis restarted before a worker took it), rows still ``sending`` under the claim ``stale_after_seconds``
  later are queued again; before, a requeued claim was never looked at again.

The pending indexes hold pending rows only (a few thousand of ten million). PostgreSQL builds each with a
lock that holds writes to ``deliveries`` back while it reads the table once (seconds at ten million rows).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 22:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

PENDING = sa.text("state IN ('queued', 'retrying')")


def upgrade() -> None:
    op.add_column("claims", sa.Column("requeued_at", sa.DateTime(), nullable=True))
    op.create_index(
        "ix_deliveries_lane_pending",
        "deliveries",
        ["lane", "next_attempt_at"],
        postgresql_where=PENDING,
        sqlite_where=PENDING,
    )
    op.create_index(
        "ix_deliveries_pending_enqueued",
        "deliveries",
        ["enqueued_at", "next_attempt_at"],
        postgresql_where=PENDING,
        sqlite_where=PENDING,
    )
    op.create_index("ix_messages_state_send_at", "messages", ["state", "send_at"])
    for name, column in (("ix_deliveries_claim", "claim"), ("ix_deliveries_provider_id", "provider_id")):
        op.drop_index(name, table_name="deliveries")
        filled = sa.text(f"{column} IS NOT NULL")
        op.create_index(name, "deliveries", [column], postgresql_where=filled, sqlite_where=filled)


def downgrade() -> None:
    with op.batch_alter_table("claims") as batch_op:
        batch_op.drop_column("requeued_at")
    for name, column in (("ix_deliveries_claim", "claim"), ("ix_deliveries_provider_id", "provider_id")):
        op.drop_index(name, table_name="deliveries")
        op.create_index(name, "deliveries", [column])
    op.drop_index("ix_messages_state_send_at", table_name="messages")
    op.drop_index("ix_deliveries_pending_enqueued", table_name="deliveries")
    op.drop_index("ix_deliveries_lane_pending", table_name="deliveries")
