"""send-notification: render a subject and a body and send them through a notification block with apprise.

1. The block (slack-webhook, email, apprise) gives its apprise URLs (``apprise_urls()``), the only place
   they exist in clear; they are added to a fresh ``apprise.Apprise`` for this one message.
2. apprise 2.x returns an ``AppriseResult`` (TECHNOTES §5): true when every target accepted. apprise
   reports no status codes, so a failed delivery (a 5xx, a refused connection, a 404 alike) is treated as
   retryable: ``NotificationFailed`` with apprise's warnings as the reason, retried by the runner and
   dead-lettered at the end. A block that is missing, cannot send notifications, or whose URL apprise does
   not understand is an ``ActionFailed`` at once.
3. Reasons and logs never hold a secret: apprise's messages are scrubbed of every secret of the block (and
   of the URLs' token parts). apprise itself logs the full target URL at DEBUG level, so the runner keeps
   the ``apprise`` logger at INFO or above (``actions.runner.quiet_loggers``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import apprise

from actions.context import ActionContext
from actions.models import SendNotificationAction
from tripwire.errors import ActionFailed

__all__ = ["NotificationFailed", "send_notification"]

MAX_REASON_CHARS = 500
FORMATS = {
    "text": apprise.NotifyFormat.TEXT,
    "markdown": apprise.NotifyFormat.MARKDOWN,
    "html": apprise.NotifyFormat.HTML,
}


class NotificationFailed(Exception):
    """apprise could not deliver to every target (retryable, note 2)."""


def _failures(result: Any, scrub: Callable[[str], str]) -> str:
    lines = []
    for target in result:
        if bool(target):
            continue
        messages = [e.message for e in target.logs() if e.level in ("WARNING", "ERROR", "CRITICAL")]
        detail = "; ".join(dict.fromkeys(m.strip() for m in messages if m.strip())) or target.status.name
        lines.append(f"{target.name}: {detail}")
    if not lines:
        lines.append(result.status.name)
    return scrub(" | ".join(lines))[:MAX_REASON_CHARS]


async def send_notification(action: SendNotificationAction, ctx: ActionContext) -> dict[str, Any]:
    """Send one notification; returns which services received it."""
    subject = await ctx.render("subject", action.subject)
    body = await ctx.render("body", action.body)
    block = await ctx.block(action.block)
    urls = getattr(block, "apprise_urls", None)
    if not callable(urls):
        raise ActionFailed(
            f"block {action.block!r} cannot send notifications; use a slack-webhook, email or apprise block"
        )
    sender = apprise.Apprise()
    for i, url in enumerate(urls()):
        if not sender.add(url):
            raise ActionFailed(f"block {action.block!r}: apprise does not understand its URL #{i + 1}")
    result = await sender.async_notify(
        title=subject, body=body, body_format=FORMATS[action.format], log_level=logging.WARNING
    )
    services = [target.name for target in result]
    if not result:
        failed = result.failed_count if services else len(urls())
        raise NotificationFailed(
            f"apprise could not deliver through {action.block!r} ({failed} of {len(services) or failed} "
            f"failed): {_failures(result, ctx.scrub)}"
        )
    return {"block": action.block, "services": services, "subject": subject[:200]}
