"""How a deployment is laid out in SQL (``deployments`` note 1), and read back as a ``Deployment``.

1. ``deployments.document`` holds what has no column: description, parameters, their JSON schema, tags,
   ``timeout_seconds`` (the worker reads it from there). JSONB does not keep key order, so the order of
   the parameters and of the schema's properties (the flow's signature, shown to people) is stored
   beside them (``key_order``) and restored on reading.
2. Schedules are rows of ``schedules`` (``spec`` = the definition without ``active``, which is a column),
   read in ``position`` order. A stored schedule that no longer validates (a time zone the machine's
   tzdata dropped) is logged and left out, so it cannot stop the others.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from tripwire.orchestration.deployment_models import (
    Deployment,
    DeploymentSpec,
    StoredSchedule,
    load_schedule,
)
from tripwire.orchestration.schedules import schedule_summary
from tripwire.tables import deployments, schedules

__all__ = ["deployment_row", "document_of", "with_schedules"]

log = logging.getLogger(__name__)


def document_of(spec: DeploymentSpec) -> dict[str, Any]:
    """The ``document`` column of ``spec`` (note 1)."""
    document = spec.model_dump(
        mode="json", include={"description", "parameters", "parameter_schema", "tags", "timeout_seconds"}
    )
    properties = spec.parameter_schema.get("properties")
    document["key_order"] = {
        "parameters": list(spec.parameters),
        "properties": list(properties) if isinstance(properties, dict) else [],
    }
    return document


def _from_document(document: dict[str, Any]) -> dict[str, Any]:
    """The deployment fields of a ``document`` column, in their stored order."""
    fields = dict(document)
    order = fields.pop("key_order", None) or {}
    fields["parameters"] = _ordered(fields.get("parameters") or {}, order.get("parameters", []))
    schema = dict(fields.get("parameter_schema") or {})
    if isinstance(schema.get("properties"), dict):
        schema["properties"] = _ordered(schema["properties"], order.get("properties", []))
    fields["parameter_schema"] = schema
    return fields


def _ordered(mapping: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    rank = {key: i for i, key in enumerate(keys)}
    return dict(sorted(mapping.items(), key=lambda item: rank.get(item[0], len(rank))))


async def deployment_row(conn: AsyncConnection, deployment_id: UUID) -> Any:
    """The ``deployments`` row of this id (it must exist)."""
    return (await conn.execute(select(deployments).where(deployments.c.id == deployment_id))).one()


async def with_schedules(
    conn: AsyncConnection, rows: Sequence[Any], *, only_active: bool = False
) -> list[Deployment]:
    """Deployment models of ``rows`` with their schedules (only the active ones if asked)."""
    if not rows:
        return []
    query = select(schedules).where(schedules.c.deployment_id.in_([r.id for r in rows]))
    if only_active:
        query = query.where(schedules.c.active.is_(True))
    by_deployment: dict[UUID, list[StoredSchedule]] = {}
    for s in (await conn.execute(query.order_by(schedules.c.position))).all():
        try:
            schedule = load_schedule(s.spec, s.active)
        except ValidationError as exc:  # e.g. a time zone this machine's tzdata no longer has
            log.error("schedule %s is stored but no longer valid, skipped: %s", s.id, exc.errors()[0]["msg"])
            continue
        stored = StoredSchedule(
            id=s.id, position=s.position, schedule=schedule, summary=schedule_summary(schedule),
            version=s.version, created=s.created, updated=s.updated,
        )  # fmt: skip
        by_deployment.setdefault(s.deployment_id, []).append(stored)
    return [
        Deployment.model_validate(
            {**r._mapping, **_from_document(r.document), "schedules": by_deployment.get(r.id, [])}
        )
        for r in rows
    ]
