"""The events lose their index by stream, which no query reads.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

#: 0001's index of the events by (stream_id, seq). Nothing looks an event
#: up by its stream: history is read from the entries and the transfers, and
#: reconciliation's one join on ``stream_id`` (a release to the event that
#: held) is a hash join over the whole log. Every append wrote it, one
#: entry per event at a random place in an index as large as the log, for
#: no reader.
_INDEX = "events_stream_id_seq"


def upgrade() -> None:
    op.drop_index(_INDEX, table_name="events")


def downgrade() -> None:
    op.create_index(_INDEX, "events", ["stream_id", "seq"])
