"""Webhook templates: JSON-like documents whose strings are literals, jsonpath expressions or text with
``{$.path}`` placeholders, compiled once (when the webhook is saved or loaded) and rendered per request.

1. A string that starts with ``$`` is one jsonpath expression (jsonpath-ng's ``ext`` parser) and renders
   to the value it matches: the value itself for one match, a list for several. ``"$.body"`` copies the
   whole body.
2. A string with ``{$...}`` placeholders renders as text: each placeholder becomes the matched value (a
   string as is; numbers, booleans, null, objects and lists as JSON). ``{{`` and ``}}`` are literal braces.
   Any other string is a literal; so are numbers, booleans and null.
3. Dicts and lists are compiled element by element (keys are literal). ``as_text=True`` (labels) turns
   a whole-expression value into text too, so ``resource`` and ``related`` always hold strings.
4. An expression that matches nothing renders its declared default (``defaults``: expression text ->
   value) or raises TemplateError naming the field and the expression. A bad expression is refused at
   compile time with TemplateError naming the field and the column in the string.
5. Parsing costs about 0.5 ms (TECHNOTES §4), finding about 5 µs: compile once, render many times. A
   plain path (``$.a.b``: only named fields) is found by dict lookups, with jsonpath-ng's answers (a
   field of an object; nothing in a list, a string or a number), at a tenth of the cost; the webhook
   intake renders a few of them per request.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jsonpath_ng import JSONPath, jsonpath
from jsonpath_ng.exceptions import JSONPathError
from jsonpath_ng.ext import parse as jsonpath_parse

from tripwire.errors import ValidationFailed

__all__ = ["Compiled", "Expression", "TemplateError", "compile_template", "plain_keys", "render"]

_MISSING = object()


class TemplateError(ValidationFailed):
    """A template cannot be compiled (at save time) or applied to a request (HTTP 422)."""


@dataclass(frozen=True, slots=True)
class Expression:
    """One compiled jsonpath expression and where it came from.

    ``keys`` holds the field names of a plain path (``$.body.repository.name``: only ``$`` and single
    named fields, note 5), which ``find`` walks as dict lookups instead of jsonpath-ng's ``find``.
    """

    text: str
    path: JSONPath
    keys: tuple[str, ...] | None = None

    def find(self, document: Any) -> Any:
        """The matched value (a list for several matches), or ``_MISSING``."""
        if self.keys is not None:  # what jsonpath-ng's Fields does: .get on objects, nothing on the rest
            value = document
            for key in self.keys:
                if not isinstance(value, dict):
                    return _MISSING
                value = value.get(key, _MISSING)
                if value is _MISSING:
                    return _MISSING
            return value
        matches = self.path.find(document)
        if not matches:
            return _MISSING
        if len(matches) == 1:
            return matches[0].value
        return [m.value for m in matches]


@dataclass(frozen=True, slots=True)
class _Whole:
    expr: Expression
    as_text: bool


@dataclass(frozen=True, slots=True)
class _Text:
    parts: tuple[str | Expression, ...]


Compiled = Any
"""A compiled template node: a literal, ``_Whole``, ``_Text``, or a dict / list of nodes."""


def plain_keys(path: JSONPath) -> tuple[str, ...] | None:
    """The field names when ``path`` is ``$`` followed only by single named fields, else None."""
    if jsonpath.auto_id_field is not None:  # jsonpath-ng then answers some names itself
        return None
    keys: list[str] = []
    node = path
    while type(node) is jsonpath.Child:
        right = node.right
        if type(right) is not jsonpath.Fields or len(right.fields) != 1 or right.fields[0] == "*":
            return None
        keys.append(right.fields[0])
        node = node.left
    return tuple(reversed(keys)) if type(node) is jsonpath.Root else None


def _expression(text: str, loc: str, column: int) -> Expression:
    try:
        path = jsonpath_parse(text)
        return Expression(text, path, plain_keys(path))
    except (JSONPathError, Exception) as exc:  # jsonpath-ng raises a few kinds (lexer, parser, ValueError)
        raise TemplateError(
            [(loc, f"bad jsonpath expression {text!r} at column {column} of the string: {exc}")]
        ) from None


def _placeholder_end(text: str, start: int) -> int:
    """Index of the ``}`` closing the placeholder opened at ``start`` (brackets and quotes respected)."""
    depth, quote = 0, ""
    for i in range(start + 1, len(text)):
        ch = text[i]
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        elif ch == "}" and depth <= 0:
            return i
    return -1


def _compile_string(text: str, loc: str, as_text: bool) -> Compiled:
    if text.startswith("$"):
        return _Whole(_expression(text, loc, 1), as_text)
    if "{" not in text and "}" not in text:
        return text
    parts: list[str | Expression] = []
    buf: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if text.startswith("{{", i) or text.startswith("}}", i):
            buf.append(ch)
            i += 2
        elif text.startswith("{$", i):
            end = _placeholder_end(text, i)
            if end < 0:
                raise TemplateError([(loc, f"placeholder at column {i + 1} is not closed with '}}'")])
            if buf:
                parts.append("".join(buf))
                buf = []
            parts.append(_expression(text[i + 1 : end].strip(), loc, i + 2))
            i = end + 1
        elif ch in "{}":
            raise TemplateError(
                [
                    (
                        loc,
                        f"stray {ch!r} at column {i + 1}: placeholders are {{$.path}}; {ch * 2} is {ch}",
                    )
                ]
            )
        else:
            buf.append(ch)
            i += 1
    if buf:
        parts.append("".join(buf))
    if not any(isinstance(p, Expression) for p in parts):
        return "".join(p for p in parts if isinstance(p, str))
    return _Text(tuple(parts))


def compile_template(value: Any, loc: str = "", *, as_text: bool = False) -> Compiled:
    """Compile a template value (note 1-3); TemplateError with ``loc`` and column on a bad expression."""
    if isinstance(value, str):
        return _compile_string(value, loc, as_text)
    if isinstance(value, Mapping):
        errors: list[tuple[str, str]] = []
        out: dict[str, Compiled] = {}
        for key, item in value.items():
            try:
                out[str(key)] = compile_template(item, f"{loc}.{key}" if loc else str(key), as_text=as_text)
            except TemplateError as exc:
                errors.extend(exc.errors)
        if errors:
            raise TemplateError(errors)
        return out
    if isinstance(value, list):
        errors = []
        items: list[Compiled] = []
        for i, item in enumerate(value):
            try:
                items.append(compile_template(item, f"{loc}[{i}]", as_text=as_text))
            except TemplateError as exc:
                errors.extend(exc.errors)
        if errors:
            raise TemplateError(errors)
        return items
    return value


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class _Renderer:
    def __init__(self, document: Any, defaults: Mapping[str, Any]) -> None:
        self.document = document
        self.defaults = defaults
        self.errors: list[tuple[str, str]] = []

    def find(self, expr: Expression, loc: str) -> Any:
        value = expr.find(self.document)
        if value is _MISSING:
            value = self.defaults.get(expr.text, _MISSING)
            if value is _MISSING:
                self.errors.append(
                    (
                        loc,
                        f"{expr.text} matched nothing in the request (declare a default for it in defaults)",
                    )
                )
                return ""
        return value

    def render(self, node: Compiled, loc: str) -> Any:
        if isinstance(node, _Whole):
            value = self.find(node.expr, loc)
            return _text(value) if node.as_text else value
        if isinstance(node, _Text):
            return "".join(p if isinstance(p, str) else _text(self.find(p, loc)) for p in node.parts)
        if isinstance(node, dict):
            return {k: self.render(v, f"{loc}.{k}" if loc else k) for k, v in node.items()}
        if isinstance(node, list):
            return [self.render(v, f"{loc}[{i}]") for i, v in enumerate(node)]
        return node


def render(node: Compiled, document: Any, *, loc: str = "", defaults: Mapping[str, Any] | None = None) -> Any:
    """Apply a compiled template to ``document``; TemplateError lists every path that matched nothing."""
    renderer = _Renderer(document, defaults or {})
    value = renderer.render(node, loc)
    if renderer.errors:
        raise TemplateError(renderer.errors)
    return value
