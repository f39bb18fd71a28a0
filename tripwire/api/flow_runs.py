"""/api/flow-runs (placeholder, being built)."""

from __future__ import annotations

from fastapi import APIRouter

__all__ = ["flow_runs_router"]


def flow_runs_router() -> APIRouter:
    return APIRouter(prefix="/flow-runs", tags=["flow runs"])
