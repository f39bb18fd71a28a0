"""Credential blocks, stored encrypted.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "blocks",
        sa.Column(
            "type", sa.String(length=64), nullable=False, comment="the block type's slug, e.g. 'slack-webhook'"
        ),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column(
            "ciphertext", sa.Text(), nullable=False, comment="the encrypted document (a Fernet token)"
        ),
        sa.Column(
            "key_id", sa.String(length=16), nullable=False, comment="fingerprint of the key that encrypted it"
        ),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("type", "name", name="pk_blocks"),
    )


def downgrade() -> None:
    op.drop_table("blocks")
