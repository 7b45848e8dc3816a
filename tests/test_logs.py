"""The service's log as an operator reads it: text by default, JSON on request."""

import asyncio
import contextlib
import io
import json
import logging
import signal
import sys
import threading
import uuid
from collections.abc import Iterator

import aiohttp
import pytest
from aiohttp import web

from ledger import logs
from ledger.api.access_log import AccessLogger
from ledger.config import ConfigError, Settings

Request = tuple[str, str, dict[str, str]]


def logged(served) -> list[dict]:
    """Every line a service stopped with ``LEDGER_LOG_FORMAT=json`` logged, parsed."""
    return [json.loads(line) for line in served.lines if line.strip()]


async def json_log(service, *requests: Request) -> tuple[list[dict], list[aiohttp.ClientResponse]]:
    """Serve with ``LEDGER_LOG_FORMAT=json``, make ``requests`` (method, path,
    headers), stop; every log line parsed, and the responses."""
    served = await service(LEDGER_LOG_FORMAT="json")
    responses = []
    async with aiohttp.ClientSession() as session:
        for method, path, headers in requests:
            async with session.request(method, f"{served.url}{path}", headers=headers) as response:
                await response.read()
                responses.append(response)
    assert await served.stop() == 0, served.log
    return logged(served), responses


def access_lines(lines: list[dict]) -> list[dict]:
    return [line for line in lines if line["logger"] == "aiohttp.access"]


async def json_log_of_unparsable_request(service) -> list[dict]:
    """Serve with ``LEDGER_LOG_FORMAT=json``, send a request that is not HTTP
    the service can parse (it is answered 400), stop; every log line parsed."""
    served = await service(LEDGER_LOG_FORMAT="json")
    host, port = served.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET / HTTP/9.9\r\nHost: x\r\n\r\n")
    assert (await reader.readline()).split()[1] == b"400"
    writer.close()
    assert await served.stop() == 0, served.log
    return logged(served)


async def test_every_json_log_line_is_an_object_with_ts_level_logger_and_message(service):
    lines, _ = await json_log(service, ("GET", "/health/live", {}))
    for line in lines:
        assert {"ts", "level", "logger", "message"} <= line.keys(), line
        assert line["level"] in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}
    assert any(line["message"].startswith("listening on http://") for line in lines)


async def test_a_json_access_line_carries_the_request_id_the_caller_sent(service):
    missing = uuid.uuid4()
    lines, [response] = await json_log(service, ("GET", f"/v1/accounts/{missing}", {"X-Request-ID": "req-42"}))
    [line] = access_lines(lines)
    assert response.headers["X-Request-ID"] == "req-42"
    assert line["request_id"] == "req-42"
    assert line["method"] == "GET"
    assert line["route"] == "/v1/accounts/{id}"
    assert line["path"] == f"/v1/accounts/{missing}"
    assert line["status"] == 404
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0


async def test_a_json_access_line_carries_the_request_id_the_service_made(service):
    lines, responses = await json_log(service, ("GET", "/v1/accounts", {}), ("POST", "/v1/accounts", {}))
    made = [response.headers["X-Request-ID"] for response in responses]
    assert [line["request_id"] for line in access_lines(lines)] == made
    assert [line["status"] for line in access_lines(lines)] == [200, 415]


async def test_a_json_access_line_times_its_request_to_the_microsecond(service):
    # Not by the event loop's clock: uvloop's keeps whole milliseconds.
    lines, _ = await json_log(service, *[("GET", "/health/live", {})] * 20)
    durations = [line["duration_ms"] for line in access_lines(lines)]
    assert len(durations) == 20
    assert all(duration > 0 for duration in durations), durations
    assert any(duration != int(duration) for duration in durations), durations


async def test_a_request_no_route_takes_is_logged_without_a_route(service):
    lines, [response] = await json_log(service, ("GET", "/no/such/thing", {}))
    [line] = access_lines(lines)
    assert response.status == 404
    assert line["route"] is None
    assert line["path"] == "/no/such/thing"


async def test_a_request_the_service_cannot_parse_gets_a_json_access_line_without_a_route(service):
    lines = await json_log_of_unparsable_request(service)
    [refused] = [line for line in access_lines(lines) if line["status"] == 400]
    assert refused["route"] is None


async def test_a_request_the_service_cannot_parse_is_a_warning_without_a_traceback(service):
    lines = await json_log_of_unparsable_request(service)
    [warning] = [line for line in lines if line["logger"] == "aiohttp.server"]
    assert warning["level"] == "WARNING"
    assert "HTTP/9.9" in warning["message"]
    assert "exc_info" not in warning


async def test_a_body_that_is_not_in_its_content_encoding_is_a_warning_without_a_traceback(service):
    served = await service(LEDGER_LOG_FORMAT="json")
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{served.url}/v1/accounts", data=b"not gzip", headers=headers) as response:
            assert response.status == 400
            assert (await response.json())["error"]["code"] == "malformed_body"
    assert await served.stop() == 0, served.log
    lines = logged(served)
    [warning] = [line for line in lines if line["logger"] == "aiohttp.server"]
    assert warning["level"] == "WARNING"
    assert "gzip" in warning["message"]
    assert "exc_info" not in warning


async def test_a_stream_cut_at_a_stop_gets_its_access_line(service, database_url, db):
    served = await service(LEDGER_DATABASE_URL=database_url, LEDGER_LOG_FORMAT="json", LEDGER_SHUTDOWN_TIMEOUT="0")
    async with db.transaction(), aiohttp.ClientSession() as session:
        await db.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")  # the stream's first page waits
        async with session.get(f"{served.url}/v1/events", headers={"X-Request-ID": "cut-1"}) as response:
            assert response.status == 200
            served.send(signal.SIGTERM)  # cuts the stream at once (LEDGER_SHUTDOWN_TIMEOUT=0)
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()
    assert await served.stopped() == 0, served.log
    [line] = access_lines(logged(served))
    assert (line["request_id"], line["route"], line["status"]) == ("cut-1", "/v1/events", 200)


async def test_a_pool_that_cannot_reconnect_while_the_database_does_not_answer_says_so_in_one_line(
    linked_service, database_link
):
    served = await linked_service()
    database_link.hold()
    # The expiry sweep's query goes unanswered; its connection is closed, and
    # the read pool tries to open another, in vain.
    await served.said("Failed to restore the pool connection floor", timeout=30)
    assert await served.stop() == 0, served.log
    retries = [line for line in served.lines if "Failed to restore the pool connection floor" in line]
    assert all(
        line.rstrip().endswith(
            "WARNING asyncpg.pool: Failed to restore the pool connection floor; retrying: no answer in time"
        )
        for line in retries
    ), retries
    assert "Traceback" not in served.log


async def test_text_is_the_default_log_format(service):
    served = await service()
    assert await served.stop() == 0
    assert served.lines
    for line in served.lines:
        with pytest.raises(json.JSONDecodeError):
            json.loads(line)


def test_the_log_format_setting_refuses_anything_but_text_or_json():
    assert Settings.from_env({"LEDGER_LOG_FORMAT": "json"}).log_format == "json"
    with pytest.raises(ConfigError, match="LEDGER_LOG_FORMAT must be text or json"):
        Settings.from_env({"LEDGER_LOG_FORMAT": "xml"})


async def test_every_one_of_many_concurrent_requests_gets_one_access_line(service):
    served = await service(LEDGER_LOG_FORMAT="json")
    async with aiohttp.ClientSession() as session:

        async def live(n: int) -> str:
            async with session.get(f"{served.url}/health/live", headers={"X-Request-ID": f"many-{n}"}) as response:
                await response.read()
                return response.headers["X-Request-ID"]

        sent = await asyncio.gather(*(live(n) for n in range(200)))
    assert await served.stop() == 0, served.log
    lines = logged(served)
    assert sorted(line["request_id"] for line in access_lines(lines)) == sorted(sent)


async def test_lines_held_for_a_pass_of_the_loop_come_out_in_order_and_before_a_warning(capsys):
    logger = logging.getLogger("test.held")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    handler = logs.StderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger.addHandler(handler)
    try:
        handler.bind(asyncio.get_running_loop())
        logger.info("one")
        logger.info("two")
        assert capsys.readouterr().err == ""  # held until this pass of the loop ends
        await asyncio.sleep(0)
        handler.flush()  # written by the handler's thread
        assert capsys.readouterr().err == "INFO one\nINFO two\n"
        logger.info("three")
        logger.warning("four")
        assert capsys.readouterr().err == "INFO three\nWARNING four\n"
        logger.info("five")
        handler.bind(None)
        assert capsys.readouterr().err == "INFO five\n"  # written when unbound
    finally:
        logger.removeHandler(handler)


class Blocking(io.StringIO):
    """A stream whose writes wait until released, as a full pipe does."""

    def __init__(self) -> None:
        super().__init__()
        self.released = threading.Event()

    def write(self, text: str) -> int:
        self.released.wait(10)
        return super().write(text)


async def test_a_write_that_blocks_holds_up_the_handlers_thread_and_not_the_loop():
    stream = Blocking()
    with bound_to(stream) as (handler, logger):
        try:
            logger.info("one")
            await asyncio.sleep(0)  # the pass ends: "one" goes to the writing thread, whose write waits
            logger.info("two")
            await asyncio.sleep(0)  # and the loop goes on meanwhile
            assert stream.getvalue() == ""
            stream.released.set()
            handler.flush()
            assert stream.getvalue() == "one\ntwo\n"
        finally:
            stream.released.set()


async def test_past_the_writes_that_may_wait_the_loop_waits_for_the_writing_thread():
    stream = Blocking()
    with bound_to(stream) as (handler, logger):
        try:
            for n in range(logs.QUEUED_WRITES):  # a write a pass; the first waits in the stream
                logger.info(str(n))
                await asyncio.sleep(0)
            assert stream.getvalue() == ""  # the loop went on meanwhile
            threading.Timer(0.05, stream.released.set).start()
            logger.info("one too many")
            await asyncio.sleep(0)  # hands it on, and waits for the thread to catch up
            assert stream.released.is_set()
        finally:
            stream.released.set()
        handler.flush()
        assert stream.getvalue().splitlines() == [*map(str, range(logs.QUEUED_WRITES)), "one too many"]


async def test_the_writing_thread_outlives_a_write_that_fails_even_with_stderr_closed(monkeypatch):
    class FailingOnce(io.StringIO):
        """A stream whose first write fails."""

        failed = False

        def write(self, text: str) -> int:
            if not self.failed:
                self.failed = True
                raise ValueError("I/O operation on closed file")
            return super().write(text)

    closed = io.StringIO()
    closed.close()
    monkeypatch.setattr(sys, "stderr", closed)  # where the failure would be reported
    stream = FailingOnce()
    with bound_to(stream) as (handler, logger):
        logger.info("lost")
        await asyncio.sleep(0)
        handler.flush()
        logger.info("kept")
        await asyncio.sleep(0)
        handler.flush()  # returns: the thread is still there to write
        assert stream.getvalue() == "kept\n"


@contextlib.contextmanager
def bound_to(stream: io.StringIO) -> Iterator[tuple[logs.StderrHandler, logging.Logger]]:
    """A logger of its own whose lines (the message alone) go to ``stream``
    through a :class:`logs.StderrHandler` bound to the running loop."""
    handler = logs.StderrHandler()
    handler.setStream(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.Logger(f"test.{id(stream)}")
    logger.addHandler(handler)
    handler.bind(asyncio.get_running_loop())
    try:
        yield handler, logger
    finally:
        handler.bind(None)


@pytest.mark.parametrize("log_format", logs.FORMATS)
@pytest.mark.parametrize(
    "remote, route, request_id, path",
    [("127.0.0.1", "/v1/transfers/{id}", "req-1", "/v1/transfers/7"), (None, None, None, '/caf\u00e9 "x"')],
)
def test_an_access_line_written_without_a_record_is_what_its_record_formats_to(
    log_format, remote, route, request_id, path
):
    args = (remote, "GET", path + "?a=1", 1, 1, 404, 12.345)
    fields = {"request_id": request_id, "method": "GET", "route": route, "path": path, "status": 404}
    fields["duration_ms"] = 12.345
    logger = logging.getLogger(logs.ACCESS_LOGGER)
    record = logger.makeRecord(logger.name, logging.INFO, __file__, 0, logs.ACCESS_MESSAGE, args, None, extra=fields)
    formatter = logs.formatter(log_format)
    item = formatter.access_item(record.created, args, lambda: fields)
    assert formatter.format_access_items([item, item]) == (formatter.format(record) + "\n") * 2


def service_access_logger() -> logging.Logger:
    """aiohttp's access logger as the service configures it: the one
    handler, on stderr (as it is when called), in the text format."""
    logger = logging.Logger(logs.ACCESS_LOGGER)
    handler = logs.StderrHandler()
    handler.setFormatter(logs.TextFormatter())
    logger.addHandler(handler)
    return logger


async def get_through(aiohttp_server, logger, path):
    """Serve one route with the service's access log on ``logger``; GET ``path``."""
    app = web.Application()

    async def nothing(request: web.Request) -> web.Response:
        return web.Response(status=204)

    app.router.add_get("/things/{id}", nothing)
    server = await aiohttp_server(app, access_log=logger, access_log_class=AccessLogger)
    async with aiohttp.ClientSession() as session, session.get(server.make_url(path)) as response:
        assert response.status == 204
    await server.close()


async def test_the_access_line_of_a_request_names_what_it_asked_and_got(aiohttp_server, capsys):
    await get_through(aiohttp_server, service_access_logger(), "/things/7?full=1")
    [line] = capsys.readouterr().err.splitlines()
    assert line.endswith(
        ' INFO aiohttp.access: 127.0.0.1 "GET /things/7?full=1 HTTP/1.1" 204 ' + line.split()[-2] + " ms"
    )


async def test_a_filter_on_the_access_logger_sees_every_access_line(aiohttp_server, capsys):
    seen = []
    logger = service_access_logger()
    logger.addFilter(lambda record: seen.append(record.getMessage()) and False)  # drops them
    await get_through(aiohttp_server, logger, "/things/7")
    assert [message.split(" ms")[0].rsplit(" ", 1)[0] for message in seen] == ['127.0.0.1 "GET /things/7 HTTP/1.1" 204']
    assert capsys.readouterr().err == ""


async def test_access_lines_held_beside_other_lines_come_out_in_the_order_logged(capsys):
    handler = logs.StderrHandler()
    handler.setFormatter(logs.TextFormatter())
    logger = logging.Logger("test.order")
    logger.addHandler(handler)
    first, second = ("10.0.0.1", "GET", "/a", 1, 1, 200, 1.0), ("10.0.0.2", "POST", "/b", 1, 1, 201, 2.0)
    handler.bind(asyncio.get_running_loop())
    try:
        handler.handle_access(1e9, first, dict)
        logger.info("between")
        handler.handle_access(1e9, second, dict)
        assert capsys.readouterr().err == ""  # held until this pass of the loop ends
        await asyncio.sleep(0)
        handler.flush()
        lines = capsys.readouterr().err.splitlines()
        assert [line.split(": ", 1)[1] for line in lines] == [
            logs.ACCESS_MESSAGE % first,
            "between",
            logs.ACCESS_MESSAGE % second,
        ]
    finally:
        handler.bind(None)


async def test_access_lines_held_when_the_format_changes_keep_the_format_they_were_logged_in(capsys):
    handler = logs.StderrHandler()
    handler.setFormatter(logs.TextFormatter())
    args = ("10.0.0.1", "GET", "/a", 1, 1, 200, 1.0)
    fields = {"request_id": "r", "method": "GET", "route": None, "path": "/a", "status": 200, "duration_ms": 1.0}
    handler.bind(asyncio.get_running_loop())
    try:
        handler.handle_access(1e9, args, lambda: fields)
        handler.setFormatter(logs.JsonFormatter())
        handler.handle_access(1e9, args, lambda: fields)
        await asyncio.sleep(0)
        handler.flush()
        text, json_line = capsys.readouterr().err.splitlines()
        assert text.endswith(logs.ACCESS_MESSAGE % args)
        assert json.loads(json_line)["message"] == logs.ACCESS_MESSAGE % args
    finally:
        handler.bind(None)
