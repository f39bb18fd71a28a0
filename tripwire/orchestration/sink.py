"""EventSink: run events leave the flow at once and reach Redis when they can.

1. ``put`` appends the event document to an in-memory buffer and wakes the sink's thread: it never
   waits for the network, so a flow runs as fast with Redis down as with Redis up.
2. The sink's thread runs its own asyncio loop. It connects (``events.bus.connect_redis``) to
   ``settings.redis_url``; when that is unset, to the local default, else to the private redis-server
   that a ``tripwire server start`` of the same home runs (``redis_embedded``; never started from
   here). It sends the buffer from the front in batches (``EventEmitter.emit_events``, one MULTI/EXEC
   each); a batch leaves the buffer only once it is on the stream, so nothing is lost to a failed send.
   Events keep the order in which they were put.
3. Redis unreachable: the events stay buffered and the thread retries with backoff (``backoff_min_s``
   doubling to ``backoff_max_s``, with jitter); one warning per outage, one info line when the backlog
   is delivered. The buffer is bounded (``max_buffer``): past it the oldest events are dropped, with one
   warning when dropping starts and the count logged when the outage ends.
4. An event the emitter rejects (a limit, a bad label) would refuse its whole batch: that batch is then
   sent one event at a time and the rejected ones are dropped with an error log.
5. ``flush(timeout_s)`` asks for an immediate attempt and waits until the buffer is empty. It stops
   waiting at the deadline, or as soon as an attempt begun after the request fails (no point waiting
   for a Redis that just refused us): what is left is spilled to ``<home>/outbox/<time>-<pid>-<id>.jsonl``
   (temporary file, then rename). The process-wide sink flushes this way at exit (``atexit``, 2 s).
6. A starting sink adopts the spilled files first (atomic rename to ``.claimed-<pid>``, so two processes
   never adopt the same file; files claimed by a process that no longer exists are adopted again) and
   sends their events before anything put since. A claimed file is removed once its events are sent,
   or when they are spilled again. A spilled event may be sent twice (spilled while its batch was in
   flight): event ids are derived from the run and state (``state_events.run_event``), so the engine
   deduplicates it.
7. ``EventReporter`` is the ``RunReporter`` of flows called directly: it turns each state change into a
   ``tripwire.flow-run.<State>`` / ``tripwire.task-run.<State>`` document (id from the run, its state
   and its run count) and puts it in a sink.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import json
import logging
import os
import random
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from events.bus import RedisBus, connect_redis, redact_url
from events.emit import EventEmitter
from events.model import now_utc
from tripwire.errors import EventRejected, ServiceUnavailable
from tripwire.orchestration.reporting import FlowRunInfo, TaskRunInfo
from tripwire.orchestration.state_events import run_event
from tripwire.orchestration.states import State
from tripwire.redis_embedded import EmbeddedRedis
from tripwire.settings import Settings

__all__ = ["EventReporter", "EventSink", "default_sink"]

log = logging.getLogger(__name__)

AT_EXIT_FLUSH_S = 2.0


class EventSink:
    """Buffers event documents and sends them to the event stream from a background thread."""

    def __init__(
        self,
        settings: Settings,
        *,
        outbox: Path | None = None,
        max_buffer: int = 10_000,
        batch_size: int = 500,
        backoff_min_s: float = 0.1,
        backoff_max_s: float = 5.0,
    ) -> None:
        self._settings = settings
        self._url = settings.effective_redis_url
        self.outbox = outbox if outbox is not None else settings.home / "outbox"
        self._max_buffer = max_buffer
        self._batch_size = batch_size
        self._backoff = (backoff_min_s, backoff_max_s)
        self._cond = threading.Condition()
        self._buffer: deque[tuple[int, dict[str, Any]]] = deque()
        self._seq = itertools.count()
        self._dropped = 0  # during the current outage
        self._claimed: list[Path] = []
        self._attempts = 0  # send attempts begun
        self._last_failed = -1  # number of the last attempt that failed
        self._in_outage = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None  # new events
        self._kick: asyncio.Event | None = None  # flush: retry now
        self._stopping = False

    # --- producer side (any thread) ------------------------------------------------------------------

    def put(self, event: dict[str, Any]) -> None:
        """Queue one event document (note 1); never blocks on the network."""
        with self._cond:
            if len(self._buffer) >= self._max_buffer:
                self._buffer.popleft()
                if self._dropped == 0:
                    log.warning("event sink full (%d events): dropping the oldest", self._max_buffer)
                self._dropped += 1
            self._buffer.append((next(self._seq), event))
            self._ensure_thread()
        self._signal("_wake")

    @property
    def pending(self) -> int:
        """Events not yet on the stream."""
        with self._cond:
            return len(self._buffer)

    @property
    def last_failed_attempt(self) -> int:
        """Number of the last send attempt that failed (-1: none); tests await an outage with it."""
        with self._cond:
            return self._last_failed

    def flush(self, timeout_s: float) -> bool:
        """Send the buffer within ``timeout_s``, spill the rest to the outbox (note 5); True: all sent."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            if self._thread is None and not self._buffer:
                return True
            alive = self._ensure_thread()
            started = self._attempts
        self._signal("_kick")
        with self._cond:
            while alive and self._buffer and self._last_failed < started + 1 and not self._stopping:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            if not self._buffer:
                return True
            items = [event for _, event in self._buffer]
            self._buffer.clear()
            claimed, self._claimed = self._claimed, []
        self._spill(items, claimed)
        return False

    def close(self, timeout_s: float = 5.0) -> bool:
        """Flush, then stop the thread and close the connection. True: everything was sent."""
        delivered = self.flush(timeout_s)
        with self._cond:
            self._stopping = True
            thread = self._thread
        self._signal("_wake")
        self._signal("_kick")
        if thread is not None:
            thread.join(timeout_s)
        return delivered

    def _ensure_thread(self) -> bool:  # under self._cond
        """Start the sink's thread if needed; False when it cannot run (e.g. at interpreter shutdown)."""
        if self._thread is None:
            ready = threading.Event()
            thread = threading.Thread(target=self._thread_main, args=(ready,), daemon=True)
            thread.name = "tripwire-event-sink"
            try:
                thread.start()
            except RuntimeError as exc:  # put() must never fail the flow
                log.warning("event sink thread not started (%s); events kept for flush", exc)
                return False
            self._thread = thread
            ready.wait(10)
        return self._thread.is_alive()

    def _signal(self, which: str) -> None:
        loop, event = self._loop, getattr(self, which)
        if loop is None or event is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: the sink stopped
            loop.call_soon_threadsafe(event.set)

    # --- the sink's thread -------------------------------------------------------------------------------

    def _thread_main(self, ready: threading.Event) -> None:
        asyncio.run(self._main(ready))

    async def _main(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake, self._kick = asyncio.Event(), asyncio.Event()
        ready.set()
        self._adopt_outbox()
        client = None
        emitter: EventEmitter | None = None
        delay = self._backoff[0]
        try:
            while True:
                with self._cond:
                    if self._stopping:
                        return
                    batch = list(itertools.islice(self._buffer, self._batch_size))
                    if batch:
                        self._attempts += 1
                        attempt = self._attempts
                        self._kick.clear()  # a flush asked from now on gets a fresh attempt
                    else:
                        self._wake.clear()
                        self._kick.clear()
                if not batch:
                    await self._wake.wait()
                    continue
                try:
                    if emitter is None:
                        client = await self._connect()
                        emitter = EventEmitter(RedisBus(client, self._settings.streams), self._settings)
                    await self._send(emitter, [event for _, event in batch])
                except Exception as exc:
                    self._failed(attempt, exc)
                    if client is not None:
                        with contextlib.suppress(Exception):
                            await client.aclose()
                    client = emitter = None
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._kick.wait(), delay * random.uniform(0.5, 1.0))
                    delay = min(delay * 2, self._backoff[1])
                    continue
                delay = self._backoff[0]
                self._sent({seq for seq, _ in batch})
        finally:
            if client is not None:
                await client.aclose()

    async def _connect(self) -> Any:
        urls = [self._url]
        if self._settings.redis_url is None:  # note 2: the one-machine default
            embedded = EmbeddedRedis(self._settings.home / "redis")
            if embedded.socket_path.exists():
                urls.append(embedded.url)
        for i, url in enumerate(urls):
            try:
                return await connect_redis(url)
            except ServiceUnavailable:
                if i == len(urls) - 1:
                    raise
        raise AssertionError("unreachable")

    async def _send(self, emitter: EventEmitter, events: list[dict[str, Any]]) -> None:
        try:
            await emitter.emit_events(events)
        except EventRejected:
            for event in events:  # note 4
                try:
                    await emitter.emit_events([event])
                except EventRejected as exc:
                    log.error("event %s dropped, refused by the emitter: %s", event.get("event"), exc)

    def _failed(self, attempt: int, exc: Exception) -> None:
        with self._cond:
            self._last_failed = attempt
            first = not self._in_outage
            self._in_outage = True
            pending = len(self._buffer)
            self._cond.notify_all()
        if first:
            log.warning(
                "cannot send run events to Redis at %s (%s: %s); %d buffered, retrying in the background",
                redact_url(self._url),
                type(exc).__name__,
                exc,
                pending,
            )

    def _sent(self, seqs: set[int]) -> None:
        with self._cond:
            while self._buffer and self._buffer[0][0] in seqs:
                self._buffer.popleft()
            empty = not self._buffer
            claimed = self._claimed if empty else []
            if empty:
                self._claimed = []
            recovered, dropped = self._in_outage and empty, self._dropped
            if recovered:
                self._in_outage, self._dropped = False, 0
            self._cond.notify_all()
        for path in claimed:
            path.unlink(missing_ok=True)
        if recovered:
            log.info("run events delivered to Redis again (%d dropped while it was unreachable)", dropped)

    # --- outbox (notes 5, 6) -------------------------------------------------------------------------

    def _spill(self, events: list[dict[str, Any]], claimed: list[Path]) -> None:
        try:
            self.outbox.mkdir(parents=True, exist_ok=True)
            name = f"{time.time_ns()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
            fd, tmp = tempfile.mkstemp(dir=self.outbox, prefix=".tmp-")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                for event in events:
                    f.write(json.dumps(event, default=str) + "\n")
            os.replace(tmp, self.outbox / name)
        except OSError as exc:
            log.error("%d run events lost: cannot write the outbox %s: %s", len(events), self.outbox, exc)
            return
        for path in claimed:
            path.unlink(missing_ok=True)
        log.warning(
            "%d run events not delivered; kept in %s for the next run", len(events), self.outbox / name
        )

    def _adopt_outbox(self) -> None:
        if not self.outbox.is_dir():
            return
        adopted: list[dict[str, Any]] = []
        claimed: list[Path] = []
        for path in sorted(self.outbox.iterdir()):
            if not _adoptable(path):
                continue
            target = self.outbox / f"{path.name.partition('.jsonl')[0]}.jsonl.claimed-{os.getpid()}"
            try:
                os.rename(path, target)  # note 6: only one process wins
                lines = target.read_text(encoding="utf-8").splitlines()
            except OSError:
                continue
            claimed.append(target)
            for line in lines:
                try:
                    adopted.append(json.loads(line))
                except ValueError:
                    log.warning("skipping an unreadable line of %s", target)
        if not claimed:
            return
        with self._cond:
            start = -len(adopted) - 1
            overflow = len(adopted) + len(self._buffer) - self._max_buffer
            if overflow > 0:
                self._dropped += overflow
                log.warning("outbox holds more than the sink takes: dropping %d oldest events", overflow)
            for i, event in reversed(list(enumerate(adopted))):
                self._buffer.appendleft((start + i, event))
            while len(self._buffer) > self._max_buffer:
                self._buffer.popleft()
            self._claimed.extend(claimed)
        log.info("sending %d run events left in %s by an earlier run", len(adopted), self.outbox)


def _adoptable(path: Path) -> bool:
    name = path.name
    if name.endswith(".jsonl"):
        return not name.startswith(".")
    _, sep, pid = name.partition(".jsonl.claimed-")
    if not sep or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True  # its process is gone
    except OSError:
        return False
    return False


class EventReporter:
    """A ``RunReporter`` that only emits events, through a sink (note 7)."""

    def __init__(self, sink: EventSink, *, clock: Callable[[], datetime] = now_utc) -> None:
        self.sink = sink
        self._clock = clock

    def _put(
        self,
        kind: str,
        run: FlowRunInfo | TaskRunInfo,
        state: State,
        previous: State | None,
        message: str | None,
        payload: Mapping[str, Any] | None,
    ) -> None:
        self.sink.put(
            run_event(
                kind,
                run.id,
                run.name,
                state.value,
                previous=previous.value if previous is not None else None,
                occurred=self._clock(),
                related=run.related(),
                id_parts=(state.value, run.run_count),
                message=message,
                run_count=run.run_count,
                payload=payload,
            )
        )

    def flow_run(
        self,
        run: FlowRunInfo,
        state: State,
        previous: State | None,
        message: str | None = None,
        payload: Mapping[str, Any] | None = None,
    ) -> None:
        self._put("flow-run", run, state, previous, message, payload)

    def task_run(
        self,
        run: TaskRunInfo,
        state: State,
        previous: State | None,
        message: str | None = None,
        payload: Mapping[str, Any] | None = None,
    ) -> None:
        self._put("task-run", run, state, previous, message, payload)

    def close(self, timeout_s: float) -> None:
        self.sink.flush(timeout_s)


_default: tuple[int, EventSink] | None = None
_default_lock = threading.Lock()


def default_sink() -> EventSink:
    """The process-wide sink on ``Settings()``, created on first use, flushed at exit (note 5)."""
    global _default
    with _default_lock:
        if _default is None or _default[0] != os.getpid():  # a forked child gets its own
            sink = EventSink(Settings())
            atexit.register(sink.flush, AT_EXIT_FLUSH_S)
            _default = (os.getpid(), sink)
        return _default[1]
