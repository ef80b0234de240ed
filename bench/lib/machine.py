"""What the figures were measured on: CPU, memory, Python, libraries, Kafka and Elasticsearch."""

from __future__ import annotations

import hashlib
import os
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from elasticsearch import AsyncElasticsearch

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("esupdater", "aiokafka", "elasticsearch", "elastic-transport", "aiohttp", "orjson",
            "uvloop", "pydantic")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except FileNotFoundError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except FileNotFoundError:
        pass
    return 0.0


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _kafka_version() -> str | None:
    """The broker the stack runs: the version its pom pins (the broker API does not say)."""
    pom = ROOT / "stack" / "pom.xml"
    if not pom.exists():
        return None
    found = re.search(r"<kafka.version>(.+?)</kafka.version>", pom.read_text())
    return found.group(1) if found else None


async def describe(es: AsyncElasticsearch) -> dict[str, Any]:
    nodes = await es.nodes.info(filter_path="nodes.*.version")
    es_versions = sorted({node["version"] for node in nodes["nodes"].values()})
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in PACKAGES},
        "kafka": _kafka_version(),
        "elasticsearch": ", ".join(es_versions),
        # The stack is shared: a busy machine at the start explains noisy figures.
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def source_digest() -> str:
    """A digest of esupdater's source as the children import it (an editable install): taken
    at the start and the end of a run, it tells whether the code changed in between."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "src" / "esupdater").rglob("*.py")):
        digest.update(str(path.relative_to(ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def source_state() -> dict[str, Any]:
    """The commit measured, and whether src/ held uncommitted changes (read-only git)."""

    def git(*args: str) -> str:
        try:
            done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                                  timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout.strip()

    return {"commit": git("rev-parse", "--short", "HEAD") or None,
            "uncommitted_changes_in_src": bool(git("--no-optional-locks", "status", "--porcelain",
                                                     "--", "src")),
            "digest_at_start": source_digest()}
