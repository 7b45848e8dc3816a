"""Retrying a unit of work: exponential backoff with full jitter, bounded in
attempts and in time, then :class:`Unavailable`."""

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

#: The connection is gone (server restarted, backend terminated, network).
#: InternalClientError is here because a backend terminated while the
#: connection sat idle leaves asyncpg's protocol in a state where the next
#: query fails with it; the connection is unusable and must be replaced.
CONNECTION_LOST: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
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


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 10
    base_delay: float = 0.002
    max_delay: float = 0.25
    #: Seconds after the first attempt's start past which none is begun.
    deadline: float = 5.0


async def retrying(
    attempt: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    retry_on: tuple[type[BaseException], ...] = CONFLICTS,
) -> T:
    """Run ``attempt`` until it succeeds, raising :class:`Unavailable` when the
    policy's attempts or deadline run out on errors in ``retry_on``.

    ``attempt`` must be safe to run again from the start: every unit the
    service retries is one whole transaction.
    """
    started = time.monotonic()
    for number in range(1, policy.attempts + 1):
        try:
            return await attempt()
        except retry_on as error:
            last = error
            log.info("attempt %d failed: %s", number, error)
        delay = random.uniform(0, min(policy.max_delay, policy.base_delay * 2**number))
        if number == policy.attempts or time.monotonic() - started + delay > policy.deadline:
            break
        if isinstance(last, CONFLICTS):
            metrics.SERIALIZATION_RETRIES.inc()
        await asyncio.sleep(delay)
    raise Unavailable(f"gave up after {number} attempts: {last}") from last
