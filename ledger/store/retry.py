"""Retrying a unit of work: exponential backoff with full jitter, bounded in
attempts and in time, then :class:`Unavailable`; given up, an attempt in
progress included, when it outlasts its time limit (:class:`NoAnswer`)."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import asyncpg

from .. import metrics

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Conflicts that PostgreSQL resolves by aborting one transaction: running it
#: again from the start is correct.
CONFLICTS: tuple[type[BaseException], ...] = (
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
)

#: The connection is gone (server restarted, backend terminated, network),
#: or none can be had now (the server is starting, stopping, or has as many
#: clients as it takes).
#: InternalClientError is here because a backend terminated while the
#: connection sat idle leaves asyncpg's protocol in a state where the next
#: query fails with it; the connection is unusable and must be replaced.
CONNECTION_LOST: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    ConnectionError,
    OSError,
)


#: What opening the database, or reading its state (its head, its role), can fail with:
#: the database out of reach (:data:`CONNECTION_LOST`), or refusing (no such
#: database or role, a setting it does not know, a schema it lacks).
CANNOT_OPEN: tuple[type[BaseException], ...] = CONNECTION_LOST + (asyncpg.PostgresError,)


def why_away(error: BaseException) -> str:
    """Why the database is away, in a few words, for an operator: its error's
    message, or, for a wait given up (a :class:`TimeoutError`, which has
    none), "no answer in time"."""
    return str(error) or ("no answer in time" if isinstance(error, TimeoutError) else type(error).__name__)


def cannot_open(error: BaseException) -> str:
    """One of :data:`CANNOT_OPEN` in one line, for an operator."""
    if isinstance(error, CONNECTION_LOST):
        return f"cannot reach the database: {error}"
    return f"the database refused: {error}"


class Unavailable(Exception):
    """The database cannot take the work now; the caller may try again later."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NoAnswer(Unavailable):
    """The database did not finish the work within ``seconds``, and it was
    given up: what the attempt in progress asked may or may not have been
    done (a commit may have been on its way)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the database did not answer within {seconds:g} s")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 10
    base_delay: float = 0.002
    max_delay: float = 0.25
    #: Seconds after the first attempt's start past which none is begun.
    deadline: float = 5.0
    #: Seconds after the first attempt's start at which the work is given up,
    #: an attempt in progress included: a database that stops answering, or a
    #: lock that is not let go, is not waited on for ever.
    time_limit: float = 10.0


async def retrying(
    attempt: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    retry_on: tuple[type[BaseException], ...] = CONFLICTS,
) -> T:
    """Run ``attempt`` until it succeeds, raising :class:`Unavailable` when the
    policy's attempts or deadline run out on errors in ``retry_on``, and
    :class:`NoAnswer` when its time limit does (the attempt in progress is
    cancelled: it must leave nothing behind that its cancellation breaks).

    ``attempt`` must be safe to run again from the start: every unit the
    service retries is one whole transaction.
    """
    limit = asyncio.timeout(policy.time_limit)
    try:
        async with limit:
            return await _retried(attempt, policy, retry_on, limit)
    except TimeoutError as error:
        if not limit.expired():
            raise
        raise NoAnswer(policy.time_limit) from error


async def _retried(
    attempt: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    retry_on: tuple[type[BaseException], ...],
    limit: asyncio.Timeout,
) -> T:
    started = time.monotonic()
    for number in range(1, policy.attempts + 1):
        try:
            return await attempt()
        except retry_on as error:
            if limit.expired():
                # The attempt turned its cancellation into an error of its own
                # (asyncpg may): the time is up all the same, and the limit
                # cancels nothing more.
                raise NoAnswer(policy.time_limit) from error
            last = error
            log.info("attempt %d failed: %s", number, error)
        delay = random.uniform(0, min(policy.max_delay, policy.base_delay * 2**number))
        if number == policy.attempts or time.monotonic() - started + delay > policy.deadline:
            break
        if isinstance(last, CONFLICTS):
            metrics.SERIALIZATION_RETRIES.inc()
        await asyncio.sleep(delay)
    raise Unavailable(f"gave up after {number} attempts: {last}") from last
