"""The flaky flow of the example: it always fails, the way a flow does while its upstream is down.

Deployed by ``deployment.yaml`` (every 2 seconds on the ``default`` work pool); each run ends Failed
and emits ``tripwire.flow-run.Failed``, which ``automation.yaml`` counts.
"""

from __future__ import annotations

from tripwire.orchestration.flows import flow

__all__ = ["sync_orders"]


@flow(name="sync-orders")
def sync_orders(source: str = "https://orders.example.com/api") -> int:
    """Fetch the new orders (here: fail like an unreachable upstream, deterministically)."""
    raise ConnectionError(f"{source} is not answering")
