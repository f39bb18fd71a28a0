"""Action models: what an automation does when it fires (DESIGN.md §5).

Each model has a ``type`` discriminator, refuses unknown fields and checks its templates when the
automation is saved (``actions.templates.check_template``): a template that does not compile is a
validation error naming the field (``actions[0].body``), the template line and Jinja's message. The
``Action`` union (``triggers.models``) assembles them; the runner (``actions.runner``) runs them.

This module imports nothing from ``triggers`` at import time: ``triggers.models`` imports it to build
the union, so the loop guard imports ``triggers.patterns`` only when it runs.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from actions.templates import check_template, has_template_syntax
from blocks.registry import BlockRef
from events.model import RESOURCE_ID, RESOURCE_ROLE

__all__ = [
    "AUTOMATION_ACTIONS",
    "CallWebhookAction",
    "EmitEventAction",
    "JsonTemplate",
    "NotificationBlockRef",
    "PauseAutomationAction",
    "ResumeAutomationAction",
    "SendNotificationAction",
    "Template",
    "WebhookBlockRef",
    "self_loop_error",
]

_HEADER = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_RESERVED_HEADERS = frozenset(
    {"idempotency-key", "x-tripwire-timestamp", "x-tripwire-signature", "content-length"}
)

Template = Annotated[str, AfterValidator(check_template)]
"""A Jinja template (sandboxed), checked when the automation is saved."""


def _check_json_template(value: Any) -> Any:
    for path, leaf in _string_leaves(value, ""):
        try:
            check_template(leaf)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}" if path else str(exc)) from None
    return value


def _string_leaves(value: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _string_leaves(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _string_leaves(item, f"{path}[{i}]")


JsonTemplate = Annotated[str | dict[str, Any] | list[Any], AfterValidator(_check_json_template)]
"""Either one template whose output is JSON (or, for call-webhook, text), or a JSON object or list whose
string values are templates, rendered one by one."""


def _notification_block(ref: str) -> str:
    from blocks.registry import block_type

    slug = ref.partition("/")[0]
    if not block_type(slug).is_notification():
        raise ValueError(
            f"a {slug} block cannot send notifications; use a slack-webhook, email or apprise block"
        )
    return ref


def _webhook_block(ref: str) -> str:
    slug = ref.partition("/")[0]
    if slug != "webhook":
        raise ValueError(f"call-webhook needs a webhook block ('webhook/<name>'), not a {slug} block")
    return ref


NotificationBlockRef = Annotated[BlockRef, AfterValidator(_notification_block)]
WebhookBlockRef = Annotated[BlockRef, AfterValidator(_webhook_block)]

_STRICT = ConfigDict(extra="forbid")

DEFAULT_SUBJECT = "Tripwire: {{ automation.name }} {{ firing.kind }}"
DEFAULT_BODY = (
    "{{ automation.name }} {{ firing.kind }} at {{ firing.time }}"
    "{% if labels %} for {% for k, v in labels.items() %}{{ k }}={{ v }}"
    "{% if not loop.last %}, {% endif %}{% endfor %}{% endif %}."
    "{% if event %}\nLast event: {{ event.event }} on "
    "{{ event.resource['tripwire.resource.id'] }}.{% endif %}"
)
DEFAULT_PAYLOAD = (
    '{{ {"automation": automation, "firing": firing, "labels": labels, "event": event,'
    ' "event_ids": firing.event_ids} | tojson }}'
)


class SendNotificationAction(BaseModel):
    """Render a subject and a body and send them through a notification block (apprise)."""

    model_config = _STRICT

    type: Literal["send-notification"] = Field("send-notification", description="action type")
    block: NotificationBlockRef = Field(
        description="the notification block, 'type/name': a slack-webhook, email or apprise block"
    )
    subject: Template = Field(DEFAULT_SUBJECT, description="template of the subject (title)")
    body: Template = Field(DEFAULT_BODY, description="template of the message body")
    format: Literal["text", "markdown", "html"] = Field(
        "text", description="how the rendered body is written; apprise converts it for each service"
    )


class CallWebhookAction(BaseModel):
    """Send a templated payload to a webhook block's URL; a non-2xx answer is a failure."""

    model_config = _STRICT

    type: Literal["call-webhook"] = Field("call-webhook", description="action type")
    block: WebhookBlockRef = Field(description="the webhook block, 'webhook/<name>'")
    payload: JsonTemplate = Field(
        DEFAULT_PAYLOAD,
        description="the body: a template (sent as JSON when its output is JSON, else as text), "
        "or a JSON object whose string values are templates",
    )
    headers: dict[str, Template] = Field(
        default_factory=dict,
        description="more headers (values are templates); secret ones belong in the block",
    )

    @field_validator("headers")
    @classmethod
    def _header_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not _HEADER.match(name):
                raise ValueError(f"{name[:60]!r} is not a valid HTTP header name")
            if name.lower() in _RESERVED_HEADERS:
                raise ValueError(f"{name} is set by Tripwire itself; remove it")
        return value


class _AutomationTarget(BaseModel):
    """Which automation a pause/resume action acts on."""

    model_config = _STRICT

    source: Literal["self", "selected", "inferred"] = Field(
        "self",
        description="'self': this automation; 'selected': the one named in `automation`; "
        "'inferred': the automation the triggering event is about (resource tripwire.automation.<id>)",
    )
    automation: str | None = Field(
        None, min_length=1, description="name or id of the automation, with source 'selected'"
    )

    @model_validator(mode="after")
    def _selected_names_one(self) -> _AutomationTarget:
        if self.source == "selected" and self.automation is None:
            raise ValueError("source 'selected' needs `automation`: the name or id of the automation")
        if self.source != "selected" and self.automation is not None:
            raise ValueError(f"`automation` is only used with source 'selected', not {self.source!r}")
        return self


class PauseAutomationAction(_AutomationTarget):
    """Disable an automation: this one, another one by name or id, or the one the event is about."""

    type: Literal["pause-automation"] = Field("pause-automation", description="action type")


class ResumeAutomationAction(_AutomationTarget):
    """Enable an automation: this one, another one by name or id, or the one the event is about."""

    type: Literal["resume-automation"] = Field("resume-automation", description="action type")


class EmitEventAction(BaseModel):
    """Emit a templated event onto the event stream (chaining); it ``follows`` the triggering event."""

    model_config = _STRICT

    type: Literal["emit-event"] = Field("emit-event", description="action type")
    event: Template = Field(min_length=1, max_length=1024, description="template of the event name")
    resource: dict[str, Template] = Field(
        description=f"labels of the event's resource (values are templates); '{RESOURCE_ID}' required"
    )
    related: list[dict[str, Template]] = Field(
        default_factory=list,
        description=f"related resources (values are templates), each with '{RESOURCE_ID}' and "
        f"'{RESOURCE_ROLE}'",
    )
    payload: JsonTemplate = Field(
        default_factory=dict,
        description="the payload: a template rendering to a JSON object, or an object whose string values "
        "are templates",
    )

    @field_validator("resource")
    @classmethod
    def _resource_id(cls, value: dict[str, str]) -> dict[str, str]:
        if not value.get(RESOURCE_ID):
            raise ValueError(f"needs a non-empty '{RESOURCE_ID}' label")
        return value

    @field_validator("related")
    @classmethod
    def _related_ids(cls, value: list[dict[str, str]]) -> list[dict[str, str]]:
        for i, labels in enumerate(value):
            missing = [k for k in (RESOURCE_ID, RESOURCE_ROLE) if not labels.get(k)]
            if missing:
                raise ValueError(f"related[{i}] needs {' and '.join(repr(k) for k in missing)}")
        return value

    @field_validator("payload")
    @classmethod
    def _object(cls, value: Any) -> Any:
        if isinstance(value, list):
            raise ValueError("must be a JSON object (or a template that renders to one), not a list")
        return value


AUTOMATION_ACTIONS = (
    SendNotificationAction,
    CallWebhookAction,
    PauseAutomationAction,
    ResumeAutomationAction,
    EmitEventAction,
)
"""The action models defined here, in the order of the ``Action`` union."""


# --- the loop guard (save time) ------------------------------------------------------------------------


def _counting_triggers(trigger: Any) -> list[Any]:
    """The Reactive event triggers whose single firing fires the automation."""
    kind = getattr(trigger, "type", None)
    if kind == "event":
        return [trigger] if trigger.posture == "Reactive" else []
    if kind == "compound" and trigger.required() == 1:
        return [t for child in trigger.triggers for t in _counting_triggers(child)]
    if kind == "sequence" and len(trigger.triggers) == 1:
        return _counting_triggers(trigger.triggers[0])
    return []


def _literal(labels: dict[str, str]) -> bool:
    return not any(has_template_syntax(v) for v in labels.values())


def _counts(trigger: Any, action: EmitEventAction) -> bool:
    """Whether ``trigger`` surely counts the event ``action`` emits (unknown -> False)."""
    from triggers.patterns import LabelSpec, PatternList

    if has_template_syntax(action.event) or trigger.where:
        return False
    name = action.event
    if trigger.expect and not PatternList(trigger.expect).matches(name):
        return False
    if trigger.after and PatternList(trigger.after).matches(name):
        return False  # an after event arms the key; it is not counted
    if trigger.match:
        if not _literal(action.resource) or not LabelSpec(trigger.match).matches(action.resource):
            return False
    specs = [s for s in trigger.related_specs() if s]
    if specs:
        if not all(_literal(r) for r in action.related):
            return False
        if not all(LabelSpec(spec).matches_any(action.related) for spec in specs):
            return False
    return True


def self_loop_error(trigger: Any, actions: Sequence[tuple[str, Any]]) -> str | None:
    """Why an automation would re-trigger itself without end, or None (the loop guard at save time).

    ``actions`` are ``(location, action)`` pairs of the actions that run when the automation fires
    (``actions`` and ``actions_on_trigger``). The automation is refused when, for one of its Reactive
    triggers, at least ``threshold`` emit-event actions emit an event that trigger surely counts: a
    literal event name its ``expect`` matches (and no ``after`` pattern), on a resource (and related
    resources) its ``match`` (``match_related``) accepts, with no ``where`` clause. Anything not
    certain at save time (templated names, ``where``) is left to the runtime rate limit of the runner.
    run-deployment actions have their own rule (``actions.orchestration_models``, note 3).
    """
    from actions.orchestration_models import run_deployment_loop_error

    counting = _counting_triggers(trigger)
    emitting = [(loc, a) for loc, a in actions if isinstance(a, EmitEventAction)]
    for trig in counting if emitting else ():
        counted = [(loc, a) for loc, a in emitting if _counts(trig, a)]
        if counted and len(counted) >= trig.threshold:
            action = counted[0][1]
            where = ", ".join(loc for loc, _ in counted)
            return (
                f"{where}: emit-event {action.event!r} is counted by this automation's own trigger "
                f"(expect {trig.expect or 'any event'}, threshold {trig.threshold}), so every firing "
                "would fire it again without end; emit another event name, narrow the trigger's "
                "expect or match, or raise its threshold"
            )
    return run_deployment_loop_error(counting, actions)
