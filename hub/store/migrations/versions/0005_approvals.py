"""issue 10: announcements' authors and the two-person rule

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 16:00:00

Who wrote an announcement, when it was submitted, who approved it or sent it back with what comment
(hub.approvals); the state ``awaiting_approval`` needs a wider column; the console's dashboard pages
one state of an office's announcements through an index.
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("announcements", schema=None) as batch_op:
        batch_op.alter_column(
            "state", existing_type=sa.String(length=16), type_=sa.String(length=20), existing_nullable=False
        )
        batch_op.add_column(sa.Column("created_by", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("created_key_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("submitted_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("approved_by", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("approved_key_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("approved_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("review_comment", sa.Text(), nullable=True))
        batch_op.create_index("ix_announcements_state_office", ["state", "office_id", "id"], unique=False)


def downgrade() -> None:
    # Older code knows no approval: what waits for one goes back to being a draft.
    op.execute(sa.text("UPDATE announcements SET state = 'draft' WHERE state = 'awaiting_approval'"))
    with op.batch_alter_table("announcements", schema=None) as batch_op:
        batch_op.drop_index("ix_announcements_state_office")
        for column in (
            "review_comment",
            "approved_at",
            "approved_key_id",
            "approved_by",
            "submitted_at",
            "created_key_id",
            "created_by",
        ):
            batch_op.drop_column(column)
        batch_op.alter_column(
            "state", existing_type=sa.String(length=20), type_=sa.String(length=16), existing_nullable=False
        )
