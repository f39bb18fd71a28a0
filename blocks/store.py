"""BlockStore: blocks in SQL, each whole document encrypted (blocks/crypto.py), addressed as ``"type/name"``.

1. A row holds the type, the name, the ciphertext, the id of the key that encrypted it and the
   created/updated times: no value of the document is stored in the clear, not even plain fields such as
   a webhook's host. The ciphertext is bound to its row (context ``block:<type>/<name>``), so a copy on
   another row is refused.
2. ``list()`` reads only the clear columns: listing works (and shows each block's key id) even when some
   block cannot be decrypted. ``get()`` decrypts and validates one block; failures say which block and why,
   never with a secret.
3. Writes run in one transaction (``BEGIN IMMEDIATE`` on SQLite, ``SELECT ... FOR UPDATE`` on PostgreSQL);
   a create racing another on the same reference loses with a clear error, a ``put`` retries as an update.
4. ``rotate(new_cipher)`` re-encrypts every block with ``new_cipher``'s primary key in one transaction,
   reading each with ``new_cipher`` or the store's current cipher; if any block cannot be read, nothing
   changes. Afterwards the store uses ``new_cipher``.
"""

from __future__ import annotations

import builtins
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from blocks.base import Block, validation_errors
from blocks.crypto import ENV_VAR, Cipher, DecryptionFailed
from blocks.registry import BLOCK_TYPES, parse_ref
from tripwire.db import Database
from tripwire.errors import ConfigurationError, NotFound, ValidationFailed
from tripwire.tables import blocks

__all__ = ["BlockInfo", "BlockStore", "RotationReport", "StoredBlock", "context_of"]

log = logging.getLogger(__name__)

_Mode = Literal["create", "put"]


def context_of(slug: str, name: str) -> str:
    """The encryption context binding a ciphertext to its row (note 1)."""
    return f"block:{slug}/{name}"


class BlockInfo(BaseModel):
    """A stored block's clear columns: what ``ls`` shows, without decrypting anything."""

    type: str = Field(description="the block type's slug")
    name: str
    key_id: str = Field(description="id of the key that encrypted it (blocks/crypto.py note 3)")
    created: datetime
    updated: datetime

    @property
    def ref(self) -> str:
        return f"{self.type}/{self.name}"


class StoredBlock(BlockInfo):
    """A decrypted block with its bookkeeping."""

    block: Block


class RotationReport(BaseModel):
    """What ``rotate`` did."""

    rotated: int = Field(description="blocks re-encrypted with the new primary key")
    key_id: str = Field(description="the id of the key every block is now encrypted with")


def _lookup(ref: str) -> tuple[str, str]:
    """``parse_ref`` for reads and deletes: a reference that cannot exist is simply not found."""
    try:
        return parse_ref(ref)
    except ValidationFailed as exc:
        raise NotFound(f"no block {ref[:200]!r}: {exc.errors[0][1]}") from None


class BlockStore:
    """Create, read, replace, list, delete and re-encrypt blocks (notes 1-4)."""

    def __init__(
        self, db: Database, cipher: Cipher, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self._db = db
        self._cipher = cipher
        self._clock = clock

    @property
    def cipher(self) -> Cipher:
        """The cipher writes use (after ``rotate``, the new one)."""
        return self._cipher

    # --- encryption --------------------------------------------------------------------------------------

    def _seal(self, cipher: Cipher, slug: str, name: str, document: dict[str, Any]) -> str:
        plaintext = json.dumps(document, separators=(",", ":"), sort_keys=True).encode()
        return cipher.encrypt(plaintext, context=context_of(slug, name))

    def _plaintext(self, row: Any, *ciphers: Cipher) -> bytes:
        ref, context = f"{row.type}/{row.name}", context_of(row.type, row.name)
        for cipher in ciphers:
            try:
                return cipher.decrypt(row.ciphertext, context=context)
            except DecryptionFailed:
                continue
        if any(cipher.can_decrypt(row.ciphertext) for cipher in ciphers):
            raise DecryptionFailed(
                f"block '{ref}' is refused: its ciphertext was made for another block "
                "(copied between rows?); "
                f"create it again with `tripwire block create {ref} --update`"
            )
        configured = ", ".join(dict.fromkeys(k for c in ciphers for k in c.key_ids))
        raise DecryptionFailed(
            f"block '{ref}' cannot be decrypted with the configured key(s): was {ENV_VAR} changed? "
            f"(it was encrypted with key {row.key_id}; the configured keys are {configured}, "
            f"from {ciphers[0].source})"
        )

    def _open(self, row: Any) -> StoredBlock:
        ref = f"{row.type}/{row.name}"
        cls = BLOCK_TYPES.get(row.type)
        if cls is None:
            raise ConfigurationError(f"block '{ref}' has a type this version of Tripwire does not know")
        plaintext = self._plaintext(row, self._cipher)
        try:
            block = cls.model_validate(json.loads(plaintext))
        except (ValueError, ValidationError) as exc:
            problems = validation_errors(exc) if isinstance(exc, ValidationError) else [("", "not JSON")]
            reason = "; ".join(f"{loc}: {msg}" if loc else msg for loc, msg in problems)
        else:
            return StoredBlock(
                type=row.type,
                name=row.name,
                key_id=row.key_id,
                created=row.created,
                updated=row.updated,
                block=block,
            )
        raise ConfigurationError(
            f"block '{ref}' is stored but no longer valid ({reason}): "
            f"create it again with `tripwire block create {ref} --update`"
        )

    # --- reads ---------------------------------------------------------------------------------------------

    async def get(self, ref: str) -> Block:
        """The block ``"type/name"``, decrypted; NotFound ``no block 'type/name'`` if there is none."""
        return (await self.get_stored(ref)).block

    async def get_stored(self, ref: str) -> StoredBlock:
        """The block with its key id and times; NotFound if there is none."""
        slug, name = _lookup(ref)
        async with self._db.read() as conn:
            row = (
                await conn.execute(select(blocks).where(blocks.c.type == slug, blocks.c.name == name))
            ).first()
        if row is None:
            raise NotFound(f"no block '{slug}/{name}'")
        return self._open(row)

    async def list(self) -> builtins.list[BlockInfo]:
        """Every block's clear columns, by type and name (nothing is decrypted: note 2)."""
        columns = (blocks.c.type, blocks.c.name, blocks.c.key_id, blocks.c.created, blocks.c.updated)
        async with self._db.read() as conn:
            rows = (await conn.execute(select(*columns).order_by(blocks.c.type, blocks.c.name))).all()
        return [
            BlockInfo(type=r.type, name=r.name, key_id=r.key_id, created=r.created, updated=r.updated)
            for r in rows
        ]

    # --- writes --------------------------------------------------------------------------------------------

    async def create(self, ref: str, block: Block) -> StoredBlock:
        """Store a new block; ValidationFailed on ``name`` if the reference is taken."""
        return await self._write(ref, block, "create")

    async def put(self, ref: str, block: Block) -> StoredBlock:
        """Store a block, replacing the one with this reference if any."""
        return await self._write(ref, block, "put")

    async def _write(self, ref: str, block: Block, mode: _Mode) -> StoredBlock:
        slug, name = parse_ref(ref)
        if block.block_type != slug:
            kind = block.block_type
            problem = f"a block of type {kind} cannot be stored as '{ref}': use '{kind}/...'"
            raise ValidationFailed([("type", problem)])
        cipher = self._cipher
        token = self._seal(cipher, slug, name, block.reveal())
        for attempt in range(2):
            try:
                async with self._db.begin() as conn:
                    stored = await self._upsert(conn, slug, name, block, (token, cipher.key_id), mode)
                break
            except IntegrityError:
                if mode == "create" or attempt == 1:
                    raise _taken(ref) from None
                # another writer created it meanwhile (note 3): the second attempt updates it
        log.info("block %s %s", ref, "created" if stored.created == stored.updated else "replaced",
                 extra={"block": ref, "key_id": stored.key_id})  # fmt: skip
        return stored

    async def _upsert(
        self,
        conn: AsyncConnection,
        slug: str,
        name: str,
        block: Block,
        sealed: tuple[str, str],
        mode: _Mode,
    ) -> StoredBlock:
        token, key_id = sealed
        where = (blocks.c.type == slug, blocks.c.name == name)
        row = (await conn.execute(select(blocks.c.created).where(*where).with_for_update())).first()
        now = self._clock()
        if row is None:
            values = {"ciphertext": token, "key_id": key_id, "created": now, "updated": now}
            await conn.execute(blocks.insert().values(type=slug, name=name, **values))
            created = now
        elif mode == "create":
            raise _taken(f"{slug}/{name}")
        else:
            await conn.execute(
                update(blocks).where(*where).values(ciphertext=token, key_id=key_id, updated=now)
            )
            created = row.created
        return StoredBlock(type=slug, name=name, key_id=key_id, created=created, updated=now, block=block)

    async def delete(self, ref: str) -> None:
        """Delete the block ``"type/name"``; NotFound if there is none."""
        slug, name = _lookup(ref)
        async with self._db.begin() as conn:
            result = await conn.execute(delete(blocks).where(blocks.c.type == slug, blocks.c.name == name))
        if result.rowcount == 0:
            raise NotFound(f"no block '{slug}/{name}'")
        log.info("block %s deleted", ref, extra={"block": ref})

    async def rotate(self, new_cipher: Cipher) -> RotationReport:
        """Re-encrypt every block with ``new_cipher``'s primary key, all or nothing (note 4)."""
        rotated = 0
        async with self._db.begin() as conn:
            query = select(blocks).order_by(blocks.c.type, blocks.c.name).with_for_update()
            rows = (await conn.execute(query)).all()
            for row in rows:
                plaintext = self._plaintext(row, new_cipher, self._cipher)
                if row.key_id == new_cipher.key_id:
                    continue
                token = new_cipher.encrypt(plaintext, context=context_of(row.type, row.name))
                await conn.execute(
                    update(blocks)
                    .where(blocks.c.type == row.type, blocks.c.name == row.name)
                    .values(ciphertext=token, key_id=new_cipher.key_id)
                )
                rotated += 1
        self._cipher = new_cipher
        log.info("re-encrypted %d of %d blocks with key %s", rotated, len(rows), new_cipher.key_id,
                 extra={"key_id": new_cipher.key_id})  # fmt: skip
        return RotationReport(rotated=rotated, key_id=new_cipher.key_id)


def _taken(ref: str) -> ValidationFailed:
    return ValidationFailed(
        [("name", f"block '{ref}' already exists: replace it with `tripwire block create {ref} --update` "
                  f"(PUT /api/blocks/{ref})")]
    )  # fmt: skip
