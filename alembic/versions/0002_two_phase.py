"""Two-phase transfers: deadlines, posted amounts, decisions.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("transfers", sa.Column("expires_at", sa.DateTime(timezone=True)))
    op.add_column("transfers", sa.Column("posted_amount", sa.Numeric))
    op.add_column("transfers", sa.Column("decided_seq", sa.BigInteger))
    op.execute("UPDATE transfers SET posted_amount = amount WHERE status = 'posted'")
    op.create_check_constraint(
        "transfers_status", "transfers", "status IN ('posted', 'pending', 'voided', 'expired')"
    )
    # The expiry sweep asks for pending transfers past their deadline: only
    # those with a deadline and still pending are indexed, so the index stays
    # as small as the set of open holds.
    op.create_index(
        "transfers_expiring",
        "transfers",
        ["expires_at"],
        postgresql_where=sa.text("status = 'pending' AND expires_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("transfers_expiring", "transfers")
    op.drop_constraint("transfers_status", "transfers")
    for column in ("decided_seq", "posted_amount", "expires_at"):
        op.drop_column("transfers", column)
