"""SQL tables (SQLAlchemy Core): one ``metadata`` shared by every store and by the migrations.

Adding a table: declare it here, then write a new revision in ``tripwire/migrations/versions/`` that
creates it (hand-written, or ``alembic -c tripwire/migrations/alembic.ini revision --autogenerate``,
then checked by hand). ``tests/tripwire/test_db.py`` fails when the two disagree.

Notes on the ``events`` tables:
1. Times are stored in UTC. ``UTCDateTime`` is ``timestamptz`` on PostgreSQL; on SQLite SQLAlchemy
   stores a fixed-width text that drops the offset, so values are converted to UTC before binding
   and tagged UTC when read: text order is time order and comparisons are exact.
2. History pages are read newest first by ``(occurred, id)``; ``ix_events_occurred_id`` serves that
   order scanned backwards, and the keyset condition ``(occurred, id) < (:o, :i)`` of the next page.
3. Related resources are also written to ``event_related``, one row per distinct related resource id of
   an event, keyed by ``(resource_id, occurred, event_id)``: "events related to X, newest first" is then
   a backward range scan of that key, joined to ``events`` by id, on SQLite and PostgreSQL alike, where
   filtering the ``related`` JSON would read every event (PostgreSQL could use a GIN index on JSONB,
   SQLite has nothing comparable). The JSON column keeps the full label sets and every role. The key
   starts with the resource and then the time, so inserts append within each resource's range instead
   of landing at random pages (a key on the random event id halved the recorder's throughput on
   SQLite), and it is the table itself on SQLite (WITHOUT ROWID). Rows are written only with their
   event, in the same transaction, by the recorder; there is no foreign key (it would need a second,
   random-order index on ``event_id``), so deleting events must delete their rows too.
4. On PostgreSQL the name and resource-id indexes use ``text_pattern_ops``, so the ``LIKE 'prefix%'``
   that a glob becomes can use them whatever the database's collation (they serve ``=`` too).
   On SQLite, ``GLOB 'prefix*'`` uses the plain (BINARY) index.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Dialect,
    Index,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    Uuid,
)
from sqlalchemy.dialects.postgresql import JSONB

__all__ = ["JsonType", "UTCDateTime", "event_related", "events", "metadata"]

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

JsonType = JSON().with_variant(JSONB(), "postgresql")
"""JSON on SQLite, JSONB on PostgreSQL."""


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware datetime stored in UTC on every dialect (see note 1)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()} where a timezone-aware one is required")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


events = Table(
    "events",
    metadata,
    Column("id", Uuid(), primary_key=True, comment="producer-set event id; the deduplication key"),
    Column("occurred", UTCDateTime(), nullable=False),
    Column("received", UTCDateTime(), nullable=True),
    Column("event", String(1024), nullable=False),
    Column("resource_id", Text(), nullable=False, comment="the primary resource's tripwire.resource.id"),
    Column("resource", JsonType, nullable=False),
    Column("related", JsonType, nullable=False),
    Column("payload", JsonType, nullable=False),
    Column("follows", Uuid(), nullable=True),
    Index("ix_events_occurred_id", "occurred", "id"),
    Index("ix_events_event_occurred", "event", "occurred", postgresql_ops={"event": "text_pattern_ops"}),
    Index(
        "ix_events_resource_id_occurred",
        "resource_id",
        "occurred",
        postgresql_ops={"resource_id": "text_pattern_ops"},
    ),
)

event_related = Table(
    "event_related",
    metadata,
    Column("resource_id", Text(), primary_key=True),
    Column("occurred", UTCDateTime(), primary_key=True, comment="copied from the event"),
    Column("event_id", Uuid(), primary_key=True),
    Column("role", Text(), nullable=False, comment="the role of the resource's first mention in the event"),
    sqlite_with_rowid=False,
)


# --- automations and their firings (triggers/store.py, triggers/firings.py) -----------------------
# Imports and __all__ entries for these are below, so the lines above stay untouched.

import sqlalchemy as sa  # noqa: E402

__all__ += ["automations", "firings"]

automations = Table(
    "automations",
    metadata,
    Column("id", Uuid(), primary_key=True),
    Column("name", Text(), nullable=False),
    Column("enabled", sa.Boolean(), nullable=False),
    Column("document", JsonType, nullable=False, comment='Automation.model_dump(mode="json")'),
    Column("created", UTCDateTime(), nullable=False),
    Column("updated", UTCDateTime(), nullable=False),
    Column("version", sa.Integer(), nullable=False, comment="1 when created, +1 on every change"),
    Column(
        "enabled_at",
        UTCDateTime(),
        nullable=True,
        comment="when it was last enabled; its trigger state starts then (null: use updated)",
    ),
    sa.UniqueConstraint("name", name="uq_automations_name"),
)

firings = Table(
    "firings",
    metadata,
    Column("id", Uuid(), primary_key=True, comment="the firing id; recording is idempotent by it"),
    Column("automation_id", Uuid(), nullable=False),
    Column("kind", String(16), nullable=False, comment="'triggered' or 'resolved'"),
    Column("trigger_path", Text(), nullable=False, comment="which (child) trigger fired"),
    Column("labels", JsonType, nullable=False, comment="the for_each key"),
    Column("event_id", Uuid(), nullable=True, comment="the triggering event"),
    Column("event_ids", JsonType, nullable=False, comment="every event of the firing"),
    Column("occurred", UTCDateTime(), nullable=False, comment="when it fired or resolved"),
    Column("mode", String(16), nullable=False, comment="'live' or 'dry-run'"),
    Column("actions", JsonType, nullable=False, comment="[{index, type, status}]"),
    Column("recorded_at", UTCDateTime(), nullable=False),
    Index("ix_firings_automation_id_occurred_id", "automation_id", "occurred", "id"),
)


# --- credential blocks (blocks/store.py) ----------------------------------------------------------
# The whole block document is encrypted (blocks/crypto.py); no value of it is stored in the clear.

__all__ += ["blocks"]

blocks = Table(
    "blocks",
    metadata,
    Column("type", String(64), primary_key=True, comment="the block type's slug, e.g. 'slack-webhook'"),
    Column("name", String(128), primary_key=True),
    Column("ciphertext", Text(), nullable=False, comment="the encrypted document (a Fernet token)"),
    Column("key_id", String(16), nullable=False, comment="fingerprint of the key that encrypted it"),
    Column("created", UTCDateTime(), nullable=False),
    Column("updated", UTCDateTime(), nullable=False),
)


# --- action results (actions/results.py) -----------------------------------------------------------
# One row per action message (its idempotency key), written by the action runner when the action ends.

__all__ += ["action_results"]

action_results = Table(
    "action_results",
    metadata,
    Column("idempotency_key", Text(), primary_key=True, comment="'<firing id>:<kind>:<index>'"),
    Column("firing_id", Uuid(), nullable=False, comment="the firing (or resolution) that started it"),
    Column("automation_id", Uuid(), nullable=False),
    Column("kind", String(16), nullable=False, comment="'triggered' or 'resolved'"),
    Column("action_index", sa.Integer(), nullable=False, comment="position in the firing's actions"),
    Column("action_type", String(64), nullable=False, comment="e.g. 'send-notification'"),
    Column("status", String(16), nullable=False, comment="'succeeded', 'failed' or 'dead-lettered'"),
    Column("attempts", sa.Integer(), nullable=False, comment="attempts made by the run that finished it"),
    Column("reason", Text(), nullable=True, comment="why it failed (never a secret)"),
    Column("detail", JsonType, nullable=False, comment="what it did, e.g. {'status_code': 200}"),
    Column("finished", UTCDateTime(), nullable=False),
    Index("ix_action_results_firing_id_action_index", "firing_id", "action_index"),
    Index("ix_action_results_automation_id_finished", "automation_id", "finished"),
)


# --- webhooks in (events/webhooks/store.py) ---------------------------------------------------------
# The definition document holds the template and auth; secrets stay in blocks (only their names here).

__all__ += ["webhooks"]

webhooks = Table(
    "webhooks",
    metadata,
    Column("id", Uuid(), primary_key=True),
    Column("name", String(128), nullable=False),
    Column("slug", String(128), nullable=False, comment="the URL part /hooks/<slug>"),
    Column("enabled", sa.Boolean(), nullable=False),
    Column("document", JsonType, nullable=False, comment='WebhookDefinition.model_dump(mode="json")'),
    Column("created", UTCDateTime(), nullable=False),
    Column("updated", UTCDateTime(), nullable=False),
    Column("version", sa.Integer(), nullable=False, comment="1 when created, +1 on every change"),
    sa.UniqueConstraint("name", name="uq_webhooks_name"),
    sa.UniqueConstraint("slug", name="uq_webhooks_slug"),
)


# --- orchestration (tripwire/orchestration/) --------------------------------------------------------
# Deployments and their schedules, flow runs (claimed by workers with a conditional UPDATE on
# ``(id, version)``), and workers (their last heartbeat; a worker silent too long has its runs crashed).

__all__ += ["deployments", "flow_runs", "schedules", "workers"]

deployments = Table(
    "deployments",
    metadata,
    Column("id", Uuid(), primary_key=True),
    Column("name", Text(), nullable=False),
    Column("flow_name", Text(), nullable=False),
    Column("entrypoint", Text(), nullable=False, comment="'path/to/file.py:func' or 'module:func'"),
    Column("paused", sa.Boolean(), nullable=False),
    Column("work_pool", Text(), nullable=False),
    Column("document", JsonType, nullable=False, comment="the deployment: parameters, schema, tags, ..."),
    Column("created", UTCDateTime(), nullable=False),
    Column("updated", UTCDateTime(), nullable=False),
    Column("version", sa.Integer(), nullable=False, comment="1 when created, +1 on every change"),
    sa.UniqueConstraint("name", name="uq_deployments_name"),
)

schedules = Table(
    "schedules",
    metadata,
    Column("id", Uuid(), primary_key=True),
    Column("deployment_id", Uuid(), nullable=False),
    Column("position", sa.Integer(), nullable=False, comment="order within the deployment, from 0"),
    Column("active", sa.Boolean(), nullable=False),
    Column("spec", JsonType, nullable=False, comment="{'cron'|'interval'|'rrule': ..., 'timezone', ...}"),
    Column("created", UTCDateTime(), nullable=False),
    Column("updated", UTCDateTime(), nullable=False),
    Column("version", sa.Integer(), nullable=False),
    Index("ix_schedules_deployment_id_position", "deployment_id", "position"),
)

flow_runs = Table(
    "flow_runs",
    metadata,
    Column("id", Uuid(), primary_key=True),
    Column("name", Text(), nullable=False),
    Column("flow_name", Text(), nullable=False),
    Column("deployment_id", Uuid(), nullable=True),
    Column("schedule_id", Uuid(), nullable=True, comment="the schedule that created it, if any"),
    Column("work_pool", Text(), nullable=True),
    Column("state", String(16), nullable=False),
    Column("state_message", Text(), nullable=True),
    Column("parameters", JsonType, nullable=False),
    Column("tags", JsonType, nullable=False),
    Column("scheduled_time", UTCDateTime(), nullable=False, comment="when it is due"),
    Column("start_time", UTCDateTime(), nullable=True),
    Column("end_time", UTCDateTime(), nullable=True),
    Column("run_count", sa.Integer(), nullable=False, comment="times it entered Running"),
    Column("worker", Text(), nullable=True, comment="the worker that claimed it"),
    Column("pid", sa.Integer(), nullable=True, comment="the process running it"),
    Column("idempotency_key", Text(), nullable=True, comment="creating twice with one key creates once"),
    Column("created", UTCDateTime(), nullable=False),
    Column("updated", UTCDateTime(), nullable=False),
    Column("version", sa.Integer(), nullable=False, comment="+1 on every change; claims compare it"),
    sa.UniqueConstraint("idempotency_key", name="uq_flow_runs_idempotency_key"),
    Index("ix_flow_runs_state_work_pool_scheduled_time", "state", "work_pool", "scheduled_time"),
    Index("ix_flow_runs_deployment_id_scheduled_time", "deployment_id", "scheduled_time"),
    Index("ix_flow_runs_worker_state", "worker", "state"),
)

workers = Table(
    "workers",
    metadata,
    Column("name", Text(), primary_key=True),
    Column("work_pool", Text(), nullable=False),
    Column("status", String(16), nullable=False, comment="'online', 'stopped' or 'dead'"),
    Column("started", UTCDateTime(), nullable=False),
    Column("last_heartbeat", UTCDateTime(), nullable=False),
)
