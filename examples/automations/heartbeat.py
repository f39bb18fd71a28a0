"""Automations in Python: the same models as the JSON/YAML files, collected from `automations`.

Apply them with:  tripwire automation apply -f examples/automations/heartbeat.py
Run this file to print them as JSON (the documents the API stores).
"""

from __future__ import annotations

import json

from triggers.models import Automation, DoNothingAction, EventTrigger

# Reactive: the same rule as three_failures.json / three_failures.yaml.
three_failures = Automation(
    name="etl keeps failing",
    description="3 failures of one deployment within 10 minutes",
    tags=["example"],
    trigger=EventTrigger(
        expect=["tripwire.flow-run.Failed"],
        match_related={"tripwire.resource.role": "deployment"},
        for_each=["related:deployment:tripwire.resource.id"],
        posture="Reactive",
        threshold=3,
        within=600,
    ),
    actions=[DoNothingAction()],
    actions_on_resolve=[DoNothingAction()],
)

# Proactive: no heartbeat from a worker for 5 minutes; resolved when the next heartbeat arrives.
no_heartbeat = Automation(
    name="worker went quiet",
    description="no heartbeat from a worker for 5 minutes",
    tags=["example"],
    trigger=EventTrigger(
        expect=["tripwire.worker.heartbeat"],
        for_each=["tripwire.resource.id"],
        posture="Proactive",
        threshold=1,
        within=300,
    ),
    actions=[DoNothingAction()],
    actions_on_resolve=[DoNothingAction()],
)

automations = [three_failures, no_heartbeat]

if __name__ == "__main__":
    print(json.dumps([a.model_dump(mode="json", exclude={"id"}) for a in automations], indent=2))
