"""The pure evaluator: tables of cases with a fake clock, outcomes, state records and the store contract."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any
from uuid import UUID

import pytest

from events.model import Event
from triggers.evaluate import Evaluator
from triggers.models import Automation
from triggers.outcomes import Outcomes, to_us
from triggers.state import MemoryStateStore

T0 = datetime(2026, 3, 1, tzinfo=UTC)
FAILED = "tripwire.flow-run.Failed"
HEARTBEAT = "tripwire.worker.heartbeat"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def secs(moment: datetime) -> float:
    return (moment - T0).total_seconds()


def event(name: str, t: float, rid: str = "run-1", deployment: str = "etl", **payload: Any) -> Event:
    return Event(
        event=name,
        occurred=at(t),
        resource={"tripwire.resource.id": rid},
        related=[{"tripwire.resource.id": deployment, "tripwire.resource.role": "deployment"}],
        payload=payload,
    )


def sequential_ids() -> Iterator[UUID]:
    return (UUID(int=n) for n in count(1))


def evaluator(
    trigger: dict[str, Any], store: MemoryStateStore | None = None, **options: Any
) -> tuple[Evaluator, Automation]:
    automation = Automation.model_validate({"name": "under test", "trigger": trigger})
    ids = sequential_ids()
    core = Evaluator(store if store is not None else MemoryStateStore(), new_id=lambda: next(ids), **options)
    core.add(automation)
    core.enable(automation.id, at(0))
    return core, automation


def drive(core: Evaluator, steps: list[tuple]) -> Outcomes:
    out = Outcomes()
    for step in steps:
        if step[0] == "check":
            out.extend(core.tick(at(step[1])))
        else:
            name, t, *rest = step
            e = event(name, t, *rest)
            out.extend(core.handle_event(e, at(t)))
    return out


THREE_FAILURES = {
    "type": "event",
    "expect": [FAILED],
    "for_each": ["related:deployment:tripwire.resource.id"],
    "threshold": 3,
    "within": 600,
}


@pytest.mark.parametrize(
    ("trigger", "steps", "fire_times", "resolve_count"),
    [
        pytest.param(
            THREE_FAILURES,
            [(FAILED, 0), (FAILED, 540), (FAILED, 660), (FAILED, 720)],
            [720],
            0,
            id="3-failures-in-10-min-sliding",
        ),
        pytest.param(
            THREE_FAILURES,
            [(FAILED, 0), (FAILED, 1, "r2", "a"), (FAILED, 2, "r3", "b"), (FAILED, 3)],
            [],
            0,
            id="keys-are-separate",
        ),
        pytest.param(
            THREE_FAILURES,
            [(FAILED, 0), (FAILED, 1), (FAILED, 2), ("check", 601), ("check", 602)],
            [2],
            1,
            id="resolves-a-window-after-firing",
        ),
        pytest.param(
            {**THREE_FAILURES, "cooldown": 100},
            [
                (FAILED, 0),
                (FAILED, 1),
                (FAILED, 2),
                (FAILED, 50),
                (FAILED, 60),
                (FAILED, 101),
                (FAILED, 102),
                (FAILED, 103),
                (FAILED, 104),
            ],
            [2, 104],
            0,
            id="cooldown-ignores-events",
        ),
        pytest.param(
            {"type": "event", "expect": [HEARTBEAT], "posture": "Proactive", "within": 30},
            [("check", 29), ("check", 30), (HEARTBEAT, 40), ("check", 69), ("check", 70)],
            [30, 70],
            1,
            id="proactive-armed-at-enable",
        ),
        pytest.param(
            {
                "type": "event",
                "after": ["tripwire.flow-run.Running"],
                "expect": ["tripwire.flow-run.Completed"],
                "posture": "Proactive",
                "within": 60,
                "for_each": ["tripwire.resource.id"],
            },
            [
                ("tripwire.flow-run.Running", 0),
                ("tripwire.flow-run.Running", 5, "r2"),
                ("tripwire.flow-run.Completed", 30, "r2"),
                ("check", 100),
            ],
            [60],
            0,
            id="proactive-after-sla",
        ),
    ],
)
def test_cases(trigger: dict, steps: list[tuple], fire_times: list[float], resolve_count: int) -> None:
    core, _ = evaluator(trigger)
    out = drive(core, steps)
    assert [secs(f.fire_time) for f in out.firings] == fire_times
    assert len(out.resolutions) == resolve_count


def test_firing_and_resolution_carry_what_a_service_records() -> None:
    core, automation = evaluator(THREE_FAILURES)
    events = [event(FAILED, t) for t in (0, 10, 20)]
    outs = [core.handle_event(e, at(i * 10)) for i, e in enumerate(events)]
    [firing] = outs[2].firings
    assert firing.id == UUID(int=1)
    assert firing.automation_id == automation.id
    assert firing.trigger_path == "t"
    assert firing.labels == {"related:deployment:tripwire.resource.id": "etl"}
    assert firing.event_id == events[2].id
    assert firing.event_ids == tuple(e.id for e in events)
    assert firing.fire_time == at(20)
    assert firing.processing == 3
    [resolution] = core.tick(at(620)).resolutions
    assert (resolution.firing_id, resolution.firings, resolution.event_id) == (firing.id, 1, None)
    assert resolution.resolve_time == at(620)
    assert resolution.record_key == firing.record_key
    assert resolution.processing == 4


def test_records_are_json_and_expose_due_times() -> None:
    store = MemoryStateStore()
    core, _ = evaluator(
        {
            "type": "event",
            "expect": [HEARTBEAT],
            "for_each": ["tripwire.resource.id"],
            "posture": "Proactive",
            "within": 300,
        },
        store,
    )
    core.handle_event(event(HEARTBEAT, 0, "gpu-1"), at(0))
    core.handle_event(event(HEARTBEAT, 120, "gpu-2"), at(120))
    assert [(at_us - to_us(T0)) // 1_000_000 for at_us, _ in store.due(to_us(at(10_000)))] == [300, 420]
    for key in store:
        record = store.get(key)
        assert json.loads(json.dumps(record)) == record


@pytest.mark.parametrize(
    ("threshold", "beats", "deadline"),
    [
        pytest.param(1, [0], 300, id="one-beat"),
        pytest.param(1, [0, 100, 50], 400, id="newest-beat-counts-not-the-last-delivered"),
        pytest.param(2, [0, 30, 60], 330, id="two-beats-second-newest-plus-within"),
        pytest.param(2, [0], 300, id="too-few-beats-armed-at-plus-within"),
        pytest.param(3, [0, 10, 20, 500], 500, id="never-before-the-newest"),
    ],
)
def test_proactive_deadline_from_recorded_events(threshold: int, beats: list[float], deadline: float) -> None:
    """Rules note 4: the deadline is max(armed_at + within, newest, k-th newest + within)."""
    store = MemoryStateStore()
    core, _ = evaluator(
        {
            "type": "event",
            "expect": [HEARTBEAT],
            "for_each": ["tripwire.resource.id"],
            "posture": "Proactive",
            "threshold": threshold,
            "within": 300,
        },
        store,
    )
    for t in beats:
        core.handle_event(event(HEARTBEAT, t, "gpu-1"), at(t))
    [(due, _)] = store.due(to_us(at(100_000)))
    assert due == to_us(at(deadline))


def test_state_lives_in_the_store_so_a_new_evaluator_carries_on() -> None:
    store = MemoryStateStore()
    first, automation = evaluator(THREE_FAILURES, store)
    first.handle_event(event(FAILED, 0), at(0))
    first.handle_event(event(FAILED, 10), at(10))
    second = Evaluator(store, processing_start=first.processing)
    second.add(automation)
    second.enable(automation.id, at(0))  # the same enabling: state is kept
    assert len(second.handle_event(event(FAILED, 20), at(20)).firings) == 1


def test_enable_again_later_starts_fresh_and_disable_stops_evaluation() -> None:
    core, automation = evaluator(THREE_FAILURES)
    core.handle_event(event(FAILED, 0), at(0))
    core.handle_event(event(FAILED, 1), at(1))
    core.disable(automation.id)
    assert not core.handle_event(event(FAILED, 2), at(2))
    core.enable(automation.id, at(3))
    assert not core.handle_event(event(FAILED, 4), at(4))
    assert not core.handle_event(event(FAILED, 5), at(5))
    assert core.handle_event(event(FAILED, 6), at(6)).firings


def test_replacing_an_automation_keeps_state_only_for_the_same_trigger() -> None:
    core, automation = evaluator(THREE_FAILURES)
    core.handle_event(event(FAILED, 0), at(0))
    core.handle_event(event(FAILED, 1), at(1))
    core.add(automation.model_copy(update={"description": "new words"}))
    assert core.handle_event(event(FAILED, 2), at(2)).firings
    changed = Automation.model_validate(
        {**automation.model_dump(mode="json"), "trigger": {**THREE_FAILURES, "threshold": 2}}
    )
    core.add(changed)
    assert not core.handle_event(event(FAILED, 3), at(3)), "a changed trigger is registered disabled"
    core.enable(changed.id, at(4))
    assert not core.handle_event(event(FAILED, 5), at(5))
    assert core.handle_event(event(FAILED, 6), at(6)).firings


def test_keys_for_names_the_matched_records_and_their_composites() -> None:
    core, automation = evaluator(
        {
            "type": "sequence",
            "triggers": [
                {"type": "event", "expect": [FAILED], "for_each": ["tripwire.resource.id"]},
                {"type": "compound", "require": "any", "triggers": [{"type": "event", "expect": [FAILED]}]},
            ],
        }
    )
    aid = automation.id
    assert core.keys_for(event(FAILED, 0, "run-7")) == [
        f'{{{aid}}}/t.0/["run-7"]',
        f"{{{aid}}}/t",
        f"{{{aid}}}/t.1.0/[]",
        f"{{{aid}}}/t.1",
    ]
    assert core.keys_for(event("other", 0)) == []


COMPOSITE_AND_PROACTIVE = {
    "type": "compound",
    "require": 2,
    "within": 900,
    "triggers": [
        {
            "type": "event",
            "match": {"tripwire.resource.id": "gpu-1"},
            "expect": [HEARTBEAT],
            "posture": "Proactive",
            "within": 300,
        },
        {
            "type": "event",
            "expect": [FAILED],
            "threshold": 2,
            "within": 600,
            "for_each": ["tripwire.resource.id"],
        },
    ],
}
WORKLOAD: list[tuple] = [
    (HEARTBEAT, 0, "gpu-1"),
    (FAILED, 100),
    (FAILED, 150, "run-2"),
    (FAILED, 200),
    ("check", 250),
    ("check", 300),
    (HEARTBEAT, 310, "gpu-1"),
    (FAILED, 400),
    (FAILED, 450),
    ("check", 700),
    ("check", 1300),
]


def test_loading_only_the_named_keys_gives_the_same_outcomes() -> None:
    """The service contract: preload ``keys_for``/``keys_for_tick`` into an overlay, evaluate, write back."""
    reference, _ = evaluator(COMPOSITE_AND_PROACTIVE)
    expected = drive(reference, WORKLOAD)

    backing = MemoryStateStore()
    core, _ = evaluator(COMPOSITE_AND_PROACTIVE, backing)
    got = Outcomes()
    for step in WORKLOAD:
        overlay = MemoryStateStore(track=True)
        if step[0] == "check":
            now = at(step[1])
            keys = core.keys_for_tick(now, [k for _, k in backing.due(to_us(now))])
        else:
            e = event(step[0], step[1], *step[2:])
            keys = core.keys_for(e)
        overlay.load({k: (backing.get(k), backing.due_of(k)) for k in keys if backing.get(k) is not None})
        core.store = overlay
        got.extend(core.tick(now) if step[0] == "check" else core.handle_event(e, at(step[1])))
        for key, (record, due) in overlay.drain_changes().items():
            if record is None:
                backing.delete(key)
            else:
                backing.put(key, record, due)
    assert [(secs(f.fire_time), f.event_id is None) for f in got.firings] == [
        (secs(f.fire_time), f.event_id is None) for f in expected.firings
    ]
    assert len(expected.firings) == 2
    assert len(got.resolutions) == len(expected.resolutions)


def test_only_the_matching_automation_of_many_fires() -> None:
    core = Evaluator(MemoryStateStore())
    automations = [
        Automation.model_validate({"name": f"a{k}", "trigger": {"type": "event", "expect": [f"noise.{k}"]}})
        for k in range(200)
    ]
    for a in automations:
        core.add(a)
        core.enable(a.id, at(0))
    out = core.handle_event(Event(event="noise.123", resource={"tripwire.resource.id": "x"}), at(1))
    assert [f.automation_id for f in out.firings] == [automations[123].id]
    assert len(core.index.candidates("noise.123", {"tripwire.resource.id": "x"})) == 1


def test_an_automation_never_sees_its_own_lifecycle_events() -> None:
    """Evaluator note 5: A reacting to every automation's firings does not loop on its own."""
    watcher = Automation.model_validate(
        {"name": "watch firings", "trigger": {"type": "event", "expect": ["tripwire.automation.triggered"]}}
    )
    other = Automation.model_validate({"name": "other", "trigger": {"type": "event", "expect": [FAILED]}})
    evaluator = Evaluator(MemoryStateStore())
    for automation in (watcher, other):
        evaluator.add(automation)
        evaluator.enable(automation.id, T0)

    def triggered(about: Automation) -> Event:
        return Event(
            event="tripwire.automation.triggered",
            occurred=at(1),
            resource={"tripwire.resource.id": f"tripwire.automation.{about.id}"},
        )

    assert evaluator.handle_event(triggered(watcher), at(1)).firings == []
    fired = evaluator.handle_event(triggered(other), at(1)).firings
    assert [f.automation_id for f in fired] == [watcher.id]
