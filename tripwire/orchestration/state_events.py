"""The events orchestration emits: one per state change of a run, and one per pause/resume.

Flow run (``tripwire.flow-run.<State>``) and task run (``tripwire.task-run.<State>``):

- resource: ``tripwire.resource.id`` = ``tripwire.flow-run.<uuid>`` (``tripwire.task-run.<uuid>``),
  ``tripwire.resource.name`` = the run's name, ``tripwire.state-name`` = the new state;
- related, each with ``tripwire.resource.role``: the flow (``tripwire.flow.<flow name>``, role ``flow``),
  the deployment (``tripwire.deployment.<uuid>``, role ``deployment``, with its name), the work pool
  (``tripwire.work-pool.<name>``, role ``work-pool``), one per tag (``tripwire.tag.<tag>``, role ``tag``),
  and for a task run its flow run (``tripwire.flow-run.<uuid>``, role ``flow-run``);
- payload: ``{"state", "previous", "message", "run_count"}`` plus what the caller adds (``retry``,
  ``parameters``, ``scheduled_time``...).

Deployment and schedule: ``tripwire.deployment.paused`` / ``resumed`` on ``tripwire.deployment.<uuid>``;
``tripwire.schedule.paused`` / ``resumed`` on ``tripwire.schedule.<uuid>`` with the deployment related.
Worker: ``tripwire.worker.heartbeat`` on ``tripwire.worker.<name>`` with its work pool related.

An event's id is derived from what it announces (``event_id``): emitting the same transition twice (a
retried write, a flush after a reconnect) gives the same id, which the engine deduplicates.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from events.model import RESOURCE_ID, RESOURCE_NAME, RESOURCE_ROLE

__all__ = [
    "deployment_event",
    "deployment_resource_id",
    "event_id",
    "flow_resource_id",
    "flow_run_resource_id",
    "related_resources",
    "run_event",
    "schedule_event",
    "task_run_resource_id",
    "work_pool_resource_id",
    "worker_event",
]

STATE_NAME = "tripwire.state-name"
_NAMESPACE = uuid5(NAMESPACE_URL, "https://tripwire.dev/orchestration")


def event_id(*parts: object) -> UUID:
    """A stable event id for what ``parts`` name (e.g. run id, state, version)."""
    return uuid5(_NAMESPACE, "\x1f".join(str(p) for p in parts))


def flow_run_resource_id(run_id: UUID) -> str:
    return f"tripwire.flow-run.{run_id}"


def task_run_resource_id(run_id: UUID) -> str:
    return f"tripwire.task-run.{run_id}"


def flow_resource_id(flow_name: str) -> str:
    return f"tripwire.flow.{flow_name}"


def deployment_resource_id(deployment_id: UUID) -> str:
    return f"tripwire.deployment.{deployment_id}"


def work_pool_resource_id(pool: str) -> str:
    return f"tripwire.work-pool.{pool}"


def _labels(resource_id: str, role: str, name: str) -> dict[str, str]:
    return {RESOURCE_ID: resource_id, RESOURCE_ROLE: role, RESOURCE_NAME: name}


def related_resources(
    *,
    flow_name: str | None = None,
    deployment_id: UUID | None = None,
    deployment_name: str | None = None,
    work_pool: str | None = None,
    tags: Iterable[str] = (),
    flow_run_id: UUID | None = None,
    flow_run_name: str | None = None,
) -> list[dict[str, str]]:
    """The related resources of a run's events (see the module docstring)."""
    related: list[dict[str, str]] = []
    if flow_run_id is not None:
        item = {RESOURCE_ID: flow_run_resource_id(flow_run_id), RESOURCE_ROLE: "flow-run"}
        if flow_run_name:
            item[RESOURCE_NAME] = flow_run_name
        related.append(item)
    if flow_name:
        related.append(_labels(flow_resource_id(flow_name), "flow", flow_name))
    if deployment_id is not None:
        item = {RESOURCE_ID: deployment_resource_id(deployment_id), RESOURCE_ROLE: "deployment"}
        if deployment_name:
            item[RESOURCE_NAME] = deployment_name
        related.append(item)
    if work_pool:
        related.append(_labels(work_pool_resource_id(work_pool), "work-pool", work_pool))
    for tag in dict.fromkeys(tags):
        related.append({RESOURCE_ID: f"tripwire.tag.{tag}", RESOURCE_ROLE: "tag"})
    return related


def run_event(
    kind: str,
    run_id: UUID,
    run_name: str,
    state: str,
    *,
    previous: str | None,
    occurred: datetime,
    related: list[dict[str, str]],
    id_parts: Iterable[object],
    message: str | None = None,
    run_count: int = 0,
    payload: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``tripwire.<kind>.<state>`` event document (``kind``: ``flow-run`` or ``task-run``)."""
    resource_id = f"tripwire.{kind}.{run_id}"
    return {
        "id": str(event_id(resource_id, *id_parts)),
        "event": f"tripwire.{kind}.{state}",
        "occurred": occurred.isoformat(),
        "resource": {RESOURCE_ID: resource_id, RESOURCE_NAME: run_name, STATE_NAME: state},
        "related": related,
        "payload": {
            "state": state,
            "previous": previous,
            "message": message,
            "run_count": run_count,
            **(payload or {}),
        },
    }


def deployment_event(
    deployment_id: UUID, name: str, what: str, *, occurred: datetime, version: int
) -> dict[str, Any]:
    """``tripwire.deployment.<what>`` (``paused`` / ``resumed``) for the deployment's ``version``."""
    resource_id = deployment_resource_id(deployment_id)
    return {
        "id": str(event_id(resource_id, what, version)),
        "event": f"tripwire.deployment.{what}",
        "occurred": occurred.isoformat(),
        "resource": {RESOURCE_ID: resource_id, RESOURCE_NAME: name},
        "payload": {"deployment": name},
    }


def schedule_event(
    schedule_id: UUID,
    what: str,
    *,
    deployment_id: UUID,
    deployment_name: str,
    occurred: datetime,
    version: int,
    payload: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``tripwire.schedule.<what>`` (``paused`` / ``resumed``) with the deployment related."""
    resource_id = f"tripwire.schedule.{schedule_id}"
    return {
        "id": str(event_id(resource_id, what, version)),
        "event": f"tripwire.schedule.{what}",
        "occurred": occurred.isoformat(),
        "resource": {RESOURCE_ID: resource_id},
        "related": related_resources(deployment_id=deployment_id, deployment_name=deployment_name),
        "payload": {"deployment": deployment_name, **(payload or {})},
    }


def worker_event(name: str, pool: str, what: str, *, occurred: datetime, payload: Mapping[str, Any]) -> dict:
    """``tripwire.worker.<what>`` (``heartbeat``, ``started``, ``stopped``) of worker ``name``."""
    return {
        "event": f"tripwire.worker.{what}",
        "occurred": occurred.isoformat(),
        "resource": {RESOURCE_ID: f"tripwire.worker.{name}", RESOURCE_NAME: name},
        "related": related_resources(work_pool=pool),
        "payload": dict(payload),
    }
