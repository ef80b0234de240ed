"""The runtime directory: one instance per directory, status and stats files, `stop` waiting."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from esupdater.errors import ConfigError
from esupdater.runtime_dir import (
    PID_FILE,
    STATS_FILE,
    STATUS_FILE,
    AlreadyRunning,
    PidFile,
    parse_pid,
    read_running_pid,
    read_stats,
    read_status,
    wait_for_stop,
    write_stats,
    write_status,
)

# Holds the pidfile until its stdin closes.
HOLDER = """
import sys
from pathlib import Path
from esupdater.runtime_dir import PidFile
with PidFile(Path(sys.argv[1])):
    print("ready", flush=True)
    sys.stdin.read()
"""

# Behaves like `esupdater run` around the status file and SIGTERM: runs until it reads
# "stop" or is sent SIGTERM, then exits 0.
OBEYS_STOP = """
import signal, sys, time
from pathlib import Path
from esupdater.runtime_dir import PidFile, read_status, write_status
d = Path(sys.argv[1])
asked = []
signal.signal(signal.SIGTERM, lambda *_: asked.append(1))
with PidFile(d):
    write_status(d, "start")
    print("ready", flush=True)
    while read_status(d) != "stop" and not asked:
        time.sleep(0.02)
"""

# Stuck: holds the pidfile and ignores both the status file and SIGTERM.
STUCK = """
import signal, sys
from pathlib import Path
from esupdater.runtime_dir import PidFile
signal.signal(signal.SIGTERM, signal.SIG_IGN)
with PidFile(Path(sys.argv[1])):
    print("ready", flush=True)
    sys.stdin.read()
"""


def spawn(script: str, runtime_dir: Path) -> subprocess.Popen[str]:
    """Start a child running `script` and wait until it holds the pidfile."""
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(runtime_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    return child


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[str]]]:
    """Child processes a test starts; killed at the end whatever happened."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for child in started:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=10)


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=10)
    return child.pid


def test_acquire_creates_dir_and_writes_our_pid(tmp_path: Path) -> None:
    runtime_dir = tmp_path / "runtime" / "nested"
    with PidFile(runtime_dir):
        assert (runtime_dir / PID_FILE).read_text().strip() == str(os.getpid())
        assert read_running_pid(runtime_dir) == os.getpid()


def test_a_created_runtime_dir_is_private_to_its_owner(tmp_path: Path) -> None:
    runtime_dir = tmp_path / "runtime"
    with PidFile(runtime_dir):
        assert runtime_dir.stat().st_mode & 0o777 == 0o700
    write_status(tmp_path / "other", "start")
    assert (tmp_path / "other").stat().st_mode & 0o777 == 0o700


def test_a_pidfile_that_is_a_symlink_is_refused_naming_it_and_its_target_is_untouched(
    tmp_path: Path,
) -> None:
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me\n")
    runtime_dir = tmp_path / "runtime"
    runtime_dir.mkdir()
    (runtime_dir / PID_FILE).symlink_to(victim)

    with pytest.raises(ConfigError, match=rf"{runtime_dir / PID_FILE} is a symbolic link"):
        PidFile(runtime_dir).acquire()

    assert victim.read_text() == "keep me\n"
    assert (runtime_dir / PID_FILE).is_symlink()  # left for the user to look at


def test_status_and_stop_refuse_a_symlinked_pidfile_too(tmp_path: Path) -> None:
    victim = tmp_path / "precious.txt"
    victim.write_text(f"{os.getpid()}\n")
    (tmp_path / PID_FILE).symlink_to(victim)

    with pytest.raises(ConfigError, match="is a symbolic link"):
        read_running_pid(tmp_path)


def test_status_and_stats_files_that_are_symlinks_are_replaced_not_written_through(
    tmp_path: Path,
) -> None:
    victims = {name: tmp_path / f"victim-{name}" for name in (STATUS_FILE, STATS_FILE)}
    runtime_dir = tmp_path / "runtime"
    runtime_dir.mkdir()
    for name, victim in victims.items():
        victim.write_text("keep me\n")
        (runtime_dir / name).symlink_to(victim)

    write_status(runtime_dir, "start")
    write_stats(runtime_dir, {"rows_done": 1})

    for name, victim in victims.items():
        assert victim.read_text() == "keep me\n"
        assert not (runtime_dir / name).is_symlink()
    assert read_status(runtime_dir) == "start"


def test_a_runtime_dir_writable_by_others_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    runtime_dir = tmp_path / "shared"
    runtime_dir.mkdir()
    runtime_dir.chmod(0o777)
    with caplog.at_level(logging.WARNING, logger="esupdater.runtime_dir"), PidFile(runtime_dir):
        pass
    assert f"runtime dir {runtime_dir} is writable by other users" in caplog.text


def test_release_removes_the_pidfile(tmp_path: Path) -> None:
    pidfile = PidFile(tmp_path)
    pidfile.acquire()
    pidfile.release()
    assert not (tmp_path / PID_FILE).exists()
    assert read_running_pid(tmp_path) is None
    pidfile.release()  # idempotent


def test_second_instance_in_another_process_is_refused(
    tmp_path: Path, children: list[subprocess.Popen[str]]
) -> None:
    holder = spawn(HOLDER, tmp_path)
    children.append(holder)
    with pytest.raises(AlreadyRunning) as err:
        PidFile(tmp_path).acquire()
    assert err.value.pid == holder.pid
    assert str(err.value) == (
        f"esupdater is already running with pid {holder.pid} (runtime dir {tmp_path}); "
        "stop it with `esupdater stop`"
    )
    assert read_running_pid(tmp_path) == holder.pid
    assert (tmp_path / PID_FILE).read_text().strip() == str(holder.pid)  # left untouched


def test_lock_is_free_again_after_the_holder_exits(
    tmp_path: Path, children: list[subprocess.Popen[str]]
) -> None:
    holder = spawn(HOLDER, tmp_path)
    children.append(holder)
    holder.communicate(timeout=10)  # closes stdin: the holder releases and exits
    with PidFile(tmp_path):
        assert read_running_pid(tmp_path) == os.getpid()


def test_stale_pidfile_of_a_dead_pid_is_replaced_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stale = dead_pid()
    (tmp_path / PID_FILE).write_text(f"{stale}\n")
    assert read_running_pid(tmp_path) is None
    with caplog.at_level(logging.WARNING, logger="esupdater.runtime_dir"), PidFile(tmp_path):
        assert (tmp_path / PID_FILE).read_text().strip() == str(os.getpid())
    assert f"stale pidfile {tmp_path / PID_FILE} of dead pid {stale}" in caplog.text


def test_killed_holder_leaves_a_stale_pidfile_that_is_replaced(
    tmp_path: Path, children: list[subprocess.Popen[str]]
) -> None:
    holder = spawn(HOLDER, tmp_path)
    children.append(holder)
    holder.kill()  # SIGKILL: no release, the file stays but the kernel drops the lock
    holder.wait(timeout=10)
    assert (tmp_path / PID_FILE).exists()
    assert read_running_pid(tmp_path) is None
    with PidFile(tmp_path):
        assert read_running_pid(tmp_path) == os.getpid()


def test_garbage_pidfile_counts_as_stale(tmp_path: Path) -> None:
    (tmp_path / PID_FILE).write_text("not a pid")
    assert read_running_pid(tmp_path) is None
    with PidFile(tmp_path):
        assert read_running_pid(tmp_path) == os.getpid()


@pytest.mark.parametrize(
    ("text", "pid"), [("123\n", 123), (" 7 ", 7), ("", None), ("0", None), ("-5", None)]
)
def test_parse_pid(text: str, pid: int | None) -> None:
    assert parse_pid(text) == pid


def test_status_round_trip(tmp_path: Path) -> None:
    assert read_status(tmp_path) is None
    write_status(tmp_path, "start")
    assert read_status(tmp_path) == "start"
    write_status(tmp_path, "stop")
    assert read_status(tmp_path) == "stop"


def test_unknown_status_text_reads_as_none(tmp_path: Path) -> None:
    (tmp_path / STATUS_FILE).write_text("pause\n")
    assert read_status(tmp_path) is None


def test_stats_round_trip(tmp_path: Path) -> None:
    assert read_stats(tmp_path) is None
    stats = {"pid": 42, "rows_per_s": 12.5, "lag": {"canal": {0: 3, 1: 0}}}
    write_stats(tmp_path, stats)
    assert read_stats(tmp_path) == {
        "pid": 42,
        "rows_per_s": 12.5,
        "lag": {"canal": {"0": 3, "1": 0}},
    }


def test_failed_write_keeps_the_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_status(tmp_path, "start")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_status(tmp_path, "stop")
    assert read_status(tmp_path) == "start"
    assert sorted(p.name for p in tmp_path.iterdir()) == [STATUS_FILE]


def test_readers_never_see_a_partial_stats_file(tmp_path: Path) -> None:
    big = {"counts": {f"table_{i}": i for i in range(2000)}}
    write_stats(tmp_path, big)
    done = threading.Event()

    def writer() -> None:
        while not done.is_set():
            write_stats(tmp_path, big)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(300):
            assert read_stats(tmp_path) == big
    finally:
        done.set()
        thread.join()


async def test_wait_for_stop_returns_true_when_the_instance_exits(
    tmp_path: Path, children: list[subprocess.Popen[str]]
) -> None:
    child = spawn(OBEYS_STOP, tmp_path)
    children.append(child)
    assert read_status(tmp_path) == "start"
    assert await wait_for_stop(tmp_path, timeout_s=10, poll_s=0.05)
    assert await asyncio.to_thread(child.wait, 10) == 0
    assert not (tmp_path / PID_FILE).exists()


async def test_wait_for_stop_returns_false_on_timeout(
    tmp_path: Path, children: list[subprocess.Popen[str]]
) -> None:
    children.append(spawn(STUCK, tmp_path))  # ignores the status file and SIGTERM
    assert not await wait_for_stop(tmp_path, timeout_s=0.3, poll_s=0.05)
    assert read_status(tmp_path) == "stop"
    assert read_running_pid(tmp_path) == children[0].pid


async def test_wait_for_stop_with_nothing_running_is_immediate(tmp_path: Path) -> None:
    assert await wait_for_stop(tmp_path, timeout_s=0, poll_s=1)


async def test_stop_also_signals_a_running_instance_that_never_reads_the_status_file(
    tmp_path: Path, children: list[subprocess.Popen[str]]
) -> None:
    """SIGTERM drains the same way; an instance stuck before it watches the file still stops."""
    holder = spawn(HOLDER, tmp_path)  # holds the pidfile, ignores the status file
    children.append(holder)
    assert await wait_for_stop(tmp_path, timeout_s=10, poll_s=0.05)
    assert holder.wait(timeout=10) == -signal.SIGTERM
