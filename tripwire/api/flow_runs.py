"""``/api/flow-runs``: list, inspect, cancel, and change the state of flow runs.

| route | does |
|---|---|
| ``GET /flow-runs`` | newest first; filters ``deployment`` (id or name), ``state`` (repeatable, |
| | comma-separated), ``work_pool``, ``limit`` |
| ``GET /flow-runs/{id}`` | one run |
| ``POST /flow-runs/{id}/cancel`` | not started (Scheduled, Late, Paused): Cancelled at once; Pending or |
| | Running: Cancelling, and its worker stops the process; already final: 409 |
| ``POST /flow-runs/{id}/state`` | ``{"state", "message"?, "force"?}``: a state change, 409 when not allowed |

Every change is announced as ``tripwire.flow-run.<State>`` (``FlowRunStore``).
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from tripwire.errors import ValidationFailed
from tripwire.orchestration.deployments import DeploymentStore
from tripwire.orchestration.runs import FlowRun, FlowRunStore
from tripwire.orchestration.states import State

__all__ = ["FlowRunList", "StateRequest", "flow_runs_router", "parse_states"]

MAX_LIMIT = 1000


class FlowRunList(BaseModel):
    """Flow runs, newest scheduled time first."""

    flow_runs: list[FlowRun]


class StateRequest(BaseModel):
    """A state change asked for by a person or a program."""

    model_config = ConfigDict(extra="forbid")

    state: State = Field(description="the target state, e.g. 'Cancelled' or 'Scheduled'")
    message: str | None = Field(None, max_length=2000, description="why (shown with the state)")
    force: bool = Field(False, description="skip the check of allowed moves (e.g. out of a final state)")


def parse_states(values: list[str] | None) -> list[State] | None:
    """``state`` query values (repeatable, comma-separated, any case) as States; 422 naming ``state``."""
    if not values:
        return None
    by_name = {s.value.lower(): s for s in State}
    names = [part.strip() for value in values for part in value.split(",") if part.strip()]
    unknown = [n for n in names if n.lower() not in by_name]
    if unknown:
        choices = ", ".join(s.value for s in State)
        raise ValidationFailed(
            [("state", f"unknown state {', '.join(map(repr, unknown))}; choose from {choices}")]
        )
    return [by_name[n.lower()] for n in names]


_MISSING: dict[int | str, dict[str, Any]] = {404: {"description": "no flow run with this id"}}
_REFUSED: dict[int | str, dict[str, Any]] = {
    **_MISSING,
    409: {"description": "the run's state does not allow it (e.g. it is already final)"},
}


def _runs(request: Request) -> FlowRunStore:
    return FlowRunStore(request.app.state.db, request.app.state.emitter)


def flow_runs_router() -> APIRouter:
    """The ``/flow-runs`` routes (mounted under ``/api``, behind auth); state comes from ``app.state``."""
    router = APIRouter(prefix="/flow-runs", tags=["flow runs"])

    @router.get("", response_model=FlowRunList, summary="Flow runs, newest scheduled time first")
    async def list_runs(
        request: Request,
        deployment: Annotated[str | None, Query(description="a deployment's id or name")] = None,
        state: Annotated[list[str] | None, Query(description="only runs in these states")] = None,
        work_pool: Annotated[str | None, Query(description="only runs of this work pool")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="at most this many")] = 100,
    ) -> FlowRunList:
        states = parse_states(state)
        deployment_id: UUID | None = None
        if deployment is not None:
            state_ = request.app.state
            deployment_id = (await DeploymentStore(state_.db, None).resolve(deployment)).id
        runs = await _runs(request).list(
            deployment_id=deployment_id, states=states, work_pool=work_pool, limit=limit
        )
        return FlowRunList(flow_runs=runs)

    @router.get("/{run_id}", response_model=FlowRun, summary="One flow run", responses=_MISSING)
    async def one(request: Request, run_id: UUID) -> FlowRun:
        return await _runs(request).get(run_id)

    @router.post(
        "/{run_id}/cancel",
        response_model=FlowRun,
        summary="Cancel a flow run (a running one goes to Cancelling and its worker stops it)",
        responses=_REFUSED,
    )
    async def cancel(request: Request, run_id: UUID) -> FlowRun:
        return await _runs(request).cancel(run_id, message="cancelled through the API")

    @router.post(
        "/{run_id}/state",
        response_model=FlowRun,
        summary="Change a flow run's state (409 when the move is not allowed and not forced)",
        responses=_REFUSED,
    )
    async def set_state(request: Request, run_id: UUID, body: StateRequest) -> FlowRun:
        return await _runs(request).transition(run_id, body.state, message=body.message, force=body.force)

    return router
