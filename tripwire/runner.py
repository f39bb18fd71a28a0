"""Start everything in order, stop it in reverse: ``async with running(settings) as ctx`` and ``serve()``.

Order (STYLE 7): Redis (configured, local default, or a private server) -> client -> bus -> database ->
services in the order asked. Shutdown runs the same list backwards; each service gets ``stop_timeout_s``
to stop reading and drain before the next one is stopped. Signal handling lives in the entrypoints
(``serve``, ``run_services``) only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import TYPE_CHECKING

import redis.asyncio as aioredis
import uvicorn
from fastapi import FastAPI

from events.bus import RedisBus, connect_redis
from tripwire.db import Database
from tripwire.errors import ConfigurationError
from tripwire.gc_tuning import settled_heap
from tripwire.redis_embedded import resolve_redis
from tripwire.services import Service
from tripwire.settings import DEFAULT_REDIS_URL, Settings

if TYPE_CHECKING:
    from tripwire.service_processes import ServiceProcesses

__all__ = [
    "LOOPS",
    "SERVICES",
    "ApiServer",
    "RunContext",
    "ServiceFactory",
    "build_server",
    "event_loop_factory",
    "run_services",
    "running",
    "serve",
]

logger = logging.getLogger(__name__)

LOOPS = ("auto", "asyncio", "uvloop")


@dataclass
class RunContext:
    """What ``running()`` built: shared by the API and every service of this process."""

    settings: Settings
    redis_url: str
    redis: aioredis.Redis
    bus: RedisBus
    db: Database
    services: list[Service] = field(default_factory=list)

    @property
    def consumer_name(self) -> str:
        """This process's consumer name in every group: unique per host and process."""
        return f"{socket.gethostname()}-{os.getpid()}"


ServiceFactory = Callable[[RunContext], Service]


def _recorder(ctx: RunContext) -> Service:
    from events.recorder import RecorderService

    return RecorderService(ctx.bus, ctx.db, ctx.settings, consumer=ctx.consumer_name)


def _evaluator(ctx: RunContext) -> Service:
    from triggers.service import EvaluatorService
    from triggers.store import AutomationStore

    automations = AutomationStore(ctx.db, ctx.redis, ctx.settings.streams)
    return EvaluatorService(
        bus=ctx.bus,
        redis=ctx.redis,
        settings=ctx.settings,
        automations=automations,
        consumer=ctx.consumer_name,
    )


def _firings(ctx: RunContext) -> Service:
    from triggers.firings import FiringStore
    from triggers.outbox import OutboxService

    sink = FiringStore(ctx.db)
    return OutboxService(bus=ctx.bus, settings=ctx.settings, sink=sink, consumer=ctx.consumer_name)


def _actions(ctx: RunContext) -> Service:
    from actions.runner import ActionRunnerService

    return ActionRunnerService(
        bus=ctx.bus, redis=ctx.redis, db=ctx.db, settings=ctx.settings, consumer=ctx.consumer_name
    )


def _scheduler(ctx: RunContext) -> Service:
    from events.emit import EventEmitter
    from tripwire.orchestration.reaper import reap_dead_workers
    from tripwire.orchestration.runs import FlowRunStore
    from tripwire.orchestration.scheduler import SchedulerService

    emitter = EventEmitter(ctx.bus, ctx.settings)
    runs = FlowRunStore(ctx.db, emitter)
    dead_after_s = ctx.settings.orchestration.worker_dead_after_s

    async def reap(now: datetime) -> object:  # a worker silent too long: its runs become Crashed
        return await reap_dead_workers(ctx.db, runs, now=now, dead_after_s=dead_after_s)

    return SchedulerService(ctx.db, emitter, ctx.settings, per_tick_jobs=[reap])


def _worker(ctx: RunContext) -> Service:
    from tripwire.orchestration.worker import worker_factory

    return worker_factory(ctx)


# name -> factory; registering a new service is one line here. The order is the start order.
SERVICES: Mapping[str, ServiceFactory] = MappingProxyType(
    {
        "recorder": _recorder,
        "evaluator": _evaluator,
        "firings": _firings,
        "actions": _actions,
        "scheduler": _scheduler,
        "worker": _worker,
    }
)


async def _stop(service: Service, timeout_s: float) -> None:
    try:
        await asyncio.wait_for(service.stop(), timeout_s)
    except TimeoutError:
        logger.error("service %s did not stop within %ss; abandoned", service.name, timeout_s)
    except Exception:
        logger.exception("service %s failed while stopping", service.name)
    else:
        logger.info("stopped %s", service.name)


@asynccontextmanager
async def running(
    settings: Settings,
    *,
    services: Sequence[str] | None = None,
    embedded_redis: bool = True,
    factories: Mapping[str, ServiceFactory] = SERVICES,
    default_redis_url: str = DEFAULT_REDIS_URL,
    stop_timeout_s: float = 10.0,
    evaluator_processes: int = 1,
) -> AsyncIterator[RunContext]:
    """Start Redis, the bus, the database and ``services`` (default: all), yield them, stop in reverse.

    With ``evaluator_processes`` N > 1 and the evaluator among ``services``, N-1 more evaluators run in
    child processes beside this one's (``tripwire.service_processes``), stopped first.
    """
    names = list(factories) if services is None else list(services)
    unknown = [n for n in names if n not in factories]
    if unknown:
        raise ConfigurationError(
            f"unknown service {', '.join(map(repr, unknown))}: choose from {', '.join(factories)}"
        )
    async with AsyncExitStack() as stack:
        url = await stack.enter_async_context(
            resolve_redis(settings, embedded=embedded_redis, default_url=default_redis_url)
        )
        client = await connect_redis(url)
        stack.push_async_callback(client.aclose)
        bus = RedisBus(client, settings.streams)
        stack.push_async_callback(bus.close)
        if settings.database_url is None:
            settings.home.mkdir(parents=True, exist_ok=True)
        db = Database(settings.effective_database_url)
        await db.start()
        stack.push_async_callback(db.stop)
        ctx = RunContext(settings=settings, redis_url=url, redis=client, bus=bus, db=db)
        for name in names:
            service = factories[name](ctx)
            await service.start()
            stack.push_async_callback(_stop, service, stop_timeout_s)
            ctx.services.append(service)
            logger.info("started %s", name)
        if evaluator_processes > 1 and "evaluator" in names:
            children = _evaluator_children(ctx, evaluator_processes - 1)
            await children.start()
            stack.push_async_callback(_stop, children, children.grace_s + stop_timeout_s)
            ctx.services.append(children)
            logger.info("started %s more evaluator process(es)", evaluator_processes - 1)
        # Everything built so far lives as long as the process: frozen out of the collector's reach, and
        # fewer young-generation collections (tripwire.gc_tuning has the measurements).
        stack.enter_context(settled_heap())
        yield ctx


def _evaluator_children(ctx: RunContext, count: int) -> ServiceProcesses:
    """``count`` child processes running the evaluator with this process's settings and Redis."""
    from tripwire.orchestration.processes import child_environment
    from tripwire.service_processes import ServiceProcesses

    env = child_environment(ctx.settings, ctx.redis_url)
    env["TRIPWIRE_EVALUATOR_PROCESSES"] = "1"  # each child is one evaluator; only the server starts more
    return ServiceProcesses("evaluator", count, env)


def event_loop_factory(loop: str = "auto") -> Callable[[], asyncio.AbstractEventLoop] | None:
    """For ``asyncio.Runner(loop_factory=...)``: uvloop's loop for ``"uvloop"``, and for ``"auto"`` when
    uvloop is installed (a dependency on Linux: about 15 % less CPU per webhook request than asyncio's
    loop, bench/webhooks.py); None (asyncio's own loop) for ``"asyncio"`` or when uvloop is missing."""
    if loop not in LOOPS:
        raise ConfigurationError(f"unknown event loop {loop!r}: choose from {', '.join(LOOPS)}")
    if loop == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if loop == "uvloop":
            raise ConfigurationError(
                "the uvloop event loop needs the uvloop package: pip install uvloop"
            ) from None
        return None
    return uvloop.new_event_loop


@contextlib.contextmanager
def _on_signals(callback: Callable[[], None]) -> Iterator[None]:
    """Call ``callback`` on SIGINT/SIGTERM while inside (main thread of a Unix event loop only)."""
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, callback)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or Windows
            pass
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


class ApiServer(uvicorn.Server):
    """uvicorn serving the API, without its own signal capture: the entrypoint owns signals and shutdown."""

    def __init__(self, app: FastAPI, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.app = app

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def request_stop(self) -> None:
        """Begin a graceful stop: end live tails (uvicorn waits for open responses), stop accepting."""
        from tripwire.api.app import close_live_streams

        if self.should_exit:  # asked twice (a second Ctrl-C): stop waiting for open connections
            self.force_exit = True
        close_live_streams(self.app)
        self.should_exit = True


def build_server(
    ctx: RunContext, host: str, port: int, *, log_level: str = "info", http: str = "auto"
) -> ApiServer:
    """A uvicorn server for the API over ``ctx`` (it neither starts nor stops ``ctx``'s parts).

    ``http="auto"`` parses HTTP with httptools (a dependency: about 120 µs less CPU per webhook request
    than h11, a third of it, bench/webhooks.py) and falls back to the pure-Python h11 when httptools
    cannot be imported.
    """
    from tripwire.api.app import create_app

    app = create_app(ctx.settings, bus=ctx.bus, db=ctx.db, redis=ctx.redis, services=ctx.services)
    config = uvicorn.Config(
        app, host=host, port=port, log_level=log_level, lifespan="on", access_log=False,
        timeout_graceful_shutdown=10, http=http,
    )  # fmt: skip
    return ApiServer(app, config)


async def serve(
    settings: Settings,
    host: str | None = None,
    port: int | None = None,
    *,
    services: Sequence[str] | None = None,
    embedded_redis: bool = True,
    on_ready: Callable[[RunContext, str], Awaitable[None]] | None = None,
) -> None:
    """Run the API and the services in this process until SIGINT/SIGTERM, then stop gracefully."""
    host = host or settings.host
    port = settings.port if port is None else port
    stop = asyncio.Event()
    server: ApiServer | None = None

    def on_signal() -> None:
        if stop.is_set() and server is not None:
            server.request_stop()  # a second Ctrl-C: stop waiting for open connections
        stop.set()

    # Signals are caught from the very start: a Ctrl-C during start-up still stops everything in order.
    with _on_signals(on_signal):
        async with running(
            settings, services=services, embedded_redis=embedded_redis,
            evaluator_processes=settings.evaluator_processes,
        ) as ctx:  # fmt: skip
            if stop.is_set():
                return
            server = build_server(ctx, host, port)
            url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
            tasks = [asyncio.create_task(_stop_on(stop, server))]
            if on_ready is not None:
                tasks.append(asyncio.create_task(_after_start(server, ctx, url, on_ready)))
            try:
                await server.serve()
            except SystemExit:  # uvicorn exits when it cannot bind
                raise ConfigurationError(
                    f"the API could not listen on {host}:{port} (see the log above)"
                ) from None
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)


async def _stop_on(stop: asyncio.Event, server: ApiServer) -> None:
    await stop.wait()
    server.request_stop()


async def _after_start(
    server: uvicorn.Server, ctx: RunContext, url: str, on_ready: Callable[[RunContext, str], Awaitable[None]]
) -> None:
    while not server.started:  # noqa: ASYNC110 - uvicorn offers no "started" event to wait on
        await asyncio.sleep(0.05)
    try:
        await on_ready(ctx, url)
    except Exception:
        logger.exception("the start-up hook failed; the server keeps running")


async def run_services(settings: Settings, names: Sequence[str], *, embedded_redis: bool = True) -> None:
    """Run some services without the API until SIGINT/SIGTERM (``tripwire services run``)."""
    stop = asyncio.Event()
    with _on_signals(stop.set):
        async with running(settings, services=names, embedded_redis=embedded_redis):
            logger.info("running %s; press Ctrl-C to stop", ", ".join(names))
            await stop.wait()
