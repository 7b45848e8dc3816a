"""`ledger serve` on its embedded PostgreSQL, as a user runs it."""

import asyncio
import importlib.util
import os
import signal
import socket
import sys
import time

import aiohttp
import pytest

from ledger.config import ConfigError, Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_ready(url: str, process: asyncio.subprocess.Process, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            assert process.returncode is None, "the service exited"
            try:
                async with session.get(f"{url}/health/ready") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            assert time.monotonic() < deadline, "the service never became ready"
            await asyncio.sleep(0.1)


@pytest.fixture
def serve(tmp_path):
    async def start(**settings: str) -> tuple[asyncio.subprocess.Process, str]:
        port = free_port()
        env = {**os.environ, "LEDGER_DATA_DIR": str(tmp_path / "data"), "LEDGER_PORT": str(port), **settings}
        env.pop("LEDGER_DATABASE_URL", None)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ledger.cli", "serve", env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )
        url = f"http://127.0.0.1:{port}"
        await wait_ready(url, process)
        return process, url

    return start


async def stop(process: asyncio.subprocess.Process) -> tuple[int, str]:
    process.send_signal(signal.SIGTERM)
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    return process.returncode, stderr.decode()


async def get_and_stop(serve, path: str, **settings: str) -> str:
    """Start the service, GET ``path`` (200), stop it with SIGTERM (exit 0); return its log."""
    process, url = await serve(**settings)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{url}{path}") as response:
                assert response.status == 200
    finally:
        code, log = await stop(process)
    assert code == 0, log
    return log


async def test_serve_keeps_its_data_across_a_sigterm_and_restart(serve):
    process, url = await serve()
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/v1/accounts", json={"currency": "USD", "scale": 2}) as response:
            assert response.status == 201
            account_id = (await response.json())["id"]
    code, log = await stop(process)
    assert code == 0, log
    assert "embedded PostgreSQL stopped" in log
    expected_loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    assert f"event loop: {expected_loop}" in log

    await get_and_stop(serve, f"/v1/accounts/{account_id}")


async def test_serve_logs_every_request_unless_the_access_log_is_off(serve):
    for setting, logged in (("", True), ("off", False)):
        log = await get_and_stop(serve, "/v1/accounts", LEDGER_ACCESS_LOG=setting)
        assert ('"GET /v1/accounts HTTP/1.1" 200' in log) is logged, log


@pytest.mark.parametrize("raw, expected", [("off", False), ("0", False), ("On", True), ("true", True)])
def test_the_access_log_setting_reads_on_and_off(raw, expected):
    assert Settings.from_env({"LEDGER_ACCESS_LOG": raw}).access_log is expected


def test_the_access_log_setting_refuses_anything_else():
    with pytest.raises(ConfigError, match="LEDGER_ACCESS_LOG must be on or off"):
        Settings.from_env({"LEDGER_ACCESS_LOG": "sometimes"})
