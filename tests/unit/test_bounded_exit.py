"""The process exit is bounded even when a task ignores its cancel."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time

import pytest

from esupdater import bounded_exit

STUBBORN = textwrap.dedent(
    """
    import asyncio, logging, sys
    from esupdater import bounded_exit

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)

    async def stubborn() -> None:
        while True:
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                pass  # what a buggy library loop does

    async def main() -> str:
        asyncio.create_task(stubborn(), name="stubborn-loop")
        await asyncio.sleep(0.1)
        return "done"

    print(bounded_exit.run(main(), leftover_timeout={timeout}))
    print("not reached")
    """
)


def test_a_task_that_ignores_cancel_cannot_keep_the_process_alive() -> None:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", STUBBORN.format(timeout=0.5)],
        capture_output=True, text=True, timeout=30,
    )

    assert proc.returncode == 0, proc.stderr
    assert "stubborn-loop ignored its cancel" in proc.stderr
    assert "stubborn" in proc.stderr.split("ignored its cancel", 1)[1]  # where it is stuck
    assert "not reached" not in proc.stdout
    assert time.monotonic() - started < 20


def test_returns_the_result_and_cancels_leftover_tasks() -> None:
    cancelled: list[str] = []

    async def background() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.append("background")

    async def main() -> int:
        left_running = asyncio.create_task(background())
        await asyncio.sleep(0)
        assert not left_running.done()
        return 42

    assert bounded_exit.run(main()) == 42
    assert cancelled == ["background"]


def test_an_exception_from_main_propagates() -> None:
    async def main() -> None:
        raise ValueError("bad settings")

    with pytest.raises(ValueError, match="bad settings"):
        bounded_exit.run(main())

