"""Renamed settings keys: old names keep working for a release, with a warning naming both."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from esupdater.settings import (
    RENAMED_KEYS,
    Settings,
    SettingsError,
    load_settings,
    settings_warnings,
)
from tests.unit.test_settings import isolated  # the same autouse clean working directory

__all__ = ["isolated"]

#: A value for each renamed key, other than its default, as TOML text and as the loaded value.
VALUES: dict[tuple[str, str], tuple[str, Any]] = {
    ("worker", "max_workers"): ("7", 7),
    ("worker", "tinyint1_as_bool"): ("true", True),
    ("bulk", "max_in_flight"): ("5", 5),
}
RENAMES = sorted(RENAMED_KEYS.items())
IDS = [".".join(old) for old, _ in RENAMES]


def env_name(loc: tuple[str, str]) -> str:
    return f"ESUPDATER_{loc[0].upper()}__{loc[1].upper()}"


def value_at(settings: Settings, loc: tuple[str, str]) -> Any:
    return getattr(getattr(settings, loc[0]), loc[1])


def test_the_renames_are_the_three_of_this_release() -> None:
    assert RENAMED_KEYS == {
        ("worker", "max_workers"): ("dispatch", "max_rows_in_flight"),
        ("worker", "tinyint1_as_bool"): ("source", "tinyint1_as_bool"),
        ("bulk", "max_in_flight"): ("bulk", "max_requests_in_flight"),
    }


@pytest.mark.parametrize(("old", "new"), RENAMES, ids=IDS)
def test_an_old_key_in_the_file_still_sets_the_new_one_with_a_warning_naming_both(
    isolated: Path, old: tuple[str, str], new: tuple[str, str]
) -> None:
    text, expected = VALUES[old]
    (isolated / "settings.toml").write_text(f"[{old[0]}]\n{old[1]} = {text}\n")

    settings = load_settings()

    assert value_at(settings, new) == expected
    [warning] = settings_warnings(settings)
    assert warning == (
        f"settings.toml: {'.'.join(old)} is deprecated, renamed {'.'.join(new)}; write "
        f"{'.'.join(new)} instead (the old name stops working in the next release)"
    )


@pytest.mark.parametrize(("old", "new"), RENAMES, ids=IDS)
def test_an_old_env_var_still_sets_the_new_key_with_a_warning_naming_both_variables(
    monkeypatch: pytest.MonkeyPatch, old: tuple[str, str], new: tuple[str, str]
) -> None:
    text, expected = VALUES[old]
    monkeypatch.setenv(env_name(old), text)

    settings = load_settings()

    assert value_at(settings, new) == expected
    [warning] = settings_warnings(settings)
    assert warning.startswith(f"env {env_name(old)}: {'.'.join(old)} is deprecated, renamed "
                              f"{'.'.join(new)}; set {env_name(new)} instead")


@pytest.mark.parametrize(("old", "new"), RENAMES, ids=IDS)
def test_old_and_new_name_in_the_file_is_an_error_naming_both(
    isolated: Path, old: tuple[str, str], new: tuple[str, str]
) -> None:
    text, _ = VALUES[old]
    sections = {old[0]: f"{old[1]} = {text}\n"}
    sections[new[0]] = sections.get(new[0], "") + f"{new[1]} = {text}\n"
    (isolated / "s.toml").write_text("".join(f"[{k}]\n{v}" for k, v in sections.items()))

    with pytest.raises(SettingsError) as caught:
        load_settings(isolated / "s.toml")

    assert str(caught.value) == (
        f"{isolated / 's.toml'}: {'.'.join(old)} and {'.'.join(new)} are one setting "
        f"({'.'.join(old)} is its old name): give only {'.'.join(new)}"
    )


def test_old_and_new_env_var_together_is_an_error_naming_both(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ESUPDATER_WORKER__MAX_WORKERS", "4")
    monkeypatch.setenv("ESUPDATER_DISPATCH__MAX_ROWS_IN_FLIGHT", "4")

    with pytest.raises(SettingsError, match=(
        r"^env ESUPDATER_WORKER__MAX_WORKERS and env ESUPDATER_DISPATCH__MAX_ROWS_IN_FLIGHT: "
        r"worker\.max_workers and dispatch\.max_rows_in_flight are one setting"
    )):
        load_settings()


def test_an_old_env_var_still_overrides_the_new_key_in_the_file(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The repo's settings.toml lists every key by its new name; an old variable set in a
    deployment must still win over it, as any variable wins over the file."""
    (isolated / "settings.toml").write_text("[dispatch]\nmax_rows_in_flight = 256\n")
    monkeypatch.setenv("ESUPDATER_WORKER__MAX_WORKERS", "4")

    settings = load_settings()

    assert settings.dispatch.max_rows_in_flight == 4
    assert len(settings_warnings(settings)) == 1


def test_a_new_env_var_overrides_an_old_key_in_the_file(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (isolated / "settings.toml").write_text("[bulk]\nmax_in_flight = 3\n")
    monkeypatch.setenv("ESUPDATER_BULK__MAX_REQUESTS_IN_FLIGHT", "9")

    assert load_settings().bulk.max_requests_in_flight == 9


@pytest.mark.parametrize(("env", "file", "where", "key"), [
    ({"ESUPDATER_WORKER__MAX_WORKERS": "0"}, "", "env ESUPDATER_WORKER__MAX_WORKERS",
     "worker.max_workers (now dispatch.max_rows_in_flight)"),
    ({}, "[bulk]\nmax_in_flight = 0\n", "settings.toml",
     "bulk.max_in_flight (now bulk.max_requests_in_flight)"),
], ids=["env", "file"])  # an env value is text: `(got "0")`
def test_a_bad_value_under_an_old_name_names_where_it_was_and_both_keys(
    isolated: Path, monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str], file: str, where: str, key: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    (isolated / "settings.toml").write_text(file)

    with pytest.raises(SettingsError) as caught:
        load_settings()

    got = '"0"' if env else "0"
    assert str(caught.value) == (
        f"{where}: {key}: Input should be greater than or equal to 1 (got {got})")


def test_an_unknown_key_in_a_removed_section_says_where_its_keys_went(isolated: Path) -> None:
    (isolated / "settings.toml").write_text("[worker]\nmax_workerz = 3\n")

    with pytest.raises(SettingsError) as caught:
        load_settings()

    assert str(caught.value) == (
        "settings.toml: worker: unknown section (its keys were moved: worker.max_workers is "
        "now dispatch.max_rows_in_flight, worker.tinyint1_as_bool is now source.tinyint1_as_bool)"
    )


def test_a_removed_section_as_one_json_env_var_is_refused_not_ignored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ESUPDATER_WORKER", '{"max_workers": 4}')

    with pytest.raises(SettingsError, match=(
        r"^env ESUPDATER_WORKER: section worker no longer exists; set "
        r"ESUPDATER_DISPATCH__MAX_ROWS_IN_FLIGHT, ESUPDATER_SOURCE__TINYINT1_AS_BOOL$"
    )):
        load_settings()


def test_renames_warn_before_cleartext_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESUPDATER_BULK__MAX_IN_FLIGHT", "3")
    monkeypatch.setenv("ESUPDATER_ELASTICSEARCH__USERNAME", "u")
    monkeypatch.setenv("ESUPDATER_ELASTICSEARCH__PASSWORD", "p")

    renamed, cleartext = settings_warnings(load_settings())

    assert renamed.startswith("env ESUPDATER_BULK__MAX_IN_FLIGHT: bulk.max_in_flight is deprec")
    assert cleartext.startswith("elasticsearch.password")


def test_new_names_alone_give_no_warning(isolated: Path) -> None:
    (isolated / "settings.toml").write_text(
        "[dispatch]\nmax_rows_in_flight = 3\n[source]\ntinyint1_as_bool = true\n"
        "[bulk]\nmax_requests_in_flight = 3\n"
    )
    settings = load_settings()
    assert settings.renamed == ()
    assert settings_warnings(settings) == []
