"""``ledger serve``: the processes that serve the port, and how they stop.

The serving process owns what exists once per service: the database it
starts (the embedded server, started and migrated before anything listens)
and the listening sockets, one per worker, bound to the same address with
``SO_REUSEPORT`` so that the kernel spreads connections over the workers.

- One worker (the default): the app runs in this process.
- ``N`` workers: each runs the app in a process of its own (started fresh,
  not forked) on its socket, with its own pools and write queue; the
  database's head row keeps their appends serial and gapless.

The service logs ``listening on http://HOST:PORT`` once every worker
serves. SIGTERM or SIGINT stops it gracefully: every worker stops taking
connections, finishes the requests in flight and runs its cleanup, then the
embedded server stops, and the exit status is 0. A worker that exits on its
own is logged and stops the service with status 1: an orchestrator restarts
the whole service rather than it serving on with fewer workers. A worker
whose parent is gone (killed, so that it could not stop them) stops as if
told to, rather than hold the port against the service started next.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import importlib.metadata
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import NoReturn

from prometheus_client import multiprocess as prometheus_multiprocess

from . import logs, metrics, processes, signing
from .api.access_log import AccessLogger
from .api.app import StartupError
from .config import Settings

log = logging.getLogger("ledger")

#: Exit status of a service that could not start (bad settings, schema behind).
STARTUP_FAILED = 2
#: Exit status of a service stopped by a worker that died.
WORKER_DIED = 1

#: Seconds aiohttp's own wait for the requests in flight at a stop outlasts
#: ``LEDGER_SHUTDOWN_TIMEOUT``, when the service cuts its streams
#: (``OpenStreams.cut_after``): a cut stream has ended before aiohttp stops
#: waiting. (aiohttp 3.14 logs an ``InvalidStateError`` for a handler that
#: ends as its wait expires; and it reads a timeout of 0 as no limit.)
_AIOHTTP_WAITS_LONGER = 1.0


class HeldStop:
    """The stop signal a service gets before it serves. The first is held
    until the start is done, so that nothing the start runs (initdb, pg_ctl,
    a migration) is cut midway, which can leave the data unusable; the
    service then stops instead of serving, stopping what it started. A
    second Ctrl-C interrupts the start at once, for a start that hangs."""

    def __init__(self) -> None:
        #: The name of the signal held, once one came.
        self.signal: str | None = None

    def __call__(self, signum: int, frame: object) -> None:
        if signum == signal.SIGINT and self.signal is not None:
            raise KeyboardInterrupt
        self.signal = self.signal or signal.Signals(signum).name

    def stops(self) -> bool:
        """Whether a signal was held; if so, says that the service stops."""
        if self.signal is not None:
            log.info("stopped by %s before serving", self.signal)
        return self.signal is not None


def _ignore_stop_signals(loop: asyncio.AbstractEventLoop | None = None) -> None:
    """From here on the service is stopping: a stop signal that comes now
    (Ctrl-C reaches the workers and the parent, which passes it on) must not
    cut a stop already under way, the embedded server's included. ``loop``:
    the event loop that handles them, which gives each up first (restoring
    the default disposition, which kills: each is ignored right after)."""
    for signum in processes.STOP_SIGNALS:
        if loop is not None:
            loop.remove_signal_handler(signum)
        signal.signal(signum, signal.SIG_IGN)


def hold_stop_signals() -> HeldStop:
    """From now until the service serves, a stop signal is held (see
    :class:`HeldStop`): called first thing, before anything is started."""
    held = HeldStop()
    for signum in processes.STOP_SIGNALS:
        signal.signal(signum, held)
    return held


def serve(settings: Settings, held: HeldStop) -> int:
    """Run the service until a stop signal, or not at all if ``held`` (see
    :func:`hold_stop_signals`) holds one already; its exit status."""
    try:
        with _database(settings) as dsn:
            try:
                settings = dataclasses.replace(settings, database_url=dsn, signing_key_file=_signing_key_file(settings))
                sockets = bind(settings.host, settings.port, settings.workers)
                if settings.workers == 1:
                    return _run_here(settings, sockets[0], held)
                return _Supervisor(settings, sockets, held).run()
            finally:
                _ignore_stop_signals()
    except StartupError as error:
        log.error("%s", error)
        return STARTUP_FAILED


@contextlib.contextmanager
def _database(settings: Settings) -> Iterator[str]:
    """The primary's DSN for the block: ``LEDGER_DATABASE_URL``, whose schema
    must be at head, or the embedded server, started and migrated."""
    from .store import embedded

    if settings.database_url is None:
        try:
            with embedded.migrated(settings.data_dir) as dsn:
                yield dsn
        except embedded.CannotStart as error:
            raise StartupError(str(error)) from None
        return
    problem = asyncio.run(_schema_problem(settings.database_url))
    if problem is not None:
        raise StartupError(problem)
    yield settings.database_url


def _signing_key_file(settings: Settings) -> Path | None:
    """The key file every worker signs checkpoints with: the one named, which
    must hold a usable key; else, with the embedded server, the one kept in
    its data directory (made on first start); else none."""
    try:
        if settings.signing_key_file is not None:
            signing.load_key(settings.signing_key_file)
            return settings.signing_key_file
        if settings.database_url is None:
            return signing.embedded_key_file(settings.data_dir)
    except signing.KeyFileError as error:
        raise StartupError(str(error)) from None
    log.warning("no LEDGER_SIGNING_KEY_FILE: checkpoints are not signed (`ledger keygen PATH` makes a key)")
    return None


async def _schema_problem(dsn: str) -> str | None:
    from .store import migrations
    from .store.connection import connect
    from .store.retry import CANNOT_OPEN, cannot_open

    try:
        conn = await connect(dsn)
    except CANNOT_OPEN as error:
        return cannot_open(error)
    try:
        return await migrations.schema_problem(conn)
    finally:
        await conn.close()


def bind(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` listening TCP sockets on ``host:port`` (port 0: one the
    kernel picks, the same for all), sharing it through ``SO_REUSEPORT``.

    A port some other process listens on is refused, however many sockets:
    ``SO_REUSEPORT`` would let these join another service's own (its
    workers'), and the kernel would split the clients between the two. (Two
    services that bind the same port at the same moment can both pass.)"""
    sockets: list[socket.socket] = []
    try:
        if count > 1:
            # Alone first: the bind fails if anyone holds the port.
            with _listening_socket(host) as alone:
                alone.bind((host, port))
                port = alone.getsockname()[1]
        for _ in range(count):
            sock = _listening_socket(host)
            sockets.append(sock)
            if count > 1:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            port = sock.getsockname()[1]
            sock.listen(1024)
    except OSError as error:
        for sock in sockets:
            sock.close()
        raise StartupError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    return sockets


def _listening_socket(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _run_here(settings: Settings, sock: socket.socket, held: HeldStop) -> int:
    url = url_of(sock)
    _run_worker(settings, sock, lambda: log.info("listening on %s", url), held=held)
    return 0


def _run_worker(
    settings: Settings,
    sock: socket.socket,
    ready: Callable[[], None],
    parent: Connection | None = None,
    held: HeldStop | None = None,
) -> None:
    """Serve the app on ``sock`` until a stop signal, or until ``parent``
    ends (see :func:`_stop_when_orphaned`); ``ready()`` once it serves. Not
    at all if ``held`` holds a stop signal."""
    tune_garbage_collector()
    with asyncio.Runner(loop_factory=loop_factory(settings)) as runner:
        runner.run(_serve_app(settings, sock, ready, parent, held))


async def _serve_app(
    settings: Settings,
    sock: socket.socket,
    ready: Callable[[], None],
    parent: Connection | None,
    held: HeldStop | None,
) -> None:
    from aiohttp import web

    from .api.app import create_app

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in processes.STOP_SIGNALS:
        loop.add_signal_handler(signum, stop.set)
    if held is not None and held.stops():  # a signal that came before the loop took them over
        _ignore_stop_signals(loop)
        return
    if parent is not None:
        _stop_when_orphaned(loop, parent, stop)
    access_log = logging.getLogger("aiohttp.access") if settings.access_log else None
    runner = web.AppRunner(
        create_app(settings),
        access_log=access_log,
        access_log_class=AccessLogger,
        shutdown_timeout=settings.shutdown_timeout + _AIOHTTP_WAITS_LONGER,
    )
    try:
        await runner.setup()
        await web.SockSite(runner, sock).start()
        ready()
        with logs.batched_on(loop):
            await stop.wait()
    finally:
        # Stops listening, lets the requests in flight finish, then runs the
        # app's cleanup (the write queue drains, pools close).
        await runner.cleanup()
        _ignore_stop_signals(loop)


def _stop_when_orphaned(loop: asyncio.AbstractEventLoop, parent: Connection, stop: asyncio.Event) -> None:
    """Set ``stop`` when ``parent`` ends: the read end of a pipe whose only
    write end the supervisor holds, and which the kernel closes when it
    exits however it exits, a SIGKILL included."""

    def gone() -> None:
        loop.remove_reader(parent.fileno())
        log.error("the service's parent process is gone; this worker stops")
        stop.set()

    loop.add_reader(parent.fileno(), gone)


def _worker_main(settings: Settings, sock: socket.socket, ready: Connection, parent: Connection) -> None:
    """A worker process: serve until told to stop or its parent is gone;
    exit 0, or 2 if the app cannot start."""
    # Started with the stop signals held (the supervisor's spawning_with_stop_signals_held):
    # told to stop before it serves, it has nothing to finish.
    processes.take_stop_signals(_exit_now)
    logs.configure(settings.log_format)
    try:
        _run_worker(settings, sock, lambda: ready.send("ready"), parent)
    except StartupError as error:
        log.error("%s", error)
        sys.exit(STARTUP_FAILED)


def _exit_now(signum: int, frame: object) -> NoReturn:
    """Exit 0 at once, unwinding nothing: a worker told to stop before it
    serves has nothing to finish, and an exception raised wherever the
    signal lands (within the making of its event loop) could leave a
    half-made loop to be reported as an error."""
    os._exit(0)


@dataclasses.dataclass
class _Worker:
    number: int
    process: multiprocessing.process.BaseProcess
    #: Where it says that it serves; ``None`` once it has said so (or died first).
    ready: Connection | None
    serving: bool = False
    #: Its exit has been seen and handled. (Not ``exitcode``: that can be set
    #: before the exit is handled, and a death must never go unhandled.)
    reaped: bool = False

    def describe(self) -> str:
        code = self.process.exitcode
        if code is not None and code < 0:
            how = f"killed by {signal.Signals(-code).name}"
        else:
            how = f"exited with status {code}"
        return f"worker {self.number} (pid {self.process.pid}) {how}"


class _Supervisor:
    """Starts a process per socket and watches them and the stop signals."""

    def __init__(self, settings: Settings, sockets: list[socket.socket], held: HeldStop) -> None:
        self._settings = settings
        self._sockets = sockets
        self._url = url_of(sockets[0])
        self._held_stop = held

    def run(self) -> int:
        wake_read, wake_write = socket.socketpair()
        wake_read.setblocking(False)
        wake_write.setblocking(False)
        old_wakeup = signal.set_wakeup_fd(wake_write.fileno())
        previous = {signum: signal.signal(signum, lambda *_: None) for signum in processes.STOP_SIGNALS}
        # The workers hold the read end, this process alone the write end,
        # which it closes only when every worker has exited (or by dying).
        lifeline, held = multiprocessing.get_context("spawn").Pipe(duplex=False)
        try:
            if self._held_stop.stops():  # a signal that came before this took them over
                return 0
            with _metrics_directory() as directory:
                workers = self._start(lifeline)
                return self._watch(workers, wake_read, directory)
        finally:
            held.close()
            signal.set_wakeup_fd(old_wakeup)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            wake_read.close()
            wake_write.close()

    def _start(self, lifeline: Connection) -> list[_Worker]:
        """A worker per socket, each given ``lifeline`` (whose other end this
        process holds) to tell it that this process is gone."""
        context = multiprocessing.get_context("spawn")
        workers = []
        for number, sock in enumerate(self._sockets, start=1):
            receive, send = context.Pipe(duplex=False)
            process = context.Process(
                target=_worker_main, args=(self._settings, sock, send, lifeline), name=f"ledger-worker-{number}"
            )
            with processes.spawning_with_stop_signals_held():
                process.start()
            send.close()
            # The worker has its own copy: only it accepts on this socket.
            sock.close()
            workers.append(_Worker(number, process, receive))
        lifeline.close()
        return workers

    def _watch(self, workers: list[_Worker], wake: socket.socket, metrics_directory: str) -> int:
        """Until every worker has exited: log when all serve, forward a stop
        signal to all, and stop all when one exits on its own."""
        stopping = False
        died: _Worker | None = None
        while alive := [w for w in workers if not w.reaped]:
            waiting: list[Connection | socket.socket | int] = [wake, *(w.process.sentinel for w in alive)]
            waiting += [w.ready for w in workers if w.ready is not None]
            for source in multiprocessing.connection.wait(waiting):
                if source is wake:
                    with contextlib.suppress(BlockingIOError):
                        wake.recv(64)
                    if not stopping:
                        log.info("stopping %d workers", len(alive))
                        stopping = True
                        self._signal(alive, signal.SIGTERM)
                    continue
                for worker in workers:
                    if source is worker.ready:
                        self._ready(worker, workers)
                    elif source == worker.process.sentinel and not worker.reaped:
                        # Ready once the process is exiting: join waits for its status.
                        worker.process.join()
                        worker.reaped = True
                        prometheus_multiprocess.mark_process_dead(  # type: ignore[no-untyped-call]  # unannotated upstream
                            worker.process.pid, metrics_directory
                        )
                        if not stopping:
                            log.error("%s; stopping the service", worker.describe())
                            died, stopping = worker, True
                            self._signal([w for w in alive if w is not worker], signal.SIGTERM)
        failed = [w for w in workers if w.process.exitcode != 0 and w is not died]
        for worker in failed:
            log.error("%s", worker.describe())
        if died is not None:
            return STARTUP_FAILED if died.process.exitcode == STARTUP_FAILED else WORKER_DIED
        return WORKER_DIED if failed else 0

    def _ready(self, worker: _Worker, workers: list[_Worker]) -> None:
        assert worker.ready is not None
        with contextlib.suppress(EOFError):
            worker.serving = worker.ready.recv() == "ready"
        worker.ready.close()
        worker.ready = None
        if all(w.serving for w in workers):
            log.info("%d workers serve", len(workers))
            log.info("listening on %s", self._url)  # API.md's words, as with one worker

    @staticmethod
    def _signal(workers: list[_Worker], signum: signal.Signals) -> None:
        for worker in workers:
            if worker.process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.process.pid, signum)


#: The name of a metrics directory begins so, then the supervisor's pid and a dash.
_METRICS_PREFIX = "ledger-metrics-"


@contextlib.contextmanager
def _metrics_directory() -> Iterator[str]:
    """A private directory for the workers' metrics, named to the workers
    (which inherit the environment) for the block, removed after it; and
    first, the directories left by supervisors that are gone (killed, they
    could not remove their own)."""
    for stale in Path(tempfile.gettempdir()).glob(f"{_METRICS_PREFIX}*-*"):
        pid = stale.name.removeprefix(_METRICS_PREFIX).partition("-")[0]
        if pid.isdigit() and not processes.alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    directory = tempfile.mkdtemp(prefix=f"{_METRICS_PREFIX}{os.getpid()}-")
    previous = os.environ.get(metrics.MULTIPROCESS_DIR)
    os.environ[metrics.MULTIPROCESS_DIR] = directory
    try:
        yield directory
    finally:
        if previous is None:
            del os.environ[metrics.MULTIPROCESS_DIR]
        else:
            os.environ[metrics.MULTIPROCESS_DIR] = previous
        shutil.rmtree(directory, ignore_errors=True)


def loop_factory(settings: Settings) -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's event loop, unless it is switched off or not installed."""
    if settings.uvloop:
        try:
            import uvloop
        except ImportError:
            log.info("event loop: asyncio (uvloop is not installed)")
        else:
            log.info("event loop: uvloop %s", importlib.metadata.version("uvloop"))
            return uvloop.new_event_loop
    else:
        log.info("event loop: asyncio (LEDGER_UVLOOP=off)")
    return asyncio.new_event_loop


def tune_garbage_collector() -> None:
    """Collect cycles after 200,000 allocations rather than CPython's 700.

    An append of a few thousand transfers keeps a few hundred thousand
    objects alive until it ends, which the default thresholds would trace
    again and again; the structs that carry them are not tracked at all
    (``gc=False``). What is loaded at start is frozen out of collection.
    Measured in docs/performance.md.
    """
    gc.freeze()
    gc.set_threshold(200_000, 20, 20)
