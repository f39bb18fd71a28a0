"""The registry of block types by slug, block references (``"type/name"``) and document parsing.

A reference is ``<type>/<name>``: the type is a registered slug, the name 1-128 letters, digits, ``_``,
``.`` or ``-`` starting with a letter or digit (``slack-webhook/data-team``). Actions name their block with
a ``BlockRef`` field, so a reference that cannot exist is refused when the automation is saved.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, Any

from pydantic import AfterValidator, ValidationError

from blocks.base import Block, validation_errors
from blocks.types import AppriseUrls, Email, Secret, SlackWebhook, Webhook
from tripwire.errors import NotFound, ValidationFailed

__all__ = [
    "BLOCK_TYPES",
    "NAME_PATTERN",
    "BlockRef",
    "block_type",
    "check_name",
    "check_ref",
    "parse_block",
    "parse_ref",
]

BLOCK_TYPES: Mapping[str, type[Block]] = MappingProxyType(
    {cls.block_type: cls for cls in (SlackWebhook, Email, AppriseUrls, Webhook, Secret)}
)
"""Every block type by slug (read-only)."""

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
_NAME = re.compile(NAME_PATTERN)


def _known() -> str:
    return ", ".join(sorted(BLOCK_TYPES))


def block_type(slug: str) -> type[Block]:
    """The block type registered as ``slug``; NotFound listing the known types."""
    try:
        return BLOCK_TYPES[slug]
    except KeyError:
        raise NotFound(f"no block type {slug!r}; the types are: {_known()}") from None


def check_name(name: str) -> str:
    """``name`` if it is a valid block name, else ValueError saying what a name may contain."""
    if not _NAME.match(name):
        raise ValueError(
            "a block name is 1-128 letters, digits, '_', '.' or '-', starting with a letter or digit"
        )
    return name


def parse_ref(ref: str) -> tuple[str, str]:
    """``"type/name"`` -> ``(type, name)``; ValidationFailed (location ``block``) if malformed or unknown."""
    slug, sep, name = ref.partition("/")
    if not sep or not slug or not name:
        problem = "is not a block reference: write 'type/name', e.g. 'slack-webhook/ops'"
        raise ValidationFailed([("block", f"{ref[:200]!r} {problem}")])
    if slug not in BLOCK_TYPES:
        problem = f"no block type {slug!r}; the types are: {_known()}"
        raise ValidationFailed([("block", f"{ref[:200]!r}: {problem}")])
    try:
        check_name(name)
    except ValueError as exc:
        raise ValidationFailed([("block", f"{ref[:200]!r}: {exc}")]) from None
    return slug, name


def check_ref(ref: str) -> str:
    """``ref`` if it is a well-formed reference to a known type (for pydantic fields), else ValueError."""
    try:
        parse_ref(ref)
    except ValidationFailed as exc:
        raise ValueError(exc.errors[0][1]) from None
    return ref


BlockRef = Annotated[str, AfterValidator(check_ref)]
"""A pydantic field type for ``"type/name"`` references (the block need not exist yet)."""


def parse_block(slug: str, data: Any, *, prefix: str = "data") -> Block:
    """A block of type ``slug`` from its document; ValidationFailed naming ``<prefix>.<field>``.

    The errors carry no input values, and the pydantic error is not chained (it would hold them).
    """
    cls = block_type(slug)
    if not isinstance(data, dict):
        raise ValidationFailed([(prefix, f"must be an object with the fields of a {slug} block")])
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        errors = validation_errors(exc, prefix)
    raise ValidationFailed(errors)
