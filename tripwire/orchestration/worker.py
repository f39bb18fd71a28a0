"""The worker: claims due flow runs of its work pool and runs each in a subprocess (DESIGN.md §8).

1. Claims: every ``worker_poll_s`` the worker claims up to its free slots (``worker_concurrency`` minus
   the runs it holds) with ``FlowRunStore.claim``, a conditional update per run: two workers never get
   the same run.
2. One process per run (``processes.py``): ``python -m tripwire.orchestration.execute <id>`` leading
   its own process group, with the worker's settings as ``TRIPWIRE_*`` variables; it dies with the worker
   (Linux). Its output goes to the worker's log, each line prefixed with the run's name. The pid is
   written to the run row directly: no state change, no event, version unchanged.
3. The process reports the run's states itself. When it exits, the worker reads the run: final ->
   nothing to do; Cancelling -> Cancelled; Pending / Running -> Crashed ("process exited with code N" /
   "process killed by signal SIGKILL"); Scheduled (the process died waiting for its flow's retry) stays,
   to be claimed again (``sql_reporter`` note 3). A run another worker holds by then is never touched.
4. Timeout (the deployment's ``timeout_seconds``): the run is first marked Failed ("timed out after
   N s"), then its process group is stopped (SIGTERM, ``cancel_grace_s``, SIGKILL). Writing first settles
   the race with a flow finishing at that very moment: whichever write wins stands, and the process's
   own later report is refused.
5. Cancellation: each poll reads the runs this worker holds that are Cancelling (one query); their process
   groups get SIGTERM, then SIGKILL after ``cancel_grace_s``; when the process is gone the run becomes
   Cancelled (note 3).
6. Heartbeat: every ``heartbeat_s`` the ``workers`` row is upserted (status online, last_heartbeat),
   dead workers are reaped (``reaper.py``: a live worker cleans up after dead ones, never itself), and
   ``tripwire.worker.heartbeat`` is emitted with the pool and the running count.
7. Start: runs still held by this worker's name in Pending / Running / Cancelling are from a previous
   life of the worker (their processes died with it, note 2) -> Crashed. ``tripwire.worker.started``.
8. Stop: claiming stops at once; running processes get ``stop_grace_s`` to finish; the runs still going
   are then marked Crashed ("worker ... stopped") and their process groups stopped as in note 4; the row
   becomes ``stopped`` and ``tripwire.worker.stopped`` is emitted. This is not left to the reaper: a
   stopped worker is not dead, nothing would reap it. Keep ``stop_grace_s + cancel_grace_s`` below the
   runner's stop timeout (10 s by default); if the stop is abandoned anyway, the processes die with the
   worker process and the reaper crashes the runs once the heartbeat is old.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from sqlalchemy import select, update

from events.emit import EventEmitter
from events.model import now_utc
from tripwire.db import Database
from tripwire.errors import Conflict, NotFound
from tripwire.orchestration.processes import (
    child_environment,
    describe_exit,
    forward_output,
    kill_group,
    start_execute,
)
from tripwire.orchestration.reaper import ACTIVE_STATES, DEAD, ONLINE, STOPPED, reap_dead_workers
from tripwire.orchestration.runs import FlowRun, FlowRunStore
from tripwire.orchestration.state_events import worker_event
from tripwire.orchestration.states import State
from tripwire.services import ServiceState
from tripwire.settings import Settings
from tripwire.tables import deployments, flow_runs, workers

if TYPE_CHECKING:
    from tripwire.runner import RunContext

__all__ = ["WorkerService", "default_worker_name", "worker_factory"]

log = logging.getLogger(__name__)

OUTPUT_DRAIN_S = 2.0
MAX_SETTLE_ROUNDS = 20


def default_worker_name() -> str:
    """``<hostname>-<pid>``: unique per host and process."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class _Child:
    """A run this worker holds, and its process once started."""

    run: FlowRun
    proc: asyncio.subprocess.Process | None = None
    task: asyncio.Task[None] | None = None
    stopping: asyncio.Task[None] | None = None
    exited: asyncio.Event = field(default_factory=asyncio.Event)


class WorkerService:
    """Runs the due flow runs of one work pool in subprocesses (module notes)."""

    name = "worker"

    def __init__(
        self,
        db: Database,
        emitter: EventEmitter | None,
        settings: Settings,
        *,
        pool: str,
        name: str | None = None,
        redis_url: str | None = None,
        stop_grace_s: float = 3.0,
        python: str = sys.executable,
        clock: Callable[[], datetime] = now_utc,
    ) -> None:
        self.db = db
        self.emitter = emitter
        self.settings = settings
        self.options = settings.orchestration
        self.pool = pool
        self.worker_name = name or default_worker_name()
        self.stop_grace_s = stop_grace_s
        self.python = python
        self.clock = clock
        self.runs = FlowRunStore(db, emitter, clock=clock)
        self.env = child_environment(settings, redis_url)
        self.started: datetime | None = None
        self._children: dict[UUID, _Child] = {}
        self._stopping = asyncio.Event()  # no more claims
        self._stopped = asyncio.Event()  # no more heartbeats: the runs are settled
        self._loops: list[asyncio.Task[None]] = []
        self._state = ServiceState.CREATED

    @property
    def state(self) -> ServiceState:
        if self._state is ServiceState.RUNNING and any(t.done() for t in self._loops):
            return ServiceState.FAILED
        return self._state

    @property
    def running(self) -> int:
        """How many runs this worker holds now."""
        return len(self._children)

    # --- lifecycle -----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Register (online), crash the runs of a previous life (note 7), start polling and heartbeating."""
        if self._loops:
            return
        self._stopping.clear()
        self._stopped.clear()
        try:
            self.started = self.clock()
            await self._upsert(ONLINE, started=self.started)
            await self._crash_previous_life()
            await self._emit("started")
        except BaseException:
            self._state = ServiceState.FAILED
            raise
        self._loops = [
            asyncio.create_task(
                self._every(self.options.worker_poll_s, self.poll, self._stopping), name="worker-poll"
            ),
            asyncio.create_task(
                self._every(self.options.heartbeat_s, self.heartbeat, self._stopped), name="worker-heartbeat"
            ),
        ]
        self._state = ServiceState.RUNNING
        log.info(
            "worker %s polling pool %r (up to %d runs at once)",
            self.worker_name, self.pool, self.options.worker_concurrency,
            extra={"worker": self.worker_name, "work_pool": self.pool},
        )  # fmt: skip

    async def stop(self) -> None:
        """Stop claiming, let runs finish within ``stop_grace_s``, crash the rest (note 8)."""
        if not self._loops:
            if self._state is not ServiceState.FAILED:
                self._state = ServiceState.STOPPED
            return
        self._state = ServiceState.STOPPING
        self._stopping.set()
        poll, heartbeat = self._loops
        await _finish(poll)
        await self._drain()  # heartbeats go on meanwhile: the worker is alive
        self._stopped.set()
        await _finish(heartbeat)
        self._loops = []
        try:
            await self._upsert(STOPPED)
            await self._emit("stopped")
        finally:
            self._state = ServiceState.STOPPED
        log.info("worker %s stopped", self.worker_name, extra={"worker": self.worker_name})

    async def _drain(self) -> None:
        tasks = [c.task for c in self._children.values() if c.task is not None]
        if tasks:
            log.info("waiting up to %gs for %d runs to finish", self.stop_grace_s, len(tasks))
            await asyncio.wait(tasks, timeout=self.stop_grace_s)
        for child in list(self._children.values()):
            message = f"worker {self.worker_name} stopped before the run finished"
            await self._settle(child.run, _moves(State.CRASHED, message))
            self._stop_process(child)
        tasks = [c.task for c in self._children.values() if c.task is not None]
        if tasks:
            await asyncio.wait(tasks)

    async def _every(self, interval_s: float, job: Callable[[], Any], until: asyncio.Event) -> None:
        """Run ``job`` every ``interval_s`` until ``until`` is set; a failure is logged and retried."""
        while not until.is_set():
            try:
                await job()
            except Exception:
                log.exception("worker %s: %s failed; retrying", self.worker_name, job.__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(until.wait(), interval_s)

    # --- heartbeat (note 6) --------------------------------------------------------------------------

    async def heartbeat(self) -> None:
        """Upsert the worker's row, reap dead workers, emit ``tripwire.worker.heartbeat`` (note 6)."""
        await self._upsert(ONLINE)
        try:
            await reap_dead_workers(
                self.db,
                self.runs,
                now=self.clock(),
                dead_after_s=self.options.worker_dead_after_s,
                spare=self.worker_name,
            )
        finally:
            await self._emit("heartbeat")

    async def _upsert(self, status: str, *, started: datetime | None = None) -> None:
        now = self.clock()
        values: dict[str, Any] = {"work_pool": self.pool, "status": status, "last_heartbeat": now}
        if started is not None:
            values["started"] = started
        query = select(workers.c.status, workers.c.last_heartbeat).where(workers.c.name == self.worker_name)
        async with self.db.begin() as conn:
            previous = (await conn.execute(query)).first()
            if previous is None:
                await conn.execute(
                    workers.insert().values({"started": now, **values, "name": self.worker_name})
                )
            else:
                await conn.execute(update(workers).where(workers.c.name == self.worker_name).values(**values))
        if previous is None or status != ONLINE:
            return
        if started is None and previous.status == DEAD:
            log.error(
                "worker %s had been declared dead (no heartbeat for %gs): its runs were marked Crashed",
                self.worker_name, self.options.worker_dead_after_s, extra={"worker": self.worker_name},
            )  # fmt: skip
        elif started is not None and previous.status == ONLINE:
            silent_s = (now - previous.last_heartbeat).total_seconds()
            if silent_s < self.options.worker_dead_after_s:
                log.warning(
                    "a worker named %s was online %.1fs ago: if it is another live worker, give this one "
                    "another --name (each crashes the runs the other holds)",
                    self.worker_name, silent_s, extra={"worker": self.worker_name},
                )  # fmt: skip

    async def _emit(self, what: str) -> None:
        if self.emitter is None:
            return
        payload = {
            "worker": self.worker_name,
            "pool": self.pool,
            "running": self.running,
            "concurrency": self.options.worker_concurrency,
            "pid": os.getpid(),
        }
        event = worker_event(self.worker_name, self.pool, what, occurred=self.clock(), payload=payload)
        await self.emitter.emit_event(**event)

    async def _crash_previous_life(self) -> None:
        held = await self.runs.list(worker=self.worker_name, states=ACTIVE_STATES, limit=1000)
        for run in held:
            message = f"worker {self.worker_name} restarted while the run was {run.state}"
            await self._settle(run, _moves(State.CRASHED, message, ACTIVE_STATES))

    # --- claims and cancellations (notes 1 and 5) ----------------------------------------------------

    async def poll(self) -> None:
        """Stop the runs being cancelled, then claim up to the free slots and start their processes."""
        await self._check_cancellations()
        free = self.options.worker_concurrency - len(self._children)
        if free <= 0 or self._stopping.is_set():
            return
        for run in await self.runs.claim(self.pool, self.worker_name, limit=free):
            child = _Child(run)
            self._children[run.id] = child
            child.task = asyncio.create_task(self._execute(child), name=f"run-{run.name}")
            log.info("claimed flow run %s (%s)", run.name, run.id, extra={"flow_run": str(run.id)})

    async def _check_cancellations(self) -> None:
        if not self._children:
            return
        cancelling = await self.runs.list(
            worker=self.worker_name, states=[State.CANCELLING], limit=len(self._children) + 100
        )
        for run in cancelling:
            child = self._children.get(run.id)
            if child is None or child.proc is None or child.stopping is not None:
                continue  # not started yet: the next poll sees it (or the process aborts by itself)
            log.info("flow run %s is cancelling: stopping its process", run.name)
            self._stop_process(child)

    # --- one run (notes 2-4) -------------------------------------------------------------------------

    async def _execute(self, child: _Child) -> None:
        run = child.run
        try:
            try:
                timeout_s = await self._timeout_of(run)
                child.proc = await start_execute(run.id, self.env, python=self.python)
            except Exception as exc:
                log.exception("could not start the process of flow run %s", run.name)
                message = f"could not start the process: {exc}"
                await self._settle(run, {**_moves(State.CRASHED, message), State.CANCELLING: _CANCELLED})
                return
            code = await self._watch(child, child.proc, timeout_s)
            if child.stopping is not None:
                await child.stopping
            exit_text = describe_exit(code)
            log.info("flow run %s: %s", run.name, exit_text, extra={"flow_run": str(run.id)})
            await self._settle(run, {**_moves(State.CRASHED, exit_text), State.CANCELLING: _CANCELLED})
        except Exception:
            log.exception("worker %s lost track of flow run %s", self.worker_name, run.name)
        finally:
            if self._children.get(run.id) is child:
                del self._children[run.id]

    async def _watch(self, child: _Child, proc: asyncio.subprocess.Process, timeout_s: float | None) -> int:
        """Record the pid, forward the output, enforce the timeout; the exit code."""
        try:
            await self._record_pid(child.run.id, proc.pid)
        except Exception:
            log.exception("could not record the pid of flow run %s", child.run.name)
        assert proc.stdout is not None
        output = asyncio.create_task(forward_output(child.run.name, proc.stdout))
        try:
            if timeout_s is not None:
                try:
                    await asyncio.wait_for(asyncio.shield(proc.wait()), timeout_s)
                except TimeoutError:
                    await self._time_out(child, timeout_s)
            return await proc.wait()
        finally:
            child.exited.set()
            # What the flow started may hold the pipe open after the process is gone: don't wait for it.
            _, late = await asyncio.wait([output], timeout=OUTPUT_DRAIN_S)
            for task in late:
                task.cancel()

    async def _timeout_of(self, run: FlowRun) -> float | None:
        if run.deployment_id is None:
            return None
        async with self.db.read() as conn:
            query = select(deployments.c.document).where(deployments.c.id == run.deployment_id)
            document = (await conn.execute(query)).scalar()
        value = document.get("timeout_seconds") if isinstance(document, dict) else None
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            return None
        return float(value)

    async def _record_pid(self, run_id: UUID, pid: int) -> None:
        async with self.db.begin() as conn:
            await conn.execute(
                update(flow_runs)
                .where(flow_runs.c.id == run_id, flow_runs.c.worker == self.worker_name)
                .values(pid=pid)
            )

    async def _time_out(self, child: _Child, timeout_s: float) -> None:
        message = f"timed out after {timeout_s:g} s"
        log.warning("flow run %s %s: stopping its process", child.run.name, message)
        await self._settle(child.run, _moves(State.FAILED, message))
        self._stop_process(child)

    def _stop_process(self, child: _Child) -> None:
        """SIGTERM the run's process group, SIGKILL after ``cancel_grace_s`` (once per run)."""
        if child.stopping is None and child.proc is not None:
            child.stopping = asyncio.create_task(self._terminate(child))

    async def _terminate(self, child: _Child) -> None:
        assert child.proc is not None
        if child.exited.is_set():
            return
        kill_group(child.proc, signal.SIGTERM)
        try:
            await asyncio.wait_for(child.exited.wait(), self.options.cancel_grace_s)
        except TimeoutError:
            log.warning("flow run %s did not stop on SIGTERM: killing it", child.run.name)
            kill_group(child.proc, signal.SIGKILL)
        else:
            kill_group(child.proc, signal.SIGKILL)  # what the flow started and left behind

    async def _settle(self, run: FlowRun, moves: Mapping[State, tuple[State, str]]) -> None:
        """Move a run this worker holds by its state (``moves``: state -> (target, message)).

        A run in another state, or held by another worker now (a retry's Scheduled claimed anew), stays.
        Re-reads after a Conflict (it moved meanwhile: decide again); retries database errors a few times.
        """
        delays = iter((0.5, 1.0, 2.0, 4.0))
        for _ in range(MAX_SETTLE_ROUNDS):
            try:
                current = await self.runs.get(run.id)
                if current.state not in moves or current.worker != self.worker_name:
                    return
                target, message = moves[current.state]
                await self.runs.transition(run.id, target, message=message, expect=[current.state])
            except Conflict:
                continue
            except NotFound:
                return
            except Exception:
                delay = next(delays, None)
                if delay is None:
                    log.exception("could not settle flow run %s; giving up", run.name)
                    return
                log.exception("could not settle flow run %s; retrying in %ss", run.name, delay)
                await asyncio.sleep(delay)
            else:
                log.info("flow run %s -> %s: %s", run.name, target, message, extra={"flow_run": str(run.id)})
                return
        log.error("flow run %s keeps changing under the worker; left as it is", run.name)


def _moves(
    target: State, message: str, states: tuple[State, ...] = (State.PENDING, State.RUNNING)
) -> dict[State, tuple[State, str]]:
    """``_settle``'s moves: each of ``states`` -> ``target`` with ``message``."""
    return {state: (target, message) for state in states}


_CANCELLED = (State.CANCELLED, "cancelled: the process was stopped")


async def _finish(task: asyncio.Task[None], timeout_s: float = 5.0) -> None:
    """Wait for a loop to end at its next wake-up; cancel it if it is stuck (in a database call)."""
    done, _ = await asyncio.wait([task], timeout=timeout_s)
    if not done:
        task.cancel()
        await asyncio.wait([task])
    if not task.cancelled() and task.exception() is not None:
        log.error("worker loop %s had failed", task.get_name(), exc_info=task.exception())


def worker_factory(ctx: RunContext) -> WorkerService:
    """The worker of ``tripwire server start`` / ``services run worker``: pool ``orchestration.work_pool``."""
    emitter = EventEmitter(ctx.bus, ctx.settings)
    return WorkerService(
        ctx.db, emitter, ctx.settings, pool=ctx.settings.orchestration.work_pool, redis_url=ctx.redis_url
    )
