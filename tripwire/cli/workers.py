"""``tripwire worker start --pool NAME`` (placeholder, being built)."""

from __future__ import annotations

import typer

__all__ = ["worker_app"]

worker_app = typer.Typer(help="Workers: run the due flow runs of a work pool.")
