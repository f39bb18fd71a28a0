"""The action runner: consumes the actions stream, runs each action once, records and announces the outcome.

Notes referred to by the tests and the README ("Actions"):
1. Messages come from the firings relay (``triggers.outbox.action_messages``), one per action, each with
   an idempotency key ``<firing id>:<kind>:<index>``. Every runner process reads the stream in the
   consumer group ``actions``; a batch's messages run concurrently, at most ``actions.concurrency`` at a
   time, so a slow receiver does not hold back the others.
2. Exactly once, with one exception. Before running, the runner looks for ``<prefix>:action-done:<key>``
   in Redis (shared by every runner): a message already finished is skipped. It then takes a lease
   ``<prefix>:action-lease:<key>`` (``SET NX PX`` of 30 s, renewed every 10 s until the outcome is
   recorded, so a killed runner's lease is gone within 30 s), so two runners never run one key at the
   same time (an entry reclaimed from a slow runner, or a key published twice); a message whose lease
   another runner holds is left pending and retried after ``reclaim_idle_ms``. The done key
   is written (``SET NX``, kept ``done_ttl_s``) only after the outcome is recorded, and the stream entry is
   acknowledged after that. So a runner killed before an action's side effect, or after its done key,
   leaves nothing run twice and nothing lost: the entry is reclaimed and either run or skipped.
   A crash *during* the side effect — after a receiver got the request, before the done key — cannot be
   told apart from a crash before it, and the action runs again: **at-least-once** there (the choice over
   at-most-once: an alert sent twice beats an alert lost). Outbound calls therefore carry the key
   (``Idempotency-Key`` header) so a receiver can drop the repeat; emit-event derives its event id from the
   key, which the engine deduplicates; pause/resume are idempotent by nature.
3. One run: validate the action, apply the loop guard (note 5), build the template variables
   (``actions.context``), then attempt the action with a time limit (``actions.timeout_s``). Outcomes:
   success -> "succeeded"; ``ActionFailed`` (block missing, 4xx, target not found, template error) ->
   "failed" at once; anything else (5xx, timeout, refused connection, database down) -> retried, at most
   ``actions.attempts`` attempts, waiting ``backoff_s * 2**(n-1)`` (capped at ``backoff_max_s``) times a
   random factor in [0.5, 1.5) between them, then "dead-lettered": the message is appended to
   ``<actions stream>:dead`` with the reason.
4. Every outcome (``actions.outcomes``) is recorded in SQL (``actions.results``, next to its firing)
   and emitted as ``tripwire.automation.action.executed`` or ``tripwire.automation.action.failed`` with
   an id derived from the key and the outcome, so a redelivery does not emit it twice. Reasons, logs,
   results and events never hold a secret: messages are scrubbed of the values of the blocks the action
   used, URLs are shown as ``scheme://host/…``, and the libraries that log URLs are kept quiet
   (``quiet_loggers``).
5. Loop guard at run time: at most ``actions.max_runs_per_minute`` actions per automation per minute
   (a Redis counter per automation and minute, shared by every runner); above it an action fails with
   "rate limit: possible loop". It backs up the check at save time (``actions.models.self_loop_error``),
   which refuses the loops it can prove (an emit-event its own trigger counts).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any
from uuid import uuid4

import httpx
import redis.asyncio as aioredis
from pydantic import TypeAdapter, ValidationError

from actions.automation import set_automation_enabled
from actions.context import ActionContext, ActionMessage, BatchMemo, template_variables
from actions.emit import emit_event
from actions.notify import send_notification
from actions.orchestration import (
    cancel_flow_run,
    change_flow_run_state,
    run_deployment,
    set_deployment_paused,
    set_schedule_active,
)
from actions.outcomes import GROUP, Finished, Outcome, OutcomeRecorder, done_key, log_context
from actions.results import ActionResultStore
from actions.templates import TemplateEngine, TemplateLimits
from actions.webhook import call_webhook
from blocks.crypto import Cipher
from blocks.store import BlockStore
from events.emit import EventEmitter
from events.model import now_utc
from events.ports import Bus, StreamEntry
from triggers.models import Action
from triggers.store import AutomationStore
from tripwire.db import Database
from tripwire.errors import ActionFailed
from tripwire.services import ServiceState
from tripwire.settings import Settings

__all__ = ["PERFORMERS", "ActionRunnerService", "LeaseHeld", "lease_key", "quiet_loggers"]

logger = logging.getLogger(__name__)

REASON_MAX_CHARS = 1000
LEASE_S = 30.0

Performer = Callable[[Any, ActionContext], Awaitable[dict[str, Any]]]

PERFORMERS: Mapping[str, Performer] = MappingProxyType(
    {
        "send-notification": send_notification,
        "call-webhook": call_webhook,
        "pause-automation": set_automation_enabled,
        "resume-automation": set_automation_enabled,
        "emit-event": emit_event,
        "run-deployment": run_deployment,
        "pause-deployment": set_deployment_paused,
        "resume-deployment": set_deployment_paused,
        "pause-schedule": set_schedule_active,
        "resume-schedule": set_schedule_active,
        "cancel-flow-run": cancel_flow_run,
        "change-flow-run-state": change_flow_run_state,
    }
)
"""What runs each action type (``do-nothing`` records a success and does nothing)."""

# Compare-and-delete / compare-and-expire: only the runner holding the lease may release or extend it.
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
_RENEW = (
    "if redis.call('GET', KEYS[1]) == ARGV[1] then "
    "return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"
)


QUIET_LOGGERS = {
    "apprise": logging.INFO,
    "urllib3": logging.INFO,  # under apprise (requests): logs each request line at DEBUG
    "httpx": logging.WARNING,
    "httpcore": logging.INFO,
}


def quiet_loggers() -> None:
    """Raise the level of libraries that log target URLs (apprise and urllib3 at DEBUG, httpx at INFO:
    "HTTP Request: POST <url>"), whose paths and queries may hold tokens, so they never reach the logs."""
    for name, level in QUIET_LOGGERS.items():
        log = logging.getLogger(name)
        if log.level < level:  # NOTSET (0) too: a later root level of DEBUG must not open them again
            log.setLevel(level)


def lease_key(settings: Settings, idempotency_key: str) -> str:
    """The Redis key a runner holds while it runs an action message (note 2)."""
    return settings.streams.key("action-lease", idempotency_key)


class _Busy:
    """Another runner holds the message's lease."""


_BUSY = _Busy()


class LeaseHeld(Exception):
    """Some messages of the batch are being run by another runner; they stay pending (note 2)."""


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc)
    if type(exc).__module__.startswith("actions."):
        return text  # our own retryable errors are already worded
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class ActionRunnerService:
    """Runs the actions of firings from the actions stream (see the module notes)."""

    name = "actions"

    def __init__(
        self,
        *,
        bus: Bus,
        redis: aioredis.Redis,
        db: Database,
        settings: Settings,
        consumer: str,
        blocks: BlockStore | None = None,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], datetime] = now_utc,
        lease_s: float = LEASE_S,
    ) -> None:
        self.bus = bus
        self.redis = redis
        self.db = db
        self.settings = settings
        self.config = settings.actions
        self.clock = clock
        self.stream = settings.streams.actions
        self.blocks = blocks
        self.http = http
        self._own_http = http is None
        self.results = ActionResultStore(db)
        self.automations = AutomationStore(db, redis, settings.streams)
        self.emitter = EventEmitter(bus, settings, clock=clock)
        self.outcomes = OutcomeRecorder(
            redis=redis, results=self.results, emitter=self.emitter, settings=settings, clock=clock
        )
        self.engine = TemplateEngine(
            TemplateLimits(
                timeout_s=self.config.render_timeout_s,
                max_output_bytes=self.config.max_output_bytes,
                max_range=self.config.max_range,
            )
        )
        self._actions: TypeAdapter[Any] = TypeAdapter(Action)
        self._semaphore = asyncio.Semaphore(self.config.concurrency)
        self._lease_ms = int(1000 * lease_s)
        self._consumer = bus.consumer(self.stream, GROUP, consumer, self.handle)
        self._state = ServiceState.CREATED

    # --- lifecycle --------------------------------------------------------------------------------------
    @property
    def state(self) -> ServiceState:
        return self._state

    async def start(self) -> None:
        """Create the group if needed, open the block store and the HTTP client, start consuming."""
        quiet_loggers()
        await self.bus.ensure_group(self.stream, GROUP)
        if self.blocks is None:  # the key from TRIPWIRE_ENCRYPTION_KEY or the key file under home
            self.blocks = BlockStore(self.db, Cipher.from_settings(self.settings))
        if self.http is None:
            self.http = httpx.AsyncClient(follow_redirects=False)
        await self._consumer.start()
        self._state = ServiceState.RUNNING

    async def stop(self) -> None:
        """Stop reading, let running actions finish within the drain timeout, close the HTTP client."""
        self._state = ServiceState.STOPPING
        await self._consumer.stop()
        if self._own_http and self.http is not None:
            await self.http.aclose()
            self.http = None
        self._state = ServiceState.STOPPED

    async def __aenter__(self) -> ActionRunnerService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- one batch --------------------------------------------------------------------------------------
    async def handle(self, entries: list[StreamEntry]) -> None:
        """The consumer's handler: run every message of the batch (note 1), then record their outcomes
        together (one transaction, one publish); raising leaves the batch pending."""
        memo = BatchMemo()
        ran = await asyncio.gather(*(self._guarded(e, memo) for e in entries), return_exceptions=True)
        finished = [r for r in ran if isinstance(r, Finished)]
        try:
            if finished:
                await self.outcomes.finish(finished)
        finally:
            await self._release(finished)
        errors = [r for r in ran if isinstance(r, BaseException)]
        if errors:
            raise errors[0]
        busy = sum(1 for r in ran if r is _BUSY)
        if busy:
            raise LeaseHeld(f"{busy} action message(s) are being run by another runner; left pending")

    async def _guarded(self, entry: StreamEntry, memo: BatchMemo) -> Finished | _Busy | None:
        async with self._semaphore:
            return await self._process(entry, memo)

    async def _process(self, entry: StreamEntry, memo: BatchMemo) -> Finished | _Busy | None:
        try:
            message = ActionMessage.model_validate_json(entry.data)
        except ValidationError as exc:
            reason = f"not an action message: {str(exc).splitlines()[0]}"
            logger.error("%s: entry %s %s; dead-lettered", self.stream, entry.id, reason)
            await self.outcomes.dead_letter(entry, reason, attempts=0, key="")
            return None
        key = message.idempotency_key
        done = done_key(self.settings, key)
        if await self.redis.exists(done):
            logger.debug("action %s already done; skipped", key, extra=log_context(message))
            return None
        lease, token = lease_key(self.settings, key), uuid4().hex
        if not await self.redis.set(lease, token, nx=True, px=self._lease_ms):
            return None if await self.redis.exists(done) else _BUSY
        keeper = asyncio.create_task(self._keep_lease(lease, token), name=f"lease {key}")
        try:
            outcome = await self._run(message, memo)
        except BaseException:
            await self._release([Finished(entry, message, Outcome("failed", 0), lease, token, keeper)])
            raise
        return Finished(entry, message, outcome, lease, token, keeper)  # held until it is recorded

    async def _keep_lease(self, lease: str, token: str) -> None:
        """Renew the lease every third of its time while the message is worked on (note 2)."""
        while True:
            await asyncio.sleep(self._lease_ms / 3000)
            try:
                if not await self.redis.eval(_RENEW, 1, lease, token, self._lease_ms):
                    logger.warning("lost the lease %s (expired while Redis was unreachable?)", lease)
                    return
            except Exception:
                logger.warning("could not renew the lease %s; retrying", lease, exc_info=True)

    async def _release(self, finished: list[Finished]) -> None:
        if not finished:
            return
        keepers = [f.keeper for f in finished if f.keeper is not None]
        for keeper in keepers:
            keeper.cancel()
        await asyncio.gather(*keepers, return_exceptions=True)
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for item in finished:
                    pipe.eval(_RELEASE, 1, item.lease, item.token)
                await pipe.execute()
        except Exception:  # the leases expire by themselves
            logger.warning("could not release the leases of %d actions", len(finished), exc_info=True)

    # --- one action -------------------------------------------------------------------------------------
    async def _run(self, message: ActionMessage, memo: BatchMemo) -> Outcome:
        try:
            action = self._actions.validate_python(message.action)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"])
            reason = f"the action is not valid: {where}: {first['msg']}"
            return Outcome("failed", 0, reason=reason[:REASON_MAX_CHARS])
        if action.type == "do-nothing":
            return Outcome("succeeded", 1)
        limited = await self._rate_limited(message)
        if limited is not None:
            return Outcome("failed", 0, reason=limited)
        perform = PERFORMERS.get(action.type)
        if perform is None:
            return Outcome("failed", 0, reason=f"this runner cannot run {action.type!r} actions yet")
        ctx: ActionContext | None = None
        attempts = self.config.attempts
        for attempt in range(1, attempts + 1):
            try:
                async with asyncio.timeout(self.config.timeout_s):
                    if ctx is None:
                        ctx = await self._context(message, memo)
                    detail = await perform(action, ctx)
                return Outcome("succeeded", attempt, detail=detail)
            except ActionFailed as exc:
                return Outcome("failed", attempt, reason=self._scrub(ctx, exc.reason))
            except Exception as exc:
                reason = self._scrub(ctx, _describe(exc))
                if isinstance(exc, TimeoutError):
                    reason = f"no result within {self.config.timeout_s:g} s"
                log = "action %s (%s) attempt %d of %d failed: %s"
                logger.warning(log, message.idempotency_key, action.type, attempt, attempts, reason,
                               extra=log_context(message))  # fmt: skip
                if attempt == attempts:
                    last = f"{attempts} attempts failed; last: {reason}"
                    return Outcome("dead-lettered", attempt, reason=last)
                await asyncio.sleep(self._backoff_s(attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _context(self, message: ActionMessage, memo: BatchMemo) -> ActionContext:
        assert self.http is not None and self.blocks is not None, "the runner is not started"
        variables = await template_variables(
            message, db=self.db, automations=self.automations, wait_s=self.config.event_wait_s, memo=memo
        )
        return ActionContext(
            message=message,
            template=variables,
            engine=self.engine,
            blocks=self.blocks,
            automations=self.automations,
            emitter=self.emitter,
            http=self.http,
            clock=self.clock,
            memo=memo,
            db=self.db,
        )

    def _backoff_s(self, attempt: int) -> float:
        base = min(self.config.backoff_max_s, self.config.backoff_s * 2.0 ** (attempt - 1))
        return base * random.uniform(0.5, 1.5)

    @staticmethod
    def _scrub(ctx: ActionContext | None, text: str) -> str:
        return (ctx.scrub(text) if ctx is not None else text)[:REASON_MAX_CHARS]

    async def _rate_limited(self, message: ActionMessage) -> str | None:
        limit = self.config.max_runs_per_minute
        if limit <= 0:
            return None
        minute = int(self.clock().timestamp() // 60)
        key = self.settings.streams.key("action-rate", str(message.automation_id), str(minute))
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, 120)
            count, _ = await pipe.execute()
        if int(count) <= limit:
            return None
        return (
            f"rate limit: possible loop — automation {message.automation_name!r} ran more than {limit} "
            "actions this minute (TRIPWIRE_ACTIONS__MAX_RUNS_PER_MINUTE)"
        )

    # --- the outcome ------------------------------------------------------------------------------------
