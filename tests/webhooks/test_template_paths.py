"""Plain template paths (``$.a.b``) are found by dict lookups: the same answers as jsonpath-ng's ``find``."""

from __future__ import annotations

from typing import Any

import pytest
from jsonpath_ng.ext import parse

from events.webhooks.template import _MISSING, TemplateError, compile_template, plain_keys, render

DOCUMENTS: list[Any] = [
    {"body": {"a": {"b": 1, "n": None, "l": [1, 2], "s": "text", "e": {}}}, "headers": {"x-h": "v"}},
    {"body": [{"a": 1}], "headers": {}},
    {"body": "just text", "headers": {"x-h": "v, w"}},
    {"body": None},
    {"body": {"a": 0, "a.b": "dotted", "": "empty key", "0": "zero"}},
    [],
    "text",
    7,
]

PATHS = [
    "$", "$.body", "$.body.a", "$.body.a.b", "$.body.a.n", "$.body.a.l", "$.body.a.s", "$.body.a.s.x",
    "$.body.a.e", "$.body.a.missing", "$.headers.x-h", '$.body."a.b"', "$.body.0", "$.body.a.b.c",
    "$.nothing.at.all",
]  # fmt: skip


def jsonpath_answer(text: str, document: Any) -> Any:
    matches = parse(text).find(document)
    if not matches:
        return _MISSING
    return matches[0].value if len(matches) == 1 else [m.value for m in matches]


@pytest.mark.parametrize("text", PATHS)
def test_plain_paths_answer_as_jsonpath_does(text: str) -> None:
    node = compile_template(text)
    assert node.expr.keys is not None, text
    for document in DOCUMENTS:
        assert node.expr.find(document) == jsonpath_answer(text, document), (text, document)


@pytest.mark.parametrize(
    "text", ["$.a[0]", "$.a.*", "$..a", "$['a','b']", "$.a.`len`", "$.a[?(@.b == 1)]", "$.a[-1:]"]
)
def test_other_paths_stay_with_jsonpath(text: str) -> None:
    assert plain_keys(parse(text)) is None


def test_rendering_with_plain_paths_and_defaults() -> None:
    template = compile_template(
        {"event": "gh.{$.headers.x-h}.{$.body.a.b}", "payload": "$.body.a", "n": "$.body.a.n"}, as_text=False
    )
    document = DOCUMENTS[0]
    assert render(template, document) == {"event": "gh.v.1", "payload": document["body"]["a"], "n": None}
    with pytest.raises(TemplateError) as caught:
        render(compile_template({"x": "$.body.a.missing"}), document, loc="template")
    ((loc, msg),) = caught.value.errors
    assert loc == "template.x" and msg.startswith("$.body.a.missing matched nothing in the request")
    assert render(compile_template("$.body.a.missing"), document, defaults={"$.body.a.missing": 5}) == 5
