"""``GET /api/evaluators``: which automations version each running evaluator has loaded."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from triggers.progress import LIVE_S, evaluators_status
from triggers.store import AutomationStore

__all__ = ["EvaluatorsOut", "evaluators_router"]


class EvaluatorsOut(BaseModel):
    """Whether the latest automation changes are live."""

    automations_version: int = Field(description="the automations change counter")
    evaluators: dict[str, int] = Field(
        description=f"each evaluator that reported in the last {LIVE_S:g} s -> the version it has loaded"
    )
    current: bool = Field(description="at least one evaluator runs and every one has the latest version")


def evaluators_router() -> APIRouter:
    """The router serving ``GET /api/evaluators``."""
    router = APIRouter(prefix="/evaluators", tags=["automations"])

    @router.get("", response_model=EvaluatorsOut, summary="Are the latest automation changes live?")
    async def evaluators(request: Request) -> EvaluatorsOut:
        state = request.app.state
        version = await AutomationStore(state.db, state.redis, state.settings.streams).changes_version()
        status = await evaluators_status(state.redis, state.settings.streams, version)
        live = status.evaluators
        return EvaluatorsOut(automations_version=version, evaluators=live, current=status.current)

    return router
