"""Every result code the ledger can answer with, named and explained.

A code is part of the public contract (``API.md``): clients branch on it, so a
code is never renamed or reused for another meaning.
"""

from __future__ import annotations

import enum


class Code(enum.StrEnum):
    """Why a request was refused, or what became of it."""

    #: The body is not valid JSON or MessagePack.
    MALFORMED_BODY = "malformed_body"
    #: A field is missing, unknown, of the wrong type or outside its pattern or
    #: range. ``field`` names it. Nothing was decided.
    INVALID_FIELD = "invalid_field"
    #: No (or an unknown) bearer token.
    UNAUTHORIZED = "unauthorized"
    #: The token lacks the scope the endpoint needs.
    FORBIDDEN = "forbidden"
    #: The account named in the path does not exist.
    ACCOUNT_NOT_FOUND = "account_not_found"
    #: The transfer named in the path does not exist.
    TRANSFER_NOT_FOUND = "transfer_not_found"
    #: No such endpoint.
    NOT_FOUND = "not_found"
    #: The endpoint exists but not with this method.
    METHOD_NOT_ALLOWED = "method_not_allowed"
    #: The id exists already, with other fields: an idempotency key was reused
    #: for a different request. The stored object is unchanged.
    EXISTS_WITH_DIFFERENT_FIELDS = "exists_with_different_fields"
    #: The account still has pending amounts and cannot be closed.
    ACCOUNT_HAS_PENDING = "account_has_pending"
    #: The pending transfer was already posted (with another amount).
    TRANSFER_ALREADY_POSTED = "transfer_already_posted"
    #: The pending transfer was already voided.
    TRANSFER_ALREADY_VOIDED = "transfer_already_voided"
    #: The pending transfer's timeout has passed.
    TRANSFER_EXPIRED = "transfer_expired"
    #: Only a posted transfer can be reversed: this one is pending, voided or expired.
    TRANSFER_NOT_POSTED = "transfer_not_posted"
    #: The body is larger than ``LEDGER_MAX_BODY_BYTES``.
    BODY_TOO_LARGE = "body_too_large"
    #: The body's ``Content-Type`` is neither JSON nor MessagePack.
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    #: ``debit_account_id`` names no account.
    DEBIT_ACCOUNT_NOT_FOUND = "debit_account_not_found"
    #: ``credit_account_id`` names no account.
    CREDIT_ACCOUNT_NOT_FOUND = "credit_account_not_found"
    #: A transfer must move money between two different accounts.
    ACCOUNTS_MUST_BE_DIFFERENT = "accounts_must_be_different"
    #: An account's currency or scale differs from the transfer's currency or
    #: from the other account's scale.
    CURRENCY_MISMATCH = "currency_mismatch"
    #: The amount is zero or negative.
    AMOUNT_MUST_BE_POSITIVE = "amount_must_be_positive"
    #: The amount has more fractional digits than the accounts' scale.
    AMOUNT_SCALE_EXCEEDED = "amount_scale_exceeded"
    #: The debit account has ``debits_must_not_exceed_credits`` and the
    #: transfer would take its debits (posted and pending) past its posted credits.
    EXCEEDS_CREDITS = "exceeds_credits"
    #: The credit account has ``credits_must_not_exceed_debits`` and the
    #: transfer would take its credits (posted and pending) past its posted debits.
    EXCEEDS_DEBITS = "exceeds_debits"
    #: Posting more than the pending amount.
    POST_AMOUNT_EXCEEDS_PENDING = "post_amount_exceeds_pending"
    #: Reversing more than what of the transfer is posted and not yet reversed.
    REVERSAL_EXCEEDS_AMOUNT = "reversal_exceeds_amount"
    #: One of the accounts is closed.
    ACCOUNT_CLOSED = "account_closed"
    #: In an atomic batch, another item failed, so this one was not recorded.
    LINKED_TRANSFER_FAILED = "linked_transfer_failed"
    #: The service has no signing key (``LEDGER_SIGNING_KEY_FILE``), so it
    #: signs no checkpoints. Proofs are served all the same.
    NO_SIGNING_KEY = "no_signing_key"
    #: The database is unreachable, or serialization retries ran out. Retry
    #: later (``Retry-After``); with the same id a retry can never apply twice.
    UNAVAILABLE = "unavailable"
    #: A fault of the service itself; logged with the request id.
    INTERNAL_ERROR = "internal_error"


class LedgerError(Exception):
    """A refusal with its code, a message for people, and the field at fault."""

    def __init__(self, code: Code, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


class InvalidField(LedgerError):
    """A value that no request may carry; ``field`` is filled in by the caller
    that knows where the value came from."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(Code.INVALID_FIELD, message, field)
