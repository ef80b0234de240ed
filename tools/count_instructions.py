"""Instructions per row of esupdater's path (with an async handler, and with a mapper) and
of the batch loop D's, and their ratios.

    python -m tools.count_instructions [--rows 20000] [--shapes 1,10]

Runs `tools/profile_feed.py` under valgrind (`--tool=cachegrind --cache-sim=no`): each
contender's path over the benchmark's dataset into the same in-memory answering client, less
a run that only builds the dataset. Timings on a shared machine move by 20-40 % from run to
run; instruction counts move by well under 1 %, so they show a change of a few percent that a
timed benchmark cannot. They leave out Kafka, the network and Elasticsearch, and do not weigh
cache misses: `make bench` is still what the targets are checked by. Slow: about a minute
per contender and shape under valgrind.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys

#: valgrind's summary line, e.g. "==123== I   refs:      1,234,567".
_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


def instructions(rows: int, shape: int, contender: str, stage: str) -> int:
    """Instructions valgrind counted for one run of profile_feed."""
    command = [
        "valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
        sys.executable, "-m", "tools.profile_feed", "--rows", str(rows), "--shape", str(shape),
        "--contender", contender, "--stage", stage,
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    found = _REFS.search(done.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{done.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--shapes", default="1,10", help="rows per message, comma-separated")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (Debian: apt-get install valgrind)")
    for shape in (int(s) for s in args.shapes.split(",")):
        setup = instructions(args.rows, shape, "esupdater", "setup")
        per_row = {
            contender: (instructions(args.rows, shape, contender, "path") - setup) / args.rows
            for contender in ("esupdater", "mapper", "D")
        }
        d = per_row["D"]
        print(f"{shape}-row messages: esupdater {per_row['esupdater']:,.0f} (handler), "
              f"{per_row['mapper']:,.0f} (mapper), D {d:,.0f} instructions per row; "
              f"esupdater / D {per_row['esupdater'] / d:.2f} (handler), "
              f"{per_row['mapper'] / d:.2f} (mapper)")


if __name__ == "__main__":
    main()
