"""Run one flow run in this process: ``python -m tripwire.orchestration.execute <flow-run-id>``.

The worker (``tripwire.orchestration.worker``) starts one such process per run it claimed, in the
process's own group, with its settings as ``TRIPWIRE_*`` variables.

1. Setup: read the run, its deployment's entrypoint, load the flow (``flows.load_flow``). Anything missing
   (no such run, no deployment, an entrypoint that does not load) is a setup error: the run is marked
   Failed with a message saying what went wrong, exit code 2.
2. Then ``engine.run_flow(flow, parameters, run=..., reporter=SqlRunReporter)``: the reporter
   (``sql_reporter``) writes the flow run's states in SQL and emits its task runs' events.
3. Exit code from the state the run ended in: 0 Completed, 1 Failed (or anything else final), 2 setup
   error, 3 aborted (the run was cancelled or moved before it could start: nothing ran), 143 terminated.
   If the engine returned without the run reaching a final state (its write failed), the outcome is
   written once more here: Completed when ``run_flow`` returned, Failed when it raised.
4. SIGTERM (the worker cancelling or timing out the run, or stopping) raises ``Terminated`` in the main
   thread, once: the flow's ``finally`` blocks run and the pending events are flushed. With
   ``--parent-pid`` the process also dies with its worker (Linux ``PR_SET_PDEATHSIG``, SIGKILL): when a
   worker dies its runs are declared Crashed, so they must not go on running unseen.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
from collections.abc import Iterator, Sequence
from types import FrameType
from uuid import UUID

from sqlalchemy import select

from tripwire.db import Database
from tripwire.errors import Conflict, NotFound, ValidationFailed
from tripwire.lifeline import die_with_parent
from tripwire.orchestration.reporting import FlowRunInfo, RunAborted
from tripwire.orchestration.runs import FlowRun, FlowRunStore
from tripwire.orchestration.sql_reporter import SqlRunReporter
from tripwire.orchestration.states import State
from tripwire.settings import Settings
from tripwire.tables import deployments

__all__ = [
    "EXIT_ABORTED",
    "EXIT_COMPLETED",
    "EXIT_FAILED",
    "EXIT_SETUP",
    "EXIT_TERMINATED",
    "SetupError",
    "Terminated",
    "main",
]

log = logging.getLogger("tripwire.orchestration.execute")

EXIT_COMPLETED, EXIT_FAILED, EXIT_SETUP, EXIT_ABORTED, EXIT_TERMINATED = 0, 1, 2, 3, 143
CLOSE_TIMEOUT_S = 10.0


class SetupError(Exception):
    """The run cannot start: no such run, no deployment, or its entrypoint does not load."""


class Terminated(BaseException):
    """SIGTERM arrived: the worker is stopping this run (cancelled, timed out, or the worker stops)."""


async def _load(db: Database, store: FlowRunStore, run_id: UUID) -> tuple[FlowRun, str]:
    """The run and its deployment's entrypoint; SetupError naming what is missing."""
    try:
        run = await store.get(run_id)
    except NotFound as exc:
        raise SetupError(str(exc)) from None
    if run.deployment_id is None:
        raise SetupError(f"flow run {run.name} has no deployment: there is no entrypoint to run")
    async with db.read() as conn:
        entrypoint = (
            await conn.execute(select(deployments.c.entrypoint).where(deployments.c.id == run.deployment_id))
        ).scalar()
    if entrypoint is None:
        raise SetupError(f"deployment {run.deployment_id} of flow run {run.name} does not exist")
    return run, entrypoint


def _info(run: FlowRun) -> FlowRunInfo:
    return FlowRunInfo(
        id=run.id,
        name=run.name,
        flow_name=run.flow_name,
        deployment_id=run.deployment_id,
        deployment_name=run.deployment_name,
        work_pool=run.work_pool,
        tags=list(run.tags),
        run_count=run.run_count,
    )


def _exit_code(state: State) -> int:
    if state is State.COMPLETED:
        return EXIT_COMPLETED
    if state in (State.CANCELLING, State.CANCELLED, State.PENDING):
        return EXIT_ABORTED
    return EXIT_FAILED


async def _settle(store: FlowRunStore, run_id: UUID, error: BaseException | None) -> State:
    """The run's final state; writes the outcome if the engine left it Running (note 3)."""
    run = await store.get(run_id)
    if run.state is not State.RUNNING:
        return run.state
    target = State.COMPLETED if error is None else State.FAILED
    message = None if error is None else f"{type(error).__name__}: {error}"
    try:
        run = await store.transition(run_id, target, message=message, expect=[State.RUNNING])
    except Conflict:
        run = await store.get(run_id)
    return run.state


def execute(run_id: UUID, settings: Settings) -> int:
    """Run flow run ``run_id`` here (module notes); returns the exit code."""
    from tripwire.orchestration.engine import run_flow
    from tripwire.orchestration.flows import load_flow

    reporter = SqlRunReporter(settings)
    try:
        reporter.open()
        store = reporter.store
        try:
            run, entrypoint = reporter.call(_load(reporter.db, store, run_id))
            try:
                flow = load_flow(entrypoint)
            except Exception as exc:
                reason = "; ".join(m for _, m in exc.errors) if isinstance(exc, ValidationFailed) else exc
                raise SetupError(f"cannot load flow from entrypoint {entrypoint!r}: {reason}") from exc
        except SetupError as exc:
            log.error("flow run %s cannot start: %s", run_id, exc)
            failed = store.transition(run_id, State.FAILED, message=str(exc), expect=[State.PENDING])
            with contextlib.suppress(Conflict, NotFound):
                reporter.call(failed)
            return EXIT_SETUP
        log.info("running flow run %s (%s) from %s", run.name, run.id, entrypoint)
        error: BaseException | None = None
        try:
            run_flow(flow, dict(run.parameters), run=_info(run), reporter=reporter)
        except RunAborted as exc:
            log.warning("flow run %s not started: %s", run.name, exc)
            return EXIT_ABORTED
        except Exception as exc:
            error = exc
            log.info("flow run %s raised %s: %s", run.name, type(exc).__name__, exc)
        state = reporter.call(_settle(store, run_id, error))
        log.info("flow run %s ended %s", run.name, state)
        return _exit_code(state)
    finally:
        reporter.close(CLOSE_TIMEOUT_S)


@contextlib.contextmanager
def _terminate_on_sigterm() -> Iterator[None]:
    """Raise ``Terminated`` in the main thread on the first SIGTERM; ignore later ones (note 4)."""
    fired = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal fired
        if not fired:
            fired = True
            raise Terminated(f"signal {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tripwire.orchestration.execute", description="Run one flow run in this process."
    )
    parser.add_argument("flow_run_id", type=UUID, help="the id of the flow run")
    parser.add_argument("--parent-pid", type=int, help="die with this process (the worker)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for quiet in ("alembic", "tripwire.db"):  # start-up chatter, once per run
        logging.getLogger(quiet).setLevel(logging.WARNING)
    if args.parent_pid is not None:
        die_with_parent(args.parent_pid, parent="the worker", exit_code=EXIT_TERMINATED)
    try:
        with _terminate_on_sigterm():
            return execute(args.flow_run_id, Settings())
    except Terminated as exc:
        log.warning("flow run %s stopped: %s", args.flow_run_id, exc)
        return EXIT_TERMINATED


if __name__ == "__main__":
    sys.exit(main())
