"""The example: apply "3 failures of one deployment in 10 minutes", then three runs of "etl" fail.

Run it against a running engine (``tripwire server start`` in another terminal):

    python examples/emit_events.py                 # the API at TRIPWIRE_API_URL (default http://127.0.0.1:4242)
    tripwire events ls                             # the events, and the automation's triggered event
    tripwire automation firings "etl keeps failing"

``tripwire server start --with-example`` runs this program once the API answers. It applies
``examples/automations/three_failures.json``, waits until the evaluator uses it, emits the events and
prints the firing they cause.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from events.model import RESOURCE_ID, RESOURCE_NAME, RESOURCE_ROLE, Event
from tripwire.settings import Settings

__all__ = ["example_events", "main"]

AUTOMATION = Path(__file__).resolve().parent / "automations" / "three_failures.json"


def _flow_run_event(state: str, run: int, when: datetime) -> Event:
    return Event(
        event=f"tripwire.flow-run.{state}",
        occurred=when,
        resource={RESOURCE_ID: f"tripwire.flow-run.etl-{run}", RESOURCE_NAME: f"etl-run-{run}"},
        related=[
            {RESOURCE_ID: "tripwire.deployment.etl", RESOURCE_ROLE: "deployment", RESOURCE_NAME: "etl"},
            {RESOURCE_ID: "tripwire.flow.nightly-etl", RESOURCE_ROLE: "flow", RESOURCE_NAME: "nightly-etl"},
        ],
        payload={"attempt": run, "message": "source table missing"}
        if state == "Failed"
        else {"attempt": run},
    )


def example_events(now: datetime, runs: int = 3) -> list[Event]:
    """``runs`` flow runs of deployment etl, each Running then Failed, spread over the last few minutes."""
    events: list[Event] = []
    for run in range(1, runs + 1):
        started = now - timedelta(minutes=2 * (runs - run) + 1)
        events.append(_flow_run_event("Running", run, started))
        events.append(_flow_run_event("Failed", run, started + timedelta(seconds=40)))
    return events


def main(argv: list[str] | None = None) -> int:
    """Send the example events to the API in one batch; print what was sent."""
    settings = Settings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--api-url", default=settings.api_url, help=f"the Tripwire API (default {settings.api_url})"
    )
    args = parser.parse_args(argv)
    headers: dict[str, str] = {}
    if settings.api_key is not None:
        headers["Authorization"] = f"Bearer {settings.api_key.get_secret_value()}"

    api = httpx.Client(base_url=args.api_url.rstrip("/"), headers=headers, timeout=10)
    try:
        applied = api.put("/api/automations/apply", json=json.loads(AUTOMATION.read_text()))
    except httpx.TransportError as exc:
        print(
            f"cannot reach the Tripwire API at {args.api_url} ({exc}): start it with `tripwire server start`"
        )
        return 1
    if applied.status_code != 200:
        print(f"the API refused the automation ({applied.status_code}): {applied.text}")
        return 1
    name = applied.json()["automation"]["name"]
    print(f"automation {name!r}: {applied.json()['status']}")
    _until(lambda: api.get("/api/evaluators").json()["current"], timeout_s=10)

    events = example_events(datetime.now(UTC))
    body: list[dict[str, Any]] = [e.model_dump(mode="json", exclude_none=True) for e in events]
    response = api.post("/api/events", json=body)
    if response.status_code != 202:
        print(f"the API refused the events ({response.status_code}): {response.text}")
        return 1

    print(f"emitted {len(events)} events to {args.api_url}:")
    for event in events:
        deployment = event.label(f"related:deployment:{RESOURCE_NAME}")
        print(
            f"  {event.occurred:%H:%M:%S}  {event.event:<26} {event.resource_id}  (deployment {deployment})"
        )
    print("see them with: tripwire events ls")
    firings_path = f"/api/automations/{name}/firings"
    if _until(lambda: api.get(firings_path).json()["firings"], timeout_s=10):
        for firing in api.get(firings_path).json()["firings"]:
            key = ", ".join(f"{k}={v}" for k, v in firing["labels"].items())
            print(f"{name!r} {firing['kind']} at {firing['occurred']} for {key}")
        print(f'see why with: tripwire automation firings "{name}"')
    else:
        print(f"{name!r} has not fired yet: is the evaluator running? (tripwire server start runs it)")
    return 0


def _until(check: Any, timeout_s: float) -> bool:
    """Poll ``check`` until it is truthy or the time is up."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


if __name__ == "__main__":
    sys.exit(main())
