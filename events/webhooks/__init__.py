"""Webhooks in (DESIGN §7): any HTTP caller becomes an event source.

``WebhookDefinition`` (model.py) says how a request to ``/hooks/{slug}`` is authenticated (auth.py) and
mapped to an event by a jsonpath template (template.py, intake.py); ``WebhookStore`` (store.py) keeps
definitions in SQL; ``WebhookCache`` and ``Ledger`` (one Redis round trip per request: rate limit, replay
claim, publish, counters) serve the intake route (tripwire/api/hooks.py); ``WebhookStats`` reads back what
it counted.
"""

from __future__ import annotations

# intake.py reuses tripwire/api's CloudEvents mapping, and tripwire/api serves the hooks: initialising the
# API package first lets either side be imported first.
import tripwire.api  # noqa: F401  isort: skip
from events.webhooks.auth import Unauthorized, check, sign_github, sign_hmac, sign_slack, sign_stripe
from events.webhooks.cache import WebhookCache
from events.webhooks.intake import HookRequest, request_document, to_events
from events.webhooks.ledger import Ledger
from events.webhooks.model import (
    BearerAuth,
    CompiledWebhook,
    GithubAuth,
    HmacAuth,
    NoAuth,
    RateLimit,
    SlackAuth,
    StripeAuth,
    WebhookDefinition,
    WebhookTemplate,
    new_slug,
    parse_definition,
)
from events.webhooks.ratelimit import RateLimited, RateLimiter
from events.webhooks.stats import Failure, WebhookCounts, WebhookStats
from events.webhooks.store import StoredWebhook, WebhookStore
from events.webhooks.template import TemplateError, compile_template, render

__all__ = [
    "BearerAuth",
    "CompiledWebhook",
    "Failure",
    "GithubAuth",
    "HmacAuth",
    "HookRequest",
    "Ledger",
    "NoAuth",
    "RateLimit",
    "RateLimited",
    "RateLimiter",
    "SlackAuth",
    "StoredWebhook",
    "StripeAuth",
    "TemplateError",
    "Unauthorized",
    "WebhookCache",
    "WebhookCounts",
    "WebhookDefinition",
    "WebhookStats",
    "WebhookStore",
    "WebhookTemplate",
    "check",
    "compile_template",
    "new_slug",
    "parse_definition",
    "render",
    "request_document",
    "sign_github",
    "sign_hmac",
    "sign_slack",
    "sign_stripe",
    "to_events",
]
