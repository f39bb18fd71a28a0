"""Automations and their firings.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "automations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("document", JSON, nullable=False, comment='Automation.model_dump(mode="json")'),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False, comment="1 when created, +1 on every change"),
        sa.PrimaryKeyConstraint("id", name="pk_automations"),
        sa.UniqueConstraint("name", name="uq_automations_name"),
    )
    op.create_table(
        "firings",
        sa.Column("id", sa.Uuid(), nullable=False, comment="the firing id; recording is idempotent by it"),
        sa.Column("automation_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False, comment="'triggered' or 'resolved'"),
        sa.Column("trigger_path", sa.Text(), nullable=False, comment="which (child) trigger fired"),
        sa.Column("labels", JSON, nullable=False, comment="the for_each key"),
        sa.Column("event_id", sa.Uuid(), nullable=True, comment="the triggering event"),
        sa.Column("event_ids", JSON, nullable=False, comment="every event of the firing"),
        sa.Column(
            "occurred", sa.DateTime(timezone=True), nullable=False, comment="when it fired or resolved"
        ),
        sa.Column("mode", sa.String(length=16), nullable=False, comment="'live' or 'dry-run'"),
        sa.Column("actions", JSON, nullable=False, comment="[{index, type, status}]"),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_firings"),
    )
    op.create_index("ix_firings_automation_id_occurred_id", "firings", ["automation_id", "occurred", "id"])


def downgrade() -> None:
    op.drop_index("ix_firings_automation_id_occurred_id", table_name="firings")
    op.drop_table("firings")
    op.drop_table("automations")
