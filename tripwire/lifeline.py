"""Die with the parent process: for children that must not outlive the process that started them.

``die_with_parent(pid)`` asks Linux (``PR_SET_PDEATHSIG``) to SIGKILL this process as soon as its parent
dies, even when the parent is itself killed with SIGKILL, then checks the parent is still ``pid``: if it
died before the request was made, this process exits at once. Elsewhere than Linux only that check is made.
Used by a flow run's process (``tripwire.orchestration.execute``) and by ``tripwire services run
--parent-pid`` (the evaluator processes ``tripwire server start --evaluator-processes N`` starts).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
from typing import Any

__all__ = ["die_with_parent"]

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int, *, parent: str = "the parent process", exit_code: int = 143) -> None:
    """SIGKILL this process when ``parent`` (pid ``parent_pid``) dies; exit now if it is already gone."""
    if sys.platform.startswith("linux"):
        libc: Any = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            log.warning("could not ask to die with %s (errno %s)", parent, ctypes.get_errno())
    if os.getppid() != parent_pid:
        log.error("%s (pid %s) is gone; not running", parent, parent_pid)
        os._exit(exit_code)
