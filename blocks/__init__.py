"""Credential blocks: typed, named configuration with secret fields, stored encrypted (DESIGN §6).

``Block`` is the base (blocks/base.py), the built-in types are in blocks/types.py and registered by slug
in blocks/registry.py, ``Cipher`` (blocks/crypto.py) encrypts, ``BlockStore`` (blocks/store.py) stores.
"""

from __future__ import annotations

from blocks.base import MASK, Block, FieldSpec, NotificationBlock, validation_errors
from blocks.crypto import Cipher, DecryptionFailed
from blocks.registry import BLOCK_TYPES, BlockRef, block_type, parse_block, parse_ref
from blocks.store import BlockInfo, BlockStore, RotationReport, StoredBlock
from blocks.types import AppriseUrls, Email, Secret, SlackWebhook, Webhook

__all__ = [
    "BLOCK_TYPES",
    "MASK",
    "AppriseUrls",
    "Block",
    "BlockInfo",
    "BlockRef",
    "BlockStore",
    "Cipher",
    "DecryptionFailed",
    "Email",
    "FieldSpec",
    "NotificationBlock",
    "RotationReport",
    "Secret",
    "SlackWebhook",
    "StoredBlock",
    "Webhook",
    "block_type",
    "parse_block",
    "parse_ref",
    "validation_errors",
]
