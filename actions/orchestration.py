"""The actions on orchestration objects: run, pause and resume deployments and schedules; cancel and
change flow runs (models in ``actions.orchestration_models``).

1. Targets (``source``): ``selected`` names the object (deployment by name or id, schedule by id or
   position, flow run by id); ``inferred`` reads it from the triggering event — its resource
   (``tripwire.deployment.<id>``, ``tripwire.flow-run.<id>``) or a related resource with the role
   ``deployment`` / ``flow-run``. For a schedule inferred from a flow run's event, the schedule is the
   one that created the run. Nothing to infer from, or a target that does not exist, is an
   ``ActionFailed`` (recorded, not retried).
2. ``run-deployment`` is idempotent per firing: the run's idempotency key is the action message's key, so
   a redelivered or retried message finds the run it created instead of creating another.
3. Pause/resume and cancel are idempotent by nature (pausing a paused deployment changes nothing and
   succeeds; cancelling a run that is already Cancelling does too). A refused state change (a final run)
   is an ``ActionFailed`` naming the run and its state.
"""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

from actions.context import ActionContext
from actions.orchestration_models import (
    CancelFlowRunAction,
    ChangeFlowRunStateAction,
    PauseDeploymentAction,
    PauseScheduleAction,
    ResumeDeploymentAction,
    ResumeScheduleAction,
    RunDeploymentAction,
)
from events.model import RESOURCE_ID, Event
from tripwire.errors import ActionFailed, Conflict, NotFound, ValidationFailed
from tripwire.orchestration.deployments import Deployment, DeploymentStore
from tripwire.orchestration.runs import FlowRunStore
from tripwire.orchestration.states import State

__all__ = [
    "cancel_flow_run",
    "change_flow_run_state",
    "inferred_id",
    "run_deployment",
    "set_deployment_paused",
    "set_schedule_active",
]


def _parse(resource_id: str | None, prefix: str) -> UUID | None:
    if not resource_id or not resource_id.startswith(prefix):
        return None
    try:
        return UUID(resource_id.removeprefix(prefix))
    except ValueError:
        return None


def inferred_id(event: Event | None, kind: str) -> UUID | None:
    """The id of the ``kind`` (``deployment``, ``flow-run``) the event is about: resource, else related."""
    if event is None:
        return None
    prefix = f"tripwire.{kind}."
    found = _parse(event.resource.get(RESOURCE_ID), prefix)
    if found is not None:
        return found
    for related in event.related_by_role(kind):
        found = _parse(related.get(RESOURCE_ID), prefix)
        if found is not None:
            return found
    return None


def _runs(ctx: ActionContext) -> FlowRunStore:
    if ctx.db is None:
        raise RuntimeError("the action context has no database")
    return FlowRunStore(ctx.db, ctx.emitter, clock=ctx.clock)


def _flow_run_id(action: CancelFlowRunAction | ChangeFlowRunStateAction, ctx: ActionContext) -> UUID:
    if action.source == "selected":
        assert action.flow_run is not None  # the model requires it
        try:
            return UUID(action.flow_run)
        except ValueError:
            raise ActionFailed(f"flow_run {action.flow_run!r} is not a flow run id") from None
    event = ctx.template.triggering_event
    found = inferred_id(event, "flow-run")
    if found is None:
        what = "no event caused this firing" if event is None else f"event {event.event!r} is not"
        raise ActionFailed(
            f"cannot infer the flow run: {what} about a flow run "
            "(resource 'tripwire.flow-run.<id>' or a related 'flow-run')"
        )
    return found


async def cancel_flow_run(action: CancelFlowRunAction, ctx: ActionContext) -> dict[str, Any]:
    """Cancel the run (note 3); returns its id, name and new state."""
    run_id = _flow_run_id(action, ctx)
    try:
        run = await _runs(ctx).cancel(
            run_id, message=f"cancelled by automation {ctx.message.automation_name}"
        )
    except (NotFound, Conflict) as exc:
        raise ActionFailed(f"cannot cancel the flow run: {exc}") from None
    return {"flow_run": run.name, "flow_run_id": str(run.id), "state": run.state.value}


async def change_flow_run_state(action: ChangeFlowRunStateAction, ctx: ActionContext) -> dict[str, Any]:
    """Move the run to the action's state, with its rendered message."""
    run_id = _flow_run_id(action, ctx)
    message = None if action.message is None else await ctx.render("message", action.message)
    try:
        run = await _runs(ctx).transition(run_id, State(action.state), message=message, force=action.force)
    except (NotFound, Conflict) as exc:
        raise ActionFailed(f"cannot change the flow run's state: {exc}") from None
    return {"flow_run": run.name, "flow_run_id": str(run.id), "state": run.state.value}


# --- deployments and schedules ---------------------------------------------------------------------------


def _deployments(ctx: ActionContext) -> DeploymentStore:
    if ctx.db is None:
        raise RuntimeError("the action context has no database")
    return DeploymentStore(ctx.db, ctx.emitter, clock=ctx.clock)


def _infer(ctx: ActionContext, kind: str, what: str) -> UUID:
    event = ctx.template.triggering_event
    found = inferred_id(event, kind)
    if found is None:
        about = "no event caused this firing" if event is None else f"event {event.event!r} is not"
        raise ActionFailed(
            f"cannot infer the {what}: {about} about a {what} (resource 'tripwire.{kind}.<id>' or a "
            f"related '{kind}')"
        )
    return found


async def _deployment(
    action: RunDeploymentAction
    | PauseDeploymentAction
    | ResumeDeploymentAction
    | PauseScheduleAction
    | ResumeScheduleAction,
    ctx: ActionContext,
    store: DeploymentStore,
) -> Deployment:
    if action.source == "selected":
        assert action.deployment is not None  # the model requires it
        ref: str | UUID = action.deployment
    else:
        ref = _infer(ctx, "deployment", "deployment")
    try:
        return await store.resolve(ref)
    except NotFound as exc:
        raise ActionFailed(str(exc)) from None


def _typed(deployment: Deployment, parameters: Any) -> Any:
    """Rendered templates are text: a value for a parameter the flow does not declare as a string is read
    as JSON when it parses (``"{{ event.payload.n }}"`` -> 5 for an ``int`` parameter)."""
    if not isinstance(parameters, dict):
        return parameters
    properties = deployment.parameter_schema.get("properties", {})
    out = dict(parameters)
    for name, value in parameters.items():
        kind = properties.get(name, {}).get("type") if isinstance(properties.get(name), dict) else None
        if isinstance(value, str) and kind is not None and kind != "string":
            try:
                out[name] = json.loads(value)
            except ValueError:
                pass  # left as text: the schema check names the parameter
    return out


async def run_deployment(action: RunDeploymentAction, ctx: ActionContext) -> dict[str, Any]:
    """Create a run of the deployment, once per action message (note 2); bad parameters fail it."""
    store = _deployments(ctx)
    deployment = await _deployment(action, ctx, store)
    parameters = _typed(deployment, await ctx.render_json("parameters", action.parameters))
    try:
        run, created = await store.create_run(
            deployment.id, parameters, idempotency_key=f"action:{ctx.key}", tags=action.tags
        )
    except ValidationFailed as exc:
        raise ActionFailed(f"deployment {deployment.name!r} refused the run: {exc}") from None
    except NotFound as exc:
        raise ActionFailed(str(exc)) from None
    return {
        "deployment": deployment.name,
        "flow_run": run.name,
        "flow_run_id": str(run.id),
        "created": created,
    }


async def set_deployment_paused(
    action: PauseDeploymentAction | ResumeDeploymentAction, ctx: ActionContext
) -> dict[str, Any]:
    """Pause or resume the deployment; succeeds when it already was."""
    paused = isinstance(action, PauseDeploymentAction)
    store = _deployments(ctx)
    deployment = await _deployment(action, ctx, store)
    changed = await store.set_paused(deployment.id, paused)
    return {"deployment": deployment.name, "paused": paused, "changed": changed}


async def set_schedule_active(
    action: PauseScheduleAction | ResumeScheduleAction, ctx: ActionContext
) -> dict[str, Any]:
    """Pause or resume one schedule: selected, or the one that created the event's flow run."""
    active = isinstance(action, ResumeScheduleAction)
    store = _deployments(ctx)
    deployment = await _deployment(action, ctx, store)
    schedule: str | int | UUID | None = action.schedule
    if schedule is None:
        run_id = _infer(ctx, "flow-run", "flow run")
        try:
            run = await _runs(ctx).get(run_id)
        except NotFound as exc:
            raise ActionFailed(str(exc)) from None
        if run.schedule_id is None:
            raise ActionFailed(
                f"flow run {run.name} was not created by a schedule; name the schedule in the action"
            )
        schedule = run.schedule_id
    try:
        changed = await store.set_schedule_active(deployment.id, schedule, active)
    except NotFound as exc:
        raise ActionFailed(str(exc)) from None
    return {"deployment": deployment.name, "schedule": str(schedule), "active": active, "changed": changed}
