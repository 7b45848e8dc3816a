"""Account references checked by key, one index probe per account named.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from types import ModuleType

from alembic import context, op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def _static_checks() -> ModuleType:
    """Migration 0010: the checks, their tables and the columns they read."""
    return context.script.get_revision("0010").module


def _check(name: str, columns: tuple[str, ...]) -> str:
    """The trigger function ``name``, 0010's with its query changed: each
    account that ``columns`` of a statement's new rows name is looked up in
    ``accounts`` through an index, one probe per name, whatever the planner
    makes of the table's size. 0010's ``NOT EXISTS`` left the join to the
    planner, and the plan PL/pgSQL keeps for the connection could hash every
    account for each statement; a ``LATERAL`` subquery with a ``LIMIT`` is
    never flattened into a join, and with sequential scans off (for this
    function alone) it cannot read the table whole for a name either, as it
    would choose to while the table is small, and keep doing once it is
    large. So the check costs what the rows written cost, never what the
    ledger's accounts do. The first missing account is refused with the same
    error as before."""
    named = ", ".join(f"('{c}', n.{c})" for c in columns)
    return f"""
        CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql SET enable_seqscan = off AS $$
        DECLARE
            referencing text;
            missing uuid;
        BEGIN
            SELECT r.referencing, r.id INTO referencing, missing
            FROM new_rows AS n CROSS JOIN LATERAL (VALUES {named}) AS r(referencing, id)
            LEFT JOIN LATERAL (SELECT true AS found FROM accounts WHERE accounts.id = r.id LIMIT 1) AS known ON true
            WHERE known.found IS NULL LIMIT 1;
            IF missing IS NOT NULL THEN
                RAISE EXCEPTION '%.% names account %, which does not exist', TG_TABLE_NAME, referencing, missing
                    USING ERRCODE = 'foreign_key_violation';
            END IF;
            RETURN NULL;
        END $$
        """


def _each_check() -> dict[str, tuple[str, ...]]:
    """Each of 0010's check functions, and the columns it reads (one set of
    columns for every table that a function checks)."""
    checks = _static_checks()
    references = checks._references()
    each = {}
    for name in dict.fromkeys(checks._CHECKS.values()):
        [each[name]] = {references[table] for table, check in checks._CHECKS.items() if check == name}
    return each


def upgrade() -> None:
    for name, columns in _each_check().items():
        op.execute(_check(name, columns))


def downgrade() -> None:
    checks = _static_checks()
    for name, columns in _each_check().items():
        op.execute(checks._check(name, columns).replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))
