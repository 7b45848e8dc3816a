"""Typed application state."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from ..config import Settings
from ..store.expiry import Expirer
from ..store.writer import Clock, Writer

SETTINGS = web.AppKey("settings", Settings)
CLOCK = web.AppKey("clock", Clock)
#: The DSN the service runs on (the embedded server's, when it started one).
DSN = web.AppKey("dsn", str)
POOL = web.AppKey("pool", asyncpg.Pool)
WRITER = web.AppKey("writer", Writer)
EXPIRER = web.AppKey("expirer", Expirer)
