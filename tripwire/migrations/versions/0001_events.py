"""Event history: events and event_related.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", sa.Uuid(), nullable=False, comment="producer-set event id; the deduplication key"),
        sa.Column("occurred", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received", sa.DateTime(timezone=True), nullable=True),
        sa.Column("event", sa.String(length=1024), nullable=False),
        sa.Column(
            "resource_id", sa.Text(), nullable=False, comment="the primary resource's tripwire.resource.id"
        ),
        sa.Column("resource", JSON, nullable=False),
        sa.Column("related", JSON, nullable=False),
        sa.Column("payload", JSON, nullable=False),
        sa.Column("follows", sa.Uuid(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
    )
    op.create_index("ix_events_occurred_id", "events", ["occurred", "id"])
    op.create_index(
        "ix_events_event_occurred", "events", ["event", "occurred"], postgresql_ops={"event": "text_pattern_ops"}
    )
    op.create_index(
        "ix_events_resource_id_occurred",
        "events",
        ["resource_id", "occurred"],
        postgresql_ops={"resource_id": "text_pattern_ops"},
    )
    op.create_table(
        "event_related",
        sa.Column("resource_id", sa.Text(), nullable=False),
        sa.Column("occurred", sa.DateTime(timezone=True), nullable=False, comment="copied from the event"),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column(
            "role", sa.Text(), nullable=False, comment="the role of the resource's first mention in the event"
        ),
        sa.PrimaryKeyConstraint("resource_id", "occurred", "event_id", name="pk_event_related"),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    op.drop_table("event_related")
    op.drop_table("events")
