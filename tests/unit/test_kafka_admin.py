"""tools.kafka_admin.group_call: rides out a moving coordinator, and nothing else."""

from __future__ import annotations

import pytest
from aiokafka.errors import GroupCoordinatorNotAvailableError, UnknownTopicOrPartitionError

from tools.kafka_admin import group_call


async def test_a_coordinator_being_elected_is_waited_for() -> None:
    calls = []

    async def call() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise GroupCoordinatorNotAvailableError()
        return "offsets"

    assert await group_call(call, timeout=5) == "offsets"
    assert len(calls) == 3


async def test_other_errors_are_not_retried() -> None:
    calls = []

    async def call() -> str:
        calls.append(1)
        raise UnknownTopicOrPartitionError()

    with pytest.raises(UnknownTopicOrPartitionError):
        await group_call(call, timeout=5)
    assert len(calls) == 1


async def test_a_coordinator_that_never_comes_fails_after_the_timeout() -> None:
    async def call() -> str:
        raise GroupCoordinatorNotAvailableError()

    with pytest.raises(GroupCoordinatorNotAvailableError):
        await group_call(call, timeout=0.5)
