"""End to end, real processes (engine, workers, flow processes), real Redis and SQLite: automations that
watch orchestration events and act on them.

1. The "stuck run" example (examples/stuck_run/): a Proactive automation "Running but not Completed within
   10 s" cancels the run with ``cancel-flow-run`` (source inferred from the arming Running event); the
   engine's worker stops the flow's process and the run ends Cancelled.
2. The "zombie worker": a worker in its own process is killed with SIGKILL while it runs a flow; its
   heartbeats stop, a Proactive automation on ``tripwire.worker.heartbeat`` fires within about a second
   of its deadline, the scheduler's reaper marks the run Crashed, and the flow's process died with the
   worker.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REPO, RedisServer
from tests.engine import EngineProcess, await_condition, tripwire_env
from tests.orchestration.worker_support import pid_alive
from tests.test_e2e_automations import await_live, cli, firings_of

pytestmark = [pytest.mark.redis, pytest.mark.slow]

EXAMPLE = REPO / "examples" / "stuck_run"
STUCK = "cancel stuck runs"
ZOMBIE = "worker went silent"
FAST = {
    "TRIPWIRE_ORCHESTRATION__WORKER_POLL_S": "0.2",
    "TRIPWIRE_ORCHESTRATION__HEARTBEAT_S": "1",
    "TRIPWIRE_ORCHESTRATION__SCHEDULER_INTERVAL_S": "0.5",
    "TRIPWIRE_ORCHESTRATION__CANCEL_GRACE_S": "2",
    "TRIPWIRE_ORCHESTRATION__WORKER_DEAD_AFTER_S": "3",
}
SERVICES_BUT_THE_WORKER = ["recorder", "evaluator", "firings", "actions", "scheduler"]


@pytest.fixture
def env(tmp_path: Path, redis_server: RedisServer) -> dict[str, str]:
    return tripwire_env(tmp_path, redis_server, **FAST)


def flow_run(engine: EngineProcess, run_id: str) -> dict[str, Any]:
    response = httpx.get(f"{engine.url}/api/flow-runs/{run_id}", timeout=10)
    response.raise_for_status()
    return response.json()


def only_run(engine: EngineProcess, deployment: str) -> dict[str, Any]:
    response = httpx.get(f"{engine.url}/api/flow-runs", params={"deployment": deployment}, timeout=10)
    response.raise_for_status()
    (run,) = response.json()["flow_runs"]
    return run


def events_of(engine: EngineProcess, name: str, resource_id: str) -> list[dict[str, Any]]:
    return [e for e in engine.events_named(name) if e["resource"]["tripwire.resource.id"] == resource_id]


def timestamp(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def in_state(engine: EngineProcess, run_id: str, *states: str) -> bool:
    return flow_run(engine, run_id)["state"] in states


# --- 1. the stuck run -------------------------------------------------------------------------------------


@pytest.fixture
def engine(tmp_path: Path, redis_server: RedisServer, env: dict[str, str]) -> Iterator[EngineProcess]:
    process = EngineProcess(tmp_path, redis_server, env=env)
    yield process
    assert process.stop() == 0, process.log.read_text()


def test_a_stuck_run_is_cancelled_by_a_proactive_automation(engine: EngineProcess, tmp_path: Path) -> None:
    assert "created" in cli(engine.env, "deploy", "-f", str(EXAMPLE / "deployment.yaml"))
    applied = cli(engine.env, "automation", "apply", "-f", str(EXAMPLE / "automation.yaml"))
    assert "live on 1 evaluator(s)" in applied
    pid_file = tmp_path / "stuck.pid"
    cli(engine.env, "deployment", "run", "stuck-run", "-p", f"pid_file={pid_file}")
    run_id = only_run(engine, "stuck-run")["id"]
    resource = f"tripwire.flow-run.{run_id}"

    await_condition(lambda: in_state(engine, run_id, "Running"), "the run to start", log=engine.log)
    await_condition(pid_file.exists, "the flow to write its pid", log=engine.log)
    pid = int(pid_file.read_text())
    assert pid_alive(pid)

    await_condition(lambda: len(firings_of(engine, STUCK)) >= 1, "the firing", timeout_s=30, log=engine.log)
    await_condition(lambda: in_state(engine, run_id, "Cancelled"), "the run to be Cancelled", log=engine.log)
    await_condition(lambda: not pid_alive(pid), "the flow's process to be gone", log=engine.log)

    (fired,) = firings_of(engine, STUCK)
    assert fired["labels"] == {"tripwire.resource.id": resource}
    await_condition(
        lambda: bool(events_of(engine, "tripwire.flow-run.Cancelled", resource)), "the Cancelled event"
    )
    (running,) = events_of(engine, "tripwire.flow-run.Running", resource)
    (cancelling,) = events_of(engine, "tripwire.flow-run.Cancelling", resource)
    assert "cancelled by automation cancel stuck runs" in str(cancelling["payload"])
    deadline = timestamp(fired["occurred"])
    assert abs(deadline - (timestamp(running["occurred"]) + 10)) < 1.0
    lateness = timestamp(fired["recorded_at"]) - deadline
    assert 0 <= lateness < 2.0, f"fired {lateness:.2f}s after its deadline"
    print(f"stuck run: fired {lateness:.3f}s after its deadline")
    assert not events_of(engine, "tripwire.flow-run.Completed", resource)


# --- 2. the zombie worker ---------------------------------------------------------------------------------


class WorkerProcess:
    """``python -m tripwire worker start --pool NAME --name NAME``."""

    def __init__(self, env: dict[str, str], log: Path, pool: str, name: str) -> None:
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tripwire", "worker", "start", "--pool", pool, "--name", name],
                env=env, cwd=log.parent, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def test_a_killed_worker_alerts_on_time_and_its_run_crashes(
    tmp_path: Path, redis_server: RedisServer, env: dict[str, str]
) -> None:
    args = [a for name in SERVICES_BUT_THE_WORKER for a in ("--service", name)]
    engine = EngineProcess(tmp_path, redis_server, *args, env=env)
    worker: WorkerProcess | None = None
    try:
        rule = {
            "name": ZOMBIE,
            "trigger": {
                "type": "event",
                "posture": "Proactive",
                "expect": ["tripwire.worker.heartbeat"],
                "for_each": ["tripwire.resource.id"],
                "within": 10,
            },
            "actions": [{"type": "do-nothing"}],
        }
        created = httpx.post(f"{engine.url}/api/automations", json=rule, timeout=10)
        assert created.status_code == 201, created.text
        await_live(engine.env, 1)
        deployment = tmp_path / "zombie.yaml"
        deployment.write_text(
            f"name: zombie-run\nentrypoint: {EXAMPLE / 'flows.py'}:stuck\nwork_pool: zpool\n"
        )
        cli(engine.env, "deploy", "-f", str(deployment))

        worker = WorkerProcess(engine.env, tmp_path / "worker.log", "zpool", "zombie")
        pid_file = tmp_path / "zombie.pid"
        cli(engine.env, "deployment", "run", "zombie-run", "-p", f"pid_file={pid_file}")
        run_id = only_run(engine, "zombie-run")["id"]
        await_condition(lambda: in_state(engine, run_id, "Running"), "the run to start", log=worker.log)
        await_condition(pid_file.exists, "the flow to write its pid", log=worker.log)
        pid = int(pid_file.read_text())
        beats = "tripwire.worker.heartbeat"
        me = "tripwire.worker.zombie"
        await_condition(lambda: len(events_of(engine, beats, me)) >= 2, "two heartbeats", log=worker.log)

        worker.kill()
        await_condition(lambda: not pid_alive(pid), "the flow's process to die with its worker")
        await_condition(lambda: len(firings_of(engine, ZOMBIE)) >= 1, "the firing", log=engine.log)
        await_condition(lambda: in_state(engine, run_id, "Crashed"), "the run to be Crashed", log=engine.log)
        await_condition(
            lambda: bool(events_of(engine, "tripwire.flow-run.Crashed", f"tripwire.flow-run.{run_id}")),
            "the Crashed event",
        )

        (fired,) = firings_of(engine, ZOMBIE)
        assert fired["labels"] == {"tripwire.resource.id": me}
        last_beat = max(timestamp(e["occurred"]) for e in events_of(engine, beats, me))
        deadline = timestamp(fired["occurred"])
        assert abs(deadline - (last_beat + 10)) < 1.0
        lateness = timestamp(fired["recorded_at"]) - deadline
        assert 0 <= lateness < 2.0, f"fired {lateness:.2f}s after its deadline"
        print(f"zombie worker: fired {lateness:.3f}s after its deadline")
        crashed = flow_run(engine, run_id)
        assert "zombie" in (crashed.get("state_message") or ""), crashed
    finally:
        if worker is not None:
            worker.stop()
        assert engine.stop() == 0, engine.log.read_text()
