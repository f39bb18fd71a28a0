"""Actions: the models, sandboxed templates, the action runner service and one module per action family.

The names are loaded on first use (PEP 562): ``triggers.models`` imports ``actions.models`` to build the
``Action`` union, while the runner and the families import ``triggers``; importing them eagerly here
would be circular.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tripwire.lazy import lazy_exports

if TYPE_CHECKING:
    from actions.context import ActionContext, ActionMessage
    from actions.models import (
        CallWebhookAction,
        EmitEventAction,
        PauseAutomationAction,
        ResumeAutomationAction,
        SendNotificationAction,
    )
    from actions.results import ActionResult, ActionResultStore
    from actions.runner import ActionRunnerService
    from actions.templates import TemplateEngine, TemplateLimits, TemplateRenderError, check_template
    from actions.webhook import sign, verify_signature
    from tripwire.errors import ActionFailed

_HOMES = {
    "ActionContext": "actions.context",
    "ActionMessage": "actions.context",
    "CallWebhookAction": "actions.models",
    "EmitEventAction": "actions.models",
    "PauseAutomationAction": "actions.models",
    "ResumeAutomationAction": "actions.models",
    "SendNotificationAction": "actions.models",
    "ActionResult": "actions.results",
    "ActionResultStore": "actions.results",
    "ActionRunnerService": "actions.runner",
    "TemplateEngine": "actions.templates",
    "TemplateLimits": "actions.templates",
    "TemplateRenderError": "actions.templates",
    "check_template": "actions.templates",
    "sign": "actions.webhook",
    "verify_signature": "actions.webhook",
    "ActionFailed": "tripwire.errors",
}

__all__ = [
    "ActionContext",
    "ActionFailed",
    "ActionMessage",
    "ActionResult",
    "ActionResultStore",
    "ActionRunnerService",
    "CallWebhookAction",
    "EmitEventAction",
    "PauseAutomationAction",
    "ResumeAutomationAction",
    "SendNotificationAction",
    "TemplateEngine",
    "TemplateLimits",
    "TemplateRenderError",
    "check_template",
    "sign",
    "verify_signature",
]


__getattr__, __dir__ = lazy_exports("actions", globals(), _HOMES)
