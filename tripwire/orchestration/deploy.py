"""``flow.deploy(name, cron=..., parameters=...)``: create or update a deployment of a flow over the API."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from tripwire.orchestration.deployment_models import (
    Deployment,
    apply_document,
    check_spec,
    parse_deployment,
)

__all__ = ["deploy_flow"]


def deploy_flow(
    flow: Any,
    name: str,
    *,
    cron: str | None = None,
    interval: float | Any | None = None,
    rrule: str | None = None,
    schedules: Sequence[Any] | None = None,
    parameters: Mapping[str, Any] | None = None,
    tags: Sequence[str] | None = None,
    work_pool: str | None = None,
    timezone: str | None = None,
    paused: bool | None = None,
    description: str | None = None,
    timeout_seconds: float | None = None,
    settings: Any = None,
) -> Deployment:
    """Create or update the deployment ``name`` of ``flow`` through the API; returns it as stored.

    ``cron`` / ``interval`` (seconds or a timedelta) / ``rrule`` add one schedule each (in ``timezone``),
    after ``schedules`` (documents or schedule models). ``paused=None`` keeps a stored deployment's state
    (a new one starts active). Raises ValidationFailed naming the field (checked here, before sending),
    or ApiError when the server cannot be reached or refuses.
    """
    from tripwire.cli.client import ApiClient
    from tripwire.settings import Settings

    settings = settings or Settings()
    items: list[Any] = [
        s.model_dump(mode="json", exclude_unset=True) if isinstance(s, BaseModel) else s
        for s in schedules or ()
    ]
    zone = {"timezone": timezone} if timezone else {}
    if cron is not None:
        items.append({"cron": cron, **zone})
    if interval is not None:
        seconds = interval.total_seconds() if hasattr(interval, "total_seconds") else interval
        items.append({"interval": seconds, **zone})
    if rrule is not None:
        items.append({"rrule": rrule, **zone})
    document: dict[str, Any] = {
        "name": name,
        "flow_name": flow.name,
        "entrypoint": flow.entrypoint,
        "parameter_schema": flow.parameter_schema(),
        "parameters": dict(parameters or {}),
        "tags": list(tags or ()),
        "work_pool": work_pool or settings.orchestration.work_pool,
        "schedules": items,
        "description": description if description is not None else getattr(flow, "description", None),
        "timeout_seconds": timeout_seconds,
    }
    if paused is not None:
        document["paused"] = paused
    spec = parse_deployment(document)
    check_spec(spec)
    with ApiClient(settings) as client:
        answer = client.post("/api/deployments", apply_document(spec))
    return Deployment.model_validate(answer["deployment"])
