"""The reaper: workers that stopped heartbeating are dead, and the runs they held are Crashed.

1. A worker is dead when its row is ``online`` and its ``last_heartbeat`` is older than ``dead_after_s``.
   It is marked ``dead`` by a conditional update (``WHERE status = 'online' AND last_heartbeat = <the
   value read>``): of several reapers (every live worker reaps, and so does the scheduler) exactly one
   wins, and a worker that heartbeats at that moment is not declared dead.
2. The winner moves the dead worker's Pending / Running / Cancelling runs to Crashed, with a message that
   names the worker and its last heartbeat. A run that moved meanwhile (``Conflict``) is left as it is.
3. A reaper can die between notes 1 and 2. So every pass also sweeps the unfinished runs held by workers
   that are not ``online`` (``dead``, or ``stopped`` without having settled its runs): nothing stays
   Running forever because its reaper died at the wrong moment.
4. The caller's own worker can be spared (``spare``): a live worker never declares itself dead because its
   own heartbeat write was slow.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID

from sqlalchemy import select, update

from tripwire.db import Database
from tripwire.errors import Conflict, NotFound
from tripwire.orchestration.runs import FlowRunStore
from tripwire.orchestration.states import State
from tripwire.tables import flow_runs, workers

__all__ = ["ACTIVE_STATES", "DEAD", "ONLINE", "STOPPED", "ReapedWorker", "reap_dead_workers"]

log = logging.getLogger(__name__)

ACTIVE_STATES = (State.PENDING, State.RUNNING, State.CANCELLING)
"""The states of a run a worker holds: its process may be alive; if the worker dies, the run crashed."""

ONLINE, STOPPED, DEAD = "online", "stopped", "dead"


@dataclass
class ReapedWorker:
    """A worker this pass declared dead (``newly_dead``) or whose leftover runs it crashed."""

    name: str
    work_pool: str
    last_heartbeat: datetime
    newly_dead: bool
    crashed: list[UUID] = field(default_factory=list)


async def reap_dead_workers(
    db: Database,
    runs: FlowRunStore,
    *,
    now: datetime,
    dead_after_s: float,
    spare: str | None = None,
) -> list[ReapedWorker]:
    """Mark silent workers dead and crash their unfinished runs (module notes 1-4)."""
    cutoff = now - timedelta(seconds=dead_after_s)
    query = select(workers).where(workers.c.status == ONLINE, workers.c.last_heartbeat < cutoff)
    if spare is not None:
        query = query.where(workers.c.name != spare)
    async with db.read() as conn:
        silent = (await conn.execute(query)).all()
    reaped: dict[str, ReapedWorker] = {}
    for row in silent:
        async with db.begin() as conn:
            result = await conn.execute(
                update(workers)
                .where(
                    workers.c.name == row.name,
                    workers.c.status == ONLINE,
                    workers.c.last_heartbeat == row.last_heartbeat,
                )
                .values(status=DEAD)
            )
        if result.rowcount != 1:
            continue  # another reaper got it, or it heartbeated just now
        log.warning(
            "worker %s (pool %s) is dead: no heartbeat since %s",
            row.name, row.work_pool, row.last_heartbeat.isoformat(),
            extra={"worker": row.name, "work_pool": row.work_pool},
        )  # fmt: skip
        reaped[row.name] = ReapedWorker(row.name, row.work_pool, row.last_heartbeat, newly_dead=True)
    await _crash_leftovers(db, runs, reaped, dead_after_s)
    return list(reaped.values())


async def _crash_leftovers(
    db: Database, runs: FlowRunStore, reaped: dict[str, ReapedWorker], dead_after_s: float
) -> None:
    """Crash the unfinished runs of every worker that is not online (notes 2 and 3)."""
    query = (
        select(flow_runs.c.id, flow_runs.c.state, workers)
        .join(workers, workers.c.name == flow_runs.c.worker)
        .where(
            workers.c.status != ONLINE,
            flow_runs.c.state.in_([s.value for s in ACTIVE_STATES]),
        )
        .order_by(flow_runs.c.scheduled_time)
    )
    async with db.read() as conn:
        rows = (await conn.execute(query)).all()
    for row in rows:
        entry = reaped.get(row.name)
        if entry is None:
            entry = reaped[row.name] = ReapedWorker(
                row.name, row.work_pool, row.last_heartbeat, newly_dead=False
            )
        if row.status == DEAD:
            message = (
                f"worker {row.name} stopped heartbeating (last heartbeat "
                f"{row.last_heartbeat:%Y-%m-%d %H:%M:%S} UTC, dead after {dead_after_s:g} s)"
            )
        else:
            message = f"worker {row.name} is {row.status} and no longer runs it"
        if await _crash(runs, row.id, row.name, (State(row.state),), message):
            entry.crashed.append(row.id)


async def _crash(
    runs: FlowRunStore, run_id: UUID, worker: str, states: Sequence[State], message: str
) -> bool:
    """Move one run to Crashed if it is still in ``states`` and held by ``worker``; False otherwise."""
    try:
        run = await runs.get(run_id)
        if run.worker != worker or run.state not in states:
            return False
        await runs.transition(run_id, State.CRASHED, message=message, expect=[run.state])
    except (Conflict, NotFound):
        return False  # it moved (or went) meanwhile: that state stands
    log.warning("flow run %s crashed: %s", run.name, message, extra={"flow_run": str(run_id)})
    return True
