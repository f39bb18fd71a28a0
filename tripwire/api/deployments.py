"""``/api/deployments``: apply, list, inspect, delete, pause/resume (also per schedule), run.

| route | does |
|---|---|
| ``POST /deployments`` | create (201) or update by name (200), idempotent: status created/updated/unchanged |
| ``POST /deployments/validate`` | validate a document only, store nothing |
| ``GET /deployments``, ``GET /deployments/{ref}`` | list by name, one by id or name |
| ``DELETE /deployments/{ref}`` | delete it, its schedules and its runs that have not started (204) |
| ``POST /deployments/{ref}/pause``, ``/resume`` | pause / resume: ``{"changed", "deployment"}`` |
| ``POST /deployments/{ref}/schedules/{schedule}/pause``, ``/resume`` | one schedule, by index or id |
| ``POST /deployments/{ref}/runs`` | ``{"parameters", "scheduled_time"?, "tags"?, "idempotency_key"?}``: |
| | a run (201; 200 and that run when the idempotency key was used before) |

A refused document or run is a 422 whose ``loc`` names the field: ``schedules[0].timezone``,
``parameters.limit``. Paths take a deployment's id or name; a name may contain ``/`` (it is matched up
to a trailing ``/pause``, ``/resume``, ``/runs`` or ``/schedules/...``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from tripwire.api.errors import parse_json
from tripwire.api.events import read_body
from tripwire.orchestration.deployments import (
    ApplyResult,
    Deployment,
    DeploymentSpec,
    DeploymentStore,
    check_spec,
    parse_deployment,
)
from tripwire.orchestration.runs import FlowRun

__all__ = ["ChangedOut", "DeploymentList", "RunRequest", "ValidOut", "deployments_router"]

MAX_BODY_BYTES = 1024 * 1024


class DeploymentList(BaseModel):
    """Every deployment, by name."""

    deployments: list[Deployment]


class ChangedOut(BaseModel):
    """The answer to a pause or resume: whether it changed anything, and the deployment now."""

    changed: bool = Field(description="false: it already was in that state")
    deployment: Deployment


class ValidOut(BaseModel):
    """The answer to a validation that passed: the document as it would be applied."""

    valid: Literal[True] = True
    deployment: DeploymentSpec


class RunRequest(BaseModel):
    """What a run of a deployment may set; the rest comes from the deployment."""

    model_config = ConfigDict(extra="forbid")

    parameters: dict[str, Any] = Field(
        default_factory=dict, description="overrides of the deployment's default parameters"
    )
    scheduled_time: datetime | None = Field(None, description="when it is due (default now; naive is UTC)")
    tags: list[str] = Field(default_factory=list, description="tags added to the deployment's")
    idempotency_key: str | None = Field(
        None, min_length=1, max_length=500, description="a second request with this key creates nothing"
    )


_REFUSED: dict[int | str, dict[str, Any]] = {
    400: {"description": "malformed JSON"},
    413: {"description": "body over 1 MiB"},
    422: {"description": "invalid deployment; each `loc` names a field of the document"},
}
_MISSING: dict[int | str, dict[str, Any]] = {404: {"description": "no deployment with this id or name"}}
_DOCUMENT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/DeploymentSpec"}}},
    }
}


def _store(request: Request) -> DeploymentStore:
    state = request.app.state
    return DeploymentStore(state.db, state.emitter, default_work_pool=state.settings.orchestration.work_pool)


async def _document(request: Request) -> DeploymentSpec:
    return parse_deployment(parse_json(await read_body(request, MAX_BODY_BYTES)))


def deployments_router() -> APIRouter:
    """The ``/deployments`` routes (mounted under ``/api``, behind auth); state comes from ``app.state``."""
    router = APIRouter(prefix="/deployments", tags=["deployments"])

    @router.post(
        "",
        response_model=ApplyResult,
        summary="Create or update a deployment by name (idempotent); 201 when created",
        responses={201: {"description": "created", "model": ApplyResult}, **_REFUSED},
        openapi_extra=_DOCUMENT_BODY,
    )
    async def apply(request: Request, response: Response) -> ApplyResult:
        spec = await _document(request)
        result = await _store(request).apply(spec)
        response.status_code = 201 if result.status == "created" else 200
        return result

    @router.post(
        "/validate",
        response_model=ValidOut,
        summary="Validate a deployment document without storing it",
        responses=_REFUSED,
        openapi_extra=_DOCUMENT_BODY,
    )
    async def validate(request: Request) -> ValidOut:
        spec = await _document(request)
        check_spec(spec)
        return ValidOut(deployment=spec)

    @router.get("", response_model=DeploymentList, summary="Every deployment, by name")
    async def list_deployments(request: Request) -> DeploymentList:
        return DeploymentList(deployments=await _store(request).list())

    # The suffixed routes come first: `{ref:path}` would otherwise swallow '/pause' into the name.
    @router.post(
        "/{ref:path}/schedules/{schedule}/pause",
        response_model=ChangedOut,
        summary="Pause one schedule (by index or id): it creates no runs; its unstarted runs are deleted",
        responses=_MISSING,
    )
    async def pause_schedule(request: Request, ref: str, schedule: str) -> ChangedOut:
        store = _store(request)
        changed = await store.set_schedule_active(ref, schedule, False)
        return ChangedOut(changed=changed, deployment=await store.resolve(ref))

    @router.post(
        "/{ref:path}/schedules/{schedule}/resume",
        response_model=ChangedOut,
        summary="Resume one schedule (by index or id)",
        responses=_MISSING,
    )
    async def resume_schedule(request: Request, ref: str, schedule: str) -> ChangedOut:
        store = _store(request)
        changed = await store.set_schedule_active(ref, schedule, True)
        return ChangedOut(changed=changed, deployment=await store.resolve(ref))

    @router.post(
        "/{ref:path}/pause",
        response_model=ChangedOut,
        summary="Pause a deployment: its schedules create no runs; its unstarted scheduled runs are deleted",
        responses=_MISSING,
    )
    async def pause(request: Request, ref: str) -> ChangedOut:
        store = _store(request)
        changed = await store.set_paused(ref, True)
        return ChangedOut(changed=changed, deployment=await store.resolve(ref))

    @router.post(
        "/{ref:path}/resume",
        response_model=ChangedOut,
        summary="Resume a paused deployment",
        responses=_MISSING,
    )
    async def resume(request: Request, ref: str) -> ChangedOut:
        store = _store(request)
        changed = await store.set_paused(ref, False)
        return ChangedOut(changed=changed, deployment=await store.resolve(ref))

    @router.post(
        "/{ref:path}/runs",
        response_model=FlowRun,
        status_code=201,
        summary="Create a run of a deployment (422 naming `parameters.<name>` when a parameter is wrong)",
        responses={**_MISSING, 200: {"description": "the idempotency key was used: that run"}},
    )
    async def run(request: Request, response: Response, ref: str, body: RunRequest) -> FlowRun:
        scheduled = body.scheduled_time
        if scheduled is not None and scheduled.tzinfo is None:
            scheduled = scheduled.replace(tzinfo=UTC)
        flow_run, created = await _store(request).create_run(
            ref,
            body.parameters,
            idempotency_key=body.idempotency_key,
            scheduled_time=scheduled,
            tags=body.tags,
        )
        if not created:
            response.status_code = 200
        return flow_run

    @router.get(
        "/{ref:path}", response_model=Deployment, summary="One deployment by id or name", responses=_MISSING
    )
    async def one(request: Request, ref: str) -> Deployment:
        return await _store(request).resolve(ref)

    @router.delete(
        "/{ref:path}",
        status_code=204,
        response_class=Response,
        summary="Delete a deployment, its schedules and its runs that have not started",
        responses=_MISSING,
    )
    async def remove(request: Request, ref: str) -> Response:
        await _store(request).delete(ref)
        return Response(status_code=204)

    return router
