"""/api/blocks and /api/block-types over ASGI, with real Redis and SQLite: secrets go in, never out."""

from __future__ import annotations

import logging
import stat
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr
from sqlalchemy import text

from blocks import MASK, BlockStore, Cipher
from events.bus import RedisBus
from tests.tripwire.test_api_events import asgi_client, detail, make_app
from tripwire.db import Database
from tripwire.settings import Settings

pytestmark = pytest.mark.redis

SLACK_URL = "https://hooks.slack.com/services/T0SECRET/B0SECRET/xoxSECRETTOKEN"
PASSWORD = "pw-SECRET-0123456789"
HOST = "smtp.hidden-host.example"


def an_email(**fields: Any) -> dict[str, Any]:
    return {
        "host": HOST,
        "port": 2525,
        "username": "alerts",
        "password": PASSWORD,
        "from_addr": "tripwire@example.com",
        "to": ["oncall@example.com"],
        "security": "none",
        **fields,
    }


@pytest.fixture
def key() -> str:
    return Cipher.generate_key()


@pytest.fixture
def keyed(settings: Settings, key: str) -> Settings:
    return settings.model_copy(update={"encryption_key": SecretStr(key)})


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[Database]:
    database = Database(settings.effective_database_url)
    await database.start()
    yield database
    await database.stop()


@pytest.fixture
def bus(redis_client: aioredis.Redis, settings: Settings) -> RedisBus:
    return RedisBus(redis_client, settings.streams)


@pytest.fixture
async def client(
    keyed: Settings, bus: RedisBus, db: Database, redis_client: aioredis.Redis
) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(make_app(keyed, bus, db, redis_client)) as c:
        yield c


async def create(client: httpx.AsyncClient, slug: str, name: str, data: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/api/blocks", json={"type": slug, "name": name, "data": data})
    assert response.status_code == 201, response.text
    return dict(response.json())


async def test_create_read_list_delete(client: httpx.AsyncClient, key: str) -> None:
    item = await create(client, "slack-webhook", "data-team", {"url": SLACK_URL})
    assert item["ref"] == "slack-webhook/data-team"
    assert item["data"] == {"url": MASK}
    assert item["secret_fields"] == ["url"]
    assert item["key_id"] == Cipher([key]).key_id

    one = (await client.get("/api/blocks/slack-webhook/data-team")).json()
    assert one["data"] == {"url": MASK} and one["created"] == item["created"]

    await create(client, "email", "oncall", an_email())
    listed = (await client.get("/api/blocks")).json()["blocks"]
    assert [b["ref"] for b in listed] == ["email/oncall", "slack-webhook/data-team"]
    assert "data" not in listed[0]

    email = (await client.get("/api/blocks/email/oncall")).json()["data"]
    assert email == {**an_email(), "password": MASK, "verify_tls": True}

    assert (await client.delete("/api/blocks/slack-webhook/data-team")).status_code == 204
    missing = await client.get("/api/blocks/slack-webhook/data-team")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "no block 'slack-webhook/data-team'"}
    assert (await client.delete("/api/blocks/slack-webhook/data-team")).status_code == 404


@pytest.mark.parametrize(
    ("body", "loc", "says"),
    [
        pytest.param(
            {"type": "slack-webhook", "name": "x", "data": {"url": "https://evil.example.com/xoxSECRET"}},
            "data.url",
            "Slack incoming-webhook URL",
            id="bad-url",
        ),
        pytest.param(
            {
                "type": "email",
                "name": "x",
                "data": an_email(port="SECRET", password=PASSWORD, bogus=PASSWORD),
            },
            "data.port",
            "valid integer",
            id="bad-port",
        ),
        pytest.param({"type": "teams", "name": "x", "data": {}}, "type", "no block type 'teams'", id="type"),
        pytest.param({"name": "x", "data": {}}, "type", "is required", id="no-type"),
        pytest.param({"type": "secret", "name": "a b", "data": {}}, "name", "a block name is", id="name"),
        pytest.param(
            {"type": "secret", "name": "x", "data": "SECRET"}, "data", "must be an object", id="data"
        ),
        pytest.param(
            {"type": "secret", "name": "x", "data": {"value": MASK}}, "data.value", "mask", id="mask"
        ),
        pytest.param(
            {"type": "secret", "name": "x", "data": {"value": "SECRET"}, "value": "v"},
            "value",
            "unknown field",
            id="extra",
        ),
    ],
)
async def test_invalid_blocks_are_422_naming_the_field_without_the_value(
    client: httpx.AsyncClient, body: dict[str, Any], loc: str, says: str
) -> None:
    response = await client.post("/api/blocks", json=body)
    assert response.status_code == 422, response.text
    assert says in detail(response)[loc]
    assert "SECRET" not in response.text
    assert (await client.get("/api/blocks")).json()["blocks"] == []


async def test_a_taken_reference_is_refused(client: httpx.AsyncClient) -> None:
    await create(client, "secret", "token", {"value": "one-SECRET"})
    response = await client.post(
        "/api/blocks", json={"type": "secret", "name": "token", "data": {"value": "x"}}
    )
    assert response.status_code == 422
    assert "block 'secret/token' already exists" in detail(response)["name"]


async def test_put_creates_and_replaces_keeping_masked_secrets(
    client: httpx.AsyncClient, db: Database, keyed: Settings
) -> None:
    created = await client.put("/api/blocks/email/oncall", json={"data": an_email()})
    assert created.status_code == 200 and created.json()["data"]["password"] == MASK
    shown = created.json()["data"]
    shown["to"] = [
        "someone-else@example.com"
    ]  # edit what was shown (password is "********") and send it back
    replaced = await client.put(
        "/api/blocks/email/oncall", json={"type": "email", "name": "oncall", "data": shown}
    )
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["data"]["to"] == ["someone-else@example.com"]
    assert replaced.json()["created"] == created.json()["created"]
    store = BlockStore(db, Cipher.from_settings(keyed))
    block = await store.get("email/oncall")
    assert block.password.get_secret_value() == PASSWORD  # type: ignore[attr-defined]

    refused = await client.put("/api/blocks/secret/new", json={"data": {"value": MASK}})
    assert refused.status_code == 422 and "mask" in detail(refused)["data.value"]
    renamed = await client.put("/api/blocks/secret/new", json={"name": "other", "data": {"value": "v"}})
    assert renamed.status_code == 422 and "cannot be renamed" in detail(renamed)["name"]
    unknown = await client.put("/api/blocks/teams/x", json={"data": {}})
    assert unknown.status_code == 422 and "no block type 'teams'" in detail(unknown)["type"]


async def test_block_types_with_their_schemas(client: httpx.AsyncClient) -> None:
    types = {t["type"]: t for t in (await client.get("/api/block-types")).json()["types"]}
    assert set(types) == {"slack-webhook", "email", "apprise", "webhook", "secret"}
    assert types["slack-webhook"]["notification"] is True
    assert types["webhook"]["notification"] is False
    email = types["email"]
    secret_fields = {f["name"] for f in email["fields"] if f["secret"]}
    assert secret_fields == {"password"}
    password = email["schema"]["properties"]["password"]
    assert password["writeOnly"] is True and password["format"] == "password"
    assert types["webhook"]["schema"]["properties"]["signing_secret"]["writeOnly"] is True
    one = await client.get("/api/block-types/apprise")
    assert one.json()["schema"]["properties"]["urls"]["items"]["format"] == "password"
    assert (await client.get("/api/block-types/teams")).status_code == 404


async def test_rotate_key_over_the_api(
    settings: Settings, bus: RedisBus, db: Database, redis_client: aioredis.Redis, key: str
) -> None:
    old, new = key, Cipher.generate_key()

    def app_with(keys: str) -> Any:
        return make_app(
            settings.model_copy(update={"encryption_key": SecretStr(keys)}), bus, db, redis_client
        )

    async with asgi_client(app_with(old)) as client:
        await create(client, "secret", "token", {"value": "tok-SECRET"})
        await create(client, "slack-webhook", "ops", {"url": SLACK_URL})
    async with asgi_client(app_with(f"{new},{old}")) as client:
        report = (await client.post("/api/blocks/rotate-key")).json()
        assert report == {"rotated": 2, "key_id": Cipher([new]).key_id}
        assert {b["key_id"] for b in (await client.get("/api/blocks")).json()["blocks"]} == {report["key_id"]}
    async with asgi_client(app_with(new)) as client:
        assert (await client.get("/api/blocks/secret/token")).status_code == 200
    async with asgi_client(app_with(old)) as client:
        refused = await client.get("/api/blocks/secret/token")
        assert refused.status_code == 500
        assert refused.json()["detail"].startswith(
            "block 'secret/token' cannot be decrypted with the configured key(s): "
            "was TRIPWIRE_ENCRYPTION_KEY changed?"
        )
        assert "SECRET" not in refused.text
        # a block whose key is lost can still be replaced (when nothing masked must be kept) or deleted
        masked = await client.put("/api/blocks/secret/token", json={"data": {"value": MASK}})
        assert masked.status_code == 500 and "cannot be decrypted" in masked.text
        replaced = await client.put("/api/blocks/secret/token", json={"data": {"value": "new-SECRET"}})
        assert replaced.status_code == 200 and replaced.json()["key_id"] == Cipher([old]).key_id
        assert (await client.delete("/api/blocks/slack-webhook/ops")).status_code == 204


async def test_without_a_key_setting_a_0600_key_file_is_created(
    settings: Settings, bus: RedisBus, db: Database, redis_client: aioredis.Redis
) -> None:
    assert settings.encryption_key is None
    async with asgi_client(make_app(settings, bus, db, redis_client)) as client:
        item = await create(client, "secret", "token", {"value": "tok-SECRET"})
    path = settings.home / "encryption.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert item["key_id"] == Cipher.from_settings(settings).key_id
    async with db.read() as conn:
        stored = (await conn.execute(text("SELECT * FROM blocks"))).all()
    assert "SECRET" not in repr(stored)
    path.chmod(0o644)
    async with asgi_client(make_app(settings, bus, db, redis_client)) as client:
        refused = await client.get("/api/blocks/secret/token")
    assert refused.status_code == 500
    assert f"the key file {path} can be read or written by group/others" in refused.json()["detail"]


async def test_no_secret_in_any_answer_or_log(
    client: httpx.AsyncClient, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secrets = [SLACK_URL, PASSWORD, "Bearer tok-SECRET", "sig-SECRET", "json://127.0.0.1/x?token=SECRET"]
    answers = [
        await client.post(
            "/api/blocks", json={"type": "slack-webhook", "name": "s", "data": {"url": SLACK_URL}}
        ),
        await client.post("/api/blocks", json={"type": "email", "name": "e", "data": an_email()}),
        await client.post(
            "/api/blocks",
            json={
                "type": "webhook",
                "name": "w",
                "data": {
                    "url": "https://ci.example.com/hook",
                    "secret_headers": {"Authorization": "Bearer tok-SECRET"},
                    "signing_secret": "sig-SECRET",
                },
            },
        ),
        await client.put("/api/blocks/apprise/a", json={"data": {"urls": [secrets[4]]}}),
        await client.post("/api/blocks", json={"type": "email", "name": "bad", "data": an_email(host="a b")}),
        await client.post("/api/blocks", json={"type": "email", "name": "e", "data": an_email()}),  # taken
        await client.get("/api/blocks"),
        *[
            await client.get(f"/api/blocks/{ref}")
            for ref in ("slack-webhook/s", "email/e", "webhook/w", "apprise/a")
        ],
        await client.post("/api/blocks/rotate-key"),
    ]
    assert [a.status_code for a in answers] == [201, 201, 201, 200, 422, 422, 200, 200, 200, 200, 200, 200]
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "block email/e created" in logged and "re-encrypted 0 of 4 blocks" in logged
    async with db.read() as conn:
        rows = repr((await conn.execute(text("SELECT * FROM blocks"))).all())
    for secret in secrets:
        for answer in answers:
            assert secret not in answer.text
        assert secret not in logged
        assert secret not in rows
    assert "SECRET" not in rows and HOST not in rows
