"""issue 10: deliveries by (message, state, channel) for the console's progress and pending checks

The dashboard and an announcement's page count one message's deliveries per channel and state, and ask
whether any is still pending. By ``uq_delivery`` (message, endpoint) that reads every row of the message
(372k for a city-wide send: 0.3-0.8 s on SQLite); this index answers the pending check with one seek and
the counts from the index alone (docs/benchmarks.md, "console").

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 17:00:00
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_deliveries_message_state", "deliveries", ["message_id", "state", "channel"])


def downgrade() -> None:
    op.drop_index("ix_deliveries_message_state", table_name="deliveries")
