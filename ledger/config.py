"""Settings, read from the environment (see the table in README.md)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .store.retry import RetryPolicy


class ConfigError(ValueError):
    """A setting has a value the service cannot start with."""


SCOPES = frozenset({"read", "write", "admin"})


@dataclass(frozen=True, slots=True)
class Token:
    """An API token: its name (recorded with every event it causes), its
    secret, and its scopes (``admin`` implies ``read`` and ``write``)."""

    name: str
    secret: str = field(repr=False)
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


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
            raise ConfigError(
                f"LEDGER_TOKENS entry {name!r} has scopes {scopes!r}; use read, write, admin"
            )
        tokens.append(Token(name, secret, wanted))
    names = [t.name for t in tokens]
    if len(set(names)) != len(names):
        raise ConfigError("LEDGER_TOKENS names must be unique")
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
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    #: Empty: authentication is off (allowed on a loopback address only).
    tokens: tuple[Token, ...] = ()
    #: Seconds between sweeps for pending transfers past their deadline.
    expiry_interval: float = 1.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        def integer(name: str, default: int, minimum: int = 0) -> int:
            raw = env.get(name)
            if raw is None or raw == "":
                return default
            try:
                value = int(raw)
            except ValueError:
                raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
            if value < minimum:
                raise ConfigError(f"{name} must be at least {minimum}, got {value}")
            return value

        def seconds(name: str, default: float) -> float:
            raw = env.get(name)
            if raw is None or raw == "":
                return default
            try:
                value = float(raw)
            except ValueError:
                raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
            if not 0 < value <= 3600:
                raise ConfigError(f"{name} must be more than 0 and at most 3600, got {raw}")
            return value

        return cls(
            database_url=env.get("LEDGER_DATABASE_URL") or None,
            data_dir=Path(env.get("LEDGER_DATA_DIR") or ".ledger"),
            host=env.get("LEDGER_HOST") or "127.0.0.1",
            port=integer("LEDGER_PORT", 8080),
            max_body_bytes=integer("LEDGER_MAX_BODY_BYTES", 16 * 1024 * 1024, 1024),
            pool_min_size=integer("LEDGER_POOL_MIN_SIZE", 2, 1),
            pool_max_size=integer("LEDGER_POOL_MAX_SIZE", 16, 1),
            tokens=parse_tokens(env.get("LEDGER_TOKENS", "")),
            expiry_interval=seconds("LEDGER_EXPIRY_INTERVAL", 1.0),
            retry=RetryPolicy(
                attempts=integer("LEDGER_RETRY_ATTEMPTS", RetryPolicy().attempts, 1),
            ),
        )
