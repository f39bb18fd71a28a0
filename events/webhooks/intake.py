"""Request -> events, the pure mapping: parse the body by content type, then CloudEvents or the template.

1. CloudEvents (structured ``application/cloudevents+json``, batch ``application/cloudevents-batch+json``,
   or binary with ``ce-*`` headers) map without a template (tripwire/api/cloudevents.py).
2. Otherwise the body is parsed by ``Content-Type``: JSON (``application/json``, ``*+json``; also any body
   that starts like JSON when no type is given), form (``application/x-www-form-urlencoded``: an object,
   a repeated key becomes a list), anything else text (or ``null`` when empty). Malformed JSON is a
   MalformedRequest (400). The template sees ``{"method", "headers", "query", "body"}``.
3. The template's ``id`` becomes the event id: a UUID as is, anything else (a delivery id such as
   ``evt_123``) hashed per webhook, so a re-delivered request gets the same id (the dedup key).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl
from uuid import NAMESPACE_URL, UUID, uuid5

from pydantic import ValidationError

from events.model import Event, event_errors
from events.webhooks.model import CompiledWebhook
from events.webhooks.template import TemplateError, render
from tripwire.api.cloudevents import (
    BATCH_CONTENT_TYPE,
    STRUCTURED_CONTENT_TYPE,
    binary_to_cloudevent,
    cloudevent_to_event,
    cloudevents_to_events,
    is_binary,
    is_json_media_type,
    media_type,
)
from tripwire.api.errors import MalformedRequest, parse_json
from tripwire.errors import EventRejected

__all__ = ["HookRequest", "event_id_of", "request_document", "to_events"]

FORM = "application/x-www-form-urlencoded"


@dataclass(frozen=True)
class HookRequest:
    """What the mapping needs of an HTTP request: method, lower-cased headers, query and raw body."""

    method: str
    headers: Mapping[str, str]
    body: bytes = b""
    query: Mapping[str, Any] = field(default_factory=dict)


def _form(raw: bytes) -> dict[str, Any]:
    try:
        pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError as exc:
        raise MalformedRequest([("body", f"is not valid UTF-8 (byte {exc.start})")]) from None
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            out[key] = [*out[key], value] if isinstance(out[key], list) else [out[key], value]
        else:
            out[key] = value
    return out


def parse_body(raw: bytes, content_type: str | None) -> Any:
    """The body as the template sees it (note 2)."""
    mt = media_type(content_type)
    if not raw:
        return None
    if is_json_media_type(mt) or (not mt and raw.lstrip()[:1] in (b"{", b"[")):
        return parse_json(raw)
    if mt == FORM:
        return _form(raw)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedRequest([("body", f"is not valid UTF-8 (byte {exc.start})")]) from None


def request_document(request: HookRequest) -> dict[str, Any]:
    """``{"method", "headers", "query", "body"}``: what template expressions address."""
    return {
        "method": request.method,
        "headers": dict(request.headers),
        "query": dict(request.query),
        "body": parse_body(request.body, request.headers.get("content-type")),
    }


def event_id_of(webhook_id: str, value: Any) -> UUID:
    """The event id for a template's ``id`` value (note 3)."""
    text = str(value)
    try:
        return UUID(text)
    except ValueError:
        return uuid5(NAMESPACE_URL, f"tripwire-webhook:{webhook_id}\n{text}")


def _cloudevents(request: HookRequest) -> list[Event] | None:
    content_type = request.headers.get("content-type")
    mt = media_type(content_type)
    if mt == BATCH_CONTENT_TYPE:
        return cloudevents_to_events(parse_json(request.body))
    if mt == STRUCTURED_CONTENT_TYPE:
        return [cloudevent_to_event(parse_json(request.body), loc="body.")]
    if is_binary(request.headers):
        ce = binary_to_cloudevent(request.headers.items(), content_type, request.body)
        return [cloudevent_to_event(ce, loc="headers.ce-")]
    return None


def from_template(webhook: CompiledWebhook, document: dict[str, Any]) -> Event:
    """Apply the webhook's template to a request document; TemplateError / EventRejected (422)."""
    assert webhook.template is not None
    definition = webhook.definition.template
    defaults = definition.defaults if definition is not None else {}
    fields = render(webhook.template, document, loc="template", defaults=defaults)
    if "payload" in fields and not isinstance(fields["payload"], dict):
        fields["payload"] = {"value": fields["payload"]}  # a list, text or number body still fits
    if "id" in fields:
        fields["id"] = event_id_of(webhook.id, fields["id"])
    for key in ("occurred", "id"):
        if fields.get(key) == "":
            fields.pop(key)
    try:
        return Event.model_validate(fields)
    except ValidationError as exc:
        raise TemplateError(
            [
                (f"template.{loc}", f"the template gave an invalid event: {msg}")
                for loc, msg in event_errors(exc)
            ]
        ) from None


def to_events(webhook: CompiledWebhook, request: HookRequest) -> list[Event]:
    """The events a request to ``webhook`` becomes (notes 1-3); raises MalformedRequest (400),
    TemplateError or EventRejected (422)."""
    mapped = _cloudevents(request)
    if mapped is not None:
        return mapped
    if webhook.template is None:
        raise EventRejected(
            [("body", "this webhook has no template, so it accepts only CloudEvents (ce-* headers or "
              "application/cloudevents+json)")]
        )  # fmt: skip
    return [from_template(webhook, request_document(request))]
