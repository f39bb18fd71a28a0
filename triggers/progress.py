"""Where the evaluators are: how far the stream is processed, and which automations each one uses.

Notes (referred to by ``triggers.service``):
1. ``caught_up_us``: a proactive deadline ``D`` may fire only once every entry the stream held before ``D``
   was processed. The limit is just before the intake time of the oldest entry still undelivered or
   pending in the group; intake time is the event's ``received`` stamp (so an injected clock works),
   else the entry id's time.
2. Each evaluator reports ``<version>|<ms>`` in the hash ``<prefix>:evaluators`` at every automations
   poll: the change counter it has loaded, and that it is alive. ``evaluators_status`` reads it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis.asyncio as aioredis
from pydantic import ValidationError

from events.codec import decode_event
from triggers.outcomes import to_us
from tripwire.settings import StreamSettings

__all__ = ["LIVE_S", "EvaluatorsStatus", "caught_up_us", "evaluators_status", "report_key"]

LIVE_S = 5.0
"""An evaluator that reported within this many seconds counts as running (note 4)."""


def report_key(streams: StreamSettings) -> str:
    """The hash where evaluators report the automations version they use (note 2)."""
    return streams.key("evaluators")


@dataclass(frozen=True, slots=True)
class EvaluatorsStatus:
    """Which automations version each running evaluator has loaded."""

    version: int
    evaluators: dict[str, int]

    @property
    def current(self) -> bool:
        """Every running evaluator uses the latest automations (False when none runs)."""
        return bool(self.evaluators) and all(v >= self.version for v in self.evaluators.values())


async def evaluators_status(
    client: aioredis.Redis, streams: StreamSettings, version: int
) -> EvaluatorsStatus:
    """The running evaluators (reported within ``LIVE_S``) and the automations version each has loaded."""
    now_ms = int(time.time() * 1000)
    live: dict[str, int] = {}
    for name, value in (await client.hgetall(report_key(streams))).items():
        loaded, _, at_ms = value.decode().partition("|")
        if now_ms - int(at_ms) <= LIVE_S * 1000:
            live[name.decode()] = int(loaded)
    return EvaluatorsStatus(version=version, evaluators=live)


def _stream_ms(entry_id: str) -> int:
    return int(entry_id.split("-", 1)[0])


async def _intake_us(client: aioredis.Redis, stream: str, entry_id: str) -> int:
    """When an entry was taken in: its event's ``received`` time, else the entry id's time."""
    rows = await client.xrange(stream, min=entry_id, max=entry_id, count=1)
    if rows:
        data = rows[0][1].get(b"data")
        if data:
            try:
                received = decode_event(data).received
            except (ValidationError, ValueError):
                received = None
            if received is not None:
                return to_us(received)
    return _stream_ms(entry_id) * 1000


async def caught_up_us(client: aioredis.Redis, stream: str, group: str, now_us: int) -> int:
    """The time up to which every entry of ``stream`` has been processed by ``group`` (note 2).

    That is just before the intake time of the oldest entry still undelivered or pending; ``now_us``
    when there is none. Intake time is the event's ``received`` stamp, so an injected clock works.
    """
    try:
        groups = await client.xinfo_groups(stream)
    except aioredis.ResponseError:
        return now_us  # no stream yet: nothing waits
    info = next((g for g in groups if _text(g["name"]) == group), None)
    if info is None:
        return now_us
    limits = [now_us]
    following = await client.xrange(stream, min=f"({_text(info['last-delivered-id'])}", max="+", count=1)
    if following:
        limits.append(await _intake_us(client, stream, _text(following[0][0])) - 1)
    if info.get("pending"):
        summary = await client.xpending(stream, group)
        if summary and summary.get("min"):
            limits.append(await _intake_us(client, stream, _text(summary["min"])) - 1)
    return min(limits)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
