"""Child processes running one service: ``tripwire server start --evaluator-processes N``.

``ServiceProcesses`` is a Service (``tripwire.services``) that keeps ``count`` children running, each
``python -m tripwire services run <service> --no-embedded-redis --parent-pid <this pid>``:

1. Environment: given by the caller (``runner.running``: ``child_environment`` of the settings in use and
   the Redis URL actually resolved, possibly a private server's, which is why ``--no-embedded-redis``).
2. Each child is in its own session (a Ctrl-C meant for the server does not reach it: the server stops
   it in order) and dies with the server even when the server is SIGKILLed (``--parent-pid``:
   ``tripwire.lifeline``). stdout and stderr are the server's.
3. A child that exits while not asked to is logged as an error with its exit status and started again
   after a backoff: 1 s, doubling up to 30 s; back to 1 s after a child ran longer than the longest wait.
4. ``stop()``: SIGTERM to every child, up to ``grace_s`` (10 s) for them to stop, then SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Mapping

from tripwire.orchestration.processes import describe_exit
from tripwire.services import ServiceState

__all__ = ["ServiceProcesses"]

logger = logging.getLogger(__name__)


class ServiceProcesses:
    """``count`` child processes each running the service ``service`` (module notes)."""

    def __init__(
        self,
        service: str,
        count: int,
        env: Mapping[str, str],
        *,
        python: str = sys.executable,
        backoff_s: float = 1.0,
        backoff_max_s: float = 30.0,
        grace_s: float = 10.0,
    ) -> None:
        self.name = f"{service}-processes"
        self.service = service
        self.count = count
        self.grace_s = grace_s
        self._env = dict(env)
        self._python = python
        self._backoff_s = backoff_s
        self._backoff_max_s = backoff_max_s
        self._state = ServiceState.CREATED
        self._procs: dict[int, asyncio.subprocess.Process] = {}  # slot -> its current process
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    @property
    def state(self) -> ServiceState:
        return self._state

    @property
    def pids(self) -> list[int]:
        """The pids of the children now running."""
        return [p.pid for p in self._procs.values() if p.returncode is None]

    async def start(self) -> None:
        try:
            for slot in range(self.count):
                self._procs[slot] = await self._spawn(slot)
        except BaseException:
            self._state = ServiceState.FAILED
            await self._terminate()
            raise
        self._tasks = [
            asyncio.create_task(self._supervise(slot), name=f"{self.name}-{slot}")
            for slot in range(self.count)
        ]
        self._state = ServiceState.RUNNING

    async def stop(self) -> None:
        if self._state in (ServiceState.STOPPED, ServiceState.CREATED):
            self._state = ServiceState.STOPPED
            return
        self._state = ServiceState.STOPPING
        self._stopping.set()
        for task in self._tasks:  # no restart from here on (a start under way is undone by its cancel)
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._terminate()
        self._state = ServiceState.STOPPED

    async def _spawn(self, slot: int) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            self._python, "-m", "tripwire", "services", "run", self.service, "--no-embedded-redis",
            "--parent-pid", str(os.getpid()),
            env=self._env, stdin=asyncio.subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        logger.info("started %s process %d (pid %s)", self.service, slot + 1, proc.pid)
        return proc

    async def _supervise(self, slot: int) -> None:
        """Wait for the slot's process; when it exits unasked, start another after the backoff (note 3)."""
        loop = asyncio.get_running_loop()
        backoff = self._backoff_s
        proc: asyncio.subprocess.Process | None = self._procs[slot]
        started = loop.time()
        while True:
            if proc is not None:
                code = await proc.wait()
                if self._stopping.is_set():
                    return
                if loop.time() - started >= self._backoff_max_s:
                    backoff = self._backoff_s  # it ran a good while: a fresh failure, not a crash loop
                logger.error(
                    "%s process %d (pid %s) stopped unexpectedly: %s; starting another in %gs",
                    self.service, slot + 1, proc.pid, describe_exit(code), backoff,
                )  # fmt: skip
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), backoff)
            if self._stopping.is_set():
                return
            backoff = min(backoff * 2, self._backoff_max_s)
            try:
                proc = self._procs[slot] = await self._spawn(slot)
            except OSError:
                logger.exception(
                    "could not start %s process %d; trying again in %gs", self.service, slot + 1, backoff
                )
                proc = None
            started = loop.time()

    async def _terminate(self) -> None:
        """SIGTERM every child, wait up to ``grace_s``, then SIGKILL the ones left (note 4)."""
        alive = [p for p in self._procs.values() if p.returncode is None]
        for proc in alive:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in alive)), self.grace_s)
        except TimeoutError:
            left = [p for p in alive if p.returncode is None]
            logger.error(
                "%d %s process(es) still running after %gs: SIGKILL", len(left), self.service, self.grace_s
            )
        finally:  # also when cancelled: no child outlives this
            for proc in alive:
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
            await asyncio.gather(*(p.wait() for p in alive), return_exceptions=True)
        for proc in alive:
            logger.info(
                "stopped %s process (pid %s): %s", self.service, proc.pid, describe_exit(proc.returncode)
            )
