"""Where esupdater spends its CPU: a py-spy speedscope profile summarised.

`python -m bench.hotspots PROFILE.json` prints the functions with the most samples on top of
the stack (self) and anywhere in it (inclusive), self time per package, and self time per part
of the service as the README's "Where the CPU goes" table names them (PARTS), so that table
can be filled from a profile. py-spy leaves out idle samples (the loop waiting in epoll), so
percentages are of busy time; samples taken while importing (process start-up) are left out
too. With uvloop, work done inside the loop's C code (polling, socket writes, callback
dispatch) shows up as self time of `Runner.run`, counted as the event loop's.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Path fragments that name the package a frame belongs to, most specific first.
PACKAGES = (
    ("/esupdater/", "esupdater"), ("/bench/", "bench"), ("/aiokafka/", "aiokafka"),
    ("/elasticsearch/", "elasticsearch"), ("/elastic_transport/", "elastic_transport"),
    ("/aiohttp/", "aiohttp"), ("/uvloop/", "uvloop"), ("/asyncio/", "asyncio"),
    ("/json/", "json (stdlib)"), ("/pydantic", "pydantic"),
)
#: Inclusive time is shown only for frames of these packages (the rest is the loop's spine).
INCLUSIVE_PACKAGES = frozenset(
    {"esupdater", "aiokafka", "elasticsearch", "elastic_transport", "aiohttp"}
)
#: A sample with a frame of this name is start-up (importing), not the data path.
IMPORTING = "_find_and_load"
#: The standard library's directory in a frame's path (`.../lib/python3.11/`).
STDLIB = re.compile(r"/lib/python3\.\d+/")


@dataclass(frozen=True)
class Part:
    """A row of the README's "Where the CPU goes" table: the frames whose self time it gets,
    by a fragment of the frame's file path or by the frame's exact name."""

    name: str
    paths: tuple[str, ...] = ()
    names: frozenset[str] = frozenset()

    def claims(self, frame: dict[str, Any]) -> bool:
        path = str(frame.get("file", ""))
        return frame.get("name") in self.names or any(p in path for p in self.paths)


#: The README's parts in its order; a frame counts for the first that claims it. The rows'
#: typers are compiled per schema with exec (esupdater/canal/values.py): their frames come
#: from "<string>" (GENERATED ones aside). The bench's handler and mapper live in
#: bench/child.py.
PARTS = (
    Part("decoding and typing",
         ("/esupdater/canal/", "/esupdater/mysql_types.py", "/esupdater/change.py", "<string>"),
         frozenset({"type_row"})),
    Part("the keyed dispatcher", ("/esupdater/dispatch.py",)),
    Part("handler, context and runner",
         ("/esupdater/handling.py", "/esupdater/context.py", "/esupdater/mapping.py",
          "/esupdater/actions.py", "/esupdater/mapped_rows.py", "/esupdater/mapped_batch.py",
          "/bench/child.py")),
    Part("bulk writer",
         ("/esupdater/bulk.py", "/esupdater/clients.py", "/elasticsearch/",
          "/elastic_transport/", "/aiohttp/")),
    Part("feeding (routing, offsets, counters)",
         ("/esupdater/feeding.py", "/esupdater/routing.py", "/esupdater/offsets.py",
          "/esupdater/stats.py", "/esupdater/metrics.py", "/esupdater/telemetry.py",
          "/esupdater/consume_loop.py")),
    Part("Kafka fetching", ("/aiokafka/",)),
    Part("event loop", ("/uvloop/", "/asyncio/"), frozenset({"Runner.run"})),
)
#: Where a frame no part claims counts (other libraries, the garbage collector, ...).
OTHER = "other"
#: The name of a method dataclasses wrote (`__init__`, `__eq__`, ...): it comes from
#: "<string>" too, but is no typer; its time counts for the part of the frame calling it.
GENERATED = "__create_fn__.<locals>."


@dataclass(frozen=True)
class Hotspots:
    busy_seconds: float
    self_time: list[tuple[str, float]]
    inclusive: list[tuple[str, float]]
    packages: list[tuple[str, float]]
    #: Every part of PARTS and OTHER in that order, over all frames: they sum to 100.
    parts: list[tuple[str, float]]

    def as_dict(self) -> dict[str, Any]:
        return {
            "busy_seconds": round(self.busy_seconds, 2),
            "self_percent": [{"function": f, "percent": round(p, 1)} for f, p in self.self_time],
            "inclusive_percent": [
                {"function": f, "percent": round(p, 1)} for f, p in self.inclusive
            ],
            "self_percent_by_package": [
                {"package": f, "percent": round(p, 1)} for f, p in self.packages
            ],
            "self_percent_by_part": [
                {"part": f, "percent": round(p, 1)} for f, p in self.parts
            ],
        }


#: The repository's folder, as the benchmark's own frames name it.
_REPOSITORY = str(Path(__file__).resolve().parent.parent) + "/"


def _label(frame: dict[str, Any]) -> str:
    path = str(frame.get("file", ""))
    for marker in ("/site-packages/", "/src/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    else:
        if path.startswith(_REPOSITORY):  # bench/...: no path of this machine in the results
            path = path[len(_REPOSITORY):]
        path = STDLIB.split(path, maxsplit=1)[-1]
    return f"{frame['name']} ({path})"  # per function: py-spy gives a frame per line


def _package(frame: dict[str, Any]) -> str:
    path = str(frame.get("file", ""))
    for marker, name in PACKAGES:
        if marker in path:
            return name
    return "other" if path.startswith("/") else "native/other"


def part(frame: dict[str, Any]) -> str:
    """The README part a frame's self time counts for."""
    if str(frame.get("name", "")).startswith(GENERATED):  # no caller to count it for
        return OTHER
    for candidate in PARTS:
        if candidate.claims(frame):
            return candidate.name
    return OTHER


def _owner(frames: list[dict[str, Any]], stack: list[int]) -> int:
    """The frame whose part a sample's self time counts for: the top one, or the caller of a
    GENERATED method (a dataclass built in the bulk writer is the bulk writer's time)."""
    for index in reversed(stack):
        if not str(frames[index]["name"]).startswith(GENERATED):
            return index
    return stack[-1]


def by_part(frames: list[dict[str, Any]], own: Counter[int]) -> list[tuple[str, float]]:
    """Self time (`own`: weight per frame index, every frame, not only the top ones; see
    _owner) as percentages per part, every part listed in the README's order, so they sum to 100."""
    grouped: Counter[str] = Counter()
    for index, weight in own.items():
        grouped[part(frames[index])] += weight
    total = sum(grouped.values()) or 1.0
    return [(name, 100 * grouped[name] / total) for name in (*(p.name for p in PARTS), OTHER)]


def summarise(profile: Path, top: int = 20) -> Hotspots:
    data = json.loads(profile.read_text())
    frames: list[dict[str, Any]] = data["shared"]["frames"]
    labels = [_label(frame) for frame in frames]
    own: Counter[str] = Counter()
    own_frames: Counter[int] = Counter()
    anywhere: Counter[str] = Counter()
    by_package: Counter[str] = Counter()
    importing = {i for i, frame in enumerate(frames) if frame["name"] == IMPORTING}
    total = 0.0
    for prof in data["profiles"]:
        for stack, weight in zip(prof["samples"], prof["weights"], strict=True):
            if not stack or importing.intersection(stack):
                continue
            total += weight
            own[labels[stack[-1]]] += weight
            own_frames[_owner(frames, stack)] += weight
            by_package[_package(frames[stack[-1]])] += weight
            for label in {labels[i] for i in stack if _package(frames[i]) in INCLUSIVE_PACKAGES}:
                anywhere[label] += weight

    def ranked(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, 100 * value / (total or 1.0))
                for name, value in counter.most_common(top)]

    return Hotspots(
        busy_seconds=total, self_time=ranked(own), inclusive=ranked(anywhere),
        packages=ranked(by_package), parts=by_part(frames, own_frames),
    )


def main(path: str) -> None:
    spots = summarise(Path(path))
    print(f"{spots.busy_seconds:.1f} busy seconds sampled")
    for title, rows in (("self", spots.self_time), ("inclusive", spots.inclusive),
                        ("self by package", spots.packages),
                        ("self by part (the README's table)", spots.parts)):
        print(f"\n{title}:")
        for name, percent in rows:
            print(f"  {percent:5.1f}%  {name}")


if __name__ == "__main__":
    main(sys.argv[1])
