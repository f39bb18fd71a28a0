"""``tripwire deploy``, ``tripwire deployment ...``, ``tripwire flow-run ...`` (placeholder)."""

from __future__ import annotations

import typer

__all__ = ["deploy", "deployment_app", "flow_run_app"]

deployment_app = typer.Typer(help="Deployments: named flow entrypoints with parameters and schedules.")
flow_run_app = typer.Typer(help="Flow runs: list, inspect, cancel.")


def deploy(ctx: typer.Context) -> None:
    """Create or update deployments from a YAML file."""
    raise typer.Exit(1)
