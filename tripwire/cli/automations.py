"""``tripwire automation apply | ls | inspect | pause | resume | delete | firings``, through the HTTP API.

``apply`` is all or nothing: every automation of every file is validated locally first (errors name the
file, the automation and the field), then all are sent in one request (``PUT /api/automations/apply-all``)
that the server validates again and applies in one transaction.
"""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from triggers.files import apply_document, load_automation_files
from tripwire.cli.client import ApiClient, ApiError, cli_errors
from tripwire.settings import Settings

__all__ = ["automation_app", "duration_text", "trigger_summary"]

automation_app = typer.Typer(
    help="Apply, list, inspect, pause, resume and delete automations.", no_args_is_help=True
)

BASE = "/api/automations"
PAGE_MAX = 1000
_INDEXED = re.compile(r"automations\[(\d+)\]\.?")
TIMES = "\u00d7"  # the multiplication sign of "3x tripwire.flow-run.Failed"
_STATUS_STYLE = {"created": "green", "updated": "yellow", "unchanged": "dim"}


def _client(ctx: typer.Context) -> ApiClient:
    settings: Settings = ctx.obj
    return ApiClient(settings)


def _path(ref: str, suffix: str = "") -> str:
    return f"{BASE}/{quote(ref, safe='')}{suffix}"


# --- summaries ---------------------------------------------------------------------------------------


def duration_text(seconds: float) -> str:
    """``600`` -> ``10m``, ``90`` -> ``90s``, ``7200`` -> ``2h``, ``0`` -> ``no limit``."""
    if not seconds:
        return "no limit"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _names(globs: list[str]) -> str:
    if not globs:
        return "any event"
    return globs[0] if len(globs) == 1 else "{" + ", ".join(globs) + "}"


def trigger_summary(trigger: dict[str, Any]) -> str:
    """One line for a trigger document, e.g. ``3\u00d7 tripwire.flow-run.Failed / 10m per <for_each>``."""
    kind = trigger.get("type", "event")
    if kind in ("compound", "sequence"):
        children = [trigger_summary(t) for t in trigger.get("triggers", [])]
        within = trigger.get("within")
        tail = f" / {duration_text(within)}" if within else ""
        if kind == "sequence":
            return "sequence: " + " → ".join(f"({c})" for c in children) + tail
        require = trigger.get("require", "all")
        return f"{require} of: " + "; ".join(f"({c})" for c in children) + tail
    threshold = trigger.get("threshold", 1)
    expect = _names(trigger.get("expect", []))
    within = float(trigger.get("within") or 0)
    proactive = trigger.get("posture") == "Proactive"
    text = f"{threshold}{TIMES} {expect}"
    if proactive:
        text = f"fewer than {text}"
    if trigger.get("after"):
        text += f" after {_names(trigger['after'])}"
    if within:
        text += f" / {duration_text(within)}"
    if trigger.get("for_each"):
        text += " per " + ", ".join(trigger["for_each"])
    if trigger.get("match") or trigger.get("match_related") or trigger.get("where"):
        text += " (filtered)"
    return text


def _time_text(value: str | None) -> str:
    if not value:
        return ""
    try:
        return datetime.fromisoformat(value).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return value


# --- commands ----------------------------------------------------------------------------------------


@automation_app.command("apply")
@cli_errors
def apply(
    ctx: typer.Context,
    files: list[Path] = typer.Option(
        ..., "--file", "-f", help="a .json, .yaml/.yml or .py file of automations (repeatable)"
    ),
    wait_s: float = typer.Option(
        10.0, "--wait", help="seconds to wait until every running evaluator uses the change (0: don't)"
    ),
) -> None:
    """Create or update automations by name from files: all of them, or none when one is invalid."""
    automations = load_automation_files(files)
    body = {"automations": [apply_document(a) for a in automations]}
    with _client(ctx) as client:
        try:
            answer = client.request("PUT", f"{BASE}/apply-all", json=body)
        except ApiError as exc:
            if exc.status != 422:
                raise
            names = [a.name for a in automations]
            raise ApiError(
                "the API rejected these automations; nothing was applied:",
                [_named(line, names) for line in exc.details],
                exc.status,
            ) from None
    console = Console(highlight=False)
    for result in answer["results"]:
        status, stored = result["status"], result["automation"]
        console.print(
            f"[{_STATUS_STYLE.get(status, 'bold')}]{status:9}[/] {escape(stored['name'])} "
            f"[dim](version {stored['version']}, id {stored['id']})[/]"
        )
    if wait_s > 0:
        with _client(ctx) as client:
            console.print(_await_live(client, wait_s))


def _await_live(client: ApiClient, wait_s: float) -> str:
    """Poll ``GET /api/evaluators`` until every running evaluator has loaded the latest automations."""
    deadline = time.monotonic() + wait_s
    while True:
        status = client.get("/api/evaluators")
        if status["current"]:
            return f"[green]live[/] on {len(status['evaluators'])} evaluator(s)"
        if not status["evaluators"]:
            return "[yellow]no evaluator is running[/]: the automations apply once one starts"
        if time.monotonic() > deadline:
            return f"[yellow]not yet live on every evaluator after {wait_s:g} s[/]"
        time.sleep(0.1)


def _named(line: str, names: list[str]) -> str:
    """``automations[1].trigger.threshold: ...`` -> ``'etl': trigger.threshold: ...``."""
    match = _INDEXED.match(line)
    if match is None or int(match.group(1)) >= len(names):
        return line
    name, rest = names[int(match.group(1))], line[match.end() :]
    return f"{name!r}{rest}" if rest.startswith(":") else f"{name!r}: {rest}"


@automation_app.command("ls")
@cli_errors
def ls(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="print the automations as a JSON array"),
) -> None:
    """List automations: name, state, trigger and mode."""
    with _client(ctx) as client:
        items = client.get(BASE)["automations"]
    if as_json:
        typer.echo(json.dumps(items, indent=2))
        return
    console = Console(highlight=False)
    if not items:
        console.print("[dim]no automations; add some with `tripwire automation apply -f FILE`[/]")
        return
    table = Table(title=f"{len(items)} automation{'s' if len(items) != 1 else ''}", title_justify="left")
    for column in ("name", "enabled", "trigger", "mode", "actions", "version"):
        table.add_column(column, overflow="fold")
    for item in items:
        doc = item["automation"]
        actions = len(doc.get("actions", [])) + len(doc.get("actions_on_trigger", []))
        resolve = len(doc.get("actions_on_resolve", []))
        table.add_row(
            escape(item["name"]),
            "[green]yes[/]" if item["enabled"] else "[yellow]paused[/]",
            escape(trigger_summary(doc["trigger"])),
            doc.get("mode", "live"),
            f"{actions}" + (f" (+{resolve} on resolve)" if resolve else ""),
            str(item["version"]),
        )
    console.print(table)


@automation_app.command("inspect")
@cli_errors
def inspect(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="the automation's name or id"),
    as_json: bool = typer.Option(False, "--json", help="JSON instead of YAML"),
) -> None:
    """Print an automation's document (YAML by default), ready to edit and apply again."""
    with _client(ctx) as client:
        item = client.get(_path(name))
    document = item["automation"]
    if as_json:
        typer.echo(json.dumps(document, indent=2))
        return
    typer.echo(
        f"# {item['name']}: version {item['version']}, updated {item['updated']}, "
        f"{'enabled' if item['enabled'] else 'paused'}"
    )
    typer.echo(yaml.safe_dump(document, sort_keys=False, allow_unicode=True), nl=False)


def _set_enabled(ctx: typer.Context, name: str, action: str) -> None:
    with _client(ctx) as client:
        item = client.post(_path(name, f"/{action}"), None)
    state = "[green]enabled[/]" if item["enabled"] else "[yellow]paused[/]"
    Console(highlight=False).print(f"{escape(item['name'])} is {state} [dim](version {item['version']})[/]")


@automation_app.command("pause")
@cli_errors
def pause(ctx: typer.Context, name: str = typer.Argument(..., help="the automation's name or id")) -> None:
    """Pause an automation: it is no longer evaluated until resumed."""
    _set_enabled(ctx, name, "pause")


@automation_app.command("resume")
@cli_errors
def resume(ctx: typer.Context, name: str = typer.Argument(..., help="the automation's name or id")) -> None:
    """Resume a paused automation."""
    _set_enabled(ctx, name, "resume")


@automation_app.command("delete")
@cli_errors
def delete(ctx: typer.Context, name: str = typer.Argument(..., help="the automation's name or id")) -> None:
    """Delete an automation and its recorded firings."""
    with _client(ctx) as client:
        client.request("DELETE", _path(name))
    Console(highlight=False).print(f"[red]deleted[/] {escape(name)}")


def _labels_text(labels: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in labels.items()) or "-"


def _actions_text(actions: list[dict[str, Any]]) -> str:
    return ", ".join(_action_text(a) for a in actions) or "-"


def _action_text(action: dict[str, Any]) -> str:
    """``send-notification (succeeded)``, ``call-webhook (failed: HTTP 404 ...)``."""
    status = action.get("status", "?")
    if action.get("reason"):
        status = f"{status}: {action['reason']}"
    return f"{action.get('type', '?')} ({status})"


@automation_app.command("firings")
@cli_errors
def list_firings(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="the automation's name or id"),
    limit: int = typer.Option(20, "--limit", min=1, help="how many firings (newest first)"),
    as_json: bool = typer.Option(False, "--json", help="print the firings as a JSON array"),
) -> None:
    """Show why an automation fired: time, kind, key labels, triggering event and actions."""
    found: list[dict[str, Any]] = []
    cursor = None
    with _client(ctx) as client:
        while len(found) < limit:
            page = client.get(_path(name, "/firings"), limit=min(PAGE_MAX, limit - len(found)), cursor=cursor)
            found.extend(page["firings"])
            cursor = page.get("next_cursor")
            if not cursor:
                break
    if as_json:
        typer.echo(json.dumps(found, indent=2))
        return
    console = Console(highlight=False)
    if not found:
        console.print(f"[dim]{escape(name)} has not fired yet[/]")
        return
    table = Table(title=f"firings of {escape(name)}, newest first", title_justify="left")
    for column in ("time", "kind", "key", "event", "actions"):
        table.add_column(column, overflow="fold")
    for f in found:
        colour = "red" if f["kind"] == "triggered" else "green"
        dry = " (dry-run)" if f.get("mode") == "dry-run" else ""
        table.add_row(
            _time_text(f["occurred"]),
            f"[{colour}]{f['kind']}[/]{dry}",
            escape(_labels_text(f.get("labels", {}))),
            f.get("event_id") or ("deadline" if f["kind"] == "triggered" else "-"),
            escape(_actions_text(f.get("actions", []))),
        )
    console.print(table)


_AGO = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def since_time(text: str, now: datetime) -> datetime:
    """``7d``/``12h``/``30m`` ago, or an ISO-8601 time (naive means UTC)."""
    match = _AGO.match(text.strip())
    if match:
        return now - timedelta(seconds=float(match[1]) * _UNIT_S[match[2]])
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is neither a duration like 7d, 12h, 30m nor an ISO-8601 time"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@automation_app.command("replay")
@cli_errors
def replay_command(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="the automation's name or id"),
    since: str = typer.Option("7d", "--since", help="how far back: 7d, 12h, 30m or an ISO-8601 time"),
    until: str | None = typer.Option(None, "--until", help="up to: a duration ago or an ISO-8601 time"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
) -> None:
    """Evaluate an automation against stored history: when would it have fired? (Changes nothing.)"""
    now = datetime.now(UTC)
    params = {"since": since_time(since, now).isoformat()}
    if until is not None:
        params["until"] = since_time(until, now).isoformat()
    with _client(ctx) as client:
        report = client.request("POST", _path(name, "/replay"), params=params)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    console = Console(highlight=False)
    console.print(
        f"{escape(report['automation'])}: {report['events_scanned']} events scanned, "
        f"[red]{report['fired']} firings[/], [green]{report['resolved']} resolutions[/]"
    )
    if report["firings"]:
        table = Table(title_justify="left")
        for column in ("time", "kind", "key", "event"):
            table.add_column(column, overflow="fold")
        for f in report["firings"]:
            colour = "red" if f["kind"] == "triggered" else "green"
            table.add_row(
                _time_text(f["time"]),
                f"[{colour}]{f['kind']}[/]",
                escape(_labels_text(f.get("labels", {}))),
                f.get("event_id") or "deadline",
            )
        console.print(table)
