"""Conformance: every scenario of ``shared/conformance/scenarios.json`` through the real evaluator core.

Harness contract (shared/conformance/README.md): the automation JSON goes through
``Automation.model_validate`` (a ValidationError means rejected), events through the evaluator's
intake and core with an in-memory store and a fake clock; only the listed steps run. This file
drives the core and compares what came out; it implements none of the rules.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from pydantic import ValidationError

from events.model import Event
from triggers.evaluate import Evaluator
from triggers.models import Automation
from triggers.outcomes import Outcomes
from triggers.state import MemoryStateStore

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
FIELDS = (
    "rejected",
    "fires",
    "fire_steps",
    "fire_times",
    "triggering_events",
    "triggering_labels",
    "resolves",
    "resolve_steps",
)


def scenario_file() -> Path:
    override = os.environ.get("TRIPWIRE_CONFORMANCE_FILE")
    return Path(override) if override else REPO.parent / "shared" / "conformance" / "scenarios.json"


def load_scenarios() -> list[dict[str, Any]]:
    path = scenario_file()
    if not path.is_file():
        raise FileNotFoundError(
            f"conformance scenarios not found at {path}: put shared/ beside the repository "
            "or set TRIPWIRE_CONFORMANCE_FILE"
        )
    return json.loads(path.read_text())["scenarios"]


SCENARIOS = load_scenarios()


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def micros(seconds: float) -> int:
    return round(seconds * 1_000_000)


def since_t0_us(moment: datetime) -> int:
    return (moment - T0) // timedelta(microseconds=1)


def _labels_key(labels: dict[str, str]) -> str:
    return json.dumps(labels, sort_keys=True)


def summarise(fires: list[tuple[int, int, int | None, dict[str, str]]], resolve_steps: list[int]) -> dict:
    """Canonical outcome: firings of one step are a multiset, so sort them within the step."""
    fires = sorted(fires, key=lambda f: (f[0], f[1], -1 if f[2] is None else f[2], _labels_key(f[3])))
    return {
        "rejected": False,
        "fires": len(fires),
        "fire_steps": [f[0] for f in fires],
        "fire_times": [f[1] for f in fires],
        "triggering_events": [f[2] for f in fires],
        "triggering_labels": [f[3] for f in fires],
        "resolves": len(resolve_steps),
        "resolve_steps": sorted(resolve_steps),
    }


def expected_of(scenario: dict[str, Any]) -> dict:
    expect = scenario["expect"]
    if expect["rejected"]:
        return {"rejected": True}
    fires = list(
        zip(
            expect["fire_steps"],
            [micros(t) for t in expect["fire_times"]],
            expect["triggering_events"],
            expect["triggering_labels"],
            strict=True,
        )
    )
    assert len(fires) == expect["fires"], "scenario file is inconsistent: fires vs fire_steps"
    return summarise(fires, expect["resolve_steps"])


def run(scenario: dict[str, Any]) -> dict:
    """Drive one scenario through the evaluator exactly as the harness contract says."""
    try:
        automation = Automation.model_validate(scenario["automation"])
    except ValidationError as exc:
        return {"rejected": True, "error": str(exc)}
    core = Evaluator(MemoryStateStore())
    core.add(automation)
    if automation.enabled:
        core.enable(automation.id, at(0))
    events = scenario["events"]
    first_delivery: dict[UUID, int] = {}
    fires: list[tuple[int, int, int | None, dict[str, str]]] = []
    resolve_steps: list[int] = []
    for k, step in enumerate(scenario["steps"]):
        if "deliver" in step:
            i = step["deliver"]
            e = events[i]
            wall = step.get("wall", e.get("received_at", e["at"]))
            event = Event(
                id=e["id"],
                occurred=at(e["at"]),
                event=e["event"],
                resource=e["resource"],
                related=e["related"],
                payload=e["payload"],
                follows=e.get("follows"),
                received=at(e.get("received_at", wall)),
            )
            first_delivery.setdefault(event.id, i)
            outcomes: Outcomes = core.handle_event(event, now=at(wall))
        else:
            outcomes = core.tick(now=at(step["check"]))
        for firing in outcomes.firings:
            trigger_index = None if firing.event_id is None else first_delivery.get(firing.event_id, -999)
            fires.append((k, since_t0_us(firing.fire_time), trigger_index, firing.labels))
        resolve_steps.extend(k for _ in outcomes.resolutions)
    return summarise(fires, resolve_steps)


def describe(scenario_id: str, expected: dict, actual: dict) -> str:
    lines = [f"scenario {scenario_id!r} does not conform:"]
    for field in FIELDS:
        want, got = expected.get(field), actual.get(field)
        if field == "fire_times":
            want = None if want is None else [w / 1_000_000 for w in want]
            got = None if got is None else [g / 1_000_000 for g in got]
        mark = "  " if want == got else "!!"
        lines.append(f"{mark} {field}: expected {want!r}, actual {got!r}")
    if "error" in actual:
        lines.append(f"validation error: {actual['error']}")
    return "\n".join(lines)


def test_scenario_file_is_complete() -> None:
    ids = [s["id"] for s in SCENARIOS]
    assert ids, f"no scenarios in {scenario_file()}"
    assert len(ids) == len(set(ids)), "scenario ids must be unique"


@pytest.mark.parametrize("scenario", [pytest.param(s, id=s["id"]) for s in SCENARIOS])
def test_scenario(scenario: dict[str, Any]) -> None:
    expected = expected_of(scenario)
    actual = run(scenario)
    if {f: actual.get(f) for f in FIELDS} != {f: expected.get(f) for f in FIELDS}:
        pytest.fail(describe(scenario["id"], expected, actual), pytrace=False)
