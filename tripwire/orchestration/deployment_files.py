"""Deployments from files (``tripwire deploy -f deployments.yaml``): YAML or JSON, checked before sending.

1. A file holds one deployment object, a list of them, or ``{"deployments": [...]}``.
2. A relative file entrypoint (``flows/etl.py:etl``) is relative to the file's directory and is stored
   as an absolute path, so a worker finds it whatever its working directory. ``module:function``
   entrypoints stay as they are (the worker imports them from its ``sys.path``).
3. ``flow_name`` and ``parameter_schema`` are read from the flow itself: the entrypoint is imported
   (``flows.load_flow``), which also proves it loads. A document that gives both is taken as it is,
   without importing anything (for flows whose dependencies only the workers have).
4. Every deployment of every file is checked before anything is returned; errors name the file, the
   deployment (index and name) and the field: ``deploy.yaml[1] 'etl': schedules[0].timezone: ...``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from tripwire.errors import NotFound, ValidationFailed
from tripwire.orchestration.deployment_models import DeploymentSpec, check_spec, parse_deployment

__all__ = ["load_deployment_files", "read_deployments", "resolve_entrypoint"]

SUFFIXES = (".yaml", ".yml", ".json")


def load_deployment_files(paths: Iterable[Path]) -> list[DeploymentSpec]:
    """Every deployment of every file, validated (note 4); ValidationFailed lists every problem."""
    specs: list[DeploymentSpec] = []
    errors: list[tuple[str, str]] = []
    for path in paths:
        try:
            specs.extend(read_deployments(path))
        except ValidationFailed as exc:
            errors.extend(exc.errors)
    if errors:
        raise ValidationFailed(errors)
    names: dict[str, str] = {}
    for spec in specs:
        if spec.name in names:
            errors.append((spec.name, f"is deployed twice (also by {names[spec.name]})"))
        names.setdefault(spec.name, spec.entrypoint)
    if errors:
        raise ValidationFailed(errors)
    return specs


def read_deployments(path: Path) -> list[DeploymentSpec]:
    """The deployments of one file (notes 1-3)."""
    data = _parse(path)
    if isinstance(data, dict) and set(data) == {"deployments"}:
        data = data["deployments"]
    items = (
        [(None, data)]
        if isinstance(data, dict)
        else list(enumerate(data))
        if isinstance(data, list)
        else None
    )
    if items is None:
        raise ValidationFailed([(str(path), "must hold a deployment object or a list of them")])
    out: list[DeploymentSpec] = []
    errors: list[tuple[str, str]] = []
    for index, item in items:
        where = _label(path, index, item)
        try:
            spec = parse_deployment(_completed(item, path.parent, where), where)
            check_spec(spec)
            out.append(spec)
        except ValidationFailed as exc:
            errors.extend(
                (loc if loc.startswith(where) else f"{where}: {loc}", msg) for loc, msg in exc.errors
            )
    if errors:
        raise ValidationFailed(errors)
    return out


def resolve_entrypoint(entrypoint: str, base: Path) -> str:
    """A file entrypoint relative to ``base`` made absolute; a ``module:function`` one unchanged."""
    where, sep, name = entrypoint.strip().rpartition(":")
    if not sep or not (where.endswith(".py") or "/" in where):
        return entrypoint.strip()
    path = Path(where).expanduser()
    return f"{(path if path.is_absolute() else base / path).resolve()}:{name}"


def _completed(item: Any, base: Path, where: str) -> Any:
    """The document with its entrypoint resolved and flow_name / parameter_schema filled in (note 3)."""
    if not isinstance(item, dict) or not isinstance(item.get("entrypoint"), str):
        return item  # parse_deployment says what is wrong
    document = {**item, "entrypoint": resolve_entrypoint(item["entrypoint"], base)}
    if "flow_name" in document and "parameter_schema" in document:
        return document
    try:
        from tripwire.orchestration.flows import load_flow
    except ImportError as exc:  # pragma: no cover - the flow engine ships with Tripwire
        raise ValidationFailed([(f"{where}: entrypoint", f"flows cannot be loaded here: {exc}")]) from None
    try:
        flow = load_flow(document["entrypoint"])
    except ValidationFailed as exc:
        raise ValidationFailed([(f"{where}: {loc}", msg) for loc, msg in exc.errors]) from None
    document.setdefault("flow_name", flow.name)
    document.setdefault("parameter_schema", flow.parameter_schema())
    return document


def _label(path: Path, index: int | None, item: Any) -> str:
    name = item.get("name") if isinstance(item, dict) else None
    where = str(path) if index is None else f"{path}[{index}]"
    return f"{where} {name!r}" if isinstance(name, str) and name else where


def _parse(path: Path) -> Any:
    if path.suffix.lower() not in SUFFIXES:
        raise ValidationFailed([(str(path), f"give a {', '.join(SUFFIXES)} file")])
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotFound(f"no such file: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationFailed([(str(path), f"cannot be read: {exc}")]) from None
    try:
        return json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        message = f"is not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        raise ValidationFailed([(str(path), message)]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValidationFailed([(str(path), f"is not valid YAML{at}: {problem}")]) from None
