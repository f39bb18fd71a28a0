"""Automations from files: JSON, YAML (one automation or a list) and Python modules, all as Automation models.

1. JSON and YAML files hold one automation object, a list of them, or ``{"automations": [...]}``.
2. A Python file is run as a fresh module (its directory on ``sys.path`` while it runs). Its module-level
   ``automations`` list (of Automation instances or plain dicts) is collected when it exists; otherwise
   every module-level Automation instance, in definition order.
3. Every automation goes through ``Automation.model_validate`` of its document, whatever the format, so
   the three formats give equal models. An ``id`` or ``enabled`` the source did not set stays unset
   (``model_fields_set``): applying such an automation keeps the stored id and enabled state.
4. Errors name the file, the automation (index and name) and the field, e.g.
   ``rules.yaml[1] 'etl keeps failing': trigger.threshold: threshold must be ...``. Locations drop
   pydantic's union tags (``trigger.event.threshold`` reads ``trigger.threshold``). All automations of
   all files are checked before anything is returned: either every one is valid, or ValidationFailed
   lists every problem.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import traceback
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from triggers.models import Automation
from tripwire.errors import NotFound, ValidationFailed

__all__ = [
    "SUFFIXES",
    "apply_document",
    "automation_errors",
    "load_automation_files",
    "load_automations",
    "parse_automation",
]

SUFFIXES = (".json", ".yaml", ".yml", ".py")
_UNSET_UNLESS_GIVEN = ("id", "enabled")


# --- error locations --------------------------------------------------------------------------------


def _loc_text(loc: Sequence[int | str], document: Any, err_type: str) -> str:
    """``trigger.triggers[0].threshold``: the path into ``document``, union tags left out (note 4)."""
    text = ""
    node = document
    known = document is not None
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(part, int):
            text += f"[{part}]"
            node = node[part] if isinstance(node, list) and -len(node) <= part < len(node) else None
            continue
        if known:
            in_dict = isinstance(node, dict) and part in node
            if not in_dict and not (last and err_type == "missing" and isinstance(node, dict)):
                continue  # a union member's tag ('event', 'str', 'list[str]'), not a field
            node = node.get(part) if in_dict else None
        elif "[" in part:
            continue
        text += f".{part}" if text else part
    return text


def _message(err: Any) -> str:
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return "unknown field; check its spelling (unknown fields are refused)"
    if err["type"] == "union_tag_not_found":
        return "needs a 'type' (for a trigger: 'event', 'compound' or 'sequence'; for an action: its type)"
    return msg


def automation_errors(exc: ValidationError, document: Any = None) -> list[tuple[str, str]]:
    """(field, message) pairs of a refused automation; ``document`` (the input) makes locations exact."""
    located: dict[str, list[tuple[str, str]]] = {}
    for err in exc.errors(include_url=False):
        loc = _loc_text(err["loc"], document, err["type"])
        located.setdefault(loc, []).append((err["type"], _message(err)))
    out = []
    for loc, items in located.items():
        deeper = any(other.startswith(f"{loc}.") or other.startswith(f"{loc}[") for other in located if loc)
        if deeper and all(t.endswith("_type") for t, _ in items):
            continue  # a union alternative of the wrong shape; the deeper error says what is wrong
        messages = list(dict.fromkeys(m for _, m in items))
        if len(messages) > 1 and all(m.startswith("Input should be ") for m in messages):
            messages = [
                messages[0] + "".join(f" or {m.removeprefix('Input should be ')}" for m in messages[1:])
            ]
        out.extend((loc, m) for m in messages)
    return out


def _prefixed(where: str, errors: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    if not where:
        return list(errors)
    return [(f"{where}: {loc}" if loc else where, msg) for loc, msg in errors]


# --- documents ---------------------------------------------------------------------------------------


def apply_document(automation: Automation) -> dict[str, Any]:
    """The JSON document to send to the API: ``id`` and ``enabled`` only when the source set them."""
    exclude = {name for name in _UNSET_UNLESS_GIVEN if name not in automation.model_fields_set}
    return automation.model_dump(mode="json", exclude=exclude)


def parse_automation(document: Any, where: str = "") -> Automation:
    """Validate one automation document; ValidationFailed names ``where`` and each field."""
    if not isinstance(document, dict):
        raise ValidationFailed([(where, f"an automation must be an object, not {_kind(document)}")])
    try:
        return Automation.model_validate(document)
    except ValidationError as exc:
        raise ValidationFailed(_prefixed(where, automation_errors(exc, document))) from None


def _kind(value: Any) -> str:
    return {list: "a list", str: "a string", type(None): "null"}.get(type(value), type(value).__name__)


def _label(source: str, index: int | None, item: Any) -> str:
    name = item.get("name") if isinstance(item, dict) else getattr(item, "name", None)
    where = source if index is None else f"{source}[{index}]"
    return f"{where} {name!r}" if isinstance(name, str) and name else where


def _documents(data: Any, source: str) -> list[tuple[int | None, Any]]:
    if isinstance(data, dict) and set(data) == {"automations"}:
        data = data["automations"]
        if not isinstance(data, list):
            raise ValidationFailed([(f"{source}: automations", f"must be a list, not {_kind(data)}")])
    if isinstance(data, dict):
        return [(None, data)]
    if isinstance(data, list):
        return list(enumerate(data))
    raise ValidationFailed([(source, f"must hold an automation object or a list of them, not {_kind(data)}")])


def _validate_all(items: list[tuple[int | None, Any]], source: str) -> list[Automation]:
    out: list[Automation] = []
    errors: list[tuple[str, str]] = []
    for index, item in items:
        where = _label(source, index, item)
        try:
            if isinstance(item, Automation):
                out.append(Automation.model_validate(apply_document(item)))
            else:
                out.append(parse_automation(item, where))
        except ValidationFailed as exc:
            errors.extend(exc.errors)
        except ValidationError as exc:  # a Python-built automation mutated into something invalid
            errors.extend(_prefixed(where, automation_errors(exc, apply_document(item))))
    if errors:
        raise ValidationFailed(errors)
    return out


# --- formats -----------------------------------------------------------------------------------------


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotFound(f"no such file: {path}") from None
    except UnicodeDecodeError as exc:
        raise ValidationFailed([(str(path), f"is not UTF-8 text (byte {exc.start})")]) from None
    except OSError as exc:
        raise ValidationFailed([(str(path), f"cannot be read: {exc.strerror or exc}")]) from None


def _from_json(path: Path) -> Any:
    try:
        return json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise ValidationFailed(
            [(str(path), f"is not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}")]
        ) from None


def _from_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(_read_text(path))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValidationFailed([(str(path), f"is not valid YAML{at}: {problem}")]) from None


def _line_in(path: Path, exc: BaseException) -> str:
    """``path:line`` of the deepest frame of ``exc`` inside ``path`` (just ``path`` if none)."""
    if isinstance(exc, SyntaxError) and exc.lineno:
        return f"{path}:{exc.lineno}"
    target = str(path.resolve())
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == target:
            line = frame.lineno
    return f"{path}:{line}" if line else str(path)


def _from_python(path: Path) -> list[tuple[int | None, Any]]:
    if not path.is_file():
        raise NotFound(f"no such file: {path}")
    module_name = f"_tripwire_automations_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(module_name, path.resolve())
    if spec is None or spec.loader is None:  # pragma: no cover - a .py path always has a loader
        raise ValidationFailed([(str(path), "cannot be loaded as a Python module")])
    module = importlib.util.module_from_spec(spec)
    directory = str(path.resolve().parent)
    sys.modules[module_name] = module  # pydantic and dataclasses look the module up while it runs
    sys.path.insert(0, directory)
    try:
        spec.loader.exec_module(module)
    except ValidationError as exc:
        raise ValidationFailed(_prefixed(_line_in(path, exc), automation_errors(exc))) from None
    except Exception as exc:
        where = _line_in(path, exc)
        raise ValidationFailed([(where, f"{type(exc).__name__}: {exc}")]) from None
    finally:
        sys.modules.pop(module_name, None)
        if directory in sys.path:
            sys.path.remove(directory)
    if hasattr(module, "automations"):
        found = module.automations
        if not isinstance(found, list | tuple):
            raise ValidationFailed([(f"{path}: automations", f"must be a list, not {_kind(found)}")])
        bad = [
            (f"{path}: automations[{i}]", f"must be an Automation (or a dict), not {_kind(item)}")
            for i, item in enumerate(found)
            if not isinstance(item, Automation | dict)
        ]
        if bad:
            raise ValidationFailed(bad)
        return list(enumerate(found))
    seen: dict[int, Automation] = {}
    for value in vars(module).values():
        if isinstance(value, Automation):
            seen.setdefault(id(value), value)
    if not seen:
        raise ValidationFailed(
            [
                (
                    str(path),
                    "defines no automations: add a module-level `automations` list or Automation objects",
                )
            ]
        )
    return list(enumerate(seen.values()))


def load_automations(path: str | Path) -> list[Automation]:
    """Every automation in one file (.json, .yaml, .yml or .py), validated; errors list every problem."""
    file = Path(path)
    suffix = file.suffix.lower()
    source = str(file)
    if suffix == ".json":
        items = _documents(_from_json(file), source)
    elif suffix in (".yaml", ".yml"):
        items = _documents(_from_yaml(file), source)
    elif suffix == ".py":
        items = _from_python(file)
    else:
        raise ValidationFailed(
            [(source, f"has an unsupported type {suffix or '(no suffix)'!r}; use {', '.join(SUFFIXES)}")]
        )
    if not items:
        raise ValidationFailed([(source, "holds no automations")])
    return _validate_all(items, source)


def load_automation_files(paths: Sequence[str | Path]) -> list[Automation]:
    """The automations of several files, all validated first; a name defined twice is an error."""
    out: list[tuple[str, Automation]] = []
    errors: list[tuple[str, str]] = []
    for path in paths:
        try:
            out.extend((str(path), a) for a in load_automations(path))
        except ValidationFailed as exc:
            errors.extend(exc.errors)
    first: dict[str, str] = {}
    for source, automation in out:
        if automation.name in first:
            errors.append(
                (
                    f"{source} {automation.name!r}: name",
                    f"is also used by an automation in {first[automation.name]}; names must be unique",
                )
            )
        first.setdefault(automation.name, source)
    if errors:
        raise ValidationFailed(errors)
    return [a for _, a in out]
