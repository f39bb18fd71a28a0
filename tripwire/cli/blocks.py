"""``tripwire block create | ls | inspect | delete | types | rotate-key | generate-key``.

Secret fields are never taken from the command line, where they would stay in the shell history and be
visible to other users in the process list: ``--field`` naming one is refused. They are prompted for with
hidden input (``--secret FIELD``, and every required secret not given otherwise), read from standard input
(``--secret-stdin FIELD``) or from an environment variable (``--secret-env FIELD=VARNAME``).
Field paths: ``url``, ``to`` (a list: repeat it or separate with commas), ``headers.X-Team`` (a map
entry); a value starting with ``[`` or ``{`` is read as JSON. A list secret read from stdin or a variable
takes one item per line. Everything but ``types`` and ``generate-key`` goes through the HTTP API.
"""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import quote

import click
import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from blocks.base import Block, FieldSpec
from blocks.crypto import Cipher
from blocks.registry import BLOCK_TYPES, block_type, parse_block, parse_ref
from tripwire.cli.client import ApiClient, cli_errors, fail
from tripwire.settings import Settings

__all__ = ["block_app", "collect_data"]

block_app = typer.Typer(
    help="Credential blocks (stored encrypted): create, list, inspect, delete, types, key rotation.",
    no_args_is_help=True,
)

BASE = "/api/blocks"
SECRET_HOWTO = "use --secret {f} (hidden prompt), --secret-stdin {f} or --secret-env {f}=VARNAME"


def _client(ctx: typer.Context) -> ApiClient:
    settings: Settings = ctx.obj
    return ApiClient(settings)


def _path(ref: str) -> str:
    slug, name = parse_ref(ref)
    return f"{BASE}/{quote(slug, safe='')}/{quote(name, safe='')}"


# --- building a document from options ---------------------------------------------------------------


def _target(cls: type[Block], path: str, option: str) -> tuple[FieldSpec, str | None]:
    specs = {spec.name: spec for spec in cls.field_specs()}
    name, dot, key = path.partition(".")
    spec = specs.get(name)
    if spec is None:
        raise fail(f"{option}: {cls.block_type} has no field {name!r}; its fields: {', '.join(specs)}")
    if dot and (spec.shape != "dict" or not key):
        raise fail(f"{option}: {name!r} is not a map field, so {path!r} names nothing; write {name}=...")
    if spec.shape == "dict" and not dot and option != "--field":
        raise fail(f"{option}: {name!r} is a map: name one entry, e.g. {name}.Authorization")
    return spec, key or None


def _json(value: str, kind: type, path: str) -> Any:
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise fail(f"--field {path}: the value starts like JSON but is not ({exc.msg})") from None
    if not isinstance(parsed, kind):
        raise fail(f"--field {path}: expected a JSON {'list' if kind is list else 'object'}")
    return parsed


def _assign(data: dict[str, Any], spec: FieldSpec, key: str | None, value: Any, path: str) -> None:
    if spec.shape == "list":
        items = value if isinstance(value, list) else [value]
        data.setdefault(spec.name, []).extend(items)
    elif spec.shape == "dict" and key is not None:
        data.setdefault(spec.name, {})[key] = value
    elif spec.shape == "dict":
        data.setdefault(spec.name, {}).update(value)
    else:
        if spec.name in data:
            raise fail(f"{path} is given twice")
        data[spec.name] = value


def _plain(data: dict[str, Any], cls: type[Block], item: str) -> None:
    path, sep, value = item.partition("=")
    if not sep or not path:
        raise fail(f"--field {item.partition('=')[0][:60]!r}: write --field NAME=VALUE")
    spec, key = _target(cls, path, "--field")
    if spec.secret:
        raise fail(
            f"--field {path}: {spec.name!r} is a secret field of {cls.block_type}, and secrets are never "
            f"taken from the command line (they would stay in the shell history): "
            + SECRET_HOWTO.format(f=path)
        )
    if spec.shape == "list":
        parsed: Any = _json(value, list, path) if value.startswith("[") else value.split(",")
        items = [v.strip() if isinstance(v, str) else v for v in parsed]
        _assign(data, spec, key, [v for v in items if v != ""], path)
    elif spec.shape == "dict" and key is None:
        if not value.startswith("{"):
            raise fail(f"--field {path}: {spec.name!r} is a map: write {spec.name}.NAME=VALUE or JSON")
        _assign(data, spec, None, _json(value, dict, path), path)
    else:
        _assign(data, spec, key, value, path)


def _secret_value(spec: FieldSpec, text: str) -> Any:
    if spec.shape == "list":
        return [line.strip() for line in text.splitlines() if line.strip()]
    return text.rstrip("\r\n")


def _prompt(spec: FieldSpec, path: str) -> Any:
    if spec.shape != "list":
        return typer.prompt(f"{path} (secret, hidden)", hide_input=True)
    items: list[str] = []
    while True:
        label = f"{path}[{len(items)}] (secret, hidden{'; empty to finish' if items else ''})"
        item = typer.prompt(label, hide_input=True, default="", show_default=False).strip()
        if not item:
            if items:
                return items
            continue
        items.append(item)


def collect_data(
    cls: type[Block],
    fields: list[str],
    prompted: list[str],
    stdin_field: str | None,
    env_fields: list[str],
) -> dict[str, Any]:
    """The block document from ``--field``, ``--secret``, ``--secret-stdin`` and ``--secret-env`` options;
    required secrets not given are prompted for."""
    data: dict[str, Any] = {}
    for item in fields:
        _plain(data, cls, item)
    sources: list[tuple[str, str, str]] = [("--secret", path, "") for path in prompted]
    if stdin_field:
        sources.append(("--secret-stdin", stdin_field, ""))
    for item in env_fields:
        path, sep, var = item.partition("=")
        if not sep or not var:
            raise fail(f"--secret-env {path[:60]!r}: write --secret-env FIELD=VARNAME")
        sources.append(("--secret-env", path, var))
    seen: set[str] = set()
    for option, path, var in sources:
        spec, key = _target(cls, path, option)
        if not spec.secret:
            raise fail(f"{option} {path}: {spec.name!r} is not secret; give it with --field {path}=VALUE")
        if path in seen:
            raise fail(f"{path} is given twice")
        seen.add(path)
        if option == "--secret":
            value = _prompt(spec, path)
        elif option == "--secret-stdin":
            value = _secret_value(spec, click.get_text_stream("stdin").read())
        else:
            text = os.environ.get(var)  # named by the user on purpose: the one place a secret may come from
            if text is None:
                raise fail(f"--secret-env {path}={var}: the environment variable {var} is not set")
            value = _secret_value(spec, text)
        _assign(data, spec, key, value, path)
    for spec in cls.field_specs():
        if spec.secret and spec.required and spec.name not in data:
            data[spec.name] = _prompt(spec, spec.name)
    return data


# --- commands ----------------------------------------------------------------------------------------


@block_app.command("create")
@cli_errors
def create(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="TYPE/NAME, e.g. slack-webhook/data-team"),
    fields: list[str] = typer.Option([], "--field", "-f", help="a plain field: NAME=VALUE (repeatable)"),
    prompted: list[str] = typer.Option([], "--secret", help="prompt for this secret field (hidden input)"),
    stdin_field: str | None = typer.Option(None, "--secret-stdin", help="read this secret field from stdin"),
    env_fields: list[str] = typer.Option(
        [], "--secret-env", help="read a secret field from an environment variable: FIELD=VARNAME"
    ),
    update: bool = typer.Option(
        False, "--update", help="replace the block if it exists, with the fields given now (else refused)"
    ),
) -> None:
    """Create a block (secret fields are prompted for, or read from stdin or a variable)."""
    slug, name = parse_ref(ref)
    cls = block_type(slug)
    data = collect_data(cls, fields, prompted, stdin_field, env_fields)
    parse_block(slug, data)  # refuse locally first: same rules and messages as the server
    with _client(ctx) as client:
        if update:
            item = client.request("PUT", _path(ref), json={"data": data})
        else:
            item = client.post(BASE, {"type": slug, "name": name, "data": data})
    verb = "saved" if update else "created"
    Console(highlight=False).print(
        f"[green]{verb}[/] {escape(item['ref'])} [dim](encrypted with key {item['key_id']})[/]"
    )


@block_app.command("ls")
@cli_errors
def ls(
    ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="print the blocks as JSON")
) -> None:
    """List blocks: reference, key id, last change (nothing secret is shown)."""
    with _client(ctx) as client:
        items = client.get(BASE)["blocks"]
    if as_json:
        typer.echo(json.dumps(items, indent=2))
        return
    console = Console(highlight=False)
    if not items:
        console.print("[dim]no blocks; add one with `tripwire block create TYPE/NAME --field ...`[/]")
        return
    table = Table(title=f"{len(items)} block{'s' if len(items) != 1 else ''}", title_justify="left")
    for column in ("block", "key", "updated"):
        table.add_column(column, overflow="fold")
    for item in items:
        table.add_row(escape(item["ref"]), item["key_id"], item["updated"])
    console.print(table)


@block_app.command("inspect")
@cli_errors
def inspect(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="TYPE/NAME"),
    as_json: bool = typer.Option(False, "--json", help="JSON instead of YAML"),
) -> None:
    """Print a block's fields, secrets shown as ********."""
    with _client(ctx) as client:
        item = client.get(_path(ref))
    if as_json:
        typer.echo(json.dumps(item, indent=2))
        return
    typer.echo(f"# {item['ref']}: updated {item['updated']}, encrypted with key {item['key_id']}")
    typer.echo(yaml.safe_dump(item["data"], sort_keys=False, allow_unicode=True), nl=False)


@block_app.command("delete")
@cli_errors
def delete(ctx: typer.Context, ref: str = typer.Argument(..., help="TYPE/NAME")) -> None:
    """Delete a block (actions naming it then fail with 'no block ...')."""
    with _client(ctx) as client:
        client.request("DELETE", _path(ref))
    Console(highlight=False).print(f"[red]deleted[/] {escape(ref)}")


@block_app.command("types")
@cli_errors
def types(
    as_json: bool = typer.Option(False, "--json", help="print the types with their JSON schemas"),
) -> None:
    """List the block types and their fields; secret fields are marked."""
    if as_json:
        out = [
            {"type": slug, "title": cls.title(), "schema": cls.json_schema()}
            for slug, cls in BLOCK_TYPES.items()
        ]
        typer.echo(json.dumps(out, indent=2))
        return
    table = Table(title="block types", title_justify="left", show_lines=True)
    for column in ("type", "field", "kind", "secret", "description"):
        table.add_column(column, overflow="fold")
    for slug, cls in BLOCK_TYPES.items():
        for i, spec in enumerate(cls.field_specs()):
            title = f"{slug}\n[dim]{escape(cls.title())}[/]" if i == 0 else ""
            required = "" if spec.required else ", optional"
            table.add_row(
                title,
                spec.name,
                f"{spec.type}{required}",
                "[yellow]secret[/]" if spec.secret else "",
                escape(spec.description),
            )
    Console(highlight=False).print(table)


@block_app.command("rotate-key")
@cli_errors
def rotate_key(ctx: typer.Context) -> None:
    """Re-encrypt every block with the server's primary key.

    Procedure: set TRIPWIRE_ENCRYPTION_KEY="NEW,OLD" (a key from `tripwire block generate-key` first)
    for the server and runners and restart them; run this; check `tripwire block ls` shows only the new
    key; then set TRIPWIRE_ENCRYPTION_KEY="NEW" and restart again.
    """
    with _client(ctx) as client:
        report = client.post(f"{BASE}/rotate-key", None)
    Console(highlight=False).print(
        f"re-encrypted [bold]{report['rotated']}[/] block(s); every block now uses key {report['key_id']}"
    )


@block_app.command("generate-key")
def generate_key() -> None:
    """Print a new random encryption key (for TRIPWIRE_ENCRYPTION_KEY or the key file)."""
    typer.echo(Cipher.generate_key())
