"""A contender end to end: Kafka -> handlers -> Elasticsearch, timed until the group committed.

Each run starts its own child processes (`bench.child` for esupdater, `bench.lib.batch_loop`
for contender D) against a fresh index and a fresh consumer group over the same backlog
topic. The rate is the rows of the backlog divided by the window from the first handled row
(the group join is not counted) until the group's committed offsets reach the topic's end
offsets; it therefore includes up to one `commit_interval_ms` (1 s by default) of commit
delay, reported apart as `ack_seconds`. Over the same window: the CPU seconds of the
contender's processes and of Elasticsearch (cpu.py), and from Elasticsearch's index stats the
bulk requests and actions it received.

With several processes in one group the first seconds include the group's rebalance as the
later processes join; the steady figures count only from the moment every process is a
member of the group and has handled a row.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from bench.lib.cpu import MACHINE, CpuSampler, Timeline, kafka_pid
from bench.lib.stack import Stack, end_offsets
from esupdater.runtime_dir import write_status
from tools.local_stack import ELASTICSEARCH, KAFKA

ROOT = Path(__file__).resolve().parents[2]
POLL_SECONDS = 0.1
#: Seconds to wait for an esupdater stats file written after the end of the window.
STATS_WAIT = 3.0
ESUPDATER, BATCH = "esupdater", "batch"
#: The parts of `make bench` that run contenders over the backlog (RunResult.part).
PAIRS, VARIANTS, SCALE_OUT = "pairs", "variants", "scale-out"
MODULES = {ESUPDATER: "bench.child", BATCH: "bench.lib.batch_loop"}


@dataclass(frozen=True)
class Variant:
    rows_per_message: int
    loop: str = "uvloop"
    orjson: bool = True
    program: str = ESUPDATER  # or BATCH: contender D
    processes: int = 1
    #: esupdater with a mapper (`Registry.add_mapper`, no task per row) instead of an
    #: `async def` handler; the same writes (bench/child.py).
    mapper: bool = False

    @property
    def label(self) -> str:
        if self.program == BATCH:
            return f"D  batch loop, {self.rows_per_message}-row msgs"
        serializer = "orjson" if self.orjson else "json"
        more = f", {self.processes} processes" if self.processes > 1 else ""
        mapper = ", mapper" if self.mapper else ""
        return (f"esupdater {self.rows_per_message}-row msgs, {self.loop}, {serializer}{more}"
                f"{mapper}")

    @property
    def is_default(self) -> bool:
        """esupdater's default configuration, with an `async def` handler."""
        return (self.program == ESUPDATER and self.loop == "uvloop" and self.orjson
                and self.processes == 1 and not self.mapper)


@dataclass
class ProcessFigures:
    """One child of a run: what it handled, its CPU over the run's window, its peak RSS."""

    rows: int
    cpu_seconds: float
    peak_rss_mb: float
    first_row_after: float  # seconds from the run's first row to this process's first row


@dataclass
class RunResult:
    variant: Variant
    rows: int
    seconds: float  # first handled row -> committed offsets at the end offsets
    ack_seconds: float  # first handled row -> last acknowledgement (esupdater) / last batch
    startup_seconds: float  # process start -> first handled row (imports, group join)
    peak_rss_mb: float  # the largest of the processes
    cpu_seconds: float = 0.0  # the contender's processes over the window
    es_cpu_seconds: float = 0.0  # Elasticsearch over the same window
    kafka_cpu_seconds: float = 0.0  # the Kafka broker over the same window
    machine_cpu_seconds: float = 0.0  # every process of the machine over the same window
    handled_rows: int = 0  # rows the handlers saw: more than `rows` if a rebalance replayed
    bulk_requests: int = 0  # as Elasticsearch counted them for the index
    bulk_actions: int = 0
    own_bulk_requests: int | None = None  # as the contender counted them
    processes: list[ProcessFigures] = field(default_factory=list)
    #: Several processes: the window once all were members with a row handled.
    steady_rows: int = 0
    steady_seconds: float = 0.0
    steady_cpu_seconds: list[float] = field(default_factory=list)
    steady_es_cpu_seconds: float = 0.0
    steady_machine_cpu_seconds: float = 0.0
    steady_kafka_cpu_seconds: float = 0.0
    part: str = ""  # which part of the benchmark ran it: PAIRS, VARIANTS, SCALE_OUT
    pair: int | None = None  # which esupdater/D pair of the run it belongs to
    documents: int = 0
    samples: list[float] = field(default_factory=list, repr=False)
    acks: list[float] = field(default_factory=list, repr=False)  # (pk, ack time) pairs

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0

    @property
    def cpu_per_1k_rows(self) -> float:
        return 1000 * self.cpu_seconds / self.rows if self.rows else 0.0

    @property
    def es_cpu_per_1k_rows(self) -> float:
        return 1000 * self.es_cpu_seconds / self.rows if self.rows else 0.0

    @property
    def other_cpu_share(self) -> float:
        """Of the machine's cores over the window: the share neither the contender,
        Elasticsearch nor Kafka used (the benchmark itself, and whatever else runs)."""
        cores = (os.cpu_count() or 1) * self.seconds
        rest = (self.machine_cpu_seconds - self.cpu_seconds - self.es_cpu_seconds
                - self.kafka_cpu_seconds)
        return max(0.0, rest) / cores if cores else 0.0

    @property
    def actions_per_request(self) -> float:
        return self.bulk_actions / self.bulk_requests if self.bulk_requests else 0.0

    @property
    def steady_rows_per_second(self) -> float:
        return self.steady_rows / self.steady_seconds if self.steady_seconds else 0.0

    def summary(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "variant": self.variant.label,
            "program": self.variant.program,
            "rows_per_message": self.variant.rows_per_message,
            "loop": self.variant.loop,
            "orjson": self.variant.orjson,
            "processes": self.variant.processes,
            "mapper": self.variant.mapper,
            "part": self.part,
            "pair": self.pair,
            "rows": self.rows,
            "seconds": round(self.seconds, 3),
            "ack_seconds": round(self.ack_seconds, 3),
            "startup_seconds": round(self.startup_seconds, 3),
            "rows_per_second": round(self.rows_per_second, 1),
            "cpu_seconds": round(self.cpu_seconds, 2),
            "cpu_seconds_per_1k_rows": round(self.cpu_per_1k_rows, 4),
            "es_cpu_seconds": round(self.es_cpu_seconds, 2),
            "es_cpu_seconds_per_1k_rows": round(self.es_cpu_per_1k_rows, 4),
            "kafka_cpu_seconds_per_1k_rows": round(
                1000 * self.kafka_cpu_seconds / self.rows if self.rows else 0.0, 4),
            "machine_cpu_seconds": round(self.machine_cpu_seconds, 2),
            "other_cpu_share": round(self.other_cpu_share, 3),
            "handled_rows": self.handled_rows,
            "bulk_requests": self.bulk_requests,
            "bulk_actions": self.bulk_actions,
            "actions_per_request": round(self.actions_per_request, 1),
            "own_bulk_requests": self.own_bulk_requests,
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "documents_in_index": self.documents,
        }
        if self.variant.processes > 1:
            found["per_process"] = [
                {"rows": p.rows, "cpu_seconds": round(p.cpu_seconds, 2),
                 "peak_rss_mb": round(p.peak_rss_mb, 1),
                 "first_row_after_seconds": round(p.first_row_after, 3)}
                for p in self.processes
            ]
            found["steady"] = {
                "rows": self.steady_rows,
                "seconds": round(self.steady_seconds, 3),
                "rows_per_second": round(self.steady_rows_per_second, 1),
                "cpu_seconds_per_process": [round(c, 2) for c in self.steady_cpu_seconds],
                "es_cpu_seconds": round(self.steady_es_cpu_seconds, 2),
                "kafka_cpu_seconds": round(self.steady_kafka_cpu_seconds, 2),
                "machine_cpu_seconds": round(self.steady_machine_cpu_seconds, 2),
            }
        return found


@dataclass
class _Child:
    work: Path
    process: asyncio.subprocess.Process
    log: Any

    @property
    def runtime(self) -> Path:
        return self.work / "runtime"


async def run_esupdater(
    stack: Stack,
    variant: Variant,
    topic: str,
    partitions: int,
    *,
    index: str,
    latency: bool = False,
    acks: bool = False,
    feed: Callable[[], Awaitable[None]] | None = None,
    profile: Path | None = None,
    route: str = "shop.users",
    es_pid: int | None = None,
    group: str | None = None,
    rows: int | None = None,
    limit_seconds: float = 900.0,
) -> RunResult:
    """Run the variant's children until their group has committed the whole topic, then stop
    them. `feed`, if given, is awaited once the group is consuming (latency mode: the paced
    producer); the end offsets are read after it returns. `es_pid`: Elasticsearch's JVM,
    whose CPU is sampled with the children's. `group`: a consumer group prepared by the
    caller (else a new one). `rows`: the backlog's rows, which the rates count (else the rows
    the handlers saw)."""
    group = group or stack.name(f"group-{index.rsplit('-', 1)[-1]}-{time.monotonic_ns()}")
    spawned = time.monotonic()
    options = {"route": route, "latency": latency, "acks": acks}
    children = [await _spawn(variant, i, topic, group, index, options, profile)
                for i in range(variant.processes)]
    pids = {f"p{i}": child.process.pid for i, child in enumerate(children)}
    broker = kafka_pid()
    sampler = CpuSampler({**pids, **({"es": es_pid} if es_pid else {}),
                          **({"kafka": broker} if broker else {})})
    sampler.start()
    joined: dict[str, float] = {}
    watching = asyncio.create_task(_watch_members(stack, group, variant.processes, joined))
    committed = Timeline()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        if feed is not None:
            await _wait_for_members(stack, group, children, limit_seconds)
            await feed()
        ends = sum((await end_offsets(topic, partitions)).values())
        done_at = await _wait_committed(stack, group, tps, ends, children, limit_seconds,
                                        committed)
        own_bulk = (await _esupdater_bulk_requests(children, time.time())
                    if variant.program == ESUPDATER else None)
        for child in children:
            if variant.program == ESUPDATER:
                write_status(child.runtime, "stop")
            else:
                child.process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(asyncio.gather(*(c.process.wait() for c in children)), 120)
    finally:
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
        await sampler.stop()
        for child in children:
            if child.process.returncode is None:
                child.process.kill()
                await child.process.wait()
            child.log.close()
    figures = [_figures(child) for child in children]
    for child in children:  # a child without a result raised above: its log stays
        shutil.rmtree(child.work, ignore_errors=True)
    firsts = [f["first_row_at"] for f in figures if f["first_row_at"] is not None]
    first = min(firsts, default=done_at)
    bulk_requests, bulk_actions = await stack.bulk_stats(index)
    handled = sum(f["rows"] for f in figures)
    result = RunResult(
        variant=variant,
        rows=handled if rows is None else rows,
        handled_rows=handled,
        machine_cpu_seconds=sampler.between(MACHINE, first, done_at),
        kafka_cpu_seconds=sampler.between("kafka", first, done_at),
        seconds=done_at - first,
        ack_seconds=max(f["last_ack_at"] or first for f in figures) - first,
        startup_seconds=first - spawned,
        peak_rss_mb=max(f["peak_rss_mb"] for f in figures),
        es_cpu_seconds=sampler.between("es", first, done_at),
        bulk_requests=bulk_requests,
        bulk_actions=bulk_actions,
        own_bulk_requests=own_bulk if variant.program == ESUPDATER else
        sum(f["bulk_requests"] for f in figures),
        samples=[s for f in figures for s in f.get("samples", [])],
        acks=[s for f in figures for s in f.get("acks", [])],
    )
    for i, f in enumerate(figures):
        result.processes.append(ProcessFigures(
            rows=f["rows"], cpu_seconds=sampler.between(f"p{i}", first, done_at),
            peak_rss_mb=f["peak_rss_mb"],
            first_row_after=(f["first_row_at"] or done_at) - first))
    result.cpu_seconds = sum(p.cpu_seconds for p in result.processes)
    start = max([joined.get("at", done_at), *firsts])
    if variant.processes > 1 and len(firsts) == len(children) and start < done_at:
        _steady(result, sampler, committed, start, done_at)
    return result


def _steady(
    result: RunResult, sampler: CpuSampler, committed: Timeline, start: float, end: float
) -> None:
    """Several processes: the figures from `start` (all members, each with a row handled)
    to `end`, rows counted from the group's committed offsets."""
    result.steady_seconds = end - start
    result.steady_rows = round((committed.at(end) - committed.at(start))
                               * result.variant.rows_per_message)
    result.steady_cpu_seconds = [sampler.between(f"p{i}", start, end)
                                 for i in range(result.variant.processes)]
    result.steady_es_cpu_seconds = sampler.between("es", start, end)
    result.steady_kafka_cpu_seconds = sampler.between("kafka", start, end)
    result.steady_machine_cpu_seconds = sampler.between(MACHINE, start, end)


async def _spawn(
    variant: Variant, number: int, topic: str, group: str, index: str,
    options: dict[str, Any], profile: Path | None,
) -> _Child:
    work = Path(tempfile.mkdtemp(prefix=f"esupdater-bench-{number}-"))
    spec = {
        "kafka": KAFKA,
        "elasticsearch": ELASTICSEARCH,
        "topic": topic,
        "group": group,
        "index": index,
        "runtime_dir": str(work / "runtime"),
        "loop": variant.loop,
        "orjson": variant.orjson,
        "mapper": variant.mapper,
        "result": str(work / "result.json"),
        **options,
    }
    (work / "spec.json").write_text(json.dumps(spec))
    command = [sys.executable, "-m", MODULES[variant.program], str(work / "spec.json")]
    if profile is not None:
        py_spy = Path(sys.executable).with_name("py-spy")
        command = [str(py_spy), "record", "--format", "speedscope", "--rate", "200",
                   "--output", str(profile), "--", *command]
    path = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}  # `bench` is not installed
    log = (work / "child.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        *command, cwd=work, env=env, stdout=log, stderr=log
    )
    return _Child(work, process, log)


def _figures(child: _Child) -> dict[str, Any]:
    path = child.work / "result.json"
    if not path.exists():
        tail = (child.work / "child.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(
            f"child exited {child.process.returncode} without a result:\n{tail}")
    figures: dict[str, Any] = json.loads(path.read_text())
    return figures


async def _esupdater_bulk_requests(children: list[_Child], done_wall: float) -> int | None:
    """esupdater's own `bulk_requests` counter, from stats files written after the window
    (every `runtime.stats_interval_seconds`); None if one does not come in time."""
    total = 0
    deadline = time.monotonic() + STATS_WAIT
    for child in children:
        while True:
            try:
                stats = json.loads((child.runtime / "esupdater.stats.json").read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                stats = {}
            if stats.get("updated_at", 0) >= done_wall:
                total += int(stats.get("bulk_requests", 0))
                break
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(POLL_SECONDS)
    return total


async def _wait_committed(
    stack: Stack,
    group: str,
    tps: list[TopicPartition],
    end: int,
    children: list[_Child],
    limit_seconds: float,
    timeline: Timeline,
) -> float:
    deadline = time.monotonic() + limit_seconds
    while time.monotonic() < deadline:
        try:
            committed = await stack.committed(group, tps)
        except KafkaError:  # a busy broker timing out one request: ask again
            committed = -1
        now = time.monotonic()
        if committed >= 0:
            timeline.add(now, committed)
        if committed >= end:
            return now
        for child in children:
            if child.process.returncode is not None:
                raise RuntimeError(f"child exited early ({child.process.returncode}): "
                                   f"{child.work / 'child.log'}")
        await asyncio.sleep(POLL_SECONDS)
    raise TimeoutError(f"group {group} did not commit {end} records in {limit_seconds:.0f}s")


async def _group(stack: Stack, group: str) -> tuple[str, int]:
    """(state, members) of a consumer group; ("", 0) when the broker does not answer."""
    assert stack.admin is not None
    try:
        described = await stack.admin.describe_consumer_groups([group])
    except KafkaError:
        return "", 0
    # Raw DescribeGroups responses: groups are (error, id, state, protocol_type, protocol,
    # members, ...).
    for response in described:
        for g in response.groups:
            return str(g[2]), len(g[5])
    return "", 0


async def _watch_members(stack: Stack, group: str, wanted: int, joined: dict[str, float]) -> None:
    """Notes in `joined["at"]` when the group is first stable with `wanted` members."""
    if wanted < 2:
        return
    while True:
        state, members = await _group(stack, group)
        if state == "Stable" and members >= wanted:
            joined["at"] = time.monotonic()
            return
        await asyncio.sleep(POLL_SECONDS)


async def _wait_for_members(
    stack: Stack, group: str, children: list[_Child], limit_seconds: float
) -> None:
    """Until the children's consumers have joined their group and hold partitions."""
    deadline = time.monotonic() + limit_seconds
    while time.monotonic() < deadline:
        state, members = await _group(stack, group)
        if state == "Stable" and members >= len(children):
            return
        for child in children:
            if child.process.returncode is not None:
                raise RuntimeError(f"child exited early ({child.process.returncode})")
        await asyncio.sleep(POLL_SECONDS)
    raise TimeoutError(f"group {group} never became stable")
