"""Run states and which transitions between them are allowed.

A flow run and a task run move through the same states (DESIGN.md §8). Each transition is announced as
``tripwire.flow-run.<State>`` / ``tripwire.task-run.<State>`` (``tripwire.orchestration.events``).

- Scheduled: created for a time (by the scheduler, ``deployment run``, or ``run-deployment``); also
  the state of a task run waiting for its next retry (payload ``retry``).
- Late: a scheduled flow run not started within the grace period; still run when a worker is free.
- Pending: claimed by a worker (flow run) or submitted (task run), not yet running.
- Running, Completed, Failed; Crashed: the process running it died or the worker stopped heartbeating.
- Cancelling: cancellation asked, the worker stops the process; then Cancelled.
- Paused: a flow run held; it goes back to Scheduled (resume) or to Cancelled.

Completed, Failed, Crashed and Cancelled are final: nothing leaves them except an explicit, forced
state change (``change-flow-run-state`` with ``force``).
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["ALLOWED", "CLAIMABLE", "FINAL", "State", "can_move"]


class State(StrEnum):
    SCHEDULED = "Scheduled"
    LATE = "Late"
    PENDING = "Pending"
    RUNNING = "Running"
    COMPLETED = "Completed"
    FAILED = "Failed"
    CRASHED = "Crashed"
    CANCELLING = "Cancelling"
    CANCELLED = "Cancelled"
    PAUSED = "Paused"

    @property
    def final(self) -> bool:
        return self in FINAL


FINAL = frozenset({State.COMPLETED, State.FAILED, State.CRASHED, State.CANCELLED})
CLAIMABLE = frozenset({State.SCHEDULED, State.LATE})
"""States a worker may claim a flow run from (when its scheduled time has come)."""

_ANY_ACTIVE = frozenset(State) - FINAL

ALLOWED: dict[State, frozenset[State]] = {
    State.SCHEDULED: frozenset({State.PAUSED, State.PENDING, State.RUNNING}),  # resumed; retry; released
    State.LATE: frozenset({State.SCHEDULED}),
    State.PENDING: CLAIMABLE | {State.PAUSED},
    State.RUNNING: frozenset({State.PENDING, State.SCHEDULED, State.PAUSED}),
    State.COMPLETED: frozenset({State.RUNNING}),
    State.FAILED: frozenset({State.RUNNING, State.PENDING}),
    State.CRASHED: frozenset({State.PENDING, State.RUNNING, State.CANCELLING}),
    State.CANCELLING: frozenset({State.PENDING, State.RUNNING, State.PAUSED}),
    State.CANCELLED: _ANY_ACTIVE,
    State.PAUSED: frozenset({State.RUNNING, State.SCHEDULED, State.LATE}),
}
"""target state -> the states a run may move to it from (without ``force``)."""


def can_move(current: State, target: State) -> bool:
    """Whether a run in ``current`` may move to ``target`` without forcing it."""
    return current in ALLOWED[target]
