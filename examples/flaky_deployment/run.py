"""A flaky deployment fails 3 times: its schedule is paused and Slack is told; resuming brings runs back.

    python examples/flaky_deployment/run.py

What it does, with the real engine (``tripwire server start``: API, recorder, evaluator, firings, actions,
scheduler and a worker of the ``default`` pool) as a subprocess and the ``tripwire`` command for the rest:

1. starts a local Slack receiver (``local_slack.py``; no workspace needed) and the engine, whose Slack
   plugin sends there;
2. ``tripwire block create slack-webhook/data-team`` (the URL read from a variable, stored encrypted),
   ``tripwire automation apply -f automation.yaml`` and ``tripwire deploy -f deployment.yaml``: the flow
   ``sync-orders`` (``flows.py``, it always fails) every 2 seconds;
3. waits for the alert: after the third failure the automation pauses the schedule (``pause-schedule``,
   inferred from the failing run) and posts to Slack;
4. shows the runs and the paused schedule, then ``tripwire deployment schedule resume flaky-orders 0``
   and waits for the scheduler to create runs again.

Redis and the database come from the usual ``TRIPWIRE_*`` settings; the data goes to a temporary
directory unless ``--home`` is given. The engine's log is ``<home>/server.log``.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from local_slack import SlackReceiver

__all__ = ["DEPLOYMENT", "main", "run"]

HERE = Path(__file__).resolve().parent
DEPLOYMENT = "flaky-orders"
SLACK_URL = "https://hooks.slack.com/services/T0DEMO/B0DEMO/DemoToken000000000000000"
SETTINGS = {
    "TRIPWIRE_ORCHESTRATION__SCHEDULER_INTERVAL_S": "0.5",
    "TRIPWIRE_ORCHESTRATION__WORKER_POLL_S": "0.5",
    "TRIPWIRE_ORCHESTRATION__WORKER_CONCURRENCY": "1",  # one run at a time: an easy story to follow
    "TRIPWIRE_STREAMS__BLOCK_MS": "100",
    "COLUMNS": "160",  # room for the tables the CLI prints
}


class Demo:
    """The engine subprocess and the ``tripwire`` command, sharing one environment."""

    def __init__(self, home: Path, slack: SlackReceiver) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.env = {**SETTINGS, **os.environ, "TRIPWIRE_HOME": str(home), "TRIPWIRE_API_URL": self.url}
        self.env["DEMO_SLACK_URL"] = SLACK_URL
        self.log = home / "server.log"
        home.mkdir(parents=True, exist_ok=True)
        launcher = [sys.executable, str(HERE / "local_slack.py"), slack.url]  # tripwire, Slack sent locally
        command = [*launcher, "server", "start", "--port", str(port)]
        with self.log.open("wb") as out:
            self.engine = subprocess.Popen(
                command,
                env=self.env, cwd=home, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def tripwire(self, *args: str) -> str:
        command = [sys.executable, "-m", "tripwire", *args]
        result = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"tripwire {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
        return result.stdout

    def get(self, path: str, **params: Any) -> Any:
        response = httpx.get(f"{self.url}{path}", params=params, timeout=10)
        response.raise_for_status()
        return response.json()

    def healthy(self) -> bool:
        if self.engine.poll() is not None:
            raise RuntimeError(f"the engine exited with {self.engine.returncode}:\n{self.log.read_text()}")
        try:
            return httpx.get(f"{self.url}/health", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def schedule(self) -> dict[str, Any]:
        return dict(self.get(f"/api/deployments/{DEPLOYMENT}")["schedules"][0])

    def runs(self) -> list[dict[str, Any]]:
        return list(self.get("/api/flow-runs", deployment=DEPLOYMENT, limit=500)["flow_runs"])

    def stop(self) -> None:
        if self.engine.poll() is None:
            self.engine.send_signal(signal.SIGTERM)
            try:
                self.engine.wait(30)
            except subprocess.TimeoutExpired:
                self.engine.kill()
                self.engine.wait()


def wait_for(check: Callable[[], bool], what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout_s:g} s")
        time.sleep(0.1)


def run(home: Path, timeout_s: float) -> int:
    with SlackReceiver() as slack:
        demo = Demo(home, slack)
        try:
            wait_for(demo.healthy, "the engine answering /health", timeout_s)
            print(f"engine up at {demo.url} (log: {demo.log})")
            # the webhook URL is a secret: from a variable, never on the command line
            block = ("slack-webhook/data-team", "--secret-env", "url=DEMO_SLACK_URL")
            print(demo.tripwire("block", "create", *block))
            print(demo.tripwire("automation", "apply", "-f", str(HERE / "automation.yaml")))
            print(demo.tripwire("deploy", "-f", str(HERE / "deployment.yaml")))

            wait_for(lambda: bool(slack.received), "the Slack alert", timeout_s)
            path, _ = slack.received[0]
            print(f"Slack received POST {path}:\n  {slack.messages()[0]}\n")

            # the automation's actions run concurrently: the alert may come just before the pause
            wait_for(lambda: not demo.schedule()["schedule"]["active"], "the schedule's pause", timeout_s)
            schedule = demo.schedule()
            print(f"schedule {schedule['position']} ({schedule['summary']}) of {DEPLOYMENT} is paused")
            runs = demo.runs()
            failed = sum(r["state"] == "Failed" for r in runs)
            print(f"{DEPLOYMENT} has {len(runs)} run(s), {failed} Failed:")
            print(demo.tripwire("flow-run", "ls", "--deployment", DEPLOYMENT))

            before = {r["id"] for r in runs}
            print(demo.tripwire("deployment", "schedule", "resume", DEPLOYMENT, "0"))
            wait_for(lambda: bool({r["id"] for r in demo.runs()} - before), "a new run", timeout_s)
            new = [r for r in demo.runs() if r["id"] not in before]
            print(f"runs are back: {len(new)} new run(s) of {DEPLOYMENT}, the first scheduled for "
                  f"{min(r['scheduled_time'] for r in new)}")  # fmt: skip
            return 0 if failed >= 3 else 1
        except (TimeoutError, RuntimeError) as exc:
            print(f"{exc}\n--- engine log ---\n{demo.log.read_text()}", file=sys.stderr)
            return 1
        finally:
            demo.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="Tripwire home (default: a temporary directory)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for each step")
    args = parser.parse_args()
    if args.home is not None:
        return run(args.home, args.timeout)
    with tempfile.TemporaryDirectory(prefix="tripwire-example-") as home:
        return run(Path(home), args.timeout)


if __name__ == "__main__":
    sys.exit(main())
