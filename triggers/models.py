"""Automation, trigger and action models (DESIGN.md §4, conformance S9).

``Automation.model_validate(json)`` is the API/CLI path: a pydantic ``ValidationError`` means the
automation is refused, and every message names the field and says what to do.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID, uuid4

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from actions.models import (
    CallWebhookAction,
    EmitEventAction,
    PauseAutomationAction,
    ResumeAutomationAction,
    SendNotificationAction,
    self_loop_error,
)
from actions.orchestration_models import (
    CancelFlowRunAction,
    ChangeFlowRunStateAction,
    PauseDeploymentAction,
    PauseScheduleAction,
    ResumeDeploymentAction,
    ResumeScheduleAction,
    RunDeploymentAction,
)
from triggers.durations import Seconds
from triggers.where import WhereClause

__all__ = [
    "Action",
    "ActionBase",
    "Automation",
    "CompositeTrigger",
    "CompoundTrigger",
    "DoNothingAction",
    "EventTrigger",
    "LabelPatterns",
    "SequenceTrigger",
    "Trigger",
    "validation_errors",
]

MIN_PROACTIVE_WITHIN_S = 10.0

LabelPatterns = dict[str, str | list[str]]
"""A label spec: ``{label: pattern | [patterns]}``; globs with ``*`` and ``?``, a leading ``!`` negates."""

_STRICT = ConfigDict(extra="forbid")


# --- actions -------------------------------------------------------------------------------------


class ActionBase(BaseModel):
    """Base of every action model: a ``type`` discriminator and no unknown fields.

    Action families live in their own modules as subclasses; adding one means adding its class to
    the ``Action`` union below (the one place the discriminator is assembled).
    """

    model_config = _STRICT


class DoNothingAction(ActionBase):
    """Record the firing and do nothing else."""

    type: Literal["do-nothing"] = Field("do-nothing", description="action type")


Action = Annotated[
    DoNothingAction
    | SendNotificationAction
    | CallWebhookAction
    | PauseAutomationAction
    | ResumeAutomationAction
    | EmitEventAction
    | RunDeploymentAction
    | PauseDeploymentAction
    | ResumeDeploymentAction
    | PauseScheduleAction
    | ResumeScheduleAction
    | CancelFlowRunAction
    | ChangeFlowRunStateAction,
    Field(discriminator="type"),
]
"""Any action: a discriminated union on ``type``."""


# --- triggers ------------------------------------------------------------------------------------


def _check_for_each(names: list[str]) -> list[str]:
    for name in names:
        if not name:
            raise ValueError("contains an empty label name; remove it or name a label")
        if name.startswith("related:"):
            role, sep, label = name[len("related:") :].partition(":")
            if not sep or not role or not label:
                raise ValueError(
                    f"{name!r} is not 'related:<role>:<label>'; "
                    "write e.g. 'related:deployment:tripwire.resource.id'"
                )
    return names


def _check_spec(spec: LabelPatterns, field: str) -> LabelPatterns:
    for label in spec:
        if not label:
            raise ValueError(f"{field} has an empty label name; name the label to match")
    return spec


class EventTrigger(BaseModel):
    """Fires on matching events: Reactive (enough of them) or Proactive (too few in time)."""

    model_config = _STRICT

    type: Literal["event"] = Field("event", description="trigger type")
    match: LabelPatterns = Field(
        default_factory=dict,
        description="labels the event's primary resource must match (globs, '!' negates)",
    )
    match_related: LabelPatterns | list[LabelPatterns] = Field(
        default_factory=dict,
        description="a spec, or specs that must each be satisfied by one related resource",
    )
    after: list[str] = Field(default_factory=list, description="event-name globs that arm a key")
    expect: list[str] = Field(
        default_factory=list, description="event-name globs that count; empty means any event name"
    )
    for_each: list[str] = Field(
        default_factory=list,
        description="labels (or 'related:<role>:<label>') that split the state per key",
    )
    posture: Literal["Reactive", "Proactive"] = Field(
        "Reactive", description="Reactive: enough events fire; Proactive: too few events in time fire"
    )
    threshold: StrictInt = Field(1, description="number of expect events, at least 1")
    within: Seconds = Field(
        0.0, description="window in seconds (or ISO-8601); 0 means no limit; Proactive needs at least 10"
    )
    cooldown: Seconds = Field(0.0, description="seconds during which a key that fired ignores its events")
    where: dict[str, Any] = Field(
        default_factory=dict, description="jsonpath -> value or {operator: argument} predicates on the event"
    )

    _where: WhereClause | None = PrivateAttr(None)

    @field_validator("for_each")
    @classmethod
    def _for_each(cls, value: list[str]) -> list[str]:
        return _check_for_each(value)

    @field_validator("threshold")
    @classmethod
    def _threshold(cls, value: int) -> int:
        if value < 1:
            raise ValueError(
                f"threshold must be an integer of at least 1 (got {value}); use 1 to fire on every event"
            )
        return value

    @field_validator("match")
    @classmethod
    def _match(cls, value: LabelPatterns) -> LabelPatterns:
        return _check_spec(value, "match")

    @field_validator("where")
    @classmethod
    def _where_valid(cls, value: dict[str, Any]) -> dict[str, Any]:
        WhereClause(value)  # raises ValueError naming the entry
        return value

    @model_validator(mode="after")
    def _rules(self) -> EventTrigger:
        if self.posture == "Proactive":
            if self.within < MIN_PROACTIVE_WITHIN_S:
                raise ValueError(
                    f"within must be at least {MIN_PROACTIVE_WITHIN_S:g} seconds for a Proactive trigger "
                    f"(got {self.within}); set within to 10 or more"
                )
            if self.cooldown != 0:
                raise ValueError("cooldown is not allowed on a Proactive trigger; remove it or set it to 0")
        if not self.expect and not self.after and not self.match:
            raise ValueError(
                "expect, after and match are all empty, so this trigger would match every event "
                "(its own automation's events included); name the events in expect or restrict match"
            )
        self._where = WhereClause(self.where) if self.where else None
        return self

    def related_specs(self) -> list[LabelPatterns]:
        """``match_related`` as a list of specs."""
        return list(self.match_related) if isinstance(self.match_related, list) else [self.match_related]

    def compiled_where(self) -> WhereClause | None:
        """The ``where`` clause compiled at validation, or None when there is none."""
        if self._where is None and self.where:
            self._where = WhereClause(self.where)
        return self._where


class CompoundTrigger(BaseModel):
    """Fires when ``require`` distinct children have fired within ``within`` seconds."""

    model_config = _STRICT

    type: Literal["compound"] = Field("compound", description="trigger type")
    require: Literal["any", "all"] | StrictInt = Field(
        "all", description="'any', 'all' or how many distinct children must fire"
    )
    within: Seconds | None = Field(None, description="seconds between the oldest and newest child firing")
    triggers: list[Trigger] = Field(description="child triggers (at least one)")

    @field_validator("triggers")
    @classmethod
    def _children(cls, value: list[Any]) -> list[Any]:
        if not value:
            raise ValueError("needs at least one child trigger; add one")
        return value

    @model_validator(mode="after")
    def _require(self) -> CompoundTrigger:
        if isinstance(self.require, int) and not 1 <= self.require <= len(self.triggers):
            raise ValueError(
                f"require must be 'any', 'all' or an integer from 1 to {len(self.triggers)} "
                f"(the number of child triggers), not {self.require}"
            )
        return self

    def required(self) -> int:
        """How many distinct children must have fired."""
        if self.require == "any":
            return 1
        if self.require == "all":
            return len(self.triggers)
        return int(self.require)


class SequenceTrigger(BaseModel):
    """Fires when its children fire in order, within ``within`` seconds."""

    model_config = _STRICT

    type: Literal["sequence"] = Field("sequence", description="trigger type")
    within: Seconds | None = Field(None, description="seconds between the first and last step")
    triggers: list[Trigger] = Field(description="child triggers in the order they must fire (at least one)")

    @field_validator("triggers")
    @classmethod
    def _children(cls, value: list[Any]) -> list[Any]:
        if not value:
            raise ValueError("needs at least one child trigger; add one")
        return value


Trigger = Annotated[EventTrigger | CompoundTrigger | SequenceTrigger, Field(discriminator="type")]
"""Any trigger: a discriminated union on ``type`` ('event', 'compound', 'sequence')."""

CompositeTrigger = CompoundTrigger | SequenceTrigger

CompoundTrigger.model_rebuild()
SequenceTrigger.model_rebuild()


# --- automation ----------------------------------------------------------------------------------


class Automation(BaseModel):
    """A trigger and the actions to run when it fires or resolves."""

    model_config = _STRICT

    id: UUID = Field(default_factory=uuid4, description="identifier")
    name: str = Field(min_length=1, description="a short, non-empty name")
    description: str = Field("", description="what it is for")
    enabled: StrictBool = Field(True, description="a disabled automation is not evaluated")
    tags: list[str] = Field(default_factory=list, description="free-form tags")
    mode: Literal["live", "dry-run"] = Field(
        "live", description="'dry-run' records firings ('would have run') without running actions"
    )
    trigger: Trigger = Field(description="when to fire")
    actions: list[Action] = Field(default_factory=list, description="actions run when the trigger fires")
    actions_on_trigger: list[Action] = Field(
        default_factory=list, description="more actions run when the trigger fires"
    )
    actions_on_resolve: list[Action] = Field(
        default_factory=list, description="actions run when a firing is resolved (the all-clear)"
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("name is blank; give the automation a name")
        return value

    @model_validator(mode="after")
    def _no_self_loop(self) -> Automation:
        on_fire = [*self.actions, *self.actions_on_trigger]
        locs = [f"actions[{i}]" for i in range(len(self.actions))]
        locs += [f"actions_on_trigger[{i}]" for i in range(len(self.actions_on_trigger))]
        loop = self_loop_error(self.trigger, list(zip(locs, on_fire, strict=True)))
        if loop is not None:
            raise ValueError(loop)  # the loop guard at save time: actions/models.py self_loop_error
        return self


def validation_errors(exc: ValidationError) -> list[tuple[str, str]]:
    """(location, message) pairs of a refused automation, each naming the field."""
    out = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field; check its spelling (unknown fields are refused)"
        elif err["type"] == "union_tag_not_found":
            msg = "needs a 'type' (for a trigger: 'event', 'compound' or 'sequence')"
        out.append((loc, msg))
    return out
