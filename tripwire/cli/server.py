"""``tripwire server start`` and ``tripwire services run``: the commands that run Tripwire in this process."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.logging import RichHandler

from tripwire.cli.client import cli_errors
from tripwire.settings import Settings

if TYPE_CHECKING:
    from tripwire.runner import RunContext

__all__ = ["example_script", "server_app", "services_app"]

server_app = typer.Typer(
    help="Run the Tripwire engine (API and every service) in this process.", no_args_is_help=True
)
services_app = typer.Typer(help="Run single services without the API (scale out with several processes).")

logger = logging.getLogger("tripwire.cli")

_OUR_LOGGERS = ("tripwire", "events", "triggers", "actions", "blocks")
_EXAMPLE = "emit_events.py"


def _setup_logging(level: str) -> None:
    numeric = logging.getLevelNamesMapping().get(level.upper())
    if numeric is None:
        raise typer.BadParameter(f"unknown log level {level!r}: use debug, info, warning or error")
    handler = RichHandler(console=Console(stderr=True), show_path=False, markup=False, rich_tracebacks=False)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", datefmt="[%X]", handlers=[handler])
    for name in _OUR_LOGGERS:
        logging.getLogger(name).setLevel(numeric)


def example_script() -> Path | None:
    """``examples/emit_events.py`` of the source checkout this package runs from, if there is one."""
    script = Path(__file__).resolve().parents[2] / "examples" / _EXAMPLE
    return script if script.is_file() else None


async def _run_example(ctx: RunContext, url: str) -> None:
    """Once the API answers, emit the example events through it (the program a user would run)."""
    script = example_script()
    if script is None:
        logger.warning(
            "--with-example: examples/%s is not installed with the package; see the README", _EXAMPLE
        )
        return
    proc = await asyncio.create_subprocess_exec(sys.executable, str(script), "--api-url", url)
    try:
        code = await proc.wait()
    except asyncio.CancelledError:
        proc.terminate()
        await proc.wait()
        raise
    if code:
        logger.error("the example (%s) failed with exit code %s", script, code)
    else:
        logger.info("example events sent: try `tripwire events ls` in another terminal")


@server_app.command("start")
@cli_errors
def start(
    ctx: typer.Context,
    host: str | None = typer.Option(
        None, "--host", help="bind address [default: TRIPWIRE_HOST or 127.0.0.1]"
    ),
    port: int | None = typer.Option(None, "--port", help="port [default: TRIPWIRE_PORT or 4242]"),
    with_example: bool = typer.Option(
        False,
        "--with-example",
        help="once the API answers, emit the example events (examples/emit_events.py)",
    ),
    embedded_redis: bool = typer.Option(
        True,
        "--embedded-redis/--no-embedded-redis",
        help="start a private redis-server when TRIPWIRE_REDIS_URL is unset and none answers at the default",
    ),
    services: list[str] = typer.Option(
        [],
        "--service",
        help="run only this service beside the API (repeatable, e.g. to leave the worker out) [default: all]",
    ),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error"),
    loop: str = typer.Option(
        "auto", "--loop", help="event loop: auto (uvloop when installed), asyncio or uvloop"
    ),
    evaluator_processes: int | None = typer.Option(
        None,
        "--evaluator-processes",
        min=1,
        max=64,
        help="run the evaluator in N processes: this one and N-1 children it supervises "
        "[default: TRIPWIRE_EVALUATOR_PROCESSES or 1]",
    ),
) -> None:
    """Start the API and every service (the embedded one-machine mode); Ctrl-C stops it gracefully."""
    from tripwire.runner import event_loop_factory, serve

    settings: Settings = ctx.obj
    if evaluator_processes is not None:
        settings = settings.model_copy(update={"evaluator_processes": evaluator_processes})
    _setup_logging(log_level)
    hook = _run_example if with_example else None
    try:
        with asyncio.Runner(loop_factory=event_loop_factory(loop)) as runner:
            runner.run(
                serve(
                    settings, host, port, services=services or None, embedded_redis=embedded_redis,
                    on_ready=hook,
                )
            )  # fmt: skip
    except KeyboardInterrupt:  # before the signal handlers were in place
        raise typer.Exit(130) from None


@services_app.command("run")
@cli_errors
def run(
    ctx: typer.Context,
    names: list[str] = typer.Argument(..., help="service names, e.g. recorder"),
    embedded_redis: bool = typer.Option(
        True, "--embedded-redis/--no-embedded-redis", help="as for `tripwire server start`"
    ),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error"),
    parent_pid: int | None = typer.Option(
        None, "--parent-pid", hidden=True, help="die with this process (the server that started this one)"
    ),
) -> None:
    """Run one or more services (e.g. `recorder`) without the API until Ctrl-C."""
    from tripwire.runner import run_services

    settings: Settings = ctx.obj
    _setup_logging(log_level)
    if parent_pid is not None:
        from tripwire.lifeline import die_with_parent

        die_with_parent(parent_pid, parent="the server")
    try:
        asyncio.run(run_services(settings, names, embedded_redis=embedded_redis))
    except KeyboardInterrupt:  # before the signal handlers were in place
        raise typer.Exit(130) from None
