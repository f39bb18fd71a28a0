"""Automation and trigger models: validation (conformance S9) and the Python API."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from triggers.durations import parse_seconds, to_us
from triggers.models import (
    Automation,
    CompoundTrigger,
    DoNothingAction,
    EventTrigger,
    SequenceTrigger,
    validation_errors,
)

FAILED = {"type": "event", "expect": ["tripwire.flow-run.Failed"]}


def automation(trigger: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"name": "a", "trigger": trigger, "actions": [{"type": "do-nothing"}], **fields}


def refused(data: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as caught:
        Automation.model_validate(data)
    return validation_errors(caught.value)


@pytest.mark.parametrize(
    ("data", "where", "says"),
    [
        pytest.param(
            automation(FAILED, enabeld=True), "enabeld", "unknown field", id="unknown-automation-field"
        ),
        pytest.param(
            automation({**FAILED, "expects": ["x"]}), "expects", "unknown field", id="unknown-trigger-field"
        ),
        pytest.param(automation({"expect": ["x"]}), "trigger", "needs a 'type'", id="missing-type"),
        pytest.param(
            automation({**FAILED, "type": "events"}), "trigger", "does not match", id="unknown-type"
        ),
        pytest.param(automation(FAILED, name=""), "name", "at least 1", id="empty-name"),
        pytest.param(automation(FAILED, name="  "), "name", "name is blank", id="blank-name"),
        pytest.param(automation({**FAILED, "posture": "reactive"}), "posture", "Reactive", id="posture-case"),
        pytest.param(automation({**FAILED, "threshold": 0}), "threshold", "at least 1", id="threshold-zero"),
        pytest.param(automation({**FAILED, "threshold": 2.5}), "threshold", "integer", id="threshold-float"),
        pytest.param(automation({**FAILED, "threshold": True}), "threshold", "integer", id="threshold-bool"),
        pytest.param(
            automation({**FAILED, "within": -1}), "within", "must not be negative", id="negative-within"
        ),
        pytest.param(automation({**FAILED, "within": "ten"}), "within", "not a duration", id="within-text"),
        pytest.param(automation({**FAILED, "within": None}), "within", "not a duration", id="within-null"),
        pytest.param(automation({**FAILED, "cooldown": -1}), "cooldown", "negative", id="negative-cooldown"),
        pytest.param(
            automation({**FAILED, "posture": "Proactive", "within": 9.999999}),
            "trigger",
            "at least 10",
            id="proactive-within-under-10",
        ),
        pytest.param(
            automation({**FAILED, "posture": "Proactive", "within": 60, "cooldown": 5}),
            "trigger",
            "cooldown",
            id="proactive-cooldown",
        ),
        pytest.param(automation({"type": "event"}), "trigger", "match every event", id="catch-all"),
        pytest.param(
            automation({"type": "event", "match_related": {"tripwire.resource.role": "x"}}),
            "trigger",
            "match every event",
            id="catch-all-match-related-does-not-count",
        ),
        pytest.param(
            automation({"type": "sequence", "triggers": [FAILED, {"type": "event", "where": {"$.x": 1}}]}),
            "trigger",
            "match every event",
            id="catch-all-nested",
        ),
        pytest.param(
            automation({**FAILED, "for_each": ["related:deployment"]}),
            "for_each",
            "related:<role>",
            id="for-each-related-needs-label",
        ),
        pytest.param(
            automation({**FAILED, "where": {"$.a": {"gte": 1}}}),
            "where",
            "unknown operator",
            id="where-operator",
        ),
        pytest.param(
            automation({"type": "compound", "require": 3, "triggers": [FAILED, FAILED]}),
            "trigger",
            "from 1 to 2",
            id="require-too-large",
        ),
        pytest.param(
            automation({"type": "compound", "require": "most", "triggers": [FAILED]}),
            "require",
            "",
            id="require-word",
        ),
        pytest.param(
            automation({"type": "sequence", "require": 1, "triggers": [FAILED]}),
            "require",
            "unknown field",
            id="require-on-sequence",
        ),
        pytest.param(
            automation({"type": "compound", "triggers": [FAILED], "for_each": ["x"]}),
            "for_each",
            "unknown field",
            id="for-each-on-compound",
        ),
        pytest.param(
            automation({"type": "compound", "triggers": []}), "triggers", "at least one", id="no-children"
        ),
        pytest.param(
            automation(FAILED, actions=[{"type": "do-nothing", "x": 1}]),
            "actions",
            "unknown field",
            id="unknown-action-field",
        ),
        pytest.param(
            automation(FAILED, actions=[{"type": "launch"}]),
            "actions",
            "does not match",
            id="unknown-action-type",
        ),
        pytest.param(automation(FAILED, mode="dry_run"), "mode", "dry-run", id="mode"),
    ],
)
def test_refused(data: dict[str, Any], where: str, says: str) -> None:
    errors = refused(data)
    assert any(where in loc or where in msg for loc, msg in errors), errors
    assert any(says in msg for _, msg in errors), errors


def test_defaults_and_round_trip() -> None:
    a = Automation.model_validate(automation(FAILED))
    assert a.enabled and a.mode == "live" and a.tags == [] and a.description == ""
    t = a.trigger
    assert isinstance(t, EventTrigger)
    assert (t.posture, t.threshold, t.within, t.cooldown, t.where) == ("Reactive", 1, 0.0, 0.0, {})
    again = Automation.model_validate_json(a.model_dump_json())
    assert again == a


def test_python_api() -> None:
    a = Automation(
        name="etl keeps failing",
        tags=["etl"],
        trigger=CompoundTrigger(
            require="any",
            triggers=[
                EventTrigger(expect=["tripwire.flow-run.Failed"], threshold=3, within="PT10M"),
                SequenceTrigger(triggers=[EventTrigger(match={"tripwire.resource.id": "x.*"})]),
            ],
        ),
        actions=[DoNothingAction()],
        actions_on_trigger=[DoNothingAction()],
        actions_on_resolve=[DoNothingAction()],
    )
    assert a.trigger.triggers[0].within == 600.0  # type: ignore[union-attr]
    assert a.model_dump()["trigger"]["triggers"][1]["type"] == "sequence"
    assert Automation.model_validate(a.model_dump(mode="json")) == a


def test_match_related_list_and_where_compiled_once() -> None:
    t = EventTrigger(
        expect=["x"],
        match_related=[{"tripwire.resource.role": "a"}, {"tripwire.resource.role": "b"}],
        where={"$.payload.n": {"gt": 1}},
    )
    assert len(t.related_specs()) == 2
    assert t.compiled_where() is t.compiled_where()


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        pytest.param(600, 600.0, id="int"),
        pytest.param(0.5, 0.5, id="float"),
        pytest.param("PT10M", 600.0, id="minutes"),
        pytest.param("PT1H30M", 5400.0, id="hours-minutes"),
        pytest.param("P1D", 86400.0, id="day"),
        pytest.param("PT0.25S", 0.25, id="fraction"),
        pytest.param(timedelta(minutes=2), 120.0, id="timedelta"),
    ],
)
def test_parse_seconds(value: Any, seconds: float) -> None:
    assert parse_seconds(value) == seconds


@pytest.mark.parametrize("value", ["P1M", "P1Y", "PT", "P", "10m", "", True, None, -1, float("nan"), [1]])
def test_parse_seconds_refuses(value: Any) -> None:
    with pytest.raises(ValueError):
        parse_seconds(value)


def test_to_us_is_exact() -> None:
    assert to_us(9.999999) == 9_999_999
    assert to_us(600) == 600_000_000
    assert to_us(None) == 0
