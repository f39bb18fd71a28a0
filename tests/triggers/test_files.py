"""Automations from JSON, YAML and Python files: same models, and errors naming file, automation and field."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from tests.conftest import REPO
from triggers.files import (
    apply_document,
    automation_errors,
    load_automation_files,
    load_automations,
    parse_automation,
)
from triggers.models import Automation, EventTrigger
from tripwire.errors import NotFound, ValidationFailed

EXAMPLES = REPO / "examples" / "automations"

FAILED = {"type": "event", "expect": ["tripwire.flow-run.Failed"]}


def an_automation(name: str = "etl keeps failing", **trigger: Any) -> dict[str, Any]:
    return {"name": name, "trigger": {**FAILED, **trigger}, "actions": [{"type": "do-nothing"}]}


def without_id(automation: Automation) -> dict[str, Any]:
    return automation.model_dump(mode="json", exclude={"id"})


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def refused(path: Path) -> list[tuple[str, str]]:
    with pytest.raises(ValidationFailed) as caught:
        load_automations(path)
    return caught.value.errors


# -- the three formats ---------------------------------------------------------------------------------


def test_the_example_files_hold_the_same_automation_in_three_formats() -> None:
    [from_json] = load_automations(EXAMPLES / "three_failures.json")
    [from_yaml] = load_automations(EXAMPLES / "three_failures.yaml")
    from_python = load_automations(EXAMPLES / "heartbeat.py")
    assert without_id(from_json) == without_id(from_yaml) == without_id(from_python[0])
    assert from_json.trigger == from_yaml.trigger == from_python[0].trigger
    assert [a.name for a in from_python] == ["etl keeps failing", "worker went quiet"]
    assert from_python[1].trigger.posture == "Proactive"  # type: ignore[union-attr]


def test_the_python_example_runs_as_a_program() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "heartbeat.py")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    documents = json.loads(result.stdout)
    assert [Automation.model_validate(d).name for d in documents] == [
        "etl keeps failing",
        "worker went quiet",
    ]


@pytest.mark.parametrize(
    "shape",
    [
        pytest.param(lambda docs: docs[0], id="one-object"),
        pytest.param(lambda docs: docs, id="list"),
        pytest.param(lambda docs: {"automations": docs}, id="automations-key"),
    ],
)
@pytest.mark.parametrize("suffix", [".json", ".yaml", ".yml"])
def test_json_and_yaml_hold_one_or_a_list(tmp_path: Path, shape: Any, suffix: str) -> None:
    docs = [an_automation("a"), an_automation("b", threshold=2)]
    data = shape(docs)
    text = json.dumps(data) if suffix == ".json" else yaml.safe_dump(data)
    found = load_automations(write(tmp_path / f"rules{suffix}", text))
    expected = [Automation.model_validate(d) for d in (docs if isinstance(data, list | dict) else [data])]
    if isinstance(data, dict) and "name" in data:
        expected = expected[:1]
    assert [without_id(a) for a in found] == [without_id(a) for a in expected]


def test_python_module_level_instances_are_collected_without_a_list(tmp_path: Path) -> None:
    path = write(
        tmp_path / "rules.py",
        """
        from triggers.models import Automation, EventTrigger

        first = Automation(name="first", trigger=EventTrigger(expect=["a.*"]))
        second = Automation(name="second", trigger=EventTrigger(expect=["b.*"], threshold=2, within=60))
        alias = first  # the same object is collected once
        not_an_automation = {"name": "ignored"}
        """,
    )
    assert [a.name for a in load_automations(path)] == ["first", "second"]


def test_python_automations_list_may_hold_dicts_and_import_siblings(tmp_path: Path) -> None:
    write(tmp_path / "shared.py", "EXPECT = ['tripwire.flow-run.Failed']\n")
    path = write(
        tmp_path / "rules.py",
        """
        from shared import EXPECT
        from triggers.models import Automation, EventTrigger

        automations = [
            Automation(name="typed", trigger=EventTrigger(expect=EXPECT)),
            {"name": "plain", "trigger": {"type": "event", "expect": EXPECT}},
        ]
        unlisted = Automation(name="not in the list", trigger=EventTrigger(expect=["x"]))
        """,
    )
    found = load_automations(path)
    assert [a.name for a in found] == ["typed", "plain"]
    assert found[0].trigger == found[1].trigger
    assert str(tmp_path) not in sys.path  # restored after the module ran


def test_id_and_enabled_stay_unset_unless_the_source_sets_them(tmp_path: Path) -> None:
    path = write(
        tmp_path / "rules.yaml",
        """
        - {name: a, trigger: {type: event, expect: [x]}}
        - name: b
          enabled: false
          id: 7a4c61c2-5b7c-4b1a-9d43-5e2a0f2b8d11
          trigger: {type: event, expect: [x]}
        """,
    )
    a, b = load_automations(path)
    assert {"id", "enabled"}.isdisjoint(a.model_fields_set)
    assert {"id", "enabled"} <= b.model_fields_set
    assert "id" not in apply_document(a) and "enabled" not in apply_document(a)
    assert apply_document(b)["enabled"] is False
    assert apply_document(b)["id"] == "7a4c61c2-5b7c-4b1a-9d43-5e2a0f2b8d11"


# -- errors name the file, the automation and the field -------------------------------------------------


@pytest.mark.parametrize(
    ("trigger", "loc", "says"),
    [
        pytest.param({"bogus": 1}, "trigger.bogus", "unknown field", id="unknown-field"),
        pytest.param({"threshold": 0}, "trigger.threshold", "at least 1", id="threshold-zero"),
        pytest.param(
            {"posture": "Proactive", "within": 5},
            "trigger",
            "within must be at least 10",
            id="proactive-within",
        ),
        pytest.param({"where": {"$.[[": 1}}, "trigger.where", "not a valid jsonpath", id="bad-jsonpath"),
        pytest.param(
            {"expect": [], "after": [], "match": {}},
            "trigger",
            "would match every event",
            id="matches-itself",
        ),
        pytest.param(
            {"match": {"a": 5}}, "trigger.match.a", "a valid string or a valid list", id="bad-pattern"
        ),
    ],
)
def test_errors_name_file_index_name_and_field(tmp_path: Path, trigger: dict, loc: str, says: str) -> None:
    path = write(
        tmp_path / "rules.json", json.dumps([an_automation("fine"), an_automation("broken", **trigger)])
    )
    [(where, message)] = refused(path)
    assert where == f"{path}[1] 'broken': {loc}"
    assert says in message


def test_every_bad_automation_is_reported_at_once(tmp_path: Path) -> None:
    path = write(
        tmp_path / "rules.yaml",
        """
        - {name: one, trigger: {type: event, expect: [x], threshold: 0}}
        - {name: two, trigger: {type: compound, triggers: [{type: event, expect: [y], bogus: 1}]}}
        - {trigger: {type: event, expect: [x]}}
        - [not, an, object]
        """,
    )
    assert [loc for loc, _ in refused(path)] == [
        f"{path}[0] 'one': trigger.threshold",
        f"{path}[1] 'two': trigger.triggers[0].bogus",
        f"{path}[2]: name",
        f"{path}[3]",
    ]


def test_a_single_object_file_is_named_without_an_index(tmp_path: Path) -> None:
    path = write(tmp_path / "one.json", json.dumps(an_automation("solo", threshold=0)))
    assert [loc for loc, _ in refused(path)] == [f"{path} 'solo': trigger.threshold"]


@pytest.mark.parametrize(
    ("name", "text", "says"),
    [
        pytest.param(
            "bad.json", '{"name": "a",\n  "trigger": }', "not valid JSON at line 2, column 14", id="json"
        ),
        pytest.param("bad.yaml", "name: a\ntrigger: [unclosed\n", "not valid YAML at line 3", id="yaml"),
        pytest.param("bad.yaml", "just text\n", "not a string", id="yaml-scalar"),
        pytest.param("empty.yaml", "[]\n", "holds no automations", id="empty-list"),
        pytest.param("rules.txt", "{}", "unsupported type '.txt'", id="suffix"),
        pytest.param(
            "bad.json", '{"automations": {"name": "a"}}', "must be a list", id="automations-not-list"
        ),
    ],
)
def test_unreadable_files_are_explained(tmp_path: Path, name: str, text: str, says: str) -> None:
    path = write(tmp_path / name, text)
    [(where, message)] = refused(path)
    assert where.startswith(str(path))
    assert says in message


def test_a_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="no such file"):
        load_automations(tmp_path / "nope.yaml")
    with pytest.raises(NotFound, match="no such file"):
        load_automations(tmp_path / "nope.py")


@pytest.mark.parametrize(
    ("source", "where", "says"),
    [
        pytest.param(
            "from triggers.models import EventTrigger\n\nt = EventTrigger(expect=['x'], threshold=0)\n",
            ":3: threshold",
            "at least 1",
            id="invalid-model",
        ),
        pytest.param("x = 1\nraise RuntimeError('boom')\n", ":2", "RuntimeError: boom", id="raises"),
        pytest.param("def broken(:\n", ":1", "SyntaxError", id="syntax-error"),
        pytest.param("x = 1\n", "", "defines no automations", id="no-automations"),
        pytest.param("automations = 'oops'\n", ": automations", "must be a list", id="not-a-list"),
        pytest.param(
            "automations = [1]\n", ": automations[0]", "must be an Automation", id="not-automations"
        ),
    ],
)
def test_python_files_that_fail_are_explained(tmp_path: Path, source: str, where: str, says: str) -> None:
    path = write(tmp_path / "rules.py", source)
    [(loc, message)] = refused(path)
    assert loc == f"{path}{where}"
    assert says in message


def test_a_mutated_python_automation_is_revalidated(tmp_path: Path) -> None:
    path = write(
        tmp_path / "rules.py",
        """
        from triggers.models import Automation, EventTrigger

        rule = Automation(name="mutated", trigger=EventTrigger(expect=["x"]))
        rule.trigger.threshold = 0  # no validate_assignment: only the loader notices
        """,
    )
    [(where, message)] = refused(path)
    assert where == f"{path}[0] 'mutated': trigger.threshold"
    assert "at least 1" in message


def test_names_must_be_unique_across_files(tmp_path: Path) -> None:
    first = write(tmp_path / "a.json", json.dumps(an_automation("same")))
    second = write(tmp_path / "b.yaml", yaml.safe_dump([an_automation("other"), an_automation("same")]))
    with pytest.raises(ValidationFailed) as caught:
        load_automation_files([first, second])
    [(where, message)] = caught.value.errors
    assert where == f"{second} 'same': name"
    assert str(first) in message


def test_all_files_are_checked_before_any_is_returned(tmp_path: Path) -> None:
    good = write(tmp_path / "good.json", json.dumps(an_automation("good")))
    bad = write(tmp_path / "bad.json", json.dumps(an_automation("bad", threshold=0)))
    worse = write(tmp_path / "worse.json", json.dumps(an_automation("worse", bogus=1)))
    with pytest.raises(ValidationFailed) as caught:
        load_automation_files([good, bad, worse])
    assert [loc.split(":")[0].split(" ")[0] for loc, _ in caught.value.errors] == [str(bad), str(worse)]
    assert [a.name for a in load_automation_files([good])] == ["good"]


# -- error locations ----------------------------------------------------------------------------------


def test_union_tags_are_left_out_of_locations() -> None:
    document = {
        "name": "nested",
        "trigger": {
            "type": "sequence",
            "triggers": [{**FAILED}, {"type": "compound", "triggers": [{**FAILED, "threshold": 0}]}],
        },
        "actions": [{"type": "nope"}],
    }
    with pytest.raises(ValidationError) as caught:
        Automation.model_validate(document)
    locs = [loc for loc, _ in automation_errors(caught.value, document)]
    assert locs == ["trigger.triggers[1].triggers[0].threshold", "actions[0]"]


def test_parse_automation_prefixes_where() -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_automation({"trigger": FAILED}, "api")
    assert caught.value.errors == [("api: name", "Field required")]
    with pytest.raises(ValidationFailed) as caught:
        parse_automation([1, 2])
    assert caught.value.errors == [("", "an automation must be an object, not a list")]
    assert parse_automation(an_automation()).trigger == EventTrigger(expect=["tripwire.flow-run.Failed"])
