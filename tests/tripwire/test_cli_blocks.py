"""``tripwire block ...`` against a real API server: secrets come from prompts, stdin or env, never argv."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from blocks import Cipher
from tests.tripwire.test_cli import ThreadedServer
from tripwire.cli.main import app
from tripwire.settings import Settings

pytestmark = pytest.mark.redis

SLACK_URL = "https://hooks.slack.com/services/T0SECRET/B0SECRET/xoxSECRETTOKEN"
PASSWORD = "pw-SECRET-0123456789"
TOKEN = "Bearer tok-SECRET"

Cli = Callable[..., Any]


def keyed(settings: Settings, keys: str) -> Settings:
    return settings.model_copy(update={"encryption_key": SecretStr(keys)})


@pytest.fixture
def key() -> str:
    return Cipher.generate_key()


@pytest.fixture
def api(settings: Settings, key: str) -> Iterator[ThreadedServer]:
    with ThreadedServer(keyed(settings, key)) as server:
        yield server


def runner_for(url: str) -> Cli:
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Any:
        environment = {"TRIPWIRE_API_URL": url, "COLUMNS": "250", **(env or {})}
        result = runner.invoke(app, list(args), input=input, env=environment)
        for secret in (SLACK_URL, PASSWORD, TOKEN, "xoxSECRETTOKEN"):  # never shown, whatever happened
            assert secret not in result.output
        return result

    return invoke


@pytest.fixture
def cli(api: ThreadedServer) -> Cli:
    return runner_for(api.url)


def ok(result: Any) -> str:
    assert result.exit_code == 0, result.output
    return str(result.stdout)


def refused(result: Any) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    return str(result.stderr)


def inspected(cli: Cli, ref: str) -> dict[str, Any]:
    return dict(json.loads(ok(cli("block", "inspect", ref, "--json"))))


def test_a_required_secret_is_prompted_for_with_hidden_input(cli: Cli, key: str) -> None:
    out = ok(cli("block", "create", "slack-webhook/data-team", input=f"{SLACK_URL}\n"))
    assert "url (secret, hidden):" in out
    assert f"created slack-webhook/data-team (encrypted with key {Cipher([key]).key_id})" in out
    item = inspected(cli, "slack-webhook/data-team")
    assert item["data"] == {"url": "********"}
    text = ok(cli("block", "inspect", "slack-webhook/data-team"))
    assert "url: '********'" in text


def test_a_secret_given_as_a_field_is_refused(cli: Cli) -> None:
    stderr = refused(cli("block", "create", "slack-webhook/data-team", "--field", f"url={SLACK_URL}"))
    assert "'url' is a secret field of slack-webhook" in stderr
    assert "--secret-stdin url" in stderr and "--secret-env url=VARNAME" in stderr
    stderr = refused(
        cli(
            "block",
            "create",
            "webhook/ci",
            "-f",
            "url=https://ci.example.com",
            "-f",
            f"secret_headers.A={TOKEN}",
        )
    )
    assert "secret_headers" in stderr
    assert ok(cli("block", "ls", "--json")) == "[]\n"


def test_secrets_from_stdin_and_from_the_environment(cli: Cli) -> None:
    ok(
        cli(
            "block", "create", "email/oncall",
            "--field", "host=smtp.example.com", "--field", "port=2525", "--field", "security=none",
            "--field", "username=alerts", "--field", "from_addr=tripwire@example.com",
            "--field", "to=a@example.com,b@example.com", "--field", "to=c@example.com",
            "--secret-stdin", "password",
            input=f"{PASSWORD}\n",
        )
    )  # fmt: skip
    data = inspected(cli, "email/oncall")["data"]
    assert data["password"] == "********"
    assert data["to"] == ["a@example.com", "b@example.com", "c@example.com"]
    assert data["port"] == 2525

    ok(
        cli(
            "block", "create", "webhook/ci",
            "-f", "url=https://ci.example.com/hook", "-f", "headers.X-Team=data", "-f", "method=PUT",
            "--secret-env", "secret_headers.Authorization=CI_TOKEN", "--secret", "signing_secret",
            input="sig-SECRET\n", env={"CI_TOKEN": TOKEN},
        )
    )  # fmt: skip
    data = inspected(cli, "webhook/ci")["data"]
    assert data["headers"] == {"X-Team": "data"}
    assert data["secret_headers"] == {"Authorization": "********"}
    assert data["signing_secret"] == "********"
    assert data["method"] == "PUT"

    ok(
        cli(
            "block", "create", "apprise/pager", "--secret-stdin", "urls",
            input="json://127.0.0.1:9/x?token=SECRET1\n\ndiscord://1/SECRET2\n",
        )
    )  # fmt: skip
    assert inspected(cli, "apprise/pager")["data"] == {"urls": ["********", "********"]}


def test_a_list_secret_is_prompted_item_by_item(cli: Cli) -> None:
    out = ok(cli("block", "create", "apprise/ops", input="json://127.0.0.1/a\ndiscord://1/tok\n\n"))
    assert "urls[0] (secret, hidden):" in out and "urls[2] (secret, hidden; empty to finish):" in out
    assert inspected(cli, "apprise/ops")["data"]["urls"] == ["********", "********"]


def test_duplicates_need_update(cli: Cli) -> None:
    ok(cli("block", "create", "secret/token", "--secret-env", "value=T", env={"T": "one-SECRET"}))
    stderr = refused(
        cli("block", "create", "secret/token", "--secret-env", "value=T", env={"T": "two-SECRET"})
    )
    assert "block 'secret/token' already exists" in stderr and "--update" in stderr
    out = ok(cli("block", "create", "secret/token", "--update", "--secret-env", "value=T", env={"T": "two"}))
    assert "saved secret/token" in out
    ok(cli("block", "create", "secret/other", "--update", input="three-SECRET\n"))  # --update creates too


@pytest.mark.parametrize(
    ("args", "says"),
    [
        pytest.param(
            ["secret/x", "--field", "colour=red"], "secret has no field 'colour'", id="unknown-field"
        ),
        pytest.param(["email/x", "--secret", "host"], "'host' is not secret", id="not-secret"),
        pytest.param(
            ["secret/x", "--secret-env", "value=NOPE_UNSET"], "NOPE_UNSET is not set", id="env-unset"
        ),
        pytest.param(["secret/x", "--field", "value"], "write --field NAME=VALUE", id="no-equals"),
        pytest.param(["teams/x"], "no block type 'teams'", id="unknown-type"),
        pytest.param(["slack-webhook"], "not a block reference", id="no-name"),
        pytest.param(
            ["email/x", "-f", "host=h", "-f", "from_addr=a@b.c", "-f", "to=c@d.e", "-f", "port=many"],
            "data.port:",
            id="local-validation",
        ),
    ],
)
def test_bad_options_are_refused_clearly(cli: Cli, args: list[str], says: str) -> None:
    assert says in refused(cli("block", "create", *args, input="\n"))


def test_ls_inspect_delete(cli: Cli, key: str) -> None:
    assert "no blocks" in ok(cli("block", "ls"))
    ok(cli("block", "create", "slack-webhook/data-team", input=f"{SLACK_URL}\n"))
    ok(cli("block", "create", "secret/token", input="tok-SECRET\n"))
    out = ok(cli("block", "ls"))
    assert "2 blocks" in out and "slack-webhook/data-team" in out and Cipher([key]).key_id in out
    listed = json.loads(ok(cli("block", "ls", "--json")))
    assert [b["ref"] for b in listed] == ["secret/token", "slack-webhook/data-team"]
    assert "deleted secret/token" in ok(cli("block", "delete", "secret/token"))
    assert "no block 'secret/token'" in refused(cli("block", "delete", "secret/token"))
    assert "no block 'secret/token'" in refused(cli("block", "inspect", "secret/token"))


def test_types_lists_fields_and_marks_secrets(cli: Cli) -> None:
    out = ok(cli("block", "types"))
    for slug in ("slack-webhook", "email", "apprise", "webhook", "secret"):
        assert slug in out
    assert "signing_secret" in out and "secret_headers" in out and "secret" in out
    schemas = {t["type"]: t["schema"] for t in json.loads(ok(cli("block", "types", "--json")))}
    assert schemas["email"]["properties"]["password"]["writeOnly"] is True


def test_generate_key_prints_a_usable_key() -> None:
    result = CliRunner().invoke(app, ["block", "generate-key"])
    assert result.exit_code == 0
    Cipher([result.stdout.strip()])  # a valid key


def test_rotate_key(settings: Settings) -> None:
    old, new = Cipher.generate_key(), Cipher.generate_key()
    with ThreadedServer(keyed(settings, old)) as server:
        cli = runner_for(server.url)
        ok(cli("block", "create", "slack-webhook/data-team", input=f"{SLACK_URL}\n"))
        ok(cli("block", "create", "secret/token", input="tok-SECRET\n"))
    with ThreadedServer(keyed(settings, f"{new},{old}")) as server:
        cli = runner_for(server.url)
        out = ok(cli("block", "rotate-key"))
        assert f"re-encrypted 2 block(s); every block now uses key {Cipher([new]).key_id}" in out
        assert {b["key_id"] for b in json.loads(ok(cli("block", "ls", "--json")))} == {Cipher([new]).key_id}
    with ThreadedServer(keyed(settings, new)) as server:
        assert inspected(runner_for(server.url), "secret/token")["data"] == {"value": "********"}
    with ThreadedServer(keyed(settings, old)) as server:
        stderr = refused(runner_for(server.url)("block", "inspect", "secret/token"))
        assert "block 'secret/token' cannot be decrypted with the configured key(s)" in stderr
        assert "was TRIPWIRE_ENCRYPTION_KEY changed?" in stderr
