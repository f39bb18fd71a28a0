"""Action results: what each action of a firing did.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "action_results",
        sa.Column("idempotency_key", sa.Text(), nullable=False, comment="'<firing id>:<kind>:<index>'"),
        sa.Column(
            "firing_id", sa.Uuid(), nullable=False, comment="the firing (or resolution) that started it"
        ),
        sa.Column("automation_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False, comment="'triggered' or 'resolved'"),
        sa.Column("action_index", sa.Integer(), nullable=False, comment="position in the firing's actions"),
        sa.Column("action_type", sa.String(length=64), nullable=False, comment="e.g. 'send-notification'"),
        sa.Column(
            "status", sa.String(length=16), nullable=False, comment="'succeeded', 'failed' or 'dead-lettered'"
        ),
        sa.Column(
            "attempts", sa.Integer(), nullable=False, comment="attempts made by the run that finished it"
        ),
        sa.Column("reason", sa.Text(), nullable=True, comment="why it failed (never a secret)"),
        sa.Column("detail", JSON, nullable=False, comment="what it did, e.g. {'status_code': 200}"),
        sa.Column("finished", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("idempotency_key", name="pk_action_results"),
    )
    op.create_index(
        "ix_action_results_firing_id_action_index", "action_results", ["firing_id", "action_index"]
    )
    op.create_index(
        "ix_action_results_automation_id_finished", "action_results", ["automation_id", "finished"]
    )


def downgrade() -> None:
    op.drop_index("ix_action_results_automation_id_finished", table_name="action_results")
    op.drop_index("ix_action_results_firing_id_action_index", table_name="action_results")
    op.drop_table("action_results")
