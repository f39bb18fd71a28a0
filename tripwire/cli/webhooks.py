"""``tripwire webhook create | ls | inspect | rotate | enable | disable | delete | test``, through the API.

``create NAME -f webhook.yaml``: the file is a webhook definition (``template``, ``auth``,
``rate_limit``, ...; see events/webhooks/model.py), JSON or YAML; NAME overrides its ``name``. It is
validated locally first (a bad jsonpath expression is reported with its field and column), then sent.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from events.webhooks.model import parse_definition
from tripwire.cli.client import ApiClient, cli_errors, fail
from tripwire.settings import Settings

__all__ = ["webhook_app"]

webhook_app = typer.Typer(
    help="Webhooks in: create, list, inspect, rotate, enable/disable, delete, test.", no_args_is_help=True
)

BASE = "/api/webhooks"


def _client(ctx: typer.Context) -> ApiClient:
    settings: Settings = ctx.obj
    return ApiClient(settings)


def _path(name: str, suffix: str = "") -> str:
    return f"{BASE}/{quote(name, safe='')}{suffix}"


def _load(path: Path) -> Any:
    try:
        text = path.read_text()
    except OSError as exc:
        raise fail(f"cannot read {path}: {exc.strerror}") from None
    try:
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise fail(f"{path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}") from None


def _url(ctx: typer.Context, item: dict[str, Any]) -> str:
    settings: Settings = ctx.obj
    return f"{settings.api_url.rstrip('/')}{item['path']}"


def _auth_text(auth: dict[str, Any]) -> str:
    kind = auth.get("type", "none")
    return kind if kind == "none" else f"{kind} ({auth.get('secret')})"


@webhook_app.command("create")
@cli_errors
def create(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="the webhook's name"),
    file: Path = typer.Option(
        ..., "--file", "-f", help="the definition: template, auth, ... (.yaml or .json)"
    ),
    slug: str | None = typer.Option(None, "--slug", help="choose the slug (default: random, unguessable)"),
) -> None:
    """Create a webhook from a definition file and print the URL callers use."""
    document = _load(file)
    if not isinstance(document, dict):
        raise fail(f"{file} must hold one webhook definition (a mapping)")
    document["name"] = name
    if slug is not None:
        document["slug"] = slug
    parse_definition(document)  # local check: errors name the field (and the column of an expression)
    with _client(ctx) as client:
        item = client.post(BASE, document)
    console = Console(highlight=False)
    console.print(f"[green]created[/] webhook {escape(item['name'])}: [bold]{escape(_url(ctx, item))}[/]")
    console.print("[dim]the slug is the only secret of an unauthenticated webhook; `rotate` replaces it[/]")


@webhook_app.command("ls")
@cli_errors
def ls(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """List webhooks: name, state, auth and path."""
    with _client(ctx) as client:
        items = client.get(BASE)["webhooks"]
    if as_json:
        typer.echo(json.dumps(items, indent=2))
        return
    console = Console(highlight=False)
    if not items:
        console.print("[dim]no webhooks; add one with `tripwire webhook create NAME -f FILE`[/]")
        return
    table = Table(title=f"{len(items)} webhook{'s' if len(items) != 1 else ''}", title_justify="left")
    for column in ("name", "enabled", "auth", "event", "path"):
        table.add_column(column, overflow="fold")
    for item in items:
        template = item["definition"].get("template") or {}
        table.add_row(
            escape(item["name"]),
            "[green]yes[/]" if item["enabled"] else "[yellow]disabled[/]",
            escape(_auth_text(item["definition"]["auth"])),
            escape(template.get("event", "(CloudEvents)")),
            escape(item["path"]),
        )
    console.print(table)


@webhook_app.command("inspect")
@cli_errors
def inspect(ctx: typer.Context, name: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """Show a webhook: URL, definition, counts and recent failures (never bodies or secrets)."""
    with _client(ctx) as client:
        item = client.get(_path(name))
    if as_json:
        typer.echo(json.dumps(item, indent=2))
        return
    console = Console(highlight=False)
    counts = item["counts"]
    console.print(f"[bold]{escape(item['name'])}[/] ({'enabled' if item['enabled'] else 'disabled'}) "
                  f"version {item['version']}")  # fmt: skip
    console.print(f"url:      {escape(_url(ctx, item))}")
    console.print(f"auth:     {escape(_auth_text(item['definition']['auth']))}")
    limit = item["definition"].get("rate_limit")
    console.print(f"limit:    {limit['requests']} per {limit['per_s']} s" if limit else "limit:    none")
    by_status = ", ".join(f"{k}: {v}" for k, v in sorted(counts["by_status"].items())) or "-"
    console.print(f"accepted: {counts['accepted']}  rejected: {counts['rejected']} ({by_status})")
    console.print("template:")
    console.print(escape(yaml.safe_dump(item["definition"].get("template"), sort_keys=False)).rstrip())
    if counts["failures"]:
        table = Table(title="recent failures", title_justify="left")
        for column in ("at", "status", "reason"):
            table.add_column(column, overflow="fold")
        for failure in counts["failures"]:
            table.add_row(failure["at"], str(failure["status"]), escape(failure["reason"]))
        console.print(table)


@webhook_app.command("rotate")
@cli_errors
def rotate(
    ctx: typer.Context, name: str, slug: str | None = typer.Option(None, "--slug", help="choose the new slug")
) -> None:
    """Give a webhook a new slug; the old URL answers 404 at once."""
    with _client(ctx) as client:
        item = client.post(_path(name, "/rotate"), {"slug": slug} if slug else {})
    Console(highlight=False).print(f"[green]rotated[/] {escape(name)}: [bold]{escape(_url(ctx, item))}[/]")


@webhook_app.command("enable")
@cli_errors
def enable(ctx: typer.Context, name: str) -> None:
    """Enable a webhook."""
    with _client(ctx) as client:
        client.post(_path(name, "/enable"), None)
    typer.echo(f"enabled {name}")


@webhook_app.command("disable")
@cli_errors
def disable(ctx: typer.Context, name: str) -> None:
    """Disable a webhook: callers get 404, as for an unknown address."""
    with _client(ctx) as client:
        client.post(_path(name, "/disable"), None)
    typer.echo(f"disabled {name}")


@webhook_app.command("delete")
@cli_errors
def delete(ctx: typer.Context, name: str) -> None:
    """Delete a webhook."""
    with _client(ctx) as client:
        client.request("DELETE", _path(name))
    typer.echo(f"deleted {name}")


@webhook_app.command("test")
@cli_errors
def test(
    ctx: typer.Context,
    name: str,
    file: Path = typer.Option(..., "--file", "-f", help="a sample request body (.json, or any text)"),
    header: list[str] = typer.Option([], "--header", "-H", help="'Name: value' (repeatable)"),
    method: str = typer.Option("POST", "--method", "-X"),
) -> None:
    """Apply the webhook's template to a sample body and print the event; nothing is emitted."""
    headers: dict[str, str] = {}
    for item in header:
        key, sep, value = item.partition(":")
        if not sep:
            raise fail(f"--header {item!r}: write 'Name: value'")
        headers[key.strip()] = value.strip()
    body: Any = _load(file) if file.suffix == ".json" else file.read_text()
    with _client(ctx) as client:
        events = client.post(_path(name, "/test"), {"method": method, "headers": headers, "body": body})
    typer.echo(json.dumps(events if len(events) != 1 else events[0], indent=2))
