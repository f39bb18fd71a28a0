"""The ``tripwire`` command line (typer + rich)."""

from __future__ import annotations

from tripwire.cli.main import app

__all__ = ["app"]
