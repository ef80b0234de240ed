"""One esupdater process for the benchmark: `python -m bench.child SPEC.json`.

Runs `esupdater.service.serve()` in-process with esupdater's default settings (only the
addresses, topic, group and runtime dir set), on uvloop or plain asyncio, with or without the
orjson serializer, and one handler (index the typed row, delete on DELETE; routed from the
spec's `route`, shop.users by default) wrapped in a probe that notes the first call, the last
acknowledgement and, in latency mode, each row's latency. With the spec's `mapper`, the same
writes come from a mapper (`Registry.add_mapper`: no task per row) instead; a mapper does not
see its row acknowledged, so the probe counts the acknowledgements (and, when asked, times
them) from the sensor the service tells of each row done (`Stats.sensor.handler_done`, on
both paths).
The parent ends it through the status file, like `esupdater stop`; on exit it writes its
figures (and its own peak RSS) to the spec's `result` path.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from array import array
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import uvloop

from bench.lib.stack import peak_rss_mb
from esupdater import Change, Context, Registry, actions, clients, service
from esupdater.actions import Action
from esupdater.logs import setup_logging
from esupdater.metrics import FreshnessSensor
from esupdater.routing import Route
from esupdater.settings import (
    ElasticsearchSettings,
    KafkaSettings,
    RuntimeSettings,
    Settings,
)


class Probe:
    """Wraps the handler: first call, last ack, rows, latencies from the record's time and,
    when asked, each row's acknowledgement time by primary key (freshness.py)."""

    def __init__(self, index: str, latency: bool, acks: bool = False) -> None:
        self.index = index
        self.latency = latency
        self.acks = acks
        self.first: float | None = None
        self.last = 0.0
        self.rows = 0
        #: Pairs (record time, seconds from record time to acknowledgement), flattened.
        self.samples = array("d")
        #: Pairs (integer primary key, wall time of the acknowledgement), flattened.
        self.ack_times = array("d")

    async def handle(self, change: Change, ctx: Context) -> None:
        if self.first is None:
            self.first = time.monotonic()
        if change.is_delete:
            await ctx.delete(index=self.index, id=change.pk)
        else:
            await ctx.index(index=self.index, id=change.pk, doc=change.row)
        self.last = time.monotonic()
        self.rows += 1
        self.note_ack(change)

    def note_ack(self, change: Change) -> None:
        """A row acknowledged: its latency sample and its ack time, when asked for."""
        if self.latency and change.executed_at is not None:
            sent = change.executed_at.timestamp()  # == the record's CreateTime, see latency.py
            self.samples.extend((sent, time.time() - sent))
        if self.acks:
            self.ack_times.extend((float(change.pk), time.time()))

    def map(self, change: Change) -> Action:
        """The mapper: the same writes as `handle`, returned instead of awaited."""
        if self.first is None:
            self.first = time.monotonic()
        if change.is_delete:
            return actions.delete(index=self.index, id=change.pk)
        return actions.index(index=self.index, id=change.pk, doc=change.row)

    def sensor(self) -> type[FreshnessSensor]:
        """The service's sensor (it installs its own in `serve`), also noting each row's
        acknowledgement: what `handle` notes after its awaited write, for a mapper."""
        probe = self

        class AckSensor(FreshnessSensor):
            __slots__ = ()

            def handler_done(
                self, route: Route, change: Change, seconds: float, outcome: str
            ) -> None:
                super().handler_done(route, change, seconds, outcome)
                if outcome == "done":
                    probe.last = time.monotonic()
                    probe.rows += 1
                    probe.note_ack(change)

            def rows_done(self, done: Sequence[tuple[Route, Change]], seconds: float) -> None:
                super().rows_done(done, seconds)
                probe.last = time.monotonic()
                probe.rows += len(done)
                for _, change in done:
                    probe.note_ack(change)

        return AckSensor

    def figures(self) -> dict[str, Any]:
        return {
            "first_row_at": self.first,
            "last_ack_at": self.last,
            "rows": self.rows,
            "samples": list(self.samples),
            "acks": list(self.ack_times),
            # Not getrusage: ru_maxrss carries over the parent's RSS across fork + exec.
            "peak_rss_mb": peak_rss_mb(os.getpid()),
        }


def settings_for(spec: dict[str, Any]) -> Settings:
    return Settings(
        kafka=KafkaSettings(
            bootstrap_servers=spec["kafka"], topics=[spec["topic"]], group_id=spec["group"]
        ),
        elasticsearch=ElasticsearchSettings(hosts=[spec["elasticsearch"]]),
        runtime=RuntimeSettings(dir=Path(spec["runtime_dir"])),
    )


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    setup_logging("WARNING", "text")
    if not spec["orjson"]:
        # serve() offers no switch for the serializer; see the report for the proposed setting.
        setattr(service, "make_elasticsearch", partial(clients.make_elasticsearch, orjson=False))  # noqa: B010
    probe = Probe(spec["index"], spec["latency"], spec.get("acks", False))
    registry = Registry()
    route = spec.get("route", "shop.users")
    if spec.get("mapper", False):
        setattr(service, "FreshnessSensor", probe.sensor())  # noqa: B010
        registry.add_mapper(route, probe.map)
    else:
        registry.add(route, probe.handle)
    started = time.monotonic()
    runner = uvloop.run if spec["loop"] == "uvloop" else asyncio.run
    runner(service.serve(settings_for(spec), registry))
    result = {"started_at": started, "stopped_at": time.monotonic(), **probe.figures()}
    Path(spec["result"]).write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
