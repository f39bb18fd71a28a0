"""Per-webhook authentication of a request: none, bearer, HMAC-SHA256 (generic, GitHub, Stripe, Slack).

1. Every comparison is ``hmac.compare_digest``. Failures raise ``Unauthorized`` with a reason that names
   the header and what is wrong, never the expected value or the secret.
2. Stripe and Slack sign a timestamp with the body. A timestamp further than ``tolerance_s`` from now
   (either way) is refused. ``check`` returns a *replay key* for such requests: the caller claims it with
   ``SET NX`` for twice the tolerance just before publishing (webhooks/intake: ``claim_replay``), so the
   same signed request is accepted once. A request that fails later (422) does not consume its signature.
3. ``check`` is pure: the clock and the secret value are passed in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping

from events.webhooks.model import AuthSpec, BearerAuth, GithubAuth, HmacAuth, NoAuth, SlackAuth, StripeAuth
from tripwire.errors import TripwireError

__all__ = ["Unauthorized", "check", "sign_github", "sign_hmac", "sign_slack", "sign_stripe"]


class Unauthorized(TripwireError):
    """The request's credentials are missing or wrong: HTTP 401."""


def _digest(secret: str, message: bytes) -> bytes:
    return hmac.new(secret.encode(), message, hashlib.sha256).digest()


def sign_hmac(secret: str, body: bytes, *, prefix: str = "", encoding: str = "hex") -> str:
    """The header value a sender computes for generic HMAC auth."""
    digest = _digest(secret, body)
    text = digest.hex() if encoding == "hex" else base64.b64encode(digest).decode()
    return prefix + text


def sign_github(secret: str, body: bytes) -> str:
    """GitHub's ``X-Hub-Signature-256`` value."""
    return "sha256=" + _digest(secret, body).hex()


def sign_stripe(secret: str, body: bytes, timestamp: int) -> str:
    """Stripe's ``Stripe-Signature`` value."""
    return f"t={timestamp},v1=" + _digest(secret, f"{timestamp}.".encode() + body).hex()


def sign_slack(secret: str, body: bytes, timestamp: int) -> str:
    """Slack's ``X-Slack-Signature`` value (goes with ``X-Slack-Request-Timestamp: <timestamp>``)."""
    return "v0=" + _digest(secret, f"v0:{timestamp}:".encode() + body).hex()


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name.lower())
    if not value:
        raise Unauthorized(f"missing the {name} header")
    return value


def _equal(given: str, expected: str, header: str) -> None:
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise Unauthorized(f"the {header} signature does not match the body")


def _timestamp(text: str, header: str, tolerance_s: int, now_s: float) -> int:
    try:
        ts = int(text)
    except ValueError:
        raise Unauthorized(f"the {header} timestamp is not a number") from None
    if abs(now_s - ts) > tolerance_s:
        raise Unauthorized(f"the {header} timestamp is outside the tolerance of {tolerance_s} s")
    return ts


def _stripe(spec: StripeAuth, secret: str, headers: Mapping[str, str], body: bytes, now_s: float) -> str:
    name = "Stripe-Signature"
    value = _header(headers, name)
    items = [part.strip().partition("=") for part in value.split(",")]
    stamps = [v for k, _, v in items if k == "t"]
    signatures = [v for k, _, v in items if k == "v1"]
    if len(stamps) != 1 or not signatures:
        raise Unauthorized(f"the {name} header must hold one t=<timestamp> and at least one v1=<signature>")
    ts = _timestamp(stamps[0], name, spec.tolerance_s, now_s)
    expected = _digest(secret, f"{ts}.".encode() + body).hex()
    # every v1 is compared, so the time taken does not tell which one matched
    matched = [hmac.compare_digest(s.encode(), expected.encode()) for s in signatures]
    if not any(matched):
        raise Unauthorized(f"the {name} signature does not match the body")
    return expected


def _slack(spec: SlackAuth, secret: str, headers: Mapping[str, str], body: bytes, now_s: float) -> str:
    stamp = _header(headers, "X-Slack-Request-Timestamp")
    ts = _timestamp(stamp, "X-Slack-Request-Timestamp", spec.tolerance_s, now_s)
    given = _header(headers, "X-Slack-Signature")
    expected = sign_slack(secret, body, ts)
    _equal(given, expected, "X-Slack-Signature")
    return expected


def check(
    spec: AuthSpec, secret: str | None, headers: Mapping[str, str], body: bytes, now_s: float
) -> str | None:
    """Raise Unauthorized unless the request is authentic; return a replay key for timestamped schemes.

    ``headers`` have lower-case names; ``secret`` is the value of the spec's secret block.
    """
    if isinstance(spec, NoAuth):
        return None
    if secret is None:
        raise Unauthorized("the webhook has no secret")
    if isinstance(spec, BearerAuth):
        scheme, _, token = _header(headers, "Authorization").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("the Authorization header must be 'Bearer <token>'")
        if not hmac.compare_digest(token.strip().encode(), secret.encode()):
            raise Unauthorized("the bearer token is wrong")
        return None
    if isinstance(spec, GithubAuth):
        _equal(_header(headers, "X-Hub-Signature-256"), sign_github(secret, body), "X-Hub-Signature-256")
        return None
    if isinstance(spec, HmacAuth):
        expected = sign_hmac(secret, body, prefix=spec.prefix, encoding=spec.encoding)
        _equal(_header(headers, spec.header), expected, spec.header)
        return None
    if isinstance(spec, StripeAuth):
        return _stripe(spec, secret, headers, body, now_s)
    if isinstance(spec, SlackAuth):
        return _slack(spec, secret, headers, body, now_s)
    raise Unauthorized(f"unsupported auth type {spec.type!r}")  # pragma: no cover
