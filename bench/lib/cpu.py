"""CPU seconds of processes over a window: the contender's own, and Elasticsearch's.

The window of a run (its first handled row -> the group committed at the end offsets) is only
known once the run is over: the child reports its first row when it exits. So a sampler
records every process's utime+stime (/proc/<pid>/stat) every few tens of milliseconds with a
monotonic timestamp (CLOCK_MONOTONIC is the same clock in every process of the machine), and
the window's CPU is read from that timeline afterwards, interpolated between samples.
"""

from __future__ import annotations

import asyncio
import bisect
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: Where the stack scripts keep Elasticsearch's and Kafka's pids.
ES_PIDFILE = ROOT / ".stack" / "elasticsearch" / "es.pid"
KAFKA_PIDFILE = ROOT / ".stack" / "kafka" / "kafka.pid"
TICKS = os.sysconf("SC_CLK_TCK")
#: Sampling period: 10 ms of clock-tick resolution, a few samples per second of a run.
PERIOD = 0.05


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of `pid` so far (all its threads), None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ")".
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14 and 15)


def machine_cpu_seconds() -> float | None:
    """CPU seconds every core of the machine has been busy (not idle, not waiting on I/O)."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except FileNotFoundError:
        return None
    # cpu user nice system idle iowait irq softirq steal ...
    user, nice, system, _, _, irq, softirq, steal = (int(x) for x in first[1:9])
    return (user + nice + system + irq + softirq + steal) / TICKS


def elasticsearch_pid(port: int = 9200) -> int | None:
    """The Elasticsearch JVM of the local stack: its pidfile, else the owner of the
    listening socket on `port`, else a process whose command line names Elasticsearch."""
    return (_from_pidfile(ES_PIDFILE) or _listener(port)
            or _by_command_line("org.elasticsearch.bootstrap.Elasticsearch"))


def kafka_pid(port: int = 9092) -> int | None:
    """The Kafka broker of the local stack, found the same way."""
    return _from_pidfile(KAFKA_PIDFILE) or _listener(port) or _by_command_line("kafka.Kafka")


def _from_pidfile(path: Path) -> int | None:
    try:
        pid = int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if cpu_seconds(pid) is not None else None


def _listener(port: int) -> int | None:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            cols = line.split()
            if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:  # LISTEN
                inodes.add(f"socket:[{cols[9]}]")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in inodes for fd in (proc / "fd").iterdir()):
                return int(proc.name)
        except OSError:  # gone, or another user's (not root)
            continue
    return None


def _by_command_line(marker: str) -> int | None:
    """A JVM whose command line holds `marker` (its main class)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        # The main class stands alone, or after its module (`module/class`).
        if argv[0].endswith(b"java") and any(a.split(b"/")[-1] == marker.encode()
                                             for a in argv):
            return int(proc.name)
    return None


@dataclass
class Timeline:
    """(monotonic time, CPU seconds) samples of one process, in time order."""

    times: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)

    def add(self, at: float, value: float) -> None:
        self.times.append(at)
        self.values.append(value)

    def at(self, when: float) -> float:
        """CPU seconds at `when`, linear between the samples around it (clamped at the ends)."""
        if not self.times:
            return 0.0
        i = bisect.bisect_left(self.times, when)
        if i == 0:
            return self.values[0]
        if i == len(self.times):
            return self.values[-1]
        t0, t1 = self.times[i - 1], self.times[i]
        v0, v1 = self.values[i - 1], self.values[i]
        return v0 + (v1 - v0) * (when - t0) / (t1 - t0) if t1 > t0 else v1

    def between(self, start: float, end: float) -> float:
        return max(0.0, self.at(end) - self.at(start))


#: The name under which CpuSampler records the whole machine's busy CPU.
MACHINE = "machine"


@dataclass
class CpuSampler:
    """Samples named processes, and the whole machine (MACHINE), until stopped;
    `between(name, t0, t1)` afterwards."""

    pids: dict[str, int]
    timelines: dict[str, Timeline] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.timelines = {name: Timeline() for name in [*self.pids, MACHINE]}
        self.sample()
        self._task = asyncio.create_task(self._run(), name="cpu-sampler")

    def sample(self) -> None:
        now = time.monotonic()
        for name, pid in self.pids.items():
            value = cpu_seconds(pid)
            if value is not None:
                self.timelines[name].add(now, value)
        machine = machine_cpu_seconds()
        if machine is not None:
            self.timelines[MACHINE].add(now, machine)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(PERIOD)
            self.sample()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def between(self, name: str, start: float, end: float) -> float:
        """CPU seconds of `name` over the window; 0 for a process not sampled."""
        timeline = self.timelines.get(name)
        return timeline.between(start, end) if timeline else 0.0
