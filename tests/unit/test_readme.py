"""The README's examples run as tests, so they never rot.

Every ```python block right after an `<!-- test -->` line is executed as a module; the
`test_*` functions it defines are then called (awaited when async). Handlers a block
registers go into a scoped registry, so they do not leak into other tests.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import pytest

import handlers.shop  # noqa: F401  - registered as in a user's test session: imported first
from esupdater import Registry

README = Path(__file__).resolve().parents[2] / "README.md"
MARKER = "<!-- test -->"
_BLOCK = re.compile(r"^<!-- test -->\n```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def readme_blocks() -> list[Any]:
    """One pytest param per block marked as a test: (line number of its code, code)."""
    text = README.read_text()
    found = [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in _BLOCK.finditer(text)]
    return [pytest.param(line, code, id=f"README.md:{line}") for line, code in found]


def test_every_marker_is_followed_by_a_python_block() -> None:
    assert README.read_text().count(MARKER) == len(readme_blocks()) >= 2


@pytest.mark.parametrize(("line", "code"), readme_blocks())
async def test_readme_block(line: int, code: str) -> None:
    # Padding keeps README line numbers in tracebacks.
    compiled = compile("\n" * (line - 1) + code, str(README), "exec")
    namespace: dict[str, Any] = {"__name__": f"readme_line_{line}"}
    with Registry.scoped():
        exec(compiled, namespace)
        for name, value in namespace.items():
            if name.startswith("test_") and callable(value):
                result = value()
                if inspect.isawaitable(result):
                    await result
