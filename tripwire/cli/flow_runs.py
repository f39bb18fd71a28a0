"""``tripwire flow-run ls | inspect | cancel``, through the HTTP API."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from urllib.parse import quote

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tripwire.cli.client import ApiClient, cli_errors
from tripwire.settings import Settings

__all__ = ["FINAL_STATES", "flow_run_app", "run_line", "state_text", "time_text"]

flow_run_app = typer.Typer(help="Flow runs: list, inspect, cancel.", no_args_is_help=True)

BASE = "/api/flow-runs"
FINAL_STATES = ("Completed", "Failed", "Crashed", "Cancelled")
_STATE_STYLE = {
    "Scheduled": "cyan",
    "Late": "yellow",
    "Pending": "blue",
    "Running": "bold blue",
    "Completed": "green",
    "Failed": "red",
    "Crashed": "bold red",
    "Cancelling": "magenta",
    "Cancelled": "dim",
    "Paused": "yellow",
}


def _client(ctx: typer.Context) -> ApiClient:
    settings: Settings = ctx.obj
    return ApiClient(settings)


def state_text(state: str) -> str:
    """The state in its colour (rich markup)."""
    return f"[{_STATE_STYLE.get(state, 'bold')}]{escape(state)}[/]"


def time_text(value: str | None) -> str:
    """An ISO time from the API in local time, to the second ('' for none)."""
    if not value:
        return ""
    try:
        return datetime.fromisoformat(value).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return value


def run_line(run: dict[str, Any]) -> str:
    """``brisk-otter-3f2a (<id>) is Scheduled for 2026-11-21 09:00:00``, with markup."""
    when = f" for {time_text(run['scheduled_time'])}" if run["state"] in ("Scheduled", "Late") else ""
    message = f" [dim]({escape(run['state_message'])})[/]" if run.get("state_message") else ""
    return (
        f"flow run {escape(run['name'])} [dim]({run['id']})[/] is {state_text(run['state'])}{when}{message}"
    )


@flow_run_app.command("ls")
@cli_errors
def ls(
    ctx: typer.Context,
    deployment: str | None = typer.Option(None, "--deployment", "-d", help="only runs of this deployment"),
    state: list[str] | None = typer.Option(None, "--state", "-s", help="only runs in this state (repeat)"),
    work_pool: str | None = typer.Option(None, "--pool", help="only runs of this work pool"),
    limit: int = typer.Option(20, "--limit", min=1, max=1000, help="how many (newest scheduled first)"),
    as_json: bool = typer.Option(False, "--json", help="print the runs as a JSON array"),
) -> None:
    """List flow runs: newest scheduled time first."""
    params: dict[str, Any] = {"deployment": deployment, "work_pool": work_pool, "limit": limit}
    if state:
        params["state"] = state
    with _client(ctx) as client:
        runs = client.get(BASE, **params)["flow_runs"]
    if as_json:
        typer.echo(json.dumps(runs, indent=2))
        return
    console = Console(highlight=False)
    if not runs:
        console.print("[dim]no flow runs[/]")
        return
    table = Table(title=f"{len(runs)} flow run{'s' if len(runs) != 1 else ''}", title_justify="left")
    for column in ("name", "id", "deployment", "state", "scheduled", "started", "ended", "worker"):
        table.add_column(column, overflow="fold")
    for run in runs:
        table.add_row(
            escape(run["name"]),
            run["id"],
            escape(run.get("deployment_name") or "-"),
            state_text(run["state"]),
            time_text(run["scheduled_time"]),
            time_text(run.get("start_time")),
            time_text(run.get("end_time")),
            escape(run.get("worker") or ""),
        )
    console.print(table)


@flow_run_app.command("inspect")
@cli_errors
def inspect(
    ctx: typer.Context,
    run_id: str = typer.Argument(..., help="the flow run's id"),
    as_json: bool = typer.Option(False, "--json", help="JSON instead of YAML"),
) -> None:
    """Print a flow run: state, parameters, times, worker."""
    with _client(ctx) as client:
        run = client.get(f"{BASE}/{quote(run_id, safe='')}")
    if as_json:
        typer.echo(json.dumps(run, indent=2))
        return
    typer.echo(yaml.safe_dump(run, sort_keys=False, allow_unicode=True), nl=False)


@flow_run_app.command("cancel")
@cli_errors
def cancel(ctx: typer.Context, run_id: str = typer.Argument(..., help="the flow run's id")) -> None:
    """Cancel a flow run: at once when it has not started, else its worker stops it (Cancelling)."""
    with _client(ctx) as client:
        run = client.post(f"{BASE}/{quote(run_id, safe='')}/cancel", None)
    tail = " [dim]its worker stops it[/]" if run["state"] == "Cancelling" else ""
    Console(highlight=False).print(run_line(run) + tail)
