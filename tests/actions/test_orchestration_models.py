"""Models of the orchestration actions, and the run-deployment loop guard at save time."""

from __future__ import annotations

import pytest

from triggers.files import parse_automation as validate_document
from tripwire.errors import ValidationFailed

DEPLOYMENT_ETL = {"tripwire.resource.role": "deployment", "tripwire.resource.name": "etl"}


def automation(trigger: dict, *actions: dict) -> dict:
    return {"name": "a", "trigger": {"type": "event", **trigger}, "actions": list(actions)}


def refused(document: dict) -> str:
    with pytest.raises(ValidationFailed) as caught:
        validate_document(document)
    return str(caught.value)


@pytest.mark.parametrize(
    ("trigger", "action"),
    [
        pytest.param(
            {"expect": ["tripwire.flow-run.Completed"], "match_related": DEPLOYMENT_ETL},
            {"type": "run-deployment", "deployment": "etl"},
            id="completed-of-etl-runs-etl",
        ),
        pytest.param(
            {"expect": ["tripwire.flow-run.*"]},
            {"type": "run-deployment", "source": "inferred"},
            id="any-state-runs-the-same-deployment",
        ),
        pytest.param(
            {
                "expect": ["tripwire.flow-run.Running"],
                "match_related": {"tripwire.resource.role": "deployment"},
            },
            {"type": "run-deployment", "deployment": "etl"},
            id="running-of-any-deployment",
        ),
        pytest.param(
            {"expect": ["tripwire.flow-run.Scheduled"], "match_related": {"tripwire.resource.role": "flow"}},
            {"type": "run-deployment", "source": "inferred"},
            id="same-flow-inferred",
        ),
    ],
)
def test_run_deployment_that_refires_itself_is_refused(trigger: dict, action: dict) -> None:
    message = refused(automation(trigger, action))
    assert "actions[0]: run-deployment starts a run whose own flow-run events" in message


@pytest.mark.parametrize(
    ("trigger", "actions"),
    [
        pytest.param(
            {"expect": ["tripwire.flow-run.Failed"], "match_related": DEPLOYMENT_ETL},
            [{"type": "run-deployment", "source": "inferred"}],
            id="rerun-on-failure",
        ),
        pytest.param(
            {"expect": ["tripwire.flow-run.Completed"], "match_related": DEPLOYMENT_ETL},
            [{"type": "run-deployment", "deployment": "report"}],
            id="chain-to-another-deployment",
        ),
        pytest.param(
            {"expect": ["tripwire.flow-run.Completed"], "threshold": 2, "within": 60},
            [{"type": "run-deployment", "deployment": "etl"}],
            id="one-run-cannot-reach-threshold-2",
        ),
        pytest.param(
            {"expect": ["github.push"]},
            [
                {
                    "type": "run-deployment",
                    "deployment": "deploy",
                    "parameters": {"sha": "{{ event.payload.sha }}"},
                }
            ],
            id="webhook-runs-deployment",
        ),
    ],
)
def test_bounded_run_deployment_is_accepted(trigger: dict, actions: list[dict]) -> None:
    validate_document(automation(trigger, *actions))


def test_run_deployment_refused_when_two_actions_reach_the_threshold() -> None:
    trigger = {"expect": ["tripwire.flow-run.Completed"], "threshold": 2, "within": 60}
    message = refused(automation(trigger, *[{"type": "run-deployment", "deployment": "etl"}] * 2))
    assert "actions[0], actions[1]: run-deployment" in message


@pytest.mark.parametrize(
    ("action", "location", "text"),
    [
        ({"type": "pause-schedule", "deployment": "etl"}, "actions[0]", "needs `schedule`"),
        ({"type": "cancel-flow-run", "source": "selected"}, "actions[0]", "needs `flow_run`"),
        (
            {"type": "change-flow-run-state", "state": "Done"},
            "actions[0].state",
            "Input should be",
        ),
        ({"type": "run-deployment", "deployment": "x", "parameters": ["a"]}, "actions[0]", "JSON object"),
        ({"type": "run-deployment", "deployment": "x", "parameters": {"a": "{{ x"}}, "actions[0]", "a:"),
        (
            {"type": "resume-deployment", "source": "inferred", "deployment": "x"},
            "actions[0]",
            "only used with",
        ),
    ],
)
def test_bad_orchestration_actions_name_the_field(action: dict, location: str, text: str) -> None:
    message = refused(automation({"expect": ["x.y"]}, action))
    assert location in message and text in message


def test_target_defaults_to_selected_or_inferred() -> None:
    from triggers.models import Automation

    parsed = Automation.model_validate(
        automation(
            {"expect": ["x"]}, {"type": "pause-deployment", "deployment": "etl"}, {"type": "cancel-flow-run"}
        )
    )
    assert [a.source for a in parsed.actions] == ["selected", "inferred"]
