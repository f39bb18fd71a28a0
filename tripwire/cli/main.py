"""The ``tripwire`` command: settings are built once here and handed to every sub-command."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import typer
from pydantic import ValidationError

from tripwire.cli.automations import automation_app
from tripwire.cli.blocks import block_app
from tripwire.cli.client import fail
from tripwire.cli.deployments import deploy, deployment_app, flow_run_app
from tripwire.cli.events import events_app
from tripwire.cli.server import server_app, services_app
from tripwire.cli.webhooks import webhook_app
from tripwire.cli.workers import worker_app
from tripwire.settings import Settings

__all__ = ["app"]

app = typer.Typer(
    name="tripwire",
    help="Tripwire: an event-driven automation engine. Start with `tripwire server start --with-example`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(server_app, name="server")
app.add_typer(services_app, name="services")
app.add_typer(events_app, name="events")
app.add_typer(automation_app, name="automation")
app.add_typer(block_app, name="block")
app.add_typer(webhook_app, name="webhook")
app.add_typer(deployment_app, name="deployment")
app.add_typer(flow_run_app, name="flow-run")
app.add_typer(worker_app, name="worker")
app.command("deploy")(deploy)


@app.callback()
def main(ctx: typer.Context) -> None:
    """Read the TRIPWIRE_* settings once; every command gets them as ``ctx.obj``."""
    try:
        ctx.obj = Settings()
    except ValidationError as exc:
        details = [
            f"TRIPWIRE_{'__'.join(map(str, e['loc'])).upper()}: {e['msg']}"
            for e in exc.errors(include_url=False)
        ]
        raise fail("invalid settings:", details) from None


@app.command("version")
def show_version() -> None:
    """Print Tripwire's version."""
    try:
        typer.echo(f"tripwire {version('tripwire')}")
    except PackageNotFoundError:
        typer.echo("tripwire (not installed as a package)")
