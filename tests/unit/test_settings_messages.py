"""Settings mistakes a new operator makes, each answered with what to write instead."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from esupdater.settings import SettingsError, load_settings


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory and no ESUPDATER_* variables from the caller's shell."""
    for name in list(os.environ):
        if name.upper().startswith("ESUPDATER_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def problem(path: Path | None = None) -> str:
    with pytest.raises(SettingsError) as err:
        load_settings(path)
    return str(err.value)


def test_an_unknown_variable_with_one_underscore_is_refused_with_the_name_meant(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ESUPDATER_KAFKA_BOOTSTRAP_SERVERS", "kafka:9092")
    assert problem() == (
        "env ESUPDATER_KAFKA_BOOTSTRAP_SERVERS: not a setting (did you mean "
        "ESUPDATER_KAFKA__BOOTSTRAP_SERVERS? a section and its key are joined by two "
        "underscores)")


def test_an_unknown_variable_far_from_any_setting_is_refused_without_a_guess(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ESUPDATER_ZZZ", "1")
    assert problem() == ("env ESUPDATER_ZZZ: not a setting (settings are "
                         "ESUPDATER_<SECTION>__<KEY>, e.g. ESUPDATER_KAFKA__GROUP_ID)")


@pytest.mark.parametrize("name", ["ESUPDATER_SETTINGS", "ESUPDATER_TEST_KAFKA",
                                  "ESUPDATER_KAFKA", "ESUPDATER_WORKER__MAX_WORKERS"])
def test_the_settings_path_test_addresses_sections_and_old_names_are_known(
    monkeypatch: pytest.MonkeyPatch, name: str,
) -> None:
    values = {"ESUPDATER_KAFKA": '{"group_id": "g"}', "ESUPDATER_WORKER__MAX_WORKERS": "8"}
    monkeypatch.setenv(name, values.get(name, "x"))
    load_settings()  # no error


def test_an_unknown_key_in_the_file_suggests_the_nearest(isolated: Path) -> None:
    (isolated / "settings.toml").write_text('[kafka]\nbootstrap_server = "x"\n')
    assert problem() == ("settings.toml: kafka.bootstrap_server: unknown key "
                         "(did you mean bootstrap_servers?)")


def test_an_unknown_key_in_the_environment_suggests_the_nearest_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ESUPDATER_BULK__CHUNKSIZE", "5")
    assert problem() == ("env ESUPDATER_BULK__CHUNKSIZE: bulk.chunksize: unknown key "
                         "(did you mean ESUPDATER_BULK__CHUNK_SIZE?)")


def test_an_unknown_section_suggests_the_nearest(isolated: Path) -> None:
    (isolated / "settings.toml").write_text("[kafak]\ngroup_id = 'x'\n")
    assert problem() == "settings.toml: kafak: unknown section (did you mean [kafka]?)"


def test_a_bad_package_name_is_explained_in_words(isolated: Path) -> None:
    (isolated / "settings.toml").write_text('[handlers]\npackage = "my-handlers"\n')
    assert problem() == (
        'settings.toml: handlers.package: not an importable package name: dotted Python '
        'identifiers (letters, digits and _, not starting with a digit), like "handlers" or '
        '"myapp.handlers" (got "my-handlers")')


def test_invalid_json_in_a_variable_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESUPDATER_KAFKA__TOPICS", "[bad")
    assert problem().startswith("env ESUPDATER_KAFKA__TOPICS: kafka.topics: ")
