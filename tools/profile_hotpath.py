"""CPU per row on the hot path: esupdater against a plain batch loop, in the same run.

    python -m tools.profile_hotpath [--rows 200000] [--shapes 1,10] [--profile DIR]

Produces the benchmark's users dataset (bench/lib/dataset.py) as a backlog of 1-row and
10-row Canal flat messages on 4 partitions (kept between runs under fixed topic names, so
repeated measurements skip producing; `--drop-topics` deletes them), then, per shape, runs in
child processes:

- `esupdater run`'s service with default settings and the benchmark's handler (index
  `change.row`, delete on DELETE), until the group committed the whole topic;
- a plain batch loop: `getmany` -> `orjson.loads` -> one `async_bulk` of the whole batch ->
  commit, with no typing beyond what the strict mapping needs (a datetime's space made a T).

For each it prints the child's CPU seconds (utime + stime of /proc/<pid>/stat, from its
first row to the end) per 1,000 rows, rows/s, Elasticsearch's CPU per 1,000 rows over the
same window, and the esupdater/loop ratios. With `--profile DIR`, the esupdater children
run under `py-spy record --format raw` instead and the top functions by own time are
written next to the raw profiles (a profiled run is slower: not used for the figures).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiokafka.admin import NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.structs import TopicPartition

from bench.lib.dataset import produce_backlog
from bench.lib.stack import Stack, end_offsets, peak_rss_mb
from esupdater.runtime_dir import write_status
from tools.local_stack import ELASTICSEARCH, KAFKA

ROOT = Path(__file__).resolve().parents[1]
PARTITIONS = 4
POLL_SECONDS = 0.05
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
TOPIC_PREFIX = "profile-hotpath"


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, every thread included (0 once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # fields 14 and 15 of the file


def elasticsearch_pid() -> int | None:
    """The local stack's Elasticsearch, for its CPU over a run (None if unknown)."""
    found = subprocess.run(["ss", "-ltnpH", "sport = :9200"], capture_output=True, text=True,
                           check=False).stdout
    marker = "pid="
    if marker not in found:
        return None
    return int(found.split(marker, 1)[1].split(",", 1)[0])


@dataclass
class Measured:
    label: str
    rows: int
    seconds: float
    cpu: float
    es_cpu: float
    peak_rss_mb: float

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds

    @property
    def cpu_ms_per_1000(self) -> float:
        return self.cpu * 1000 / self.rows * 1000

    @property
    def es_cpu_ms_per_1000(self) -> float:
        return self.es_cpu * 1000 / self.rows * 1000

    def line(self) -> str:
        return (f"{self.label:<22} {self.rows_per_second:9.0f} rows/s  "
                f"{self.cpu_ms_per_1000:6.1f} ms CPU/1000 rows  "
                f"ES {self.es_cpu_ms_per_1000:6.1f} ms/1000  RSS {self.peak_rss_mb:5.1f} MB")


# -- the parent --------------------------------------------------------------------------------


async def ensure_backlog(stack: Stack, rows: int, shape: int) -> str:
    topic = f"{TOPIC_PREFIX}-{rows}-{shape}"
    assert stack.admin is not None
    with contextlib.suppress(TopicAlreadyExistsError):
        await stack.admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    ends = await end_offsets(topic, PARTITIONS)
    if sum(ends.values()):
        return topic  # produced by an earlier run
    census, seconds = await produce_backlog(topic, rows, partitions=PARTITIONS,
                                            rows_per_message=shape)
    print(f"produced {census.rows} rows into {topic} in {seconds:.1f}s", flush=True)
    return topic


async def run_child(
    stack: Stack, mode: str, topic: str, index: str, *, profile: Path | None,
    native: bool = False,
) -> Measured:
    work = Path(tempfile.mkdtemp(prefix="profile-hotpath-"))
    group = f"{TOPIC_PREFIX}-{mode}-{time.monotonic_ns()}"
    ends = await end_offsets(topic, PARTITIONS)
    spec: dict[str, Any] = {"mode": mode, "topic": topic, "group": group, "index": index,
            "runtime_dir": str(work / "runtime"), "result": str(work / "result.json"),
            "records": sum(ends.values())}
    (work / "spec.json").write_text(json.dumps(spec))
    command = [sys.executable, "-m", "tools.profile_hotpath", "--child", str(work / "spec.json")]
    if profile is not None:
        py_spy = Path(sys.executable).with_name("py-spy")
        command = [str(py_spy), "record", "--format", "raw", "--nolineno", "--rate", "250",
                   *(["--native"] if native else []),
                   "--output", str(profile), "--", *command]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log = (work / "child.log").open("wb")
    child = subprocess.Popen(command, cwd=work, env=env, stdout=log,  # noqa: ASYNC220
                             stderr=log)
    pid = child.pid
    if profile is not None:  # the python process is py-spy's child
        await asyncio.sleep(1.0)
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()  # noqa: ASYNC240
        pid = int(kids[0])
    es_pid = elasticsearch_pid()
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    first_file = work / "first.json"
    es_first = 0.0
    peak = 0.0
    try:
        while not first_file.exists():  # the child writes it at its first row
            if child.poll() is not None:
                raise RuntimeError(f"child exited early:\n{(work / 'child.log').read_text()}")
            await asyncio.sleep(0.01)
        es_first = cpu_seconds(es_pid) if es_pid else 0.0
        while await stack.committed(group, tps) < spec["records"]:
            if child.poll() is not None:
                raise RuntimeError(f"child exited early:\n{(work / 'child.log').read_text()}")
            peak = max(peak, peak_rss_mb(pid))
            await asyncio.sleep(POLL_SECONDS)
        done_at = time.monotonic()
        cpu_done = cpu_seconds(pid)
        es_done = cpu_seconds(es_pid) if es_pid else 0.0
        peak = max(peak, peak_rss_mb(pid))
        write_status(work / "runtime", "stop")
        (work / "stop").touch()
        child.wait(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        log.close()
    first = json.loads(first_file.read_text())
    result = json.loads((work / "result.json").read_text())
    return Measured(mode, result["rows"], done_at - first["monotonic"],
                    cpu_done - first["cpu"], es_done - es_first, peak)


def top_own(raw_profile: Path, top: int = 12) -> list[tuple[float, str]]:
    """Functions by own samples (the frame on top of each stack), in percent of all samples."""
    own: Counter[str] = Counter()
    total = 0
    for line in raw_profile.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or "_find_and_load" in stack:
            continue  # start-up imports are not the data path
        n = int(count)
        total += n
        frame = stack.rsplit(";", 1)[-1]
        for marker in ("/site-packages/", "/src/", "/lib/python3.11/"):
            if marker in frame:
                head, _, path = frame.partition("(")
                frame = f"{head}({path.split(marker, 1)[1]}"
                break
        own[frame] += n
    return [(100 * n / total, name) for name, n in own.most_common(top)]


async def parent(args: argparse.Namespace) -> None:
    stack = Stack(run_id=f"profile-{time.strftime('%H%M%S')}")
    await stack.start()
    try:
        for shape in args.shapes:
            topic = await ensure_backlog(stack, args.rows, shape)
            for attempt in range(args.repeat):
                results: dict[str, Measured] = {}
                for mode in args.modes:
                    index = await stack.create_index(f"{mode}-{shape}-{attempt}")
                    profile = None
                    if args.profile is not None and mode == "esupdater":
                        args.profile.mkdir(parents=True, exist_ok=True)
                        profile = args.profile / f"{args.tag}-{shape}row.txt"
                    try:
                        results[mode] = await run_child(stack, mode, topic, index,
                                                        profile=profile, native=args.native)
                        documents = await stack.count(index)
                    finally:
                        await stack.drop_index(index)
                    results[mode].label = f"{mode} {shape}-row"
                    print(results[mode].line(), f" docs {documents}", flush=True)
                    if profile is not None:
                        spots = top_own(profile)
                        text = "\n".join(f"{p:5.1f}%  {name}" for p, name in spots)
                        profile.with_suffix(".top.txt").write_text(text + "\n")
                        print(text, flush=True)
                if {"esupdater", "loop"} <= results.keys() and args.profile is None:
                    ours, loop = results["esupdater"], results["loop"]
                    rate = ours.rows_per_second / loop.rows_per_second
                    cpu = ours.cpu_ms_per_1000 / loop.cpu_ms_per_1000
                    es_cpu = ours.es_cpu_ms_per_1000 / max(loop.es_cpu_ms_per_1000, 1e-9)
                    print(f"ratio {shape}-row: rows/s x{rate:.2f}  CPU/row x{cpu:.2f}  "
                          f"ES CPU/row x{es_cpu:.2f}", flush=True)
        if args.drop_topics:
            assert stack.admin is not None
            await stack.admin.delete_topics(
                [f"{TOPIC_PREFIX}-{args.rows}-{shape}" for shape in args.shapes]
            )
    finally:
        await stack.close()


# -- the children ------------------------------------------------------------------------------


class _First:
    """Notes the first row: its wall time and the process CPU by then, for the parent."""

    def __init__(self, work: Path) -> None:
        self.path = work / "first.json"
        self.seen = False

    def __call__(self) -> None:
        if not self.seen:
            self.seen = True
            self.path.write_text(json.dumps(
                {"monotonic": time.monotonic(), "cpu": cpu_seconds(os.getpid())}
            ))


def child_esupdater(spec: dict[str, Any]) -> int:
    import uvloop

    from esupdater import Change, Context, Registry, service
    from esupdater.logs import setup_logging
    from esupdater.settings import (
        ElasticsearchSettings,
        KafkaSettings,
        RuntimeSettings,
        Settings,
    )

    setup_logging("WARNING", "text")
    first = _First(Path.cwd())
    index = spec["index"]
    rows = 0

    async def handle(change: Change, ctx: Context) -> None:
        nonlocal rows
        first()
        if change.is_delete:
            await ctx.delete(index=index, id=change.pk)
        else:
            await ctx.index(index=index, id=change.pk, doc=change.row)
        rows += 1

    registry = Registry()
    registry.add("shop.users", handle)
    settings = Settings(
        kafka=KafkaSettings(bootstrap_servers=KAFKA, topics=[spec["topic"]],
                            group_id=spec["group"]),
        elasticsearch=ElasticsearchSettings(hosts=[ELASTICSEARCH]),
        runtime=RuntimeSettings(dir=Path(spec["runtime_dir"])),
    )
    uvloop.run(service.serve(settings, registry))
    return rows


def _loop_actions(index: str, records: list[Any]) -> list[dict[str, Any]]:
    actions: list[dict[str, Any]] = []
    for record in records:
        message = orjson.loads(record.value)
        delete = message["type"] == "DELETE"
        for row in message["data"] or ():
            if delete:
                actions.append({"_op_type": "delete", "_index": index, "_id": row["id"]})
                continue
            for column in ("created_at", "updated_at"):  # the strict mapping's date format
                value = row[column]
                if value is not None:
                    row[column] = value.replace(" ", "T")
            actions.append({"_index": index, "_id": row["id"], "_source": row})
    return actions


async def _plain_loop(spec: dict[str, Any]) -> int:
    from aiokafka.structs import OffsetAndMetadata
    from elasticsearch.helpers import async_bulk

    from esupdater.clients import make_consumer, make_elasticsearch
    from esupdater.settings import ElasticsearchSettings, KafkaSettings

    consumer = make_consumer(KafkaSettings(bootstrap_servers=KAFKA, topics=[spec["topic"]],
                                           group_id=spec["group"]))
    es = make_elasticsearch(ElasticsearchSettings(hosts=[ELASTICSEARCH]))
    first = _First(Path.cwd())
    await consumer.start()
    consumer.subscribe([spec["topic"]])
    rows = records = 0
    try:
        while records < spec["records"]:
            batch = await consumer.getmany(timeout_ms=200)
            if not batch:
                continue
            first()
            actions: list[dict[str, Any]] = []
            for part in batch.values():
                actions += _loop_actions(spec["index"], part)
                records += len(part)
            await async_bulk(es, actions, chunk_size=len(actions) or 1,
                             max_chunk_bytes=100 << 20, raise_on_error=False)
            rows += len(actions)
            await consumer.commit({tp: OffsetAndMetadata(part[-1].offset + 1, "")
                                   for tp, part in batch.items()})
        stop = Path("stop")  # the parent's word, once it has seen the group's commits
        while not stop.exists():  # noqa: ASYNC110, ASYNC240
            await asyncio.sleep(0.05)
    finally:
        await consumer.stop()
        await es.close()
    return rows


def child(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    if spec["mode"] == "esupdater":
        rows = child_esupdater(spec)
    else:
        import uvloop

        rows = uvloop.run(_plain_loop(spec))
    Path(spec["result"]).write_text(json.dumps({"rows": rows}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--shapes", default="1,10", help="rows per message, comma-separated")
    parser.add_argument("--modes", default="esupdater,loop")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--profile", type=Path, help="py-spy the esupdater runs into DIR")
    parser.add_argument("--native", action="store_true",
                        help="with --profile: C frames too (the garbage collector, syscalls)")
    parser.add_argument("--tag", default="profile", help="file name prefix of the profiles")
    parser.add_argument("--drop-topics", action="store_true")
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    args.shapes = [int(s) for s in args.shapes.split(",")]
    args.modes = args.modes.split(",")
    asyncio.run(parent(args))


if __name__ == "__main__":
    main()
