"""The ``Block`` base: a typed, named piece of configuration whose secret fields are ``SecretStr``.

1. A block type is a ``Block`` subclass with a ``block_type`` slug (``"slack-webhook"``). Secret fields are
   typed ``SecretStr``, alone, optional, or inside a list or dict (``list[SecretStr]``,
   ``dict[str, SecretStr]``); everything else is plain configuration.
2. Secrets stay hidden everywhere but in the action that uses them: ``repr`` and ``str`` show
   ``SecretStr('**********')``, ``redacted()`` (the API's and CLI's view) shows ``"********"``, validation
   errors never carry the input (``hide_input_in_errors``; ``validation_errors`` drops it too).
   ``reveal()`` gives the clear document and is meant only for encryption (blocks/store.py);
   ``apprise_urls()`` of notification blocks, only for sending.
3. ``"********"`` is refused as a secret value: it is what the API shows, and a document read back and
   sent again must not store the mask. ``restore_masked`` puts the stored secret back where an update
   sends the mask, so a client can change plain fields without knowing the secrets.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable
from urllib.parse import quote, urlsplit

from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_core import to_jsonable_python

__all__ = [
    "MASK",
    "Block",
    "FieldSpec",
    "NotificationBlock",
    "Shape",
    "validation_errors",
]

MASK = "********"
"""What the API and CLI show in place of a secret value."""

Shape = Literal["value", "list", "dict"]

_TYPE_LABELS = {str: "string", int: "integer", float: "number", bool: "boolean", SecretStr: "string"}


@dataclass(frozen=True)
class FieldSpec:
    """One field of a block type, as the CLI and ``/api/block-types`` describe it."""

    name: str
    shape: Shape
    secret: bool
    required: bool
    type: str
    description: str


@runtime_checkable
class NotificationBlock(Protocol):
    """A block that send-notification can send through: it knows its apprise URLs."""

    def apprise_urls(self) -> list[str]: ...


def validation_errors(exc: ValidationError, prefix: str = "") -> list[tuple[str, str]]:
    """``(location, message)`` pairs of a pydantic error, without the input values (note 2)."""
    out = []
    for err in exc.errors(include_url=False, include_input=False, include_context=False):
        parts = [str(p) for p in err["loc"]]
        loc = ".".join([prefix, *parts] if prefix else parts)
        out.append((loc, err["msg"].removeprefix("Value error, ")))
    return out


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def _strip_annotated(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _label(annotation: Any) -> str:
    if typing.get_origin(annotation) is Literal:
        return "one of " + "|".join(str(a) for a in typing.get_args(annotation))
    return _TYPE_LABELS.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _map_secrets(value: Any, fn: typing.Callable[[SecretStr], Any]) -> Any:
    if isinstance(value, SecretStr):
        return fn(value)
    if isinstance(value, dict):
        return {k: _map_secrets(v, fn) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_map_secrets(v, fn) for v in value]
    return value


def _secrets_in(value: Any) -> list[str]:
    found: list[str] = []
    _map_secrets(value, lambda s: found.append(s.get_secret_value()))
    return found


def _fragments(secret: str) -> list[str]:
    """A secret and the forms it may appear in inside messages: URL-quoted, and a URL's token parts."""
    out = {secret, quote(secret, safe=""), quote(secret)}
    if "://" in secret:
        try:
            parts = urlsplit(secret)
            pieces = [parts.password or "", parts.username or "", *parts.path.split("/")]
            pieces += [p.partition("=")[2] for p in parts.query.split("&")]
        except ValueError:
            pieces = []
        out.update(p for p in pieces if len(p) >= 6)
    return sorted((f for f in out if f), key=len, reverse=True)


class Block(BaseModel):
    """A typed, named piece of configuration; secret fields are ``SecretStr`` (note 1)."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    block_type: ClassVar[str]

    @field_validator("*", mode="after")
    @classmethod
    def _mask_is_not_a_secret(cls, value: Any, info: ValidationInfo) -> Any:
        if MASK in _secrets_in(value):
            raise ValueError(
                f"{MASK!r} is the mask the API shows in place of a stored secret; send the real value"
            )
        return value

    # --- views -----------------------------------------------------------------------------------------

    def redacted(self) -> dict[str, Any]:
        """The document with every secret shown as ``"********"`` (an unset optional secret stays null)."""
        return dict(to_jsonable_python(_map_secrets(self.model_dump(), lambda _: MASK)))

    def reveal(self) -> dict[str, Any]:
        """The document with secrets in clear: only for encrypting it (note 2)."""
        return dict(to_jsonable_python(_map_secrets(self.model_dump(), lambda s: s.get_secret_value())))

    def secret_values(self) -> list[str]:
        """Every secret value set on this block."""
        return [s for s in _secrets_in(self.model_dump()) if s]

    def scrub(self, text: str) -> str:
        """``text`` with every secret value (and its URL-quoted form and URL parts) replaced by the mask."""
        for secret in self.secret_values():
            for fragment in _fragments(secret):
                text = text.replace(fragment, MASK)
        return text

    def restore_masked(self, data: dict[str, Any]) -> dict[str, Any]:
        """``data`` with each ``"********"`` in a secret field replaced by this block's value (note 3)."""
        out = dict(data)
        for spec in self.field_specs():
            if not spec.secret or spec.name not in out:
                continue
            stored, given = getattr(self, spec.name), out[spec.name]
            if spec.shape == "value" and given == MASK and stored is not None:
                out[spec.name] = stored.get_secret_value()
            elif spec.shape == "list" and isinstance(given, list):
                out[spec.name] = [
                    stored[i].get_secret_value() if item == MASK and i < len(stored) else item
                    for i, item in enumerate(given)
                ]
            elif spec.shape == "dict" and isinstance(given, dict):
                out[spec.name] = {
                    k: stored[k].get_secret_value() if v == MASK and k in stored else v
                    for k, v in given.items()
                }
        return out

    # --- the type's description ------------------------------------------------------------------------

    @classmethod
    def title(cls) -> str:
        """The first line of the class docstring."""
        return (cls.__doc__ or cls.__name__).strip().splitlines()[0]

    @classmethod
    def is_notification(cls) -> bool:
        """Whether send-notification can use blocks of this type (they have ``apprise_urls``)."""
        return callable(getattr(cls, "apprise_urls", None))

    @classmethod
    def field_specs(cls) -> list[FieldSpec]:
        """Each field with its shape, whether it is secret and required, its type and description."""
        specs = []
        for name, info in cls.model_fields.items():
            annotation, _optional = _unwrap_optional(_strip_annotated(info.annotation))
            origin, args = typing.get_origin(annotation), typing.get_args(annotation)
            shape: Shape = "value"
            inner = annotation
            if origin is list and args:
                shape, inner = "list", args[0]
            elif origin is dict and len(args) == 2:
                shape, inner = "dict", args[1]
            inner = _strip_annotated(inner)
            label = _label(inner)
            if shape == "list":
                label = f"list of {label}s"
            elif shape == "dict":
                label = f"map of {label}s"
            specs.append(
                FieldSpec(
                    name=name,
                    shape=shape,
                    secret=inner is SecretStr,
                    required=info.is_required(),
                    type=label,
                    description=info.description or "",
                )
            )
        return specs

    @classmethod
    def secret_fields(cls) -> list[str]:
        """The names of the secret fields."""
        return [spec.name for spec in cls.field_specs() if spec.secret]

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """The document's JSON schema; secret fields are marked ``"writeOnly": true``."""
        schema = cls.model_json_schema()
        properties = schema.get("properties", {})
        for name in cls.secret_fields():
            prop = properties.get(name, {})
            prop["writeOnly"] = True
            if prop.get("type") != "array" and prop.get("type") != "object":
                prop["format"] = "password"
        schema["title"] = cls.block_type
        schema["description"] = cls.title()
        return schema
