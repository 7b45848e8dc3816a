"""The wire format: request structs (decoded strictly by msgspec), their
translation into domain commands, and the objects the API answers with.

Structural checks (types, patterns, ranges, unknown fields) are msgspec's;
what msgspec cannot express (amount syntax, metadata size, NUL characters,
fields that only make sense together) is checked in ``to_command`` methods,
which name the offending field by its full path.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal, TypeVar
from uuid import UUID

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from ..domain import money
from ..domain.codes import InvalidField
from ..domain.commands import MakeTransfer, OpenAccount, PostTransfer, ReverseTransfer, VoidTransfer
from ..domain.model import AccountFlags
from ..store.tables import MAX_BIGINT

T = TypeVar("T")

MAX_BATCH = 8190
ACCOUNT_METADATA_BYTES = 4096
TRANSFER_METADATA_BYTES = 1024

Currency = Annotated[str, Meta(pattern=r"^[A-Z][A-Z0-9_]{0,15}$")]
Scale = Annotated[int, Meta(ge=0, le=money.MAX_SCALE)]
#: A transfer's code is at most this many bytes as UTF-8 (:func:`code`), so
#: that a full batch of the largest transfers fits the default body limit.
CODE_BYTES = 255
#: No NUL: PostgreSQL's text cannot hold one.
TransferCode = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=CODE_BYTES,
        pattern=r"^[^\x00]*$",
        description=f"A label such as card_payment: at most {CODE_BYTES} bytes as UTF-8, no NUL.",
    ),
]
TimeoutSeconds = Annotated[int, Meta(ge=1, le=366 * 24 * 3600)]
#: Checked by :func:`amount`, which names what is wrong; the pattern is for the document.
AmountIn = Annotated[
    str,
    Meta(
        extra_json_schema={"pattern": money.AMOUNT_PATTERN, "maxLength": money.MAX_DIGITS + 2},
        description=f'A decimal string such as "12.50": at most {money.MAX_DIGITS} digits, '
        "and no more fractional digits than the accounts' scale.",
    ),
]

#: The largest integer that every JSON parser reads back as itself (I-JSON,
#: RFC 7493 section 2.2): 2**53 - 1.
EXACT_INTEGER = 2**53 - 1
#: Where the OpenAPI document's schemas refer to its components.
REF_TEMPLATE = "#/components/schemas/{name}"
_METADATA_VALUE = REF_TEMPLATE.format(name="MetadataValue")
#: Components of the OpenAPI document (:mod:`.openapi` adds them) that no
#: struct describes: what a value in metadata may be (:func:`metadata`).
COMPONENTS: dict[str, dict[str, Any]] = {
    "MetadataValue": {
        "description": "Any JSON value, but for numbers: only integers within ±(2^53 - 1).",
        "anyOf": [
            {"type": "string"},
            {"type": "boolean"},
            {"type": "null"},
            {"type": "integer", "minimum": -EXACT_INTEGER, "maximum": EXACT_INTEGER},
            {"type": "array", "items": {"$ref": _METADATA_VALUE}},
            {"type": "object", "additionalProperties": {"$ref": _METADATA_VALUE}},
        ],
    },
}
#: A request's metadata: a JSON object whose numbers are integers within
#: ±(2^53 - 1) (:func:`metadata`).
Metadata = Annotated[
    dict[str, Any], msgspec.Meta(extra_json_schema={"additionalProperties": {"$ref": _METADATA_VALUE}})
]

_json = msgspec.json.Encoder()


class _Request(Struct, forbid_unknown_fields=True, gc=False):
    """Request bodies: exactly the documented fields, nothing else. Decoded
    JSON cannot refer back to them, so the garbage collector leaves them alone."""


class FlagsIn(_Request, kw_only=True):
    debits_must_not_exceed_credits: bool = False
    credits_must_not_exceed_debits: bool = False


class AccountIn(_Request, kw_only=True):
    id: UUID | None = None
    currency: Currency
    scale: Scale
    flags: FlagsIn = msgspec.field(default_factory=FlagsIn)
    metadata: Metadata = {}

    def to_command(self) -> OpenAccount:
        return OpenAccount(
            id=self.id or uuid.uuid4(),
            currency=self.currency,
            scale=self.scale,
            flags=AccountFlags(**msgspec.structs.asdict(self.flags)),
            metadata=metadata(self.metadata, ACCOUNT_METADATA_BYTES, "metadata"),
        )


class TransferIn(_Request, kw_only=True):
    id: UUID
    debit_account_id: UUID
    credit_account_id: UUID
    amount: AmountIn
    currency: Currency
    code: TransferCode | None = None
    metadata: Metadata = {}
    pending: bool = False
    timeout_seconds: TimeoutSeconds | None = None

    def to_command(self, path: str = "") -> MakeTransfer:
        if self.timeout_seconds is not None and not self.pending:
            raise InvalidField("timeout_seconds is allowed only with pending: true", f"{path}timeout_seconds")
        return MakeTransfer(
            id=self.id,
            debit_account_id=self.debit_account_id,
            credit_account_id=self.credit_account_id,
            amount=amount(self.amount, f"{path}amount"),
            currency=self.currency,
            code=code(self.code, f"{path}code"),
            metadata=metadata(self.metadata, TRANSFER_METADATA_BYTES, f"{path}metadata"),
            pending=self.pending,
            timeout_seconds=self.timeout_seconds,
        )


class PostIn(_Request, kw_only=True):
    """``POST /v1/transfers/{id}/post``: how much of the held amount to post."""

    amount: AmountIn | None = None

    def to_command(self, transfer_id: UUID, path: str = "") -> PostTransfer:
        held = None if self.amount is None else amount(self.amount, f"{path}amount")
        return PostTransfer(transfer_id, held)


class ReverseIn(_Request, kw_only=True):
    """``POST /v1/transfers/{id}/reverse``: the reversal, a new posted transfer."""

    #: The reversal's own id: its idempotency key.
    id: UUID
    #: Default: all of the transfer that is posted and not yet reversed.
    amount: AmountIn | None = None
    code: TransferCode | None = None
    metadata: Metadata = {}

    def to_command(self, original_id: UUID, path: str = "") -> ReverseTransfer:
        return ReverseTransfer(
            id=self.id,
            original_id=original_id,
            amount=None if self.amount is None else amount(self.amount, f"{path}amount"),
            code=code(self.code, f"{path}code"),
            metadata=metadata(self.metadata, TRANSFER_METADATA_BYTES, f"{path}metadata"),
        )


class EmptyIn(_Request, kw_only=True):
    """A body with no fields (``{}``, or none at all): void and close."""


class PostItemIn(_Request, kw_only=True):
    """A post inside a batch: ``{"action": "post", "id": …, "amount": …}``."""

    action: Literal["post"]
    id: UUID
    amount: AmountIn | None = None

    def to_command(self, path: str = "") -> PostTransfer:
        return PostIn(amount=self.amount).to_command(self.id, path)


class VoidItemIn(_Request, kw_only=True):
    """A void inside a batch: ``{"action": "void", "id": …}``."""

    action: Literal["void"]
    id: UUID

    def to_command(self, path: str = "") -> VoidTransfer:
        return VoidTransfer(self.id)


class ReverseItemIn(ReverseIn, kw_only=True):
    """A reversal inside a batch: ``{"action": "reverse", "id": …, "reverses": …}``,
    ``id`` the reversal's own and ``reverses`` the transfer it reverses."""

    action: Literal["reverse"]
    reverses: UUID

    def to_command(self, original_id: UUID | None = None, path: str = "") -> ReverseTransfer:
        return super().to_command(self.reverses, path)


class ItemKind(Struct):
    """What a batch item is, read before the item itself: a transfer request
    (no ``action``), a decision on a pending transfer, or a reversal."""

    action: Literal["post", "void", "reverse"] | None = None


#: Each kind of batch item and the struct that decodes it.
BATCH_ITEMS: dict[str | None, type[TransferIn | PostItemIn | VoidItemIn | ReverseItemIn]] = {
    None: TransferIn,
    "post": PostItemIn,
    "void": VoidItemIn,
    "reverse": ReverseItemIn,
}


#: A batch item, as the document describes it: one of :data:`BATCH_ITEMS`.
BatchItem = Annotated[
    msgspec.Raw,
    Meta(extra_json_schema={"anyOf": [{"$ref": f"#/components/schemas/{t.__name__}"} for t in BATCH_ITEMS.values()]}),
]


class BatchIn(_Request, kw_only=True):
    #: Decoded one by one (:data:`BATCH_ITEMS`), as each item's ``action`` says.
    transfers: Annotated[list[BatchItem], Meta(min_length=1, max_length=MAX_BATCH)]
    atomic: bool = False


class ReconciliationIn(_Request, kw_only=True):
    """``POST /admin/v1/reconciliations``."""

    repair: bool = False


# Query parameters. One left out takes its default; none may be ``null``
# (``UNSET``, unlike ``None``, is never what a string converts to).

Seq = Annotated[int, Meta(ge=0, le=MAX_BIGINT)]


class EntriesQuery(_Request, kw_only=True):
    #: Lines with a seq after this one.
    after_seq: Seq = 0
    #: At most this many lines (default: to the end).
    limit: Annotated[int, Meta(ge=1, le=MAX_BIGINT)] | UnsetType = UNSET


class EventsQuery(EntriesQuery, kw_only=True):
    #: After the log's end, each new event as it commits, until the client leaves.
    follow: bool = False


class BalanceQuery(_Request, kw_only=True):
    #: The balance right after this event (default: the head).
    as_of_seq: Seq | UnsetType = UNSET


PageSize = Annotated[int, Meta(ge=1, le=1000)]
#: An RFC 3339 instant with its offset, as text: a query string's number is
#: not taken for a time (see :func:`instant`).
Instant = Annotated[
    str,
    Meta(
        pattern=r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$",
        extra_json_schema={"format": "date-time"},
        description="An RFC 3339 instant with its offset.",
    ),
]


class AccountsQuery(_Request, kw_only=True):
    currency: Currency | UnsetType = UNSET
    closed: bool | UnsetType = UNSET
    #: The previous page's ``next``.
    after: UUID | UnsetType = UNSET
    limit: PageSize = 100


class TransfersQuery(_Request, kw_only=True):
    """``GET /v1/transfers``: every filter given must match."""

    #: On either side.
    account_id: UUID | UnsetType = UNSET
    debit_account_id: UUID | UnsetType = UNSET
    credit_account_id: UUID | UnsetType = UNSET
    code: TransferCode | UnsetType = UNSET
    currency: Currency | UnsetType = UNSET
    status: Literal["posted", "pending", "voided", "expired"] | UnsetType = UNSET
    #: ``created_from <= created_at``.
    created_from: Instant | UnsetType = UNSET
    #: ``created_at < created_to``.
    created_to: Instant | UnsetType = UNSET
    #: The reversals of this transfer.
    reverses: UUID | UnsetType = UNSET
    #: ``asc``: in the order they were created; ``desc``: newest first.
    order: Literal["asc", "desc"] = "asc"
    #: The previous page's ``next``, with the same filters.
    cursor: str | UnsetType = UNSET
    limit: PageSize = 100


#: The number of an event in the log, and of the events of a tree, from 1.
Position = Annotated[int, Meta(ge=1, le=MAX_BIGINT)]


class InclusionQuery(_Request, kw_only=True):
    """``GET /v1/proofs/inclusion``: that event ``seq`` is in the tree of
    ``tree_size`` events (the head's, if not given)."""

    seq: Position
    tree_size: Position | UnsetType = UNSET


class ConsistencyQuery(_Request, kw_only=True):
    """``GET /v1/proofs/consistency``: that the tree of ``first`` events is a
    prefix of the tree of ``second``."""

    first: Position
    second: Position


def instant(value: str | UnsetType, path: str) -> datetime | None:
    """An :data:`Instant` parameter as a time in UTC; None if it was left out.

    A fraction finer than a microsecond, the precision times are stored
    with, rounds up to the next microsecond: a time stored is at or after
    ``…:11.4256041Z``, and before it, exactly as it is at or after (before)
    ``…:11.425605Z``, so both bounds keep their meaning."""
    if value is UNSET:
        return None
    # The pattern has matched: 19 characters of date and time come first.
    fraction = _FRACTION.match(value, 19)
    finer = ""
    if fraction is not None and len(fraction[1]) > 6:
        finer = fraction[1][6:]
        value = value[: 19 + 7] + value[fraction.end() :]
    try:
        parsed = msgspec.convert(value, datetime)
        if finer.strip("0"):
            parsed += timedelta(microseconds=1)
        return parsed.astimezone(UTC)
    except msgspec.ValidationError as error:
        raise InvalidField(f"not an instant: {error}", path) from None
    except OverflowError:
        raise InvalidField("out of range: in UTC, instants are from year 1 to 9999", path) from None


_FRACTION = re.compile(r"\.(\d+)")


def given(value: T | UnsetType) -> T | None:
    """A query parameter's value; None if it was left out."""
    return None if value is UNSET else value


def amount(text: str, path: str) -> Decimal:
    try:
        return money.parse_amount(text)
    except InvalidField as error:
        raise InvalidField(f"amount {error.message}", path) from None


def code(value: str | None, path: str) -> str | None:
    """``value`` if it is at most :data:`CODE_BYTES` bytes as UTF-8 (msgspec
    has counted its characters)."""
    if value is not None and not value.isascii() and len(encoded := value.encode()) > CODE_BYTES:
        raise InvalidField(f"code is {len(encoded)} bytes as UTF-8; at most {CODE_BYTES} are allowed", path)
    return value


def metadata(value: dict[str, Any], limit: int, path: str) -> dict[str, Any]:
    """``value`` if the log can store and hash it as it is: JSON values only
    (MessagePack's binary, extension and timestamp values are not), objects
    keyed by strings, no NUL character in a key or a string (PostgreSQL's
    ``jsonb`` cannot hold one), objects and arrays nested at most
    :data:`METADATA_DEPTH` deep, every number an integer of at most
    :data:`EXACT_INTEGER` either way, and at most ``limit`` bytes as JSON.
    Anything else is refused naming the path of what is wrong.

    A MessagePack body's metadata that passes is what the same metadata in
    JSON decodes to, so an idempotent replay compares like with like.
    """
    if not value:  # most requests: nothing to walk or measure
        return {}
    try:
        size: int | None = len(_json.encode(value))
    except TypeError:  # a value JSON has no word for, which the walk names
        size = None
    if size is not None and size > limit:
        raise InvalidField(f"metadata is {size} bytes as JSON; at most {limit} are allowed", path)
    _refuse_what_the_log_cannot_hash(value, path, limit)
    return value


#: How deep objects and arrays may nest in metadata, the metadata object
#: itself the first level: deep enough for any record a client keeps, and
#: shallow enough that no encoder or decoder on the way runs out of stack.
METADATA_DEPTH = 32


def _refuse_what_the_log_cannot_hash(value: dict[str, Any], path: str, limit: int) -> None:
    """Walk metadata ``value`` (at ``path``) in the order it is written and
    refuse the first thing in it that :func:`metadata` does not take. Each
    value takes a byte of JSON at least, so a walk past ``limit`` values is
    of metadata over ``limit`` bytes, refused as such (and the walk is short).

    On numbers: an event's canonical bytes, which its hash covers, are JSON
    that anyone must be able to write again from the line the log serves. A
    fraction or an exponent has no one spelling (``1e20``,
    ``100000000000000000000``; ``1e-07``, ``1e-7``): PostgreSQL, Python and
    JavaScript each write it back in their own, and a larger integer is read
    back inexactly by parsers that hold numbers as doubles. Either would make
    an honest log fail its own check."""
    pending: list[tuple[Any, str, int]] = [(value, path, 1)]
    walked = 0
    while pending:
        item, at, depth = pending.pop()
        walked += 1
        if walked + (len(item) if isinstance(item, dict | list) else 0) > limit:
            raise InvalidField(f"metadata is over {limit} bytes as JSON", path)
        if isinstance(item, dict | list) and depth > METADATA_DEPTH:
            raise InvalidField(f"metadata nests objects and arrays more than {METADATA_DEPTH} deep", at)
        if isinstance(item, dict):
            children = []
            for key, child in item.items():
                if not isinstance(key, str):
                    raise InvalidField(f"metadata keys are strings, not {type(key).__name__}: {key!r}", at)
                if "\x00" in key:
                    raise InvalidField("metadata must not contain NUL characters", at)
                children.append((child, f"{at}.{key}", depth + 1))
            # Last pushed, first popped: the first child goes on last.
            pending.extend(reversed(children))
        elif isinstance(item, list):
            pending.extend(reversed([(child, f"{at}[{index}]", depth + 1) for index, child in enumerate(item)]))
        elif isinstance(item, str):
            if "\x00" in item:
                raise InvalidField("metadata must not contain NUL characters", at)
        elif item is None or isinstance(item, bool):
            pass
        elif isinstance(item, int | float):
            if not isinstance(item, int) or not -EXACT_INTEGER <= item <= EXACT_INTEGER:
                raise InvalidField(
                    f"metadata numbers must be integers from -{EXACT_INTEGER} to {EXACT_INTEGER}, "
                    f"so that the log's hash of them can be checked; write {item!r} as a string",
                    at,
                )
        else:
            raise InvalidField(f"metadata holds JSON values only, not {type(item).__name__} values", at)
