"""Action models that act on orchestration objects (DESIGN.md §5): deployments, schedules, flow runs.

1. Every model names its target the same way: ``source: "selected"`` with the object's name or id, or
   ``source: "inferred"``: the object the triggering event is about (``actions.orchestration`` reads it
   from the event's resource or its related resources). ``selected`` is the default when a target is
   given, ``inferred`` otherwise.
2. ``run-deployment`` parameters are a JSON object whose string values are templates (rendered one by
   one), merged over the deployment's defaults and validated against its parameter schema when the
   action runs: a bad parameter fails the action, naming the parameter.
3. The loop guard (``run_deployment_loop_error``): a run-deployment action whose new run would surely
   fire the same automation again — its trigger counts an event every run emits (Scheduled, Pending,
   Running, and Completed, the normal path), for the deployment that action runs — is refused at save
   time. Reacting to Failed or Crashed runs is allowed (re-running a failed deployment ends when a run
   succeeds); the runner's per-automation rate limit backs up what cannot be proved at save time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from actions.models import JsonTemplate, Template
from events.model import RESOURCE_ID, RESOURCE_NAME, RESOURCE_ROLE

__all__ = [
    "ORCHESTRATION_ACTIONS",
    "CancelFlowRunAction",
    "ChangeFlowRunStateAction",
    "PauseDeploymentAction",
    "PauseScheduleAction",
    "ResumeDeploymentAction",
    "ResumeScheduleAction",
    "RunDeploymentAction",
    "run_deployment_loop_error",
]

_STRICT = ConfigDict(extra="forbid")

RUN_STATES = ("Scheduled", "Pending", "Running", "Completed")
"""The states a new run surely reaches on its normal path (note 3)."""

FLOW_RUN_STATES = (
    "Scheduled", "Late", "Pending", "Running", "Completed", "Failed", "Crashed", "Cancelling", "Cancelled",
    "Paused",
)  # fmt: skip


class _Target(BaseModel):
    """Which object the action acts on (note 1); ``_field`` names the field holding its name or id."""

    model_config = _STRICT
    _field = "deployment"

    source: Literal["selected", "inferred"] | None = Field(
        None,
        description="'selected': the object named in the target field; 'inferred': the one the "
        "triggering event is about. Default: 'selected' when the target is given, else 'inferred'",
    )

    @model_validator(mode="after")
    def _source(self) -> _Target:
        target = getattr(self, self._field)
        if self.source is None:
            self.source = "selected" if target is not None else "inferred"
        if self.source == "selected" and target is None:
            raise ValueError(f"source 'selected' needs `{self._field}`: its name or id")
        if self.source == "inferred" and target is not None:
            raise ValueError(f"`{self._field}` is only used with source 'selected', not 'inferred'")
        return self


class _DeploymentTarget(_Target):
    deployment: str | None = Field(None, min_length=1, description="name or id of the deployment")


class RunDeploymentAction(_DeploymentTarget):
    """Create a flow run of a deployment (selected, or the one the event is about); once per firing."""

    type: Literal["run-deployment"] = Field("run-deployment", description="action type")
    parameters: JsonTemplate = Field(
        default_factory=dict,
        description="parameters over the deployment's defaults: an object whose string values are templates",
    )
    tags: list[str] = Field(default_factory=list, description="tags added to the run's deployment tags")

    @model_validator(mode="after")
    def _object(self) -> RunDeploymentAction:
        if not isinstance(self.parameters, dict):
            raise ValueError("parameters must be a JSON object whose string values are templates")
        return self


class PauseDeploymentAction(_DeploymentTarget):
    """Pause a deployment: its schedules create no runs; its not-yet-started scheduled runs go."""

    type: Literal["pause-deployment"] = Field("pause-deployment", description="action type")


class ResumeDeploymentAction(_DeploymentTarget):
    """Resume a paused deployment."""

    type: Literal["resume-deployment"] = Field("resume-deployment", description="action type")


class _ScheduleTarget(_DeploymentTarget):
    schedule: str | int | None = Field(
        None,
        description="the schedule: its id or its position in the deployment (from 0). With source "
        "'inferred' and no schedule, the schedule that created the event's flow run",
    )

    @model_validator(mode="after")
    def _schedule_given(self) -> _ScheduleTarget:
        if self.source == "selected" and self.schedule is None:
            raise ValueError("source 'selected' needs `schedule`: its id or its position (0 for the first)")
        return self


class PauseScheduleAction(_ScheduleTarget):
    """Pause one schedule of a deployment; its not-yet-started runs go."""

    type: Literal["pause-schedule"] = Field("pause-schedule", description="action type")


class ResumeScheduleAction(_ScheduleTarget):
    """Resume one schedule of a deployment."""

    type: Literal["resume-schedule"] = Field("resume-schedule", description="action type")


class _FlowRunTarget(_Target):
    _field = "flow_run"

    flow_run: str | None = Field(None, min_length=1, description="id of the flow run")


class CancelFlowRunAction(_FlowRunTarget):
    """Cancel a flow run: not started -> Cancelled; Pending/Running -> Cancelling (its worker stops it)."""

    type: Literal["cancel-flow-run"] = Field("cancel-flow-run", description="action type")


class ChangeFlowRunStateAction(_FlowRunTarget):
    """Move a flow run to a state (with a templated message); ``force`` allows leaving a final state."""

    type: Literal["change-flow-run-state"] = Field("change-flow-run-state", description="action type")
    state: Literal[FLOW_RUN_STATES] = Field(description="the target state")  # type: ignore[valid-type]
    message: Template | None = Field(None, description="template of the state message")
    force: bool = Field(False, description="move even when the state machine would refuse")


ORCHESTRATION_ACTIONS = (
    RunDeploymentAction,
    PauseDeploymentAction,
    ResumeDeploymentAction,
    PauseScheduleAction,
    ResumeScheduleAction,
    CancelFlowRunAction,
    ChangeFlowRunStateAction,
)


# --- the run-deployment loop guard (note 3) ------------------------------------------------------------


def _surely_related(spec: dict[str, Any], action: RunDeploymentAction) -> bool:
    """Whether a match_related spec surely accepts a related resource of the action's new run."""
    from triggers.patterns import LabelSpec

    role = spec.get(RESOURCE_ROLE)
    if role is None:
        return False
    others = {k: v for k, v in spec.items() if k != RESOURCE_ROLE}
    if action.source == "inferred":
        # The new run belongs to the deployment of the event that fired, so it has the same deployment,
        # flow and work pool: a spec on those (by id and name) that accepted the event accepts the run.
        roles = ("deployment", "flow", "work-pool")
        same = any(LabelSpec({RESOURCE_ROLE: role}).matches({RESOURCE_ROLE: r}) for r in roles)
        return same and set(others) <= {RESOURCE_ID, RESOURCE_NAME}
    if not LabelSpec({RESOURCE_ROLE: role}).matches({RESOURCE_ROLE: "deployment"}):
        return False
    assert action.deployment is not None
    sample = {RESOURCE_ROLE: "deployment", RESOURCE_NAME: action.deployment}
    if RESOURCE_ID in others:
        sample[RESOURCE_ID] = f"tripwire.deployment.{action.deployment}"
    return LabelSpec(spec).matches(sample)


def _counts_runs(trigger: Any, action: RunDeploymentAction) -> bool:
    """Whether ``trigger`` surely counts an event every run of the action's deployment emits."""
    from triggers.patterns import PatternList

    if trigger.where or trigger.match:
        return False
    names = [f"tripwire.flow-run.{state}" for state in RUN_STATES]
    expect = PatternList(trigger.expect) if trigger.expect else None
    after = PatternList(trigger.after) if trigger.after else None
    counted = [n for n in names if (expect is None or expect.matches(n)) and not (after and after.matches(n))]
    if not counted:
        return False
    specs = [s for s in trigger.related_specs() if s]
    return all(_surely_related(spec, action) for spec in specs)


def run_deployment_loop_error(triggers: Sequence[Any], actions: Sequence[tuple[str, Any]]) -> str | None:
    """Why the automation's run-deployment actions would re-fire it without end (note 3), or None.

    ``triggers`` are its counting Reactive event triggers (``actions.models._counting_triggers``),
    ``actions`` the ``(location, action)`` pairs that run when it fires.
    """
    running = [(loc, a) for loc, a in actions if isinstance(a, RunDeploymentAction)]
    for trig in triggers if running else ():
        counted = [(loc, a) for loc, a in running if _counts_runs(trig, a)]
        if counted and len(counted) >= trig.threshold:
            where = ", ".join(loc for loc, _ in counted)
            return (
                f"{where}: run-deployment starts a run whose own flow-run events "
                f"({', '.join(RUN_STATES)}) this automation's trigger counts (expect "
                f"{trig.expect or 'any event'}, threshold {trig.threshold}), so every firing would fire "
                "it again without end; react to another state (e.g. Failed), narrow the trigger with "
                "match_related, or run another deployment"
            )
    return None
