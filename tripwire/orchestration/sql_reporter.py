"""``SqlRunReporter``: the reporter of a flow run executed by a worker (``execute.py``).

1. SQL and Redis live on a private event loop in a background thread that the reporter owns, so the
   flow itself (sync code on the main thread, or code running its own loop) never shares a loop with it.
   ``call(coro)`` runs a coroutine there and waits for it.
2. Flow-run states go through ``FlowRunStore.transition`` and the engine waits for each: they are few,
   and they must be stored before the process exits (Running also records this process's pid). Each
   write expects the run to be in the state the engine left it (``previous``; Pending before the first
   Running). If someone else moved the run meanwhile — an automation cancelled it, the worker marked it
   timed out — the write is refused (``Conflict``): for a final state the other writer's state stands
   and the flow's is dropped; for any other (Running, a retry's Scheduled) the reporter raises
   ``RunAborted`` and the engine stops.
3. A retry of the flow itself (Running -> Scheduled -> Running in this same process) must not be claimed
   by a worker meanwhile: its Scheduled is written with ``scheduled_time`` = now + the retry delay +
   ``worker_dead_after_s``. This process comes back before that; if it died during the wait, the run is
   claimed again once the time has passed, and the retry happens in a new process.
4. When a write fails for another reason (database or Redis down), the run is read back: if it holds
   the new state, only the event was lost and the flow goes on; otherwise a non-final state raises
   ``RunAborted`` (nothing runs unrecorded) and a final one is left to ``execute``'s settle step.
5. Task-run events go through part of the engine's own event path (``sink.EventReporter`` over an
   ``EventSink``): queued without waiting, emitted in order from the sink's thread, and what cannot be
   sent by ``close`` is spilled to the outbox for the next process to send. The sink is flushed (briefly)
   before every flow-run change, so a run's task events are on the stream before its end.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Coroutine, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID

import redis.asyncio as aioredis

from events.bus import RedisBus, connect_redis
from events.emit import EventEmitter
from tripwire.db import Database
from tripwire.errors import Conflict
from tripwire.orchestration.reporting import FlowRunInfo, RunAborted, TaskRunInfo
from tripwire.orchestration.runs import FlowRunStore
from tripwire.orchestration.sink import EventReporter, EventSink
from tripwire.orchestration.states import State
from tripwire.settings import Settings

__all__ = ["SqlRunReporter"]

log = logging.getLogger(__name__)

T = TypeVar("T")

WRITE_TIMEOUT_S = 120.0
FLUSH_BEFORE_CHANGE_S = 2.0


class SqlRunReporter:
    """Writes flow-run states in SQL (waited for) and emits task-run events (queued); module notes."""

    def __init__(self, settings: Settings, *, write_timeout_s: float = WRITE_TIMEOUT_S) -> None:
        self._settings = settings
        self._write_timeout_s = write_timeout_s
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tripwire-reporter", daemon=True)
        self._client: aioredis.Redis | None = None
        self._bus: RedisBus | None = None
        self._db: Database | None = None
        self._store: FlowRunStore | None = None
        self._sink = EventSink(settings)
        self._tasks = EventReporter(self._sink)
        self._closed = False

    # --- lifecycle -----------------------------------------------------------------------------------

    def open(self) -> None:
        """Start the loop thread, connect to Redis and the database."""
        self._thread.start()
        self.call(self._open())

    async def _open(self) -> None:
        self._db = Database(self._settings.effective_database_url)
        await self._db.start()
        self._client = await connect_redis(self._settings.effective_redis_url)
        self._bus = RedisBus(self._client, self._settings.streams)
        self._store = FlowRunStore(self._db, EventEmitter(self._bus, self._settings))

    @property
    def store(self) -> FlowRunStore:
        if self._store is None:
            raise RuntimeError("the reporter is not open")
        return self._store

    @property
    def db(self) -> Database:
        if self._db is None:
            raise RuntimeError("the reporter is not open")
        return self._db

    def call(self, coro: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        """Run ``coro`` on the reporter's loop and wait for its result (note 1)."""
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout_s if timeout_s is not None else self._write_timeout_s)
        except BaseException:
            future.cancel()
            raise

    def close(self, timeout_s: float) -> None:
        """Send the task-run events (the rest is spilled, note 5), close the connections, stop the loop."""
        if self._closed:
            return
        self._closed = True
        try:
            if not self._sink.close(timeout_s):
                log.warning("some task-run events were not sent; they are kept in %s", self._sink.outbox)
        finally:
            if self._thread.is_alive():
                try:
                    self.call(self._close(), 10.0)
                except Exception:
                    log.exception("closing the reporter's connections failed")
                finally:
                    self._loop.call_soon_threadsafe(self._loop.stop)
                    self._thread.join(5.0)
            if not self._thread.is_alive():
                self._loop.close()

    async def _close(self) -> None:
        if self._bus is not None:
            await self._bus.close()
        if self._client is not None:
            await self._client.aclose()
        if self._db is not None:
            await self._db.stop()

    # --- RunReporter ---------------------------------------------------------------------------------

    def flow_run(
        self,
        run: FlowRunInfo,
        state: State,
        previous: State | None,
        message: str | None = None,
        payload: Mapping[str, Any] | None = None,
    ) -> None:
        """Write the change and wait for it; ``RunAborted`` when the run is not ours to move (note 2)."""
        if self._sink.pending:
            self._sink.flush(FLUSH_BEFORE_CHANGE_S)
        self.call(self._flow_run(run, State(state), previous, message, payload))

    async def _flow_run(
        self,
        run: FlowRunInfo,
        state: State,
        previous: State | None,
        message: str | None,
        payload: Mapping[str, Any] | None,
    ) -> None:
        expect = State(previous) if previous is not None else State.PENDING
        scheduled_time = None
        if state is State.SCHEDULED:  # note 3
            delay_s = float((payload or {}).get("retry_in_s") or 0.0)
            hold_s = delay_s + self._settings.orchestration.worker_dead_after_s
            scheduled_time = datetime.now(UTC) + timedelta(seconds=hold_s)
        try:
            await self.store.transition(
                run.id, state, message=message, expect=[expect], payload=payload,
                pid=os.getpid() if state is State.RUNNING else None, scheduled_time=scheduled_time,
            )  # fmt: skip
        except Conflict as exc:
            if state.final:
                log.warning("not recording that the flow ended %s: %s", state, exc)
                return
            raise RunAborted(str(exc)) from exc
        except Exception as exc:
            stored = await self._stored_state(run.id)
            if stored is state:
                log.error("flow run %s is %s, but its event was not emitted: %s", run.name, state, exc)
                return
            if state.final:
                log.error("could not record that flow run %s is %s: %s", run.name, state, exc)
                return
            raise RunAborted(f"could not record that flow run {run.name} is {state}: {exc}") from exc

    async def _stored_state(self, run_id: UUID) -> State | None:
        try:
            return (await self.store.get(run_id)).state
        except Exception:
            return None

    def task_run(
        self,
        run: TaskRunInfo,
        state: State,
        previous: State | None,
        message: str | None = None,
        payload: Mapping[str, Any] | None = None,
    ) -> None:
        """Queue the task run's event in the sink; the flow does not wait (note 5)."""
        self._tasks.task_run(run, State(state), previous, message, payload)
