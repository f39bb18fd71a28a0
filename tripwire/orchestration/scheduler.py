"""SchedulerService: creates the flow runs of active schedules ahead of time, and marks late runs Late.

1. Every ``orchestration.scheduler_interval_s`` (one ``tick``): for each active schedule of each
   deployment that is not paused, the next times after now (``occurrences.next_occurrences``) — all of
   those within ``lookahead_s``, but at least ``min_scheduled_runs`` and at most ``max_scheduled_runs`` —
   each get a Scheduled run with the idempotency key ``schedule:<schedule id>:<UTC ISO time>``
   (``FlowRunStore.create_many``). Keys already in the table are not sent again; a key another
   scheduler inserts at the same moment loses the race in SQL (unique key), so restarts and several
   schedulers never make a run twice.
2. A schedule's plan is computed again only when it can have changed: the deployment or the schedule
   changed (their versions), the plan's first run came due, or the next time after the plan enters the
   look-ahead window; and at least every ``RECHECK_S``. Plans are computed in a worker thread, so an
   expensive rule never stalls the event loop.
3. Pausing while the scheduler works: after creating runs, it checks that the deployment and schedule
   are still at the versions it planned from, unpaused and active; otherwise it deletes that schedule's
   unstarted runs (the next tick plans the new definition). The store deletes after its own commit
   (``deployments`` note 3), so whichever commits last, no run survives a pause.
4. Late: a Scheduled run whose ``scheduled_time`` is more than ``late_after_s`` ago becomes Late
   (``transition(LATE, expect=[SCHEDULED])``, announced as ``tripwire.flow-run.Late``); a Conflict means
   another scheduler or a worker moved it first. Workers still claim Late runs when they are free.
5. ``per_tick_jobs``: more work for each tick, each called with ``now`` after the above (the dead-worker
   reaper plugs in here). A failing job is logged and the others still run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

from sqlalchemy import select

from events.emit import EventEmitter
from tripwire.db import Database
from tripwire.errors import Conflict, NotFound
from tripwire.orchestration.deployments import Deployment, DeploymentStore, StoredSchedule
from tripwire.orchestration.occurrences import next_occurrences
from tripwire.orchestration.runs import NewFlowRun
from tripwire.orchestration.states import State
from tripwire.services import ServiceState
from tripwire.settings import OrchestrationSettings, Settings
from tripwire.tables import flow_runs

__all__ = ["RECHECK_S", "SchedulerService", "TickJob", "TickReport", "plan_times", "schedule_key"]

log = logging.getLogger(__name__)

RECHECK_S = 60.0
LATE_BATCH = 500
STOP_WAIT_S = 5.0

TickJob = Callable[[datetime], Awaitable[object]]
"""An extra job of each tick, called with the tick's ``now`` (note 5)."""


def schedule_key(schedule_id: UUID, at: datetime) -> str:
    """The idempotency key of a schedule's run at ``at`` (note 1)."""
    return f"schedule:{schedule_id}:{at.astimezone(UTC).isoformat()}"


def plan_times(
    schedule: object, now: datetime, settings: OrchestrationSettings
) -> tuple[list[datetime], datetime]:
    """The times a schedule should have runs for, and when the plan can next change (notes 1-2)."""
    cap = settings.max_scheduled_runs
    floor = min(settings.min_scheduled_runs, cap)
    lookahead = timedelta(seconds=settings.lookahead_s)
    candidates = next_occurrences(schedule, now, count=cap + 1)  # type: ignore[arg-type]
    in_window = sum(1 for t in candidates[:cap] if t <= now + lookahead)
    count = min(max(floor, in_window), cap, len(candidates))
    times = candidates[:count]
    recheck = now + timedelta(seconds=RECHECK_S)
    if times:
        recheck = min(recheck, times[0])
    if count < cap and len(candidates) > count:
        recheck = min(recheck, candidates[count] - lookahead)
    return times, max(recheck, now)


@dataclass(frozen=True)
class TickReport:
    """What one tick did."""

    created: int = 0
    late: int = 0


@dataclass(frozen=True)
class _Plan:
    versions: tuple[int, int]
    recheck_at: datetime


class SchedulerService:
    """Creates scheduled runs ahead of time and marks late ones (module notes); ``tick`` is one pass."""

    name = "scheduler"

    def __init__(
        self,
        db: Database,
        emitter: EventEmitter | None,
        settings: Settings,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        per_tick_jobs: Iterable[TickJob] = (),
    ) -> None:
        self.db = db
        self.settings = settings.orchestration
        self.clock = clock
        self.deployments = DeploymentStore(
            db, emitter, clock=clock, default_work_pool=settings.orchestration.work_pool
        )
        self.runs = self.deployments.runs
        self.per_tick_jobs: list[TickJob] = list(per_tick_jobs)
        self._plans: dict[UUID, _Plan] = {}
        self._stopped = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._state = ServiceState.CREATED

    @property
    def state(self) -> ServiceState:
        if self._state is ServiceState.RUNNING and self._task is not None and self._task.done():
            return ServiceState.FAILED
        return self._state

    # --- lifecycle -----------------------------------------------------------------------------------

    async def start(self) -> None:
        self._stopped.clear()
        self._task = asyncio.create_task(self._loop(), name="scheduler")
        self._state = ServiceState.RUNNING

    async def stop(self) -> None:
        self._state = ServiceState.STOPPING
        self._stopped.set()
        task, self._task = self._task, None
        if task is not None:
            # The loop ends at its next wake-up; cancel it only when a tick is stuck (a hung database).
            done, _ = await asyncio.wait([task], timeout=STOP_WAIT_S)
            if not done:
                task.cancel()
                await asyncio.wait([task])  # waits without raising the task's own cancellation
        self._state = ServiceState.STOPPED

    async def __aenter__(self) -> SchedulerService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _loop(self) -> None:
        while not self._stopped.is_set():
            try:
                await self.tick()
            except Exception:
                log.exception("scheduler tick failed; retrying in %ss", self.settings.scheduler_interval_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), self.settings.scheduler_interval_s)

    # --- one pass ------------------------------------------------------------------------------------

    async def tick(self, now: datetime | None = None) -> TickReport:
        """Create due scheduled runs, mark late ones, run the extra jobs (notes 1-5)."""
        now = self.clock() if now is None else now
        created = await self._schedule(now)
        late = await self._mark_late(now)
        for job in self.per_tick_jobs:
            try:
                await job(now)
            except Exception:
                log.exception("scheduler job %s failed", getattr(job, "__name__", job))
        if created or late:
            log.info("scheduler: %d runs created, %d marked Late", created, late)
        return TickReport(created=created, late=late)

    async def _schedule(self, now: datetime) -> int:
        pairs = await self.deployments.active_schedules()
        self._plans = {s.id: p for _, s in pairs if (p := self._plans.get(s.id)) is not None}
        due = [
            (d, s)
            for d, s in pairs
            if (plan := self._plans.get(s.id)) is None
            or plan.versions != (d.version, s.version)
            or now >= plan.recheck_at
        ]
        if not due:
            return 0
        plans = await asyncio.to_thread(self._plan_all, [s.schedule for _, s in due], now)
        created = 0
        for (deployment, stored), (times, recheck_at) in zip(due, plans, strict=True):
            made, current = await self._ensure(deployment, stored, times)
            created += made
            if current:
                self._plans[stored.id] = _Plan((deployment.version, stored.version), recheck_at)
            else:
                self._plans.pop(stored.id, None)
        return created

    def _plan_all(self, items: Sequence[object], now: datetime) -> list[tuple[list[datetime], datetime]]:
        return [plan_times(schedule, now, self.settings) for schedule in items]

    async def _ensure(
        self, deployment: Deployment, stored: StoredSchedule, times: Sequence[datetime]
    ) -> tuple[int, bool]:
        """Create the runs of ``times`` that do not exist yet; (how many, whether the plan still holds)."""
        keys = {schedule_key(stored.id, t): t for t in times}
        if not keys:
            return 0, True
        async with self.db.read() as conn:
            query = select(flow_runs.c.idempotency_key).where(flow_runs.c.idempotency_key.in_(list(keys)))
            existing = set((await conn.execute(query)).scalars())
        missing = [
            NewFlowRun(
                flow_name=deployment.flow_name,
                parameters=deployment.parameters,
                deployment_id=deployment.id,
                schedule_id=stored.id,
                work_pool=deployment.work_pool,
                tags=deployment.tags,
                scheduled_time=at,
                idempotency_key=key,
            )
            for key, at in keys.items()
            if key not in existing
        ]
        if not missing:
            return 0, True
        made = sum(1 for _, created in await self.runs.create_many(missing) if created)
        if await self.deployments.is_current(deployment.id, deployment.version, stored.id, stored.version):
            return made, True
        # Paused or changed while we planned (note 3): what we made may be stale.
        await self.runs.delete_unstarted(deployment_id=deployment.id, schedule_id=stored.id)
        return 0, False

    async def _mark_late(self, now: datetime) -> int:
        cutoff = now - timedelta(seconds=self.settings.late_after_s)
        query = (
            select(flow_runs.c.id, flow_runs.c.scheduled_time)
            .where(flow_runs.c.state == State.SCHEDULED.value, flow_runs.c.scheduled_time < cutoff)
            .order_by(flow_runs.c.scheduled_time)
            .limit(LATE_BATCH)
        )
        async with self.db.read() as conn:
            overdue = (await conn.execute(query)).all()
        late = 0
        for run_id, scheduled_time in overdue:
            try:
                await self.runs.transition(
                    run_id,
                    State.LATE,
                    expect=[State.SCHEDULED],
                    message=f"not started within {self.settings.late_after_s:g}s of its scheduled time",
                    payload={"scheduled_time": scheduled_time.isoformat()},
                )
            except (Conflict, NotFound):
                continue  # another scheduler or a worker moved it first, or it was deleted
            late += 1
        return late
