"""The runtime directory: pidfile lock, status file and stats file (one instance per directory).

The lifecycle is that of the PHP tool esupdater replaces: `run` writes its pid and `start`,
`stop` writes `stop` and waits for the process to go away. The pidfile is `flock`ed for the
life of the process, so a held lock (not the pid number, which the kernel reuses) is what
says "running".

Nothing here writes through a symbolic link: the pidfile is opened with `O_NOFOLLOW` (a
link there is refused, as someone else's file would be truncated), and the status and
stats files are replaced by rename, which replaces a link, never its target. The directory
is created 0700; the files in it are 0644, so making the directory 0755 is enough to let
other users run `esupdater status`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import signal
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import orjson

from esupdater.errors import ConfigError, EsupdaterError

PID_FILE = "esupdater.pid"
STATUS_FILE = "esupdater.status"
STATS_FILE = "esupdater.stats.json"

#: Mode of a runtime directory esupdater creates: only its owner may put files in it.
DIR_MODE = 0o700

Status = Literal["start", "stop"]
STATUSES: frozenset[str] = frozenset({"start", "stop"})

# The lock holder writes its pid right after locking; a reader that catches the gap retries.
_PID_READ_ATTEMPTS = 50
_PID_READ_PAUSE_S = 0.01

log = logging.getLogger(__name__)


class AlreadyRunning(EsupdaterError):
    """Another live esupdater holds the runtime directory's pidfile."""

    def __init__(self, pid: int | None, runtime_dir: Path) -> None:
        self.pid = pid
        self.runtime_dir = runtime_dir
        who = f"with pid {pid}" if pid is not None else "(pid not yet written)"
        super().__init__(
            f"esupdater is already running {who} (runtime dir {runtime_dir}); "
            "stop it with `esupdater stop`"
        )


class UnsafeRuntimeFile(ConfigError):
    """A runtime file is a symbolic link: writing it would write wherever the link points."""

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(
            f"{path} is a symbolic link; esupdater never writes through one (it would "
            "truncate the file it points to): remove the link, or set [runtime] dir to a "
            "directory only this user can write"
        )


def make_runtime_dir(runtime_dir: Path) -> None:
    """Create the runtime dir 0700 if missing; warn if other users may write in it."""
    runtime_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    mode = runtime_dir.stat().st_mode
    if mode & 0o022:  # sticky or not: others could still create files (links) in it
        log.warning("runtime dir %s is writable by other users (mode %o): they could replace "
                    "its files; chmod go-w it", runtime_dir, mode & 0o7777)


def _open_nofollow(path: Path, flags: int, mode: int = 0o644) -> int:
    try:
        return os.open(path, flags | os.O_NOFOLLOW, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeRuntimeFile(path) from None
        raise


def parse_pid(text: str) -> int | None:
    """The pid in a pidfile's text, or None if it holds no valid pid."""
    text = text.strip()
    return int(text) if text.isdigit() and int(text) > 0 else None


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (signal 0 checks without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


class PidFile:
    """`esupdater.pid` in `runtime_dir`, exclusively locked while this process runs."""

    def __init__(self, runtime_dir: Path) -> None:
        self.runtime_dir = runtime_dir
        self.path = runtime_dir / PID_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Lock the pidfile and write our pid, or raise `AlreadyRunning`."""
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this PidFile")
        make_runtime_dir(self.runtime_dir)
        while True:
            fd = _open_nofollow(self.path, os.O_RDWR | os.O_CREAT)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = _read_pid_fd(fd)
                os.close(fd)
                raise AlreadyRunning(pid, self.runtime_dir) from None
            if _same_file(fd, self.path):
                break
            # The holder released (unlinked) between our open and our lock: we locked a
            # file nobody else will see, so start over on the current path.
            os.close(fd)
        old = _read_pid_fd(fd)
        if old is not None:
            # Unlocked means its writer is gone, even if the kernel has reused the pid since.
            reused = " (pid now reused)" if pid_alive(old) else ""
            log.warning("replacing stale pidfile %s of dead pid %d%s", self.path, old, reused)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        """Remove the pidfile, then unlock: unlinking first means no one locks a dying file."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if _same_file(fd, self.path):
                self.path.unlink()
        finally:
            os.close(fd)  # closing drops the flock

    def __enter__(self) -> PidFile:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _read_pid_fd(fd: int) -> int | None:
    return parse_pid(os.pread(fd, 64, 0).decode("ascii", errors="replace"))


def read_running_pid(runtime_dir: Path) -> int | None:
    """The pid of the live instance using `runtime_dir`, or None (a stale pidfile is none)."""
    try:
        fd = _open_nofollow(runtime_dir / PID_FILE, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            # A shared lock is granted only if nobody holds the exclusive one.
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            for _ in range(_PID_READ_ATTEMPTS):
                pid = _read_pid_fd(fd)
                if pid is not None:
                    return pid
                time.sleep(_PID_READ_PAUSE_S)
            log.warning("%s is locked but holds no pid", runtime_dir / PID_FILE)
            return None
        return None
    finally:
        os.close(fd)


def _atomic_write(path: Path, data: bytes, *, durable: bool) -> None:
    """Write via a temp file and `os.replace`, so readers see the old or the new file, whole."""
    path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o644)  # mkstemp's 0600 would hide it from `status` run by others
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_status(runtime_dir: Path, status: Status) -> None:
    """Record `start` (running) or `stop` (asked to stop) for the running instance to read."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {sorted(STATUSES)}, got {status!r}")
    _atomic_write(runtime_dir / STATUS_FILE, f"{status}\n".encode(), durable=True)


def read_status(runtime_dir: Path) -> Status | None:
    """The status file's word, or None if there is no file or it holds something else."""
    try:
        text = (runtime_dir / STATUS_FILE).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    if text == "start":
        return "start"
    if text == "stop":
        return "stop"
    return None


def write_stats(runtime_dir: Path, stats: Mapping[str, Any]) -> None:
    """Publish the service's counters for `esupdater status` (not fsynced: rewritten often)."""
    data = orjson.dumps(stats, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
    _atomic_write(runtime_dir / STATS_FILE, data, durable=False)


def read_stats(runtime_dir: Path) -> dict[str, Any] | None:
    """The last published stats, or None if there are none or the file is not a JSON object."""
    path = runtime_dir / STATS_FILE
    try:
        value = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except orjson.JSONDecodeError as exc:
        log.warning("ignoring unreadable stats file %s: %s", path, exc)
        return None
    return value if isinstance(value, dict) else None


async def wait_for_stop(runtime_dir: Path, timeout_s: float, poll_s: float = 1.0) -> bool:
    """Ask the instance to stop; True once no live instance remains, False on timeout.

    Both ways the PHP tool's users know and the way service managers use: `stop` in the
    status file, then SIGTERM to the pid that holds the lock (so it is never a reused pid),
    which drains the same way and reaches an instance that does not read the file yet.
    """
    write_status(runtime_dir, "stop")
    pid = read_running_pid(runtime_dir)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):  # gone meanwhile: nothing to ask
            os.kill(pid, signal.SIGTERM)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while read_running_pid(runtime_dir) is not None:
        remaining = deadline - loop.time()
        if remaining <= 0:
            return False
        await asyncio.sleep(min(poll_s, remaining))
    return True
