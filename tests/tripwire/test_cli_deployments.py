"""``tripwire deploy``, ``deployment ...``, ``flow-run ...`` against a real API server (uvicorn in a thread,
private Redis, SQLite file); ``flow.deploy()`` through the same API."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from tests.tripwire.test_cli import ThreadedServer
from tripwire.cli.deployments import parse_params
from tripwire.cli.main import app
from tripwire.errors import ValidationFailed
from tripwire.orchestration.deployments import deploy_flow
from tripwire.settings import Settings

pytestmark = pytest.mark.redis

Cli = Callable[..., Any]

FLOW_SOURCE = """
from tripwire.orchestration.flows import flow


@flow(name="etl")
def etl(day: str, limit: int = 100, dry_run: bool = False) -> int:
    return limit
"""


@pytest.fixture
def api(settings: Settings) -> Iterator[ThreadedServer]:
    with ThreadedServer(settings) as server:
        yield server


@pytest.fixture
def cli(api: ThreadedServer) -> Cli:
    runner = CliRunner()

    def invoke(*args: str) -> Any:
        return runner.invoke(app, list(args), env={"TRIPWIRE_API_URL": api.url, "COLUMNS": "250"})

    return invoke


def ok(result: Any) -> str:
    assert result.exit_code == 0, result.output
    return str(result.stdout)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project directory: flows/pipeline_<unique>.py and deployments.yaml pointing at it relatively."""
    flows = tmp_path / "flows"
    flows.mkdir()
    source = flows / f"pipeline_{tmp_path.name.replace('-', '_')}.py"
    source.write_text(FLOW_SOURCE)
    documents = [
        {
            "name": "nightly-etl",
            "entrypoint": f"flows/{source.name}:etl",
            "parameters": {"day": "2026-11-21"},
            "tags": ["nightly"],
            "schedules": [{"cron": "0 2 * * *", "timezone": "Europe/Berlin", "active": False}],
        },
        {"name": "adhoc-etl", "entrypoint": f"flows/{source.name}:etl", "work_pool": "adhoc"},
    ]
    (tmp_path / "deployments.yaml").write_text(yaml.safe_dump(documents, sort_keys=False))
    return tmp_path


def test_deploy_reads_the_flow_and_is_idempotent(cli: Cli, project: Path) -> None:
    path = str(project / "deployments.yaml")
    out = ok(cli("deploy", "-f", path))
    assert "created   nightly-etl (version 1, 1 schedule(s)" in out
    assert "created   adhoc-etl (version 1, 0 schedule(s)" in out
    again = ok(cli("deploy", "-f", path))
    assert "unchanged nightly-etl" in again and "unchanged adhoc-etl" in again

    items = json.loads(ok(cli("deployment", "ls", "--json")))
    assert [d["name"] for d in items] == ["adhoc-etl", "nightly-etl"]
    nightly = items[1]
    assert nightly["flow_name"] == "etl"
    assert (
        nightly["entrypoint"]
        == f"{(project / 'flows').resolve()}/pipeline_{project.name.replace('-', '_')}.py:etl"
    )
    assert list(nightly["parameter_schema"]["properties"]) == ["day", "limit", "dry_run"]
    table = ok(cli("deployment", "ls"))
    assert "nightly-etl" in table and "cron 0 2 * * * (Europe/Berlin) (paused)" in table

    inspected = ok(cli("deployment", "inspect", "nightly-etl"))
    assert inspected.startswith(f"# nightly-etl: id {nightly['id']}, version 1")
    document = yaml.safe_load(inspected)
    assert document["schedules"] == [{"timezone": "Europe/Berlin", "active": False, "cron": "0 2 * * *"}]
    assert document["entrypoint"] == nightly["entrypoint"] and document["paused"] is False


def test_deploy_refuses_a_bad_file_and_applies_nothing(cli: Cli, project: Path) -> None:
    path = project / "broken.yaml"
    path.write_text(
        yaml.safe_dump(
            [
                {"name": "fine", "entrypoint": "flows/nope.py:etl", "flow_name": "x", "parameter_schema": {}},
                {"name": "zone", "entrypoint": "flows/nope.py:etl", "flow_name": "x", "parameter_schema": {},
                 "schedules": [{"cron": "0 9 * * *", "timezone": "Mars/Olympus"}]},
                {"name": "missing", "entrypoint": "flows/nope.py:etl"},
            ]
        )
    )  # fmt: skip
    result = cli("deploy", "-f", str(path))
    assert result.exit_code == 1
    assert f"{path}[1] 'zone': schedules[0].timezone: unknown time zone 'Mars/Olympus'" in result.stderr
    assert f"{path}[2] 'missing': entrypoint: no file {project / 'flows' / 'nope.py'}" in result.stderr
    assert "Traceback" not in result.output
    assert json.loads(ok(cli("deployment", "ls", "--json"))) == []


def test_run_with_a_bad_parameter_names_it(cli: Cli, project: Path) -> None:
    ok(cli("deploy", "-f", str(project / "deployments.yaml")))
    bad = cli("deployment", "run", "nightly-etl", "--param", "limit=bad")
    assert bad.exit_code == 1
    assert "deployment 'nightly-etl' refused the run:" in bad.stderr
    assert 'parameters.limit: expected an integer, got "bad"' in bad.stderr
    unknown = cli("deployment", "run", "nightly-etl", "--param", "size=3")
    assert "parameters.size: unknown parameter; etl takes day, limit, dry_run" in unknown.stderr
    missing = cli("deployment", "run", "adhoc-etl")
    assert "parameters.day: required parameter is missing" in missing.stderr
    malformed = cli("deployment", "run", "nightly-etl", "--param", "limit")
    assert malformed.exit_code == 1 and "--param limit: give NAME=VALUE" in malformed.stderr
    assert json.loads(ok(cli("flow-run", "ls", "--json"))) == []


def test_run_ls_inspect_cancel(cli: Cli, project: Path) -> None:
    ok(cli("deploy", "-f", str(project / "deployments.yaml")))
    out = ok(
        cli("deployment", "run", "adhoc-etl", "-p", "day=2026-11-22", "-p", "limit=5", "--tag", "manual")
    )
    assert out.startswith("created flow run ") and "is Scheduled for" in out
    [run] = json.loads(ok(cli("flow-run", "ls", "--json", "--deployment", "adhoc-etl")))
    assert run["parameters"] == {"day": "2026-11-22", "limit": 5}
    assert run["tags"] == ["manual"] and run["work_pool"] == "adhoc"
    assert run["name"] in ok(cli("flow-run", "ls", "--state", "Scheduled"))
    assert json.loads(ok(cli("flow-run", "ls", "--json", "--state", "Running"))) == []
    inspected = yaml.safe_load(ok(cli("flow-run", "inspect", run["id"])))
    assert inspected["id"] == run["id"] and inspected["deployment_name"] == "adhoc-etl"

    waited = cli("deployment", "run", "adhoc-etl", "-p", "day=2026-11-23", "--wait", "--timeout", "0")
    assert waited.exit_code == 1 and "still Scheduled after 0 s" in waited.stdout

    cancelled = ok(cli("flow-run", "cancel", run["id"]))
    assert f"({run['id']}) is Cancelled" in cancelled
    again = cli("flow-run", "cancel", run["id"])
    assert again.exit_code == 1 and "already Cancelled; nothing to cancel" in again.stderr
    assert cli("flow-run", "inspect", "0e6a5a3b-0000-4000-8000-000000000000").exit_code == 1


def test_pause_resume_and_schedules(cli: Cli, project: Path) -> None:
    ok(cli("deploy", "-f", str(project / "deployments.yaml")))
    assert "nightly-etl is paused (version 2)" in ok(cli("deployment", "pause", "nightly-etl"))
    assert "nightly-etl is paused (already)" in ok(cli("deployment", "pause", "nightly-etl"))
    assert "nightly-etl is active (version 3)" in ok(cli("deployment", "resume", "nightly-etl"))
    resumed = ok(cli("deployment", "schedule", "resume", "nightly-etl"))
    assert "nightly-etl schedule 0 (cron 0 2 * * * (Europe/Berlin)) is active" in resumed
    paused = ok(cli("deployment", "schedule", "pause", "nightly-etl", "0"))
    assert "schedule 0 (cron 0 2 * * * (Europe/Berlin)) is paused" in paused
    missing = cli("deployment", "schedule", "pause", "nightly-etl", "3")
    assert missing.exit_code == 1 and "has no schedule '3'" in missing.stderr
    assert "has no schedules" in ok(cli("deployment", "schedule", "pause", "adhoc-etl"))
    assert "deleted adhoc-etl" in ok(cli("deployment", "delete", "adhoc-etl"))
    gone = cli("deployment", "inspect", "adhoc-etl")
    assert gone.exit_code == 1 and "no deployment with id or name 'adhoc-etl'" in gone.stderr


def test_flow_deploy_goes_through_the_api(
    api: ThreadedServer, settings: Settings, project: Path, cli: Cli
) -> None:
    from tripwire.orchestration.flows import load_flow

    client_settings = settings.model_copy(update={"api_url": api.url})
    flow = load_flow(f"{project / 'flows'}/pipeline_{project.name.replace('-', '_')}.py:etl")
    deployment = flow.deploy(
        "from-python", cron="0 6 * * 1-5", timezone="Europe/Berlin", parameters={"day": "2026-11-21"},
        tags=["py"], paused=True, settings=client_settings,
    )  # fmt: skip
    assert (deployment.name, deployment.flow_name, deployment.paused) == ("from-python", "etl", True)
    assert [s.summary for s in deployment.schedules] == ["cron 0 6 * * 1-5 (Europe/Berlin)"]
    assert deployment.entrypoint == flow.entrypoint

    class StandIn:
        """The three attributes deploy_flow uses, without the flow engine."""

        name = "standin"
        entrypoint = "my_package.flows:standin"

        def parameter_schema(self) -> dict[str, Any]:
            return {"type": "object", "properties": {"n": {"type": "integer"}}, "additionalProperties": False}

    stored = deploy_flow(StandIn(), "standin-every-hour", interval=3600, settings=client_settings)
    assert stored.work_pool == "default" and stored.schedules[0].summary == "every 1h"
    again = deploy_flow(StandIn(), "standin-every-hour", interval=3600, settings=client_settings)
    assert again.version == 1  # unchanged
    with pytest.raises(ValidationFailed) as caught:
        deploy_flow(StandIn(), "standin-bad", parameters={"n": "x"}, settings=client_settings)
    assert caught.value.errors[0][0] == "parameters.n"
    with pytest.raises(ValidationFailed) as caught:
        deploy_flow(StandIn(), "standin-bad", cron="every day", settings=client_settings)
    assert caught.value.errors[0][0] == "schedules[0].cron"
    assert "from-python" in ok(cli("deployment", "ls"))


@pytest.mark.parametrize(
    ("pairs", "schema", "expected"),
    [
        pytest.param(["n=3", "ok=true", "xs=[1, 2]"], None, {"n": 3, "ok": True, "xs": [1, 2]}, id="json"),
        pytest.param(["who=world", "empty="], None, {"who": "world", "empty": ""}, id="strings"),
        pytest.param(["v=1.10", "n=1.10"], {"properties": {"v": {"type": "string"}}}, {"v": "1.10", "n": 1.1},
                     id="string-parameter-stays-a-string"),
        pytest.param(["expr=a=b"], None, {"expr": "a=b"}, id="equals-in-value"),
    ],
)  # fmt: skip
def test_parse_params(pairs: list[str], schema: dict[str, Any] | None, expected: dict[str, Any]) -> None:
    assert parse_params(pairs, schema) == expected
