"""Webhook definitions (DESIGN §7): how a request to ``/hooks/{slug}`` is authenticated and mapped.

A definition is JSON/YAML::

    name: github
    template:
      event: "github.{$.headers.x-github-event}.{$.body.action}"
      resource:
        tripwire.resource.id: "github.repo.{$.body.repository.full_name}"
      payload: "$.body"
    auth: {type: github, secret: secret/github-hook}
    rate_limit: {requests: 600, per_s: 60}

The request a template sees is ``{"method", "headers" (lower-case names), "query", "body"}``; a JSON body
is parsed, a form body becomes an object, any other body a string. ``CompiledWebhook`` holds the template
compiled once (events/webhooks/template.py).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from blocks.registry import parse_ref
from events.webhooks.template import Compiled, TemplateError, compile_template
from tripwire.errors import ValidationFailed

__all__ = [
    "AuthSpec",
    "BearerAuth",
    "CompiledWebhook",
    "GithubAuth",
    "HmacAuth",
    "NoAuth",
    "RateLimit",
    "SlackAuth",
    "StripeAuth",
    "WebhookDefinition",
    "WebhookTemplate",
    "check_slug",
    "new_slug",
    "parse_definition",
]

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
SLUG = re.compile(r"[A-Za-z0-9_-]{8,128}\Z")


def new_slug() -> str:
    """A random, unguessable slug: 32 url-safe characters (192 bits)."""
    return secrets.token_urlsafe(24)


def check_slug(slug: str) -> str:
    """A chosen slug: 8-128 of ``A-Z a-z 0-9 _ -``."""
    if not SLUG.match(slug):
        raise ValueError("a slug is 8 to 128 characters of A-Z, a-z, 0-9, '_' and '-'")
    return slug


def _secret_ref(ref: str) -> str:
    try:
        slug, _name = parse_ref(ref)
    except ValidationFailed as exc:
        raise ValueError(exc.errors[0][1]) from None
    if slug != "secret":
        raise ValueError(
            f"{ref!r} must be a secret block: 'secret/<name>' (tripwire block create secret/...)"
        )
    return ref


SecretRef = Annotated[
    str, AfterValidator(_secret_ref), Field(description="the block holding the secret, 'secret/<name>'")
]


class _Auth(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NoAuth(_Auth):
    """Anyone who knows the slug may call."""

    type: Literal["none"] = "none"


class BearerAuth(_Auth):
    """``Authorization: Bearer <token>``; the token is the secret block's value."""

    type: Literal["bearer"] = "bearer"
    secret: SecretRef


class HmacAuth(_Auth):
    """HMAC-SHA256 of the raw body with the secret, in ``header`` as ``prefix`` + hex or base64."""

    type: Literal["hmac"] = "hmac"
    secret: SecretRef
    header: str = Field("X-Signature", min_length=1, description="the header carrying the signature")
    prefix: str = Field("", description="text before the signature, e.g. 'sha256='")
    encoding: Literal["hex", "base64"] = Field("hex", description="how the digest is written")


class GithubAuth(_Auth):
    """GitHub: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>``."""

    type: Literal["github"] = "github"
    secret: SecretRef


class StripeAuth(_Auth):
    """Stripe: ``Stripe-Signature: t=<unix>,v1=<hex HMAC of "t.body">``; tolerance and replay protection."""

    type: Literal["stripe"] = "stripe"
    secret: SecretRef
    tolerance_s: int = Field(300, ge=1, le=86400, description="largest accepted age (or skew) of t")


class SlackAuth(_Auth):
    """Slack: ``X-Slack-Signature: v0=<hex HMAC of "v0:ts:body">`` and ``X-Slack-Request-Timestamp``."""

    type: Literal["slack"] = "slack"
    secret: SecretRef
    tolerance_s: int = Field(300, ge=1, le=86400, description="largest accepted age (or skew) of ts")


AuthSpec = Annotated[
    NoAuth | BearerAuth | HmacAuth | GithubAuth | StripeAuth | SlackAuth, Field(discriminator="type")
]


class RateLimit(BaseModel):
    """At most ``requests`` per ``per_s`` seconds (a fixed window in Redis); more get 429."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    requests: int = Field(ge=1, description="requests allowed per window")
    per_s: int = Field(60, ge=1, le=86400, description="window length in seconds")


class WebhookTemplate(BaseModel):
    """How a request becomes an event: each field a literal, ``$.path``, or text with ``{$.path}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event: str = Field(min_length=1, description="the event name, e.g. 'github.{$.body.action}'")
    resource: dict[str, str] | str = Field(description="labels; 'tripwire.resource.id' required")
    related: list[dict[str, str]] | str = Field(default_factory=list, description="related resources")
    payload: Any = Field("$.body", description="the payload object; default: the whole body")
    occurred: str | None = Field(None, description="when it happened (RFC 3339); default: now")
    id: str | None = Field(
        None, description="the event id (the dedup key); a non-UUID value is hashed to one per webhook"
    )
    defaults: dict[str, Any] = Field(
        default_factory=dict, description="expression text -> value used when it matches nothing"
    )

    def compile(self) -> dict[str, Compiled]:
        """Compile every field; TemplateError names ``template.<field>`` and the column."""
        compiled: dict[str, Compiled] = {}
        errors: list[tuple[str, str]] = []
        fields: dict[str, tuple[Any, bool]] = {
            "event": (self.event, True),
            "resource": (self.resource, True),
            "related": (self.related, True),
            "payload": (self.payload, False),
            "occurred": (self.occurred, True),
            "id": (self.id, True),
        }
        for name, (value, as_text) in fields.items():
            if value is None:
                continue
            try:
                compiled[name] = compile_template(value, f"template.{name}", as_text=as_text)
            except TemplateError as exc:
                errors.extend(exc.errors)
        for expr in self.defaults:
            try:
                compile_template(expr, "template.defaults")
            except TemplateError as exc:
                errors.extend(exc.errors)
        if errors:
            raise TemplateError(errors)
        return compiled


class WebhookDefinition(BaseModel):
    """A webhook as written by its owner: name, slug, template, auth and limits."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="unique name: 1-128 of A-Z a-z 0-9 . _ -")
    slug: str | None = Field(None, description="the URL part /hooks/<slug>; default: random, unguessable")
    enabled: bool = Field(True, description="a disabled webhook answers 404, like an unknown slug")
    description: str = Field("", max_length=2000)
    template: WebhookTemplate | None = Field(
        None, description="request -> event; without one, only CloudEvents are accepted"
    )
    auth: AuthSpec = Field(default_factory=NoAuth, description="how callers prove who they are")
    rate_limit: RateLimit | None = Field(None, description="requests per window; none: unlimited")
    max_body_bytes: int = Field(1024 * 1024, ge=1024, le=32 * 1024 * 1024, description="larger bodies: 413")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME.match(value):
            raise ValueError("a webhook name is 1-128 of A-Z a-z 0-9 . _ - and starts with a letter or digit")
        return value

    @field_validator("slug")
    @classmethod
    def _slug(cls, value: str | None) -> str | None:
        return None if value is None else check_slug(value)


def parse_definition(document: Any) -> WebhookDefinition:
    """Validate a definition and compile its template; ValidationFailed names each field (and column)."""
    try:
        definition = WebhookDefinition.model_validate(document)
    except ValidationError as exc:
        raise ValidationFailed(
            [
                (".".join(str(p) for p in e["loc"]), e["msg"].removeprefix("Value error, "))
                for e in exc.errors(include_url=False)
            ]
        ) from None
    if definition.template is not None:
        definition.template.compile()
    return definition


@dataclass(frozen=True)
class CompiledWebhook:
    """A stored webhook ready for requests: its definition, id, slug and compiled template."""

    id: str
    slug: str
    version: int
    definition: WebhookDefinition
    template: dict[str, Compiled] | None

    @classmethod
    def of(cls, webhook_id: str, slug: str, version: int, definition: WebhookDefinition) -> CompiledWebhook:
        template = definition.template.compile() if definition.template is not None else None
        return cls(webhook_id, slug, version, definition, template)
