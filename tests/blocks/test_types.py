"""Block types: validation naming the field (never the value), masking, apprise URLs checked by apprise."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import apprise
import pytest
from pydantic import SecretStr, ValidationError

import blocks
from blocks import (
    BLOCK_TYPES,
    MASK,
    AppriseUrls,
    Block,
    Email,
    NotificationBlock,
    Secret,
    SlackWebhook,
    Webhook,
    block_type,
    parse_block,
    parse_ref,
)
from blocks.registry import check_ref
from tripwire.errors import NotFound, ValidationFailed

SLACK_URL = "https://hooks.slack.com/services/T0SECRET/B0SECRET/xoxSECRETTOKEN"
PASSWORD = "p@ss:w/rd?#&=%+ é-SECRET"


def errors_of(slug: str, data: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ValidationFailed) as info:
        parse_block(slug, data)
    exc = info.value
    assert exc.__context__ is None and exc.__cause__ is None  # the pydantic error (with inputs) is not kept
    return dict(exc.errors)


def test_every_type_is_registered_and_exported() -> None:
    assert set(BLOCK_TYPES) == {"slack-webhook", "email", "apprise", "webhook", "secret"}
    for slug, cls in BLOCK_TYPES.items():
        assert block_type(slug) is cls
        assert cls.block_type == slug
    with pytest.raises(NotFound, match="no block type 'teams'; the types are: apprise, email, secret"):
        block_type("teams")
    for name in blocks.__all__:
        assert hasattr(blocks, name)
    public = {n for n in dir(blocks) if not n.startswith("_") and n[0].isupper()}
    assert public <= set(blocks.__all__)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param(SLACK_URL, SLACK_URL, id="hooks-url"),
        pytest.param(f"  {SLACK_URL}\n", SLACK_URL, id="stripped"),
        pytest.param("slack://T000/B000/XXXX/#alerts", "slack://T000/B000/XXXX/#alerts", id="apprise-form"),
    ],
)
def test_slack_webhook(url: str, expected: str) -> None:
    block = parse_block("slack-webhook", {"url": url})
    assert isinstance(block, SlackWebhook) and isinstance(block, NotificationBlock)
    assert block.apprise_urls() == [expected]
    assert type(apprise.Apprise.instantiate(expected)).__name__ == "NotifySlack"
    assert block.redacted() == {"url": MASK}


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example.com/services/T0SECRET/B0SECRET/xoxSECRETTOKEN",
        "http://hooks.slack.com/services/T0SECRET/B0SECRET/xoxSECRETTOKEN",
        "https://hooks.slack.com/services/T0SECRET/xoxSECRETTOKEN",
        "slack://",
        "xoxSECRETTOKEN",
    ],
)
def test_a_bad_slack_url_is_refused_without_repeating_it(url: str) -> None:
    errors = errors_of("slack-webhook", {"url": url})
    assert list(errors) == ["data.url"]
    assert "Slack incoming-webhook URL" in errors["data.url"]
    assert "SECRET" not in str(errors)


def email(**fields: Any) -> Email:
    data = {"host": "smtp.example.com", "from_addr": "tripwire@example.com", "to": ["ops@example.com"]}
    block = parse_block("email", {**data, **fields})
    assert isinstance(block, Email)
    return block


def parsed(url: str) -> Any:
    """What apprise itself makes of a URL."""
    plugin = apprise.Apprise.instantiate(url)
    assert plugin is not None, "apprise refused the URL"
    return plugin


@pytest.mark.parametrize(
    ("security", "port", "scheme", "mode", "expected_port"),
    [
        pytest.param("starttls", None, "mailtos", "starttls", 587, id="starttls"),
        pytest.param("ssl", None, "mailtos", "ssl", 465, id="ssl-465-needs-mode-ssl"),
        pytest.param("ssl", 2465, "mailtos", "ssl", 2465, id="ssl-other-port"),
        pytest.param("starttls", 465, "mailtos", "starttls", 465, id="starttls-on-465"),
        pytest.param("none", None, "mailto", "insecure", 25, id="plain"),
        pytest.param("none", 2525, "mailto", "insecure", 2525, id="plain-port"),
    ],
)
def test_email_urls_follow_apprise_modes(
    security: str, port: int | None, scheme: str, mode: str, expected_port: int
) -> None:
    block = email(security=security, port=port, username="alerts@example.com", password=PASSWORD)
    [url] = block.apprise_urls()
    assert url.startswith(f"{scheme}://")
    assert ("mode=ssl" in url) == (security == "ssl")
    assert quote(PASSWORD, safe="") in url  # credentials are URL-quoted
    plugin = parsed(url)
    assert (plugin.smtp_host, plugin.port, plugin.secure_mode) == ("smtp.example.com", expected_port, mode)
    assert (plugin.user, plugin.password) == ("alerts@example.com", PASSWORD)
    assert plugin.from_addr[1] == "tripwire@example.com"
    assert [t[1] for t in plugin.targets] == ["ops@example.com"]


def test_email_without_login_several_recipients_and_no_verification() -> None:
    block = email(security="none", port=2525, to=["a@example.com", "b+tag@example.org"], verify_tls=False)
    [url] = block.apprise_urls()
    assert url.startswith("mailto://smtp.example.com:2525?")
    plugin = parsed(url)
    assert plugin.user is None
    assert [t[1] for t in plugin.targets] == ["a@example.com", "b+tag@example.org"]
    assert plugin.verify_certificate is False
    assert block.redacted()["password"] is None


def test_a_known_provider_domain_does_not_override_the_server() -> None:
    block = email(host="mail.internal", security="ssl", from_addr="me@gmail.com", username="me")
    plugin = parsed(block.apprise_urls()[0])
    assert (plugin.smtp_host, plugin.port, plugin.secure_mode) == ("mail.internal", 465, "ssl")


def test_email_errors_name_each_field() -> None:
    errors = errors_of(
        "email",
        {
            "host": "smtp://mail.example.com:25",
            "port": 70000,
            "password": PASSWORD,
            "from_addr": "nobody",
            "to": [],
            "security": "tls",
            "extra": PASSWORD,
        },
    )
    assert set(errors) == {
        "data.host", "data.port", "data.password", "data.from_addr", "data.to", "data.security", "data.extra",
    }  # fmt: skip
    assert "needs a username" in errors["data.password"]
    assert "SECRET" not in str(errors)


def test_apprise_urls_block() -> None:
    urls = ["json://127.0.0.1:9/hooks?:X-Token=tokSECRET", "discord://1234/tokSECRETtoken"]
    block = parse_block("apprise", {"urls": urls})
    assert isinstance(block, AppriseUrls)
    assert block.apprise_urls() == urls
    assert block.redacted() == {"urls": [MASK, MASK]}
    errors = errors_of("apprise", {"urls": [urls[0], "tokSECRET"]})
    assert list(errors) == ["data.urls.1"]
    assert "SECRET" not in str(errors)
    assert list(errors_of("apprise", {"urls": []})) == ["data.urls"]


def test_webhook_block() -> None:
    block = parse_block(
        "webhook",
        {
            "url": "https://ci.example.com/hook",
            "method": "PUT",
            "headers": {"X-Team": "data"},
            "secret_headers": {"Authorization": "Bearer tokSECRET"},
            "signing_secret": "sigSECRET",
        },
    )
    assert isinstance(block, Webhook) and not isinstance(block, NotificationBlock)
    assert not Webhook.is_notification()
    assert block.secret_headers["Authorization"].get_secret_value() == "Bearer tokSECRET"
    assert block.redacted() == {
        "url": "https://ci.example.com/hook",
        "method": "PUT",
        "headers": {"X-Team": "data"},
        "secret_headers": {"Authorization": MASK},
        "signing_secret": MASK,
        "timeout_s": 10.0,
    }
    minimal = parse_block("webhook", {"url": "http://127.0.0.1:8080/x", "signing_secret": ""})
    assert isinstance(minimal, Webhook) and minimal.signing_secret is None and minimal.method == "POST"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        pytest.param({"url": "ftp://x/y"}, "data.url", id="not-http"),
        pytest.param({"url": "https://"}, "data.url", id="no-host"),
        pytest.param({"url": "https://x", "method": "BREW"}, "data.method", id="method"),
        pytest.param({"url": "https://x", "headers": {"Bad Header": "v"}}, "data.headers", id="header-name"),
        pytest.param(
            {"url": "https://x", "headers": {"authorization": "a"}, "secret_headers": {"Authorization": "b"}},
            "data.secret_headers",
            id="header-twice",
        ),
        pytest.param({"url": "https://x", "timeout_s": 0}, "data.timeout_s", id="timeout"),
    ],
)
def test_webhook_errors(data: dict[str, Any], field: str) -> None:
    assert list(errors_of("webhook", data)) == [field]


def test_secret_block() -> None:
    block = parse_block("secret", {"value": "tokSECRET"})
    assert isinstance(block, Secret)
    assert block.value.get_secret_value() == "tokSECRET"
    assert "tokSECRET" not in repr(block) and "tokSECRET" not in str(block)
    assert list(errors_of("secret", {"value": ""})) == ["data.value"]
    assert list(errors_of("secret", {})) == ["data.value"]


@pytest.mark.parametrize(
    ("slug", "data", "field"),
    [
        pytest.param("secret", {"value": MASK}, "data.value", id="value"),
        pytest.param("apprise", {"urls": ["json://x/y", MASK]}, "data.urls.1", id="in-a-list"),
        pytest.param(
            "webhook", {"url": "https://x", "secret_headers": {"A": MASK}}, "data.secret_headers", id="map"
        ),
    ],
)
def test_the_mask_is_not_a_secret_value(slug: str, data: dict[str, Any], field: str) -> None:
    errors = errors_of(slug, data)
    assert "mask" in errors[field]


def test_restore_masked_puts_stored_secrets_back() -> None:
    stored = parse_block(
        "webhook",
        {"url": "https://a.example.com", "secret_headers": {"A": "one", "B": "two"}, "signing_secret": "sig"},
    )
    data = {
        "url": "https://b.example.com",
        "secret_headers": {"A": MASK, "B": "new", "C": MASK},
        "signing_secret": MASK,
    }
    restored = stored.restore_masked(data)
    assert restored == {
        "url": "https://b.example.com",
        "secret_headers": {"A": "one", "B": "new", "C": MASK},  # C has no stored value: refused below
        "signing_secret": "sig",
    }
    assert list(errors_of("webhook", restored)) == ["data.secret_headers"]
    assert data["signing_secret"] == MASK  # the input is not modified


def test_scrub_removes_secrets_and_their_parts() -> None:
    block = parse_block("slack-webhook", {"url": SLACK_URL})
    text = f"POST {SLACK_URL} failed; token xoxSECRETTOKEN; quoted {quote(SLACK_URL, safe='')}"
    assert "SECRET" not in block.scrub(text)
    assert block.secret_values() == [SLACK_URL]


def test_block_types_describe_their_fields_and_schema() -> None:
    specs = {s.name: s for s in Email.field_specs()}
    assert specs["password"].secret and not specs["password"].required
    assert specs["to"].shape == "list" and specs["to"].type == "list of strings"
    assert not specs["host"].secret and specs["host"].required
    assert AppriseUrls.secret_fields() == ["urls"]
    assert Webhook.secret_fields() == ["secret_headers", "signing_secret"]
    schema = Email.json_schema()
    assert schema["title"] == "email"
    assert schema["properties"]["password"]["writeOnly"] is True
    assert schema["properties"]["password"]["format"] == "password"
    assert "writeOnly" not in schema["properties"]["host"]
    urls = AppriseUrls.json_schema()["properties"]["urls"]
    assert urls["writeOnly"] is True and urls["items"]["format"] == "password"


def test_validation_errors_of_a_block_never_show_input() -> None:
    with pytest.raises(ValidationError) as info:
        Email(host="x y", password=SecretStr(PASSWORD), from_addr="a", to=["b"])  # type: ignore[arg-type]
    assert "SECRET" not in str(info.value)
    assert "x y" not in str(info.value)


def test_references() -> None:
    assert parse_ref("slack-webhook/data-team") == ("slack-webhook", "data-team")
    assert check_ref("email/on-call.v2") == "email/on-call.v2"
    for bad, says in [
        ("slack-webhook", "not a block reference"),
        ("teams/x", "no block type 'teams'"),
        ("secret/has space", "a block name is"),
        ("secret/a/b", "a block name is"),
        ("/x", "not a block reference"),
    ]:
        with pytest.raises(ValidationFailed, match=says):
            parse_ref(bad)


def test_block_is_the_base_of_every_type() -> None:
    assert all(issubclass(cls, Block) for cls in BLOCK_TYPES.values())
    with pytest.raises(ValidationError):
        SlackWebhook(url=SLACK_URL, channel="x")  # type: ignore[call-arg]  # extra="forbid"
