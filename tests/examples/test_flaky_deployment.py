"""The headline example end to end (examples/flaky_deployment/): real engine subprocess (API, recorder,
evaluator, firings, actions, scheduler, worker), real Redis, SQLite, the ``tripwire`` CLI.

A deployment of a flow that always fails, scheduled every 2 s, fails 3 times; the automation "3 failures
of a deployment within 10 minutes" pauses that deployment's schedule (``pause-schedule``, inferred) and
sends one Slack-format alert to a local receiver (apprise's real Slack plugin). No further runs are made
while the scheduler keeps ticking; resuming the schedule through the CLI brings runs back.

Proof that the scheduler ticked while the flaky schedule was paused: a second deployment (``canary``, on
a pool no worker serves, so its runs never start) gets its runs from the same scheduler; after the
snapshot of the flaky deployment's runs the test waits for 3 more canary runs, which only ticks at least
3 s (15 scheduler intervals, more than one flaky interval) later can have created.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import REPO, RedisServer
from tests.engine import EngineProcess, await_condition, tripwire_env

pytestmark = [pytest.mark.redis, pytest.mark.slow]

EXAMPLE = REPO / "examples" / "flaky_deployment"
DEPLOYMENT = "flaky-orders"
SLACK_URL = "https://hooks.slack.com/services/T0TEST/B0TEST/TestToken0000000000000000"
FAST = {
    "TRIPWIRE_ORCHESTRATION__SCHEDULER_INTERVAL_S": "0.2",
    "TRIPWIRE_ORCHESTRATION__WORKER_POLL_S": "0.2",
    "TRIPWIRE_ORCHESTRATION__HEARTBEAT_S": "0.5",
    "TRIPWIRE_ORCHESTRATION__LOOKAHEAD_S": "2",
    "TRIPWIRE_ORCHESTRATION__MIN_SCHEDULED_RUNS": "1",
    "TRIPWIRE_ORCHESTRATION__MAX_SCHEDULED_RUNS": "3",
    "TRIPWIRE_ORCHESTRATION__LATE_AFTER_S": "60",
    "TRIPWIRE_ORCHESTRATION__WORKER_CONCURRENCY": "1",
    "TRIPWIRE_STREAMS__BLOCK_MS": "50",
}
UNFINISHED = {"Scheduled", "Late", "Pending", "Running", "Cancelling", "Paused"}


def _local_slack() -> ModuleType:
    """examples/flaky_deployment/local_slack.py (the examples are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("flaky_local_slack", EXAMPLE / "local_slack.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tripwire(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "tripwire", *args], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"tripwire {' '.join(args)}:\n{result.stdout}{result.stderr}"
    return result.stdout


class Api:
    def __init__(self, engine: EngineProcess) -> None:
        self.engine = engine

    def get(self, path: str, **params: Any) -> Any:
        response = httpx.get(f"{self.engine.url}{path}", params=params, timeout=10)
        response.raise_for_status()
        return response.json()

    def runs(self, deployment: str) -> list[dict[str, Any]]:
        return list(self.get("/api/flow-runs", deployment=deployment, limit=500)["flow_runs"])

    def schedule_active(self, deployment: str) -> bool:
        return bool(self.get(f"/api/deployments/{deployment}")["schedules"][0]["schedule"]["active"])

    def firings(self, automation: str) -> list[dict[str, Any]]:
        return list(self.get(f"/api/automations/{automation}/firings")["firings"])


def test_three_failures_pause_the_schedule_alert_once_and_resume_brings_runs_back(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    canary = tmp_path / "canary.yaml"
    canary.write_text(
        yaml.safe_dump(
            {"name": "canary", "entrypoint": f"{EXAMPLE / 'flows.py'}:sync_orders", "work_pool": "nobody",
             "schedules": [{"interval": 1}]}
        )
    )  # fmt: skip
    automation = yaml.safe_load((EXAMPLE / "automation.yaml").read_text())["name"]
    env = tripwire_env(tmp_path, redis_server, DEMO_SLACK_URL=SLACK_URL, **FAST)
    with _local_slack().SlackReceiver() as slack:
        engine = EngineProcess(
            tmp_path, redis_server, env=env, launcher=[str(EXAMPLE / "local_slack.py"), slack.url]
        )
        api = Api(engine)
        env = engine.env  # with TRIPWIRE_API_URL: the CLI talks to this engine
        try:
            tripwire(env, "block", "create", "slack-webhook/data-team", "--secret-env", "url=DEMO_SLACK_URL")
            assert "live on 1 evaluator(s)" in tripwire(
                env, "automation", "apply", "-f", str(EXAMPLE / "automation.yaml")
            )
            tripwire(env, "deploy", "-f", str(canary))
            deployed = tripwire(env, "deploy", "-f", str(EXAMPLE / "deployment.yaml"))
            assert f"created   {DEPLOYMENT} (version 1, 1 schedule(s)" in deployed

            await_condition(lambda: bool(slack.received), "no Slack alert", 60, engine.log)
            await_condition(
                lambda: not api.schedule_active(DEPLOYMENT), "the schedule was not paused", 30, engine.log
            )
            await_condition(
                lambda: any(
                    [a["status"] for a in f["actions"]] == ["succeeded", "succeeded"]
                    for f in api.firings(automation)
                ),
                "the firing's two actions did not succeed",
                30,
                engine.log,
            )
            # runs that had started before the pause end (Failed); nothing unstarted is left
            await_condition(
                lambda: not any(r["state"] in UNFINISHED for r in api.runs(DEPLOYMENT)),
                "runs of the paused deployment are still unfinished",
                30,
                engine.log,
            )
            snapshot = {r["id"]: r["state"] for r in api.runs(DEPLOYMENT)}
            canary_before = len(api.runs("canary"))
            await_condition(
                lambda: len(api.runs("canary")) >= canary_before + 3,
                "the scheduler did not tick (no new canary runs)",
                30,
                engine.log,
            )
            after = {r["id"]: r["state"] for r in api.runs(DEPLOYMENT)}
            assert after == snapshot, "the paused schedule still made runs"
            assert sum(state == "Failed" for state in after.values()) >= 3
            listed = json.loads(tripwire(env, "flow-run", "ls", "--deployment", DEPLOYMENT, "--json"))
            assert {r["id"] for r in listed} == set(snapshot)

            [firing] = api.firings(automation)
            assert [a["type"] for a in firing["actions"]] == ["pause-schedule", "send-notification"]
            assert len(slack.received) == 1
            path, _ = slack.received[0]
            assert path == "/services/T0TEST/B0TEST/TestToken0000000000000000"
            [message] = slack.messages()
            assert f":rotating_light: deployment {DEPLOYMENT} failed 3 times within 10 minutes" in message
            assert f"tripwire deployment schedule resume {DEPLOYMENT} 0" in message
            [paused] = engine.events_named("tripwire.schedule.paused")
            names = {r.get("tripwire.resource.name") for r in paused["related"]}
            assert DEPLOYMENT in names, paused

            resumed = tripwire(env, "deployment", "schedule", "resume", DEPLOYMENT, "0")
            assert f"{DEPLOYMENT} schedule 0 (every 2s) is active" in resumed
            assert api.schedule_active(DEPLOYMENT)
            await_condition(
                lambda: bool({r["id"] for r in api.runs(DEPLOYMENT)} - set(snapshot)),
                "resuming the schedule brought no new runs",
                30,
                engine.log,
            )
        finally:
            engine.stop()


def test_the_example_program_runs(tmp_path: Path, redis_server: RedisServer) -> None:
    env = tripwire_env(tmp_path, redis_server, TRIPWIRE_STREAMS__BLOCK_MS="50")
    del env["TRIPWIRE_HOME"], env["TRIPWIRE_DATABASE_URL"]  # the example's own: under --home
    result = subprocess.run(
        [sys.executable, str(EXAMPLE / "run.py"), "--home", str(tmp_path / "home")],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=150,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "Slack received POST /services/T0DEMO/B0DEMO/" in out
    assert f":rotating_light: deployment {DEPLOYMENT} failed 3 times within 10 minutes" in out
    assert f"schedule 0 (every 2s) of {DEPLOYMENT} is paused" in out
    assert f"{DEPLOYMENT} schedule 0 (every 2s) is active" in out
    assert "runs are back:" in out
