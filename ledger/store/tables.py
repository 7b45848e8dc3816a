"""Each table's columns, written once, and the SQL built from them.

A :class:`Table` lists its columns and their types in the order the
migrations create them (tests/test_tables.py checks both against the
migrated schema, and the tables whose rows are msgspec structs against the
structs' fields). The statements that write and read those rows take their
column lists, ``jsonb`` record sets and COPY columns from here, so adding a
column touches its table's line here, the migration, and whatever decides
its value. :class:`Placeholders` numbers a statement's parameters by name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..domain.model import Balance, Transfer


class Table:
    """A table's name, and its columns with their SQL types, in order."""

    def __init__(self, name: str, columns: Sequence[tuple[str, str]]) -> None:
        self.name = name
        self.types: dict[str, str] = dict(columns)
        #: The column names, in order.
        self.columns: tuple[str, ...] = tuple(self.types)

    def column_list(self, *, prefix: str = "", only: Iterable[str] | None = None) -> str:
        """``"a, b, …"``: the columns (or ``only`` these), each after ``prefix``."""
        return ", ".join(prefix + c for c in (self.columns if only is None else only))

    def select(self, *, only: Iterable[str] | None = None) -> str:
        """``SELECT`` the columns (or ``only`` these) ``FROM`` the table."""
        return f"SELECT {self.column_list(only=only)} FROM {self.name}"

    def record_columns(self, fields: Iterable[str] | None = None, **types: str) -> str:
        """``"a type, b type, …"`` for ``jsonb_to_recordset``: the keys
        ``fields`` of each object (the columns, unless given), typed as
        their columns are, or as ``types`` says for keys that differ from
        their column (a nested object, a hash as base64 text)."""
        return ", ".join(f"{f} {types.get(f) or self.types[f]}" for f in (fields or self.columns))


#: PostgreSQL's bigint, which a seq is: nothing past it can be stored or looked up.
MAX_BIGINT = 2**63 - 1

#: The four totals of a balance, as ``balances`` and ``entries`` store them.
BALANCE_TOTALS: tuple[str, ...] = Balance.__struct_fields__

_TOTALS = [(name, "numeric") for name in BALANCE_TOTALS]

EVENTS = Table(
    "events",
    [
        ("seq", "bigint"),
        ("type", "text"),
        ("stream_id", "uuid"),
        ("data", "jsonb"),
        ("metadata", "jsonb"),
        ("recorded_at", "timestamptz"),
        ("hash", "bytea"),
    ],
)

ACCOUNTS = Table(
    "accounts",
    [
        ("id", "uuid"),
        ("currency", "text"),
        ("scale", "smallint"),
        ("debits_must_not_exceed_credits", "boolean"),
        ("credits_must_not_exceed_debits", "boolean"),
        ("metadata", "jsonb"),
        ("closed", "boolean"),
        ("seq", "bigint"),
        ("created_at", "timestamptz"),
    ],
)

BALANCES = Table("balances", [("account_id", "uuid"), *_TOTALS, ("seq", "bigint")])

#: A row is a :class:`~ledger.domain.model.Transfer`: its fields are the columns.
TRANSFERS = Table(
    "transfers",
    [
        ("id", "uuid"),
        ("debit_account_id", "uuid"),
        ("credit_account_id", "uuid"),
        ("amount", "numeric"),
        ("currency", "text"),
        ("code", "text"),
        ("metadata", "jsonb"),
        ("pending", "boolean"),
        ("timeout_seconds", "integer"),
        ("status", "text"),
        ("seq", "bigint"),
        ("created_at", "timestamptz"),
        ("expires_at", "timestamptz"),
        ("posted_amount", "numeric"),
        ("decided_seq", "bigint"),
        ("reverses", "uuid"),
        ("reversed_amount", "numeric"),
    ],
)
assert TRANSFERS.columns == Transfer.__struct_fields__

#: A row is an :class:`~ledger.domain.ledger.Entry` with its balance's totals
#: as columns of their own.
ENTRIES = Table(
    "entries",
    [
        ("account_id", "uuid"),
        ("seq", "bigint"),
        ("transfer_id", "uuid"),
        ("type", "text"),
        ("side", "text"),
        ("amount", "numeric"),
        *_TOTALS,
        ("recorded_at", "timestamptz"),
    ],
)

#: The Merkle tree of the log: the hash of every complete subtree, as
#: :mod:`ledger.domain.merkle` names them (leaves ``index · 2^level`` to
#: ``(index + 1) · 2^level``, level 0 the leaves).
SUBTREES = Table("merkle_subtrees", [("level", "smallint"), ("index", "bigint"), ("hash", "bytea")])


def with_totals_from(table: Table, column: str) -> str:
    """A select list of ``table``'s columns, its balance totals taken from
    the ``jsonb`` object in ``column`` (a :class:`~ledger.domain.model.Balance`
    as msgspec encodes it)."""
    return ", ".join(f"({column}->>'{c}')::numeric AS {c}" if c in BALANCE_TOTALS else c for c in table.columns)


class Placeholders:
    """Numbers a statement's parameters in the order they are made, each cast
    to its type and, if named, found again by its name (:meth:`arguments`)."""

    def __init__(self) -> None:
        #: The parameters' names, in order.
        self.names: list[str] = []

    def one(self, type_: str, name: str) -> str:
        """The next parameter, ``name``, cast to ``type_``."""
        assert name not in self.names, f"{name} is already a parameter"
        self.names.append(name)
        return f"${len(self.names)}::{type_}"

    def array(self, type_: str, name: str) -> str:
        return self.one(f"{type_}[]", name)

    def rows(self, alias: str, columns: str, name: str) -> str:
        """A set of rows from one ``jsonb`` parameter: an array of objects
        keyed by ``columns`` (``"name type, …"``); other keys are ignored."""
        return f"jsonb_to_recordset({self.one('jsonb', name)}) AS {alias}({columns})"

    def arguments(self, values: Mapping[str, Any]) -> list[Any]:
        """The statement's arguments in order, taken from ``values`` by name;
        ``values`` names every parameter and nothing else."""
        assert values.keys() == set(self.names), (self.names, sorted(values))
        return [values[name] for name in self.names]
