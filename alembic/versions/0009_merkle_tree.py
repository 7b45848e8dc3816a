"""The Merkle tree of the log: every complete subtree's hash (ledger.store.tree).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

import asyncpg

from alembic import op
from ledger.domain.merkle import Frontier
from ledger.store import tree
from ledger.store.connection import init_connection

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE merkle_subtrees (
            level smallint NOT NULL,
            index bigint NOT NULL,
            hash bytea NOT NULL,
            PRIMARY KEY (level, index)
        )
        """
    )
    # Like the events it hashes, the tree only grows: a subtree once stored
    # is what every later root and proof builds on.
    op.execute(
        """
        CREATE FUNCTION merkle_subtrees_are_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'the Merkle tree is append-only: % on merkle_subtrees refused', TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END $$
        """
    )
    for name, when in [("no_update_delete", "UPDATE OR DELETE"), ("no_truncate", "TRUNCATE")]:
        each = "STATEMENT" if when == "TRUNCATE" else "ROW"
        op.execute(
            f"CREATE TRIGGER merkle_subtrees_{name} BEFORE {when} ON merkle_subtrees "
            f"FOR EACH {each} EXECUTE FUNCTION merkle_subtrees_are_immutable()"
        )
    # A ledger that has events gets their tree here, in this migration's
    # transaction, by the code an import grows it with.
    op.get_bind().connection.dbapi_connection.run_async(_grow)


async def _grow(conn: asyncpg.Connection) -> None:
    # The service's codecs for reading the events as it does, and alembic's
    # (those of asyncpg, which hands jsonb over as text) back after.
    await init_connection(conn)
    try:
        await tree.grow(conn, Frontier())
    finally:
        await conn.reset_type_codec("jsonb", schema="pg_catalog")
        await conn.reset_type_codec("numeric", schema="pg_catalog")


def downgrade() -> None:
    op.execute("DROP TABLE merkle_subtrees")
    op.execute("DROP FUNCTION merkle_subtrees_are_immutable()")
