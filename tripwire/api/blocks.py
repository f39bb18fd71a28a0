"""``/api/blocks`` and ``/api/block-types``: credential blocks, stored encrypted, shown with secrets masked.

| route | does |
|---|---|
| ``GET /blocks`` | every block: type, name, key id, times (nothing decrypted) |
| ``POST /blocks`` | ``{"type", "name", "data"}``: create (201); a taken reference is a 422 on ``name`` |
| ``GET /blocks/{type}/{name}`` | one block, secrets shown as ``"********"`` |
| ``PUT /blocks/{type}/{name}`` | ``{"data"}``: create or replace; a secret sent masked keeps its value |
| ``DELETE /blocks/{type}/{name}`` | delete (204) |
| ``POST /blocks/rotate-key`` | re-encrypt every block with the primary key (blocks/crypto.py note 6) |
| ``GET /block-types``, ``GET /block-types/{type}`` | each type with its fields and JSON schema |

Secret values go in, never out: every answer masks them, validation errors (422, ``data.<field>: ...``)
never repeat an input, and nothing here logs a block's data. The cipher is built from the server's
settings on first use and kept on ``app.state.cipher``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from blocks.base import MASK, Block
from blocks.crypto import Cipher
from blocks.registry import BLOCK_TYPES, block_type, check_name, parse_block
from blocks.store import BlockInfo, BlockStore, RotationReport, StoredBlock
from tripwire.api.errors import parse_json
from tripwire.api.events import read_body
from tripwire.errors import NotFound, ValidationFailed

__all__ = [
    "BlockFieldOut",
    "BlockList",
    "BlockOut",
    "BlockSummary",
    "BlockTypeList",
    "BlockTypeOut",
    "blocks_router",
    "cipher_for",
]

MAX_BODY_BYTES = 256 * 1024

BlockClass = type[Block]


class BlockSummary(BaseModel):
    """A stored block without its data."""

    type: str = Field(description="the block type's slug")
    name: str
    ref: str = Field(description="'type/name', as actions reference it")
    key_id: str = Field(description="id of the key the block is encrypted with")
    created: datetime
    updated: datetime

    @classmethod
    def of(cls, info: BlockInfo) -> BlockSummary:
        return cls(
            type=info.type,
            name=info.name,
            ref=info.ref,
            key_id=info.key_id,
            created=info.created,
            updated=info.updated,
        )


class BlockOut(BlockSummary):
    """A stored block, secrets shown as ``"********"``."""

    data: dict[str, Any] = Field(description="the document, with every secret value masked")
    secret_fields: list[str] = Field(description="the type's secret fields")

    @classmethod
    def of_stored(cls, stored: StoredBlock) -> BlockOut:
        return cls(
            **BlockSummary.of(stored).model_dump(),
            data=stored.block.redacted(),
            secret_fields=stored.block.secret_fields(),
        )


class BlockList(BaseModel):
    """Every block, by type and name."""

    blocks: list[BlockSummary]


class BlockFieldOut(BaseModel):
    """One field of a block type."""

    name: str
    type: str = Field(description="e.g. 'string', 'integer', 'list of strings', 'one of a|b'")
    secret: bool = Field(description="secret fields are write-only: answers show them as '********'")
    required: bool
    description: str


class BlockTypeOut(BaseModel):
    """A block type: its slug, fields and the JSON schema of its documents."""

    model_config = ConfigDict(populate_by_name=True)

    type: str = Field(description="the slug used in references ('type/name')")
    title: str
    notification: bool = Field(description="whether send-notification can send through it")
    fields: list[BlockFieldOut]
    json_schema: dict[str, Any] = Field(
        alias="schema", description="JSON schema; secret fields carry writeOnly and format password"
    )

    @classmethod
    def of(cls, block_cls: BlockClass) -> BlockTypeOut:
        return cls(
            type=block_cls.block_type,
            title=block_cls.title(),
            notification=block_cls.is_notification(),
            fields=[
                BlockFieldOut(
                    name=s.name, type=s.type, secret=s.secret, required=s.required, description=s.description
                )
                for s in block_cls.field_specs()
            ],
            schema=block_cls.json_schema(),
        )


class BlockTypeList(BaseModel):
    """Every block type, by slug."""

    types: list[BlockTypeOut]


def cipher_for(request: Request) -> Cipher:
    """The server's cipher, built from its settings on first use (may create the key file)."""
    state = request.app.state
    cipher = getattr(state, "cipher", None)
    if cipher is None:
        cipher = state.cipher = Cipher.from_settings(state.settings)
    return cipher


def _store(request: Request) -> BlockStore:
    return BlockStore(request.app.state.db, cipher_for(request))


async def _body(request: Request) -> dict[str, Any]:
    body = parse_json(await read_body(request, MAX_BODY_BYTES))
    if not isinstance(body, dict):
        raise ValidationFailed([("body", 'must be an object: {"type": ..., "name": ..., "data": {...}}')])
    return body


def _text_field(body: dict[str, Any], key: str, what: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise ValidationFailed([(key, f"is required: {what}")])
    return value


def _known_type(slug: str, loc: str) -> str:
    if slug not in BLOCK_TYPES:
        raise ValidationFailed(
            [(loc, f"no block type {slug[:100]!r}; the types are: {', '.join(BLOCK_TYPES)}")]
        )
    return slug


def _valid_name(name: str, loc: str) -> str:
    try:
        return check_name(name)
    except ValueError as exc:
        raise ValidationFailed([(loc, str(exc))]) from None


def _has_mask(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_has_mask(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_mask(v) for v in value)
    return isinstance(value, str) and value == MASK


_REFUSED: dict[int | str, dict[str, Any]] = {
    400: {"description": "malformed JSON"},
    413: {"description": "body over 256 KiB"},
    422: {"description": "invalid block; each `loc` names a field, e.g. `data.url`"},
}
_MISSING: dict[int | str, dict[str, Any]] = {404: {"description": "no such block"}}


def _body_doc(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    schema = {"type": "object", "required": required, "properties": properties}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


_DATA = {"type": "object", "description": "the block's fields (see /api/block-types)"}


def blocks_router() -> APIRouter:
    """The ``/blocks`` and ``/block-types`` routes (mounted under ``/api``, behind auth)."""
    router = APIRouter(tags=["blocks"])

    @router.get("/blocks", response_model=BlockList, summary="Every block (without data), by type and name")
    async def list_blocks(request: Request) -> BlockList:
        return BlockList(blocks=[BlockSummary.of(info) for info in await _store(request).list()])

    @router.post(
        "/blocks",
        status_code=201,
        response_model=BlockOut,
        summary="Create a block (its reference must be new)",
        responses=_REFUSED,
        openapi_extra=_body_doc(
            {"type": {"type": "string"}, "name": {"type": "string"}, "data": _DATA}, ["type", "name", "data"]
        ),
    )
    async def create(request: Request) -> BlockOut:
        body = await _body(request)
        unknown = sorted(set(body) - {"type", "name", "data"})
        if unknown:
            raise ValidationFailed(
                [(key[:100], "unknown field; send type, name and data") for key in unknown]
            )
        slug = _known_type(_text_field(body, "type", "the block type's slug"), "type")
        name = _valid_name(_text_field(body, "name", "the block's name"), "name")
        block = parse_block(slug, body.get("data"))
        return BlockOut.of_stored(await _store(request).create(f"{slug}/{name}", block))

    @router.post(
        "/blocks/rotate-key",
        response_model=RotationReport,
        summary="Re-encrypt every block with the server's primary key (TRIPWIRE_ENCRYPTION_KEY='new,old')",
    )
    async def rotate_key(request: Request) -> RotationReport:
        cipher = Cipher.from_settings(request.app.state.settings)
        report = await _store(request).rotate(cipher)
        request.app.state.cipher = cipher
        return report

    @router.get(
        "/blocks/{slug}/{name}",
        response_model=BlockOut,
        summary="One block, secrets masked",
        responses=_MISSING,
    )
    async def one(request: Request, slug: str, name: str) -> BlockOut:
        return BlockOut.of_stored(await _store(request).get_stored(f"{slug}/{name}"))

    @router.put(
        "/blocks/{slug}/{name}",
        response_model=BlockOut,
        summary="Create or replace a block; a secret sent as '********' keeps its stored value",
        responses=_REFUSED,
        openapi_extra=_body_doc({"data": _DATA}, ["data"]),
    )
    async def replace(request: Request, slug: str, name: str) -> BlockOut:
        _known_type(slug, "type")
        _valid_name(name, "name")
        body = await _body(request)
        for key in ("type", "name"):
            if key in body and body[key] != {"type": slug, "name": name}[key]:
                raise ValidationFailed([(key, "differs from the path; a block cannot be renamed")])
        unknown = sorted(set(body) - {"type", "name", "data"})
        if unknown:
            raise ValidationFailed([(key[:100], "unknown field; send data") for key in unknown])
        data = body.get("data")
        store, ref = _store(request), f"{slug}/{name}"
        if isinstance(data, dict) and _has_mask(data):
            try:
                data = (await store.get_stored(ref)).block.restore_masked(data)
            except NotFound:
                pass
        block = parse_block(slug, data)
        return BlockOut.of_stored(await store.put(ref, block))

    @router.delete(
        "/blocks/{slug}/{name}",
        status_code=204,
        response_class=Response,
        summary="Delete a block",
        responses=_MISSING,
    )
    async def remove(request: Request, slug: str, name: str) -> Response:
        await _store(request).delete(f"{slug}/{name}")
        return Response(status_code=204)

    @router.get("/block-types", response_model=BlockTypeList, summary="Every block type with its schema")
    async def list_types() -> BlockTypeList:
        return BlockTypeList(types=[BlockTypeOut.of(cls) for cls in BLOCK_TYPES.values()])

    @router.get(
        "/block-types/{slug}",
        response_model=BlockTypeOut,
        summary="One block type with its schema",
        responses={404: {"description": "no such block type"}},
    )
    async def one_type(slug: str) -> BlockTypeOut:
        return BlockTypeOut.of(block_type(slug))

    return router
