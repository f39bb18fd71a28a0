"""The flow of the "stuck run" example: it never finishes on its own (well, after ``seconds``).

``pid_file`` (optional) receives the flow process's pid, so that one can check the process is gone once
the automation has cancelled the run (the end-to-end test does).
"""

from __future__ import annotations

import os
import time

from tripwire import flow


@flow
def stuck(seconds: float = 120.0, pid_file: str = "") -> None:
    """Sleep ``seconds``: a run that hangs, as a flow waiting on a dead server would."""
    if pid_file:
        with open(pid_file + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.replace(pid_file + ".tmp", pid_file)  # readers see the whole pid or no file
    time.sleep(seconds)
