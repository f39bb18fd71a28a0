"""How the flow engine reports state changes: the ``RunReporter`` protocol and what it is told.

The engine (``tripwire.orchestration.engine``) knows nothing of SQL or Redis; it calls a reporter on
every state change of the flow run and of each task run:

- a flow called directly (no server) reports through an event-only reporter: the events go to a
  background sink that emits when Redis is reachable and buffers otherwise, never blocking the flow;
- a flow run executed by a worker (``tripwire.orchestration.execute``) reports through a reporter that
  writes the flow run's state in SQL first (``FlowRunStore.transition``), then emits, so the worker, the
  API and the automations all see the same state.

``flow_run`` may raise ``RunAborted`` (e.g. the run was cancelled while the engine was about to start
it): the engine then stops running the flow and reports nothing more for it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from uuid import UUID

from tripwire.orchestration.state_events import related_resources
from tripwire.orchestration.states import State

__all__ = ["FlowRunInfo", "RunAborted", "RunReporter", "TaskRunInfo"]


class RunAborted(Exception):
    """The reporter refused a state change: stop running this flow (e.g. it was cancelled)."""


@dataclass
class FlowRunInfo:
    """What the engine and the reporters know of a flow run."""

    id: UUID
    name: str
    flow_name: str
    deployment_id: UUID | None = None
    deployment_name: str | None = None
    work_pool: str | None = None
    tags: Sequence[str] = ()
    run_count: int = 0

    def related(self) -> list[dict[str, str]]:
        return related_resources(
            flow_name=self.flow_name,
            deployment_id=self.deployment_id,
            deployment_name=self.deployment_name,
            work_pool=self.work_pool,
            tags=self.tags,
        )


@dataclass
class TaskRunInfo:
    """What the engine and the reporters know of a task run."""

    id: UUID
    name: str
    task_name: str
    flow_run: FlowRunInfo | None = None
    tags: Sequence[str] = ()
    run_count: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def related(self) -> list[dict[str, str]]:
        flow_run = self.flow_run
        if flow_run is None:
            return related_resources(tags=self.tags)
        return related_resources(
            flow_run_id=flow_run.id,
            flow_run_name=flow_run.name,
            flow_name=flow_run.flow_name,
            deployment_id=flow_run.deployment_id,
            deployment_name=flow_run.deployment_name,
            work_pool=flow_run.work_pool,
            tags=[*flow_run.tags, *self.tags],
        )


class RunReporter(Protocol):
    """Told of every state change; called from the flow's thread (sync), so it must not block long."""

    def flow_run(
        self,
        run: FlowRunInfo,
        state: State,
        previous: State | None,
        message: str | None = None,
        payload: Mapping[str, Any] | None = None,
    ) -> None:
        """A flow run changed state; may raise ``RunAborted``."""

    def task_run(
        self,
        run: TaskRunInfo,
        state: State,
        previous: State | None,
        message: str | None = None,
        payload: Mapping[str, Any] | None = None,
    ) -> None:
        """A task run changed state."""

    def close(self, timeout_s: float) -> None:
        """Deliver what is pending within ``timeout_s`` (the rest is kept for later, not dropped)."""
