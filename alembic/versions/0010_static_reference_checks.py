"""Account references checked by static queries, planned once per connection.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from alembic import context, op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

#: Each table that names accounts, and the function that checks a
#: statement's new rows of it: the columns are written into the query, so
#: PL/pgSQL keeps its plan, where 0006's ``EXECUTE format(…)`` planned the
#: check again after every statement (most of the check's time in an append
#: of a few dozen transfers).
_CHECKS = {
    "balances": "account_id_exists",
    "entries": "account_id_exists",
    "transfers": "transfer_accounts_exist",
}


def _references() -> dict[str, tuple[str, ...]]:
    """Each table that names accounts, and the columns that do (0004's)."""
    references: dict[str, tuple[str, ...]] = context.script.get_revision("0004").module._REFERENCES
    return references


#: The new rows' named accounts that ``accounts`` lacks, as this migration
#: finds them (after ``FROM new_rows AS n CROSS JOIN LATERAL … AS r(referencing, id)``).
_MISSING = "WHERE NOT EXISTS (SELECT FROM accounts AS a WHERE a.id = r.id)"


def _check(
    name: str, columns: tuple[str, ...], *, missing: str = _MISSING, settings: str = "", create: str = "CREATE"
) -> str:
    """The trigger function ``name``: the first of ``columns`` of a
    statement's new rows that names a missing account (found by the SQL
    ``missing``) is refused, with the same error as 0006's. ``settings``
    (such as ``SET x = y``) hold while the function runs; ``create`` is
    ``CREATE`` or ``CREATE OR REPLACE``."""
    named = ", ".join(f"('{c}', n.{c})" for c in columns)
    return f"""
        {create} FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql {settings} AS $$
        DECLARE
            referencing text;
            missing uuid;
        BEGIN
            SELECT r.referencing, r.id INTO referencing, missing
            FROM new_rows AS n CROSS JOIN LATERAL (VALUES {named}) AS r(referencing, id)
            {missing} LIMIT 1;
            IF missing IS NOT NULL THEN
                RAISE EXCEPTION '%.% names account %, which does not exist', TG_TABLE_NAME, referencing, missing
                    USING ERRCODE = 'foreign_key_violation';
            END IF;
            RETURN NULL;
        END $$
        """


def _each_check() -> dict[str, tuple[str, ...]]:
    """Each check function, and the columns it reads (one set of columns
    for every table that a function checks)."""
    references = _references()
    each = {}
    for name in dict.fromkeys(_CHECKS.values()):
        [each[name]] = {references[table] for table, check in _CHECKS.items() if check == name}
    return each


def upgrade() -> None:
    for name, columns in _each_check().items():
        op.execute(_check(name, columns))
    for table, check in _CHECKS.items():
        op.execute(f"DROP TRIGGER {table}_accounts_exist ON {table}")
        op.execute(_trigger(table, f"{check}()"))
    op.execute("DROP FUNCTION referenced_accounts_exist()")


def downgrade() -> None:
    context.script.get_revision("0006").module.upgrade()  # referenced_accounts_exist(), as 0006 left it
    for table, columns in _references().items():
        op.execute(f"DROP TRIGGER {table}_accounts_exist ON {table}")
        op.execute(_trigger(table, f"referenced_accounts_exist({', '.join(repr(c) for c in columns)})"))
    for name in dict.fromkeys(_CHECKS.values()):
        op.execute(f"DROP FUNCTION {name}()")


def _trigger(table: str, call: str) -> str:
    return (
        f"CREATE TRIGGER {table}_accounts_exist AFTER INSERT ON {table} REFERENCING NEW TABLE AS new_rows "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {call}"
    )
