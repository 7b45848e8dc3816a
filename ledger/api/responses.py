"""The objects the API answers with, as msgspec structs: what the handlers
encode, and what ``/openapi.json`` describes (see :mod:`ledger.api.openapi`),
so that the document cannot drift from the bytes.

Field order is the wire order. ``UNSET`` fields are left out of the body
(an error's ``field`` where no one field is at fault).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from ..domain import money
from ..domain.chain import format_timestamp
from ..domain.model import Account, Balance, Transfer
from ..store.reconcile import Report

#: A decimal string (never a JSON number), at the accounts' scale.
Amount = Annotated[
    str,
    Meta(pattern=money.AMOUNT_PATTERN, description='A decimal string such as "12.50", at the accounts\' scale.'),
]
#: RFC 3339 UTC with microseconds: ``2026-11-24T12:00:00.123456Z``.
Timestamp = Annotated[str, Meta(extra_json_schema={"format": "date-time"})]
Seq = Annotated[int, Meta(ge=0, description="A position in the event log.")]


class _Response(Struct, gc=False):
    """Built once per answer and encoded at once: nothing refers back to it."""


class BalanceOut(_Response):
    debits_posted: Amount
    credits_posted: Amount
    debits_pending: Amount
    credits_pending: Amount


class FlagsOut(_Response):
    debits_must_not_exceed_credits: bool
    credits_must_not_exceed_debits: bool


class AccountOut(_Response):
    id: UUID
    currency: str
    scale: int
    flags: FlagsOut
    metadata: dict[str, Any]
    created_at: Timestamp
    closed: bool
    balance: BalanceOut


class AccountPage(_Response):
    accounts: list[AccountOut]
    #: Pass as ``after`` for the next page; null on the last.
    next: UUID | None


class BalanceAsOf(_Response):
    account_id: UUID
    as_of_seq: Seq
    debits_posted: Amount
    credits_posted: Amount
    debits_pending: Amount
    credits_pending: Amount


class TransferOut(_Response):
    id: UUID
    debit_account_id: UUID
    credit_account_id: UUID
    amount: Amount
    currency: str
    code: str | None
    metadata: dict[str, Any]
    pending: bool
    timeout_seconds: int | None
    status: Literal["posted", "pending", "voided", "expired"]
    seq: Seq
    created_at: Timestamp
    expires_at: Timestamp | None
    posted_amount: Amount | None
    decided_seq: Seq | None
    #: The transfer this one reverses, if it is a reversal.
    reverses: UUID | None
    #: The sum of this transfer's reversals, at its scale.
    reversed_amount: Amount


class TransferPage(_Response):
    transfers: list[TransferOut]
    #: Pass as ``cursor`` (with the same filters) for the next page; null on the last.
    next: str | None


#: A SHA-256 hash, in hex.
Hash = Annotated[str, Meta(pattern="^[0-9a-f]{64}$")]


class InclusionProof(_Response):
    """RFC 9162 2.1.3: the audit path of leaf ``leaf_index`` (event ``seq``)
    in the tree of ``tree_size`` events, from the leaf's sibling up."""

    seq: int
    leaf_index: int
    tree_size: int
    leaf_hash: Hash
    audit_path: list[Hash]


class ConsistencyProof(_Response):
    """RFC 9162 2.1.4: that the tree of ``first`` events is a prefix of the tree of ``second``."""

    first: int
    second: int
    proof: list[Hash]


class BatchItemError(_Response):
    code: str
    message: str


class BatchItemOut(_Response):
    """One batch item's result: ``status`` and ``seq``, or ``error``."""

    id: UUID
    status: Literal["created", "exists"] | UnsetType = UNSET
    seq: Seq | UnsetType = UNSET
    error: BatchItemError | UnsetType = UNSET


class BatchOut(_Response):
    results: list[BatchItemOut]


class EventLine(_Response):
    """One line of ``/v1/events``."""

    seq: Seq
    type: str
    stream_id: UUID
    #: The event's payload, as recorded.
    data: msgspec.Raw
    #: Who caused it: the request id, and the token's name when tokens are on.
    metadata: msgspec.Raw
    recorded_at: Timestamp
    #: The chain hash, hex: SHA-256 of the previous event's hash and this
    #: event's canonical bytes (docs/api.md, "Verifiable log").
    hash: Annotated[str, Meta(pattern="^[0-9a-f]{64}$")]


class EntryLine(_Response):
    """One line of ``/v1/accounts/{id}/entries``: a movement and the balance right after it."""

    seq: Seq
    transfer_id: UUID
    type: str
    side: Literal["debit", "credit"]
    amount: Amount
    balance: BalanceOut
    recorded_at: Timestamp


class MismatchOut(_Response, omit_defaults=True):
    """A balance ``field`` of ``account_id``, or the ``reversed_amount`` of
    ``transfer_id``, stored otherwise than the log's replay gives it: each
    mismatch names one of the two."""

    field: str
    stored: str | None
    replayed: str | None
    account_id: UUID | None = None
    transfer_id: UUID | None = None


class CurrencyTotalsOut(_Response):
    currency: str
    debits_posted: Amount
    credits_posted: Amount
    debits_pending: Amount
    credits_pending: Amount
    balanced: bool


class ChainOut(_Response):
    ok: bool
    first_bad_seq: Seq | None


class ReportOut(_Response):
    """A reconciliation's report (also what ``ledger reconcile`` prints)."""

    ok: bool
    head_seq: Seq
    events_scanned: int
    accounts_checked: int
    mismatches: list[MismatchOut]
    totals: list[CurrencyTotalsOut]
    chain: ChainOut
    replay_error: str | None
    repaired: int
    duration_ms: int


class ErrorDetail(_Response):
    code: str
    message: str
    #: The one field at fault, as a path such as ``transfers[3].amount``.
    field: str | UnsetType = UNSET


class ErrorOut(_Response):
    """Every error: ``{"error": {"code", "message", "field"?}}``."""

    error: ErrorDetail


class Live(_Response):
    status: Literal["ok"]
    #: The process (worker) that answered.
    pid: int


class Ready(_Response, kw_only=True):
    status: Literal["ok", "unavailable"]
    #: What is wrong, when it is not ready.
    reason: str | UnsetType = UNSET
    #: Pools, schema revision, head, counters, and the replica's state.
    database: dict[str, Any]


# -- from the domain -------------------------------------------------------


def balance_out(balance: Balance, scale: int) -> BalanceOut:
    return BalanceOut(
        debits_posted=money.format_amount(balance.debits_posted, scale),
        credits_posted=money.format_amount(balance.credits_posted, scale),
        debits_pending=money.format_amount(balance.debits_pending, scale),
        credits_pending=money.format_amount(balance.credits_pending, scale),
    )


def account_out(account: Account) -> AccountOut:
    return AccountOut(
        id=account.id,
        currency=account.currency,
        scale=account.scale,
        flags=FlagsOut(**account.flags.as_dict()),
        metadata=account.metadata,
        created_at=format_timestamp(account.created_at),
        closed=account.closed,
        balance=balance_out(account.balance, account.scale),
    )


def balance_as_of(account: Account, seq: int, balance: Balance) -> BalanceAsOf:
    amounts = balance_out(balance, account.scale)
    return BalanceAsOf(account_id=account.id, as_of_seq=seq, **msgspec.structs.asdict(amounts))


def transfer_out(transfer: Transfer) -> TransferOut:
    return TransferOut(
        id=transfer.id,
        debit_account_id=transfer.debit_account_id,
        credit_account_id=transfer.credit_account_id,
        # The amount was stored at the accounts' scale when it was recorded.
        amount=format(transfer.amount, "f"),
        currency=transfer.currency,
        code=transfer.code,
        metadata=transfer.metadata,
        pending=transfer.pending,
        timeout_seconds=transfer.timeout_seconds,
        status=transfer.status,  # type: ignore[arg-type]
        seq=transfer.seq,
        created_at=format_timestamp(transfer.created_at),
        expires_at=None if transfer.expires_at is None else format_timestamp(transfer.expires_at),
        posted_amount=None if transfer.posted_amount is None else format(transfer.posted_amount, "f"),
        decided_seq=transfer.decided_seq,
        reverses=transfer.reverses,
        # Quantized to the amount's exponent: a transfer never reversed may
        # hold a zero of no particular scale.
        reversed_amount=format(transfer.reversed_amount.quantize(transfer.amount), "f"),
    )


def report_out(report: Report) -> ReportOut:
    return ReportOut(
        ok=report.ok,
        head_seq=report.head_seq,
        events_scanned=report.events_scanned,
        accounts_checked=report.accounts_checked,
        mismatches=[
            MismatchOut(
                account_id=m.account_id,
                field=m.field,
                stored=m.stored,
                replayed=m.replayed,
                transfer_id=m.transfer_id,
            )
            for m in report.mismatches
        ],
        totals=[
            CurrencyTotalsOut(
                currency=t.currency,
                debits_posted=format(t.debits_posted, "f"),
                credits_posted=format(t.credits_posted, "f"),
                debits_pending=format(t.debits_pending, "f"),
                credits_pending=format(t.credits_pending, "f"),
                balanced=t.balanced,
            )
            for t in report.totals
        ],
        chain=ChainOut(ok=report.chain.ok, first_bad_seq=report.chain.first_bad_seq),
        replay_error=report.replay_error,
        repaired=report.repaired,
        duration_ms=report.duration_ms,
    )


def error_out(code: str, message: str, field: str | None = None) -> ErrorOut:
    return ErrorOut(error=ErrorDetail(code=code, message=message, field=UNSET if field is None else field))
