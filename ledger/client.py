"""A typed async client of the ledger's HTTP API (docs/api.md, "Python client").

::

    async with LedgerClient("http://127.0.0.1:8080", token="s3cret") as ledger:
        shop = await ledger.create_account("USD", 2)
        wallet = await ledger.create_account("USD", 2)
        paid = await ledger.transfer(shop.id, wallet.id, Decimal("12.50"), "USD")
        print((await ledger.get_account(wallet.id)).balance.credits_posted)  # Decimal('12.50')

Objects are msgspec structs with the documented fields, amounts
:class:`~decimal.Decimal` and times :class:`~datetime.datetime`; bodies go as
MessagePack unless ``encoding="json"``. A refused request raises
:class:`LedgerError` with its status and code. Connection errors and 503 are
retried with jittered backoff for up to ``retry_for`` seconds, always with the
same body, and so with the same idempotency id: the client makes the id of
what it creates before the first attempt, so a retried call never moves money
twice. Streams that lose their connection resume after the last line read.

It needs nothing but what the service itself runs on: aiohttp and msgspec.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from types import TracebackType
from typing import Any, Literal, TypeVar
from uuid import UUID

import aiohttp
import msgspec

T = TypeVar("T")

_MSGPACK = "application/msgpack"
_JSON = "application/json"
#: A connection or its answer lost: nothing says whether the request took effect.
_RETRIED_ERRORS = (aiohttp.ClientConnectionError, asyncio.TimeoutError)
_BACKOFF_FIRST = 0.05
_BACKOFF_MOST = 1.0


class _Object(msgspec.Struct, frozen=True, kw_only=True):
    """What the service answers with; fields it may add later are ignored."""


class Balance(_Object, frozen=True):
    debits_posted: Decimal
    credits_posted: Decimal
    debits_pending: Decimal
    credits_pending: Decimal


class Flags(_Object, frozen=True):
    debits_must_not_exceed_credits: bool = False
    credits_must_not_exceed_debits: bool = False


class Account(_Object, frozen=True):
    id: UUID
    currency: str
    scale: int
    flags: Flags
    metadata: dict[str, Any]
    created_at: datetime
    closed: bool
    balance: Balance


class Transfer(_Object, frozen=True):
    id: UUID
    debit_account_id: UUID
    credit_account_id: UUID
    amount: Decimal
    currency: str
    code: str | None
    metadata: dict[str, Any]
    pending: bool
    timeout_seconds: int | None
    status: Literal["posted", "pending", "voided", "expired"]
    seq: int
    created_at: datetime
    expires_at: datetime | None
    posted_amount: Decimal | None
    decided_seq: int | None
    reverses: UUID | None
    reversed_amount: Decimal


class BatchItemError(_Object, frozen=True):
    code: str
    message: str


class BatchResult(_Object, frozen=True):
    """One batch item's result: ``status`` and ``seq``, or ``error``."""

    id: UUID
    status: Literal["created", "exists"] | None = None
    seq: int | None = None
    error: BatchItemError | None = None


class Event(_Object, frozen=True):
    seq: int
    type: str
    stream_id: UUID
    data: dict[str, Any]
    metadata: dict[str, Any]
    recorded_at: datetime
    #: The chain hash, hex.
    hash: str


class Entry(_Object, frozen=True):
    seq: int
    transfer_id: UUID
    type: str
    side: Literal["debit", "credit"]
    amount: Decimal
    balance: Balance
    recorded_at: datetime


class BalanceAsOf(_Object, frozen=True):
    account_id: UUID
    as_of_seq: int
    debits_posted: Decimal
    credits_posted: Decimal
    debits_pending: Decimal
    credits_pending: Decimal


class Mismatch(_Object, frozen=True):
    field: str
    stored: str | None
    replayed: str | None
    account_id: UUID | None = None
    transfer_id: UUID | None = None


class CurrencyTotals(_Object, frozen=True):
    currency: str
    debits_posted: Decimal
    credits_posted: Decimal
    debits_pending: Decimal
    credits_pending: Decimal
    balanced: bool


class Chain(_Object, frozen=True):
    ok: bool
    first_bad_seq: int | None


class Reconciliation(_Object, frozen=True):
    ok: bool
    head_seq: int
    events_scanned: int
    accounts_checked: int
    mismatches: list[Mismatch]
    totals: list[CurrencyTotals]
    chain: Chain
    replay_error: str | None
    repaired: int
    duration_ms: int


class _ErrorDetail(msgspec.Struct):
    code: str
    message: str
    field: str | None = None


class _ErrorBody(msgspec.Struct):
    error: _ErrorDetail


class _AccountPage(msgspec.Struct):
    accounts: list[Account]
    next: UUID | None


class _TransferPage(msgspec.Struct):
    transfers: list[Transfer]
    next: str | None


class _Batch(msgspec.Struct):
    results: list[BatchResult]


class LedgerError(Exception):
    """The service refused a request: its HTTP ``status``, the result ``code``
    (docs/api.md, "Result codes"), a ``message`` for people, and the
    ``field`` at fault, if one is."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(f"{status} {code}: {message}" + (f" ({field})" if field else ""))
        self.status = status
        self.code = code
        self.message = message
        self.field = field


def _wire(value: Any) -> Any:
    """``value`` as the API takes it: amounts as decimal strings, ids as text."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, Mapping):
        return {k: _wire(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_wire(v) for v in value]
    return value


def _query(params: Mapping[str, Any]) -> dict[str, str]:
    """Query parameters as strings, those that are None left out; a
    datetime must carry its time zone (:class:`ValueError` otherwise)."""
    out = {}
    for name, value in params.items():
        if value is None:
            continue
        if isinstance(value, bool):
            out[name] = "true" if value else "false"
        elif isinstance(value, datetime):
            if value.utcoffset() is None:
                # The service cannot know which zone it is in; it would refuse it.
                raise ValueError(f"{name}={value.isoformat()} has no time zone: give it one (UTC, say)")
            out[name] = value.isoformat()
        else:
            out[name] = str(_wire(value))
    return out


class LedgerClient:
    """The ledger at ``base_url``. An async context manager; it closes the
    aiohttp session it made, never one it was given."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        encoding: Literal["msgpack", "json"] = "msgpack",
        retry_for: float = 10.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._media = _MSGPACK if encoding == "msgpack" else _JSON
        self._encode = msgspec.msgpack.encode if encoding == "msgpack" else msgspec.json.encode
        self.retry_for = retry_for
        self._session = session
        self._own_session = session is None

    async def __aenter__(self) -> LedgerClient:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    # -- accounts -------------------------------------------------------------

    async def create_account(
        self,
        currency: str,
        scale: int,
        *,
        id: UUID | None = None,
        flags: Flags | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Account:
        body: dict[str, Any] = {"id": id or uuid.uuid4(), "currency": currency, "scale": scale}
        if flags is not None:
            body["flags"] = msgspec.structs.asdict(flags)
        if metadata is not None:
            body["metadata"] = metadata
        return await self._call("POST", "/v1/accounts", Account, body)

    async def get_account(self, id: UUID) -> Account:
        return await self._call("GET", f"/v1/accounts/{id}", Account)

    async def close_account(self, id: UUID) -> Account:
        return await self._call("POST", f"/v1/accounts/{id}/close", Account, {})

    async def accounts(self, **filters: Any) -> AsyncIterator[Account]:
        """Every account matching ``filters`` (``currency``, ``closed``,
        ``metadata={key: value}``), page after page."""
        params = _filters(filters)
        while True:
            page = await self._call("GET", "/v1/accounts", _AccountPage, params=params)
            for account in page.accounts:
                yield account
            if page.next is None:
                return
            params = {**params, "after": str(page.next)}

    async def balance(self, account_id: UUID, as_of_seq: int | None = None) -> BalanceAsOf:
        params = _query({"as_of_seq": as_of_seq})
        return await self._call("GET", f"/v1/accounts/{account_id}/balance", BalanceAsOf, params=params)

    # -- transfers ------------------------------------------------------------

    async def transfer(
        self,
        debit_account_id: UUID,
        credit_account_id: UUID,
        amount: Decimal,
        currency: str,
        *,
        id: UUID | None = None,
        code: str | None = None,
        metadata: dict[str, Any] | None = None,
        pending: bool = False,
        timeout_seconds: int | None = None,
    ) -> Transfer:
        body: dict[str, Any] = {
            "id": id or uuid.uuid4(),
            "debit_account_id": debit_account_id,
            "credit_account_id": credit_account_id,
            "amount": amount,
            "currency": currency,
            "code": code,
            "metadata": metadata or {},
            "pending": pending,
        }
        if timeout_seconds is not None:
            body["timeout_seconds"] = timeout_seconds
        return await self._call("POST", "/v1/transfers", Transfer, body)

    async def post(self, id: UUID, amount: Decimal | None = None) -> Transfer:
        body = {} if amount is None else {"amount": amount}
        return await self._call("POST", f"/v1/transfers/{id}/post", Transfer, body)

    async def void(self, id: UUID) -> Transfer:
        return await self._call("POST", f"/v1/transfers/{id}/void", Transfer, {})

    async def reverse(
        self,
        id: UUID,
        *,
        id_of_reversal: UUID | None = None,
        amount: Decimal | None = None,
        code: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Transfer:
        """Reverse the posted transfer ``id`` (all that is left, or ``amount``)."""
        body: dict[str, Any] = {"id": id_of_reversal or uuid.uuid4(), "code": code, "metadata": metadata or {}}
        if amount is not None:
            body["amount"] = amount
        return await self._call("POST", f"/v1/transfers/{id}/reverse", Transfer, body)

    async def get_transfer(self, id: UUID) -> Transfer:
        return await self._call("GET", f"/v1/transfers/{id}", Transfer)

    async def transfers(self, **filters: Any) -> AsyncIterator[Transfer]:
        """Every transfer matching ``filters`` (the parameters of ``GET
        /v1/transfers``, ``metadata={key: value}`` for its metadata filters),
        page after page."""
        params = _filters(filters)
        while True:
            page = await self._call("GET", "/v1/transfers", _TransferPage, params=params)
            for transfer in page.transfers:
                yield transfer
            if page.next is None:
                return
            params = {**params, "cursor": page.next}

    async def batch(self, transfers: Sequence[Mapping[str, Any]], atomic: bool = False) -> list[BatchResult]:
        """Items as ``POST /v1/transfer-batches`` takes them (transfer requests,
        and ``action`` items); one result each. A transfer request without an
        ``id`` is given one, before the first attempt."""
        items = [item if "id" in item else {**item, "id": uuid.uuid4()} for item in transfers]
        body = {"transfers": items, "atomic": atomic}
        return (await self._call("POST", "/v1/transfer-batches", _Batch, body, ok=(200, 422))).results

    # -- history and admin ----------------------------------------------------

    async def events(self, after_seq: int = 0, follow: bool = False) -> AsyncIterator[Event]:
        """The log after ``after_seq``; with ``follow``, new events as they commit."""
        async for event in self._stream("/v1/events", Event, after_seq, {"follow": follow}):
            yield event

    async def entries(self, account_id: UUID, after_seq: int = 0) -> AsyncIterator[Entry]:
        async for entry in self._stream(f"/v1/accounts/{account_id}/entries", Entry, after_seq, {}):
            yield entry

    async def reconcile(self, repair: bool = False) -> Reconciliation:
        return await self._call("POST", "/admin/v1/reconciliations", Reconciliation, {"repair": repair})

    # -- the wire -------------------------------------------------------------

    def _session_or_fail(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("use the client as `async with LedgerClient(...) as client`")
        return self._session

    async def _call(
        self,
        method: str,
        path: str,
        type_: type[T],
        body: Any = None,
        *,
        params: Mapping[str, str] | None = None,
        ok: tuple[int, ...] = (200, 201),
    ) -> T:
        """One request, retried on lost connections and 503 until
        ``retry_for`` has passed, with the same body every time."""
        data = None if body is None else self._encode(_wire(body))
        headers = {**self._headers, "Accept": self._media}
        if data is not None:
            headers["Content-Type"] = self._media
        retries = _Retries(self.retry_for, started=True)
        while True:
            try:
                async with self._session_or_fail().request(
                    method, self._base + path, data=data, headers=headers, params=params
                ) as response:
                    content = await response.read()
                    if response.status in ok:
                        try:
                            return self._decode(response, content, type_)
                        except msgspec.DecodeError:  # its ValidationError too
                            # A refusal a call takes as its answer (a failed
                            # atomic batch's 422) may be an error instead: a
                            # body the whole request was refused for.
                            if response.status < 400:
                                raise
                    error = self._error(response, content)
                    retry_after = response.headers.get("Retry-After")
            except _RETRIED_ERRORS:
                if retries.exhausted():
                    raise
                error, retry_after = None, None
            if error is not None and (error.status != 503 or retries.exhausted()):
                raise error
            await retries.pause(retry_after)

    def _decode(self, response: aiohttp.ClientResponse, content: bytes, type_: type[T]) -> T:
        if response.content_type == _MSGPACK:
            return msgspec.msgpack.decode(content, type=type_, strict=False)
        return msgspec.json.decode(content, type=type_, strict=False)

    def _error(self, response: aiohttp.ClientResponse, content: bytes) -> LedgerError:
        try:
            detail = self._decode(response, content, _ErrorBody).error
        except (msgspec.DecodeError, msgspec.ValidationError):
            return LedgerError(response.status, "unknown", content.decode(errors="replace")[:200])
        return LedgerError(response.status, detail.code, detail.message, detail.field)

    async def _stream(self, path: str, type_: type[T], after_seq: int, params: Mapping[str, Any]) -> AsyncIterator[T]:
        """The NDJSON lines of a stream, as ``type_``; a lost connection is
        resumed after the last line read, within ``retry_for`` of the loss."""
        decoder = msgspec.json.Decoder(type_, strict=False)
        retries = _Retries(self.retry_for, started=False)
        while True:
            query = _query({**params, "after_seq": after_seq})
            try:
                async with self._session_or_fail().get(
                    self._base + path, params=query, headers=self._headers, timeout=aiohttp.ClientTimeout(total=None)
                ) as response:
                    if response.status != 200:
                        error = self._error(response, await response.read())
                        if error.status != 503 or retries.exhausted():
                            raise error
                    else:
                        async for line in response.content:
                            if line.strip():
                                item = decoder.decode(line)
                                after_seq = item.seq  # type: ignore[attr-defined]
                                retries.reset()
                                yield item
                        return
            except _RETRIED_ERRORS:
                pass
            if retries.exhausted():
                raise LedgerError(503, "unavailable", f"the stream {path} could not be resumed")
            await retries.pause()


class _Retries:
    """The retries of one call: jittered pauses until ``retry_for`` seconds
    have passed, counted from the call's start if ``started``, else from the
    first failure since the last :meth:`reset` (a stream that reads on)."""

    def __init__(self, retry_for: float, *, started: bool) -> None:
        self._for = retry_for
        self._deadline = time.monotonic() + retry_for if started else None
        self._attempt = 0

    def exhausted(self) -> bool:
        """Whether the time for retries is up (starting the count if need be)."""
        now = time.monotonic()
        if self._deadline is None:
            self._deadline = now + self._for
        return now >= self._deadline

    async def pause(self, retry_after: str | None = None) -> None:
        """Sleep before the next attempt: full jitter on a doubling ceiling
        (or what ``Retry-After`` asks, if less), never past the deadline."""
        assert self._deadline is not None, "exhausted() first"
        ceiling = min(_BACKOFF_MOST, _BACKOFF_FIRST * 2**self._attempt)
        if retry_after is not None and retry_after.isdigit():
            ceiling = min(ceiling, float(retry_after))
        await asyncio.sleep(max(0.0, min(random.uniform(0, ceiling), self._deadline - time.monotonic())))
        self._attempt += 1

    def reset(self) -> None:
        self._deadline, self._attempt = None, 0


def _filters(filters: Mapping[str, Any]) -> dict[str, str]:
    """Keyword filters as query parameters: ``metadata={k: v}`` as ``metadata.k=v``."""
    metadata = filters.get("metadata") or {}
    params = _query({k: v for k, v in filters.items() if k != "metadata"})
    params.update({f"metadata.{key}": str(value) for key, value in metadata.items()})
    return params
