"""FlowRunStore: flow runs in SQL; every state change is written, then announced as an event.

1. A flow run row carries its state, and a ``version`` that grows by one on every change. A change is a
   conditional ``UPDATE ... WHERE id = :id AND version = :read`` inside one transaction: two writers
   (two workers claiming, a worker finishing while an automation cancels) never both win; the loser
   re-reads and decides again (``transition`` retries while the move is still allowed).
2. Which moves are allowed is ``states.ALLOWED``; a refused move raises ``Conflict`` naming the run, its
   state and the target. ``force=True`` skips the check (``change-flow-run-state``), never the version.
3. After the commit, the change is emitted as ``tripwire.flow-run.<State>``
   (``state_events.run_event``) with an id derived from ``(run, state, version)``, so writing an event
   twice after a failure is harmless. With no emitter (tests of the SQL part), nothing is emitted.
   A failure to emit after the commit is logged and raised: the state stands, the caller sees the error.
4. Creating with an ``idempotency_key`` creates once: the scheduler (key per schedule and time) and
   ``run-deployment`` (key per firing and action) can retry freely. ``create`` returns the existing run
   and ``created=False`` for a key already used.
5. ``claim`` is how a worker takes due runs of its pool: the oldest Scheduled/Late runs whose
   ``scheduled_time`` has come, each moved to Pending with the worker's name by the conditional update
   of note 1; a run another worker got first is skipped.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

from pydantic import BaseModel, Field
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from events.emit import EventEmitter
from tripwire.db import Database
from tripwire.errors import Conflict, NotFound
from tripwire.orchestration.state_events import related_resources, run_event
from tripwire.orchestration.states import CLAIMABLE, FINAL, State, can_move
from tripwire.tables import deployments, flow_runs

__all__ = ["FlowRun", "FlowRunStore", "NewFlowRun", "run_name"]

log = logging.getLogger(__name__)

_ADJECTIVES = ("amber", "brisk", "calm", "daring", "eager", "fuzzy", "gentle", "hidden", "icy", "jolly")
_NOUNS = ("badger", "comet", "falcon", "harbor", "lynx", "meadow", "otter", "quartz", "raven", "willow")


def run_name(run_id: UUID) -> str:
    """A readable name for a run, derived from its id (``brisk-otter-3f2a``)."""
    n = run_id.int
    return f"{_ADJECTIVES[n % 10]}-{_NOUNS[(n // 10) % 10]}-{run_id.hex[:4]}"


class FlowRun(BaseModel):
    """A flow run as stored."""

    id: UUID
    name: str
    flow_name: str
    deployment_id: UUID | None = None
    deployment_name: str | None = Field(None, description="the deployment's name (joined, not stored)")
    schedule_id: UUID | None = None
    work_pool: str | None = None
    state: State
    state_message: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    scheduled_time: datetime
    start_time: datetime | None = None
    end_time: datetime | None = None
    run_count: int = 0
    worker: str | None = None
    pid: int | None = None
    idempotency_key: str | None = None
    created: datetime
    updated: datetime
    version: int

    def related(self) -> list[dict[str, str]]:
        """The related resources of this run's events."""
        return related_resources(
            flow_name=self.flow_name,
            deployment_id=self.deployment_id,
            deployment_name=self.deployment_name,
            work_pool=self.work_pool,
            tags=self.tags,
        )


@dataclass(frozen=True)
class NewFlowRun:
    """What ``create`` needs; everything else has a default."""

    flow_name: str
    parameters: Mapping[str, Any]
    deployment_id: UUID | None = None
    schedule_id: UUID | None = None
    work_pool: str | None = None
    tags: Sequence[str] = ()
    scheduled_time: datetime | None = None
    idempotency_key: str | None = None
    name: str | None = None
    state: State = State.SCHEDULED
    id: UUID | None = None


_Change = tuple[FlowRun, State | None, Mapping[str, Any] | None]
"""(the run after the change, its state before, extra payload)"""

_SELECT = select(flow_runs, deployments.c.name.label("deployment_name")).outerjoin(
    deployments, deployments.c.id == flow_runs.c.deployment_id
)


def _run(row: Any) -> FlowRun:
    return FlowRun.model_validate(dict(row._mapping))


class FlowRunStore:
    """Create, read, claim and move flow runs; each change is announced (module docstring)."""

    def __init__(
        self,
        db: Database,
        emitter: EventEmitter | None,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._db = db
        self._emitter = emitter
        self._clock = clock

    # --- reads ---------------------------------------------------------------------------------------

    async def get(self, run_id: UUID) -> FlowRun:
        """The flow run with this id; NotFound otherwise."""
        async with self._db.read() as conn:
            run = await _get(conn, run_id)
        if run is None:
            raise NotFound(f"no flow run with id {run_id} (`tripwire flow-run ls` lists them)")
        return run

    async def list(
        self,
        *,
        deployment_id: UUID | None = None,
        states: Iterable[State] | None = None,
        work_pool: str | None = None,
        worker: str | None = None,
        limit: int = 100,
        newest_first: bool = True,
    ) -> builtins.list[FlowRun]:
        """Flow runs by scheduled time (newest first unless asked otherwise), filtered."""
        query = _SELECT
        if deployment_id is not None:
            query = query.where(flow_runs.c.deployment_id == deployment_id)
        if states is not None:
            query = query.where(flow_runs.c.state.in_([State(s).value for s in states]))
        if work_pool is not None:
            query = query.where(flow_runs.c.work_pool == work_pool)
        if worker is not None:
            query = query.where(flow_runs.c.worker == worker)
        order = flow_runs.c.scheduled_time.desc() if newest_first else flow_runs.c.scheduled_time.asc()
        query = query.order_by(order, flow_runs.c.id).limit(limit)
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [_run(row) for row in rows]

    # --- writes --------------------------------------------------------------------------------------

    async def create(self, new: NewFlowRun) -> tuple[FlowRun, bool]:
        """Create a run (note 4); returns it and whether it was created (False: the key was used)."""
        runs = await self.create_many([new])
        return runs[0]

    async def create_many(self, items: Sequence[NewFlowRun]) -> builtins.list[tuple[FlowRun, bool]]:
        """Create several runs; those whose idempotency key exists are returned as they are."""
        now = self._clock()
        out: list[tuple[FlowRun, bool]] = []
        created: list[FlowRun] = []
        for new in items:
            run_id = new.id or uuid4()
            row = {
                "id": run_id,
                "name": new.name or run_name(run_id),
                "flow_name": new.flow_name,
                "deployment_id": new.deployment_id,
                "schedule_id": new.schedule_id,
                "work_pool": new.work_pool,
                "state": State(new.state).value,
                "state_message": None,
                "parameters": dict(new.parameters),
                "tags": list(new.tags),
                "scheduled_time": new.scheduled_time or now,
                "run_count": 0,
                "idempotency_key": new.idempotency_key,
                "created": now,
                "updated": now,
                "version": 1,
            }
            try:
                async with self._db.begin() as conn:
                    await conn.execute(flow_runs.insert().values(**row))
                    run = await _get(conn, run_id)
            except IntegrityError:
                if new.idempotency_key is None:
                    raise
                existing = await self._by_key(new.idempotency_key)
                if existing is None:
                    raise
                out.append((existing, False))
                continue
            assert run is not None
            out.append((run, True))
            created.append(run)
        await self._announce(
            [(run, None, {"scheduled_time": run.scheduled_time.isoformat()}) for run in created]
        )
        return out

    async def transition(
        self,
        run_id: UUID,
        target: State,
        *,
        message: str | None = None,
        force: bool = False,
        expect: Iterable[State] | None = None,
        worker: str | None = None,
        pid: int | None = None,
        scheduled_time: datetime | None = None,
        payload: Mapping[str, Any] | None = None,
    ) -> FlowRun:
        """Move a run to ``target`` (notes 1-3); Conflict when not allowed, NotFound when it is gone.

        ``expect`` narrows the states the run may be in (e.g. the worker moves only its own Pending run to
        Running); ``worker`` / ``pid`` / ``scheduled_time`` are written with the change when given.
        """
        target = State(target)
        allowed = None if expect is None else {State(s) for s in expect}
        while True:
            now = self._clock()
            async with self._db.begin() as conn:
                run = await _get(conn, run_id)
                if run is None:
                    raise NotFound(f"no flow run with id {run_id}")
                if (allowed is not None and run.state not in allowed) or (
                    not force and not can_move(run.state, target)
                ):
                    raise Conflict(
                        f"flow run {run.name} ({run.id}) is {run.state}; it cannot move to {target}"
                    )
                values: dict[str, Any] = {
                    "state": target.value,
                    "state_message": message,
                    "updated": now,
                    "version": run.version + 1,
                }
                if target is State.RUNNING:
                    values["run_count"] = run.run_count + 1
                    values["start_time"] = run.start_time or now
                if target in FINAL:
                    values["end_time"] = now
                if worker is not None:
                    values["worker"] = worker
                if pid is not None:
                    values["pid"] = pid
                if scheduled_time is not None:
                    values["scheduled_time"] = scheduled_time
                result = await conn.execute(
                    update(flow_runs)
                    .where(flow_runs.c.id == run_id, flow_runs.c.version == run.version)
                    .values(**values)
                )
                if result.rowcount != 1:
                    continue  # changed under us (PostgreSQL without a row lock): read again
                after = await _get(conn, run_id)
            assert after is not None
            await self._announce([(after, run.state, payload)])
            return after

    async def cancel(self, run_id: UUID, *, message: str | None = None) -> FlowRun:
        """Cancel a run: not started (Scheduled, Late, Paused) -> Cancelled at once; Pending or Running
        -> Cancelling, and its worker stops the process; Cancelling stays; a final run -> Conflict."""
        while True:
            run = await self.get(run_id)
            if run.state is State.CANCELLING:
                return run
            if run.state.final:
                raise Conflict(f"flow run {run.name} ({run.id}) is already {run.state}; nothing to cancel")
            target = State.CANCELLING if run.state in (State.PENDING, State.RUNNING) else State.CANCELLED
            try:
                return await self.transition(run_id, target, message=message, expect=[run.state])
            except Conflict:
                continue  # it moved meanwhile (e.g. a worker started it): decide again

    async def claim(self, work_pool: str, worker: str, *, limit: int = 1) -> builtins.list[FlowRun]:
        """Take up to ``limit`` due runs of ``work_pool`` for ``worker`` (note 5); oldest first."""
        now = self._clock()
        query = (
            select(flow_runs.c.id, flow_runs.c.version, flow_runs.c.state)
            .where(
                flow_runs.c.work_pool == work_pool,
                flow_runs.c.state.in_([s.value for s in CLAIMABLE]),
                flow_runs.c.scheduled_time <= now,
            )
            .order_by(flow_runs.c.scheduled_time, flow_runs.c.id)
            .limit(limit * 4)
        )
        async with self._db.read() as conn:
            candidates = (await conn.execute(query)).all()
        claimed: list[tuple[FlowRun, State | None]] = []
        for run_id, version, state in candidates:
            if len(claimed) >= limit:
                break
            async with self._db.begin() as conn:
                result = await conn.execute(
                    update(flow_runs)
                    .where(flow_runs.c.id == run_id, flow_runs.c.version == version)
                    .values(
                        state=State.PENDING.value,
                        state_message=None,
                        worker=worker,
                        updated=now,
                        version=version + 1,
                    )
                )
                if result.rowcount != 1:
                    continue  # another worker got it
                run = await _get(conn, run_id)
            assert run is not None
            claimed.append((run, State(state)))
        await self._announce([(run, previous, None) for run, previous in claimed])
        return [run for run, _ in claimed]

    async def delete_unstarted(self, *, deployment_id: UUID, schedule_id: UUID | None = None) -> int:
        """Delete the Scheduled/Late runs a deployment's schedules created (one schedule's, if given)."""
        condition = [
            flow_runs.c.deployment_id == deployment_id,
            flow_runs.c.schedule_id.is_not(None),
            flow_runs.c.state.in_([s.value for s in CLAIMABLE]),
        ]
        if schedule_id is not None:
            condition.append(flow_runs.c.schedule_id == schedule_id)
        async with self._db.begin() as conn:
            result = await conn.execute(delete(flow_runs).where(*condition))
        return int(result.rowcount or 0)

    # --- helpers -------------------------------------------------------------------------------------

    async def _by_key(self, key: str) -> FlowRun | None:
        async with self._db.read() as conn:
            row = (await conn.execute(_SELECT.where(flow_runs.c.idempotency_key == key))).first()
        return None if row is None else _run(row)

    async def _announce(
        self, changes: Sequence[tuple[FlowRun, State | None, Mapping[str, Any] | None]]
    ) -> None:
        if self._emitter is None or not changes:
            return
        documents = [
            run_event(
                "flow-run",
                run.id,
                run.name,
                run.state.value,
                previous=None if previous is None else previous.value,
                occurred=run.updated,
                related=run.related(),
                id_parts=(run.state.value, run.version),
                message=run.state_message,
                run_count=run.run_count,
                payload=payload,
            )
            for run, previous, payload in changes
        ]
        try:
            await self._emitter.emit_events(documents)
        except Exception:
            log.exception(
                "flow run state stored but its event could not be emitted (%d events)", len(documents)
            )
            raise


async def _get(conn: AsyncConnection, run_id: UUID) -> FlowRun | None:
    row = (await conn.execute(_SELECT.where(flow_runs.c.id == run_id))).first()
    return None if row is None else _run(row)
