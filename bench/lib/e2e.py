"""esupdater end to end: Kafka -> handlers -> Elasticsearch, timed until the group committed.

Each variant runs in its own child process (`bench.child`) against a fresh index and a fresh
consumer group over the same backlog topic. The rate is the rows of the backlog divided by
the time from the first handler call (the group join is not counted) until the group's
committed offsets reach the topic's end offsets; the committed figure therefore includes up to
one `commit_interval_ms` (1 s by default) of commit delay, reported apart as `ack_seconds`.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka.structs import TopicPartition

from bench.lib.stack import Stack, end_offsets
from esupdater.runtime_dir import write_status
from tools.local_stack import ELASTICSEARCH, KAFKA

ROOT = Path(__file__).resolve().parents[2]
POLL_SECONDS = 0.1


@dataclass(frozen=True)
class Variant:
    rows_per_message: int
    loop: str = "uvloop"
    orjson: bool = True

    @property
    def label(self) -> str:
        serializer = "orjson" if self.orjson else "json"
        return f"esupdater {self.rows_per_message}-row msgs, {self.loop}, {serializer}"

    @property
    def is_default(self) -> bool:
        return self.loop == "uvloop" and self.orjson


@dataclass
class RunResult:
    variant: Variant
    rows: int
    seconds: float  # first handler call -> committed offsets at the end offsets
    ack_seconds: float  # first handler call -> last acknowledgement
    startup_seconds: float  # process start -> first handler call (imports, group join)
    peak_rss_mb: float
    documents: int = 0
    samples: list[float] = field(default_factory=list, repr=False)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "variant": self.variant.label,
            "rows_per_message": self.variant.rows_per_message,
            "loop": self.variant.loop,
            "orjson": self.variant.orjson,
            "rows": self.rows,
            "seconds": round(self.seconds, 3),
            "ack_seconds": round(self.ack_seconds, 3),
            "startup_seconds": round(self.startup_seconds, 3),
            "rows_per_second": round(self.rows_per_second, 1),
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "documents_in_index": self.documents,
        }


async def run_esupdater(
    stack: Stack,
    variant: Variant,
    topic: str,
    partitions: int,
    *,
    index: str,
    latency: bool = False,
    feed: Callable[[], Awaitable[None]] | None = None,
    profile: Path | None = None,
    limit_seconds: float = 900.0,
) -> RunResult:
    """Run one esupdater child until its group has committed the whole topic, then stop it.

    `feed`, if given, is awaited once the group is consuming (latency mode: the paced
    producer); the end offsets are read after it returns.
    """
    group = stack.name(f"group-{index.rsplit('-', 1)[-1]}-{time.monotonic_ns()}")
    work = Path(tempfile.mkdtemp(prefix="esupdater-bench-"))
    spec = {
        "kafka": KAFKA,
        "elasticsearch": ELASTICSEARCH,
        "topic": topic,
        "group": group,
        "index": index,
        "runtime_dir": str(work / "runtime"),
        "loop": variant.loop,
        "orjson": variant.orjson,
        "latency": latency,
        "result": str(work / "result.json"),
    }
    (work / "spec.json").write_text(json.dumps(spec))
    command = [sys.executable, "-m", "bench.child", str(work / "spec.json")]
    if profile is not None:
        py_spy = Path(sys.executable).with_name("py-spy")
        command = [
            str(py_spy),
            "record",
            "--format",
            "speedscope",
            "--rate",
            "200",
            "--output",
            str(profile),
            "--",
            *command,
        ]
    path = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}  # `bench` is not installed
    log = (work / "child.log").open("wb")
    spawned = time.monotonic()
    child = await asyncio.create_subprocess_exec(
        *command, cwd=work, env=env, stdout=log, stderr=log
    )
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        if feed is not None:
            await _wait_for_members(stack, group, child, limit_seconds)
            await feed()
        ends = sum((await end_offsets(topic, partitions)).values())
        done_at = await _wait_committed(stack, group, tps, ends, child, limit_seconds)
        write_status(work / "runtime", "stop")
        await asyncio.wait_for(child.wait(), timeout=120)
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
        log.close()
    result_path = work / "result.json"
    if not result_path.exists():
        tail = (work / "child.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"esupdater child exited {child.returncode} without a result:\n{tail}")
    figures = json.loads(result_path.read_text())
    first = figures["first_row_at"] or done_at
    return RunResult(
        variant=variant,
        rows=figures["rows"],
        seconds=done_at - first,
        ack_seconds=figures["last_ack_at"] - first,
        startup_seconds=first - spawned,
        peak_rss_mb=figures["peak_rss_mb"],
        samples=figures["samples"],
    )


async def _wait_committed(
    stack: Stack,
    group: str,
    tps: list[TopicPartition],
    end: int,
    child: asyncio.subprocess.Process,
    limit_seconds: float,
) -> float:
    deadline = time.monotonic() + limit_seconds
    while time.monotonic() < deadline:
        if await stack.committed(group, tps) >= end:
            return time.monotonic()
        if child.returncode is not None:
            raise RuntimeError(f"esupdater child exited early ({child.returncode})")
        await asyncio.sleep(POLL_SECONDS)
    raise TimeoutError(f"group {group} did not commit {end} records in {limit_seconds:.0f}s")


async def _wait_for_members(
    stack: Stack, group: str, child: asyncio.subprocess.Process, limit_seconds: float
) -> None:
    """Until the child's consumer has joined its group and holds partitions."""
    assert stack.admin is not None
    deadline = time.monotonic() + limit_seconds
    while time.monotonic() < deadline:
        described = await stack.admin.describe_consumer_groups([group])
        # Raw DescribeGroups responses: groups are (error, id, state, protocol_type, ...).
        if any(g[2] == "Stable" for response in described for g in response.groups):
            return
        if child.returncode is not None:
            raise RuntimeError(f"esupdater child exited early ({child.returncode})")
        await asyncio.sleep(POLL_SECONDS)
    raise TimeoutError(f"group {group} never became stable")
