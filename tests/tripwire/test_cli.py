"""The ``tripwire`` CLI against a real API server (uvicorn in a thread, private Redis, SQLite file)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from tests.conftest import free_port
from tripwire.cli.events import parse_since
from tripwire.cli.main import app
from tripwire.runner import SERVICES, ApiServer, build_server, running
from tripwire.settings import Settings

pytestmark = pytest.mark.redis

UNREACHABLE = (
    "cannot reach the Tripwire API at {url} — start it with `tripwire server start` or set TRIPWIRE_API_URL"
)


class ThreadedServer:
    """``running()`` + the API on a free port, in a thread with its own event loop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = f"http://127.0.0.1:{free_port()}"
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._server: ApiServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name="tripwire-test-api", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        # No worker: its heartbeats would be events of their own in the history these tests list.
        services = [name for name in SERVICES if name != "worker"]
        async with running(self.settings, services=services, embedded_redis=False) as ctx:
            port = int(self.url.rsplit(":", 1)[1])
            self._server = build_server(ctx, "127.0.0.1", port, log_level="warning")
            self._loop = asyncio.get_running_loop()
            serving = asyncio.create_task(self._server.serve())
            while not self._server.started and not serving.done():  # noqa: ASYNC110 - no "started" event
                await asyncio.sleep(0.01)
            self._ready.set()
            await serving

    def __enter__(self) -> ThreadedServer:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the test API did not start within 30 s")
        if self._error is not None or self._server is None or not self._server.started:
            raise RuntimeError("the test API did not start") from self._error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._server is not None:
            self._loop.call_soon_threadsafe(self._server.request_stop)
        self._thread.join(30)
        assert not self._thread.is_alive(), "the test API did not stop"


@pytest.fixture
def api(settings: Settings) -> Iterator[ThreadedServer]:
    with ThreadedServer(settings) as server:
        yield server


@pytest.fixture
def cli(api: ThreadedServer) -> Callable[..., Any]:
    """Run ``tripwire <args>`` against the test API; returns the click Result."""
    runner = CliRunner()

    def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
        return runner.invoke(
            app, list(args), env={"TRIPWIRE_API_URL": api.url, "COLUMNS": "200", **(env or {})}
        )

    return invoke


def eventually(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        time.sleep(0.05)


def listed(cli: Callable[..., Any], *args: str) -> list[dict[str, Any]]:
    result = cli("events", "ls", "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_emit_then_ls_shows_the_event(cli: Callable[..., Any]) -> None:
    result = cli(
        "events", "emit", "tripwire.flow-run.Failed", "--resource", "tripwire.flow-run.abc",
        "--payload", '{"attempt": 3}', "--related", "deployment=tripwire.deployment.etl",
        "--label", "tripwire.resource.name=abc",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "emitted tripwire.flow-run.Failed" in result.stdout

    eventually(lambda: len(listed(cli)) == 1)
    [event] = listed(cli)
    assert event["event"] == "tripwire.flow-run.Failed"
    assert event["resource"] == {
        "tripwire.resource.id": "tripwire.flow-run.abc",
        "tripwire.resource.name": "abc",
    }
    assert event["related"] == [
        {"tripwire.resource.id": "tripwire.deployment.etl", "tripwire.resource.role": "deployment"}
    ]
    assert event["payload"] == {"attempt": 3}
    assert event["id"] in result.stdout

    table = cli("events", "ls")
    assert table.exit_code == 0, table.output
    assert "tripwire.flow-run.Failed" in table.stdout
    assert "deployment:tripwire.deployment.etl" in table.stdout


def test_ls_filters_and_limits(cli: Callable[..., Any]) -> None:
    for name, resource in [("a.one", "r-1"), ("a.two", "r-2"), ("b.three", "r-3")]:
        assert cli("events", "emit", name, "--resource", resource).exit_code == 0
    eventually(lambda: len(listed(cli)) == 3)
    assert {e["event"] for e in listed(cli, "--name", "a.*")} == {"a.one", "a.two"}
    assert [e["event"] for e in listed(cli, "--resource", "r-3")] == ["b.three"]
    assert len(listed(cli, "--limit", "2")) == 2
    assert len(listed(cli, "--since", "10m")) == 3
    assert listed(cli, "--since", (datetime.now(UTC) + timedelta(hours=1)).isoformat()) == []


def test_an_invalid_event_is_explained_field_by_field(cli: Callable[..., Any]) -> None:
    result = cli("events", "emit", "", "--resource", "r-1", "--payload", "[1, 2]")
    assert result.exit_code == 1
    assert "the API rejected the request (422)" in result.stderr
    assert "events[0].event:" in result.stderr
    assert "events[0].payload:" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--payload", "{oops"], "--payload is not valid JSON", id="payload-not-json"),
        pytest.param(
            ["--related", "etl"], "--related 'etl' must look like key=value", id="related-without-role"
        ),
    ],
)
def test_bad_options_are_refused_before_sending(
    cli: Callable[..., Any], args: list[str], message: str
) -> None:
    result = cli("events", "emit", "x.y", "--resource", "r-1", *args)
    assert result.exit_code == 1
    assert message in result.stderr


def test_an_unreachable_api_gives_one_clear_line() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(app, ["events", "ls"], env={"TRIPWIRE_API_URL": url})
    assert result.exit_code == 1
    assert result.stderr.startswith("error: " + UNREACHABLE.format(url=url))
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_invalid_settings_are_named() -> None:
    result = CliRunner().invoke(app, ["events", "ls"], env={"TRIPWIRE_PORT": "not-a-port"})
    assert result.exit_code == 1
    assert "TRIPWIRE_PORT:" in result.stderr


def test_tail_follows_new_events(api: ThreadedServer, cli: Callable[..., Any]) -> None:
    done = threading.Event()

    def produce() -> (
        None
    ):  # keep emitting until the tail has seen one: it only shows events after it connects
        with httpx.Client(base_url=api.url) as http:
            for i in range(200):
                if done.is_set():
                    return
                event = {"event": "tail.demo", "resource": {"tripwire.resource.id": f"r-{i}"}}
                http.post("/api/events", json=[event, {**event, "event": "tail.other"}])
                done.wait(0.05)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    try:
        result = cli("events", "tail", "--name", "tail.demo", "--count", "2", "--json")
    finally:
        done.set()
        producer.join(10)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["event"] for e in lines] == ["tail.demo", "tail.demo"]


def test_the_api_key_is_sent_and_required(settings: Settings) -> None:
    secured = settings.model_copy(update={"api_key": SecretStr("s3cret")})
    with ThreadedServer(secured) as api:
        runner = CliRunner()
        denied = runner.invoke(app, ["events", "ls"], env={"TRIPWIRE_API_URL": api.url})
        allowed = runner.invoke(
            app, ["events", "ls"], env={"TRIPWIRE_API_URL": api.url, "TRIPWIRE_API_KEY": "s3cret"}
        )
    assert denied.exit_code == 1
    assert "401" in denied.stderr and "TRIPWIRE_API_KEY" in denied.stderr
    assert allowed.exit_code == 0, allowed.output


def test_services_run_names_unknown_services() -> None:
    result = CliRunner().invoke(app, ["services", "run", "nope"])
    assert result.exit_code == 1
    assert "unknown service 'nope'" in result.stderr


def test_version() -> None:
    result = CliRunner().invoke(app, ["version"])
    assert result.exit_code == 0
    assert result.stdout.startswith("tripwire ")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("10m", datetime(2026, 1, 1, 11, 50, tzinfo=UTC), id="minutes"),
        pytest.param("2h", datetime(2026, 1, 1, 10, 0, tzinfo=UTC), id="hours"),
        pytest.param("1d", datetime(2025, 12, 31, 12, 0, tzinfo=UTC), id="days"),
        pytest.param("2026-01-01T08:00", datetime(2026, 1, 1, 8, 0, tzinfo=UTC), id="iso-naive-is-utc"),
        pytest.param("2026-01-01T08:00+01:00", datetime(2026, 1, 1, 7, 0, tzinfo=UTC), id="iso-offset"),
    ],
)
def test_since_accepts_durations_and_times(text: str, expected: datetime) -> None:
    assert parse_since(text, datetime(2026, 1, 1, 12, 0, tzinfo=UTC)) == expected


def test_since_refuses_nonsense(cli: Callable[..., Any]) -> None:
    result = cli("events", "ls", "--since", "yesterday-ish")
    assert result.exit_code == 1
    assert "--since 'yesterday-ish' is neither a duration" in result.stderr
