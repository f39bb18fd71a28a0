"""BlockStore on SQLite and PostgreSQL: rows hold no plaintext, clear errors, rotation, no secret in logs."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text, update

from blocks import BlockStore, Cipher, DecryptionFailed, Email, RotationReport, parse_block
from tripwire.db import Database
from tripwire.errors import NotFound, ValidationFailed
from tripwire.tables import blocks

PASSWORD = "pw-SECRET-0123456789"
HOST = "smtp.hidden-host.example"
SLACK_URL = "https://hooks.slack.com/services/T0SECRET/B0SECRET/xoxSECRETTOKEN"
WRONG_KEY = "cannot be decrypted with the configured key(s): was TRIPWIRE_ENCRYPTION_KEY changed?"


@pytest.fixture
def cipher() -> Cipher:
    return Cipher.generate()


@pytest.fixture
def store(database: Database, cipher: Cipher) -> BlockStore:
    return BlockStore(database, cipher)


@pytest.fixture
def oncall_email() -> Email:
    block = parse_block(
        "email",
        {
            "host": HOST,
            "port": 465,
            "username": "alerts",
            "password": PASSWORD,
            "from_addr": "tripwire@example.com",
            "to": ["oncall@example.com"],
            "security": "ssl",
        },
    )
    assert isinstance(block, Email)
    return block


def sqlite_bytes(path: Path) -> bytes:
    """The database file and its write-ahead log, as stored on disk."""
    files = (path, path.with_name(path.name + "-wal"))
    return b"".join(f.read_bytes() for f in files if f.exists())


async def raw_rows(db: Database) -> list[dict[str, Any]]:
    async with db.read() as conn:
        return [dict(row._mapping) for row in await conn.execute(text("SELECT * FROM blocks"))]


async def test_a_block_round_trips(store: BlockStore, oncall_email: Email, cipher: Cipher) -> None:
    stored = await store.create("email/oncall", oncall_email)
    assert (stored.ref, stored.key_id, stored.created) == ("email/oncall", cipher.key_id, stored.updated)
    again = await store.get("email/oncall")
    assert again == oncall_email
    assert isinstance(again, Email) and again.password is not None
    assert again.password.get_secret_value() == PASSWORD
    assert again.apprise_urls() == oncall_email.apprise_urls()


async def test_the_row_holds_no_plaintext(database: Database, store: BlockStore, oncall_email: Email) -> None:
    await store.create("email/oncall", oncall_email)
    await store.create("slack-webhook/data-team", parse_block("slack-webhook", {"url": SLACK_URL}))
    rows = await raw_rows(database)
    assert {(r["type"], r["name"]) for r in rows} == {("email", "oncall"), ("slack-webhook", "data-team")}
    assert set(rows[0]) == {"type", "name", "ciphertext", "key_id", "created", "updated"}
    dump = repr(rows)
    for clear in (PASSWORD, HOST, "hidden-host", "oncall@example.com", "SECRET", "hooks.slack.com", "alerts"):
        assert clear not in dump
    if database.dialect == "sqlite":  # not in the database file (or its WAL) either
        raw = sqlite_bytes(Path(database.url.split("///", 1)[1]))
        assert PASSWORD.encode() not in raw and HOST.encode() not in raw


async def test_create_refuses_a_taken_reference(store: BlockStore, oncall_email: Email) -> None:
    await store.create("email/oncall", oncall_email)
    with pytest.raises(ValidationFailed) as info:
        await store.create("email/oncall", oncall_email)
    assert info.value.errors[0][0] == "name"
    assert "block 'email/oncall' already exists" in info.value.errors[0][1]
    assert "--update" in info.value.errors[0][1]


async def test_put_creates_then_replaces(store: BlockStore, oncall_email: Email) -> None:
    first = await store.put("email/oncall", oncall_email)
    changed = oncall_email.model_copy(update={"to": ["someone@example.com"]})
    second = await store.put("email/oncall", changed)
    assert second.created == first.created and second.updated >= first.updated
    assert await store.get("email/oncall") == changed
    assert [b.ref for b in await store.list()] == ["email/oncall"]


async def test_a_block_is_stored_under_its_own_type(store: BlockStore, oncall_email: Email) -> None:
    says = "a block of type email cannot be stored as 'secret/x': use 'email/...'"
    with pytest.raises(ValidationFailed, match=re.escape(says)):
        await store.put("secret/x", oncall_email)


async def test_list_and_delete(store: BlockStore, oncall_email: Email, cipher: Cipher) -> None:
    await store.create("secret/b", parse_block("secret", {"value": "x"}))
    await store.create("email/oncall", oncall_email)
    await store.create("secret/a", parse_block("secret", {"value": "y"}))
    listed = await store.list()
    assert [b.ref for b in listed] == ["email/oncall", "secret/a", "secret/b"]
    assert {b.key_id for b in listed} == {cipher.key_id}
    await store.delete("secret/a")
    assert [b.ref for b in await store.list()] == ["email/oncall", "secret/b"]
    with pytest.raises(NotFound, match=r"^no block 'secret/a'$"):
        await store.delete("secret/a")


async def test_missing_blocks_are_not_found(store: BlockStore) -> None:
    with pytest.raises(NotFound, match=r"^no block 'slack-webhook/data-team'$"):
        await store.get("slack-webhook/data-team")
    with pytest.raises(NotFound, match=r"no block 'teams/x': .*no block type 'teams'"):
        await store.get("teams/x")
    with pytest.raises(NotFound, match="not a block reference"):
        await store.get("just-a-name")


async def test_a_wrong_key_is_a_clear_error(
    database: Database, store: BlockStore, oncall_email: Email
) -> None:
    await store.create("email/oncall", oncall_email)
    other = BlockStore(database, Cipher.generate())
    with pytest.raises(DecryptionFailed) as info:
        await other.get("email/oncall")
    message = str(info.value)
    assert message.startswith(f"block 'email/oncall' {WRONG_KEY}")
    assert store.cipher.key_id in message and other.cipher.key_id in message
    assert PASSWORD not in message and HOST not in message
    assert [b.ref for b in await other.list()] == ["email/oncall"]  # listing needs no key


async def test_a_ciphertext_copied_to_another_row_is_refused(database: Database, store: BlockStore) -> None:
    await store.create("secret/mine", parse_block("secret", {"value": "mine-SECRET"}))
    await store.create("secret/theirs", parse_block("secret", {"value": "theirs-SECRET"}))
    async with database.begin() as conn:
        token = (await conn.execute(text("SELECT ciphertext FROM blocks WHERE name = 'theirs'"))).scalar_one()
        await conn.execute(update(blocks).where(blocks.c.name == "mine").values(ciphertext=token))
    with pytest.raises(DecryptionFailed, match="made for another block") as info:
        await store.get("secret/mine")
    assert "SECRET" not in str(info.value)


async def test_rotation_re_encrypts_every_block(database: Database, oncall_email: Email) -> None:
    old, new = Cipher.generate_key(), Cipher.generate_key()
    store = BlockStore(database, Cipher([old]))
    await store.create("email/oncall", oncall_email)
    await store.create("secret/token", parse_block("secret", {"value": "tok-SECRET"}))
    before = {r["name"]: r["ciphertext"] for r in await raw_rows(database)}

    report = await store.rotate(Cipher([new, old]))
    assert report == RotationReport(rotated=2, key_id=Cipher([new]).key_id)
    after = await raw_rows(database)
    assert all(r["key_id"] == report.key_id and r["ciphertext"] != before[r["name"]] for r in after)
    assert store.cipher.key_id == report.key_id

    only_new = BlockStore(database, Cipher([new]))  # the old key can now be dropped
    assert await only_new.get("email/oncall") == oncall_email
    with pytest.raises(DecryptionFailed, match=re.escape(WRONG_KEY)):
        await BlockStore(database, Cipher([old])).get("email/oncall")
    assert (await only_new.rotate(Cipher([new]))).rotated == 0  # already done: nothing to do


async def test_rotation_changes_nothing_when_a_block_cannot_be_read(database: Database) -> None:
    first, second, lost = (Cipher.generate_key() for _ in range(3))
    await BlockStore(database, Cipher([first])).create("secret/a", parse_block("secret", {"value": "a"}))
    await BlockStore(database, Cipher([lost])).create("secret/b", parse_block("secret", {"value": "b"}))
    before = await raw_rows(database)
    store = BlockStore(database, Cipher([first]))
    with pytest.raises(DecryptionFailed, match="block 'secret/b' cannot be decrypted"):
        await store.rotate(Cipher([second, first]))
    assert await raw_rows(database) == before
    assert store.cipher.key_id == Cipher([first]).key_id


async def test_logs_never_hold_a_secret(
    database: Database, store: BlockStore, oncall_email: Email, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await store.create("email/oncall", oncall_email)
    await store.put("email/oncall", oncall_email)
    await store.get("email/oncall")
    await store.rotate(Cipher.generate())
    await store.delete("email/oncall")
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "block email/oncall created" in logged
    assert PASSWORD not in logged and HOST not in logged
