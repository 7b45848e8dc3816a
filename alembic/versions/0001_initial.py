"""The event log, its head, and the projections folded from it.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ZERO = sa.text("0")


def _balance_columns() -> list[sa.Column]:
    return [
        sa.Column(name, sa.Numeric, nullable=False, server_default=ZERO)
        for name in ("debits_posted", "credits_posted", "debits_pending", "credits_pending")
    ]


def upgrade() -> None:
    # One row: the last seq and its hash. Appends take this table's lock
    # first, which makes them serial, gapless and commit-ordered.
    op.create_table(
        "ledger_head",
        sa.Column("singleton", sa.Boolean, primary_key=True, server_default=sa.true()),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.LargeBinary, nullable=False),
        sa.CheckConstraint("singleton", name="ledger_head_singleton"),
    )
    op.execute("INSERT INTO ledger_head (singleton, seq, hash) VALUES (true, 0, '\\x" + "00" * 32 + "')")

    op.create_table(
        "events",
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("stream_id", pg.UUID, nullable=False),
        sa.Column("data", pg.JSONB, nullable=False),
        sa.Column("metadata", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("hash", sa.LargeBinary, nullable=False),
        sa.CheckConstraint("seq > 0", name="events_seq_positive"),
    )
    op.create_index("events_stream_id_seq", "events", ["stream_id", "seq"])
    op.execute(
        """
        CREATE FUNCTION events_are_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'the event log is append-only: % on events refused', TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER events_no_update_delete BEFORE UPDATE OR DELETE ON events "
        "FOR EACH ROW EXECUTE FUNCTION events_are_immutable()"
    )
    op.execute(
        "CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events "
        "FOR EACH STATEMENT EXECUTE FUNCTION events_are_immutable()"
    )

    op.create_table(
        "accounts",
        sa.Column("id", pg.UUID, primary_key=True),
        sa.Column("currency", sa.Text, nullable=False),
        sa.Column("scale", sa.SmallInteger, nullable=False),
        sa.Column("debits_must_not_exceed_credits", sa.Boolean, nullable=False),
        sa.Column("credits_must_not_exceed_debits", sa.Boolean, nullable=False),
        sa.Column("metadata", pg.JSONB, nullable=False),
        sa.Column("closed", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("scale BETWEEN 0 AND 18", name="accounts_scale_range"),
    )
    op.create_index("accounts_currency_id", "accounts", ["currency", "id"])

    op.create_table(
        "balances",
        sa.Column("account_id", pg.UUID, sa.ForeignKey("accounts.id"), primary_key=True),
        *_balance_columns(),
        # The seq of the last event that changed this balance.
        sa.Column("seq", sa.BigInteger, nullable=False),
    )

    op.create_table(
        "transfers",
        sa.Column("id", pg.UUID, primary_key=True),
        sa.Column("debit_account_id", pg.UUID, sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("credit_account_id", pg.UUID, sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("amount", sa.Numeric, nullable=False),
        sa.Column("currency", sa.Text, nullable=False),
        sa.Column("code", sa.Text),
        sa.Column("metadata", pg.JSONB, nullable=False),
        sa.Column("pending", sa.Boolean, nullable=False),
        sa.Column("timeout_seconds", sa.Integer),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("amount > 0", name="transfers_amount_positive"),
        sa.CheckConstraint("debit_account_id <> credit_account_id", name="transfers_accounts_differ"),
    )

    # An account's movements: (account_id, seq) makes its history a range scan.
    op.create_table(
        "entries",
        sa.Column("account_id", pg.UUID, sa.ForeignKey("accounts.id"), primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True),
        sa.Column("transfer_id", pg.UUID, nullable=False),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("side", sa.Text, nullable=False),
        sa.Column("amount", sa.Numeric, nullable=False),
        *_balance_columns(),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("side IN ('debit', 'credit')", name="entries_side"),
    )


def downgrade() -> None:
    for table in ("entries", "transfers", "balances", "accounts"):
        op.drop_table(table)
    op.execute("DROP TRIGGER events_no_truncate ON events")
    op.execute("DROP TRIGGER events_no_update_delete ON events")
    op.drop_table("events")
    op.execute("DROP FUNCTION events_are_immutable()")
    op.drop_table("ledger_head")
