"""The evaluator service: events from the stream, through the pure core, into state, firings and timers.

Notes referred to by the tests:
1. One batch = decode, intake (duplicates, skew, ``follows``), load every record the batch may touch
   and every event mark in one pipelined round trip, evaluate in memory, commit atomically
   (``RedisStateStore.commit``: state, event marks, held events, the firings outbox and the XACK of
   the batch's entries together). A conflict with another evaluator recomputes the batch; a crash
   before the commit leaves the entries pending, and the event marks make a replay a no-op.
2. Ticks run every ``tick_interval_s``. A due proactive deadline ``D`` is evaluated only once every
   entry the stream held before ``D`` has been processed: the tick's ``now`` is capped at the
   oldest entry that is still undelivered or pending in the evaluator group (``triggers.progress``).
   A backlog therefore delays a "no heartbeat" firing instead of faking one.
3. ``follows``: an event whose predecessor has not been processed is held (marked "h", stored in
   ``held:<predecessor>``, and given a release time ``occurred + follows_wait_s``). Processing the
   predecessor, here or in a later batch, releases it right after; so does a tick past its release.
   Holding also marks the predecessor "w" (waited for) when it has no mark, so the commit that holds
   and a concurrent commit that processes the predecessor conflict: one of them recomputes and sees
   the other. Event marks: "p" processed, "h" held (both make a redelivery a duplicate), "w".
4. Automations are reloaded when the store's change counter moves (polled every ``reload_interval_s``).
   Each poll also reports, in the hash ``<prefix>:evaluators``, which counter value this evaluator has
   loaded, so clients can wait until a change is live everywhere (``evaluators_status``).
5. Pass-through: an entry whose name and primary resource no loaded trigger can consider (the
   matching index returns no candidate; e.g. the engine's own lifecycle events in most set-ups) and
   that follows nothing is only marked processed: not validated in full, not matched, no records
   loaded (9 µs of CPU per entry instead of 20 µs, 1,000 automations loaded). If events are held
   for it, it is decoded and evaluated after all, so its followers are released. Entries are sorted
   under the evaluation's lock, so an automation loaded meanwhile cannot miss one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from uuid import UUID

import orjson
import redis.asyncio as aioredis
from pydantic import ValidationError

from events.bus import RedisBus
from events.codec import decode_event
from events.model import Event, now_utc
from events.ports import Bus, StreamEntry
from triggers.compiled import EventPlan
from triggers.evaluate import Evaluator
from triggers.models import Automation
from triggers.outbox import OutboxTemplate
from triggers.outcomes import Outcomes, from_us, to_us
from triggers.progress import caught_up_us, report_key
from triggers.redis_state import Conflict, RedisStateStore, StateCommit
from triggers.state import MemoryStateStore
from tripwire.services import ServiceState
from tripwire.settings import Settings

__all__ = ["AutomationSource", "EvaluatorService"]

logger = logging.getLogger(__name__)

GROUP = "evaluator"
MAX_CONFLICTS = 20


class AutomationSource(Protocol):
    """Where the evaluator finds the enabled automations, and a counter that moves on every change."""

    async def changes_version(self) -> int: ...

    async def enabled_automations(self) -> list[tuple[Automation, datetime]]:
        """Each enabled automation with the moment its current definition was enabled."""
        ...


DELIVERED = ("p", "h")
"""Event marks that make a later delivery of the same id a duplicate: processed, or held (S3)."""


async def _backoff(attempt: int) -> None:
    """Jittered pause before recomputing after a conflict, so contending evaluators spread out."""
    await asyncio.sleep(random.uniform(0, min(0.1, 0.002 * 2**attempt)))


@dataclass(slots=True)
class _Item:
    """One event of a batch: ``event`` is None for a pass-through (note 5), decoded only if needed."""

    eid: str
    event: Event | None
    data: bytes
    candidates: list[EventPlan] | None = None  # from the index, when sorting the entry looked them up


@dataclass(slots=True)
class _Pending:
    event: Event
    t_us: int
    order: int
    eid: str


class EvaluatorService:
    """Runs the trigger evaluator against the event stream (see the module notes)."""

    name = "evaluator"

    def __init__(
        self,
        *,
        bus: Bus,
        redis: aioredis.Redis,
        settings: Settings,
        automations: AutomationSource,
        consumer: str,
        clock: Callable[[], datetime] = now_utc,
        tick_interval_s: float = 0.25,
        reload_interval_s: float = 0.5,
        follows_wait_s: float = 900.0,
        on_outcomes: Callable[[Outcomes], Awaitable[None]] | None = None,
    ) -> None:
        self.bus = bus
        self.redis = redis
        self.settings = settings
        self.streams = settings.streams
        self.automations = automations
        self.consumer_name = consumer
        self.clock = clock
        self.tick_interval_s = tick_interval_s
        self.reload_interval_s = reload_interval_s
        self.wait_us = int(follows_wait_s * 1_000_000)
        self.skew_us = int(settings.limits.max_future_skew_s * 1_000_000)
        self.store = RedisStateStore(redis, self.streams)
        self.evaluator = Evaluator(MemoryStateStore())  # each batch swaps in its own overlay
        self.on_outcomes = on_outcomes
        self._consumer = bus.consumer(
            self.streams.events,
            GROUP,
            consumer,
            self._on_entries,
            batch_size=self.streams.evaluator_batch_size,
        )
        # The commit acknowledges the stream entries when the stream lives in the state's Redis.
        self._ack_in_commit = isinstance(bus, RedisBus) and bus.client is redis
        self._lock = asyncio.Lock()
        self._version: int | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = asyncio.Event()
        self._state = ServiceState.CREATED
        self._templates: dict[UUID, OutboxTemplate] = {}
        self.undecodable = 0

    @property
    def state(self) -> ServiceState:
        if self._state is ServiceState.RUNNING and any(t.done() for t in self._tasks):
            return ServiceState.FAILED
        return self._state

    # --- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        self._stopped.clear()
        await self.bus.ensure_group(self.streams.events, GROUP)
        await self.bus.ensure_group(self.store.outbox, "firings")
        await self.reload(force=True)
        await self._consumer.start()
        self._tasks = [
            asyncio.create_task(self._every(self.tick_interval_s, self.tick), name="evaluator-tick"),
            asyncio.create_task(self._every(self.reload_interval_s, self.reload), name="evaluator-reload"),
        ]
        self._state = ServiceState.RUNNING

    async def stop(self) -> None:
        self._state = ServiceState.STOPPING
        await self._consumer.stop()
        # The timer loops end at their next wake-up; cancel only one that is stuck in a Redis call.
        self._stopped.set()
        _, stuck = await asyncio.wait(self._tasks, timeout=2.0) if self._tasks else (set(), set())
        for task in stuck:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        with contextlib.suppress(aioredis.RedisError, OSError):
            await self.redis.hdel(report_key(self.streams), self.consumer_name)
        self._state = ServiceState.STOPPED

    async def __aenter__(self) -> EvaluatorService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _every(self, interval_s: float, job: Callable[[], Awaitable[object]]) -> None:
        """Run ``job`` every ``interval_s`` until ``stop()``; a failure is logged and retried."""
        while not self._stopped.is_set():
            try:
                await job()
            except Exception:
                logger.exception("evaluator %s failed; retrying", getattr(job, "__name__", "job"))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), interval_s)

    # --- automations -------------------------------------------------------------------------------

    async def reload(self, force: bool = False) -> bool:
        """Reload the automations when they changed (note 4); returns whether it did."""
        version = await self.automations.changes_version()
        if not force and version == self._version:
            await self._report()
            return False
        pairs = await self.automations.enabled_automations()
        async with self._lock:
            evaluator = Evaluator(self.evaluator.store, processing_start=self.evaluator.processing)
            for automation, enabled_at in pairs:
                evaluator.add(automation)
                evaluator.enable(automation.id, enabled_at)  # writes nothing yet: see _arm_at_enable
            self.evaluator = evaluator
            self._templates = {a.id: OutboxTemplate(a) for a, _ in pairs}
            # Only a fully armed load counts as loaded: otherwise the next poll tries again.
            self._version = version if await self._arm_at_enable(pairs) else None
        await self._report()
        logger.info("loaded %d automations", len(pairs), extra={"version": version})
        return True

    async def _report(self) -> None:
        """Tell clients which automations version this evaluator uses, and that it is alive (note 4)."""
        value = f"{self._version}|{int(time.time() * 1000)}"
        await self.redis.hset(report_key(self.streams), self.consumer_name, value)

    async def _arm_at_enable(self, pairs: list[tuple[Automation, datetime]]) -> bool:
        """Arm proactive triggers without ``after``/``for_each`` at their enable time, once (S6)."""
        for _ in range(MAX_CONFLICTS):
            probe = Evaluator(MemoryStateStore())
            for automation, enabled_at in pairs:
                probe.add(automation)
                probe.enable(automation.id, enabled_at)
            keys = list(probe.store)  # type: ignore[arg-type]
            if not keys:
                return True
            loaded = await self.store.load(keys)
            overlay = loaded.overlay()
            self.evaluator.store = overlay
            for automation, enabled_at in pairs:
                self.evaluator.enable(automation.id, enabled_at)
            changes = overlay.drain_changes()
            try:
                await self.store.commit(
                    loaded, StateCommit(changes=changes), self._now_ms(), self.streams.maxlen
                )
                return True
            except Conflict:
                continue
        logger.warning("could not arm proactive triggers (state conflicts); retrying at the next poll")
        return False

    # --- events ------------------------------------------------------------------------------------

    async def _on_entries(self, entries: list[StreamEntry]) -> bool:
        """The consumer's handler; True: the commit acknowledged the entries (state store note 4)."""
        async with self._lock:  # the automations do not change while the batch is sorted (note 5)
            batch = [item for item in map(self._item, entries) if item is not None]
            if not batch:
                return False
            ack = (self.streams.events, GROUP, [e.id for e in entries]) if self._ack_in_commit else None
            await self._evaluate_locked(batch, ack)
            return ack is not None

    def _item(self, entry: StreamEntry) -> _Item | None:
        """One stream entry as an item of a batch; a pass-through when no automation can consider it."""
        candidates = None
        try:
            doc = orjson.loads(entry.data)
            name, resource, eid = doc["event"], doc["resource"], doc["id"]
            if type(name) is str and type(resource) is dict and type(eid) is str:
                candidates = self.evaluator.index.candidates(name, resource)
                if not candidates and doc.get("follows") is None:
                    return _Item(str(UUID(eid)), None, entry.data)
            event = decode_event(entry.data)
        except (ValidationError, ValueError, KeyError, TypeError):
            self.undecodable += 1
            logger.warning("skipped an entry that is not an event", extra={"entry_id": entry.id})
            return None
        return _Item(str(event.id), event, entry.data, candidates)

    async def evaluate(self, events: list[Event]) -> Outcomes:
        """Evaluate one batch of events (note 1); returns what fired and resolved."""
        async with self._lock:
            return await self._evaluate_locked([_Item(str(e.id), e, b"") for e in events])

    async def _evaluate_locked(
        self, batch: list[_Item], ack: tuple[str, str, list[str]] | None = None
    ) -> Outcomes:
        for attempt in range(MAX_CONFLICTS):
            try:
                return await self._evaluate_once(batch, ack)
            except Conflict as exc:
                logger.debug("state conflict on %s; recomputing the batch", exc)
                await _backoff(attempt)
        raise RuntimeError(f"gave up after {MAX_CONFLICTS} state conflicts")

    def _effective_us(self, event: Event, now_us: int) -> int:
        occurred = to_us(event.occurred)
        received = now_us if event.received is None else to_us(event.received)
        return received if occurred - received > self.skew_us else occurred

    async def _evaluate_once(self, batch: list[_Item], ack: tuple[str, str, list[str]] | None) -> Outcomes:
        now = self.clock()
        now_us = to_us(now)
        ev = self.evaluator
        ids = [item.eid for item in batch]
        preds = [str(i.event.follows) for i in batch if i.event is not None and i.event.follows is not None]
        keys: dict[str, None] = {}
        ev.forget_matches()
        for item in batch:
            if item.event is not None:
                for key in ev.keys_for(item.event, item.candidates):
                    keys[key] = None
        loaded = await self.store.load(keys, [*ids, *preds])
        # Only an event marked "w" has held followers (note 3): no extra round trip for the others.
        waited_for = [i for i in ids if loaded.marks.get(i) == "w"]
        awaited = await self._held_for(waited_for, awaited=True) if waited_for else {}
        marks = dict(loaded.marks)
        commit = StateCommit()
        order: list[_Pending] = []
        waiting: dict[str, list[_Pending]] = {}
        waiting.update(awaited)
        for i, item in enumerate(batch):
            eid = item.eid
            if commit.marks.get(eid, marks.get(eid)) in DELIVERED:
                continue  # a duplicate (S3)
            event = item.event
            if event is None:  # note 5
                if eid not in waiting:
                    commit.marks[eid] = "p"
                    continue
                try:  # it releases held followers: evaluated in full after all
                    event = item.event = decode_event(item.data)
                except (ValidationError, ValueError):
                    self.undecodable += 1
                    commit.marks[eid] = "p"
                    continue
            t = self._effective_us(event, now_us)
            pred = None if event.follows is None else str(event.follows)
            pred_mark = None if pred is None else commit.marks.get(pred, marks.get(pred, ""))
            if pred is not None and pred != eid and pred_mark != "p" and now_us < t + self.wait_us:
                commit.marks[eid] = "h"
                if not pred_mark:  # note 3: the predecessor's mark is compare-and-set too
                    commit.marks[pred] = "w"
                held = _Pending(event, t, i, eid)
                waiting.setdefault(pred, []).append(held)
                self._hold_ops(commit, pred, held)
                continue
            self._ready(_Pending(event, t, i, eid), waiting, commit, order)
        in_batch = {item.eid for item in batch if item.event is not None}  # their records are loaded
        extra = [p.event for p in order if p.eid not in in_batch]
        if extra:  # released followers from earlier batches: their records and real marks too
            more = {k: None for e in extra for k in ev.keys_for(e) if k not in keys}
            again = await self.store.load(more, [str(e.id) for e in extra])
            loaded.versions.update(again.versions)
            loaded.records.update(again.records)
            for e in extra:
                mark = again.marks.get(str(e.id), "")
                if mark == "p":
                    raise Conflict(f"held event {e.id} was released elsewhere")
                loaded.marks[str(e.id)] = mark
        overlay = loaded.overlay()
        ev.store = overlay
        ev.processing = max(ev.processing, now_us)
        out = Outcomes()
        for pending in order:
            out.extend(ev.process(pending.event, pending.t_us))
        commit.changes = overlay.drain_changes()
        self._outbox(out, commit)
        await self.store.commit(loaded, commit, now_us // 1000, self.streams.maxlen, ack)
        if out and self.on_outcomes is not None:
            await self.on_outcomes(out)
        return out

    def _ready(
        self,
        pending: _Pending,
        waiting: dict[str, list[_Pending]],
        commit: StateCommit,
        order: list[_Pending],
    ) -> None:
        """Process an event, then (depth first) the events held for it, by (occurred, delivery order)."""
        stack = [pending]
        while stack:
            current = stack.pop()
            eid = current.eid
            commit.marks[eid] = "p"
            order.append(current)
            followers = waiting.pop(eid, None)
            if followers:
                commit.ops.append(["DEL", self.streams.key("held", eid)])
                commit.ops.append(["SREM", self.streams.key("awaited"), eid])
                for held in followers:
                    commit.ops.append(["ZREM", self.streams.key("held-due"), f"{eid}/{held.event.id}"])
                stack.extend(sorted(followers, key=lambda h: (h.t_us, h.order), reverse=True))

    def _hold_ops(self, commit: StateCommit, pred: str, held: _Pending) -> None:
        data = json.dumps({"e": held.event.model_dump(mode="json"), "t": held.t_us, "o": held.order})
        commit.ops.append(["HSET", self.streams.key("held", pred), str(held.event.id), data])
        commit.ops.append(["SADD", self.streams.key("awaited"), pred])
        release = held.t_us + self.wait_us
        commit.ops.append(["ZADD", self.streams.key("held-due"), release, f"{pred}/{held.event.id}"])

    async def _held_for(self, ids: Iterable[str], *, awaited: bool = False) -> dict[str, list[_Pending]]:
        """Events held in Redis for any of ``ids``, and transitively for those (note 3).

        ``awaited=True``: every id is known to have held followers (its mark is "w"), so the first
        level skips the ``awaited`` set lookup.
        """
        out: dict[str, list[_Pending]] = {}
        frontier = list(dict.fromkeys(ids))
        seen = set(frontier)  # `follows` may form a cycle (A follows B follows A): visit each id once
        awaited_key = self.streams.key("awaited")
        known = awaited
        while frontier:
            if known:
                hits, known = frontier, False
            else:
                flags = await self.redis.smismember(awaited_key, frontier)
                hits = [i for i, flag in zip(frontier, flags, strict=True) if flag]
            if not hits:
                break
            async with self.redis.pipeline(transaction=False) as pipe:
                for pred in hits:
                    pipe.hgetall(self.streams.key("held", pred))
                replies = await pipe.execute()
            frontier = []
            for pred, fields in zip(hits, replies, strict=True):
                held = []
                for raw in fields.values():
                    doc = json.loads(raw)
                    event = Event.model_validate(doc["e"])
                    held.append(_Pending(event, doc["t"], doc["o"], str(event.id)))
                out[pred] = held
                for h in held:
                    hid = str(h.event.id)
                    if hid not in seen:
                        seen.add(hid)
                        frontier.append(hid)
        return out

    # --- ticks -------------------------------------------------------------------------------------

    async def tick(self) -> Outcomes:
        """Release held events and fire or resolve due records, no later than the stream is processed."""
        now = self.clock()
        now_us = to_us(now)
        cap = await caught_up_us(self.redis, self.streams.events, GROUP, now_us)
        tick_us = min(now_us, cap)
        due = await self.store.due(tick_us)
        released = await self.redis.zrangebyscore(self.streams.key("held-due"), "-inf", tick_us)
        if not due and not released:
            return Outcomes()
        async with self._lock:
            for attempt in range(MAX_CONFLICTS):
                try:
                    return await self._tick_once(tick_us, [k for _, k in due], [m.decode() for m in released])
                except Conflict as exc:
                    logger.debug("state conflict on %s during a tick; recomputing", exc)
                    await _backoff(attempt)
            raise RuntimeError(f"gave up after {MAX_CONFLICTS} state conflicts")

    async def _tick_once(self, tick_us: int, due_keys: list[str], released: list[str]) -> Outcomes:
        ev = self.evaluator
        commit = StateCommit()
        order: list[_Pending] = []
        if released:
            preds = sorted({m.split("/", 1)[0] for m in released})
            held = await self._held_for(preds)
            due_ids = {m.split("/", 1)[1] for m in released}
            ready = sorted(
                (h for hs in held.values() for h in hs if str(h.event.id) in due_ids),
                key=lambda h: (h.t_us, h.order),
            )
            for h in ready:
                if str(h.event.id) in commit.marks:
                    continue  # already released above, as a follower of an earlier one
                pred = str(h.event.follows)
                commit.ops.append(["HDEL", self.streams.key("held", pred), str(h.event.id)])
                commit.ops.append(["ZREM", self.streams.key("held-due"), f"{pred}/{h.event.id}"])
                if pred in held:
                    held[pred] = [x for x in held[pred] if x.event.id != h.event.id]
                    if not held[pred]:  # nothing waits for it any more
                        commit.ops.append(["DEL", self.streams.key("held", pred)])
                        commit.ops.append(["SREM", self.streams.key("awaited"), pred])
                self._ready(h, held, commit, order)
        keys: dict[str, None] = dict.fromkeys(ev.keys_for_tick(from_us(tick_us), due_keys))
        for p in order:
            keys.update(dict.fromkeys(ev.keys_for(p.event)))
        loaded = await self.store.load(keys, [str(p.event.id) for p in order])
        if any(loaded.marks.get(str(p.event.id)) == "p" for p in order):
            raise Conflict("a held event was released elsewhere meanwhile")
        overlay = loaded.overlay()
        ev.store = overlay
        ev.processing = max(ev.processing, tick_us)
        out = Outcomes()
        for pending in order:
            out.extend(ev.process(pending.event, pending.t_us))
        out.extend(ev.tick(from_us(tick_us)))
        commit.changes = overlay.drain_changes()
        self._outbox(out, commit)
        await self.store.commit(loaded, commit, tick_us // 1000, self.streams.maxlen)
        if out and self.on_outcomes is not None:
            await self.on_outcomes(out)
        return out

    # --- outcomes ----------------------------------------------------------------------------------

    def _outbox(self, out: Outcomes, commit: StateCommit) -> None:
        for outcome in (*out.firings, *out.resolutions):
            template = self._templates.get(outcome.automation_id)
            if template is not None:
                commit.outbox.append(template.message(outcome))

    def _now_ms(self) -> int:
        return to_us(self.clock()) // 1000
