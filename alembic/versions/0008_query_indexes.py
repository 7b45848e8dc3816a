"""Indexes for finding transfers and accounts (GET /v1/transfers, GET /v1/accounts).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

#: Each filter a caller pages through, and the index that serves it. Paging
#: is by seq, so the b-tree indexes end with it: a page is an ordered range.
#: An account's transfers need none: the entries key (account_id, seq) holds
#: each transfer's creating entries at its seq.
INDEXES = {
    # Every page is a range of seq: unfiltered, or narrowed by a filter that
    # most transfers match (currency, status, a common metadata value).
    "transfers_seq": "transfers (seq)",
    "transfers_code": "transfers (code, seq) WHERE code IS NOT NULL",
    "transfers_created_at": "transfers (created_at)",
    "transfers_metadata": "transfers USING gin (metadata jsonb_path_ops)",
    "accounts_metadata": "accounts USING gin (metadata jsonb_path_ops)",
}


def upgrade() -> None:
    for name, definition in INDEXES.items():
        unique = "UNIQUE " if name == "transfers_seq" else ""  # one transfer per creating event
        op.execute(f"CREATE {unique}INDEX {name} ON {definition}")


def downgrade() -> None:
    for name in INDEXES:
        op.execute(f"DROP INDEX {name}")
