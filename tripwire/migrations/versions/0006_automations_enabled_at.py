"""Automations remember when they were last enabled: trigger state starts there, and survives edits.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "automations",
        sa.Column(
            "enabled_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="when it was last enabled; its trigger state starts then (null: use updated)",
        ),
    )


def downgrade() -> None:
    with op.batch_alter_table("automations") as batch:
        batch.drop_column("enabled_at")
