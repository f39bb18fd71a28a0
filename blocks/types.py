"""The built-in block types: ``slack-webhook``, ``email``, ``apprise``, ``webhook``, ``secret``.

Notification blocks (Slack, email, apprise) implement ``apprise_urls()``: send-notification hands those
URLs to apprise, so every apprise service works. Email URLs follow apprise's modes (TECHNOTES §5):
``mailto://`` is plain SMTP, ``mailtos://`` is STARTTLS, and implicit TLS (usually port 465) needs
``mailtos://...?mode=ssl`` (``mailtos://host:465`` alone would still try STARTTLS). ``smtp=<host>`` is
always given, so apprise uses our server instead of guessing one from the sender's domain.
Validation messages never repeat the value they refuse: it may be a secret.
"""

from __future__ import annotations

import re
from typing import Annotated, ClassVar, Literal
from urllib.parse import quote, urlsplit

from pydantic import AfterValidator, Field, SecretStr, ValidationInfo, field_validator

from blocks.base import MASK, Block

__all__ = ["AppriseUrls", "Email", "HttpMethod", "Secret", "Security", "SlackWebhook", "Webhook"]

Security = Literal["starttls", "ssl", "none"]
HttpMethod = Literal["POST", "PUT", "PATCH", "GET", "DELETE"]

DEFAULT_PORTS: dict[str, int] = {"starttls": 587, "ssl": 465, "none": 25}
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
_ADDRESS = re.compile(r"^[^@\s,;<>\"]+@[^@\s,;<>\"]+$")
_HEADER = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_APPRISE_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://\S+$")


def _address(value: str) -> str:
    value = value.strip()
    if not _ADDRESS.match(value):
        raise ValueError("is not an email address (name@domain)")
    return value


Address = Annotated[str, AfterValidator(_address)]


def _apprise_url(value: SecretStr) -> SecretStr:
    text = value.get_secret_value().strip()
    if text == MASK:
        raise ValueError(
            f"{MASK!r} is the mask the API shows in place of a stored secret; send the real value"
        )
    if not _APPRISE_URL.match(text):
        raise ValueError("is not an apprise URL (scheme://..., e.g. json://host/path or discord://id/token)")
    return SecretStr(text)


AppriseUrl = Annotated[SecretStr, AfterValidator(_apprise_url)]


class SlackWebhook(Block):
    """A Slack incoming webhook."""

    block_type: ClassVar[str] = "slack-webhook"

    url: SecretStr = Field(
        description="the webhook URL (https://hooks.slack.com/services/T.../B.../...) or a slack:// URL"
    )

    @field_validator("url")
    @classmethod
    def _slack_url(cls, value: SecretStr) -> SecretStr:
        text = value.get_secret_value().strip()
        if text.startswith("slack://") and len(text) > len("slack://"):
            return SecretStr(text)
        try:
            parts = urlsplit(text)
        except ValueError:
            parts = None
        segments = parts.path.strip("/").split("/") if parts is not None else []
        if (
            parts is None
            or parts.scheme != "https"
            or parts.netloc != "hooks.slack.com"
            or len(segments) != 4
            or segments[0] != "services"
            or not all(segments)
        ):
            raise ValueError(
                "must be a Slack incoming-webhook URL (https://hooks.slack.com/services/T.../B.../...) "
                "or an apprise slack:// URL"
            )
        return SecretStr(text)

    def apprise_urls(self) -> list[str]:
        """The webhook URL (apprise reads Slack's own URL form)."""
        return [self.url.get_secret_value()]


class Email(Block):
    """An SMTP server and the addresses to mail."""

    block_type: ClassVar[str] = "email"

    host: str = Field(description="the SMTP server's host name or IP address")
    port: int | None = Field(
        None, ge=1, le=65535, description="SMTP port; default 587 for starttls, 465 for ssl, 25 for none"
    )
    username: str | None = Field(None, description="SMTP login, if the server needs one")
    password: SecretStr | None = Field(None, description="SMTP password (needs a username)")
    from_addr: Address = Field(description="the sender address")
    to: list[Address] = Field(min_length=1, description="recipient addresses")
    security: Security = Field(
        "starttls", description="starttls (usually port 587), ssl (implicit TLS, usually 465) or none"
    )
    verify_tls: bool = Field(True, description="verify the server's certificate (turn off for test servers)")

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        value = value.strip()
        if not _HOST.match(value):
            raise ValueError("must be a host name or IPv4 address, without scheme, port or path")
        return value

    @field_validator("username")
    @classmethod
    def _username(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("password")
    @classmethod
    def _password_needs_username(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is not None and not value.get_secret_value():
            return None
        if value is not None and not info.data.get("username"):
            raise ValueError("needs a username: set username too, or leave the password out")
        return value

    @property
    def effective_port(self) -> int:
        """The port, or the default of the security mode."""
        return self.port or DEFAULT_PORTS[self.security]

    def apprise_urls(self) -> list[str]:
        """A ``mailto://`` (none) or ``mailtos://`` URL (starttls; ssl adds ``mode=ssl``): see the module."""
        scheme = "mailto" if self.security == "none" else "mailtos"
        auth = ""
        if self.username:
            auth = quote(self.username, safe="")
            if self.password is not None:
                auth += ":" + quote(self.password.get_secret_value(), safe="")
            auth += "@"
        query = [("smtp", self.host), ("from", self.from_addr), ("to", ",".join(self.to))]
        if self.security == "ssl":
            query.append(("mode", "ssl"))
        if not self.verify_tls:
            query.append(("verify", "no"))
        text = "&".join(f"{key}={quote(value, safe='@,')}" for key, value in query)
        return [f"{scheme}://{auth}{self.host}:{self.effective_port}?{text}"]


class AppriseUrls(Block):
    """Any apprise notification URLs: Teams, Discord, PagerDuty, Telegram, generic JSON, ..."""

    block_type: ClassVar[str] = "apprise"

    urls: list[AppriseUrl] = Field(
        min_length=1, description="apprise URLs (they usually hold tokens, so all are secret)"
    )

    def apprise_urls(self) -> list[str]:
        """The URLs as given."""
        return [url.get_secret_value() for url in self.urls]


class Webhook(Block):
    """An HTTP endpoint that call-webhook sends requests to."""

    block_type: ClassVar[str] = "webhook"

    url: str = Field(description="the http:// or https:// URL to call")
    method: HttpMethod = Field("POST", description="the HTTP method")
    headers: dict[str, str] = Field(default_factory=dict, description="headers sent with every request")
    secret_headers: dict[str, SecretStr] = Field(
        default_factory=dict, description="headers whose values are secret (Authorization, API keys)"
    )
    signing_secret: SecretStr | None = Field(
        None, description="when set, requests carry an HMAC-SHA256 signature made with it"
    )
    timeout_s: float = Field(10.0, gt=0, le=300, description="seconds to wait for an answer")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        value = value.strip()
        try:
            parts = urlsplit(value)
            host = parts.hostname
        except ValueError:
            parts, host = None, None
        if parts is None or parts.scheme not in ("http", "https") or not host:
            raise ValueError("must be an http:// or https:// URL with a host")
        return value

    @field_validator("headers", "secret_headers")
    @classmethod
    def _header_names(cls, value: dict[str, object]) -> dict[str, object]:
        for name in value:
            if not _HEADER.match(name):
                raise ValueError(f"{name[:60]!r} is not a valid HTTP header name")
        return value

    @field_validator("secret_headers")
    @classmethod
    def _not_also_plain(cls, value: dict[str, SecretStr], info: ValidationInfo) -> dict[str, SecretStr]:
        plain = {name.lower() for name in info.data.get("headers", {})}
        both = sorted(name for name in value if name.lower() in plain)
        if both:
            raise ValueError(f"{', '.join(both)} also in headers: give each header once")
        return value

    @field_validator("signing_secret")
    @classmethod
    def _empty_is_unset(cls, value: SecretStr | None) -> SecretStr | None:
        return value if value is not None and value.get_secret_value() else None


class Secret(Block):
    """One secret value: an API token, a password."""

    block_type: ClassVar[str] = "secret"

    value: SecretStr = Field(min_length=1, description="the secret")
