"""One settings object, read from ``TRIPWIRE_*`` variables once at start-up and passed down."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "DEFAULT_REDIS_URL",
    "ActionSettings",
    "EventLimits",
    "OrchestrationSettings",
    "Settings",
    "StreamSettings",
]

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class EventLimits(BaseModel):
    """Limits enforced on every event at intake."""

    max_labels: int = Field(500, ge=1, description="labels per resource (primary or related)")
    max_related: int = Field(100, ge=0, description="related resources per event")
    max_bytes: int = Field(256 * 1024, ge=1024, description="size of the event's JSON")
    max_future_skew_s: float = Field(
        60.0, ge=0, description="an event further in the future than this counts as occurring when received"
    )
    max_batch: int = Field(10_000, ge=1, description="events per intake request (POST /api/events)")
    max_request_bytes: int = Field(
        32 * 1024 * 1024, ge=1024, description="size of an intake request body; larger is refused unread"
    )


class StreamSettings(BaseModel):
    """Names and sizes of the Redis streams."""

    prefix: str = Field("tripwire", description="prefix of every Redis key Tripwire uses")
    maxlen: int = Field(1_000_000, ge=1000, description="approximate MAXLEN of the event stream")
    batch_size: int = Field(500, ge=1, le=10_000, description="entries read per XREADGROUP")
    recorder_batch_size: int = Field(
        2000, ge=1, le=10_000, description="entries the recorder reads at once (one SQL transaction each)"
    )
    evaluator_batch_size: int = Field(
        250, ge=1, le=10_000, description="entries the evaluator reads at once (one state commit each)"
    )  # W1 (bench/evaluate.py): 250 pipelines better than 1,000 with the relay and a second evaluator
    # (3,000 events: 16k vs 14k events/s, two evaluators 22k vs 17k) at the same CPU per event
    block_ms: int = Field(1000, ge=1, description="how long a consumer blocks waiting for entries")
    reclaim_idle_ms: int = Field(
        60_000, ge=100, description="entries pending longer than this on a dead consumer are reclaimed"
    )
    max_deliveries: int = Field(5, ge=1, description="deliveries before an entry is dead-lettered")

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    @property
    def events(self) -> str:
        return self.key("events")

    @property
    def actions(self) -> str:
        return self.key("actions")


class ActionSettings(BaseModel):
    """How the action runner runs actions (actions/runner.py)."""

    timeout_s: float = Field(30.0, gt=0, description="time limit of one attempt of one action")
    attempts: int = Field(3, ge=1, description="attempts of an action that fails unexpectedly (5xx, timeout)")
    backoff_s: float = Field(0.5, ge=0, description="wait before the 2nd attempt; doubles, with jitter")
    backoff_max_s: float = Field(30.0, ge=0, description="longest wait between two attempts")
    concurrency: int = Field(16, ge=1, description="actions one runner process runs at the same time")
    done_ttl_s: int = Field(7 * 24 * 3600, ge=60, description="how long a finished action is remembered")
    max_runs_per_minute: int = Field(
        600, ge=0, description="actions per automation per minute before the loop guard refuses more; 0: off"
    )
    event_wait_s: float = Field(5.0, ge=0, description="how long to wait for the recorder to store an event")
    render_timeout_s: float = Field(2.0, gt=0, description="time limit of rendering one template")
    max_output_bytes: int = Field(64 * 1024, ge=1024, description="size limit of one rendered template")
    max_range: int = Field(10_000, ge=1, description="items a template's range() may yield")


class OrchestrationSettings(BaseModel):
    """The scheduler and the workers (tripwire/orchestration/)."""

    scheduler_interval_s: float = Field(1.0, gt=0, description="how often the scheduler looks at schedules")
    lookahead_s: float = Field(
        3600.0, gt=0, description="how far ahead the scheduler creates runs (at least max_scheduled_runs)"
    )
    max_scheduled_runs: int = Field(
        50, ge=1, description="at most this many future runs per schedule are created ahead"
    )
    min_scheduled_runs: int = Field(3, ge=1, description="at least this many future runs per schedule")
    late_after_s: float = Field(
        15.0, ge=0, description="a run not started this long after its scheduled time becomes Late"
    )
    work_pool: str = Field("default", min_length=1, description="the pool of the worker `server start` runs")
    worker_poll_s: float = Field(1.0, gt=0, description="how often a worker looks for due runs")
    heartbeat_s: float = Field(5.0, gt=0, description="how often a worker emits tripwire.worker.heartbeat")
    worker_dead_after_s: float = Field(
        30.0, gt=0, description="a worker silent this long is dead: its unfinished runs become Crashed"
    )
    worker_concurrency: int = Field(4, ge=1, description="flow runs one worker runs at the same time")
    cancel_grace_s: float = Field(
        5.0, ge=0, description="after SIGTERM, how long a cancelled run's process has before SIGKILL"
    )


class Settings(BaseSettings):
    """Everything configurable, from ``TRIPWIRE_*`` variables (nested with ``__``)."""

    model_config = SettingsConfigDict(
        env_prefix="TRIPWIRE_", env_nested_delimiter="__", env_file=None, extra="ignore"
    )

    home: Path = Field(
        Path.home() / ".tripwire", description="directory for the database, keys and Redis data"
    )
    redis_url: str | None = Field(
        None, description="Redis URL; unset: the local default, or a private redis-server when none answers"
    )
    database_url: str | None = Field(None, description="SQLAlchemy async URL; unset means SQLite under home")
    api_url: str = Field("http://127.0.0.1:4242", description="where the CLI finds the API")
    api_key: SecretStr | None = Field(None, description="bearer token required by the API when set")
    encryption_key: SecretStr | None = Field(
        None,
        description="key(s) encrypting blocks at rest, comma-separated, first = primary (blocks/crypto.py); "
        "unset means the key file <home>/encryption.key, created on first use",
    )
    host: str = Field("127.0.0.1", description="API bind address")
    port: int = Field(4242, description="API port")
    evaluator_processes: int = Field(
        1, ge=1, le=64,
        description="evaluator processes `tripwire server start` runs: its own and N-1 child processes",
    )  # fmt: skip
    streams: StreamSettings = Field(default_factory=StreamSettings)
    limits: EventLimits = Field(default_factory=EventLimits)
    actions: ActionSettings = Field(default_factory=ActionSettings)
    orchestration: OrchestrationSettings = Field(default_factory=OrchestrationSettings)

    @property
    def effective_redis_url(self) -> str:
        return self.redis_url or DEFAULT_REDIS_URL

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.home / 'tripwire.db'}"
