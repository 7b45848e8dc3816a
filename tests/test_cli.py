"""`ledger serve` on its embedded PostgreSQL, as a user runs it."""

import asyncio
import importlib.util
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from ledger.config import ConfigError, Settings
from ledger.processes import running
from ledger.store.embedded import EmbeddedPostgres
from tests.conftest import ends_within, ledger_cli, postmaster_pid, with_database

#: Nothing listens there.
UNREACHABLE = "postgresql://postgres@127.0.0.1:9/ledger"


async def get_and_stop(service, path: str, *args: str, **settings: str) -> str:
    """Start the service, GET ``path`` (200), stop it with SIGTERM (exit 0); return its log."""
    served = await service(*args, **settings)
    async with aiohttp.ClientSession() as session, session.get(f"{served.url}{path}") as response:
        assert response.status == 200
    code = await served.stop()
    assert code == 0, served.log
    return served.log


async def test_serve_keeps_its_data_across_a_sigterm_and_restart(service):
    served = await service()
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{served.url}/v1/accounts", json={"currency": "USD", "scale": 2}) as response:
            assert response.status == 201
            account_id = (await response.json())["id"]
    code = await served.stop()
    assert code == 0, served.log
    assert "embedded PostgreSQL stopped" in served.log

    await get_and_stop(service, f"/v1/accounts/{account_id}")


async def test_serve_stops_its_postgresql_after_a_start_that_followed_a_crash(service, tmp_path):
    crashed = await service()
    crashed.process.kill()  # the service alone: its PostgreSQL runs on, listing it as a holder
    await crashed.process.wait()

    served = await service()
    assert await served.stop() == 0, served.log

    assert "embedded PostgreSQL stopped" in served.log
    assert not (tmp_path / "data" / "postmaster.pid").exists(), "PostgreSQL is still running"


async def test_serve_says_where_it_listens_once_it_serves(service):
    served = await service()
    [line] = [line for line in served.lines if "listening on http" in line]
    assert line.rstrip().endswith(f"listening on {served.url}")
    async with aiohttp.ClientSession() as session, session.get(f"{served.url}/health/ready") as response:
        assert response.status == 200
    assert await served.stop() == 0


async def test_serve_runs_on_uvloop_unless_it_is_switched_off(service):
    assert importlib.util.find_spec("uvloop"), "uvloop is a dependency of the service"
    for setting, loop in (("", "uvloop"), ("off", "asyncio")):
        log = await get_and_stop(service, "/health/live", LEDGER_UVLOOP=setting)
        assert f"event loop: {loop}" in log, log


async def test_serve_logs_every_request_unless_the_access_log_is_off(service):
    for setting, logged in (("", True), ("off", False)):
        log = await get_and_stop(service, "/v1/accounts", LEDGER_ACCESS_LOG=setting)
        assert ('"GET /v1/accounts HTTP/1.1" 200' in log) is logged, log


@pytest.mark.parametrize("raw, expected", [("off", False), ("0", False), ("On", True), ("true", True)])
def test_the_access_log_setting_reads_on_and_off(raw, expected):
    assert Settings.from_env({"LEDGER_ACCESS_LOG": raw}).access_log is expected


def test_the_access_log_setting_refuses_anything_else():
    with pytest.raises(ConfigError, match="LEDGER_ACCESS_LOG must be on or off"):
        Settings.from_env({"LEDGER_ACCESS_LOG": "sometimes"})


def settings_only(**settings: str) -> dict[str, str]:
    """This environment with no ``LEDGER_*`` setting but ``settings``."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}, **settings}


def ledger_with_only(*args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    """``ledger ARGS`` run with no ``LEDGER_*`` setting but ``settings``; what it did."""
    command = [sys.executable, "-m", "ledger.cli", *args]
    return subprocess.run(command, env=settings_only(**settings), capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    "args, settings, complaint",
    [
        (["serve", "--workers", "0"], {}, "--workers must be at least 1"),
        (["serve"], {"LEDGER_WORKERS": "-2"}, "LEDGER_WORKERS must be at least 1"),
        (["serve"], {"LEDGER_DATABASE_TIMEOUT": "0.5"}, "LEDGER_DATABASE_TIMEOUT must be at least 1.0"),
        (["serve"], {"LEDGER_READ_DATABASE_URL": "mysql://u:secret@h/db"}, "must be a PostgreSQL URL"),
        (["serve"], {"LEDGER_DATABASE_URL": UNREACHABLE}, "cannot reach the database"),
        (["migrate"], {"LEDGER_DATABASE_URL": UNREACHABLE}, "cannot reach the database"),
        (["reconcile"], {"LEDGER_DATABASE_URL": UNREACHABLE}, "cannot reach the database"),
        (["rebuild-projections"], {"LEDGER_DATABASE_URL": UNREACHABLE}, "cannot reach the database"),
        (["export"], {"LEDGER_DATABASE_URL": UNREACHABLE}, "cannot reach the database"),
        (["import", os.devnull], {"LEDGER_DATABASE_URL": UNREACHABLE}, "cannot reach the database"),
        (["serve"], {"LEDGER_HOST": "0.0.0.0"}, "refusing to listen on 0.0.0.0 without authentication"),
        (["serve"], {"LEDGER_DATABASE_URL": "postgresql://localhost:notaport/db"}, "LEDGER_DATABASE_URL is not a URL"),
        (["serve"], {"LEDGER_READ_DATABASE_URL": "postgresql://u:secret@[::1/db"}, "LEDGER_READ_DATABASE_URL is not"),
        (["serve"], {"LEDGER_TOKENS": " ; "}, "LEDGER_TOKENS is set but names no token"),
        (["serve"], {"LEDGER_POOL_MIN_SIZE": "20"}, "LEDGER_POOL_MIN_SIZE (20) must be at most LEDGER_POOL_MAX_SIZE"),
        (["serve"], {"LEDGER_DATA_DIR": "/tmp/with space"}, "LEDGER_DATA_DIR must be a path without blanks"),
        (["serve"], {"LEDGER_DATA_DIR": "/dev/null"}, "cannot run PostgreSQL in /dev/null"),
        (["export"], {"LEDGER_DATA_DIR": "/dev/null"}, "cannot run PostgreSQL in /dev/null"),
    ],
)
def test_bad_configuration_is_one_line_and_status_2(tmp_path, args, settings, complaint):
    done = ledger_with_only(*args, **{"LEDGER_DATA_DIR": str(tmp_path / "data"), **settings})
    assert done.returncode == 2, done.stderr
    [line] = [line for line in done.stderr.splitlines() if "ERROR" in line]
    assert complaint in line
    assert "Traceback" not in done.stderr
    assert "secret" not in done.stderr


def test_a_data_directory_that_holds_other_files_is_refused_saying_so_and_left_as_it_was(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "notes.txt").write_text("not PostgreSQL's")

    done = ledger_with_only("serve", LEDGER_DATA_DIR=str(data))

    assert done.returncode == 2, done.stderr
    [line] = [line for line in done.stderr.splitlines() if "ERROR" in line]
    assert f"cannot run PostgreSQL in {data}: it holds 'notes.txt' but no PostgreSQL data" in line
    assert [p.name for p in data.iterdir()] == ["notes.txt"]
    assert (data / "notes.txt").read_text() == "not PostgreSQL's"


def damaged(data: Path, how: Callable[[Path], None]) -> Path:
    """``data`` made by the embedded server, then damaged ``how``."""
    server = EmbeddedPostgres(data)
    server.start()
    server.stop()
    how(data)
    return data


def bad_settings(data: Path) -> None:
    with (data / "postgresql.conf").open("a") as conf:
        conf.write("shared_buffers = 128mb\nwal_level = minimal_please\n")


def no_control_file(data: Path) -> None:
    (data / "global" / "pg_control").unlink()


def no_relation_map(data: Path) -> None:
    """A server that starts, and then fails each connection (and restarts)."""
    (data / "global" / "pg_filenode.map").unlink()


@pytest.mark.parametrize(
    "how, why",
    [
        (bad_settings, 'invalid value for parameter "shared_buffers": "128mb"; '),
        (bad_settings, 'invalid value for parameter "wal_level": "minimal_please"; '),
        (no_control_file, "could not find the database system"),
        (no_relation_map, 'could not open file "global/pg_filenode.map": No such file or directory'),
    ],
)
def test_an_embedded_server_that_will_not_start_is_one_line_saying_why_in_its_own_words(tmp_path, how, why):
    data = damaged(tmp_path / "data", how)

    done = ledger_with_only("serve", LEDGER_DATA_DIR=str(data))

    assert done.returncode == 2, done.stderr
    [line] = [line for line in done.stderr.splitlines() if "ERROR" in line]
    assert f"cannot run PostgreSQL in {data}: " in line
    assert why in line
    assert "pg_ctl" not in line
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_read_pool_larger_than_the_database_allows_is_one_line_naming_its_setting(tmp_path, workers):
    # The embedded server takes 100 connections.
    size = {"LEDGER_POOL_MIN_SIZE": "120", "LEDGER_POOL_MAX_SIZE": "120"}

    done = ledger_with_only("serve", "--workers", workers, LEDGER_DATA_DIR=str(tmp_path / "data"), **size)

    assert done.returncode == 2, done.stderr
    said = "cannot open the read pool's 120 connections (LEDGER_POOL_MIN_SIZE): "
    assert any(said in line and "too many clients" in line for line in done.stderr.splitlines()), done.stderr
    assert "Traceback" not in done.stderr


def test_an_embedded_server_that_fails_as_it_runs_is_shut_down_at_once_and_said_so(tmp_path):
    data = damaged(tmp_path / "data", no_relation_map)
    started = time.monotonic()

    done = ledger_with_only("reconcile", LEDGER_DATA_DIR=str(data))

    # Not pg_ctl's wait for a stop (PGCTLTIMEOUT, 60 s), which such a server never finishes.
    assert time.monotonic() - started < 30
    assert done.returncode == 2, done.stderr
    said = f"WARNING ledger.store.embedded: embedded PostgreSQL in {data} failed and was shut down at once"
    assert said in done.stderr
    assert not (data / "postmaster.pid").exists()  # which the server removes as it ends


def test_an_embedded_server_that_does_not_stop_when_asked_is_killed_and_said_so(tmp_path, monkeypatch, caplog):
    data = tmp_path / "data"
    server = EmbeddedPostgres(data)
    server.start()
    postmaster = postmaster_pid(data)
    os.kill(postmaster, signal.SIGSTOP)  # hears nothing until it is killed
    monkeypatch.setenv("PGCTLTIMEOUT", "3")  # pg_ctl's wait for the stop, shortened
    caplog.set_level(logging.INFO, "ledger.store.embedded")

    server.stop()

    assert f"embedded PostgreSQL in {data} did not stop when asked and was killed" in caplog.text
    assert ends_within(10, postmaster)


def test_an_embedded_server_that_refuses_a_migration_is_one_line_in_the_databases_words(tmp_path):
    data = tmp_path / "data"
    server = EmbeddedPostgres(data)
    dsn = server.start()
    asyncio.run(execute(dsn, "CREATE TABLE ledger_head (x int)"))  # where migration 0001 makes its own
    server.stop()

    done = ledger_with_only("reconcile", LEDGER_DATA_DIR=str(data))

    assert done.returncode == 2, done.stderr
    [line] = [line for line in done.stderr.splitlines() if "ERROR" in line]
    refused = 'the database refused: relation "ledger_head" already exists'
    assert line.endswith(f"ERROR ledger: cannot migrate PostgreSQL in {data}: {refused}")
    assert "Traceback" not in done.stderr
    assert "embedded PostgreSQL stopped" in done.stderr


def test_an_embedded_server_another_process_holds_is_left_running_naming_it(tmp_path):
    data = tmp_path / "data"
    server = EmbeddedPostgres(data)
    server.start()
    try:
        done = ledger_with_only("reconcile", LEDGER_DATA_DIR=str(data))

        assert done.returncode == 0, done.stderr
        assert f"embedded PostgreSQL in {data} left running: process {os.getpid()} holds it" in done.stderr
        assert running(postmaster_pid(data))
    finally:
        server.stop()


def test_a_holder_that_died_without_letting_go_does_not_keep_the_embedded_server_running(tmp_path, caplog):
    data = tmp_path / "data"
    server = EmbeddedPostgres(data)
    server.start()
    gone = subprocess.Popen(["true"])  # a process that has exited
    gone.wait()
    holders = data / ".handle_pids.json"
    holders.write_text(json.dumps([gone.pid, *json.loads(holders.read_text())]))  # as a SIGKILLed command leaves it
    postmaster = postmaster_pid(data)
    caplog.set_level(logging.INFO, "ledger.store.embedded")

    server.stop()

    assert "embedded PostgreSQL stopped" in caplog.messages
    assert not running(postmaster)


@pytest.mark.parametrize(
    "signum, said",
    [
        (signal.SIGKILL, "had stopped on its own (killed, or crashed)"),  # as the OOM killer does
        (signal.SIGTERM, "had been stopped already, not by this service"),  # as `pg_ctl stop` does
    ],
)
def test_an_embedded_server_stopped_under_the_service_is_said_so_at_the_stop(tmp_path, caplog, signum, said):
    data = tmp_path / "data"
    server = EmbeddedPostgres(data)
    server.start()
    postmaster = postmaster_pid(data)
    os.kill(postmaster, signum)
    assert ends_within(10, postmaster)
    caplog.set_level(logging.INFO, "ledger.store.embedded")

    server.stop()

    assert f"embedded PostgreSQL in {data} {said}" in caplog.text


def test_a_lock_file_naming_another_process_is_removed_and_that_process_left_alone(tmp_path):
    data = tmp_path / "data"
    server = EmbeddedPostgres(data)
    server.start()
    lock = (data / "postmaster.pid").read_text()  # as a server killed with its container leaves it
    server.stop()
    other = subprocess.Popen(["sleep", "60"])  # its pid given out again, to another process
    try:
        (data / "postmaster.pid").write_text(f"{other.pid}\n" + lock.split("\n", 1)[1])

        done = ledger_with_only("reconcile", LEDGER_DATA_DIR=str(data))

        assert done.returncode == 0, done.stderr
        assert f"removed its lock file, left by a server that is gone (it names process {other.pid}" in done.stderr
        assert "embedded PostgreSQL stopped" in done.stderr
        assert other.poll() is None  # not stopped as if it were the server
    finally:
        other.kill()
        other.wait()


async def execute(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.mark.parametrize("command", ["serve", "migrate", "reconcile"])
def test_a_database_that_does_not_exist_is_one_line_and_status_2(database_url, command):
    missing = with_database(database_url, "no_such_database")

    done = ledger_cli(missing, command)

    assert done.returncode == 2, done.stderr
    assert b"the database refused" in done.stderr
    assert b'database "no_such_database" does not exist' in done.stderr
    assert b"Traceback" not in done.stderr


def test_an_error_nothing_caught_is_one_json_line_when_json_is_asked_for():
    code = "from ledger import logs; logs.configure('json'); raise RuntimeError('boom')"

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)

    [line] = done.stderr.splitlines()
    logged = json.loads(line)
    assert (logged["level"], "RuntimeError: boom" in logged["exc_info"]) == ("CRITICAL", True)


async def signalled_as_it_starts(command: list[str], data: Path, signum: int, after: bytes) -> tuple[int, str]:
    """``ledger COMMAND`` on ``data``, sent ``signum`` as soon as it logs a
    line holding ``after``, to its whole process group (as a terminal sends
    Ctrl-C); its exit status, and its log from then on."""
    process = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "ledger.cli", *command],
        env=settings_only(LEDGER_DATA_DIR=str(data), LEDGER_PORT="0"),
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # a process group of its own, as a terminal gives it
    )
    assert process.stderr is not None
    async for line in process.stderr:
        if after in line:
            break
    os.killpg(process.pid, signum)
    rest = (await process.stderr.read()).decode()
    return await process.wait(), rest


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
async def test_a_stop_signal_while_the_service_starts_stops_it_and_its_postgresql_without_a_traceback(
    tmp_path, signum, workers
):
    # PostgreSQL runs; the service is migrating, or starting its workers, or has just started.
    status, rest = await signalled_as_it_starts(
        ["serve", "--workers", workers], tmp_path / "data", signum, b"embedded PostgreSQL running"
    )

    assert status == 0, rest
    assert "Traceback" not in rest
    assert not (tmp_path / "data" / "postmaster.pid").exists(), "PostgreSQL is still running"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
async def test_a_command_told_to_stop_once_postgresql_runs_is_interrupted_and_stops_it(tmp_path, signum):
    status, log = await signalled_as_it_starts(["reconcile"], tmp_path / "data", signum, b"embedded PostgreSQL running")

    assert status == 130, log
    assert "WARNING ledger: interrupted" in log
    assert "Traceback" not in log
    assert not (tmp_path / "data" / "postmaster.pid").exists(), "PostgreSQL is still running"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_a_stop_signal_during_the_first_start_leaves_data_that_the_next_start_serves_from(tmp_path, signum):
    # Sent as the service says its first line, before the embedded server's data is made.
    status, rest = await signalled_as_it_starts(["serve"], tmp_path / "data", signum, b"authentication is off")

    assert status == 0, rest
    assert not (tmp_path / "data" / "postmaster.pid").exists(), "PostgreSQL is still running"
    again = ledger_with_only("reconcile", LEDGER_DATA_DIR=str(tmp_path / "data"))
    assert again.returncode == 0, again.stderr


def test_a_bad_setting_is_one_json_line_when_json_is_asked_for(tmp_path):
    done = ledger_with_only(
        "serve", LEDGER_DATA_DIR=str(tmp_path / "data"), LEDGER_LOG_FORMAT="json", LEDGER_PORT="abc"
    )
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.splitlines()
    logged = json.loads(line)
    assert (logged["level"], logged["message"]) == ("ERROR", "LEDGER_PORT must be an integer, got 'abc'")


@pytest.mark.parametrize(
    "args, said",
    [
        (["serve", "--workers", "abc"], "ledger serve: argument --workers: invalid int value: 'abc'"),
        (["export", "--after-seq", "-1"], "ledger export: argument --after-seq: not a seq: '-1'"),
        ([], "ledger: the following arguments are required: command"),
    ],
)
def test_a_command_line_that_cannot_be_read_is_one_json_line_when_json_is_asked_for(args, said):
    done = ledger_with_only(*args, LEDGER_LOG_FORMAT="json")
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.splitlines()
    logged = json.loads(line)
    assert logged["level"] == "ERROR"
    assert logged["message"].startswith(said)
