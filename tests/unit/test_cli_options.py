"""The command line itself: where settings come from, said plainly."""

from __future__ import annotations

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
