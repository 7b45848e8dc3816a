"""An event-sourced, double-entry ledger service on PostgreSQL."""
