"""A deployment's parameters checked against its flow's JSON schema, with errors naming each parameter.

A deployment stores the JSON schema of its flow's parameters (``Flow.parameter_schema()``, built by
pydantic from the type hints). Runs are checked against it before they are created, so a bad value is
refused where it is given — ``tripwire deployment run etl --param limit=abc`` — and not later, in a
worker's process.

1. Errors are ``(location, message)`` pairs: ``parameters.<name>`` (deeper: ``parameters.cfg.a``).
   A missing required parameter, an unknown one (the schema forbids additional properties) and a value
   of the wrong type each get a message that says what to do.
2. ``require=False`` checks only the values given: a deployment's defaults may leave required
   parameters to each run, unless it has schedules (their runs get the defaults alone).
3. Formats the ``jsonschema`` package can check (``date``, ``uuid``, ...) are checked; the flow still
   validates (and coerces) its parameters when it runs.
4. An empty schema accepts anything: a deployment made without its flow at hand.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from jsonschema import SchemaError
from jsonschema.exceptions import ValidationError as SchemaViolation
from jsonschema.exceptions import best_match
from jsonschema.validators import validator_for

__all__ = ["check_schema", "parameter_errors"]

_TYPE_WORDS = {
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "boolean": "true or false",
    "object": "an object",
    "array": "a list",
    "null": "null",
}


def check_schema(schema: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Problems of ``schema`` itself, at ``parameter_schema``: empty when it is a usable JSON schema."""
    if not schema:
        return []
    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        where = "".join(f"[{p!r}]" for p in exc.absolute_path)
        at = f" at {where}" if where else ""
        return [("parameter_schema", f"not a valid JSON schema{at}: {exc.message}")]
    if schema.get("type", "object") != "object":
        return [("parameter_schema", "must describe an object (the parameters by name)")]
    return []


def parameter_errors(
    schema: Mapping[str, Any],
    parameters: Mapping[str, Any],
    *,
    require: bool = True,
    flow_name: str | None = None,
    missing: str = "required parameter is missing; give it a value (--param NAME=VALUE)",
) -> list[tuple[str, str]]:
    """Where and why ``parameters`` break ``schema`` (module notes); empty when they fit."""
    if not schema:
        return []
    cls = validator_for(schema)
    validator = cls(schema, format_checker=cls.FORMAT_CHECKER)
    found = sorted(validator.iter_errors(dict(parameters)), key=lambda e: [str(p) for p in e.absolute_path])
    errors = [pair for err in found for pair in _described(err, require, flow_name, missing)]
    return list(dict.fromkeys(errors))


def _described(
    err: SchemaViolation, require: bool, flow_name: str | None, missing: str
) -> list[tuple[str, str]]:
    """One violation as (location, message) pairs (note 1)."""
    path = [str(p) for p in err.absolute_path]
    if err.validator == "required":
        if not require:
            return []
        message = missing if not path else "required field is missing"
        return [(_loc([*path, name]), message) for name in _missing(err)]
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        known = list((err.schema.get("properties") or {}).keys())
        owner = (flow_name or "the flow") if not path else ".".join(path)
        takes = f"{owner} takes {', '.join(known) or 'no parameters'}"
        return [(_loc([*path, name]), f"unknown parameter; {takes}") for name in _unexpected(err)]
    if err.validator in ("anyOf", "oneOf") and err.context:
        # The alternative of the right kind failed deeper (a field of an object): report that.
        deeper = [e for e in err.context if e.relative_path or e.validator not in ("type", "enum", "const")]
        if deeper:
            return _described(best_match(deeper), require, flow_name, missing)
    return [(_loc(path), _message(err))]


def _loc(path: Iterable[str]) -> str:
    return ".".join(["parameters", *path])


def _missing(err: SchemaViolation) -> list[str]:
    instance = err.instance if isinstance(err.instance, dict) else {}
    return [str(name) for name in err.validator_value if name not in instance]


def _unexpected(err: SchemaViolation) -> list[str]:
    known = set((err.schema.get("properties") or {}).keys())
    patterns = err.schema.get("patternProperties") or {}
    if patterns:  # rare in flow schemas: fall back on jsonschema's wording
        return [str(err.message)]
    return [str(name) for name in err.instance if name not in known]


def _shown(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _expected(schema: Mapping[str, Any]) -> list[str] | None:
    """What a (sub)schema accepts in words, when it says so with ``type``/``enum``/``const``."""
    if "enum" in schema:
        return [_shown(v) for v in schema["enum"]]
    if "const" in schema:
        return [_shown(schema["const"])]
    kinds = schema.get("type")
    if isinstance(kinds, str):
        kinds = [kinds]
    if isinstance(kinds, list):
        return [_TYPE_WORDS.get(k, k) for k in kinds]
    if "$ref" in schema:
        return ["an object"]
    return None


def _message(err: SchemaViolation) -> str:
    got = f"got {_shown(err.instance)}"
    if err.validator in ("type", "enum", "const"):
        words = _expected(err.schema) or []
        return f"expected {' or '.join(words)}, {got}" if words else str(err.message)
    if err.validator in ("anyOf", "oneOf"):
        options = [_expected(s) for s in err.validator_value if isinstance(s, dict)]
        if options and all(options):
            words = list(dict.fromkeys(w for option in options for w in option or []))
            return f"expected {' or '.join(words)}, {got}"
    if err.validator == "format":
        return f"expected a {err.validator_value} ({got})"
    return str(err.message)
