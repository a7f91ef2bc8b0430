"""issue 9, second part: guessing limits, secrets at rest, erasure, export and retention

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 15:00:00

One block per hole.
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # --- hole 1 ---
    # Wrong PINs counted per case (every sender, all time) and the moment the case locked: kept in the
    # database so a lock survives the loss of Redis (hub.applicants.check_pin).
    with op.batch_alter_table("applicant_cases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pin_failures", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("pin_locked_at", sa.DateTime(), nullable=True))
    # --- end hole 1 ---
    # --- hole 2 ---
    # Saved idempotent answers: rows now name the Idempotency-Key by its SHA-256 and hold the answer
    # sealed (hub.api.deps). Old rows get their key hashed; an old answer holding a receipt's PIN or
    # deep-link code in clear is deleted (a retry of it then answers 409: the case exists). The deployment
    # key itself leaves the database at the next start (hub.store.db.Database.keyring), not here: only
    # then is the key file's place known.
    import hashlib

    idempotent = sa.table(
        "idempotent_requests",
        sa.column("api_key_id", sa.Integer()),
        sa.column("key", sa.String()),
        sa.column("response", sa.JSON()),
    )
    connection = op.get_bind()
    for api_key_id, key, response in connection.execute(
        sa.select(idempotent.c.api_key_id, idempotent.c.key, idempotent.c.response)
    ).all():
        row = (idempotent.c.api_key_id == api_key_id) & (idempotent.c.key == key)
        if isinstance(response, dict) and ("pin" in response or "link_code" in response):
            connection.execute(sa.delete(idempotent).where(row))
        else:
            hashed = hashlib.sha256(f"idempotency:{key}".encode()).hexdigest()
            connection.execute(sa.update(idempotent).where(row).values(key=hashed))
    # --- end hole 2 ---
    # --- hole 5 ---
    # Requests under UU 27/2022 (erase, export) with the address hashed and masked, and the counts of
    # deliveries no longer held row by row (retention, erasure): hub.citizens, hub.delivery.retention.
    big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "citizen_requests",
        sa.Column("id", big_id, nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=True),
        sa.Column("address_hash", sa.String(length=64), nullable=False),
        sa.Column("address_mask", sa.String(length=64), nullable=False),
        sa.Column("endpoint_id", big_id, nullable=True),
        sa.Column("reply_message_id", big_id, nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("requested_at", sa.DateTime(), nullable=False),
        sa.Column("done_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("citizen_requests", schema=None) as batch_op:
        batch_op.create_index("ix_citizen_requests_done_at", ["done_at"], unique=False)
    op.create_table(
        "delivery_counts",
        sa.Column("message_id", big_id, nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["message_id"], ["messages.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("message_id", "channel", "state"),
    )
    # --- end hole 5 ---


def downgrade() -> None:
    # --- hole 5 ---
    op.drop_table("delivery_counts")
    with op.batch_alter_table("citizen_requests", schema=None) as batch_op:
        batch_op.drop_index("ix_citizen_requests_done_at")
    op.drop_table("citizen_requests")
    # --- end hole 5 ---
    # --- hole 2 ---
    # Sealed answers under hashed keys mean nothing to older code: the retry cache (a day) is emptied.
    # Older code also looks for the deployment key in the database: before running it, set hub.secret_key
    # to the first key of the key file, or it makes a new key and every API key, PIN and link breaks.
    op.execute(sa.text("DELETE FROM idempotent_requests"))
    # --- end hole 2 ---
    # --- hole 1 ---
    with op.batch_alter_table("applicant_cases", schema=None) as batch_op:
        batch_op.drop_column("pin_locked_at")
        batch_op.drop_column("pin_failures")
    # --- end hole 1 ---
