"""``where`` predicates (conformance S2)."""

from __future__ import annotations

from typing import Any

import pytest
from jsonpath_ng.ext import parse

from triggers.where import WhereClause, json_equal

DOC = {
    "id": "e1",
    "event": "tripwire.flow-run.Completed",
    "resource": {"tripwire.resource.id": "tripwire.flow-run.1", "tripwire.resource.name": "nightly-etl"},
    "related": [
        {"tripwire.resource.id": "tripwire.flow.1", "tripwire.resource.role": "flow"},
        {"tripwire.resource.id": "tripwire.work-pool.1", "tripwire.resource.role": "work-pool"},
    ],
    "payload": {
        "duration_s": 5400,
        "env": "prod",
        "error": {"type": None},
        "merged": True,
        "tasks": [{"duration_s": 300}, {"duration_s": 900}],
        "message": "release [deploy] now",
        "tags": ["a", "b"],
    },
    "follows": None,
}


@pytest.mark.parametrize(
    ("spec", "matches"),
    [
        pytest.param({"$.payload.duration_s": {"gt": 3600}}, True, id="gt"),
        pytest.param({"$.payload.duration_s": {"gt": 5400}}, False, id="gt-strict"),
        pytest.param({"$.payload.duration_s": {"ge": 5400}}, True, id="ge"),
        pytest.param({"$.payload.duration_s": {"lt": "9"}}, False, id="number-vs-string-no-coercion"),
        pytest.param({"$.payload.env": "prod"}, True, id="plain-value-is-eq"),
        pytest.param({"$.payload.env": {"ne": "prod"}}, False, id="ne"),
        pytest.param({"$.payload.missing": {"ne": "prod"}}, False, id="ne-needs-a-value"),
        pytest.param({"$.payload.missing": {"not_in": ["x"]}}, False, id="not-in-needs-a-value"),
        pytest.param({"$.payload.error.type": {"exists": True}}, True, id="null-exists"),
        pytest.param({"$.payload.retry_of": {"exists": False}}, True, id="exists-false"),
        pytest.param({"$.payload.merged": True}, True, id="bool-eq"),
        pytest.param({"$.payload.merged": 1}, False, id="true-is-not-one"),
        pytest.param({"$.payload.duration_s": 5400.0}, True, id="int-equals-float"),
        pytest.param({"$.payload.env": {"in": ["prod", "staging"]}}, True, id="in"),
        pytest.param({"$.payload.env": {"not_in": ["prod"]}}, False, id="not-in"),
        pytest.param({"$.payload.message": {"contains": "[deploy]"}}, True, id="contains-substring"),
        pytest.param({"$.payload.message": {"contains": "[Deploy]"}}, False, id="contains-case-sensitive"),
        pytest.param({"$.payload.tags": {"contains": "b"}}, True, id="contains-list-element"),
        pytest.param({"$.payload.message": {"regex": r"\[deploy\]"}}, True, id="regex-is-search"),
        pytest.param(
            {"$.payload.tasks[*].duration_s": {"gt": 600, "lt": 1200}}, True, id="one-value-all-ops"
        ),
        pytest.param(
            {"$.payload.tasks[*].duration_s": {"gt": 1000, "lt": 200}}, False, id="no-value-all-ops"
        ),
        pytest.param({"$.related[*]['tripwire.resource.role']": "work-pool"}, True, id="any-related"),
        pytest.param({"$.resource['tripwire.resource.name']": {"regex": "^nightly-"}}, True, id="label"),
        pytest.param({"$.related[1]['tripwire.resource.role']": "work-pool"}, True, id="index"),
        pytest.param({"$.related[-1]['tripwire.resource.role']": "work-pool"}, True, id="negative-index"),
        pytest.param({"$.payload.env[0]": "p"}, False, id="index-into-string-selects-nothing"),
        pytest.param({"$.payload.error[0]": {"exists": True}}, False, id="index-into-object-selects-nothing"),
        pytest.param({"$.payload.env": "prod", "$.payload.merged": False}, False, id="entries-are-and"),
        pytest.param(
            {"$.payload.tasks[?(@.duration_s > 600)]": {"exists": True}}, True, id="filter-fallback"
        ),
    ],
)
def test_where(spec: dict[str, Any], matches: bool) -> None:
    assert WhereClause(spec).matches(DOC) is matches


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        pytest.param({"$.payload.duration_s > 3600": True}, "is not a valid jsonpath", id="bad-path"),
        pytest.param({"$.payload.x": {"gte": 1}}, "unknown operator 'gte'", id="unknown-operator"),
        pytest.param({"$.payload.x": {}}, "operator object is empty", id="no-operator"),
        pytest.param({"$.payload.x": {"in": "prod"}}, "needs a list", id="in-without-list"),
        pytest.param({"$.payload.x": {"exists": "yes"}}, "needs true or false", id="exists-not-bool"),
        pytest.param({"$.payload.x": {"gt": [1]}}, "needs a number or a string", id="gt-list"),
        pytest.param({"$.payload.x": {"regex": "(\\d+"}}, "does not compile", id="bad-regex"),
    ],
)
def test_where_rejects(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WhereClause(spec)


@pytest.mark.parametrize(
    "path",
    [
        "$",
        "$.payload",
        "$.payload.tasks[*].duration_s",
        "$.related[0]",
        "$.related[-1]['tripwire.resource.id']",
        "$.payload.env[*]",
        "$.payload.nothing.deeper",
        "$['payload']['error']",
    ],
)
def test_simple_paths_agree_with_jsonpath_ng(path: str) -> None:
    clause = WhereClause({path: {"exists": True}})
    select = clause._predicates[0].select
    assert select(DOC) == [m.value for m in parse(path).find(DOC)]


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        pytest.param(1, 1.0, True, id="int-float"),
        pytest.param(True, 1, False, id="bool-int"),
        pytest.param("1", 1, False, id="str-int"),
        pytest.param(None, None, True, id="nulls"),
        pytest.param([1, {"a": True}], [1.0, {"a": True}], True, id="nested"),
        pytest.param({"a": 1}, {"a": True}, False, id="nested-bool"),
    ],
)
def test_json_equal(a: Any, b: Any, equal: bool) -> None:
    assert json_equal(a, b) is equal
