"""Typed application state."""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg
from aiohttp import web

from ..config import Settings
from ..store.coalescer import Coalescer
from ..store.connection import Closing
from ..store.expiry import Expirer
from ..store.feed import Feed
from ..store.follow import Wakeups
from ..store.writer import Clock, Writer
from .stream_state import OpenStreams

if TYPE_CHECKING:
    from .checkpoints import Checkpoints

SETTINGS = web.AppKey("settings", Settings)
CLOCK: web.AppKey[Clock] = web.AppKey("clock")
#: The DSN the service runs on (the embedded server's, when it started one).
DSN = web.AppKey("dsn", str)
POOL = web.AppKey("pool", asyncpg.Pool)
#: How the pools close as the service stops.
CLOSING = web.AppKey("closing", Closing)
#: Connections for streams only (see :mod:`ledger.api.streams`), to the
#: replica when there is one.
STREAM_POOL = web.AppKey("stream_pool", asyncpg.Pool)
#: Where long reads go: the replica's DSN, or the primary's.
READ_DSN = web.AppKey("read_dsn", str)
#: How following streams learn that the log grew.
WAKEUPS = web.AppKey("wakeups", Wakeups)
#: The new events, read once for every follower of the process.
FEED = web.AppKey("feed", Feed)
STREAMS = web.AppKey("streams", OpenStreams)
WRITER = web.AppKey("writer", Writer)
#: Where every write goes: the group commit in front of the writer.
COALESCER = web.AppKey("coalescer", Coalescer)
EXPIRER = web.AppKey("expirer", Expirer)
#: The signed checkpoints; ``None`` without a signing key.
CHECKPOINTS: web.AppKey[Checkpoints | None] = web.AppKey("checkpoints")
