"""What a deployment is: the document people write (``DeploymentSpec``) and the stored form.

``DeploymentSpec`` is what ``tripwire deploy -f`` files, ``flow.deploy()`` and ``POST /api/deployments``
carry; ``Deployment`` (with ``StoredSchedule``) is what the store returns and the API shows. Errors of
a document name its fields (``schedules[0].timezone``), as for automations. ``DeploymentStore``
(``deployments``) keeps them; "note N" below means the notes of that module.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from tripwire.errors import NotFound, ValidationFailed
from tripwire.orchestration.parameters import check_schema, parameter_errors
from tripwire.orchestration.schedules import Schedule

__all__ = [
    "ApplyResult",
    "ApplyStatus",
    "Deployment",
    "DeploymentSpec",
    "StoredSchedule",
    "apply_document",
    "check_spec",
    "load_schedule",
    "match_schedules",
    "parse_deployment",
    "pick_schedule",
    "schedule_definition",
]

ApplyStatus = Literal["created", "updated", "unchanged"]
_SCHEDULE: TypeAdapter[Any] = TypeAdapter(Schedule)
_ENTRYPOINT = re.compile(r"^(?P<where>.+):(?P<name>[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*)$")


class DeploymentSpec(BaseModel):
    """A deployment document: what ``tripwire deploy -f`` files, ``flow.deploy()`` and the API send."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, description="unique name, e.g. 'nightly-etl'")
    flow_name: str = Field(min_length=1, description="the flow's name (events relate runs to it)")
    entrypoint: str = Field(description="'path/to/file.py:function' or 'package.module:function'")
    description: str | None = Field(None, description="what it is for")
    parameters: dict[str, Any] = Field(default_factory=dict, description="default parameters of its runs")
    parameter_schema: dict[str, Any] = Field(
        default_factory=dict, description="JSON schema of the flow's parameters ({}: not checked)"
    )
    tags: list[str] = Field(default_factory=list, description="tags of its runs (related in their events)")
    work_pool: str | None = Field(None, min_length=1, description="the pool whose workers run it")
    schedules: list[Schedule] = Field(default_factory=list, description="when the scheduler runs it")
    paused: bool = Field(False, description="true: its schedules create no runs")
    timeout_seconds: float | None = Field(None, gt=0, description="a run still going after this fails")

    @field_validator("name", "flow_name")
    @classmethod
    def _clean_name(cls, value: str) -> str:
        if value != value.strip() or not value.isprintable():
            raise ValueError("must not start or end with spaces, nor contain control characters")
        return value

    @field_validator("entrypoint")
    @classmethod
    def _valid_entrypoint(cls, value: str) -> str:
        if not _ENTRYPOINT.match(value.strip()):
            raise ValueError(f"{value!r} is not '<file.py or module>:<function>', e.g. 'flows/etl.py:etl'")
        return value.strip()

    @field_validator("tags")
    @classmethod
    def _clean_tags(cls, value: list[str]) -> list[str]:
        if any(not tag.strip() for tag in value):
            raise ValueError("a tag must not be empty")
        return list(dict.fromkeys(tag.strip() for tag in value))


def parse_deployment(document: Any, where: str = "") -> DeploymentSpec:
    """Validate one deployment document; ValidationFailed names ``where`` and each field."""
    from triggers.files import automation_errors  # generic: pydantic errors -> document paths

    if not isinstance(document, dict):
        raise ValidationFailed([(where, "a deployment must be an object (name, entrypoint, ...)")])
    try:
        return DeploymentSpec.model_validate(document)
    except ValidationError as exc:
        errors = automation_errors(exc, document)
        raise ValidationFailed([(f"{where}: {loc}" if where else loc, msg) for loc, msg in errors]) from None


def apply_document(spec: DeploymentSpec) -> dict[str, Any]:
    """The JSON document to send: ``paused`` and each schedule's ``active`` only when set (note 2)."""
    document = spec.model_dump(
        mode="json", exclude={"paused"} if "paused" not in spec.model_fields_set else set()
    )
    document["schedules"] = [
        s.model_dump(mode="json", exclude=set() if "active" in s.model_fields_set else {"active"})
        for s in spec.schedules
    ]
    return document


def check_spec(spec: DeploymentSpec) -> None:
    """Checks beyond the fields (``deployments`` note 4): the schema, and the defaults against it."""
    errors = check_schema(spec.parameter_schema)
    if not errors:
        errors = parameter_errors(
            spec.parameter_schema,
            spec.parameters,
            require=bool(spec.schedules),
            flow_name=spec.flow_name,
            missing="required by the flow: a deployment with schedules needs a default for it",
        )
    if errors:
        raise ValidationFailed(errors)


class StoredSchedule(BaseModel):
    """A schedule as stored: its definition (with ``active``), id, position and bookkeeping."""

    id: UUID
    position: int = Field(description="0 for the first schedule of the deployment")
    schedule: Schedule
    summary: str = Field(description="one line, e.g. 'cron 0 9 * * * (Europe/Berlin)'")
    version: int
    created: datetime
    updated: datetime

    @property
    def active(self) -> bool:
        return self.schedule.active


class Deployment(BaseModel):
    """A deployment as stored."""

    id: UUID
    name: str
    flow_name: str
    entrypoint: str
    description: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    parameter_schema: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    work_pool: str
    paused: bool
    timeout_seconds: float | None = None
    schedules: list[StoredSchedule] = Field(default_factory=list)
    version: int
    created: datetime
    updated: datetime

    def spec(self) -> DeploymentSpec:
        """The document that, applied, gives this deployment again."""
        data = self.model_dump(include=set(DeploymentSpec.model_fields) - {"schedules"})
        return DeploymentSpec(**data, schedules=[s.schedule for s in self.schedules])


class ApplyResult(BaseModel):
    """What ``apply`` did, and the deployment as stored now."""

    status: ApplyStatus
    deployment: Deployment


# --- schedules of a stored deployment ------------------------------------------------------------------


def schedule_definition(schedule: Any) -> dict[str, Any]:
    """A schedule's definition without ``active``: equal definitions are the same schedule (note 2)."""
    return dict(schedule.model_dump(mode="json", exclude={"active"}))


def load_schedule(spec: Mapping[str, Any], active: bool) -> Any:
    """The schedule model of a stored definition (ValidationError when it no longer validates)."""
    return _parsed_schedule(json.dumps(spec, sort_keys=True), active)


@lru_cache(maxsize=4096)
def _parsed_schedule(spec: str, active: bool) -> Any:
    """Stored schedules are validated once per process (models are frozen, so sharing them is safe)."""
    return _SCHEDULE.validate_python({**json.loads(spec), "active": active})


def match_schedules(
    stored: Sequence[StoredSchedule], new: Sequence[Any]
) -> tuple[list[tuple[StoredSchedule | None, Any]], list[StoredSchedule]]:
    """Pair each new schedule with an equal stored one (note 2); the new ``active`` merged; the rest."""
    available = list(stored)
    plan: list[tuple[StoredSchedule | None, Any]] = []
    for position, schedule in enumerate(new):
        equal = [s for s in available if schedule_definition(s.schedule) == schedule_definition(schedule)]
        kept = next((s for s in equal if s.position == position), equal[0] if equal else None)
        if kept is not None:
            available.remove(kept)
            if "active" not in schedule.model_fields_set:
                schedule = schedule.model_copy(update={"active": kept.active})
        plan.append((kept, schedule))
    return plan, available


def pick_schedule(deployment: Deployment, ref: str | int | UUID) -> StoredSchedule:
    """A schedule of ``deployment`` by index (``0``: the first) or id; NotFound listing what it has."""
    text = str(ref).strip()
    if isinstance(ref, int) or text.lstrip("-").isdigit():
        index = int(text)
        if 0 <= index < len(deployment.schedules):
            return deployment.schedules[index]
    else:
        wanted = _as_uuid(text)
        for stored in deployment.schedules:
            if stored.id == wanted:
                return stored
    have = ", ".join(f"{s.position}: {s.summary}" for s in deployment.schedules) or "none"
    raise NotFound(
        f"deployment {deployment.name!r} has no schedule {text!r}; give an index or an id (it has {have})"
    )


def _as_uuid(text: str) -> UUID | None:
    try:
        return UUID(text)
    except ValueError:
        return None
