"""Where esupdater spends its CPU: a py-spy speedscope profile summarised.

`python -m bench.hotspots PROFILE.json` prints the functions with the most samples on top of
the stack (self) and anywhere in it (inclusive), and self time per package. py-spy leaves out
idle samples (the loop waiting in epoll), so percentages are of busy time; samples taken while
importing (process start-up) are left out too. With uvloop, work done inside the loop's C code
(polling, socket writes, callback dispatch) shows up as self time of `Runner.run`.
"""

from __future__ import annotations

import json
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


@dataclass(frozen=True)
class Hotspots:
    busy_seconds: float
    self_time: list[tuple[str, float]]
    inclusive: list[tuple[str, float]]
    packages: list[tuple[str, float]]

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
        }


def _label(frame: dict[str, Any]) -> str:
    path = str(frame.get("file", ""))
    for marker in ("/site-packages/", "/src/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{frame['name']} ({path})"  # per function: py-spy gives a frame per line


def _package(frame: dict[str, Any]) -> str:
    path = str(frame.get("file", ""))
    for marker, name in PACKAGES:
        if marker in path:
            return name
    return "other" if path.startswith("/") else "native/other"


def summarise(profile: Path, top: int = 20) -> Hotspots:
    data = json.loads(profile.read_text())
    frames: list[dict[str, Any]] = data["shared"]["frames"]
    labels = [_label(frame) for frame in frames]
    own: Counter[str] = Counter()
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
            by_package[_package(frames[stack[-1]])] += weight
            for label in {labels[i] for i in stack if _package(frames[i]) in INCLUSIVE_PACKAGES}:
                anywhere[label] += weight

    def ranked(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, 100 * value / total) for name, value in counter.most_common(top)]

    return Hotspots(
        busy_seconds=total, self_time=ranked(own), inclusive=ranked(anywhere),
        packages=ranked(by_package),
    )


def main(path: str) -> None:
    spots = summarise(Path(path))
    print(f"{spots.busy_seconds:.1f} busy seconds sampled")
    for title, rows in (("self", spots.self_time), ("inclusive", spots.inclusive),
                        ("self by package", spots.packages)):
        print(f"\n{title}:")
        for name, percent in rows:
            print(f"  {percent:5.1f}%  {name}")


if __name__ == "__main__":
    main(sys.argv[1])
