"""Orchestration: deployments, schedules, flow runs and workers.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def _time(name: str, nullable: bool = False, comment: str | None = None) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable, comment=comment)


def upgrade() -> None:
    op.create_table(
        "deployments",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("flow_name", sa.Text(), nullable=False),
        sa.Column("entrypoint", sa.Text(), nullable=False, comment="'path/to/file.py:func' or 'module:func'"),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("work_pool", sa.Text(), nullable=False),
        sa.Column("document", JSON, nullable=False, comment="the deployment: parameters, schema, tags, ..."),
        _time("created"),
        _time("updated"),
        sa.Column("version", sa.Integer(), nullable=False, comment="1 when created, +1 on every change"),
        sa.PrimaryKeyConstraint("id", name="pk_deployments"),
        sa.UniqueConstraint("name", name="uq_deployments_name"),
    )
    op.create_table(
        "schedules",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("deployment_id", sa.Uuid(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False, comment="order within the deployment, from 0"),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column(
            "spec", JSON, nullable=False, comment="{'cron'|'interval'|'rrule': ..., 'timezone', ...}"
        ),
        _time("created"),
        _time("updated"),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_schedules"),
    )
    op.create_index("ix_schedules_deployment_id_position", "schedules", ["deployment_id", "position"])
    op.create_table(
        "flow_runs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("flow_name", sa.Text(), nullable=False),
        sa.Column("deployment_id", sa.Uuid(), nullable=True),
        sa.Column("schedule_id", sa.Uuid(), nullable=True, comment="the schedule that created it, if any"),
        sa.Column("work_pool", sa.Text(), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("state_message", sa.Text(), nullable=True),
        sa.Column("parameters", JSON, nullable=False),
        sa.Column("tags", JSON, nullable=False),
        _time("scheduled_time", comment="when it is due"),
        _time("start_time", nullable=True),
        _time("end_time", nullable=True),
        sa.Column("run_count", sa.Integer(), nullable=False, comment="times it entered Running"),
        sa.Column("worker", sa.Text(), nullable=True, comment="the worker that claimed it"),
        sa.Column("pid", sa.Integer(), nullable=True, comment="the process running it"),
        sa.Column(
            "idempotency_key", sa.Text(), nullable=True, comment="creating twice with one key creates once"
        ),
        _time("created"),
        _time("updated"),
        sa.Column("version", sa.Integer(), nullable=False, comment="+1 on every change; claims compare it"),
        sa.PrimaryKeyConstraint("id", name="pk_flow_runs"),
        sa.UniqueConstraint("idempotency_key", name="uq_flow_runs_idempotency_key"),
    )
    op.create_index(
        "ix_flow_runs_state_work_pool_scheduled_time", "flow_runs", ["state", "work_pool", "scheduled_time"]
    )
    op.create_index("ix_flow_runs_deployment_id_scheduled_time", "flow_runs", ["deployment_id", "scheduled_time"])
    op.create_index("ix_flow_runs_worker_state", "flow_runs", ["worker", "state"])
    op.create_table(
        "workers",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("work_pool", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, comment="'online', 'stopped' or 'dead'"),
        _time("started"),
        _time("last_heartbeat"),
        sa.PrimaryKeyConstraint("name", name="pk_workers"),
    )


def downgrade() -> None:
    op.drop_table("workers")
    op.drop_index("ix_flow_runs_worker_state", table_name="flow_runs")
    op.drop_index("ix_flow_runs_deployment_id_scheduled_time", table_name="flow_runs")
    op.drop_index("ix_flow_runs_state_work_pool_scheduled_time", table_name="flow_runs")
    op.drop_table("flow_runs")
    op.drop_index("ix_schedules_deployment_id_position", table_name="schedules")
    op.drop_table("schedules")
    op.drop_table("deployments")
