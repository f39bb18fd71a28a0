"""emit-event: render an event and put it on the event stream (chaining automations).

The event's id is ``uuid5(NAMESPACE_URL, "tripwire:emit:<idempotency key>")``: a retry or redelivery emits
the same id, which the recorder and the evaluator take once. It ``follows`` the triggering event (none for
a proactive firing). An event the engine refuses (a limit, an empty resource id after rendering) is an
``ActionFailed`` naming the field; the payload must render to a JSON object.
"""

from __future__ import annotations

from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from actions.context import ActionContext
from actions.models import EmitEventAction
from tripwire.errors import ActionFailed, EventRejected

__all__ = ["emit_event", "emitted_event_id"]


def emitted_event_id(idempotency_key: str) -> UUID:
    """The id of the event an emit-event action emits for this action message."""
    return uuid5(NAMESPACE_URL, f"tripwire:emit:{idempotency_key}")


async def emit_event(action: EmitEventAction, ctx: ActionContext) -> dict[str, Any]:
    """Emit the rendered event; returns its id and name."""
    name = await ctx.render("event", action.event)
    resource = {k: await ctx.render(f"resource.{k}", v) for k, v in action.resource.items()}
    related = [
        {k: await ctx.render(f"related[{i}].{k}", v) for k, v in labels.items()}
        for i, labels in enumerate(action.related)
    ]
    payload = await ctx.render_json("payload", action.payload)
    if not isinstance(payload, dict):
        raise ActionFailed(f"payload rendered to {type(payload).__name__}, not a JSON object")
    triggering = ctx.template.triggering_event
    fields: dict[str, Any] = {
        "id": emitted_event_id(ctx.key),
        "event": name.strip(),
        "resource": resource,
        "related": related,
        "payload": payload,
        "follows": None if triggering is None else triggering.id,
    }
    try:
        event = await ctx.emitter.emit_event(**fields)
    except EventRejected as exc:
        raise ActionFailed(f"the event was refused: {exc}") from None
    return {"event_id": str(event.id), "event": event.event}
