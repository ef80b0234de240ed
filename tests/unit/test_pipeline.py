"""Pipeline logic without servers: the commit loop always stops; rebalance timing."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import TopicPartition

from esupdater.backoff import Backoff
from esupdater.consume_loop import CANCEL_TIMEOUT, ConsumeLoop, rebalance_timeout_ms
from esupdater.decoding import make_decoder
from esupdater.dispatch import KeyedDispatcher
from esupdater.feeding import Feeder
from esupdater.offsets import OffsetTracker
from esupdater.pauses import PartitionPauses
from esupdater.routing import Registry
from esupdater.settings import SourceSettings
from esupdater.stats import Stats


class InstantConsumer:
    """Commits at once: the case where a cancel lands just as the call finishes."""

    def __init__(self) -> None:
        self.commits = 0

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits += 1


def _pipeline(consumer: Any) -> ConsumeLoop:
    stats = Stats()
    pauses = PartitionPauses(consumer)
    feeder = Feeder(
        make_decoder(SourceSettings()), Registry(), None, None, stats,  # type: ignore[arg-type]
        dispatcher=KeyedDispatcher(1), offsets=OffsetTracker(),
        backoff=Backoff.from_ms(1, 1), gate=pauses,
    )
    pipeline = ConsumeLoop(consumer, ["t"], feeder, pauses, stats,
                           commit_interval=0, drain_timeout=1.0)
    tp = TopicPartition("t", 0)
    pipeline.offsets.track(tp, 0, 1)
    pipeline.offsets.row_done(tp, 0)
    return pipeline


async def test_a_cancel_at_any_step_of_the_commit_loop_ends_it() -> None:
    for steps in range(30):
        consumer = InstantConsumer()
        loop_task = asyncio.create_task(_pipeline(consumer)._commit_loop())
        for _ in range(steps):
            await asyncio.sleep(0)
        loop_task.cancel()
        done, _ = await asyncio.wait({loop_task}, timeout=1.0)
        assert done, f"commit loop ignored a cancel after {steps} loop step(s)"
        assert loop_task.cancelled()


def test_the_group_waits_for_a_whole_revocation_drain_before_evicting() -> None:
    for drain in (1.0, 20.0, 300.0):
        waited = rebalance_timeout_ms(drain) / 1000
        # drain, then cancelling what did not finish, then a commit bounded like the drain
        assert waited > drain + CANCEL_TIMEOUT + max(drain, 5.0)

