"""Reversals: a transfer names the transfer it reverses, and sums its own reversals.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("transfers", sa.Column("reverses", pg.UUID))
    # A constant default: existing rows take it without being rewritten.
    op.add_column("transfers", sa.Column("reversed_amount", sa.Numeric, nullable=False, server_default=sa.text("0")))
    # GET /v1/transfers?reverses=<id>: a transfer's reversals, in order.
    op.create_index(
        "transfers_reverses", "transfers", ["reverses", "seq"], postgresql_where=sa.text("reverses IS NOT NULL")
    )


def downgrade() -> None:
    op.drop_index("transfers_reverses", "transfers")
    op.drop_column("transfers", "reversed_amount")
    op.drop_column("transfers", "reverses")
