"""``tripwire events emit | ls | tail``: events through the HTTP API."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tripwire.cli.client import ApiClient, ApiError, cli_errors
from tripwire.settings import Settings

__all__ = ["events_app", "parse_pairs", "parse_since"]

events_app = typer.Typer(help="Emit, list and follow events.", no_args_is_help=True)

RESOURCE_ID = "tripwire.resource.id"
RESOURCE_ROLE = "tripwire.resource.role"
PAGE_MAX = 1000
_RELATIVE = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\Z")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_pairs(values: list[str], option: str) -> list[tuple[str, str]]:
    """``key=value`` strings as pairs; ApiError naming the option for one without ``=``."""
    pairs = []
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key or not val:
            raise ApiError(f"{option} {value!r} must look like key=value (e.g. {option} deployment=etl)")
        pairs.append((key, val))
    return pairs


def parse_since(value: str, now: datetime) -> datetime:
    """``10m``/``2h``/``1d``/``1w`` ago, or an ISO 8601 time (UTC when it has no offset)."""
    match = _RELATIVE.match(value.strip())
    if match:
        return now - timedelta(seconds=float(match.group(1)) * _UNIT_S[match.group(2)])
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ApiError(
            f"--since {value!r} is neither a duration (30s, 10m, 2h, 1d) nor an ISO time (2026-01-31T12:00)"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _client(ctx: typer.Context) -> ApiClient:
    settings: Settings = ctx.obj
    return ApiClient(settings)


def _related_text(related: list[dict[str, str]]) -> str:
    return ", ".join(f"{r.get(RESOURCE_ROLE, '?')}:{r.get(RESOURCE_ID, '?')}" for r in related)


def _time_text(value: str) -> str:
    """Local time; the date only when it is not today."""
    try:
        local = datetime.fromisoformat(value).astimezone()
    except ValueError:
        return value
    today = datetime.now(local.tzinfo).date()
    return local.strftime("%H:%M:%S" if local.date() == today else "%Y-%m-%d %H:%M:%S")


@events_app.command("emit")
@cli_errors
def emit(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="event name, e.g. tripwire.flow-run.Failed"),
    resource: str = typer.Option(..., "--resource", "-r", help="id of the resource the event is about"),
    payload: str | None = typer.Option(
        None, "--payload", "-p", help="a JSON object, e.g. '{\"attempt\": 3}'"
    ),
    related: list[str] = typer.Option(
        [], "--related", help="a related resource as role=id, e.g. deployment=etl (repeatable)"
    ),
    label: list[str] = typer.Option(
        [], "--label", "-l", help="another resource label as key=value (repeatable)"
    ),
) -> None:
    """Emit one event through the API."""
    body: dict[str, Any] = {"event": name, "resource": {RESOURCE_ID: resource}}
    body["resource"].update(dict(parse_pairs(label, "--label")))
    body["related"] = [
        {RESOURCE_ID: rid, RESOURCE_ROLE: role} for role, rid in parse_pairs(related, "--related")
    ]
    if payload is not None:
        try:
            body["payload"] = json.loads(payload)
        except json.JSONDecodeError as exc:
            raise ApiError(f"--payload is not valid JSON: {exc}") from None
    with _client(ctx) as client:
        answer = client.post("/api/events", body)
    event_id = answer["ids"][0] if isinstance(answer, dict) and answer.get("ids") else "?"
    Console(highlight=False).print(
        f"[green]emitted[/] {escape(name)} [dim]id[/] {event_id} [dim]resource[/] {escape(resource)}"
    )


@events_app.command("ls")
@cli_errors
def ls(
    ctx: typer.Context,
    name: list[str] = typer.Option(
        [], "--name", "-n", help="event-name glob, e.g. 'tripwire.flow-run.*' (repeatable)"
    ),
    resource: str | None = typer.Option(None, "--resource", "-r", help="glob on the resource id"),
    related: str | None = typer.Option(None, "--related", help="exact id of a related resource"),
    since: str | None = typer.Option(None, "--since", help="10m, 2h, 1d ago, or an ISO time"),
    limit: int = typer.Option(20, "--limit", min=1, help="how many events (newest first)"),
    as_json: bool = typer.Option(False, "--json", help="print the events as a JSON array"),
) -> None:
    """List recorded events, newest first."""
    params: dict[str, Any] = {"name": name or None, "resource": resource, "related": related}
    if since is not None:
        params["since"] = parse_since(since, datetime.now(UTC)).isoformat()
    events: list[dict[str, Any]] = []
    cursor = None
    with _client(ctx) as client:
        while len(events) < limit:
            page = client.get(
                "/api/events", limit=min(PAGE_MAX, limit - len(events)), cursor=cursor, **params
            )
            events.extend(page["events"])
            cursor = page.get("next_cursor")
            if not cursor:
                break
    if as_json:
        typer.echo(json.dumps(events, indent=2))
        return
    console = Console(highlight=False)
    if not events:
        console.print("[dim]no events (they appear here once the recorder has stored them)[/]")
        return
    title = f"{len(events)} event{'s' if len(events) != 1 else ''}, newest first (--json for everything)"
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("occurred", no_wrap=True)
    table.add_column("event", overflow="fold", style="bold")
    table.add_column("resource", overflow="fold")
    table.add_column("related", overflow="fold", style="dim")
    table.add_column("id", no_wrap=True, style="dim")
    for ev in events:
        table.add_row(
            _time_text(ev["occurred"]),
            escape(ev["event"]),
            escape(ev["resource"].get(RESOURCE_ID, "")),
            escape(_related_text(ev.get("related", []))),
            ev["id"][:8],
        )
    console.print(table)


@events_app.command("tail")
@cli_errors
def tail(
    ctx: typer.Context,
    name: list[str] = typer.Option([], "--name", "-n", help="event-name glob (repeatable)"),
    resource: str | None = typer.Option(None, "--resource", "-r", help="glob on the resource id"),
    count: int | None = typer.Option(None, "--count", min=1, help="stop after this many events"),
    as_json: bool = typer.Option(False, "--json", help="print each event as one JSON line"),
) -> None:
    """Follow new events live (Ctrl-C to stop)."""
    console = Console(highlight=False)
    seen = 0
    with _client(ctx) as client:
        if not as_json:
            console.print(f"[dim]following events at {client.base_url} (Ctrl-C to stop)[/]")
        try:
            for sse in client.stream_events("/api/events/tail", name=name or None, resource=resource):
                ev = sse.json()
                if as_json:
                    typer.echo(json.dumps(ev))
                else:
                    related = _related_text(ev.get("related", []))
                    console.print(
                        f"{_time_text(ev['occurred'])}  [bold]{escape(ev['event'])}[/]  "
                        f"{escape(ev['resource'].get(RESOURCE_ID, ''))}"
                        + (f"  [dim]{escape(related)}[/]" if related else "")
                    )
                seen += 1
                if count is not None and seen >= count:
                    return
        except KeyboardInterrupt:
            return
    if not as_json:
        console.print("[dim]the server closed the stream[/]")
