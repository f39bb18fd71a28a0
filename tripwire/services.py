"""The Service protocol shared by every long-running part (recorder, evaluator, action runner, ...)."""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

__all__ = ["Service", "ServiceState"]


class ServiceState(StrEnum):
    CREATED = "created"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


class Service(Protocol):
    """A long-running part with explicit start/stop; ``state`` is reported by ``GET /health``."""

    name: str

    @property
    def state(self) -> ServiceState: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...
