"""The command line itself: where settings come from, said plainly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from esupdater.cli import app


def test_settings_may_be_given_before_the_command_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = tmp_path / "elsewhere.toml"
    settings.write_text('[runtime]\ndir = "custom-runtime"\n')
    result = CliRunner().invoke(app, ["-s", str(settings), "status"])
    assert result.exit_code == 1, result.output
    assert "not running (runtime dir custom-runtime)" in result.output


def test_check_without_a_settings_file_says_the_defaults_are_in_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["check"])
    assert "no settings.toml here: the defaults" in " ".join(result.output.split()), result.output


def test_piped_messages_are_neither_wrapped_nor_stripped_of_brackets(tmp_path: Path) -> None:
    """`check` where no handler package exists: the message names `[handlers] package` (rich
    would take the brackets for markup) on one line (rich would wrap it at 80 columns)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("ESUPDATER_") and k != "COLUMNS"}
    ran = subprocess.run([sys.executable, "-m", "esupdater", "check"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60, check=False)
    assert ran.returncode == 2, ran
    lines = [line for line in ran.stderr.splitlines() if "not found" in line]
    assert len(lines) == 1, ran.stderr
    assert lines[0].startswith("handlers: handler package 'handlers' not found from "), lines
    assert lines[0].endswith("create handlers/__init__.py there, or point [handlers] package "
                             "(ESUPDATER_HANDLERS__PACKAGE) at the package holding your @on "
                             "handlers"), lines


def test_a_settings_file_elsewhere_finds_its_handlers_and_runtime_beside_it(
    tmp_path: Path,
) -> None:
    """`esupdater -s /srv/sync/settings.toml ...` from another directory: the handler package
    and a relative runtime dir are the settings file's neighbours, and `check` says so."""
    site = tmp_path / "srv" / "sync"
    (site / "handlers").mkdir(parents=True)
    (site / "handlers" / "__init__.py").write_text(
        "from esupdater import on\n\n\n@on('shop.users')\nasync def h(change, ctx):\n"
        "    pass\n")
    (site / "settings.toml").write_text('[runtime]\ndir = "state"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ESUPDATER_")}

    def esupdater(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "esupdater", *args], cwd=elsewhere,
                              env=env, capture_output=True, text=True, timeout=60, check=False)

    checked = esupdater("-s", str(site / "settings.toml"), "check")
    assert checked.returncode == 0, checked
    assert f"handler modules: handlers, from {site}" in checked.stdout, checked.stdout
    assert f"runtime dir: {site / 'state'}" in checked.stdout, checked.stdout
    status = esupdater("status", "-s", str(site / "settings.toml"))
    assert f"not running (runtime dir {site / 'state'})" in status.stdout, status


@pytest.mark.parametrize(("command", "flag"), [([], "--version"), (["check"], "--traceback"),
                                               (["backfill"], "--resume"),
                                               (["verify"], "--repair")])
def test_a_flag_is_not_shown_as_taking_a_value(command: list[str], flag: str) -> None:
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "150"})
    (line,) = [line for line in result.output.splitlines()
               if line.lstrip("│ ").startswith(flag)]
    assert "<bool>" not in line, line
