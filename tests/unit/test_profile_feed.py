"""The no-network paths that tools/count_instructions.py compares: both deliver every row
of the benchmark's dataset, so a count is never of a path that dropped work."""

from __future__ import annotations

import pytest
import uvloop

from bench.lib.dataset import messages, statements
from tools import profile_feed


@pytest.mark.parametrize("shape", [1, 10])
def test_esupdater_its_mapper_path_and_the_batch_loop_each_write_every_row_once(
    shape: int, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = 3_000
    values = list(messages(statements(rows, partitions=4), shape))
    uvloop.run(profile_feed.run(values, rows))  # asserts every row done
    uvloop.run(profile_feed.run(values, rows, mapped=True))  # the same with a mapper
    uvloop.run(profile_feed.run_batch_loop(values, rows))  # asserts every action sent
    lines = capsys.readouterr().out.splitlines()
    written = [line for line in lines if "bulk requests" in line]
    assert len(written) == 3
    # D sends one async_bulk per fetched batch, cut at the helper's 500 actions.
    assert written[2].split()[0] == str(-(-rows // 500))


def test_a_count_subtracts_the_setup_and_reports_per_row(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tools import count_instructions

    counts = {("esupdater", "setup"): 1_000, ("esupdater", "path"): 41_000,
              ("mapper", "path"): 31_000, ("D", "path"): 21_000}
    monkeypatch.setattr(count_instructions, "instructions",
                        lambda rows, shape, contender, stage: counts[(contender, stage)])
    monkeypatch.setattr(count_instructions.shutil, "which", lambda name: "/bin/valgrind")
    monkeypatch.setattr("sys.argv", ["count", "--rows", "10", "--shapes", "1"])
    count_instructions.main()
    assert capsys.readouterr().out.strip() == (
        "1-row messages: esupdater 4,000 (handler), 3,000 (mapper), D 2,000 instructions per "
        "row; esupdater / D 2.00 (handler), 1.50 (mapper)"
    )
