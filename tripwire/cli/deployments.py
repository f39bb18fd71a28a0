"""``tripwire deploy``, ``tripwire deployment ...`` (and ``flow-run``, from ``flow_runs``), through the API.

``deploy -f FILE`` checks every deployment of every file locally first (importing each entrypoint to read
its flow's name and parameter schema; ``deployment_files``), then applies them one by one.
``deployment run NAME --param k=v``: the value is JSON when it parses (``3``, ``true``, ``[1, 2]``,
``{"a": 1}``), else a string; and a string wherever the flow declares a string parameter, so
``--param version=1.10`` stays ``"1.10"``. A parameter the flow refuses is named in the error.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tripwire.cli.client import ApiClient, ApiError, cli_errors
from tripwire.cli.flow_runs import FINAL_STATES, flow_run_app, run_line, state_text
from tripwire.errors import ValidationFailed
from tripwire.settings import Settings

__all__ = ["deploy", "deployment_app", "flow_run_app", "parse_params"]

deployment_app = typer.Typer(
    help="Deployments: named flow entrypoints with parameters and schedules.", no_args_is_help=True
)
schedule_app = typer.Typer(help="Pause or resume a deployment's schedules.", no_args_is_help=True)
deployment_app.add_typer(schedule_app, name="schedule")

BASE = "/api/deployments"
_STATUS_STYLE = {"created": "green", "updated": "yellow", "unchanged": "dim"}
_SPEC_FIELDS = (
    "name", "flow_name", "entrypoint", "description", "parameters", "tags", "work_pool", "schedules",
    "paused", "timeout_seconds", "parameter_schema",
)  # fmt: skip


def _client(ctx: typer.Context) -> ApiClient:
    settings: Settings = ctx.obj
    return ApiClient(settings)


def _path(ref: str, suffix: str = "") -> str:
    return f"{BASE}/{quote(ref, safe='')}{suffix}"


def _schedules_text(item: dict[str, Any]) -> str:
    parts = []
    for s in item["schedules"]:
        paused = "" if s["schedule"].get("active", True) else " [yellow](paused)[/]"
        parts.append(f"{s['position']}: {escape(s['summary'])}{paused}")
    return "\n".join(parts) or "[dim]-[/]"


# --- deploy ------------------------------------------------------------------------------------------


@cli_errors
def deploy(
    ctx: typer.Context,
    files: list[Path] = typer.Option(..., "--file", "-f", help="a .yaml/.yml or .json file of deployments"),
) -> None:
    """Create or update deployments by name from files (every one is checked before any is sent)."""
    from tripwire.orchestration.deployment_files import load_deployment_files
    from tripwire.orchestration.deployment_models import apply_document

    specs = load_deployment_files(files)
    console = Console(highlight=False)
    with _client(ctx) as client:
        for spec in specs:
            try:
                answer = client.post(BASE, apply_document(spec))
            except ApiError as exc:
                raise ApiError(
                    f"the API refused deployment {spec.name!r}:", exc.details, exc.status
                ) from None
            status, item = answer["status"], answer["deployment"]
            console.print(
                f"[{_STATUS_STYLE.get(status, 'bold')}]{status:9}[/] {escape(item['name'])} "
                f"[dim](version {item['version']}, {len(item['schedules'])} schedule(s), id {item['id']})[/]"
            )


# --- deployment ls / inspect / delete ---------------------------------------------------------------------


@deployment_app.command("ls")
@cli_errors
def ls(
    ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="print them as a JSON array")
) -> None:
    """List deployments: flow, schedules, state, work pool, tags."""
    with _client(ctx) as client:
        items = client.get(BASE)["deployments"]
    if as_json:
        typer.echo(json.dumps(items, indent=2))
        return
    console = Console(highlight=False)
    if not items:
        console.print("[dim]no deployments; add some with `tripwire deploy -f FILE`[/]")
        return
    table = Table(title=f"{len(items)} deployment{'s' if len(items) != 1 else ''}", title_justify="left")
    for column in ("name", "flow", "schedules", "state", "work pool", "tags"):
        table.add_column(column, overflow="fold")
    for item in items:
        table.add_row(
            escape(item["name"]),
            escape(item["flow_name"]),
            _schedules_text(item),
            "[yellow]paused[/]" if item["paused"] else "[green]active[/]",
            escape(item["work_pool"]),
            escape(", ".join(item["tags"])),
        )
    console.print(table)


@deployment_app.command("inspect")
@cli_errors
def inspect(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="the deployment's name or id"),
    as_json: bool = typer.Option(False, "--json", help="the API's JSON instead of YAML"),
) -> None:
    """Print a deployment as a document you can edit and deploy again (YAML), with its ids in comments."""
    with _client(ctx) as client:
        item = client.get(_path(name))
    if as_json:
        typer.echo(json.dumps(item, indent=2))
        return
    typer.echo(
        f"# {item['name']}: id {item['id']}, version {item['version']}, updated {item['updated']}, "
        f"{'paused' if item['paused'] else 'active'}"
    )
    for s in item["schedules"]:
        typer.echo(f"# schedule {s['position']}: id {s['id']}, {s['summary']}")
    document = {key: item[key] for key in _SPEC_FIELDS if item.get(key) not in (None, {}, [])}
    document["paused"] = item["paused"]
    document["schedules"] = [s["schedule"] for s in item["schedules"]]
    typer.echo(yaml.safe_dump(document, sort_keys=False, allow_unicode=True), nl=False)


@deployment_app.command("delete")
@cli_errors
def delete(ctx: typer.Context, name: str = typer.Argument(..., help="the deployment's name or id")) -> None:
    """Delete a deployment, its schedules and its runs that have not started."""
    with _client(ctx) as client:
        client.request("DELETE", _path(name))
    Console(highlight=False).print(f"[red]deleted[/] {escape(name)}")


# --- pause / resume -----------------------------------------------------------------------------------


def _set_paused(ctx: typer.Context, name: str, action: str) -> None:
    with _client(ctx) as client:
        answer = client.post(_path(name, f"/{action}"), None)
    item = answer["deployment"]
    state = "[yellow]paused[/]" if item["paused"] else "[green]active[/]"
    already = "" if answer["changed"] else " [dim](already)[/]"
    Console(highlight=False).print(
        f"{escape(item['name'])} is {state}{already} [dim](version {item['version']})[/]"
    )


@deployment_app.command("pause")
@cli_errors
def pause(ctx: typer.Context, name: str = typer.Argument(..., help="the deployment's name or id")) -> None:
    """Pause a deployment: its schedules create no runs, and its not-yet-started scheduled runs go."""
    _set_paused(ctx, name, "pause")


@deployment_app.command("resume")
@cli_errors
def resume(ctx: typer.Context, name: str = typer.Argument(..., help="the deployment's name or id")) -> None:
    """Resume a paused deployment."""
    _set_paused(ctx, name, "resume")


def _set_schedules(ctx: typer.Context, name: str, schedule: str | None, action: str) -> None:
    console = Console(highlight=False)
    with _client(ctx) as client:
        refs = (
            [schedule]
            if schedule is not None
            else [str(s["position"]) for s in client.get(_path(name))["schedules"]]
        )
        if not refs:
            console.print(f"[dim]{escape(name)} has no schedules[/]")
            return
        for ref in refs:
            answer = client.post(_path(name, f"/schedules/{quote(ref, safe='')}/{action}"), None)
            item = answer["deployment"]
            stored = next(s for s in item["schedules"] if ref in (s["id"], str(s["position"])))
            state = "[green]active[/]" if stored["schedule"].get("active", True) else "[yellow]paused[/]"
            already = "" if answer["changed"] else " [dim](already)[/]"
            console.print(
                f"{escape(item['name'])} schedule {stored['position']} ({escape(stored['summary'])}) "
                f"is {state}{already}"
            )


@schedule_app.command("pause")
@cli_errors
def pause_schedule(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="the deployment's name or id"),
    schedule: str | None = typer.Argument(None, help="the schedule's index (0 = first) or id; default: all"),
) -> None:
    """Pause a schedule of a deployment (all of them without SCHEDULE)."""
    _set_schedules(ctx, name, schedule, "pause")


@schedule_app.command("resume")
@cli_errors
def resume_schedule(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="the deployment's name or id"),
    schedule: str | None = typer.Argument(None, help="the schedule's index (0 = first) or id; default: all"),
) -> None:
    """Resume a paused schedule of a deployment (all of them without SCHEDULE)."""
    _set_schedules(ctx, name, schedule, "resume")


# --- run ------------------------------------------------------------------------------------------------


def parse_params(pairs: list[str], schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """``k=v`` pairs as parameters: JSON when it parses, else a string; a string for string parameters."""
    properties = (schema or {}).get("properties") or {}
    out: dict[str, Any] = {}
    errors = []
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            errors.append((f"--param {pair}", "give NAME=VALUE, e.g. --param limit=10"))
            continue
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        if not isinstance(value, str) and (properties.get(key) or {}).get("type") == "string":
            value = raw
        out[key] = value
    if errors:
        raise ValidationFailed(errors)
    return out


def _at(text: str) -> str:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not an ISO-8601 time like 2026-11-21T09:00:00+01:00") from None
    return (moment if moment.tzinfo else moment.astimezone()).astimezone(UTC).isoformat()


@deployment_app.command("run")
@cli_errors
def run(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="the deployment's name or id"),
    params: list[str] = typer.Option([], "--param", "-p", help="a parameter NAME=VALUE (repeatable)"),
    tags: list[str] = typer.Option([], "--tag", help="a tag added to the deployment's (repeatable)"),
    at: str | None = typer.Option(None, "--at", help="when it is due, ISO-8601 (default: now; naive: local)"),
    wait: bool = typer.Option(False, "--wait", help="wait until the run ends; exit 1 unless it Completed"),
    timeout_s: float = typer.Option(3600.0, "--timeout", help="with --wait: give up after this many seconds"),
) -> None:
    """Create a run of a deployment now (or --at a time), with parameters on top of its defaults."""
    console = Console(highlight=False)
    with _client(ctx) as client:
        deployment = client.get(_path(name))
        body: dict[str, Any] = {
            "parameters": parse_params(params, deployment.get("parameter_schema")),
            "tags": tags,
        }
        if at is not None:
            body["scheduled_time"] = _at(at)
        try:
            flow_run = client.post(_path(name, "/runs"), body)
        except ApiError as exc:
            if exc.status != 422:
                raise
            raise ApiError(f"deployment {deployment['name']!r} refused the run:", exc.details, 422) from None
        console.print(f"created {run_line(flow_run)}")
        if not wait:
            return
        state = _wait(client, flow_run, timeout_s, console)
    if state != "Completed":
        raise typer.Exit(1)


def _wait(client: ApiClient, flow_run: dict[str, Any], timeout_s: float, console: Console) -> str:
    deadline = time.monotonic() + timeout_s
    seen = flow_run["state"]
    while seen not in FINAL_STATES:
        if time.monotonic() > deadline:
            console.print(f"[yellow]still {escape(seen)} after {timeout_s:g} s; not waiting any longer[/]")
            return seen
        time.sleep(0.5)
        current = client.get(f"/api/flow-runs/{flow_run['id']}")
        if current["state"] != seen:
            seen = current["state"]
            message = f" [dim]({escape(current['state_message'])})[/]" if current.get("state_message") else ""
            console.print(f"{escape(current['name'])}: {state_text(seen)}{message}")
    return seen
