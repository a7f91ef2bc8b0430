"""issue 9: security and privacy

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 14:00:00

Every operation of issue 9 lives here (one migration for the issue), one block per hole.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # --- hole 3: deep-link codes (single-use, expiring) ---
    # Only a SHA-256 of each receipt code is kept (unkeyed: a code holds ~90 random bits, so its hash
    # cannot be reversed, and rotating the deployment secret leaves printed receipts working). A code
    # already issued expires 7 days after its case was opened (hub.applicants.LINK_CODE_DAYS) and stays
    # usable once until then.
    import hashlib
    from datetime import timedelta

    with op.batch_alter_table("applicant_cases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("link_code_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("link_expires_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("link_used_at", sa.DateTime(), nullable=True))
    cases = sa.table(
        "applicant_cases",
        sa.column("id", sa.BigInteger()),
        sa.column("link_code", sa.String()),
        sa.column("created_at", sa.DateTime()),
        sa.column("link_code_hash", sa.String()),
        sa.column("link_expires_at", sa.DateTime()),
    )
    bind = op.get_bind()
    for case_id, code, created_at in bind.execute(
        sa.select(cases.c.id, cases.c.link_code, cases.c.created_at)
    ).all():
        bind.execute(
            cases.update()
            .where(cases.c.id == case_id)
            .values(
                link_code_hash=hashlib.sha256(code.encode()).hexdigest(),
                link_expires_at=created_at + timedelta(days=7),
            )
        )
    with op.batch_alter_table("applicant_cases", schema=None) as batch_op:
        batch_op.alter_column("link_code_hash", existing_type=sa.String(length=64), nullable=False)
        batch_op.alter_column("link_expires_at", existing_type=sa.DateTime(), nullable=False)
        batch_op.create_unique_constraint("uq_case_link_code_hash", ["link_code_hash"])
        batch_op.drop_column("link_code")
    # --- end hole 3 ---
    # --- hole 6: links that expire and never revive what a citizen ended ---
    # When an endpoint or a subscription last changed state: a confirmation link made before that does
    # nothing. Null on existing rows means "no change since this column exists"; every link that carries
    # a time is newer than that, and older links cannot confirm at all.
    with op.batch_alter_table("endpoints", schema=None) as batch_op:
        batch_op.add_column(sa.Column("state_changed_at", sa.DateTime(), nullable=True))
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("state_changed_at", sa.DateTime(), nullable=True))
    # --- end hole 6 ---
    pass


def downgrade() -> None:
    # --- hole 6 ---
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.drop_column("state_changed_at")
    with op.batch_alter_table("endpoints", schema=None) as batch_op:
        batch_op.drop_column("state_changed_at")
    # --- end hole 6 ---
    # --- hole 3 ---
    # The codes themselves are gone: each case gets its hash as its old-style code, which no receipt
    # carries, so deep links stop working after a downgrade (tracking by reference and PIN still works).
    with op.batch_alter_table("applicant_cases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("link_code", sa.String(length=64), nullable=True))
    op.execute("UPDATE applicant_cases SET link_code = link_code_hash")
    with op.batch_alter_table("applicant_cases", schema=None) as batch_op:
        batch_op.alter_column("link_code", existing_type=sa.String(length=64), nullable=False)
        batch_op.create_unique_constraint("applicant_cases_link_code_key", ["link_code"])
        batch_op.drop_constraint("uq_case_link_code_hash", type_="unique")
        batch_op.drop_column("link_used_at")
        batch_op.drop_column("link_expires_at")
        batch_op.drop_column("link_code_hash")
    # --- end hole 3 ---
    pass
