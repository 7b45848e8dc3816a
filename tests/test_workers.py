"""`ledger serve --workers N`: N processes on one port, one database, one log."""

import asyncio
import os
import random
import re
import signal
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from ledger.processes import running
from tests.conftest import (
    appends_held_up,
    assert_log_matches_projections,
    assert_no_flag_violated,
    wait_for_blocked_backend,
)

WORKERS = "2"


async def worker_pids(url: str, connections: int = 40) -> set[int]:
    """The pids that answer ``connections`` new connections."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def pid() -> int:
            async with session.get(f"{url}/health/live") as response:
                return (await response.json())["pid"]

        return set(await asyncio.gather(*(pid() for _ in range(connections))))


async def post(session: aiohttp.ClientSession, url: str, body: dict) -> tuple[int, dict, Any]:
    """POST ``body``; the status, the decoded body and the headers."""
    async with session.post(url, json=body) as response:
        return response.status, await response.json(), response.headers


async def test_connections_reach_every_worker(service, database_url):
    served = await service("--workers", WORKERS, LEDGER_DATABASE_URL=database_url)
    pids = await worker_pids(served.url)
    assert len(pids) == 2
    assert served.process.pid not in pids
    assert await served.stop() == 0, served.log


async def test_workers_settings_come_from_the_environment_too(service, database_url):
    served = await service(LEDGER_WORKERS=WORKERS, LEDGER_DATABASE_URL=database_url)
    assert "INFO ledger: 2 workers serve\n" in served.log
    [listening] = [line for line in served.lines if "listening on" in line]
    assert listening.rstrip().endswith(f"INFO ledger: listening on {served.url}")
    assert len(await worker_pids(served.url)) == 2
    assert await served.stop() == 0, served.log


async def test_a_bank_run_through_two_workers_conserves_money_and_decides_each_transfer_once(service, database_url, db):
    served = await service("--workers", WORKERS, LEDGER_DATABASE_URL=database_url, LEDGER_ACCESS_LOG="off")
    rng = random.Random(7)
    # Many connections, so that the kernel spreads them over both workers.
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector) as session:
        accounts = []
        for restricted in (False, True) * 4:
            flags = {"debits_must_not_exceed_credits": restricted}
            status, account, _ = await post(
                session, f"{served.url}/v1/accounts", {"currency": "USD", "scale": 2, "flags": flags}
            )
            assert status == 201
            accounts.append(account["id"])
        transfers = []
        for _ in range(300):
            debit, credit = rng.sample(accounts, 2)
            transfers.append(
                {
                    "id": str(uuid.uuid4()),
                    "debit_account_id": debit,
                    "credit_account_id": credit,
                    "amount": f"{rng.randint(1, 5000) / 100:.2f}",
                    "currency": "USD",
                }
            )
        # Every transfer is sent twice at once: each copy may reach either worker.
        sends = [t for t in transfers for _ in range(2)]
        rng.shuffle(sends)
        answers = await asyncio.gather(*(post(session, f"{served.url}/v1/transfers", t) for t in sends))

    outcomes: dict[str, list[str]] = {}
    for sent, (status, body, headers) in zip(sends, answers):
        if status == 422:
            outcome = body["error"]["code"]
        else:
            outcome = "replayed" if headers.get("Idempotent-Replayed") == "true" else "created"
            assert (status, body["id"]) == ({"created": 201, "replayed": 200}[outcome], sent["id"])
        outcomes.setdefault(sent["id"], []).append(outcome)
    # A copy refused (a restricted account short of credits then) records
    # nothing; whatever the order, no transfer is created twice.
    for transfer_id, pair in outcomes.items():
        assert sorted(pair) in (
            ["created", "replayed"],
            ["created", "exceeds_credits"],
            ["exceeds_credits", "exceeds_credits"],
        ), (transfer_id, pair)
    created = {t for t, pair in outcomes.items() if "created" in pair}
    assert sum(pair.count("replayed") for pair in outcomes.values()) > len(transfers) // 2
    recorded = {str(r["id"]) for r in await db.fetch("SELECT id FROM transfers")}
    assert recorded == created
    assert await db.fetchval("SELECT count(*) FROM entries WHERE transfer_id IS NOT NULL") == 2 * len(created)
    await assert_log_matches_projections(db)
    await assert_no_flag_violated(db)
    assert await served.stop() == 0, served.log


async def test_sigterm_lets_the_request_in_flight_finish_then_stops_every_worker(service, database_url, db):
    served = await service("--workers", WORKERS, LEDGER_DATABASE_URL=database_url)
    pids = await worker_pids(served.url)
    async with aiohttp.ClientSession() as session:
        async with appends_held_up(db):
            in_flight = asyncio.ensure_future(
                post(session, f"{served.url}/v1/accounts", {"currency": "USD", "scale": 2})
            )
            await wait_for_blocked_backend(db)
            served.send(signal.SIGTERM)
            await until_refused(served.url)
        status, account, _ = await in_flight
    assert status == 201
    assert await served.stopped() == 0, served.log
    assert await db.fetchval("SELECT count(*) FROM accounts WHERE id = $1", uuid.UUID(account["id"])) == 1
    assert not any(running(pid) for pid in pids)


async def test_ctrl_c_stops_every_worker_with_status_0(service, database_url):
    served = await service("--workers", WORKERS, LEDGER_DATABASE_URL=database_url)
    pids = await worker_pids(served.url)
    # A terminal's Ctrl-C signals the whole foreground process group.
    os.killpg(served.process.pid, signal.SIGINT)
    assert await served.stopped() == 0, served.log
    assert not any(running(pid) for pid in pids)


async def test_a_hangup_stops_every_worker_with_status_0(service, database_url):
    served = await service("--workers", WORKERS, LEDGER_DATABASE_URL=database_url)
    pids = await worker_pids(served.url)
    # What a closed terminal sends the process it ran, the parent alone.
    served.send(signal.SIGHUP)
    assert await served.stopped() == 0, served.log
    assert not any(running(pid) for pid in pids)


async def test_a_worker_that_dies_is_logged_and_stops_the_service_with_status_1(service, database_url):
    served = await service("--workers", WORKERS, LEDGER_DATABASE_URL=database_url)
    victim, other = sorted(await worker_pids(served.url))
    os.kill(victim, signal.SIGKILL)
    assert await served.stopped() == 1, served.log
    assert re.search(rf"worker \d \(pid {victim}\) killed by SIGKILL; stopping the service", served.log), served.log
    assert not running(other)


async def test_workers_stop_when_their_parent_is_killed_and_free_the_port(service, database_url):
    served = await service("--workers", WORKERS, LEDGER_DATABASE_URL=database_url)
    pids = await worker_pids(served.url)
    # What the OOM killer or `kill -9` does: the parent cannot pass a signal on.
    served.send(signal.SIGKILL)
    await until_refused(served.url)
    # The log ends when the last worker has exited.
    assert await served.stopped() == -signal.SIGKILL
    assert not any(running(pid) for pid in pids)
    assert served.log.count("the service's parent process is gone; this worker stops") == 2, served.log


async def test_the_metrics_directory_a_killed_parent_left_is_removed_by_the_next_start(service, database_url):
    served = await service("--workers", WORKERS, LEDGER_DATABASE_URL=database_url)
    [left] = Path(tempfile.gettempdir()).glob(f"ledger-metrics-{served.process.pid}-*")
    served.send(signal.SIGKILL)
    await served.stopped()
    assert left.exists()

    again = await service("--workers", WORKERS, LEDGER_DATABASE_URL=database_url)

    assert not left.exists()
    assert await again.stop() == 0, again.log


async def test_a_second_service_with_workers_cannot_take_the_port_of_one_that_serves(service, database_url):
    served = await service("--workers", WORKERS, LEDGER_DATABASE_URL=database_url)
    pids = await worker_pids(served.url)
    port = served.url.rsplit(":", 1)[1]
    env = {**os.environ, "LEDGER_PORT": port, "LEDGER_DATABASE_URL": database_url}
    second = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ledger.cli", "serve", "--workers", WORKERS, env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        _, log = await asyncio.wait_for(second.communicate(), 60)
    finally:
        if second.returncode is None:  # it serves: stop it, workers and all
            second.terminate()
            await second.wait()
    assert second.returncode == 2, log.decode()
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in log.decode()
    assert await worker_pids(served.url) == pids
    assert await served.stop() == 0, served.log


async def test_workers_share_the_one_embedded_postgres_that_the_parent_runs(service):
    served = await service("--workers", WORKERS)
    pids = await worker_pids(served.url)
    async with aiohttp.ClientSession() as session:
        ids = []
        for _ in range(6):
            status, account, _ = await post(session, f"{served.url}/v1/accounts", {"currency": "USD", "scale": 2})
            assert status == 201
            ids.append(account["id"])
        # Whichever worker is asked sees what the other wrote: one database.
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as fresh:
            for account_id in ids * 3:
                async with fresh.get(f"{served.url}/v1/accounts/{account_id}") as response:
                    assert response.status == 200
    assert await served.stop() == 0, served.log
    assert served.log.count("embedded PostgreSQL running") == 1
    assert served.log.count("embedded PostgreSQL stopped") == 1
    assert not any(running(pid) for pid in pids)


async def test_expiry_with_two_workers_records_each_expiry_once(service, database_url, db):
    served = await service("--workers", WORKERS, LEDGER_DATABASE_URL=database_url, LEDGER_EXPIRY_INTERVAL="0.01")
    async with aiohttp.ClientSession() as session:
        debit, credit = [
            (await post(session, f"{served.url}/v1/accounts", {"currency": "USD", "scale": 2}))[1]["id"]
            for _ in range(2)
        ]
        holds = [
            {
                "id": str(uuid.uuid4()),
                "debit_account_id": debit,
                "credit_account_id": credit,
                "amount": "1.00",
                "currency": "USD",
                "pending": True,
                "timeout_seconds": 1,
            }
            for _ in range(40)
        ]
        status, body, _ = await post(session, f"{served.url}/v1/transfer-batches", {"transfers": holds})
        assert status == 200 and all(r.get("status") == "created" for r in body["results"]), body
    await until_expired(db, len(holds))
    # Stopping drains every write already queued, a second expiry included.
    assert await served.stop() == 0, served.log
    per_transfer = await db.fetch(
        "SELECT stream_id, count(*) AS n FROM events WHERE type = 'pending_transfer_expired' GROUP BY stream_id"
    )
    assert len(per_transfer) == len(holds) and all(r["n"] == 1 for r in per_transfer)
    await assert_log_matches_projections(db)


async def until_refused(url: str, timeout: float = 30.0) -> None:
    """Until a new connection to ``url`` is refused: every worker stopped listening."""
    deadline = asyncio.get_running_loop().time() + timeout
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        while True:
            try:
                async with session.get(f"{url}/health/live"):
                    pass
            except aiohttp.ClientConnectorError:
                return
            except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError):
                # Taken into the backlog of a socket being closed: it closes,
                # and the next connection is refused.
                pass
            assert asyncio.get_running_loop().time() < deadline, "the service kept listening"
            await asyncio.sleep(0.01)


async def until_expired(db, count: int, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while await db.fetchval("SELECT count(*) FROM transfers WHERE status = 'expired'") < count:
        assert asyncio.get_running_loop().time() < deadline, "the holds never expired"
        await asyncio.sleep(0.05)
