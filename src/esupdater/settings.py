"""Typed settings: `settings.toml`, overridden by `ESUPDATER_<SECTION>__<KEY>` env vars.

Secrets (`SecretStr` fields) come only from the environment so they never land in a file that
gets committed or copied around. Every problem is reported as one line naming where it came
from (file and dotted key, or env var) so the user can fix it without reading a traceback.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args

import orjson
import pydantic_settings
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from esupdater.errors import ConfigError

DEFAULT_PATH = Path("settings.toml")
ENV_PREFIX = "ESUPDATER_"
ENV_DELIMITER = "__"
MIB = 1024 * 1024
REDACTED = "***"

# load_settings() tells the TOML source which file to read; a class-level config cannot vary
# per call, and a ContextVar keeps concurrent loads (tests) from seeing each other's path.
_toml_path: ContextVar[Path] = ContextVar("esupdater_settings_path", default=DEFAULT_PATH)

#: Renamed keys, old (section, key) -> new (section, key). For one release the old name keeps
#: working, in the file and as an env var, with a warning naming both (`settings_warnings`);
#: giving both names in one place is an error. Add a rename here, nowhere else.
RENAMED_KEYS: dict[tuple[str, str], tuple[str, str]] = {
    ("worker", "max_workers"): ("dispatch", "max_rows_in_flight"),
    ("worker", "tinyint1_as_bool"): ("source", "tinyint1_as_bool"),
    ("bulk", "max_in_flight"): ("bulk", "max_requests_in_flight"),
}


@dataclass(frozen=True, slots=True)
class Renamed:
    """An old key name found in one source (the file, or an env var) and where it went."""

    old: tuple[str, str]
    new: tuple[str, str]
    #: Where the old name was: `settings.toml`, or `env ESUPDATER_WORKER__MAX_WORKERS`.
    where: str

    @property
    def from_env(self) -> bool:
        return self.where.startswith("env ")

    def warning(self) -> str:
        old, new = ".".join(self.old), ".".join(self.new)
        use = f"set {env_var_name(self.new)}" if self.from_env else f"write {new}"
        return (f"{self.where}: {old} is deprecated, renamed {new}; {use} instead "
                "(the old name stops working in the next release)")


# The renames the sources of the Settings being built met (see settings_customise_sources).
_renamed: ContextVar[list[Renamed]] = ContextVar("esupdater_settings_renamed")


class SettingsError(ConfigError):
    """The settings file or environment holds something we cannot run with."""


def _empty_as_none(value: Any) -> Any:
    # TOML has no null, so `key = ""` is how the file spells "unset"; env vars likewise.
    return None if value == "" else value


def _split_list(value: Any) -> Any:
    # Env vars may give a list as JSON (`["a","b"]`) or, more readably, as `a,b`.
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return orjson.loads(text)
        return [item.strip() for item in text.split(",") if item.strip()]
    return value


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


OptStr = Annotated[str | None, BeforeValidator(_empty_as_none)]
OptPath = Annotated[Path | None, BeforeValidator(_empty_as_none)]
StrList = Annotated[list[str], NoDecode, BeforeValidator(_split_list), Field(min_length=1)]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


_S = TypeVar("_S", bound=_Section)


class KafkaSettings(_Section):
    """How we reach Kafka and behave as a consumer-group member."""

    bootstrap_servers: str = Field(default="127.0.0.1:9092", min_length=1)
    topics: StrList = ["canal"]
    group_id: str = Field(default="esupdater", min_length=1)
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    client_id: str = Field(default="esupdater", min_length=1)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Annotated[
        Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None, BeforeValidator(_empty_as_none)
    ] = None
    sasl_username: OptStr = None
    sasl_password: SecretStr | None = None
    ssl_cafile: OptPath = None
    fetch_max_bytes: int = Field(default=50 * MIB, ge=1024, le=1024 * MIB)
    max_partition_fetch_bytes: int = Field(default=1 * MIB, ge=1024, le=1024 * MIB)
    max_poll_records: int = Field(default=500, ge=1, le=100_000)
    session_timeout_ms: int = Field(default=10_000, ge=1_000, le=3_600_000)
    heartbeat_interval_ms: int = Field(default=3_000, ge=100, le=3_600_000)
    max_poll_interval_ms: int = Field(default=300_000, ge=1_000, le=86_400_000)
    commit_interval_ms: int = Field(default=1_000, ge=10, le=600_000)

    @model_validator(mode="after")
    def _check(self) -> KafkaSettings:
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError("heartbeat_interval_ms must be lower than session_timeout_ms")
        if self.security_protocol.startswith("SASL_") and self.sasl_mechanism is None:
            raise ValueError(f"security_protocol {self.security_protocol} needs sasl_mechanism")
        if self.sasl_mechanism is not None and (
            self.sasl_username is None or self.sasl_password is None
        ):
            raise ValueError(
                "sasl_mechanism needs sasl_username and the env var "
                f"{ENV_PREFIX}KAFKA{ENV_DELIMITER}SASL_PASSWORD"
            )
        return self


class ElasticsearchSettings(_Section):
    """How we reach Elasticsearch."""

    hosts: StrList = ["http://127.0.0.1:9200"]
    username: OptStr = None
    password: SecretStr | None = None
    api_key: SecretStr | None = None
    ca_certs: OptPath = None
    request_timeout: float = Field(default=30.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _check(self) -> ElasticsearchSettings:
        bad = [h for h in self.hosts if not h.startswith(("http://", "https://"))]
        if bad:
            raise ValueError(f"hosts must be URLs starting with http:// or https://, got {bad}")
        if (self.username is None) != (self.password is None):
            raise ValueError(
                "username and password go together (password from the env var "
                f"{ENV_PREFIX}ELASTICSEARCH{ENV_DELIMITER}PASSWORD)"
            )
        if self.api_key is not None and self.password is not None:
            raise ValueError("set either api_key or username and password, not both")
        return self


class MySQLSettings(_Section):
    """How we read MySQL/MariaDB tables (esupdater.table_reader): for backfill and verify.

    The stream itself never connects to MySQL (Canal reads the binlog); only table reads do.
    """

    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=3306, ge=1, le=65_535)
    user: str = Field(default="esupdater", min_length=1)
    password: SecretStr | None = None
    #: The connection's default database; tables are always named `database.table` anyway.
    database: OptStr = None
    ssl_ca: OptPath = None


def _not_above(section: _S, smaller: str, larger: str) -> _S:
    """A section's check that one of its settings does not exceed another."""
    if getattr(section, smaller) > getattr(section, larger):
        raise ValueError(f"{smaller} must not exceed {larger}")
    return section


class SourceSettings(_Section):
    """What the topics hold: the message format (esupdater.decoding) and its options."""

    format: Literal["canal"] = "canal"
    tinyint1_as_bool: bool = False


class DispatchSettings(_Section):
    """How many rows are handled at once (esupdater.dispatch); there is no worker pool."""

    max_rows_in_flight: int = Field(default=2048, ge=1, le=100_000)


class BulkSettings(_Section):
    """The shared bulk writer's batching and retry policy."""

    chunk_size: int = Field(default=1000, ge=1, le=100_000)
    max_chunk_bytes: int = Field(default=10 * MIB, ge=1024, le=1024 * MIB)
    flush_interval_ms: int = Field(default=50, ge=0, le=60_000)
    max_requests_in_flight: int = Field(default=2, ge=1, le=64)
    max_retries: int = Field(default=8, ge=0, le=1_000)
    initial_backoff_ms: int = Field(default=200, ge=1, le=600_000)
    max_backoff_ms: int = Field(default=30_000, ge=1, le=3_600_000)

    @model_validator(mode="after")
    def _check(self) -> BulkSettings:
        return _not_above(self, "initial_backoff_ms", "max_backoff_ms")


class RuntimeSettings(_Section):
    """The runtime directory and the stop/drain timing."""

    dir: Path = Path("runtime")
    check_status_interval_seconds: float = Field(default=1.0, gt=0, le=3600)
    stop_timeout_seconds: float = Field(default=30.0, gt=0, le=86_400)
    drain_timeout_seconds: float = Field(default=20.0, gt=0, le=86_400)
    stats_interval_seconds: float = Field(default=1.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _check(self) -> RuntimeSettings:
        # `esupdater stop` would report failure while the service is still draining.
        return _not_above(self, "drain_timeout_seconds", "stop_timeout_seconds")


def _package_name(value: str) -> str:
    if not all(part.isidentifier() for part in value.split(".")):
        raise ValueError(
            "not an importable package name: dotted Python identifiers (letters, digits and "
            '_, not starting with a digit), like "handlers" or "myapp.handlers"')
    return value


class HandlersSettings(_Section):
    """Where the user's handlers live."""

    package: Annotated[str, AfterValidator(_package_name)] = "handlers"


class DeadLetterSettings(_Section):
    """What happens to input that cannot be applied."""

    topic: OptStr = None
    max_attempts: int = Field(default=5, ge=1, le=1_000)
    on_failure: Literal["block", "skip"] = "block"
    # The producer's request limit. Kafka's own default (1 MiB) matches the broker's default
    # message.max.bytes; the floor leaves room for a pointer dead letter's capped headers.
    max_request_size: int = Field(default=1 * MIB, ge=64 * 1024, le=1024 * MIB)


class MetricsSettings(_Section):
    """Prometheus metrics and the health probes over HTTP; when a partition counts as stalled."""

    port: int = Field(default=0, ge=0, le=65_535)
    host: str = Field(default="127.0.0.1", min_length=1)
    stall_seconds: float = Field(default=120.0, gt=0, le=86_400)


class LogSettings(_Section):
    """Logging output."""

    level: Annotated[
        Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], BeforeValidator(_upper)
    ] = "INFO"
    format: Literal["text", "json"] = "text"
    progress_interval_seconds: float = Field(default=60.0, ge=0, le=86_400)


class _SecretRefusingTomlSource(TomlConfigSettingsSource):
    """The TOML source, refusing secrets so they cannot be committed with the file."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path) -> None:
        try:
            super().__init__(settings_cls, toml_file=path)
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{path}: invalid TOML: {exc}") from exc
        problems = [
            f"{path}: {section}.{key}: secrets may not be set in the file; "
            f"use the env var {env_var_name((section, key))}"
            for section, key in secret_keys()
            if isinstance(self.toml_data.get(section), dict) and key in self.toml_data[section]
        ]
        if problems:
            raise SettingsError("\n".join(problems))


class _RenamedKeysSource(PydanticBaseSettingsSource):
    """Another source's values with RENAMED_KEYS moved from their old names to the new ones,
    each move recorded in `renamed`; an old and a new name for one setting is an error.

    `where` names the source of a key in messages. The environment's source also gets
    `environ`: pydantic's env source does not read variables of sections that no longer
    exist (`ESUPDATER_WORKER__MAX_WORKERS`), so they are looked up there.
    """

    def __init__(
        self,
        settings_cls: type[BaseSettings],
        inner: PydanticBaseSettingsSource,
        where: Callable[[tuple[str, ...]], str],
        renamed: list[Renamed],
        environ: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(settings_cls)
        self._inner = inner
        self._where = where
        self._renamed = renamed
        self._environ = environ

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._inner.get_field_value(field, field_name)

    def __call__(self) -> dict[str, Any]:
        data = self._inner()
        conflicts = [  # a removed section as one JSON variable: refused, never ignored
            f"env {env_var_name((section,))}: section {section} no longer exists; set "
            + ", ".join(env_var_name(new) for old, new in RENAMED_KEYS.items() if old[0] == section)
            for section in removed_sections()
            if self._environ is not None and env_var_name((section,)) in self._environ
        ]
        for old, new in RENAMED_KEYS.items():
            found = self._take(data, old)
            if found is None:
                continue
            value, where = found
            if self._holds(data, new):
                conflicts.append(_conflict(old, new, where, self._where(new)))
                continue
            data.setdefault(new[0], {})[new[1]] = value
            self._renamed.append(Renamed(old, new, where))
        if conflicts:
            raise SettingsError("\n".join(conflicts))
        return data

    def _take(self, data: dict[str, Any], old: tuple[str, str]) -> tuple[Any, str] | None:
        """The old key's value and where it was, removed from `data`; None if not given."""
        section = data.get(old[0])
        if self._environ is not None and env_var_name(old) in self._environ:
            if isinstance(section, dict):
                section.pop(old[1], None)
            return self._environ[env_var_name(old)], f"env {env_var_name(old)}"
        if not isinstance(section, dict) or old[1] not in section:
            return None
        value = section.pop(old[1])
        if not section and old[0] in removed_sections():
            del data[old[0]]
        return value, self._where(old)

    def _holds(self, data: dict[str, Any], new: tuple[str, str]) -> bool:
        section = data.get(new[0])
        return isinstance(section, dict) and new[1] in section


def _conflict(old: tuple[str, str], new: tuple[str, str], old_where: str, new_where: str) -> str:
    places = old_where if old_where == new_where else f"{old_where} and {new_where}"
    return (f"{places}: {'.'.join(old)} and {'.'.join(new)} are one setting "
            f"({'.'.join(old)} is its old name): give only {'.'.join(new)}")


def _upper_environ() -> dict[str, str]:
    """The environment as the settings read it: names are not case-sensitive."""
    return {name.upper(): value for name, value in os.environ.items()}


class Settings(BaseSettings):
    """All of esupdater's settings, one frozen model per TOML section."""

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_DELIMITER,
        case_sensitive=False,
    )

    kafka: KafkaSettings = KafkaSettings()
    source: SourceSettings = SourceSettings()
    elasticsearch: ElasticsearchSettings = ElasticsearchSettings()
    mysql: MySQLSettings = MySQLSettings()
    dispatch: DispatchSettings = DispatchSettings()
    bulk: BulkSettings = BulkSettings()
    runtime: RuntimeSettings = RuntimeSettings()
    handlers: HandlersSettings = HandlersSettings()
    dead_letter: DeadLetterSettings = DeadLetterSettings()
    metrics: MetricsSettings = MetricsSettings()
    log: LogSettings = LogSettings()

    _renamed: tuple[Renamed, ...] = PrivateAttr(default=())
    _folder: Path = PrivateAttr(default_factory=Path.cwd)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Earlier sources win: explicit kwargs, then the environment, then the file. Old key
        # names are renamed within each source, so the environment still overrides the file
        # whichever name either uses. pydantic-settings calls this once per Settings() and
        # runs the sources before validating: model_post_init (or load_settings, on a
        # validation error) then reads what they recorded.
        renamed: list[Renamed] = []
        _renamed.set(renamed)
        toml_path = _toml_path.get()
        environ = _upper_environ()
        return (
            init_settings,
            _RenamedKeysSource(
                settings_cls, env_settings, lambda loc: f"env {env_var_name(loc)}", renamed,
                environ,
            ),
            _RenamedKeysSource(
                settings_cls, _SecretRefusingTomlSource(settings_cls, toml_path),
                lambda loc: str(toml_path), renamed,
            ),
        )

    def model_post_init(self, context: Any, /) -> None:
        self._renamed = tuple(_renamed.get([]))
        _renamed.set([])

    @property
    def folder(self) -> Path:
        """The settings file's folder (the working directory without a file): where a
        relative `runtime.dir` and the handler package are found, wherever esupdater runs."""
        return self._folder

    @property
    def renamed(self) -> tuple[Renamed, ...]:
        """The old key names these settings were given (empty when built without sources)."""
        return self._renamed

    def redacted(self) -> dict[str, Any]:
        """The settings as plain data for printing, secrets shown as `***` when set."""
        return {name: _plain(value) for name, value in self.model_dump().items()}


def removed_sections() -> list[str]:
    """Sections all of whose keys were renamed away (RENAMED_KEYS): read only as old names."""
    return sorted({old[0] for old in RENAMED_KEYS} - set(Settings.model_fields))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, SecretStr):
        return REDACTED
    if isinstance(value, Path):
        return str(value)
    return value


def cleartext_credentials(settings: Settings) -> list[str]:
    """Credentials these settings send unencrypted, one warning each naming the setting.

    Allowed (a private network may be fine), but never silently: `run` logs them and
    `check` prints them.
    """
    warnings: list[str] = []
    kafka = settings.kafka
    if kafka.security_protocol == "SASL_PLAINTEXT" and kafka.sasl_mechanism == "PLAIN":
        warnings.append(
            "kafka.sasl_mechanism = PLAIN with kafka.security_protocol = SASL_PLAINTEXT sends "
            f"the SASL password in clear to {kafka.bootstrap_servers}: use SASL_SSL"
        )
    es = settings.elasticsearch
    plain = [host for host in es.hosts if host.startswith("http://")]
    for key, secret in (("password", es.password), ("api_key", es.api_key)):
        if secret is not None and plain:
            warnings.append(
                f"elasticsearch.{key} (env {env_var_name(('elasticsearch', key))}) goes in "
                f"clear over http:// to {', '.join(plain)}: use https:// hosts"
            )
    return warnings


def settings_warnings(settings: Settings) -> list[str]:
    """Everything `run` logs and `check` prints as a warning about these settings: old key
    names still in use, then credentials that travel in clear."""
    return [renamed.warning() for renamed in settings.renamed] + cleartext_credentials(settings)


def no_handlers_message(package: str) -> str:
    """Why `check` and `run` refuse a handler package that registers nothing."""
    return (f"no handlers registered in package {package!r} (handlers.package): every change "
            "would be skipped and committed; register one with @on(...) in a module of it")


def secret_keys() -> Iterator[tuple[str, str]]:
    """The (section, key) pairs that hold secrets, found from the `SecretStr` annotations."""
    for section, field in Settings.model_fields.items():
        model = field.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            for key, sub in model.model_fields.items():
                if sub.annotation is SecretStr or SecretStr in get_args(sub.annotation):
                    yield section, key


def env_var_name(loc: tuple[str, ...]) -> str:
    """The environment variable that sets a dotted key, e.g. `ESUPDATER_KAFKA__GROUP_ID`."""
    return ENV_PREFIX + ENV_DELIMITER.join(part.upper() for part in loc)


def load_settings(path: Path | None = None) -> Settings:
    """Load `path` (default `./settings.toml`, optional) with env overrides, or raise."""
    if path is not None and not path.is_file():
        raise SettingsError(f"{path}: settings file not found")
    toml_path = DEFAULT_PATH if path is None else path
    unknown = unknown_env_vars()
    if unknown:
        raise SettingsError("\n".join(unknown))
    token = _toml_path.set(toml_path)
    try:
        return _anchored(Settings(), toml_path.absolute().parent)
    except ValidationError as exc:
        raise SettingsError(_describe(exc, toml_path, _renamed.get([]))) from None
    except pydantic_settings.SettingsError as exc:  # an env var that is not valid JSON
        raise SettingsError(f"environment: {exc}") from exc
    finally:
        _toml_path.reset(token)


def _anchored(settings: Settings, folder: Path) -> Settings:
    """Relative paths read from the settings' folder: `esupdater -s /srv/sync/settings.toml`
    finds /srv/sync/runtime from any working directory, as `stop` and `status` must."""
    if not settings.runtime.dir.is_absolute() and folder != Path.cwd():
        runtime = settings.runtime.model_copy(update={"dir": folder / settings.runtime.dir})
        settings = settings.model_copy(update={"runtime": runtime})
    settings._folder = folder
    return settings


def _describe(exc: ValidationError, toml_path: Path, renamed: list[Renamed]) -> str:
    return "\n".join(_describe_one(error, toml_path, renamed) for error in exc.errors())


def _describe_one(error: ErrorDetails, toml_path: Path, renamed: list[Renamed]) -> str:
    loc = tuple(str(part) for part in error["loc"])
    where = _source_of(loc, toml_path)
    key = ".".join(loc)
    old = _old_name(loc, renamed)
    if old is not None:  # name the key as the user wrote it, and where
        where, key = old.where, f"{'.'.join(old.old)} (now {key})"
    if error["type"] == "extra_forbidden":
        reason = "unknown section" if len(loc) == 1 else "unknown key"
        nearest = _nearest_key(loc, from_env=where.startswith("env "))
        if nearest:
            reason += f" (did you mean {nearest}?)"
        moved = [f"{'.'.join(o)} is now {'.'.join(n)}" for o, n in RENAMED_KEYS.items()
                 if len(loc) == 1 and o[0] == loc[0] and o[0] in removed_sections()]
        if moved:
            reason += f" (its keys were moved: {', '.join(moved)})"
    else:
        reason = error["msg"].removeprefix("Value error, ")
        secret = tuple(loc[:2]) in set(secret_keys())
        if not secret and isinstance(error.get("input"), str | int | float | bool):
            reason += f" (got {orjson.dumps(error['input']).decode()})"
    return f"{where}: {key}: {reason}"


def _nearest_key(loc: tuple[str, ...], *, from_env: bool) -> str | None:
    """The known section or key closest to a misspelt one, as the user would write it."""
    if len(loc) == 1:
        found = difflib.get_close_matches(loc[0], list(Settings.model_fields), n=1)
        if not found:
            return None
        return env_var_name((found[0],)) if from_env else f"[{found[0]}]"
    section = Settings.model_fields.get(loc[0])
    model = section.annotation if section is not None else None
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return None
    found = difflib.get_close_matches(loc[1], list(model.model_fields), n=1)
    if not found:
        return None
    return env_var_name((loc[0], found[0])) if from_env else found[0]


def known_env_vars() -> set[str]:
    """Every ESUPDATER_* name esupdater reads: each section (JSON), each key, the old names
    of renamed keys, and the settings file's path."""
    names = {f"{ENV_PREFIX}SETTINGS"}
    for section, field in Settings.model_fields.items():
        names.add(env_var_name((section,)))
        model = field.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            names.update(env_var_name((section, key)) for key in model.model_fields)
    for old in RENAMED_KEYS:
        names.update({env_var_name(old[:1]), env_var_name(old)})
    return names


#: Variables of the test suite and the local stack (tools/local_stack.py), not settings.
_TEST_PREFIX = f"{ENV_PREFIX}TEST_"


def unknown_env_vars() -> list[str]:
    """One problem per ESUPDATER_* variable that sets nothing (a typo would otherwise be
    ignored while `check` says the settings are fine), with the name meant if one is close."""
    known = known_env_vars()
    # SECTION__KEY of a known section: the settings' own check names the dotted key.
    sections = tuple(env_var_name((section,)) + ENV_DELIMITER for section in Settings.model_fields)
    problems = []
    for name in sorted(_upper_environ()):
        if (not name.startswith(ENV_PREFIX) or name in known or name.startswith(_TEST_PREFIX)
                or name.startswith(sections)):
            continue
        nearest = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.8)
        if nearest:
            hint = f"did you mean {nearest[0]}?"
            if name.replace(ENV_DELIMITER, "_") == nearest[0].replace(ENV_DELIMITER, "_"):
                hint += " a section and its key are joined by two underscores"
        else:
            hint = "settings are ESUPDATER_<SECTION>__<KEY>, e.g. ESUPDATER_KAFKA__GROUP_ID"
        problems.append(f"env {name}: not a setting ({hint})")
    return problems


def _old_name(loc: tuple[str, ...], renamed: list[Renamed]) -> Renamed | None:
    """The rename that supplied the value at `loc`, unless a source that wins gave it under
    its new name: an old env var, else an old key in the file when no env var sets it."""
    if len(loc) < 2 or env_var_name(loc[:2]) in _upper_environ():
        return None
    found = [r for r in renamed if r.new == loc[:2]]
    found.sort(key=lambda r: not r.from_env)
    return found[0] if found else None


def _source_of(loc: tuple[str, ...], toml_path: Path) -> str:
    """Name the env var when the environment supplied the key, else the file."""
    env = sorted(name.upper() for name in os.environ if name.upper().startswith(ENV_PREFIX))
    if loc[0] in removed_sections():  # its variables were all renamed away
        env = [name for name in env if not name.startswith(env_var_name(loc[:1]))]
    for depth in (2, 1):  # `ESUPDATER_KAFKA__GROUP_ID`, or the whole section as JSON
        if len(loc) >= depth and env_var_name(loc[:depth]) in env:
            return f"env {env_var_name(loc[:depth])}"
    if len(loc) == 1:  # a section-wide check may involve keys from both sources
        section_prefix = env_var_name(loc) + ENV_DELIMITER
        overrides = [name for name in env if name.startswith(section_prefix)]
        if overrides:
            return f"{toml_path} (with env {', '.join(overrides)})"
    return str(toml_path)
