"""SchedulerService with an injected clock, on SQLite and PostgreSQL, events on a real Redis stream."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from events.bus import RedisBus
from events.codec import decode_event
from events.emit import EventEmitter
from tripwire.db import Database
from tripwire.orchestration.deployments import DeploymentStore, parse_deployment
from tripwire.orchestration.scheduler import SchedulerService, schedule_key
from tripwire.orchestration.states import State
from tripwire.services import ServiceState
from tripwire.settings import OrchestrationSettings, Settings

pytestmark = [pytest.mark.redis]

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def a_deployment(name: str = "etl", **changes: Any):
    return parse_deployment(
        {
            "name": name,
            "flow_name": "etl",
            "entrypoint": "/srv/flows/etl.py:etl",
            "parameters": {"limit": 10},
            "tags": ["nightly"],
            "work_pool": "pool-a",
            "schedules": [{"interval": 600, "anchor_date": T0.isoformat()}],
            **changes,
        }
    )


class Clock:
    """The time every part of a test sees; moved by hand."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def tuned(settings: Settings) -> Settings:
    orchestration = OrchestrationSettings(
        lookahead_s=3600,
        min_scheduled_runs=3,
        max_scheduled_runs=50,
        late_after_s=15,
        scheduler_interval_s=0.05,
    )
    return settings.model_copy(update={"orchestration": orchestration})


@pytest.fixture
async def emitter(redis_client, settings):
    bus = RedisBus(redis_client, settings.streams)
    yield EventEmitter(bus, settings)
    await bus.close()


@pytest.fixture
def store(database, emitter, clock) -> DeploymentStore:
    return DeploymentStore(database, emitter, clock=clock)


@pytest.fixture
def make_scheduler(database, emitter, tuned, clock) -> Callable[..., SchedulerService]:
    def make(db: Database | None = None, **options: Any) -> SchedulerService:
        return SchedulerService(db or database, emitter, tuned, clock=clock, **options)

    return make


async def scheduled_times(store: DeploymentStore, name: str = "etl") -> list[datetime]:
    deployment = await store.resolve(name)
    runs = await store.runs.list(deployment_id=deployment.id, newest_first=False, limit=1000)
    return [r.scheduled_time for r in runs]


async def stream_events(redis_client, settings, name: str) -> list:
    entries = await redis_client.xrange(settings.streams.events)
    return [e for e in (decode_event(f[b"data"]) for _, f in entries) if e.event == name]


# -- ahead of time, bounded -------------------------------------------------------------------------------


async def test_creates_runs_ahead_within_the_lookahead(store, make_scheduler, clock) -> None:
    deployment = (await store.apply(a_deployment())).deployment
    scheduler = make_scheduler()
    report = await scheduler.tick()
    assert report.created == 6  # every 10 minutes, strictly after now, up to now + 1 h
    assert await scheduled_times(store) == [T0 + 10 * i * MINUTE for i in range(1, 7)]
    runs = await store.runs.list(deployment_id=deployment.id)
    stored = deployment.schedules[0]
    assert {r.state for r in runs} == {State.SCHEDULED}
    assert {(r.schedule_id, r.work_pool, r.flow_name) for r in runs} == {(stored.id, "pool-a", "etl")}
    assert all(r.parameters == {"limit": 10} and r.tags == ["nightly"] for r in runs)
    assert {r.idempotency_key for r in runs} == {schedule_key(stored.id, r.scheduled_time) for r in runs}

    assert (await scheduler.tick()).created == 0
    clock.advance(10 * MINUTE)  # the first run is due now; one more enters the window
    assert (await scheduler.tick()).created == 1
    assert (await scheduled_times(store))[-1] == T0 + 70 * MINUTE


async def test_at_least_min_and_at_most_max_runs(
    store, make_scheduler, tuned, database, emitter, clock
) -> None:
    await store.apply(a_deployment("daily", schedules=[{"cron": "0 9 * * *", "timezone": "Europe/Berlin"}]))
    await store.apply(a_deployment("often", schedules=[{"interval": 60}]))
    capped = tuned.model_copy(
        update={"orchestration": tuned.orchestration.model_copy(update={"max_scheduled_runs": 4})}
    )
    await SchedulerService(database, emitter, capped, clock=clock).tick()
    assert await scheduled_times(store, "daily") == [
        datetime(2026, 11, 22, 8, tzinfo=UTC),  # 09:00 CET, beyond the hour of look-ahead: min 3
        datetime(2026, 11, 23, 8, tzinfo=UTC),
        datetime(2026, 11, 24, 8, tzinfo=UTC),
    ]
    assert await scheduled_times(store, "often") == [T0 + i * MINUTE for i in range(1, 5)]  # max 4


# -- idempotency --------------------------------------------------------------------------------------------


async def test_two_schedulers_and_a_restart_never_double(store, make_scheduler, database) -> None:
    await store.apply(a_deployment())
    await store.apply(a_deployment("other", schedules=[{"cron": "*/5 * * * *"}, {"interval": 900}]))
    second_db = Database(database.url)
    await second_db.start()
    try:
        first, second = make_scheduler(), make_scheduler(second_db)
        reports = await asyncio.gather(first.tick(), second.tick())
    finally:
        await second_db.stop()
    expected = 6 + 12 + 4
    assert sum(r.created for r in reports) == expected
    runs = await store.runs.list(limit=1000)
    assert len(runs) == expected
    assert len({r.idempotency_key for r in runs}) == expected
    restarted = make_scheduler()  # a new process: nothing cached
    assert (await restarted.tick()).created == 0
    assert len(await store.runs.list(limit=1000)) == expected


# -- paused deployments and schedules ----------------------------------------------------------------------


async def test_a_paused_deployment_gets_no_runs_and_loses_its_unstarted_ones(
    store, make_scheduler, clock
) -> None:
    await store.apply(a_deployment(paused=True))
    scheduler = make_scheduler()
    assert (await scheduler.tick()).created == 0
    assert await store.set_paused("etl", False)
    assert (await scheduler.tick()).created == 6
    assert await store.set_paused("etl", True)
    assert await scheduled_times(store) == []
    clock.advance(30 * MINUTE)
    assert (await scheduler.tick()).created == 0
    assert await store.set_paused("etl", False)
    assert (await scheduler.tick()).created == 6
    assert (await scheduled_times(store))[0] == T0 + 40 * MINUTE


async def test_a_paused_schedule_gets_no_runs(store, make_scheduler) -> None:
    await store.apply(a_deployment(schedules=[{"interval": 600}, {"interval": 1800, "active": False}]))
    scheduler = make_scheduler()
    assert (await scheduler.tick()).created == 6  # only the active one
    deployment = await store.resolve("etl")
    second = deployment.schedules[1]
    assert await store.set_schedule_active("etl", 0, False)
    assert await store.set_schedule_active("etl", 1, True)
    await scheduler.tick()
    runs = await store.runs.list(deployment_id=deployment.id, limit=1000)
    assert {r.schedule_id for r in runs} == {second.id}
    assert len(runs) == 3  # every 30 minutes: 2 within the hour, at least 3


async def test_runs_made_while_a_pause_commits_are_removed(store, make_scheduler) -> None:
    """Note 3 of the scheduler: it planned from the unpaused deployment, the pause landed before its
    runs did; it notices after creating them and deletes them."""
    scheduler = make_scheduler()
    await store.apply(a_deployment())
    [(deployment, stored)] = await store.active_schedules()
    assert await store.set_paused("etl", True)  # the store found nothing to delete yet
    made, current = await scheduler._ensure(deployment, stored, [T0 + MINUTE, T0 + 2 * MINUTE])
    assert (made, current) == (0, False)
    assert await scheduled_times(store) == []


# -- Late ---------------------------------------------------------------------------------------------------


async def test_a_run_not_started_in_time_becomes_late_once(
    store, make_scheduler, clock, redis_client, settings, database, emitter
) -> None:
    await store.apply(a_deployment(schedules=[]))
    due, _ = await store.create_run("etl")
    claimed_run, _ = await store.create_run("etl", tags=["claimed"])
    other_pool = DeploymentStore(database, emitter, clock=clock)
    assert [r.id for r in await other_pool.runs.claim("pool-a", "w1", limit=1)] in (
        [due.id],
        [claimed_run.id],
    )
    scheduler, another = make_scheduler(), make_scheduler()
    clock.advance(timedelta(seconds=15))
    assert (await scheduler.tick()).late == 0  # not more than 15 s yet
    clock.advance(timedelta(seconds=1))
    reports = await asyncio.gather(scheduler.tick(), another.tick())
    assert sum(r.late for r in reports) == 1
    runs = {r.id: r for r in await store.runs.list()}
    assert sorted(r.state for r in runs.values()) == [State.LATE, State.PENDING]
    late_run = next(r for r in runs.values() if r.state is State.LATE)
    assert "not started within 15s" in (late_run.state_message or "")
    events = await stream_events(redis_client, settings, "tripwire.flow-run.Late")
    assert len(events) == 1
    assert events[0].payload["previous"] == "Scheduled"
    assert events[0].resource["tripwire.resource.id"] == f"tripwire.flow-run.{late_run.id}"
    # A Late run is still run when a worker is free.
    assert [r.id for r in await other_pool.runs.claim("pool-a", "w2")] == [late_run.id]


# -- extra jobs and the service loop -----------------------------------------------------------------------


async def test_per_tick_jobs_get_now_and_a_failing_one_does_not_stop_the_others(
    make_scheduler, clock
) -> None:
    seen: list[datetime] = []

    async def broken(now: datetime) -> None:
        raise RuntimeError("boom")

    async def reaper(now: datetime) -> None:
        seen.append(now)

    jobs: list[Callable[[datetime], Awaitable[object]]] = [broken, reaper]
    scheduler = make_scheduler(per_tick_jobs=jobs)
    await scheduler.tick()
    scheduler.per_tick_jobs.append(reaper)
    clock.advance(MINUTE)
    await scheduler.tick()
    assert seen == [T0, T0 + MINUTE, T0 + MINUTE]


async def test_the_service_ticks_until_stopped(store, make_scheduler) -> None:
    await store.apply(a_deployment())
    ticked = asyncio.Event()

    async def signal(now: datetime) -> None:
        ticked.set()

    scheduler = make_scheduler(per_tick_jobs=[signal])
    assert scheduler.state is ServiceState.CREATED
    async with scheduler:
        assert scheduler.state is ServiceState.RUNNING
        await asyncio.wait_for(ticked.wait(), 30)
        assert len(await scheduled_times(store)) == 6
    assert scheduler.state is ServiceState.STOPPED
