"""Deployments: a named flow entrypoint with default parameters, tags, a work pool and schedules.

    - name: nightly-etl
      entrypoint: flows/etl.py:etl            # or package.module:etl
      parameters: {limit: 100}
      tags: [nightly]
      schedules: [{cron: "0 2 * * *", timezone: Europe/Berlin}]

1. A deployment is a row of ``deployments`` (name unique; flow, entrypoint, work pool and ``paused`` as
   columns; parameters, their JSON schema, tags, description, ``timeout_seconds`` in ``document``) and
   one row of ``schedules`` per schedule, in order (``position``), each with its own id and ``active``.
   ``version`` grows by one on every change of the deployment (of a schedule: of that schedule).
2. ``apply`` creates or updates by name in one transaction, idempotently: the same document again
   changes nothing (status ``unchanged``, no version bump). ``paused`` and a schedule's ``active`` that
   the document does not set explicitly keep their stored values, so re-applying a file resumes nothing
   that someone paused. Schedules are replaced in order; a schedule equal to a stored one (same kind,
   expression, time zone, anchor) keeps its id, preferring the one at the same position.
3. Changing what runs carry (flow, work pool, parameters, tags) deletes the not-yet-started runs the
   deployment's schedules made (Scheduled/Late), and removing a schedule deletes its own; the scheduler
   makes them again from the new definition. Pausing a deployment (``set_paused``) or a schedule
   (``set_schedule_active``, or ``apply`` with ``paused``/``active`` set) deletes them too, and announces
   ``tripwire.deployment.paused``/``resumed`` (``tripwire.schedule.paused``/``resumed``), with event ids
   derived from the new version (``state_events``). Deletions happen after the commit, so a scheduler
   that created runs meanwhile either sees the change or has its runs deleted (``scheduler`` note 3).
4. Parameters are checked against the stored schema (``parameters``): the defaults on apply (all
   required ones too when the deployment has schedules), the merged defaults + overrides of each run
   (``create_run``). Errors name ``parameters.<name>``. A paused deployment can still be run on request:
   pausing stops its schedules, not people or automations asking for a run.
5. Refs: a deployment is found by id or by name; a schedule by id or by index (``0`` is the first).

The models (``DeploymentSpec``, ``Deployment``...) live in ``deployment_models``, their SQL layout in
``deployment_rows``, and ``flow.deploy()`` in ``deploy``; the models and ``deploy_flow`` are re-exported
here.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from events.emit import EventEmitter
from tripwire.db import Database
from tripwire.errors import NotFound, ValidationFailed
from tripwire.orchestration.deploy import deploy_flow
from tripwire.orchestration.deployment_models import (
    ApplyResult,
    ApplyStatus,
    Deployment,
    DeploymentSpec,
    StoredSchedule,
    apply_document,
    check_spec,
    match_schedules,
    parse_deployment,
    pick_schedule,
    schedule_definition,
)
from tripwire.orchestration.deployment_rows import deployment_row, document_of, with_schedules
from tripwire.orchestration.parameters import parameter_errors
from tripwire.orchestration.runs import FlowRun, FlowRunStore, NewFlowRun
from tripwire.orchestration.state_events import deployment_event, schedule_event
from tripwire.orchestration.states import CLAIMABLE, State
from tripwire.tables import deployments, flow_runs, schedules

__all__ = [
    "ApplyResult",
    "ApplyStatus",
    "Deployment",
    "DeploymentSpec",
    "DeploymentStore",
    "StoredSchedule",
    "apply_document",
    "check_spec",
    "deploy_flow",
    "parse_deployment",
]

log = logging.getLogger(__name__)


@dataclass
class _Changes:
    """What a committed write still has to do: delete unstarted runs, then announce (note 3)."""

    deployment: Deployment
    clear_runs: bool = False  # every schedule-made unstarted run of the deployment
    clear_schedules: list[UUID] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)


class DeploymentStore:
    """Deployments and their schedules in SQL; pause/resume announced; runs created through ``runs``."""

    def __init__(
        self,
        db: Database,
        emitter: EventEmitter | None,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        default_work_pool: str = "default",
    ) -> None:
        self._db = db
        self._emitter = emitter
        self._clock = clock
        self.default_work_pool = default_work_pool
        self.runs = FlowRunStore(db, emitter, clock=clock)

    # --- reads ---------------------------------------------------------------------------------------

    async def get(self, deployment_id: UUID) -> Deployment:
        """The deployment with this id; NotFound otherwise."""
        found = await self._select(deployments.c.id == deployment_id)
        if not found:
            raise NotFound(f"no deployment with id {deployment_id} (`tripwire deployment ls` lists them)")
        return found[0]

    async def get_by_name(self, name: str) -> Deployment:
        """The deployment with this name; NotFound otherwise."""
        found = await self._select(deployments.c.name == name)
        if not found:
            raise NotFound(f"no deployment named {name!r} (`tripwire deployment ls` lists them)")
        return found[0]

    async def resolve(self, ref: str | UUID) -> Deployment:
        """The deployment with this id, else with this name (note 5); NotFound naming the ref."""
        deployment_id = _as_uuid(ref)
        found = [] if deployment_id is None else await self._select(deployments.c.id == deployment_id)
        if not found and not isinstance(ref, UUID):
            found = await self._select(deployments.c.name == str(ref))
        if not found:
            raise NotFound(
                f"no deployment with id or name {str(ref)!r} (`tripwire deployment ls` lists them)"
            )
        return found[0]

    async def list(self) -> builtins.list[Deployment]:
        """Every deployment, by name."""
        return await self._select(None)

    async def active_schedules(self) -> builtins.list[tuple[Deployment, StoredSchedule]]:
        """Each active schedule of each deployment that is not paused (what the scheduler works on)."""
        found = await self._select(deployments.c.paused.is_(False), only_active=True)
        return [(d, s) for d in found for s in d.schedules]

    async def is_current(
        self, deployment_id: UUID, deployment_version: int, schedule_id: UUID, schedule_version: int
    ) -> bool:
        """Whether the deployment and schedule are still at these versions, unpaused and active."""
        query = (
            select(deployments.c.version, schedules.c.version)
            .join(schedules, schedules.c.deployment_id == deployments.c.id)
            .where(
                deployments.c.id == deployment_id,
                deployments.c.paused.is_(False),
                schedules.c.id == schedule_id,
                schedules.c.active.is_(True),
            )
        )
        async with self._db.read() as conn:
            row = (await conn.execute(query)).first()
        return row is not None and tuple(row) == (deployment_version, schedule_version)

    async def _select(self, condition: Any, *, only_active: bool = False) -> builtins.list[Deployment]:
        query = select(deployments).order_by(deployments.c.name)
        if condition is not None:
            query = query.where(condition)
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
            return await with_schedules(conn, rows, only_active=only_active)

    # --- apply ---------------------------------------------------------------------------------------

    async def apply(self, spec: DeploymentSpec) -> ApplyResult:
        """Create or update by name, idempotently (note 2); ValidationFailed naming the field."""
        check_spec(spec)
        for attempt in range(2):
            try:
                async with self._db.begin() as conn:
                    status, changes = await self._apply(conn, spec)
                break
            except IntegrityError:
                if attempt == 1:
                    raise ValidationFailed(
                        [("name", "another writer changed this deployment at the same moment; apply again")]
                    ) from None
                # another writer created the same name meanwhile: apply again, now as an update
        await self._finish(changes)
        if status != "unchanged":
            log.info(
                "deployment %r %s (version %d)", spec.name, status, changes.deployment.version,
                extra={"deployment": str(changes.deployment.id)},
            )  # fmt: skip
        return ApplyResult(status=status, deployment=changes.deployment)

    async def _apply(self, conn: AsyncConnection, spec: DeploymentSpec) -> tuple[ApplyStatus, _Changes]:
        row = (
            await conn.execute(select(deployments).where(deployments.c.name == spec.name).with_for_update())
        ).first()
        now = self._clock()
        work_pool = spec.work_pool or self.default_work_pool
        if row is None:
            deployment_id = uuid4()
            await conn.execute(
                deployments.insert().values(
                    id=deployment_id, name=spec.name, flow_name=spec.flow_name, entrypoint=spec.entrypoint,
                    paused=spec.paused, work_pool=work_pool, document=document_of(spec),
                    created=now, updated=now, version=1,
                )
            )  # fmt: skip
            for position, schedule in enumerate(spec.schedules):
                await self._insert_schedule(conn, deployment_id, position, schedule, now)
            [created] = await with_schedules(conn, [await deployment_row(conn, deployment_id)])
            return "created", _Changes(created)
        [current] = await with_schedules(conn, [row])
        paused = spec.paused if "paused" in spec.model_fields_set else current.paused
        plan, removed = match_schedules(current.schedules, spec.schedules)
        same = (
            (row.flow_name, row.entrypoint, row.work_pool, row.paused, row.document)
            == (spec.flow_name, spec.entrypoint, work_pool, paused, document_of(spec))
            and not removed
            and all(
                kept is not None and kept.position == i and kept.active == new.active
                for i, (kept, new) in enumerate(plan)
            )
        )
        if same:
            return "unchanged", _Changes(current)
        version = current.version + 1
        await conn.execute(
            update(deployments)
            .where(deployments.c.id == current.id)
            .values(
                flow_name=spec.flow_name, entrypoint=spec.entrypoint, paused=paused, work_pool=work_pool,
                document=document_of(spec), updated=now, version=version,
            )
        )  # fmt: skip
        if removed:
            await conn.execute(delete(schedules).where(schedules.c.id.in_([s.id for s in removed])))
        # Runs carry flow, pool, parameters and tags: when one of those changes, all are made again.
        before = (current.flow_name, current.work_pool, current.parameters, current.tags)
        after = (spec.flow_name, work_pool, spec.parameters, spec.tags)
        changes = _Changes(
            current, clear_runs=paused or before != after, clear_schedules=[s.id for s in removed]
        )
        for position, (kept, new) in enumerate(plan):
            if kept is None:
                await self._insert_schedule(conn, current.id, position, new, now)
            elif kept.position != position or kept.active != new.active:
                await conn.execute(
                    update(schedules)
                    .where(schedules.c.id == kept.id)
                    .values(position=position, active=new.active, updated=now, version=kept.version + 1)
                )
                if kept.active != new.active:
                    changes.events.append(
                        self._schedule_event(current, kept, new.active, now, kept.version + 1)
                    )
                    if not new.active:
                        changes.clear_schedules.append(kept.id)
        if paused != current.paused:
            changes.events.insert(0, self._deployment_event(current, paused, now, version))
        [changes.deployment] = await with_schedules(conn, [await deployment_row(conn, current.id)])
        return "updated", changes

    async def _insert_schedule(
        self, conn: AsyncConnection, deployment_id: UUID, position: int, schedule: Any, now: datetime
    ) -> None:
        await conn.execute(
            schedules.insert().values(
                id=uuid4(), deployment_id=deployment_id, position=position, active=schedule.active,
                spec=schedule_definition(schedule), created=now, updated=now, version=1,
            )
        )  # fmt: skip

    # --- pause / resume ------------------------------------------------------------------------------

    async def set_paused(self, ref: str | UUID, paused: bool) -> bool:
        """Pause (True) or resume (False) a deployment (note 3); returns whether that changed anything."""
        target = await self.resolve(ref)
        now = self._clock()
        async with self._db.begin() as conn:
            row = (
                await conn.execute(select(deployments).where(deployments.c.id == target.id).with_for_update())
            ).first()
            if row is None:
                raise NotFound(f"deployment {target.name!r} was deleted meanwhile")
            if row.paused == paused:
                return False
            version = row.version + 1
            await conn.execute(
                update(deployments)
                .where(deployments.c.id == target.id)
                .values(paused=paused, updated=now, version=version)
            )
        event = self._deployment_event(target, paused, now, version)
        await self._finish(_Changes(target, clear_runs=paused, events=[event]))
        log.info(
            "deployment %r %s", target.name, "paused" if paused else "resumed",
            extra={"deployment": str(target.id)},
        )  # fmt: skip
        return True

    async def set_schedule_active(self, ref: str | UUID, schedule: str | int | UUID, active: bool) -> bool:
        """Resume (True) or pause (False) one schedule, by id or index (notes 3, 5); whether it changed."""
        target = await self.resolve(ref)
        stored = pick_schedule(target, schedule)
        now = self._clock()
        async with self._db.begin() as conn:
            row = (
                await conn.execute(select(schedules).where(schedules.c.id == stored.id).with_for_update())
            ).first()
            if row is None:
                raise NotFound(f"schedule {stored.id} of deployment {target.name!r} was deleted meanwhile")
            if row.active == active:
                return False
            version = row.version + 1
            await conn.execute(
                update(schedules)
                .where(schedules.c.id == stored.id)
                .values(active=active, updated=now, version=version)
            )
        event = self._schedule_event(target, stored, active, now, version)
        await self._finish(_Changes(target, clear_schedules=[] if active else [stored.id], events=[event]))
        log.info(
            "schedule %d (%s) of deployment %r %s", stored.position, stored.summary, target.name,
            "resumed" if active else "paused",
            extra={"deployment": str(target.id), "schedule": str(stored.id)},
        )  # fmt: skip
        return True

    # --- runs and deletion ---------------------------------------------------------------------------

    async def create_run(
        self,
        ref: str | UUID,
        parameters: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        scheduled_time: datetime | None = None,
        tags: Iterable[str] | None = None,
        state: State = State.SCHEDULED,
    ) -> tuple[FlowRun, bool]:
        """A run of the deployment with its defaults + ``parameters`` (note 4); (run, created).

        ValidationFailed naming ``parameters.<name>`` when they do not fit the flow; NotFound for an
        unknown ref. ``created`` is False when ``idempotency_key`` was used before (that run is returned).
        """
        deployment = await self.resolve(ref)
        merged = {**deployment.parameters, **(parameters or {})}
        errors = parameter_errors(deployment.parameter_schema, merged, flow_name=deployment.flow_name)
        if scheduled_time is not None and scheduled_time.tzinfo is None:
            errors.append(("scheduled_time", "needs a time zone (e.g. 2026-11-21T09:00:00+00:00)"))
        if errors:
            raise ValidationFailed(errors)
        return await self.runs.create(
            NewFlowRun(
                flow_name=deployment.flow_name,
                parameters=merged,
                deployment_id=deployment.id,
                work_pool=deployment.work_pool,
                tags=list(dict.fromkeys([*deployment.tags, *(tags or ())])),
                scheduled_time=scheduled_time,
                idempotency_key=idempotency_key,
                state=state,
            )
        )

    async def delete(self, ref: str | UUID) -> Deployment:
        """Delete a deployment, its schedules and its runs that have not started; returns what it was."""
        target = await self.resolve(ref)
        async with self._db.begin() as conn:
            await conn.execute(
                delete(flow_runs).where(
                    flow_runs.c.deployment_id == target.id,
                    flow_runs.c.state.in_([s.value for s in CLAIMABLE]),
                )
            )
            await conn.execute(delete(schedules).where(schedules.c.deployment_id == target.id))
            await conn.execute(delete(deployments).where(deployments.c.id == target.id))
        log.info("deployment %r deleted", target.name, extra={"deployment": str(target.id)})
        return target

    # --- after a commit (note 3) ---------------------------------------------------------------------

    async def _finish(self, changes: _Changes) -> None:
        deployment_id = changes.deployment.id
        if changes.clear_runs:
            await self.runs.delete_unstarted(deployment_id=deployment_id)
        else:
            for schedule_id in changes.clear_schedules:
                await self.runs.delete_unstarted(deployment_id=deployment_id, schedule_id=schedule_id)
        if self._emitter is None or not changes.events:
            return
        try:
            await self._emitter.emit_events(changes.events)
        except Exception:
            log.exception("deployment change stored but its event could not be emitted")
            raise

    def _deployment_event(
        self, deployment: Deployment, paused: bool, now: datetime, version: int
    ) -> dict[str, Any]:
        what = "paused" if paused else "resumed"
        return deployment_event(deployment.id, deployment.name, what, occurred=now, version=version)

    def _schedule_event(
        self, deployment: Deployment, stored: StoredSchedule, active: bool, now: datetime, version: int
    ) -> dict[str, Any]:
        return schedule_event(
            stored.id,
            "resumed" if active else "paused",
            deployment_id=deployment.id,
            deployment_name=deployment.name,
            occurred=now,
            version=version,
            payload={"position": stored.position, "schedule": stored.summary},
        )


# --- helpers ---------------------------------------------------------------------------------------------


def _as_uuid(ref: str | UUID) -> UUID | None:
    if isinstance(ref, UUID):
        return ref
    try:
        return UUID(ref)
    except ValueError:
        return None
