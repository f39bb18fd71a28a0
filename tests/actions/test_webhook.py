"""Webhook signatures as a receiver verifies them, and endpoints redacted for reasons and logs."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from actions.webhook import redact_endpoint, sign, verify_signature

BODY = b'{"deployment": "etl"}'
NOW = 1_800_000_000


def test_the_signature_is_an_hmac_of_timestamp_dot_body() -> None:
    expected = hmac.new(b"s3cret", b"1800000000." + BODY, hashlib.sha256).hexdigest()
    assert sign("s3cret", NOW, BODY) == f"sha256={expected}"


@pytest.mark.parametrize(
    ("secret", "timestamp", "body", "now", "valid"),
    [
        pytest.param("s3cret", NOW, BODY, NOW + 10, True, id="valid"),
        pytest.param("other", NOW, BODY, NOW, False, id="wrong-secret"),
        pytest.param("s3cret", NOW, BODY + b" ", NOW, False, id="body-changed"),
        pytest.param("s3cret", NOW + 1, BODY, NOW, False, id="timestamp-changed"),
        pytest.param("s3cret", NOW, BODY, NOW + 301, False, id="too-old"),
        pytest.param("s3cret", NOW, BODY, NOW - 301, False, id="from-the-future"),
    ],
)
def test_verify_signature(secret: str, timestamp: int, body: bytes, now: int, valid: bool) -> None:
    signature = sign("s3cret", NOW, BODY)
    assert verify_signature(secret, str(timestamp), body, signature, now=now) is valid


def test_a_malformed_timestamp_does_not_verify() -> None:
    assert not verify_signature("s3cret", "yesterday", BODY, sign("s3cret", NOW, BODY), now=NOW)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hooks.example.com/services/T/B/token?key=abc", "https://hooks.example.com/…"),
        ("http://user:pw@127.0.0.1:8080/x", "http://127.0.0.1:8080/…"),
        ("http://[::1", "<invalid URL>"),
    ],
)
def test_endpoints_are_shown_without_path_query_or_credentials(url: str, shown: str) -> None:
    assert redact_endpoint(url) == shown
