"""BatchMemo: the actions of one batch share reads, and a failed read is tried again."""

from __future__ import annotations

import asyncio

import pytest

from actions.context import BatchMemo


async def test_concurrent_readers_share_one_read() -> None:
    memo, reads = BatchMemo(), []

    async def read() -> str:
        reads.append(1)
        await asyncio.sleep(0)
        return "automation"

    values = await asyncio.gather(*(memo.get("a", read) for _ in range(5)))
    assert values == ["automation"] * 5
    assert len(reads) == 1
    assert await memo.get("b", read) == "automation" and len(reads) == 2


async def test_a_failed_read_is_read_again() -> None:
    memo, calls = BatchMemo(), []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("database restarting")
        return "row"

    with pytest.raises(ConnectionError):
        await memo.get("firing", flaky)
    assert await memo.get("firing", flaky) == "row"
    assert len(calls) == 2
