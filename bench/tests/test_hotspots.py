"""The profile summary without the stack: `pytest bench/tests/test_hotspots.py`.

A hand-written speedscope file in py-spy's shape stands for a profile: what the README's
"Where the CPU goes" table is filled from must add up, whatever the top-N lists leave out.
"""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

import bench.hotspots as hotspots
import bench.run
from bench.hotspots import OTHER, PARTS, part, summarise
from bench.lib.e2e import Variant
from bench.run import profile_path

SITE = "/venv/lib/python3.11/site-packages"
STDLIB = "/usr/lib/python3.11"
SRC = "/repo/src/esupdater"

#: (name, file) per frame; a sample is a stack of indices into this list, the last on top.
FRAMES = [
    ("Runner.run", f"{STDLIB}/asyncio/runners.py"),  # 0: every stack's root
    ("FlatDecoder.decode", f"{SRC}/canal/flat.py"),  # 1
    ("type_row", "<string>"),  # 2
    ("Dispatcher.submit", f"{SRC}/dispatch.py"),  # 3
    ("Handler.handle", "/repo/bench/child.py"),  # 4
    ("BulkWriter.flush", f"{SRC}/bulk.py"),  # 5
    ("ClientResponse.read", f"{SITE}/aiohttp/client_reqrep.py"),  # 6
    ("Feeder.feed", f"{SRC}/feeding.py"),  # 7
    ("Fetcher.fetched_records", f"{SITE}/aiokafka/consumer/fetcher.py"),  # 8
    ("Handle._run", f"{STDLIB}/asyncio/events.py"),  # 9
    ("gc_collect", f"{SITE}/something/else.py"),  # 10
    ("_find_and_load", "<frozen importlib._bootstrap>"),  # 11: start-up
    ("Row.__init__", f"{SRC}/change.py"),  # 12
    ("__create_fn__.<locals>.__init__", "<string>"),  # 13: a dataclass's, not a typer
]
#: (stack, weight in seconds): 20 busy seconds, and 5 of importing left out.
SAMPLES: list[tuple[list[int], float]] = [
    ([0, 1], 2.0), ([0, 1, 2], 3.0), ([0, 7, 1, 12], 1.0),  # decoding and typing: 6
    ([0, 3], 2.0),  # the keyed dispatcher: 2
    ([0, 3, 4], 1.0),  # handler: 1
    ([0, 5], 1.0), ([0, 5, 6], 1.5), ([0, 5, 13], 0.5),  # bulk writer: 3
    ([0, 7], 2.0),  # feeding: 2
    ([0, 8], 1.0),  # Kafka: 1
    ([0], 2.0), ([0, 9], 1.0),  # event loop: 3
    ([0, 10], 2.0),  # other: 2
    ([0, 11, 1], 5.0),  # importing: not counted anywhere
    ([], 9.0),  # an empty stack: not counted either
]


def _profile(tmp_path: Path) -> Path:
    profile = tmp_path / "p-handler-1.json"
    frames = [{"name": name, "file": file, "line": 1, "col": None} for name, file in FRAMES]
    profiles = [{"type": "sampled", "name": "Thread 1", "unit": "seconds",
                 "samples": [stack for stack, _ in SAMPLES],
                 "weights": [weight for _, weight in SAMPLES]}]
    profile.write_text(json.dumps({"shared": {"frames": frames}, "profiles": profiles}))
    return profile


def _frame(name: str, file: str) -> dict[str, Any]:
    return {"name": name, "file": file, "line": 1, "col": None}


def test_each_frame_counts_for_the_part_the_readme_names() -> None:
    assert part(_frame("type_row", f"{SRC}/canal/values.py")) == "decoding and typing"
    assert part(_frame("<lambda>", "<string>")) == "decoding and typing"
    assert part(_frame("convert", f"{SRC}/mysql_types.py")) == "decoding and typing"
    assert part(_frame("Slot.done", f"{SRC}/dispatch.py")) == "the keyed dispatcher"
    assert part(_frame("ctx", f"{SRC}/mapped_rows.py")) == "handler, context and runner"
    assert part(_frame("Mirror.map", "/repo/bench/child.py")) == "handler, context and runner"
    assert part(_frame("perform", f"{SITE}/elastic_transport/_node.py")) == "bulk writer"
    assert part(_frame("Counters.add", f"{SRC}/stats.py")) == "feeding (routing, offsets, counters)"
    assert part(_frame("Fetcher.fetch", f"{SITE}/aiokafka/fetcher.py")) == "Kafka fetching"
    assert part(_frame("run_until", f"{SITE}/uvloop/__init__.py")) == "event loop"
    assert part(_frame("Runner.run", "")) == "event loop"
    assert part(_frame("loads", f"{STDLIB}/json/decoder.py")) == OTHER
    assert part(_frame("backoff", f"{SRC}/backoff.py")) == OTHER
    assert part(_frame("main", "/repo/bench/lib/stack.py")) == OTHER
    assert part(_frame("__create_fn__.<locals>.__init__", "<string>")) == OTHER  # alone


def test_the_parts_share_all_the_busy_self_time_and_sum_to_100(tmp_path: Path) -> None:
    spots = summarise(_profile(tmp_path), top=1)  # the top-N lists do not limit the parts

    assert spots.busy_seconds == 20.0
    assert len(spots.self_time) == 1
    assert spots.parts == [
        ("decoding and typing", 30.0), ("the keyed dispatcher", 10.0),
        ("handler, context and runner", 5.0), ("bulk writer", 15.0),
        ("feeding (routing, offsets, counters)", 10.0), ("Kafka fetching", 5.0),
        ("event loop", 15.0), (OTHER, 10.0),
    ]
    assert [name for name, _ in spots.parts] == [p.name for p in PARTS] + [OTHER]
    assert math.isclose(sum(percent for _, percent in spots.parts), 100.0)


def test_the_summary_lists_the_parts_in_its_dict(tmp_path: Path) -> None:
    summary = summarise(_profile(tmp_path)).as_dict()

    assert summary["self_percent_by_part"][0] == {"part": "decoding and typing", "percent": 30.0}
    assert summary["self_percent_by_part"][-1] == {"part": OTHER, "percent": 10.0}
    assert summary["self_percent"][0] == {"function": "type_row (<string>)", "percent": 15.0}
    assert {"function": "FlatDecoder.decode (esupdater/canal/flat.py)",
            "percent": 10.0} in summary["self_percent"]
    labels = [row["function"] for row in summary["self_percent"]]
    assert "Handle._run (asyncio/events.py)" in labels  # the stdlib's directory left out


def test_an_empty_profile_has_no_busy_time_and_no_division_by_zero(tmp_path: Path) -> None:
    profile = tmp_path / "empty.json"
    profile.write_text(json.dumps({"shared": {"frames": []}, "profiles": []}))

    spots = summarise(profile)

    assert spots.busy_seconds == 0.0
    assert all(percent == 0.0 for _, percent in spots.parts)


def test_each_profiled_run_writes_beside_the_path_given() -> None:
    base = Path("/out/p.json")

    assert profile_path(base, "handler", 1) == Path("/out/p-handler-1.json")
    assert profile_path(base, "mapper", 10) == Path("/out/p-mapper-10.json")
    assert profile_path(Path("/out/p"), "mapper", 1) == Path("/out/p-mapper-1.json")


class _Stack:
    """What the profiled runs ask of the stack: an index each, dropped after its run."""

    def __init__(self) -> None:
        self.indices: list[str] = []
        self.dropped: list[str] = []

    async def create_index(self, kind: str) -> str:
        self.indices.append(f"bench-x-{kind}")
        return self.indices[-1]

    async def drop_index(self, index: str) -> None:
        self.dropped.append(index)


async def test_profile_runs_a_handler_and_a_mapper_per_shape_into_their_own_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written = _profile(tmp_path).read_text()
    ran: list[tuple[Variant, str, str]] = []

    async def run_esupdater(stack: _Stack, variant: Variant, topic: str, partitions: int, *,
                            index: str, profile: Path) -> None:
        ran.append((variant, topic, index))
        await asyncio.to_thread(profile.write_text, written)  # what py-spy leaves behind

    monkeypatch.setattr(bench.run, "run_esupdater", run_esupdater)
    stack = _Stack()
    fake = SimpleNamespace(stack=stack, topics={1: "t1", 10: "t10"},
                           args=SimpleNamespace(partitions=4), results=SimpleNamespace(notes=[]))

    found = await bench.run.profile(cast(bench.run.Bench, fake), tmp_path / "out" / "p.json")

    assert list(found) == ["handler_1_row_msgs", "mapper_1_row_msgs", "handler_10_row_msgs",
                           "mapper_10_row_msgs"]
    assert [(v.rows_per_message, v.mapper, topic) for v, topic, _ in ran] == [
        (1, False, "t1"), (1, True, "t1"), (10, False, "t10"), (10, True, "t10")]
    assert all(v.is_default for v, _, _ in ran if not v.mapper)  # the handler: as the pairs'
    assert stack.dropped == stack.indices == [index for _, _, index in ran]
    assert len(set(stack.indices)) == 4
    assert found["mapper_10_row_msgs"]["profile"] == "p-mapper-10.json"  # a name, not a path
    assert found["mapper_10_row_msgs"]["self_percent_by_part"][0]["percent"] == 30.0
    assert json.loads(json.dumps(found)) == found  # as results.json will hold it


def test_a_frame_of_the_benchmark_is_named_by_its_path_in_the_repository() -> None:
    """results.json is committed: no path of the machine that ran it."""
    root = Path(hotspots.__file__).resolve().parent.parent
    frame = {"name": "Probe.map", "file": str(root / "bench" / "child.py")}
    assert hotspots._label(frame) == "Probe.map (bench/child.py)"
