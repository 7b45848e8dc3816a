"""PostgreSQL through asyncpg: connections, the embedded server, migrations,
the retrying serializable append, and the reads of the projections."""
