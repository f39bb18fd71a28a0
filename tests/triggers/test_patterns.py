"""Globs, pattern lists and label specs (conformance S2)."""

from __future__ import annotations

import pytest

from triggers.patterns import Glob, LabelSpec, PatternList, literal_prefix, literal_suffix


@pytest.mark.parametrize(
    ("pattern", "value", "matches"),
    [
        pytest.param("a.b", "a.b", True, id="literal-equal"),
        pytest.param("a.b", "a.bc", False, id="literal-is-full-string"),
        pytest.param("a.b", "A.B", False, id="case-sensitive"),
        pytest.param("a.*", "a.", True, id="star-matches-empty"),
        pytest.param("a.*", "a.b/c.d", True, id="star-spans-dots-and-slashes"),
        pytest.param("*.csv", "file.csv", True, id="leading-star"),
        pytest.param("*.csv", "file.parquet", False, id="leading-star-miss"),
        pytest.param("*", "", True, id="star-alone-matches-empty"),
        pytest.param("a?c", "abc", True, id="question-one-char"),
        pytest.param("a?c", "ac", False, id="question-needs-a-char"),
        pytest.param("a?c", "abbc", False, id="question-only-one-char"),
        pytest.param("x*y*z", "x-y-z", True, id="two-stars"),
        pytest.param("x*y*z", "x-z", False, id="two-stars-miss"),
        pytest.param("[legacy]-*", "[legacy]-billing", True, id="brackets-literal"),
        pytest.param("[legacy]-*", "l-billing", False, id="brackets-not-a-class"),
        pytest.param("a.+b", "a.+b", True, id="regex-chars-literal"),
        pytest.param("a.+b", "aa+b", False, id="dot-literal"),
        pytest.param("line*", "line1\nline2", True, id="star-spans-newlines"),
        pytest.param("", "", True, id="empty-pattern-matches-empty"),
    ],
)
def test_glob(pattern: str, value: str, matches: bool) -> None:
    assert bool(Glob(pattern).match(value)) is matches


@pytest.mark.parametrize(
    ("patterns", "value", "matches"),
    [
        pytest.param(["prod", "prod-*", "!prod-canary*"], "prod", True, id="positive-literal"),
        pytest.param(["prod", "prod-*", "!prod-canary*"], "prod-eu", True, id="positive-glob"),
        pytest.param(["prod", "prod-*", "!prod-canary*"], "prod-canary-1", False, id="negative-wins"),
        pytest.param(["prod", "prod-*", "!prod-canary*"], "staging", False, id="no-positive"),
        pytest.param(["prod", "prod-*", "!prod-canary*"], None, False, id="missing-value"),
        pytest.param(["!nah"], "yes", True, id="only-negative-other-value"),
        pytest.param(["!nah"], "!nah", True, id="only-negative-literal-bang-value"),
        pytest.param(["!nah"], "nah", False, id="only-negative-same-value"),
        pytest.param(["!nah"], None, False, id="only-negative-missing"),
        pytest.param("*", None, False, id="star-never-matches-missing"),
        pytest.param([], "anything", True, id="empty-list-needs-presence-only"),
    ],
)
def test_pattern_list(patterns: list[str] | str, value: str | None, matches: bool) -> None:
    assert PatternList(patterns).matches(value) is matches


@pytest.mark.parametrize(
    ("spec", "labels", "matches"),
    [
        pytest.param({}, {}, True, id="empty-spec"),
        pytest.param(
            {"class": "Arachnida", "order": "Araneae"}, {"class": "Arachnida"}, False, id="all-labels"
        ),
        pytest.param(
            {"class": "Arachnida", "order": "Araneae"},
            {"class": "Arachnida", "order": "Araneae", "x": "y"},
            True,
            id="all-labels-present",
        ),
        pytest.param({"color": "*"}, {"shape": "round"}, False, id="missing-label"),
    ],
)
def test_label_spec(spec: dict, labels: dict, matches: bool) -> None:
    assert LabelSpec(spec).matches(labels) is matches


def test_label_spec_needs_one_resource_for_the_whole_spec() -> None:
    spec = LabelSpec({"tripwire.resource.role": "meal", "genus": "Hemerocallis"})
    split = [
        {"tripwire.resource.role": "meal", "genus": "Tulipa"},
        {"tripwire.resource.role": "x", "genus": "Hemerocallis"},
    ]
    assert not spec.matches_any(split)
    assert spec.matches_any([*split, {"tripwire.resource.role": "meal", "genus": "Hemerocallis"}])
    assert LabelSpec({}).matches_any([])


@pytest.mark.parametrize(
    ("patterns", "hint"),
    [
        pytest.param(["a", "b"], [("exact", "a"), ("exact", "b")], id="literals-exact"),
        pytest.param(["a.*", "b"], [("prefix", "a."), ("exact", "b")], id="mixed"),
        pytest.param(["*.csv"], [("suffix", ".csv")], id="suffix"),
        pytest.param(["*.csv", "?"], None, id="no-literal-part"),
        pytest.param(["!a"], None, id="negative-only"),
        pytest.param(["a", "!a.b"], [("exact", "a")], id="negatives-ignored"),
    ],
)
def test_index_hint(patterns: list[str], hint: list | None) -> None:
    assert PatternList(patterns).index_hint() == hint


def test_label_spec_hint_prefers_exact_values() -> None:
    spec = LabelSpec({"a": "x*", "b": ["p", "q"], "c": "*"})
    assert spec.index_hint() == ("b", [("exact", "p"), ("exact", "q")])
    assert LabelSpec({"c": "*", "d": "!x"}).index_hint() is None


def test_literal_prefix_and_suffix() -> None:
    assert literal_prefix("tripwire.flow-run.*") == "tripwire.flow-run."
    assert literal_prefix("a?b*") == "a"
    assert literal_prefix("plain") == "plain"
    assert literal_suffix("*.Failed") == ".Failed"
    assert literal_suffix("a*b?c") == "c"
