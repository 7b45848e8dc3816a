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
    """Migration 0010: the check functions, their columns, and the template they are made from."""
    return context.script.get_revision("0010").module


#: The new rows' named accounts that ``accounts`` lacks, each looked up
#: through an index, one probe per name, whatever the planner makes of the
#: table's size (with :data:`_SETTINGS`). 0010's ``NOT EXISTS`` left the join
#: to the planner, and the plan PL/pgSQL keeps for the connection could hash
#: every account for each statement; a ``LATERAL`` subquery with a ``LIMIT``
#: is never flattened into a join. So the check costs what the rows written
#: cost, never what the ledger's accounts do.
_MISSING = (
    "LEFT JOIN LATERAL (SELECT true AS found FROM accounts WHERE accounts.id = r.id LIMIT 1) AS known ON true"
    " WHERE known.found IS NULL"
)
#: Sequential scans off, for the check's function alone: a plan made while
#: ``accounts`` is small would read the table whole for each name, and be
#: kept once it is large.
_SETTINGS = "SET enable_seqscan = off"


def upgrade() -> None:
    checks = _static_checks()
    for name, columns in checks._each_check().items():
        op.execute(checks._check(name, columns, missing=_MISSING, settings=_SETTINGS, create="CREATE OR REPLACE"))


def downgrade() -> None:
    checks = _static_checks()
    for name, columns in checks._each_check().items():
        op.execute(checks._check(name, columns, create="CREATE OR REPLACE"))
