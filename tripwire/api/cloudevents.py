"""CloudEvents 1.0 → Tripwire events (DESIGN.md §3): a pure mapping, no I/O.

Mapping: ``type`` → ``event``; ``subject`` (else ``source``) → ``tripwire.resource.id``; ``time`` →
``occurred``; ``data`` → ``payload`` (a non-object wrapped as ``{"data": ...}``, ``data_base64`` kept as
``{"data_base64": ...}``); (``source``, ``id``) → the event id ``uuid5(NAMESPACE_URL, source + "\\n" + id)``,
so a re-sent CloudEvent gets the same Tripwire id (the deduplication key). ``source``, ``id``, the optional
``datacontenttype``/``dataschema`` and every extension attribute are kept as resource labels
``cloudevents.<name>``.

HTTP modes (https://github.com/cloudevents/spec, HTTP protocol binding): structured
(``application/cloudevents+json``, one JSON object), batch (``application/cloudevents-batch+json``, a JSON
array) and binary (``ce-*`` headers; the body is the data, typed by ``Content-Type``).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote
from uuid import NAMESPACE_URL, UUID, uuid5

from pydantic import ValidationError

from events.model import RESOURCE_ID, Event, event_errors
from tripwire.api.errors import MalformedRequest, parse_json
from tripwire.errors import EventRejected

__all__ = [
    "BATCH_CONTENT_TYPE",
    "LABEL_PREFIX",
    "SPECVERSION",
    "STRUCTURED_CONTENT_TYPE",
    "binary_to_cloudevent",
    "cloudevent_to_event",
    "cloudevents_to_events",
    "event_id_for",
    "is_binary",
    "is_json_media_type",
    "media_type",
]

SPECVERSION = "1.0"
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
LABEL_PREFIX = "cloudevents."

_REQUIRED = ("specversion", "id", "source", "type")
_OPTIONAL = ("datacontenttype", "dataschema", "subject", "time")
_DATA = ("data", "data_base64")
_NAME = re.compile(r"[a-z0-9]+\Z")
_MAX_TYPE = 1024
_HEADER_PREFIX = "ce-"


def event_id_for(source: str, ce_id: str) -> UUID:
    """The Tripwire event id of the CloudEvent (``source``, ``id``): the same for every re-send."""
    return uuid5(NAMESPACE_URL, f"{source}\n{ce_id}")


def media_type(content_type: str | None) -> str:
    """``application/json; charset=utf-8`` → ``application/json``."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def is_json_media_type(mt: str) -> bool:
    """True for ``application/json``, ``text/json`` and any ``*/*+json``."""
    return mt in ("application/json", "text/json") or mt.endswith("+json")


def is_binary(headers: Mapping[str, str]) -> bool:
    """True when the request carries a CloudEvent in binary mode (a ``ce-specversion`` header)."""
    return any(k.lower() == "ce-specversion" for k in headers)


def _parse_time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def _label_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _payload(ce: Mapping[str, Any], loc: str, errors: list[tuple[str, str]]) -> dict[str, Any]:
    data, data_b64 = ce.get("data"), ce.get("data_base64")
    if data is not None and data_b64 is not None:
        errors.append((f"{loc}data_base64", "give either data or data_base64, not both"))
        return {}
    if data_b64 is not None:
        if not isinstance(data_b64, str):
            errors.append((f"{loc}data_base64", "must be a base64 string"))
            return {}
        try:
            base64.b64decode(data_b64, validate=True)
        except (binascii.Error, ValueError):
            errors.append((f"{loc}data_base64", "is not valid base64"))
            return {}
        return {"data_base64": data_b64}
    if data is None:
        return {}
    return data if isinstance(data, dict) else {"data": data}


def cloudevent_to_event(ce: Any, *, loc: str = "") -> Event:
    """Map one CloudEvent (structured JSON form) to an Event; EventRejected lists every problem.

    ``loc`` prefixes error locations, e.g. ``events[2].`` or ``headers.ce-`` for binary mode.
    """
    if not isinstance(ce, Mapping):
        where = loc.removesuffix(".") or "body"
        raise EventRejected([(where, f"a CloudEvent must be a JSON object, not {type(ce).__name__}")])
    errors: list[tuple[str, str]] = []
    # A null attribute value means the attribute is absent (spec: "Type System").
    attrs = {k: v for k, v in ce.items() if v is not None}
    for name in _REQUIRED:
        value = attrs.get(name)
        if value is None:
            errors.append((f"{loc}{name}", "missing required CloudEvents attribute"))
        elif not isinstance(value, str) or not value:
            errors.append((f"{loc}{name}", "must be a non-empty string"))
    spec = attrs.get("specversion")
    if isinstance(spec, str) and spec and spec != SPECVERSION:
        errors.append(
            (f"{loc}specversion", f"unsupported CloudEvents version {spec!r}; send {SPECVERSION!r}")
        )
    ce_type = attrs.get("type")
    if isinstance(ce_type, str) and len(ce_type) > _MAX_TYPE:
        errors.append((f"{loc}type", f"is longer than {_MAX_TYPE} characters"))
    for name in _OPTIONAL:
        if name in attrs and not isinstance(attrs[name], str):
            errors.append((f"{loc}{name}", "must be a string"))
    occurred: datetime | None = None
    if isinstance(attrs.get("time"), str):
        try:
            occurred = _parse_time(attrs["time"])
        except ValueError:
            errors.append((f"{loc}time", f"{attrs['time']!r} is not an RFC 3339 timestamp"))
    labels: dict[str, str] = {}
    for name, value in attrs.items():
        if name in _REQUIRED or name in _OPTIONAL or name in _DATA:
            continue
        if not _NAME.match(name):
            errors.append((f"{loc}{name}", "not a valid CloudEvents attribute name (lower-case a-z, 0-9)"))
        elif isinstance(value, str | bool | int):
            labels[LABEL_PREFIX + name] = _label_value(value)
        else:
            errors.append(
                (f"{loc}{name}", "extension attribute values must be strings, integers or booleans")
            )
    payload = _payload(attrs, loc, errors)
    if errors:
        raise EventRejected(errors)

    source, ce_id = attrs["source"], attrs["id"]
    resource = {
        RESOURCE_ID: attrs.get("subject") or source,
        f"{LABEL_PREFIX}source": source,
        f"{LABEL_PREFIX}id": ce_id,
    }
    for name in ("datacontenttype", "dataschema"):
        if name in attrs:
            resource[LABEL_PREFIX + name] = attrs[name]
    resource.update(labels)
    fields: dict[str, Any] = {
        "id": event_id_for(source, ce_id),
        "event": ce_type,
        "resource": resource,
        "payload": payload,
    }
    if occurred is not None:
        fields["occurred"] = occurred
    try:
        return Event.model_validate(fields)
    except ValidationError as exc:  # only reachable through limits the checks above do not know
        raise EventRejected(event_errors(exc, loc)) from None


def cloudevents_to_events(items: Any, *, loc: str = "events") -> list[Event]:
    """Map a CloudEvents batch (a JSON array); errors of every member are reported together."""
    if not isinstance(items, list):
        raise EventRejected(
            [("body", f"a CloudEvents batch must be a JSON array, not {type(items).__name__}")]
        )
    out: list[Event] = []
    errors: list[tuple[str, str]] = []
    for i, item in enumerate(items):
        try:
            out.append(cloudevent_to_event(item, loc=f"{loc}[{i}]."))
        except EventRejected as exc:
            errors.extend(exc.errors)
    if errors:
        raise EventRejected(errors)
    return out


def binary_to_cloudevent(
    headers: Iterable[tuple[str, str]], content_type: str | None, body: bytes
) -> dict[str, Any]:
    """The structured form of a binary-mode CloudEvent: attributes from ``ce-*`` headers, data from the body.

    Header values are percent-decoded (HTTP binding §3.1.3.2). A JSON body (``Content-Type``
    ``application/json`` or ``*+json``, or none at all) becomes ``data``; ``text/*`` becomes a string;
    anything else is kept as ``data_base64``. A JSON body that does not parse, or a text body that is not
    UTF-8, raises MalformedRequest naming the position.
    """
    ce: dict[str, Any] = {}
    for key, value in headers:
        key = key.lower()
        if key.startswith(_HEADER_PREFIX) and len(key) > len(_HEADER_PREFIX):
            ce[key[len(_HEADER_PREFIX) :]] = unquote(value)
    mt = media_type(content_type)
    if content_type:
        ce["datacontenttype"] = content_type.strip()
    if body:
        if not mt or is_json_media_type(mt):
            ce["data"] = parse_json(body)
        elif mt.startswith("text/"):
            try:
                ce["data"] = body.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise MalformedRequest([("body", f"is not valid UTF-8 (byte {exc.start})")]) from None
        else:
            ce["data_base64"] = base64.b64encode(body).decode("ascii")
    return ce
