"""The head's epoch: bumped when projections are rewritten outside an append.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The writer decides a batch ahead of the lock against what it read and
    # wrote before, and records it only if the head is still the one it
    # decided after. Repair and rebuild change projections without moving
    # seq or hash, so they move this instead.
    op.add_column("ledger_head", sa.Column("epoch", sa.BigInteger, nullable=False, server_default="0"))


def downgrade() -> None:
    op.drop_column("ledger_head", "epoch")
