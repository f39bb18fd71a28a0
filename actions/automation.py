"""pause-automation / resume-automation: disable or enable an automation through the automation store.

The target (``source``): ``self`` is the automation that fired; ``selected`` is the one named (by name or
id) in ``automation``; ``inferred`` is the automation the triggering event is about — its resource is
``tripwire.automation.<id>`` (e.g. ``tripwire.automation.action.failed`` of another automation), or it has
a related resource with role ``automation``. A target that does not exist, or cannot be inferred, is an
``ActionFailed``. Pausing an automation that is already paused changes nothing and succeeds.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from actions.context import ActionContext
from actions.models import PauseAutomationAction, ResumeAutomationAction
from events.model import RESOURCE_ID, Event
from tripwire.errors import ActionFailed, NotFound

__all__ = ["AUTOMATION_PREFIX", "inferred_automation", "set_automation_enabled"]

AUTOMATION_PREFIX = "tripwire.automation."


def _automation_id(resource_id: str | None) -> UUID | None:
    if not resource_id or not resource_id.startswith(AUTOMATION_PREFIX):
        return None
    try:
        return UUID(resource_id.removeprefix(AUTOMATION_PREFIX))
    except ValueError:
        return None


def inferred_automation(event: Event | None) -> UUID | None:
    """The automation an event is about: its resource, else its first related 'automation'."""
    if event is None:
        return None
    found = _automation_id(event.resource.get(RESOURCE_ID))
    if found is not None:
        return found
    for related in event.related_by_role("automation"):
        found = _automation_id(related.get(RESOURCE_ID))
        if found is not None:
            return found
    return None


async def set_automation_enabled(
    action: PauseAutomationAction | ResumeAutomationAction, ctx: ActionContext
) -> dict[str, Any]:
    """Pause or resume the target; returns its name, id and whether anything changed."""
    enabled = isinstance(action, ResumeAutomationAction)
    target: str | UUID
    if action.source == "self":
        target = ctx.message.automation_id
    elif action.source == "selected":
        assert action.automation is not None  # the model requires it
        target = action.automation
    else:
        event = ctx.template.triggering_event
        inferred = inferred_automation(event)
        if inferred is None:
            what = "no event caused this firing" if event is None else f"event {event.event!r} is not"
            raise ActionFailed(
                f"cannot infer the automation to {'resume' if enabled else 'pause'}: {what} about an "
                f"automation (resource '{AUTOMATION_PREFIX}<id>' or a related 'automation')"
            )
        target = inferred
    try:
        before = await ctx.automations.resolve(target)
        after = await ctx.automations.set_enabled(before.id, enabled)
    except NotFound as exc:
        raise ActionFailed(f"cannot {'resume' if enabled else 'pause'} the automation: {exc}") from None
    return {
        "automation": after.name,
        "automation_id": str(after.id),
        "enabled": after.enabled,
        "changed": before.enabled != after.enabled,
    }
