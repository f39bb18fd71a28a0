"""The matching index: candidate sets, and never missing a trigger that matches."""

from __future__ import annotations

from typing import Any

import pytest

from events.model import Event
from triggers.compiled import EventPlan, EventView, compile_automation
from triggers.index import AutomationIndex
from triggers.models import Automation

TRIGGERS: dict[str, dict[str, Any]] = {
    "failed": {"expect": ["tripwire.flow-run.Failed"]},
    "failed-or-crashed": {"expect": ["tripwire.flow-run.Failed", "tripwire.flow-run.Crashed"]},
    "any-flow-run": {"expect": ["tripwire.flow-run.*"]},
    "flow-run-but-running": {"expect": ["tripwire.flow-run.*", "!tripwire.flow-run.Running"]},
    "after-pending": {"after": ["tripwire.flow-run.Pending"], "expect": ["tripwire.flow-run.Running"]},
    "after-any-expect": {"after": ["tripwire.flow-run.Pending"], "expect": []},
    "suffix": {"expect": ["*.Failed"]},
    "only-negative": {"expect": ["!tripwire.flow-run.Failed"], "match": {"team": "data"}},
    "resource-exact": {"expect": ["tripwire.flow-run.Failed"], "match": {"tripwire.resource.id": "run-1"}},
    "resource-prefix": {"expect": ["tripwire.flow-run.Failed"], "match": {"tripwire.resource.id": "run-*"}},
    "resource-suffix": {"expect": ["tripwire.flow-run.Failed"], "match": {"tripwire.resource.id": "*-1"}},
    "any-name-team": {"match": {"team": "data"}},
    "any-name-team-glob": {"match": {"team": "?ata"}},
    "any-name-unindexable": {"match": {"team": "*"}},
}


def plan_of(name: str, ordinal: int) -> EventPlan:
    trigger = {"type": "event", **TRIGGERS[name]}
    automation = Automation.model_validate({"name": name, "trigger": trigger})
    return compile_automation(automation, ordinal).event_plans[0]


@pytest.fixture(scope="module")
def plans() -> dict[str, EventPlan]:
    return {name: plan_of(name, i) for i, name in enumerate(TRIGGERS)}


@pytest.fixture(scope="module")
def index(plans: dict[str, EventPlan]) -> AutomationIndex:
    return AutomationIndex(plans.values())


def event(name: str, **labels: str) -> Event:
    return Event(event=name, resource={"tripwire.resource.id": "run-1", **labels})


@pytest.mark.parametrize(
    ("name", "labels", "expected"),
    [
        pytest.param(
            "tripwire.flow-run.Failed",
            {},
            {
                "failed",
                "failed-or-crashed",
                "any-flow-run",
                "flow-run-but-running",
                "after-any-expect",
                "suffix",
                "resource-exact",
                "resource-prefix",
                "resource-suffix",
                "any-name-unindexable",
            },
            id="failed-run-1",
        ),
        pytest.param(
            "tripwire.flow-run.Running",
            {},
            {
                "any-flow-run",
                "flow-run-but-running",
                "after-pending",
                "after-any-expect",
                "any-name-unindexable",
            },
            id="running",
        ),
        pytest.param(
            "tripwire.flow-run.Crashed",
            {"team": "data"},
            {
                "failed-or-crashed",
                "any-flow-run",
                "flow-run-but-running",
                "after-any-expect",
                "only-negative",
                "any-name-team",
                "any-name-team-glob",
                "any-name-unindexable",
            },
            id="crashed-team-data",
        ),
        pytest.param("github.push", {}, {"after-any-expect", "any-name-unindexable"}, id="unrelated-name"),
        pytest.param(
            "github.push",
            {"team": "data"},
            {
                "after-any-expect",
                "only-negative",
                "any-name-team",
                "any-name-team-glob",
                "any-name-unindexable",
            },
            id="unrelated-name-team-data",
        ),
        pytest.param(
            "tripwire.task-run.Failed",
            {},
            {"after-any-expect", "suffix", "any-name-unindexable"},
            id="suffix-name",
        ),
    ],
)
def test_candidates(index: AutomationIndex, name: str, labels: dict[str, str], expected: set[str]) -> None:
    got = {
        p.automation.automation.name
        for p in index.candidates(name, {"tripwire.resource.id": "run-1", **labels})
    }
    assert got == expected


def test_candidates_come_in_declaration_order(index: AutomationIndex) -> None:
    found = index.candidates("tripwire.flow-run.Failed", {"tripwire.resource.id": "run-1"})
    assert [p.ordinal for p in found] == sorted(p.ordinal for p in found)
    assert len({id(p) for p in found}) == len(found)


@pytest.mark.parametrize(
    "ev",
    [
        pytest.param(event("tripwire.flow-run.Failed"), id="failed"),
        pytest.param(event("tripwire.flow-run.Failed", team="data"), id="failed-data"),
        pytest.param(event("tripwire.flow-run.Running", team="data"), id="running-data"),
        pytest.param(event("tripwire.flow-run.Pending"), id="pending"),
        pytest.param(event("tripwire.task-run.Failed"), id="task-failed"),
        pytest.param(event("x", team="bata"), id="other-bata"),
        pytest.param(
            Event(event="tripwire.flow-run.Failed", resource={"tripwire.resource.id": "job-1"}), id="job-1"
        ),
    ],
)
def test_index_never_misses_a_matching_trigger(
    plans: dict[str, EventPlan], index: AutomationIndex, ev: Event
) -> None:
    view = EventView(ev)
    matching = {name for name, p in plans.items() if p.classify(view)}
    candidates = {p.automation.automation.name for p in index.candidates(view.name, view.resource)}
    assert matching <= candidates


def w1_noise(total: int) -> list[EventPlan]:
    """The W1 workload's automations (shared/bench/WORKLOADS.md): one target plus noise."""
    out = [
        plan_of_trigger(
            {
                "expect": ["bench.run.failed"],
                "match": {"tripwire.resource.id": "bench.run.*"},
                "for_each": ["tripwire.resource.id"],
                "threshold": 3,
                "within": 600,
            },
            0,
        )
    ]
    for k in range(1, total):
        if k % 2:
            trigger = {"expect": [f"noise.{k}.failed"]}
        else:
            trigger = {"expect": ["bench.run.failed"], "match": {"tripwire.resource.id": f"other.svc.{k}.*"}}
        out.append(plan_of_trigger(trigger, k))
    return out


def plan_of_trigger(trigger: dict[str, Any], ordinal: int) -> EventPlan:
    automation = Automation.model_validate({"name": f"a{ordinal}", "trigger": {"type": "event", **trigger}})
    return compile_automation(automation, ordinal).event_plans[0]


@pytest.mark.parametrize(
    "total", [pytest.param(10, id="10-automations"), pytest.param(1000, id="1000-automations")]
)
def test_noise_automations_are_not_candidates(total: int) -> None:
    index = AutomationIndex(w1_noise(total))
    found = index.candidates("bench.run.failed", {"tripwire.resource.id": "bench.run.17"})
    assert [p.automation.automation.name for p in found] == ["a0"]
    assert index.candidates("noise.5.failed", {"tripwire.resource.id": "bench.run.17"})[0].ordinal == 5
    assert index.candidates("unknown", {"tripwire.resource.id": "bench.run.17"}) == []
