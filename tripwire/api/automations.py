"""``/api/automations``: create, validate, apply by name, list, inspect, pause/resume, delete, firings.

Bodies are automation documents (the ``Automation`` schema). A document that fails validation is a 422
``{"detail": [{"loc": "trigger.threshold", "msg": ...}]}``: ``loc`` is the path of the field in the
document (pydantic's union tags left out), as ``triggers.files.automation_errors`` writes it.

| route | does |
|---|---|
| ``POST /automations`` | create (201); a taken name is a 422 on ``name`` |
| ``POST /automations/validate`` | validate only, store nothing |
| ``PUT /automations/apply`` | create or update by name, idempotent: status created / updated / unchanged |
| ``PUT /automations/apply-all`` | ``{"automations": [...]}`` in one transaction: all or none |
| ``GET /automations``, ``GET /automations/{ref}`` | list by name, one by id or name |
| ``POST /automations/{ref}/pause``, ``/resume`` | disable / enable (the CLI's ``pause`` / ``resume``) |
| ``DELETE /automations/{ref}`` | delete it and its firings (204) |
| ``GET /automations/{ref}/firings`` | firings and resolutions, newest first, ``limit`` + ``cursor`` |

Paths take an automation's id or its name; a name may contain ``/`` (it is matched to the end of the
path, before a trailing ``/pause``, ``/resume`` or ``/firings``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field

from actions.results import ActionResult, ActionResultStore
from events.model import now_utc
from triggers.files import parse_automation
from triggers.firings import MAX_PAGE, FiringPage, FiringStore
from triggers.models import Automation
from triggers.replay import ReplayReport, replay
from triggers.store import ApplyStatus, AutomationStore, StoredAutomation
from tripwire.api.errors import parse_json
from tripwire.api.events import read_body
from tripwire.errors import ValidationFailed

__all__ = ["AppliedAllOut", "AppliedOut", "AutomationList", "AutomationOut", "ValidOut", "automations_router"]

MAX_BODY_BYTES = 1024 * 1024
MAX_BATCH_BYTES = 16 * MAX_BODY_BYTES


class AutomationOut(BaseModel):
    """A stored automation: its document and the store's bookkeeping."""

    id: UUID
    name: str
    enabled: bool
    version: int = Field(description="1 when created, +1 on every change")
    created: datetime
    updated: datetime
    automation: Automation = Field(description="the document; apply it again to restore this automation")

    @classmethod
    def of(cls, stored: StoredAutomation) -> AutomationOut:
        return cls(
            id=stored.id,
            name=stored.name,
            enabled=stored.enabled,
            version=stored.version,
            created=stored.created,
            updated=stored.updated,
            automation=stored.automation,
        )


class AutomationList(BaseModel):
    """Every automation, by name."""

    automations: list[AutomationOut]


class AppliedOut(BaseModel):
    """The answer to an apply: what happened, and the automation as stored now."""

    status: ApplyStatus = Field(description="'created', 'updated' or 'unchanged'")
    automation: AutomationOut


class AppliedAllOut(BaseModel):
    """The answer to applying several automations at once, in the order sent."""

    results: list[AppliedOut]


class ValidOut(BaseModel):
    """The answer to a validation that passed: the document as it would be stored."""

    valid: Literal[True] = True
    automation: Automation


_DOCUMENT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Automation"}}},
    }
}
_REFUSED: dict[int | str, dict[str, Any]] = {
    400: {"description": "malformed JSON"},
    413: {"description": "body over 1 MiB"},
    422: {"description": "invalid automation; each `loc` names a field of the document"},
}
_MISSING: dict[int | str, dict[str, Any]] = {404: {"description": "no automation with this id or name"}}


def _store(request: Request) -> AutomationStore:
    state = request.app.state
    return AutomationStore(state.db, state.redis, state.settings.streams)


async def _document(request: Request) -> Automation:
    return parse_automation(parse_json(await read_body(request, MAX_BODY_BYTES)))


async def _documents(request: Request) -> list[Automation]:
    """``{"automations": [...]}``, every one validated; errors name ``automations[<index>].<field>``."""
    body = parse_json(await read_body(request, MAX_BATCH_BYTES))
    items = body.get("automations") if isinstance(body, dict) else None
    if not isinstance(items, list) or not items or set(body) != {"automations"}:
        raise ValidationFailed(
            [("automations", 'send {"automations": [<automation>, ...]} with at least one')]
        )
    out: list[Automation] = []
    errors: list[tuple[str, str]] = []
    for i, item in enumerate(items):
        try:
            out.append(parse_automation(item))
        except ValidationFailed as exc:
            errors.extend(
                (f"automations[{i}].{loc}" if loc else f"automations[{i}]", m) for loc, m in exc.errors
            )
    if errors:
        raise ValidationFailed(errors)
    return out


def with_outcomes(page: FiringPage, results: dict[UUID, list[ActionResult]]) -> FiringPage:
    """Each firing's actions with what the action runner reported for them (queued until it does)."""
    for firing in page.firings:
        done = {r.index: r for r in results.get(firing.id, []) if r.kind == firing.kind}
        for action in firing.actions:
            result = done.get(action.index)
            if result is not None:
                action.status = result.status
                action.reason, action.attempts, action.finished = (
                    result.reason,
                    result.attempts,
                    result.finished,
                )
    return page


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def automations_router() -> APIRouter:
    """The ``/automations`` routes (mounted under ``/api``, behind auth); state comes from ``app.state``."""
    router = APIRouter(prefix="/automations", tags=["automations"])

    @router.post(
        "",
        status_code=201,
        response_model=AutomationOut,
        summary="Create an automation (its name must be new)",
        responses=_REFUSED,
        openapi_extra=_DOCUMENT_BODY,
    )
    async def create(request: Request) -> AutomationOut:
        automation = await _document(request)
        return AutomationOut.of(await _store(request).create(automation))

    @router.post(
        "/validate",
        response_model=ValidOut,
        summary="Validate an automation without storing it",
        responses=_REFUSED,
        openapi_extra=_DOCUMENT_BODY,
    )
    async def validate(request: Request) -> ValidOut:
        return ValidOut(automation=await _document(request))

    @router.put(
        "/apply",
        response_model=AppliedOut,
        summary="Create or update an automation by name (idempotent)",
        responses=_REFUSED,
        openapi_extra=_DOCUMENT_BODY,
    )
    async def apply(request: Request) -> AppliedOut:
        automation = await _document(request)
        result = await _store(request).apply(automation)
        return AppliedOut(status=result.status, automation=AutomationOut.of(result.stored))

    @router.put(
        "/apply-all",
        response_model=AppliedAllOut,
        summary="Apply several automations by name in one transaction: all of them or none",
        responses=_REFUSED,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["automations"],
                            "properties": {
                                "automations": {
                                    "type": "array",
                                    "items": {"$ref": "#/components/schemas/Automation"},
                                }
                            },
                        }
                    }
                },
            }
        },
    )
    async def apply_all(request: Request) -> AppliedAllOut:
        results = await _store(request).apply_many(await _documents(request))
        return AppliedAllOut(
            results=[AppliedOut(status=r.status, automation=AutomationOut.of(r.stored)) for r in results]
        )

    @router.get("", response_model=AutomationList, summary="Every automation, by name")
    async def list_automations(request: Request) -> AutomationList:
        return AutomationList(automations=[AutomationOut.of(s) for s in await _store(request).list()])

    # The suffixed routes come first: `{ref:path}` would otherwise swallow '/firings' into the name.
    @router.post(
        "/{ref:path}/replay",
        response_model=ReplayReport,
        summary="What a stored automation would have done over stored history (sandboxed, changes nothing)",
        responses=_MISSING,
    )
    async def replay_stored(
        request: Request,
        ref: str,
        since: Annotated[datetime, Query(description="replay events received from this time")],
        until: Annotated[datetime | None, Query(description="up to this time (default: now)")] = None,
    ) -> ReplayReport:
        stored = await _store(request).resolve(ref)
        return await replay(
            request.app.state.db, stored.automation, _aware(since), _aware(until or now_utc())
        )

    @router.get(
        "/{ref:path}/firings",
        response_model=FiringPage,
        summary="An automation's firings and resolutions, newest first",
        responses=_MISSING,
    )
    async def list_firings(
        request: Request,
        ref: str,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="firings per page")] = 50,
        cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    ) -> FiringPage:
        stored = await _store(request).resolve(ref)
        page = await FiringStore(request.app.state.db).list(stored.id, limit=limit, cursor=cursor)
        results = await ActionResultStore(request.app.state.db).for_firings([f.id for f in page.firings])
        return with_outcomes(page, results)

    @router.post(
        "/{ref:path}/pause",
        response_model=AutomationOut,
        summary="Pause an automation (it is no longer evaluated)",
        responses=_MISSING,
    )
    async def pause(request: Request, ref: str) -> AutomationOut:
        return AutomationOut.of(await _store(request).set_enabled(ref, False))

    @router.post(
        "/{ref:path}/resume",
        response_model=AutomationOut,
        summary="Resume a paused automation",
        responses=_MISSING,
    )
    async def resume(request: Request, ref: str) -> AutomationOut:
        return AutomationOut.of(await _store(request).set_enabled(ref, True))

    @router.get(
        "/{ref:path}",
        response_model=AutomationOut,
        summary="One automation by id or name",
        responses=_MISSING,
    )
    async def one(request: Request, ref: str) -> AutomationOut:
        return AutomationOut.of(await _store(request).resolve(ref))

    @router.delete(
        "/{ref:path}",
        status_code=204,
        response_class=Response,
        summary="Delete an automation and its firings",
        responses=_MISSING,
    )
    async def remove(request: Request, ref: str) -> Response:
        await _store(request).delete(ref)
        return Response(status_code=204)

    return router
