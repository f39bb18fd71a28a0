"""/api/deployments (placeholder, being built)."""

from __future__ import annotations

from fastapi import APIRouter

__all__ = ["deployments_router"]


def deployments_router() -> APIRouter:
    return APIRouter(prefix="/deployments", tags=["deployments"])
