"""The ledger's rules in pure Python: no I/O, no clock, no database.

``store`` persists what this package decides; ``api`` translates HTTP to and
from it. Nothing here imports either.
"""
