"""The README's "Try it on the example shop" block, run as it is written, on the real stack.

The block is read from README.md (the fenced block after its `<!-- walkthrough` marker) and
run by bash from the repository's root, as a reader pastes it. Only what keeps it from
meeting a reader's own run changes: its runtime dir, and a consumer group of its own that
starts where Canal's topic ends now (as the README's default group would, having followed
the topic so far); `tools.shop_tables traffic` waits for that group.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import uuid
from pathlib import Path

from tests.integration.service_harness import child_env
from tests.integration.test_backfill import commit_at_end
from tests.integration.test_canal_live import CANAL_TOPIC

ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- walkthrough"
#: fill + backfill + 20 s of traffic + verify take about a minute.
TIMEOUT = 300.0


def walkthrough_block(readme: str) -> str:
    """The first ```sh block after the marker."""
    after = readme[readme.index(MARKER):]
    found = re.search(r"```sh\n(.*?)```", after, re.DOTALL)
    assert found, f"no ```sh block after {MARKER} in README.md"
    return found.group(1)


async def test_the_readme_walkthrough_backfills_the_shop_with_the_stream_running_and_verifies(
    tmp_path: Path,
) -> None:
    script = walkthrough_block((ROOT / "README.md").read_text())
    group = f"walkthrough-{uuid.uuid4().hex[:8]}"
    await commit_at_end(group, CANAL_TOPIC)
    env = child_env({"ESUPDATER_KAFKA__GROUP_ID": group,
                     "ESUPDATER_RUNTIME__DIR": str(tmp_path / "runtime")})
    proc = await asyncio.create_subprocess_exec(
        "bash", "-euo", "pipefail", "-c", script, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        stdin=asyncio.subprocess.DEVNULL, start_new_session=True,
    )
    try:
        output, _ = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    finally:
        if proc.returncode is None:  # the block's background `esupdater run` too
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
    shown = output.decode(errors="replace")

    assert proc.returncode == 0, shown
    users = re.search(r"^verify shop\.users: (\d+) rows, (\d+) documents expected, (\d+) "
                      r"equal, 0 missing, 0 different, 0 orphans$", shown, re.MULTILINE)
    assert users, shown
    assert int(users[1]) == int(users[2]) == int(users[3]) > 1_900, shown
    orders = re.search(r"^verify shop\.orders_\* \(4 tables\): (\d+) rows, (\d+) documents "
                       r"expected, (\d+) equal, 0 missing, 0 different, 0 orphans$", shown,
                       re.MULTILINE)
    assert orders, shown
    assert int(orders[1]) == int(orders[2]) == int(orders[3]) > 19_000, shown
    # The backfill and the stream overlapped: the traffic ran, and was handled, meanwhile.
    assert re.search(r"^traffic: [\d,]+ statements", shown, re.MULTILINE), shown
    assert f"esupdater (group {group}) has handled all of it" in shown, shown
    assert "stopped" in shown, shown
