"""A small HTTP/1.1 load generator: worker processes, keep-alive connections,
one request in flight per connection, latency of every request.

Request bodies come from a factory made before the clock starts (it may build
them all ahead), each connection is a protocol that sends the next request
from the callback that completes a response, and responses are parsed only
as far as the status line and ``Content-Length``, so that the generator
spends as little CPU as it can; the CPU it did spend is reported with its
figures. The wall time reported is the measured window alone: from the first
worker's start of load to the last one's end, not the workers' start-up.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

#: Builds the body of the n-th request of a connection (JSON bytes).
BodyFactory = Callable[[int], bytes]


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    cpu_seconds: float = 0.0
    items: int = 0
    #: The measured window (``time.monotonic``, the same clock in every worker).
    started: float = float("inf")
    ended: float = 0.0

    def merge(self, other: Result) -> None:
        self.latencies += other.latencies
        for status, count in other.statuses.items():
            self.statuses[status] = self.statuses.get(status, 0) + count
        self.cpu_seconds += other.cpu_seconds
        self.items += other.items
        self.started = min(self.started, other.started)
        self.ended = max(self.ended, other.ended)


class _Connection(asyncio.Protocol):
    """A keep-alive connection with one request in flight, the next sent from
    :meth:`data_received` once the response before it is whole: no coroutine
    step per request, since the generator's CPU is taken from the machine
    it measures. ``done`` is set when the connection ends, which it does at
    ``until``."""

    def __init__(self, host: str, path: str, body: BodyFactory | None, items: int, until: float, out: Result) -> None:
        self._get = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
        self._post = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: "
        self._body = body
        self._items = items
        self._until = until
        self._out = out
        self._buffer = bytearray()
        self._sent = 0
        self._started = 0.0
        self._transport: asyncio.Transport | None = None
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._send()

    def _send(self) -> None:
        assert self._transport is not None
        if time.monotonic() >= self._until:
            self._transport.close()
            return
        if self._body is None:
            request = self._get
        else:
            payload = self._body(self._sent)
            request = f"{self._post}{len(payload)}\r\n\r\n".encode() + payload
        self._sent += 1
        self._started = time.perf_counter()
        self._transport.write(request)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(buffer[:end]).lower()
        at = head.find(b"\r\ncontent-length:")
        length = int(head[at + 17 :].split(b"\r\n", 1)[0]) if at >= 0 else 0
        if len(buffer) < end + 4 + length:
            return
        del buffer[: end + 4 + length]
        out = self._out
        out.latencies.append(time.perf_counter() - self._started)
        status = int(head[9:12])  # b"http/1.1 201"
        out.statuses[status] = out.statuses.get(status, 0) + 1
        if status < 300:
            out.items += self._items
        self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def _connection(
    host: str, port: int, path: str, body: BodyFactory | None, items: int, until: float, out: Result
) -> None:
    _, connection = await asyncio.get_running_loop().create_connection(
        lambda: _Connection(host, path, body, items, until, out), host, port
    )
    await connection.done


def _worker(args: tuple) -> Result:
    host, port, path, make_body, items, connections, seconds, seed = args
    try:
        import uvloop

        new_loop = uvloop.new_event_loop
    except ImportError:
        new_loop = asyncio.new_event_loop
    out = Result()
    body = None if make_body is None else make_body(seed)
    before = resource.getrusage(resource.RUSAGE_SELF)

    async def all_connections() -> None:
        out.started = time.monotonic()
        until = out.started + seconds
        await asyncio.gather(*(_connection(host, port, path, body, items, until, out) for _ in range(connections)))
        out.ended = time.monotonic()

    loop = new_loop()
    loop.run_until_complete(all_connections())
    loop.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out.cpu_seconds = usage.ru_utime + usage.ru_stime - before.ru_utime - before.ru_stime
    return out


def run(
    url: str,
    path: str,
    make_body: Callable[[int], BodyFactory] | None,
    *,
    connections: int,
    seconds: float,
    processes: int = 2,
    items: int = 1,
) -> tuple[Result, float]:
    """``connections`` keep-alive connections spread over ``processes``
    workers, POSTing ``make_body(seed)(n)`` (or GETting ``path``, when
    ``make_body`` is ``None``) for ``seconds``. Returns the merged
    result and the wall time of the measured window. ``items`` is what one 2xx
    response counts for (transfers per batch)."""
    host, port = url.removeprefix("http://").split(":")
    shares = [connections // processes + (i < connections % processes) for i in range(processes)]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        parts = pool.map(
            _worker, [(host, int(port), path, make_body, items, share, seconds, i) for i, share in enumerate(shares)]
        )
    total = Result()
    for part in parts:
        total.merge(part)
    return total, total.ended - total.started


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0
