"""``GET /metrics``: Prometheus text, each metric moved by exactly the work done."""

import asyncio
import re
import uuid

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ledger import metrics
from ledger.api.app import create_app
from ledger.config import Settings
from tests.conftest import transfer_body
from tests.test_retry import conflicting_transfer

DOCUMENTED = {
    "ledger_http_requests": "counter",
    "ledger_http_request_duration_seconds": "histogram",
    "ledger_append_batch_size": "histogram",
    "ledger_append_duration_seconds": "histogram",
    "ledger_serialization_retries": "counter",
    "ledger_write_queue_depth": "gauge",
    "ledger_event_log_head_seq": "gauge",
    "ledger_db_pool_connections": "gauge",
    "ledger_open_streams": "gauge",
}


class Scrape:
    """One scrape's samples, looked up by name and labels (absent: 0)."""

    def __init__(self, text: str) -> None:
        self.types = {}
        self.samples = {}
        for family in text_string_to_metric_families(text):
            self.types[family.name] = family.type
            for sample in family.samples:
                self.samples[sample.name, frozenset(sample.labels.items())] = sample.value

    def __call__(self, name: str, **labels: str) -> float:
        return self.samples.get((name, frozenset(labels.items())), 0.0)


async def scrape(client) -> Scrape:
    response = await client.get("/metrics")
    assert response.status == 200
    return Scrape(await response.text())


async def test_metrics_are_prometheus_text_with_every_documented_metric(client, open_account):
    a, b = await open_account(), await open_account()
    await client.post("/v1/transfers", json=transfer_body(a, b, "1.00"))
    response = await client.get("/metrics")
    assert response.content_type == "text/plain"
    assert "version=0.0.4" in response.headers["Content-Type"]
    types = Scrape(await response.text()).types
    assert {name: types.get(name) for name in DOCUMENTED} == DOCUMENTED


@pytest.mark.parametrize(
    "accept", ["application/openmetrics-text; version=abc", "text/plain; version=1.x", "text/plain; version=1.0.x"]
)
async def test_an_accept_whose_version_cannot_be_read_gets_the_default_text_format(client, accept):
    response = await client.get("/metrics", headers={"Accept": accept})
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert Scrape(await response.text()).types.get("ledger_http_requests") == "counter"


async def test_one_worker_also_exposes_the_process_and_interpreter_metrics(client):
    types = (await scrape(client)).types
    assert types.get("process_cpu_seconds") == "counter"
    assert types.get("process_resident_memory_bytes") == "gauge"
    assert types.get("python_info") == "gauge"


async def test_37_transfers_are_37_requests_on_the_transfers_route(client, open_account):
    a, b = await open_account(), await open_account()
    before = await scrape(client)
    for _ in range(37):
        assert (await client.post("/v1/transfers", json=transfer_body(a, b, "1.00"))).status == 201
    after = await scrape(client)
    created = {"method": "POST", "route": "/v1/transfers", "status": "201"}
    timed = {"method": "POST", "route": "/v1/transfers"}
    assert after("ledger_http_requests_total", **created) - before("ledger_http_requests_total", **created) == 37
    count = "ledger_http_request_duration_seconds_count"
    assert after(count, **timed) - before(count, **timed) == 37


async def test_requests_are_counted_by_route_template_not_path(client):
    before = await scrape(client)
    for _ in range(3):
        assert (await client.get(f"/v1/accounts/{uuid.uuid4()}")).status == 404
    after = await scrape(client)
    missing = {"method": "GET", "route": "/v1/accounts/{id}", "status": "404"}
    assert after("ledger_http_requests_total", **missing) - before("ledger_http_requests_total", **missing) == 3
    routes = {dict(labels).get("route", "") for _, labels in after.samples}
    assert not [route for route in routes if re.search("[0-9a-f]{8}-", route)]


async def test_a_request_no_route_takes_is_counted_as_unmatched(client):
    before = await scrape(client)
    assert (await client.get("/no/such/thing")).status == 404
    after = await scrape(client)
    unmatched = {"method": "GET", "route": "unmatched", "status": "404"}
    assert after("ledger_http_requests_total", **unmatched) - before("ledger_http_requests_total", **unmatched) == 1


async def test_each_append_counts_its_commands(client, open_account):
    a, b = await open_account(), await open_account()
    before = await scrape(client)
    for _ in range(5):  # one at a time: an append each
        assert (await client.post("/v1/transfers", json=transfer_body(a, b, "1.00"))).status == 201
    batch = {"transfers": [transfer_body(a, b, "1.00") for _ in range(37)]}
    assert (await client.post("/v1/transfer-batches", json=batch)).status == 200
    after = await scrape(client)
    for name, moved in (("ledger_append_batch_size_count", 6), ("ledger_append_batch_size_sum", 42)):
        assert after(name) - before(name) == moved, name
    assert after("ledger_append_duration_seconds_count") - before("ledger_append_duration_seconds_count") == 6


async def test_a_serialization_conflict_counts_one_retry(client, open_account, db):
    a, b = await open_account(), await open_account()
    before = await scrape(client)
    assert (await conflicting_transfer(client, db, a, b)).status == 201
    after = await scrape(client)
    assert after("ledger_serialization_retries_total") - before("ledger_serialization_retries_total") == 1


async def test_the_head_seq_gauge_is_the_last_event_of_the_log(client, open_account, db):
    a, b = await open_account(), await open_account()
    await client.post("/v1/transfers", json=transfer_body(a, b, "1.00"))
    assert (await scrape(client))("ledger_event_log_head_seq") == await db.fetchval("SELECT max(seq) FROM events")


async def test_an_idle_service_has_an_empty_write_queue_and_no_stream_connection_in_use(client):
    metrics = await scrape(client)
    assert metrics("ledger_write_queue_depth") == 0
    assert metrics("ledger_db_pool_connections", pool="stream", state="in_use") == 0
    assert metrics("ledger_db_pool_connections", pool="read", state="idle") >= 1


async def test_a_follower_is_an_open_stream_that_holds_no_stream_connection_once_caught_up(client):
    before = await scrape(client)
    async with client.get("/v1/events", params={"follow": "true"}) as stream:
        assert stream.status == 200
        during = await scrape(client)
    events = {"route": "/v1/events"}
    in_use = {"pool": "stream", "state": "in_use"}
    assert during("ledger_open_streams", **events) - before("ledger_open_streams", **events) == 1
    assert during("ledger_db_pool_connections", **in_use) - before("ledger_db_pool_connections", **in_use) == 0


async def test_metrics_are_summed_over_every_worker(service, tmp_path):
    served = await service("--workers", "2", TMPDIR=str(tmp_path))
    async with aiohttp.ClientSession() as session:

        async def post(path, body):
            # A connection each, so that the kernel spreads them over the workers.
            async with aiohttp.ClientSession() as own, own.post(f"{served.url}{path}", json=body) as response:
                assert response.status == 201, await response.text()
                return await response.json()

        a, b = [await post("/v1/accounts", {"currency": "USD", "scale": 2}) for _ in "ab"]
        await asyncio.gather(*(post("/v1/transfers", transfer_body(a, b, "1.00")) for _ in range(37)))
        pids = set()
        for _ in range(20):
            async with aiohttp.ClientSession() as own:
                async with own.get(f"{served.url}/health/live") as response:
                    pids.add((await response.json())["pid"])
                async with own.get(f"{served.url}/metrics") as response:
                    metrics = Scrape(await response.text())
            created = metrics("ledger_http_requests_total", method="POST", route="/v1/transfers", status="201")
            assert created == 37
            assert metrics("ledger_append_batch_size_sum") == 39  # two accounts, 37 transfers
        assert len(pids) == 2, "the scrapes reached one worker only"
        del session
    assert await served.stop() == 0, served.log
    assert not list(tmp_path.glob("ledger-metrics-*")), "the metrics directory outlived the service"


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_a_scrape_before_any_stream_shows_every_documented_metric_and_no_stream_open(service, workers):
    served = await service("--workers", workers)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{served.url}/health/live") as response:  # a request counted
            assert response.status == 200
        async with session.get(f"{served.url}/metrics") as response:
            scraped = Scrape(await response.text())
    assert {name: scraped.types.get(name) for name in DOCUMENTED} == DOCUMENTED
    for route in ("/v1/events", "/v1/accounts/{id}/entries"):
        assert scraped.samples[("ledger_open_streams", frozenset({("route", route)}))] == 0
    assert await served.stop() == 0, served.log


async def test_a_stream_cut_at_a_stop_is_counted_with_the_status_it_began_with(database_url, aiohttp_server, db):
    server = await aiohttp_server(create_app(Settings(database_url=database_url, shutdown_timeout=0)))
    began = {"method": "GET", "route": "/v1/events", "status": "200"}
    failed = {**began, "status": "500"}

    def counted(labels: dict[str, str]) -> float:
        return metrics.REGISTRY.get_sample_value("ledger_http_requests_total", labels) or 0.0

    before = counted(began), counted(failed)
    async with db.transaction(), aiohttp.ClientSession() as session:
        await db.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")  # the stream's first page waits
        async with session.get(server.make_url("/v1/events")) as response:
            assert response.status == 200
            await server.close()  # cuts the stream at once (LEDGER_SHUTDOWN_TIMEOUT=0)
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()
    assert (counted(began), counted(failed)) == (before[0] + 1, before[1])


async def test_a_service_just_started_shows_the_head_it_started_on_while_the_database_stops_answering(
    service, freeze_database
):
    first = await service()
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{first.url}/v1/accounts", json={"currency": "USD", "scale": 2}) as response:
            assert response.status == 201
    assert await first.stop() == 0, first.log
    served = await service()  # on the same data
    freeze_database(served)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        async with session.get(f"{served.url}/metrics") as response:
            assert response.status == 200
            assert Scrape(await response.text())("ledger_event_log_head_seq") == 1


async def test_metrics_answer_while_the_database_stops_answering(service, freeze_database):
    served = await service()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        async with session.post(f"{served.url}/v1/accounts", json={"currency": "USD", "scale": 2}) as response:
            assert response.status == 201
        freeze_database(served)
        async with session.get(f"{served.url}/metrics") as response:
            assert response.status == 200
            after = Scrape(await response.text())
    # The head the worker last saw: the account it opened.
    assert after("ledger_event_log_head_seq") == 1
