"""``python -m tripwire``: the same as the ``tripwire`` command."""

from __future__ import annotations

from tripwire.cli.main import app

__all__: list[str] = []

if __name__ == "__main__":
    app(prog_name="tripwire")
