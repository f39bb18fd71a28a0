"""``tripwire server start --evaluator-processes 2``, real processes on the private Redis: the server's
evaluator and one child share the stream (no firing lost or doubled), the child dies with a SIGKILLed
server, and a SIGKILLed child is started again."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from tests.conftest import REPO, RedisServer
from tests.engine import EngineProcess, await_condition, tripwire_env
from tests.test_e2e_automations import (
    KEY,
    NAME,
    THREE_FAILURES,
    Streams,
    cli,
    failure,
    firings_of,
    post_events,
)
from tripwire.settings import Settings

pytestmark = [pytest.mark.redis, pytest.mark.slow]


@pytest.fixture
def engine(tmp_path: Path, redis_server: RedisServer) -> Iterator[EngineProcess]:
    # PYTHONPATH: the processes (and their children) run this checkout, whichever one is pip-installed
    env = tripwire_env(tmp_path, redis_server, TRIPWIRE_STREAMS__RECLAIM_IDLE_MS="1000", PYTHONPATH=str(REPO))
    process = EngineProcess(tmp_path, redis_server, "--evaluator-processes", "2", env=env)
    yield process
    process.stop()


def evaluator_pids(engine: EngineProcess) -> set[int]:
    """The pids of the evaluators reporting as running (consumer names are ``<host>-<pid>``)."""
    response = httpx.get(f"{engine.url}/api/evaluators", timeout=5)
    response.raise_for_status()
    return {int(name.rsplit("-", 1)[1]) for name in response.json()["evaluators"]}


def process_status(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, None once it is gone (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    state, ppid = stat.rsplit(")", 1)[1].split()[:2]
    return None if state in ("Z", "X") else (state, int(ppid))


def children_of(engine: EngineProcess, pids: set[int]) -> set[int]:
    return {p for p in pids if (status := process_status(p)) is not None and status[1] == engine.proc.pid}


def await_two_evaluators(engine: EngineProcess, without: frozenset[int] = frozenset()) -> int:
    """Wait until the server's evaluator and one child (not in ``without``) report; the child's pid."""
    found: list[int] = []

    def two() -> bool:
        pids = evaluator_pids(engine)
        child = children_of(engine, pids - without)
        if len(pids) == 2 and engine.proc.pid in pids and len(child) == 1:
            found[:] = child
            return True
        return False

    await_condition(two, "the server's evaluator and one child evaluator to report", log=engine.log)
    return found[0]


def test_two_evaluator_processes_fire_once_per_resource(engine: EngineProcess) -> None:
    child = await_two_evaluators(engine)
    applied = cli(engine.env, "automation", "apply", "-f", str(THREE_FAILURES))
    assert "live on 2 evaluator(s)" in applied, applied
    streams = Streams(engine.env)
    resources = [f"d{i}" for i in range(60)]
    for n in range(3):
        for i in range(0, len(resources), 5):  # many small batches so both evaluators take part
            post_events(engine, [failure(d, n) for d in resources[i : i + 5]])
    post_events(engine, [failure(d, 0) for d in resources[:10]])  # a 4th failure fires nothing more
    await_condition(
        lambda: len(firings_of(engine, NAME)) >= len(resources), "one firing each", log=engine.log
    )
    await_condition(streams.all_drained, "the evaluators and the relay to drain", log=engine.log)

    keys = [f["labels"][KEY] for f in firings_of(engine, NAME)]
    assert sorted(keys) == sorted(resources)  # none lost, none doubled
    consumers = {
        c["name"].decode()
        for c in streams.client.xinfo_consumers(streams.settings.streams.events, "evaluator")
    }
    assert {int(c.rsplit("-", 1)[1]) for c in consumers} >= {engine.proc.pid, child}


def test_the_child_evaluator_dies_with_a_sigkilled_server(engine: EngineProcess) -> None:
    child = await_two_evaluators(engine)
    os.kill(engine.proc.pid, signal.SIGKILL)
    engine.proc.wait()
    await_condition(lambda: process_status(child) is None, f"the child evaluator (pid {child}) to die", 10)


def test_a_sigkilled_child_evaluator_is_started_again(engine: EngineProcess) -> None:
    first = await_two_evaluators(engine)
    os.kill(first, signal.SIGKILL)
    second = await_two_evaluators(engine, without=frozenset({first}))  # the dead one stops counting after 5 s
    assert second != first
    assert "stopped unexpectedly: process killed by signal SIGKILL" in engine.log.read_text()
    assert engine.stop() == 0, engine.log.read_text()
    await_condition(lambda: process_status(second) is None, "the child to stop with the server", 5)


def test_the_setting_comes_from_the_environment_and_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(_env_file=None).evaluator_processes == 1
    monkeypatch.setenv("TRIPWIRE_EVALUATOR_PROCESSES", "3")
    assert Settings(_env_file=None).evaluator_processes == 3
    for wrong in (0, 65):
        with pytest.raises(ValidationError):
            Settings(_env_file=None, evaluator_processes=wrong)
