"""Wait until the local Kafka can serve a consumer group: `make up` calls it after the broker
says it started.

A freshly formatted broker answers metadata requests before its offsets topic exists and has a
coordinator; the first group commit then fails with GroupCoordinatorNotAvailableError (seen as
the demo's first run failing on a new machine). This commits an offset for a throwaway group
on a one-partition topic, retrying until it works or the deadline passes (exit 1).

    python -m tools.kafka_ready [--seconds 90]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from tools.local_stack import KAFKA

#: The topic and group the probe uses; both are tiny and harmless to leave behind.
PROBE = "esupdater-stack-ready"


async def _ensure_topic() -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(PROBE, num_partitions=1, replication_factor=1)])
    except TopicAlreadyExistsError:
        pass
    finally:
        await admin.close()


async def _commit_once() -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=KAFKA, group_id=PROBE,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(PROBE, 0)
        consumer.assign([tp])
        await consumer.commit({tp: 0})
    finally:
        await consumer.stop()


async def wait_ready(seconds: float) -> str | None:
    """None once a group commit worked; else the last error, after `seconds`."""
    deadline = time.monotonic() + seconds
    last = "no attempt"
    while time.monotonic() < deadline:
        try:
            await _ensure_topic()
            await _commit_once()
            return None
        except (KafkaError, OSError) as exc:
            last = repr(exc)
            await asyncio.sleep(1.0)
    return last


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=90.0)
    args = parser.parse_args()
    error = asyncio.run(wait_ready(args.seconds))
    if error is not None:
        print(f"Kafka at {KAFKA} cannot serve a consumer group after {args.seconds:.0f} s: "
              f"{error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
