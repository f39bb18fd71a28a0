"""call-webhook: send a templated payload to a webhook block's URL, signed when the block has a secret.

1. The body is the rendered ``payload``: a template whose output parses as JSON is sent as
   ``application/json`` exactly as rendered, other output as ``text/plain``; an object payload (string
   values are templates) is rendered leaf by leaf and serialised as JSON. Headers: the block's headers,
   the action's (templated) headers, the block's secret headers, and ``Idempotency-Key: <firing
   id>:<kind>:<index>`` — the same on every retry and redelivery, so a receiver can drop a repeat.
2. Signature, when the block has a ``signing_secret``::

       X-Tripwire-Timestamp: <unix seconds>
       X-Tripwire-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<raw body>")>

   A receiver recomputes the HMAC over the timestamp, a dot and the raw body bytes, compares in constant
   time, and refuses timestamps too far from its clock (replays): ``verify_signature`` does exactly that.
3. Outcomes: 2xx succeeded; 408, 425, 429 and 5xx, timeouts and connection errors are retried; any other
   answer (4xx, or a 3xx: redirects are not followed) is an ``ActionFailed`` at once. Reasons name the URL
   only as ``scheme://host/…`` (the path and query may hold tokens).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import urlsplit

import httpx

from actions.context import ActionContext
from actions.models import CallWebhookAction
from blocks.types import Webhook
from tripwire.errors import ActionFailed

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "WebhookFailed",
    "call_webhook",
    "redact_endpoint",
    "sign",
    "verify_signature",
]

SIGNATURE_HEADER = "X-Tripwire-Signature"
TIMESTAMP_HEADER = "X-Tripwire-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
RETRYABLE_STATUS = frozenset({408, 425, 429})


class WebhookFailed(Exception):
    """The receiver answered 5xx/408/429 or could not be reached (retryable, note 3)."""


def redact_endpoint(url: str) -> str:
    """``scheme://host[:port]/…``: the URL without path, query or credentials (they may hold tokens)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid URL>"
    return f"{parts.scheme}://{host}{port}/…"


def sign(secret: str | bytes, timestamp: int | str, body: bytes) -> str:
    """The signature header value: ``sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>``."""
    key = secret.encode() if isinstance(secret, str) else secret
    digest = hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(
    secret: str | bytes,
    timestamp: str | int,
    body: bytes,
    signature: str,
    tolerance_s: float = 300.0,
    *,
    now: float | None = None,
) -> bool:
    """Whether ``signature`` (the X-Tripwire-Signature value) signs ``body`` at ``timestamp`` with
    ``secret``, and ``timestamp`` is within ``tolerance_s`` of ``now`` (default: the clock)."""
    try:
        sent = int(str(timestamp))
    except ValueError:
        return False
    current = time.time() if now is None else now
    if abs(current - sent) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, sent, body), signature.strip())


async def _body(action: CallWebhookAction, ctx: ActionContext) -> tuple[bytes, str]:
    if isinstance(action.payload, str):
        text = await ctx.render("payload", action.payload)
        try:
            json.loads(text)
        except ValueError:
            return text.encode(), "text/plain; charset=utf-8"
        return text.encode(), "application/json"
    value = await ctx.render_json("payload", action.payload)
    return json.dumps(value, separators=(",", ":")).encode(), "application/json"


async def call_webhook(action: CallWebhookAction, ctx: ActionContext) -> dict[str, Any]:
    """Send one request; returns the answer's status code and the redacted endpoint."""
    body, content_type = await _body(action, ctx)
    extra = {name: await ctx.render(f"headers.{name}", value) for name, value in action.headers.items()}
    for name, value in extra.items():
        if "\r" in value or "\n" in value:
            raise ActionFailed(f"header {name} rendered to a value with a line break; headers are one line")
    block = await ctx.block(action.block)
    if not isinstance(block, Webhook):
        raise ActionFailed(f"block {action.block!r} is not a webhook block")
    url, method, endpoint = block.url, block.method, redact_endpoint(block.url)
    headers = {"Content-Type": content_type, **block.headers, **extra}
    headers.update({k: v.get_secret_value() for k, v in block.secret_headers.items()})
    headers[IDEMPOTENCY_HEADER] = ctx.key
    if block.signing_secret is not None:
        timestamp = int(ctx.clock().timestamp())
        headers[TIMESTAMP_HEADER] = str(timestamp)
        headers[SIGNATURE_HEADER] = sign(block.signing_secret.get_secret_value(), timestamp, body)
    try:
        response = await ctx.http.request(
            method, url, content=body, headers=headers, timeout=block.timeout_s, follow_redirects=False
        )
    except httpx.TimeoutException:
        raise WebhookFailed(f"{method} {endpoint}: no answer within {block.timeout_s:g} s") from None
    except httpx.HTTPError as exc:
        reason = ctx.scrub(str(exc).replace(url, endpoint)) or "no details"
        raise WebhookFailed(f"{method} {endpoint}: {type(exc).__name__}: {reason}") from None
    status = response.status_code
    answer = f"{method} {endpoint} answered {status} {response.reason_phrase}".rstrip()
    if 200 <= status < 300:
        return {"status_code": status, "endpoint": endpoint, "method": method}
    if status >= 500 or status in RETRYABLE_STATUS:
        raise WebhookFailed(answer)
    if 300 <= status < 400:
        raise ActionFailed(f"{answer} (redirects are not followed; point the block at the final URL)")
    raise ActionFailed(answer)
