"""Settings: defaults, the TOML file, env overrides, and errors that say where and what."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from esupdater.errors import EsupdaterError
from esupdater.settings import (
    Settings,
    SettingsError,
    cleartext_credentials,
    load_settings,
    secret_keys,
)

REPO_SETTINGS = Path(__file__).resolve().parents[2] / "settings.toml"


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory and no ESUPDATER_* variables from the caller's shell."""
    for name in list(os.environ):
        if name.upper().startswith("ESUPDATER_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_a_settings_file() -> None:
    s = load_settings()
    assert s.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert s.kafka.topics == ["canal"]
    assert s.kafka.group_id == "esupdater"
    assert s.kafka.auto_offset_reset == "earliest"
    assert s.kafka.commit_interval_ms == 1000
    assert s.kafka.sasl_password is None
    assert s.elasticsearch.hosts == ["http://127.0.0.1:9200"]
    assert s.elasticsearch.request_timeout == 30.0
    assert s.dispatch.max_rows_in_flight == 2048
    assert s.source.tinyint1_as_bool is False
    assert s.source.format == "canal"
    assert (s.bulk.chunk_size, s.bulk.max_chunk_bytes) == (1000, 10 * 1024 * 1024)
    assert (s.bulk.flush_interval_ms, s.bulk.max_requests_in_flight, s.bulk.max_retries) == (
        50, 2, 8)
    assert s.runtime.dir == Path("runtime")
    assert s.runtime.check_status_interval_seconds == 1.0
    assert (s.runtime.stop_timeout_seconds, s.runtime.drain_timeout_seconds) == (30, 20)
    assert s.handlers.package == "handlers"
    assert s.dead_letter.topic is None
    assert (s.dead_letter.max_attempts, s.dead_letter.on_failure) == (5, "block")
    assert (s.log.level, s.log.format) == ("INFO", "text")


def test_settings_toml_in_working_directory_is_read(isolated: Path) -> None:
    write(isolated / "settings.toml", '[kafka]\ngroup_id = "from-file"\n')
    assert load_settings().kafka.group_id == "from-file"


def test_explicit_file_overrides_defaults_and_keeps_the_rest(isolated: Path) -> None:
    path = write(
        isolated / "custom.toml",
        '[kafka]\ntopics = ["a", "b"]\n[dispatch]\nmax_rows_in_flight = 8\n'
        '[dead_letter]\ntopic = "dlq"\n',
    )
    s = load_settings(path)
    assert s.kafka.topics == ["a", "b"]
    assert s.dispatch.max_rows_in_flight == 8
    assert s.dead_letter.topic == "dlq"
    assert s.kafka.group_id == "esupdater"


def test_missing_explicit_file_is_an_error(isolated: Path) -> None:
    with pytest.raises(SettingsError, match=r"nope\.toml: settings file not found"):
        load_settings(isolated / "nope.toml")


def test_env_overrides_the_file(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(isolated / "s.toml", '[kafka]\ngroup_id = "file"\nmax_poll_records = 10\n')
    monkeypatch.setenv("ESUPDATER_KAFKA__GROUP_ID", "env")
    s = load_settings(path)
    assert s.kafka.group_id == "env"
    assert s.kafka.max_poll_records == 10


@pytest.mark.parametrize("value", ["a,b", " a , b ", '["a", "b"]'])
def test_env_lists_as_commas_or_json(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("ESUPDATER_KAFKA__TOPICS", value)
    assert load_settings().kafka.topics == ["a", "b"]


def test_env_empty_string_unsets_an_optional_key(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(isolated / "s.toml", '[dead_letter]\ntopic = "dlq"\n')
    monkeypatch.setenv("ESUPDATER_DEAD_LETTER__TOPIC", "")
    assert load_settings(path).dead_letter.topic is None


def test_unknown_key_names_file_and_dotted_key(isolated: Path) -> None:
    write(isolated / "settings.toml", '[kafka]\ngroup_idd = "x"\n')
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert str(err.value) == ("settings.toml: kafka.group_idd: unknown key "
                              "(did you mean group_id?)")
    assert isinstance(err.value, EsupdaterError)


def test_unknown_section_is_an_error(isolated: Path) -> None:
    path = write(isolated / "s.toml", "[kafak]\ngroup_id = 'x'\n")
    with pytest.raises(SettingsError,
                       match=r"^.*s\.toml: kafak: unknown section \(did you mean \[kafka\]\?\)$"):
        load_settings(path)


def test_unknown_key_from_env_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESUPDATER_BULK__CHUNKSIZE", "5")
    with pytest.raises(SettingsError, match=r"^env ESUPDATER_BULK__CHUNKSIZE: bulk.chunksize: unk"):
        load_settings()


def test_invalid_value_gives_file_key_and_reason(isolated: Path) -> None:
    path = write(isolated / "s.toml", "[dispatch]\nmax_rows_in_flight = 0\n")
    with pytest.raises(SettingsError) as err:
        load_settings(path)
    assert str(err.value).startswith(
        f"{path}: dispatch.max_rows_in_flight: Input should be greater than")
    assert "(got 0)" in str(err.value)


def test_invalid_env_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESUPDATER_KAFKA__AUTO_OFFSET_RESET", "newest")
    with pytest.raises(SettingsError, match=r"^env ESUPDATER_KAFKA__AUTO_OFFSET_RESET: kafka\."):
        load_settings()


def test_each_problem_is_one_line(isolated: Path) -> None:
    path = write(isolated / "s.toml",
                 "[bulk]\nchunk_size = -1\nmax_requests_in_flight = 'two'\nx = 1\n")
    with pytest.raises(SettingsError) as err:
        load_settings(path)
    lines = str(err.value).splitlines()
    assert len(lines) == 3
    assert {line.split(": ")[1] for line in lines} == {
        "bulk.chunk_size",
        "bulk.max_requests_in_flight",
        "bulk.x",
    }


def test_cross_field_rule_is_checked(isolated: Path) -> None:
    path = write(isolated / "s.toml", "[kafka]\nsession_timeout_ms = 2000\n")
    with pytest.raises(SettingsError, match="heartbeat_interval_ms must be lower than session"):
        load_settings(path)


def test_invalid_toml_names_the_file(isolated: Path) -> None:
    write(isolated / "settings.toml", "[kafka\n")
    with pytest.raises(SettingsError, match=r"^settings\.toml: invalid TOML"):
        load_settings()


@pytest.mark.parametrize(("section", "key"), sorted(secret_keys()))
def test_secret_in_file_is_refused(isolated: Path, section: str, key: str) -> None:
    path = write(isolated / "s.toml", f'[{section}]\n{key} = "hunter2"\n')
    with pytest.raises(SettingsError) as err:
        load_settings(path)
    message = str(err.value)
    assert f"{path}: {section}.{key}:" in message
    assert f"ESUPDATER_{section.upper()}__{key.upper()}" in message
    assert "hunter2" not in message


def test_secrets_from_env_are_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESUPDATER_ELASTICSEARCH__USERNAME", "elastic")
    monkeypatch.setenv("ESUPDATER_ELASTICSEARCH__PASSWORD", "hunter2")
    s = load_settings()
    assert s.elasticsearch.password is not None
    assert s.elasticsearch.password.get_secret_value() == "hunter2"
    shown = s.redacted()
    assert shown["elasticsearch"]["password"] == "***"
    assert shown["elasticsearch"]["api_key"] is None
    assert "hunter2" not in repr(shown) + repr(s) + str(s)


def test_sasl_mechanism_needs_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESUPDATER_KAFKA__SASL_MECHANISM", "PLAIN")
    with pytest.raises(SettingsError, match="sasl_mechanism needs sasl_username"):
        load_settings()


def test_log_level_is_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESUPDATER_LOG__LEVEL", "debug")
    assert load_settings().log.level == "DEBUG"


def test_settings_are_frozen() -> None:
    s = load_settings()
    with pytest.raises(ValidationError):
        s.kafka.group_id = "other"
    with pytest.raises(ValidationError):
        s.log = s.log


def test_repo_settings_toml_equals_the_defaults() -> None:
    from_file = load_settings(REPO_SETTINGS)
    # Its relative runtime dir reads from its own folder (the test runs elsewhere).
    assert from_file.runtime.dir == REPO_SETTINGS.parent / "runtime"
    runtime = from_file.runtime.model_copy(update={"dir": Path("runtime")})
    assert from_file.model_copy(update={"runtime": runtime}).model_dump() == (
        load_settings().model_dump())


def test_repo_settings_toml_lists_and_comments_every_key() -> None:
    text = REPO_SETTINGS.read_text(encoding="utf-8")
    data = tomllib.loads(text)
    secrets = set(secret_keys())
    for section, field in Settings.model_fields.items():
        model = field.annotation
        assert isinstance(model, type)
        assert issubclass(model, BaseModel)
        for key in model.model_fields:
            if (section, key) in secrets:
                assert re.search(rf"^# {key}: secret, only from env ESUPDATER_", text, re.M)
            else:
                assert key in data[section], f"{section}.{key} missing from settings.toml"
    for line in text.splitlines():
        if re.match(r"^\w+\s*=", line):
            assert " # " in line, f"uncommented key line: {line}"


def test_dead_letter_max_request_size_defaults_to_kafkas_1_mib_and_has_a_floor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load_settings().dead_letter.max_request_size == 1024 * 1024
    monkeypatch.setenv("ESUPDATER_DEAD_LETTER__MAX_REQUEST_SIZE", "1000")
    with pytest.raises(SettingsError, match=r"dead_letter\.max_request_size"):
        load_settings()


def test_an_api_key_and_a_password_together_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESUPDATER_ELASTICSEARCH__USERNAME", "u")
    monkeypatch.setenv("ESUPDATER_ELASTICSEARCH__PASSWORD", "p")
    monkeypatch.setenv("ESUPDATER_ELASTICSEARCH__API_KEY", "k")
    with pytest.raises(SettingsError, match="either api_key or username and password"):
        load_settings()


def test_credentials_over_plaintext_are_named_in_one_warning_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in {
        "KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA__SASL_MECHANISM": "PLAIN",
        "KAFKA__SASL_USERNAME": "u", "KAFKA__SASL_PASSWORD": "kafka-secret",
        "ELASTICSEARCH__HOSTS": "https://a:9200,http://b:9200",
        "ELASTICSEARCH__USERNAME": "u", "ELASTICSEARCH__PASSWORD": "es-secret",
    }.items():
        monkeypatch.setenv(f"ESUPDATER_{name}", value)

    kafka, es = cleartext_credentials(load_settings())

    assert kafka.startswith("kafka.sasl_mechanism = PLAIN with kafka.security_protocol = "
                            "SASL_PLAINTEXT sends the SASL password in clear")
    assert es.startswith("elasticsearch.password (env ESUPDATER_ELASTICSEARCH__PASSWORD) "
                         "goes in clear over http:// to http://b:9200")
    assert "secret" not in kafka + es


@pytest.mark.parametrize("env", [
    {},  # no credentials at all
    {"ELASTICSEARCH__API_KEY": "k", "ELASTICSEARCH__HOSTS": "https://a:9200"},
    {"KAFKA__SECURITY_PROTOCOL": "SASL_SSL", "KAFKA__SASL_MECHANISM": "PLAIN",
     "KAFKA__SASL_USERNAME": "u", "KAFKA__SASL_PASSWORD": "p"},
    {"KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
     "KAFKA__SASL_USERNAME": "u", "KAFKA__SASL_PASSWORD": "p"},
])
def test_no_warning_when_no_credential_travels_in_clear(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(f"ESUPDATER_{name}", value)
    assert cleartext_credentials(load_settings()) == []
