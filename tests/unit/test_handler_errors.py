"""A mistake in a handler module is reported where it is: file and line, at start-up."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from esupdater.routing import HandlerImportError, Registry, RouteError, load_handlers


def package(tmp_path: Path, modules: dict[str, str]) -> str:
    """A fresh package under tmp_path with `modules` (name -> source); returns its name."""
    name = f"handlers_{uuid.uuid4().hex[:8]}"
    root = tmp_path / name
    root.mkdir()
    (root / "__init__.py").write_text("")
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source))
    return name


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))


def test_an_error_raised_at_import_names_the_file_and_line(tmp_path: Path) -> None:
    name = package(tmp_path, {"users": """\
        from esupdater import on

        LIMIT = undefined_name + 1
        """})
    with pytest.raises(HandlerImportError) as err:
        load_handlers(name, Registry())
    assert str(err.value) == (
        f"cannot import handler module '{name}.users' ({name}/users.py, line 3): "
        "NameError: name 'undefined_name' is not defined")


def test_a_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    name = package(tmp_path, {"orders": "x = 1\ndef broken(:\n"})
    with pytest.raises(HandlerImportError, match=rf"\({name}/orders\.py, line 2\): SyntaxError"):
        load_handlers(name, Registry())


def test_a_handler_without_the_context_parameter_is_refused_when_registered(
    tmp_path: Path,
) -> None:
    name = package(tmp_path, {"users": """\
        from esupdater import on


        @on("shop.users")
        async def sync_user(change):
            pass
        """})
    with pytest.raises(HandlerImportError) as err:
        load_handlers(name, Registry())
    message = str(err.value)
    assert f"({name}/users.py, line 4)" in message, message
    assert message.endswith(
        f"RouteError: @on('shop.users') on {name}.users:sync_user: a handler takes two "
        "arguments, (change, ctx); this one takes (change)"), message
    assert isinstance(err.value.__cause__, RouteError)


def test_a_handler_taking_extra_arguments_with_defaults_is_accepted() -> None:
    registry = Registry()

    async def handler(change: object, ctx: object, extra: int = 0) -> None:
        pass

    registry.add("shop.users", handler)
    assert [route.pattern for route in registry.routes] == ["shop.users"]


def test_check_shows_the_traceback_with_traceback_and_only_the_line_without(
    tmp_path: Path,
) -> None:
    package_name = package(tmp_path, {"users": "raise RuntimeError('boom [red]x[/red]')\n"})
    (tmp_path / "settings.toml").write_text(f'[handlers]\npackage = "{package_name}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("ESUPDATER_")}

    def check(*flags: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "esupdater", "check", *flags],
                              cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=60, check=False)

    plain, traced = check(), check("--traceback")
    assert (plain.returncode, traced.returncode) == (2, 2), (plain, traced)
    assert (f"handlers: cannot import handler module '{package_name}.users' "
            f"({package_name}/users.py, line 1): RuntimeError: boom [red]x[/red]"
            ) in plain.stderr, plain.stderr
    assert "Traceback" not in plain.stderr, plain.stderr
    assert "Traceback (most recent call last)" in traced.stderr, traced.stderr
    assert f'{package_name}/users.py", line 1' in traced.stderr, traced.stderr
