"""The process a worker runs a flow run in: its environment, start, output and signals.

1. Environment (``child_environment``): the worker's own, with every ``TRIPWIRE_*`` variable replaced by
   the settings the worker actually uses — they may come from code or a file, not the environment — and
   the Redis URL it resolved (possibly a private server's socket). Nested settings go as JSON objects.
2. Start (``start_execute``): ``python -m tripwire.orchestration.execute <run id> --parent-pid <pid>``
   in a new session, so the process leads its own group: a signal to the group reaches whatever the
   flow started too, and a Ctrl-C meant for the worker does not reach the runs (the worker stops them in
   order). stdout and stderr share one pipe.
3. Output (``forward_output``): logged line by line on ``tripwire.orchestration.worker.runs``, each line
   prefixed with the run's name; very long lines are cut at ``MAX_LINE`` bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from typing import Any
from uuid import UUID

from pydantic import BaseModel, SecretStr

from tripwire.settings import Settings

__all__ = ["MAX_LINE", "child_environment", "describe_exit", "forward_output", "kill_group", "start_execute"]

output_log = logging.getLogger("tripwire.orchestration.worker.runs")

READ_CHUNK = 65536
MAX_LINE = 16384


def child_environment(settings: Settings, redis_url: str | None = None) -> dict[str, str]:
    """The environment of a run's process: this one's, with the worker's settings as ``TRIPWIRE_*``.

    Inherited ``TRIPWIRE_*`` variables are replaced by the settings the worker actually uses (they may
    come from code, not the environment); nested settings are passed as JSON objects, secrets in clear
    (the process is the worker's own child, as trusted as the worker).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPWIRE_")}
    for name in type(settings).model_fields:
        value = _plain(getattr(settings, name))
        if value is not None:
            env[f"TRIPWIRE_{name.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    env["TRIPWIRE_REDIS_URL"] = redis_url or settings.effective_redis_url
    env["TRIPWIRE_DATABASE_URL"] = settings.effective_database_url
    env["PYTHONUNBUFFERED"] = "1"  # the run's prints reach the worker's log as they happen
    return env


def _plain(value: Any) -> Any:
    """A settings value as JSON-able data, secrets revealed."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, BaseModel):
        return {name: _plain(getattr(value, name)) for name in type(value).model_fields}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


async def start_execute(
    run_id: UUID, env: dict[str, str], *, python: str = sys.executable
) -> asyncio.subprocess.Process:
    """Start the process of flow run ``run_id`` (note 2); it dies with this process on Linux."""
    return await asyncio.create_subprocess_exec(
        python, "-m", "tripwire.orchestration.execute", str(run_id), "--parent-pid", str(os.getpid()),
        env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip


def describe_exit(code: int) -> str:
    """``process exited with code N`` / ``process killed by signal SIGKILL``."""
    if code < 0:
        try:
            return f"process killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"process killed by signal {-code}"
    return f"process exited with code {code}"


def kill_group(proc: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    """Signal the process group of ``proc`` (its pgid is its pid: ``start_new_session``)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


async def forward_output(run_name: str, stream: asyncio.StreamReader) -> None:
    """Log the process's output line by line, prefixed with the run's name (long lines are cut)."""
    buffer = b""
    while chunk := await stream.read(READ_CHUNK):
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            _log_line(run_name, line)
        if len(buffer) > MAX_LINE:
            _log_line(run_name, buffer)
            buffer = b""
    if buffer:
        _log_line(run_name, buffer)


def _log_line(run_name: str, line: bytes) -> None:
    text = line[:MAX_LINE].decode(errors="replace").rstrip()
    if text:
        output_log.info("%s | %s", run_name, text, extra={"flow_run_name": run_name})
