"""CloudEvents → Event mapping (pure): attributes, data, dedup ids, extensions, errors, binary headers."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any
from uuid import NAMESPACE_URL, uuid5

import pytest

from events.model import RESOURCE_ID
from tripwire.api.cloudevents import (
    binary_to_cloudevent,
    cloudevent_to_event,
    cloudevents_to_events,
    event_id_for,
    is_binary,
    is_json_media_type,
    media_type,
)
from tripwire.api.errors import MalformedRequest
from tripwire.errors import EventRejected


def cloud_event(**overrides: Any) -> dict[str, Any]:
    ce: dict[str, Any] = {
        "specversion": "1.0",
        "id": "A234-1234-1234",
        "source": "https://github.com/cloudevents/spec/pull",
        "type": "com.github.pull_request.opened",
    }
    ce.update(overrides)
    return {k: v for k, v in ce.items() if v is not ...}


def locs(exc: pytest.ExceptionInfo[EventRejected]) -> dict[str, str]:
    return dict(exc.value.errors)


def test_minimal_cloudevent_maps_type_source_and_dedup_id() -> None:
    event = cloudevent_to_event(cloud_event())
    assert event.event == "com.github.pull_request.opened"
    assert event.resource == {
        RESOURCE_ID: "https://github.com/cloudevents/spec/pull",
        "cloudevents.source": "https://github.com/cloudevents/spec/pull",
        "cloudevents.id": "A234-1234-1234",
    }
    assert event.payload == {}
    assert event.id == uuid5(NAMESPACE_URL, "https://github.com/cloudevents/spec/pull\nA234-1234-1234")


def test_full_cloudevent_maps_every_attribute() -> None:
    event = cloudevent_to_event(
        cloud_event(
            subject="123",
            time="2018-04-05T17:31:00Z",
            datacontenttype="application/json",
            dataschema="https://example.com/schema.json",
            comexampleextension1="value",
            traced=True,
            priority=3,
            data={"number": 123, "nested": {"ok": True}},
        )
    )
    assert event.resource[RESOURCE_ID] == "123"
    assert event.occurred == datetime(2018, 4, 5, 17, 31, tzinfo=UTC)
    assert event.payload == {"number": 123, "nested": {"ok": True}}
    assert event.resource["cloudevents.datacontenttype"] == "application/json"
    assert event.resource["cloudevents.dataschema"] == "https://example.com/schema.json"
    assert event.resource["cloudevents.comexampleextension1"] == "value"
    assert event.resource["cloudevents.traced"] == "true"
    assert event.resource["cloudevents.priority"] == "3"


@pytest.mark.parametrize(
    ("data", "payload"),
    [
        pytest.param('<much wow="xml"/>', {"data": '<much wow="xml"/>'}, id="string"),
        pytest.param([1, 2, 3], {"data": [1, 2, 3]}, id="array"),
        pytest.param(42, {"data": 42}, id="number"),
        pytest.param(False, {"data": False}, id="boolean"),
        pytest.param(None, {}, id="null-is-absent"),
        pytest.param({}, {}, id="empty-object"),
    ],
)
def test_non_object_data_is_wrapped(data: Any, payload: dict[str, Any]) -> None:
    assert cloudevent_to_event(cloud_event(data=data)).payload == payload


def test_data_base64_is_kept() -> None:
    encoded = base64.b64encode(b"\x00\x01binary").decode()
    assert cloudevent_to_event(cloud_event(data_base64=encoded)).payload == {"data_base64": encoded}


def test_same_source_and_id_give_the_same_event_id() -> None:
    first = cloudevent_to_event(cloud_event(data={"n": 1}))
    again = cloudevent_to_event(cloud_event(data={"n": 2}, time="2030-01-01T00:00:00Z"))
    other_source = cloudevent_to_event(cloud_event(source="/other"))
    assert first.id == again.id == event_id_for(cloud_event()["source"], cloud_event()["id"])
    assert other_source.id != first.id


def test_id_derivation_separates_source_and_id() -> None:
    assert event_id_for("ab", "c") != event_id_for("a", "bc")


def test_time_with_offset_is_converted_to_utc_and_naive_is_utc() -> None:
    assert cloudevent_to_event(cloud_event(time="2024-01-01T12:00:00+02:00")).occurred == datetime(
        2024, 1, 1, 10, tzinfo=UTC
    )
    assert cloudevent_to_event(cloud_event(time="2024-01-01T12:00:00")).occurred == datetime(
        2024, 1, 1, 12, tzinfo=UTC
    )


def test_missing_required_attributes_are_all_named() -> None:
    with pytest.raises(EventRejected) as exc:
        cloudevent_to_event({"specversion": "1.0", "data": {}}, loc="events[0].")
    assert locs(exc) == {
        "events[0].id": "missing required CloudEvents attribute",
        "events[0].source": "missing required CloudEvents attribute",
        "events[0].type": "missing required CloudEvents attribute",
    }


@pytest.mark.parametrize(
    ("overrides", "loc", "fragment"),
    [
        pytest.param(
            {"specversion": "0.3"}, "specversion", "unsupported CloudEvents version '0.3'", id="old-spec"
        ),
        pytest.param({"specversion": ...}, "specversion", "missing required", id="no-specversion"),
        pytest.param({"id": ""}, "id", "non-empty string", id="empty-id"),
        pytest.param({"source": 7}, "source", "non-empty string", id="numeric-source"),
        pytest.param({"type": "x" * 1025}, "type", "longer than 1024", id="long-type"),
        pytest.param({"time": "yesterday"}, "time", "not an RFC 3339 timestamp", id="bad-time"),
        pytest.param({"subject": 5}, "subject", "must be a string", id="numeric-subject"),
        pytest.param(
            {"Bad-Name": "x"}, "Bad-Name", "not a valid CloudEvents attribute name", id="bad-ext-name"
        ),
        pytest.param({"ext": {"a": 1}}, "ext", "strings, integers or booleans", id="object-extension"),
        pytest.param({"ext": 1.5}, "ext", "strings, integers or booleans", id="float-extension"),
        pytest.param({"data": {}, "data_base64": "AA=="}, "data_base64", "not both", id="data-and-base64"),
        pytest.param({"data_base64": "!!!"}, "data_base64", "not valid base64", id="bad-base64"),
    ],
)
def test_invalid_attributes_are_rejected_by_name(overrides: dict[str, Any], loc: str, fragment: str) -> None:
    with pytest.raises(EventRejected) as exc:
        cloudevent_to_event(cloud_event(**overrides), loc="events[2].")
    assert fragment in locs(exc)[f"events[2].{loc}"]


def test_not_an_object_is_rejected() -> None:
    with pytest.raises(EventRejected) as exc:
        cloudevent_to_event(["not", "an", "object"], loc="events[1].")
    assert "must be a JSON object" in locs(exc)["events[1]"]


def test_batch_maps_every_member_and_reports_all_errors_together() -> None:
    events = cloudevents_to_events([cloud_event(id="1"), cloud_event(id="2")])
    assert [e.resource["cloudevents.id"] for e in events] == ["1", "2"]
    with pytest.raises(EventRejected) as exc:
        cloudevents_to_events([cloud_event(), cloud_event(type=...), "nope", cloud_event(source=...)])
    assert set(locs(exc)) == {"events[1].type", "events[2]", "events[3].source"}
    with pytest.raises(EventRejected, match="must be a JSON array"):
        cloudevents_to_events(cloud_event())


def test_binary_mode_reads_headers_and_json_body() -> None:
    headers = [
        ("ce-specversion", "1.0"),
        ("ce-type", "com.example.object.deleted"),
        ("ce-source", "/mycontext/subcontext"),
        ("ce-id", "1234-1234-1234"),
        ("ce-subject", "bucket%2Fobject%20name"),
        ("ce-time", "2018-04-05T03:56:24Z"),
        ("CE-Tenant", "acme"),
        ("content-length", "17"),
    ]
    assert is_binary(dict(headers))
    ce = binary_to_cloudevent(headers, "application/json; charset=utf-8", b'{"deleted": true}')
    event = cloudevent_to_event(ce, loc="headers.ce-")
    assert event.event == "com.example.object.deleted"
    assert event.resource[RESOURCE_ID] == "bucket/object name"  # percent-decoded
    assert event.resource["cloudevents.tenant"] == "acme"
    assert event.resource["cloudevents.datacontenttype"] == "application/json; charset=utf-8"
    assert event.payload == {"deleted": True}
    assert event.occurred == datetime(2018, 4, 5, 3, 56, 24, tzinfo=UTC)
    assert event.id == event_id_for("/mycontext/subcontext", "1234-1234-1234")


@pytest.mark.parametrize(
    ("content_type", "body", "payload"),
    [
        pytest.param("text/plain", "héllo".encode(), {"data": "héllo"}, id="text"),
        pytest.param("application/octet-stream", b"\x00\xff", {"data_base64": "AP8="}, id="bytes"),
        pytest.param(None, b"[1, 2]", {"data": [1, 2]}, id="no-content-type-is-json"),
        pytest.param("application/vnd.thing+json", b'"s"', {"data": "s"}, id="plus-json"),
        pytest.param("application/json", b"", {}, id="empty-body"),
    ],
)
def test_binary_mode_body_by_content_type(
    content_type: str | None, body: bytes, payload: dict[str, Any]
) -> None:
    headers = [("ce-specversion", "1.0"), ("ce-type", "t"), ("ce-source", "s"), ("ce-id", "1")]
    assert cloudevent_to_event(binary_to_cloudevent(headers, content_type, body)).payload == payload


def test_binary_mode_missing_headers_are_named() -> None:
    ce = binary_to_cloudevent([("ce-specversion", "1.0"), ("ce-type", "t")], None, b"")
    with pytest.raises(EventRejected) as exc:
        cloudevent_to_event(ce, loc="headers.ce-")
    assert set(locs(exc)) == {"headers.ce-id", "headers.ce-source"}


def test_binary_mode_malformed_json_body_names_the_position() -> None:
    with pytest.raises(MalformedRequest, match=r"line 1, column 9"):
        binary_to_cloudevent([("ce-specversion", "1.0")], "application/json", b'{"a": 1,}')


def test_media_type_helpers() -> None:
    assert media_type("Application/CloudEvents+JSON; charset=UTF-8") == "application/cloudevents+json"
    assert media_type(None) == ""
    assert is_json_media_type("application/json")
    assert is_json_media_type("application/cloudevents+json")
    assert not is_json_media_type("text/plain")
    assert not is_binary({"content-type": "application/json"})
