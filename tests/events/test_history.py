"""History queries on SQLite and PostgreSQL: paging, every filter, globs, cursors, validation."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from events.history import (
    MAX_LIMIT,
    EventFilter,
    decode_cursor,
    encode_cursor,
    get_event,
    query_events,
)
from events.model import Event
from events.recorder import Recorder
from tripwire.db import Database
from tripwire.errors import ValidationFailed

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def make_event(name: str, resource: str, at_s: float = 0, related: dict[str, str] | None = None) -> Event:
    """An event ``at_s`` seconds after T0; ``related`` maps role -> resource id."""
    return Event(
        occurred=T0 + timedelta(seconds=at_s),
        event=name,
        resource={"tripwire.resource.id": resource},
        related=[
            {"tripwire.resource.id": rid, "tripwire.resource.role": role}
            for role, rid in (related or {}).items()
        ],
    )


async def store(db: Database, *evs: Event) -> list[Event]:
    await Recorder(db).record(list(evs))
    return list(evs)


def newest_first(evs: list[Event]) -> list[Event]:
    return sorted(evs, key=lambda e: (e.occurred, e.id.hex), reverse=True)


async def names_matching(db: Database, **flt: Any) -> list[str]:
    page = await query_events(db, EventFilter(**flt), limit=MAX_LIMIT)
    return sorted(e.event for e in page.events)


async def test_paging_returns_every_event_once_newest_first(database: Database) -> None:
    # 3 events per second for 9 seconds: many share one `occurred`, so pages split ties
    stored = await store(database, *(make_event(f"e.{i}", f"r.{i}", at_s=i // 3) for i in range(27)))
    seen: list[Event] = []
    cursor = None
    pages = 0
    while True:
        page = await query_events(database, EventFilter(), limit=4, cursor=cursor)
        seen.extend(page.events)
        pages += 1
        assert len(page.events) == 4 or page.next_cursor is None
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert pages == 7
    assert seen == newest_first(stored)
    # ids compare the same way in both databases and in Python (native uuid / 32 hex digits / .hex)


async def test_an_exact_last_page_has_no_next_cursor(database: Database) -> None:
    await store(database, *(make_event("e", "r", at_s=i) for i in range(4)))
    first = await query_events(database, EventFilter(), limit=2)
    assert first.next_cursor is not None
    second = await query_events(database, EventFilter(), limit=2, cursor=first.next_cursor)
    assert len(second.events) == 2 and second.next_cursor is None
    assert (await query_events(database)).events == first.events + second.events


async def test_empty_history(database: Database) -> None:
    page = await query_events(database, EventFilter(names=["nothing.*"]))
    assert page.events == [] and page.next_cursor is None


async def test_name_globs_any_of_whole_name_case_sensitive(database: Database) -> None:
    names = [
        "tripwire.flow-run.Failed",
        "tripwire.flow-run.Completed",
        "tripwire.flow-run.FailedHard",
        "tripwire.deployment.paused",
        "github.pull_request.opened",
        "github.pullXrequest.opened",
        "odd%name",
        "odd_name",
        "oddXname",
        "with[bracket]",
        "back\\slash",
    ]
    await store(database, *(make_event(n, "r", at_s=i) for i, n in enumerate(names)))

    assert await names_matching(database, names=["tripwire.flow-run.Failed"]) == ["tripwire.flow-run.Failed"]
    assert await names_matching(database, names=["tripwire.flow-run.*"]) == [
        "tripwire.flow-run.Completed",
        "tripwire.flow-run.Failed",
        "tripwire.flow-run.FailedHard",
    ]
    assert await names_matching(database, names=["*.Failed", "*.paused"]) == [
        "tripwire.deployment.paused",
        "tripwire.flow-run.Failed",
    ]
    assert await names_matching(database, names=["tripwire.flow-run.failed"]) == []  # case-sensitive
    assert await names_matching(database, names=["Tripwire.*"]) == []
    assert await names_matching(database, names=["tripwire.flow-run.Fail"]) == []  # whole name, not a prefix
    assert await names_matching(database, names=["github.pull_request.*"]) == ["github.pull_request.opened"]
    assert await names_matching(database, names=["odd%name"]) == ["odd%name"]
    assert await names_matching(database, names=["odd%*"]) == ["odd%name"]
    assert await names_matching(database, names=["odd_*"]) == ["odd_name"]
    assert await names_matching(database, names=["odd?name"]) == ["odd%name", "oddXname", "odd_name"]
    assert await names_matching(database, names=["with[*"]) == ["with[bracket]"]
    assert await names_matching(database, names=["with[bracket]"]) == ["with[bracket]"]
    assert await names_matching(database, names=["back\\*"]) == ["back\\slash"]
    assert len(await names_matching(database, names=["*"])) == len(names)
    assert len(await names_matching(database, names=["nothing", "*"])) == len(names)


async def test_resource_glob(database: Database) -> None:
    await store(
        database,
        make_event("a", "tripwire.flow-run.1", 1),
        make_event("b", "tripwire.flow-run.2", 2),
        make_event("c", "tripwire.deployment.etl", 3),
        make_event("d", "TRIPWIRE.flow-run.3", 4),
    )
    assert await names_matching(database, resource="tripwire.flow-run.*") == ["a", "b"]
    assert await names_matching(database, resource="tripwire.flow-run.2") == ["b"]
    assert await names_matching(database, resource="tripwire.*.etl") == ["c"]
    assert await names_matching(database, resource="*.flow-run.?") == ["a", "b", "d"]


async def test_related_resource_exact(database: Database) -> None:
    await store(
        database,
        make_event(
            "a", "r1", 1, related={"deployment": "tripwire.deployment.etl", "flow": "tripwire.flow.f"}
        ),
        make_event("b", "r2", 2, related={"deployment": "tripwire.deployment.etl-2"}),
        make_event("c", "r3", 3, related={"tag": "tripwire.deployment.etl"}),
        make_event("d", "tripwire.deployment.etl", 4),  # the primary resource is not a related one
        make_event("e", "r5", 5, related={"a": "tripwire.deployment.etl", "b": "tripwire.deployment.etl"}),
    )
    assert await names_matching(database, related="tripwire.deployment.etl") == ["a", "c", "e"]
    assert await names_matching(database, related="tripwire.flow.f") == ["a"]
    assert await names_matching(database, related="tripwire.deployment.*") == []  # exact, not a glob


async def test_since_and_until_are_inclusive(database: Database) -> None:
    await store(database, *(make_event(f"e{i}", "r", at_s=i) for i in range(5)))
    at = [T0 + timedelta(seconds=i) for i in range(5)]
    assert await names_matching(database, since=at[3]) == ["e3", "e4"]
    assert await names_matching(database, until=at[1]) == ["e0", "e1"]
    assert await names_matching(database, since=at[1], until=at[3]) == ["e1", "e2", "e3"]
    assert await names_matching(database, since=at[2], until=at[2]) == ["e2"]
    later = timezone(timedelta(hours=5))  # the same instants, written with another offset
    assert await names_matching(database, since=at[3].astimezone(later)) == ["e3", "e4"]
    naive_utc = at[3].replace(tzinfo=None)  # no offset: UTC
    assert await names_matching(database, since=naive_utc) == ["e3", "e4"]


async def test_filters_combine(database: Database) -> None:
    etl = {"deployment": "tripwire.deployment.etl"}
    await store(
        database,
        make_event("tripwire.flow-run.Failed", "run.1", 1, related=etl),
        make_event("tripwire.flow-run.Failed", "run.2", 2),
        make_event("tripwire.flow-run.Completed", "run.3", 3, related=etl),
        make_event("tripwire.flow-run.Failed", "run.4", 4, related=etl),
        make_event("tripwire.flow-run.Failed", "job.5", 5, related=etl),
    )
    page = await query_events(
        database,
        EventFilter(
            names=["*.Failed"],
            resource="run.*",
            related="tripwire.deployment.etl",
            since=T0,
            until=T0 + timedelta(seconds=4),
        ),
    )
    assert [e.resource_id for e in page.events] == ["run.4", "run.1"]


async def test_paging_with_a_filter(database: Database) -> None:
    stored = await store(database, *(make_event("x" if i % 2 else "y", "r", at_s=i) for i in range(10)))
    first = await query_events(database, EventFilter(names=["x"]), limit=3)
    rest = await query_events(database, EventFilter(names=["x"]), limit=3, cursor=first.next_cursor)
    assert first.events + rest.events == newest_first([e for e in stored if e.event == "x"])
    assert rest.next_cursor is None


async def test_paging_by_related_resource(database: Database) -> None:
    etl = {"deployment": "tripwire.deployment.etl"}
    evs = [make_event("e", f"r.{i}", at_s=i // 4, related=etl if i % 3 else None) for i in range(24)]
    stored = await store(database, *evs)
    seen: list[Event] = []
    page = await query_events(database, EventFilter(related="tripwire.deployment.etl"), limit=5)
    seen.extend(page.events)
    while page.next_cursor is not None:
        page = await query_events(
            database, EventFilter(related="tripwire.deployment.etl"), limit=5, cursor=page.next_cursor
        )
        seen.extend(page.events)
    assert seen == newest_first([e for e in stored if e.related])


async def test_get_event(database: Database) -> None:
    (event,) = await store(database, make_event("a", "r", related={"flow": "f"}))
    assert await get_event(database, event.id) == event
    assert await get_event(database, uuid.uuid4()) is None


@pytest.mark.parametrize(
    "cursor",
    [
        pytest.param("not a cursor!", id="not-base64"),
        pytest.param("", id="empty"),
        pytest.param("aGVsbG8", id="base64-of-hello"),
        pytest.param(encode_cursor(T0, uuid.uuid4())[:-3], id="truncated"),
        pytest.param("MjAyNi0wMy0wMVQxMjowMDowMHxub3QtYS11dWlk", id="bad-uuid"),
    ],
)
async def test_bad_cursor_names_the_cursor(database: Database, cursor: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        await query_events(database, EventFilter(), cursor=cursor)
    assert info.value.errors[0][0] == "cursor"


@pytest.mark.parametrize("limit", [0, -1, MAX_LIMIT + 1, 2.5, True])
async def test_limit_out_of_range(database: Database, limit: Any) -> None:
    with pytest.raises(ValidationFailed) as info:
        await query_events(database, EventFilter(), limit=limit)
    assert info.value.errors[0][0] == "limit"


def test_cursor_round_trip() -> None:
    event_id = uuid.uuid4()
    when = datetime(2026, 3, 1, 14, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    assert decode_cursor(encode_cursor(when, event_id)) == (when, event_id)


@pytest.mark.parametrize(
    ("data", "location"),
    [
        pytest.param({"names": [""]}, "names", id="empty-name"),
        pytest.param({"names": "x" * 5}, "names", id="names-not-a-list"),
        pytest.param({"resource": ""}, "resource", id="empty-resource"),
        pytest.param({"since": "yesterday"}, "since", id="bad-time"),
        pytest.param({"since": T0 + timedelta(1), "until": T0}, "", id="until-before-since"),
        pytest.param({"nmaes": ["x"]}, "nmaes", id="unknown-field"),
    ],
)
def test_filter_validation_names_the_field(data: dict[str, Any], location: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        EventFilter.parse(data)
    assert info.value.errors[0][0] == location
