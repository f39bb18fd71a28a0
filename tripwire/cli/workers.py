"""``tripwire worker start``: run the due flow runs of a work pool in this process until Ctrl-C.

The command starts the same infrastructure as ``tripwire services run`` (Redis — the configured one, the
local default, or the private server of this home —, the bus, the database) plus one ``WorkerService``
(``tripwire/orchestration/worker.py``). SIGINT/SIGTERM stop it gracefully: no new claims, running flows
get a few seconds to finish, the rest are stopped and marked Crashed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Iterator

import typer

from tripwire.cli.client import cli_errors
from tripwire.cli.server import _setup_logging
from tripwire.settings import Settings

__all__ = ["worker_app"]

worker_app = typer.Typer(help="Workers: run the due flow runs of a work pool.", no_args_is_help=True)

logger = logging.getLogger("tripwire.cli")

STOP_GRACE_S = 3.0


@contextlib.contextmanager
def _on_signals(callback: Callable[[], None]) -> Iterator[None]:
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, callback)
            installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


async def run_worker(settings: Settings, pool: str, name: str | None, *, embedded_redis: bool = True) -> None:
    """Run Redis, the bus, the database and one worker of ``pool`` until SIGINT/SIGTERM."""
    from events.emit import EventEmitter
    from tripwire.orchestration.worker import WorkerService
    from tripwire.runner import RunContext, running

    def factory(ctx: RunContext) -> WorkerService:
        return WorkerService(
            ctx.db, EventEmitter(ctx.bus, ctx.settings), ctx.settings,
            pool=pool, name=name, redis_url=ctx.redis_url, stop_grace_s=STOP_GRACE_S,
        )  # fmt: skip

    stop_timeout_s = STOP_GRACE_S + settings.orchestration.cancel_grace_s + 10.0
    stop = asyncio.Event()
    with _on_signals(stop.set):
        async with running(
            settings, services=["worker"], factories={"worker": factory},
            embedded_redis=embedded_redis, stop_timeout_s=stop_timeout_s,
        ) as ctx:  # fmt: skip
            worker = ctx.services[0]
            assert isinstance(worker, WorkerService)
            logger.info("worker %s running flow runs of pool %r; Ctrl-C to stop", worker.worker_name, pool)
            await stop.wait()


@worker_app.command("start")
@cli_errors
def start(
    ctx: typer.Context,
    pool: str | None = typer.Option(
        None, "--pool", help="the work pool to take runs from [default: TRIPWIRE_ORCHESTRATION__WORK_POOL]"
    ),
    name: str | None = typer.Option(None, "--name", help="worker name [default: <hostname>-<pid>]"),
    concurrency: int | None = typer.Option(
        None,
        "--concurrency",
        min=1,
        help="flow runs at once [default: TRIPWIRE_ORCHESTRATION__WORKER_CONCURRENCY]",
    ),
    embedded_redis: bool = typer.Option(
        True, "--embedded-redis/--no-embedded-redis", help="as for `tripwire server start`"
    ),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error"),
) -> None:
    """Claim the due flow runs of a work pool and run each in a subprocess, until Ctrl-C."""
    settings: Settings = ctx.obj
    if concurrency is not None:
        orchestration = settings.orchestration.model_copy(update={"worker_concurrency": concurrency})
        settings = settings.model_copy(update={"orchestration": orchestration})
    _setup_logging(log_level)
    pool = pool or settings.orchestration.work_pool
    try:
        asyncio.run(run_worker(settings, pool, name, embedded_redis=embedded_redis))
    except KeyboardInterrupt:  # before the signal handlers were in place
        raise typer.Exit(130) from None
