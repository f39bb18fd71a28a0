"""Helpers of the worker, execute and reaper tests: deployments, flow files, conditions, stream reads."""

from __future__ import annotations

import asyncio
import os
import textwrap
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import redis.asyncio as aioredis

from events.codec import decode_event
from events.model import Event
from tripwire.db import Database
from tripwire.orchestration.runs import FlowRun, FlowRunStore, NewFlowRun
from tripwire.settings import OrchestrationSettings, Settings
from tripwire.tables import deployments

__all__ = [
    "FAST",
    "await_async",
    "create_run",
    "fast_settings",
    "flow_file",
    "insert_deployment",
    "pid_alive",
    "run_in",
    "stream_events",
]

FAST = OrchestrationSettings(
    worker_poll_s=0.1, heartbeat_s=0.2, worker_dead_after_s=30, cancel_grace_s=1.0, worker_concurrency=2
)


def fast_settings(settings: Settings, **orchestration: Any) -> Settings:
    """``settings`` with short worker intervals (and any orchestration field given)."""
    return settings.model_copy(update={"orchestration": FAST.model_copy(update=orchestration)})


async def await_async(
    check: Callable[[], Awaitable[bool]] | Callable[[], bool],
    what: str,
    timeout_s: float = 30.0,
    log: Path | None = None,
) -> None:
    """Poll ``check`` (sync or async) until it holds, without blocking the loop; fail naming ``what``
    (and showing ``log``, a process's output)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout_s}s{_shown(log)}")
        await asyncio.sleep(0.05)


def _shown(log: Path | None) -> str:
    return f":\n{log.read_text(errors='replace')}" if log is not None and log.exists() else ""


def flow_file(directory: Path, name: str, body: str) -> str:
    """Write a flow module into ``directory``; returns the entrypoint ``<path>:<function>``.

    ``body`` defines the function ``name`` (decorated with ``@flow``, imported already).
    """
    path = directory / f"{name}_{uuid.uuid4().hex[:6]}.py"
    path.write_text("from tripwire import flow, task\n\n" + textwrap.dedent(body))
    return f"{path}:{name}"


async def insert_deployment(
    db: Database, entrypoint: str, *, pool: str = "pool-a", timeout_seconds: float | None = None
) -> UUID:
    """A deployment row pointing at ``entrypoint`` (directly in the table: deployments are part B's)."""
    deployment_id = uuid.uuid4()
    now = datetime.now(UTC)
    document: dict[str, Any] = {}
    if timeout_seconds is not None:
        document["timeout_seconds"] = timeout_seconds
    async with db.begin() as conn:
        await conn.execute(
            deployments.insert().values(
                id=deployment_id, name=f"dep-{deployment_id.hex[:8]}", flow_name=entrypoint.rsplit(":", 1)[1],
                entrypoint=entrypoint, paused=False, work_pool=pool, document=document,
                created=now, updated=now, version=1,
            )
        )  # fmt: skip
    return deployment_id


async def create_run(
    store: FlowRunStore, deployment_id: UUID | None, parameters: dict[str, Any], *, pool: str = "pool-a"
) -> FlowRun:
    run, _ = await store.create(
        NewFlowRun(flow_name="f", parameters=parameters, deployment_id=deployment_id, work_pool=pool)
    )
    return run


def run_in(store: FlowRunStore, run_id: UUID, *states: str) -> Callable[[], Awaitable[bool]]:
    """A condition: the run is in one of ``states``."""

    async def check() -> bool:
        return (await store.get(run_id)).state in states

    return check


async def stream_events(redis_client: aioredis.Redis, settings: Settings, prefix: str = "") -> list[Event]:
    """The events on the test's stream (those whose name starts with ``prefix``), in stream order."""
    entries = await redis_client.xrange(settings.streams.events)
    events = [decode_event(fields[b"data"]) for _, fields in entries]
    return [e for e in events if e.event.startswith(prefix)]


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
