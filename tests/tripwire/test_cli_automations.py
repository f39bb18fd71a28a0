"""``tripwire automation ...`` against a real API server (uvicorn in a thread, private Redis, SQLite file)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from tests.conftest import REPO, free_port
from tests.tripwire.test_cli import ThreadedServer
from triggers.firings import ActionDescriptor, FiringRow, FiringStore
from triggers.models import Automation
from tripwire.cli.automations import _named, duration_text, trigger_summary
from tripwire.cli.main import app
from tripwire.db import Database
from tripwire.settings import Settings

pytestmark = pytest.mark.redis

EXAMPLES = REPO / "examples" / "automations"
SUMMARY = "3\u00d7 tripwire.flow-run.Failed / 10m per related:deployment:tripwire.resource.id (filtered)"

Cli = Callable[..., Any]


@pytest.fixture
def api(settings: Settings) -> Iterator[ThreadedServer]:
    with ThreadedServer(settings) as server:
        yield server


@pytest.fixture
def cli(api: ThreadedServer) -> Cli:
    """Run ``tripwire <args>`` against the test API; returns the click Result."""
    runner = CliRunner()

    def invoke(*args: str) -> Any:
        return runner.invoke(app, list(args), env={"TRIPWIRE_API_URL": api.url, "COLUMNS": "250"})

    return invoke


def ok(result: Any) -> str:
    assert result.exit_code == 0, result.output
    return str(result.stdout)


def listed(cli: Cli) -> list[dict[str, Any]]:
    return json.loads(ok(cli("automation", "ls", "--json")))


def a_document(name: str, **trigger: Any) -> dict[str, Any]:
    return {
        "name": name,
        "trigger": {"type": "event", "expect": ["tripwire.flow-run.Failed"], **trigger},
        "actions": [{"type": "do-nothing"}],
    }


# -- apply ----------------------------------------------------------------------------------------------


def test_apply_the_same_automation_in_three_formats(cli: Cli) -> None:
    first = ok(cli("automation", "apply", "-f", str(EXAMPLES / "three_failures.json")))
    assert "created   etl keeps failing (version 1" in first
    assert "unchanged etl keeps failing" in ok(
        cli("automation", "apply", "-f", str(EXAMPLES / "three_failures.yaml"))
    )
    both = ok(cli("automation", "apply", "-f", str(EXAMPLES / "heartbeat.py")))
    assert "unchanged etl keeps failing" in both
    assert "created   worker went quiet" in both
    assert [a["name"] for a in listed(cli)] == ["etl keeps failing", "worker went quiet"]


def test_apply_several_files_and_update(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump([a_document("a"), a_document("b")]))
    out = ok(cli("automation", "apply", "-f", str(path), "-f", str(EXAMPLES / "three_failures.json")))
    assert out.count("created") == 3
    path.write_text(yaml.safe_dump([a_document("a", threshold=2), a_document("b")]))
    out = ok(cli("automation", "apply", "-f", str(path)))
    assert "updated   a (version 2" in out
    assert "unchanged b (version 1" in out


@pytest.mark.parametrize(
    ("trigger", "field", "says"),
    [
        pytest.param({"bogus": 1}, "trigger.bogus", "unknown field", id="unknown-field"),
        pytest.param({"threshold": 0}, "trigger.threshold", "at least 1", id="threshold-zero"),
        pytest.param(
            {"posture": "Proactive", "within": 5}, "trigger", "within must be at least 10", id="proactive"
        ),
        pytest.param(
            {"where": {"$.payload[": 1}}, "trigger.where", "not a valid jsonpath", id="bad-jsonpath"
        ),
        pytest.param({"expect": [], "match": {}}, "trigger", "would match every event", id="matches-itself"),
    ],
)
def test_a_file_with_a_bad_automation_applies_nothing(
    cli: Cli, tmp_path: Path, trigger: dict[str, Any], field: str, says: str
) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump([a_document("fine"), a_document("broken", **trigger)]))
    result = cli("automation", "apply", "-f", str(path))
    assert result.exit_code == 1
    assert f"{path}[1] 'broken': {field}: " in result.stderr
    assert says in result.stderr
    assert "Traceback" not in result.output
    assert listed(cli) == []


def test_a_bad_file_is_refused_before_the_api_is_asked(tmp_path: Path) -> None:
    path = tmp_path / "rule.json"
    path.write_text(json.dumps(a_document("broken", threshold=0)))
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens: the file never gets that far
    result = CliRunner().invoke(app, ["automation", "apply", "-f", str(path)], env={"TRIPWIRE_API_URL": url})
    assert result.exit_code == 1
    assert f"{path} 'broken': trigger.threshold: threshold must be an integer of at least 1" in result.stderr


def test_apply_names_a_missing_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["automation", "apply", "-f", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1
    assert "no such file" in result.stderr


# -- ls, inspect, pause, resume, delete ---------------------------------------------------------------------


def test_ls_shows_name_state_trigger_and_mode(cli: Cli) -> None:
    assert "no automations" in ok(cli("automation", "ls"))
    ok(cli("automation", "apply", "-f", str(EXAMPLES / "heartbeat.py")))
    table = ok(cli("automation", "ls"))
    assert SUMMARY in table
    assert "fewer than 1\u00d7 tripwire.worker.heartbeat / 5m per tripwire.resource.id" in table
    assert "live" in table and "paused" not in table
    ok(cli("automation", "pause", "worker went quiet"))
    assert "paused" in ok(cli("automation", "ls"))


def test_inspect_prints_a_document_that_applies_again(cli: Cli, tmp_path: Path) -> None:
    ok(cli("automation", "apply", "-f", str(EXAMPLES / "three_failures.yaml")))
    text = ok(cli("automation", "inspect", "etl keeps failing"))
    assert text.startswith("# etl keeps failing: version 1")
    document = yaml.safe_load(text)
    as_json = json.loads(ok(cli("automation", "inspect", "etl keeps failing", "--json")))
    assert document == as_json
    assert Automation.model_validate(document).trigger.threshold == 3  # type: ignore[union-attr]

    document["trigger"]["threshold"] = 5
    edited = tmp_path / "edited.yaml"
    edited.write_text(yaml.safe_dump(document))
    assert "updated   etl keeps failing (version 2" in ok(cli("automation", "apply", "-f", str(edited)))


def test_pause_resume_delete(cli: Cli) -> None:
    ok(cli("automation", "apply", "-f", str(EXAMPLES / "three_failures.json")))
    assert "etl keeps failing is paused (version 2)" in ok(cli("automation", "pause", "etl keeps failing"))
    assert [a["enabled"] for a in listed(cli)] == [False]
    assert "etl keeps failing is enabled (version 3)" in ok(cli("automation", "resume", "etl keeps failing"))
    assert "deleted etl keeps failing" in ok(cli("automation", "delete", "etl keeps failing"))
    assert listed(cli) == []
    for command in ("inspect", "pause", "resume", "delete", "firings"):
        result = cli("automation", command, "etl keeps failing")
        assert result.exit_code == 1, command
        assert "no automation named 'etl keeps failing'" in result.stderr


# -- firings ------------------------------------------------------------------------------------------


def record_firings(settings: Settings, rows: list[FiringRow]) -> None:
    async def go() -> None:
        async with Database(settings.effective_database_url) as db:
            await FiringStore(db).record(rows)

    asyncio.run(go())


def test_firings_shows_why_it_fired(cli: Cli, api: ThreadedServer) -> None:
    ok(cli("automation", "apply", "-f", str(EXAMPLES / "three_failures.json")))
    assert "has not fired yet" in ok(cli("automation", "firings", "etl keeps failing"))
    automation_id = uuid.UUID(listed(cli)[0]["id"])
    event_id = uuid.uuid4()
    t0 = datetime.now(UTC) - timedelta(minutes=5)
    label = "related:deployment:tripwire.resource.id"
    fired = FiringRow(
        id=uuid.uuid4(),
        automation_id=automation_id,
        kind="triggered",
        labels={label: "tripwire.deployment.etl"},
        event_id=event_id,
        event_ids=[uuid.uuid4(), uuid.uuid4(), event_id],
        occurred=t0,
        actions=[ActionDescriptor(index=0, type="do-nothing", status="queued")],
    )
    resolved = fired.model_copy(
        update={
            "id": uuid.uuid4(),
            "kind": "resolved",
            "event_id": None,
            "occurred": t0 + timedelta(minutes=1),
        }
    )
    record_firings(api.settings, [fired, resolved])

    table = ok(cli("automation", "firings", "etl keeps failing"))
    assert f"{label}=tripwire.deployment.etl" in table
    assert str(event_id) in table
    assert "do-nothing (queued)" in table
    assert table.index("resolved") < table.index("triggered")  # newest first

    rows = json.loads(ok(cli("automation", "firings", "etl keeps failing", "--json", "--limit", "1")))
    assert [r["kind"] for r in rows] == ["resolved"]


def test_server_errors_are_shown_with_the_automation_name() -> None:
    names = ["first", "etl keeps failing"]
    line = "automations[1].trigger.threshold: too low"
    assert _named(line, names) == "'etl keeps failing': trigger.threshold: too low"
    assert _named("automations[0]: not an object", names) == "'first': not an object"
    assert _named("automations: missing", names) == "automations: missing"


# -- summaries ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("trigger", "text"),
    [
        pytest.param({"type": "event", "expect": ["a"], "threshold": 1}, "1\u00d7 a", id="every-event"),
        pytest.param(
            {"type": "event", "expect": ["a", "b"], "threshold": 2, "within": 90, "after": ["s"]},
            "2\u00d7 {a, b} after s / 90s",
            id="after",
        ),
        pytest.param(
            {"type": "event", "expect": ["hb"], "posture": "Proactive", "threshold": 1, "within": 3600},
            "fewer than 1\u00d7 hb / 1h",
            id="proactive",
        ),
        pytest.param(
            {
                "type": "compound",
                "require": 2,
                "within": 60,
                "triggers": [{"expect": ["a"]}, {"expect": ["b"]}],
            },
            "2 of: (1\u00d7 a); (1\u00d7 b) / 1m",
            id="compound",
        ),
        pytest.param(
            {"type": "sequence", "triggers": [{"expect": ["a"]}, {"match": {"x": "y"}}]},
            "sequence: (1\u00d7 a) \u2192 (1\u00d7 any event (filtered))",
            id="sequence",
        ),
    ],
)
def test_trigger_summaries(trigger: dict[str, Any], text: str) -> None:
    assert trigger_summary(trigger) == text


@pytest.mark.parametrize(("seconds", "text"), [(0, "no limit"), (600, "10m"), (90, "90s"), (86400, "1d")])
def test_durations(seconds: float, text: str) -> None:
    assert duration_text(seconds) == text


# -- replay ---------------------------------------------------------------------------------------------


def test_replay_reports_what_would_have_fired_over_history(cli: Cli, tmp_path: Path) -> None:
    rule = tmp_path / "rule.json"
    rule.write_text(json.dumps(a_document("replayed", threshold=2, within=600)))
    ok(cli("automation", "apply", "-f", str(rule)))
    for n in range(5):
        ok(cli("events", "emit", "tripwire.flow-run.Failed", "--resource", f"run-{n}"))
    deadline = datetime.now(UTC) + timedelta(seconds=20)
    while len(json.loads(ok(cli("events", "ls", "--json")))) < 5:  # the recorder is asynchronous
        assert datetime.now(UTC) < deadline, "the recorder did not store the events"
    report = json.loads(ok(cli("automation", "replay", "replayed", "--since", "1h", "--json")))
    # History also holds the engine's own events (the live firings' triggered events, action results).
    assert report["events_scanned"] >= 5
    assert report["fired"] == 2
    assert [f["kind"] for f in report["firings"]].count("triggered") == 2
    assert "2 firings" in ok(cli("automation", "replay", "replayed", "--since", "1h"))
    earlier = cli("automation", "replay", "replayed", "--since", "1h", "--until", "30m", "--json")
    assert json.loads(ok(earlier))["events_scanned"] == 0


def test_replay_of_an_unknown_automation_is_a_clear_error(cli: Cli) -> None:
    result = cli("automation", "replay", "nope", "--since", "1d")
    assert result.exit_code == 1
    assert "nope" in result.output
