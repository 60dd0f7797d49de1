"""Resolve the settings of a run from flags, the environment and pyproject.toml.

Each setting takes its value from the first source that sets it, in this order:
a command-line flag, an environment variable, a key of the
``[tool.pipeline_actors]`` table in the pipeline's pyproject.toml, and the
setting's default. The sources below the one that sets a setting are not parsed
for it, so a flag overrides an invalid environment variable. Every key of the
pyproject table must still be a known key.

An environment variable set to the empty string counts as not set.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from .errors import ConfigError
from .logs import DEFAULT_LEVEL, LEVELS

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

PYPROJECT_TABLE = "[tool.pipeline_actors]"
MASKED = "***"


class Parser(Protocol):
    """A converter of raw setting values to typed values.

    A raw value is a string from the environment, a value that argparse has
    already converted, or a TOML value. The parser raises ValueError when the
    raw value is invalid, with a message that completes "expected ...".
    """

    @property
    def expected(self) -> str: ...

    def __call__(self, raw: object) -> Any: ...


_WHOLE_NUMBER = re.compile(r"[+-]?[0-9]+")


@dataclass(frozen=True)
class WholeNumber:
    """A parser of whole numbers of `minimum` or more."""

    minimum: int

    @property
    def expected(self) -> str:
        return f"a whole number of {self.minimum} or more"

    def __call__(self, raw: object) -> int:
        number = self._to_int(raw)
        if number < self.minimum:
            raise ValueError(self.expected)
        return number

    def _to_int(self, raw: object) -> int:
        # bool is a subclass of int, but `true` is not a valid count.
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw

        if not isinstance(raw, str) or not _WHOLE_NUMBER.fullmatch(raw.strip()):
            raise ValueError(self.expected)

        # Since Python 3.10.7, int() rejects strings longer than
        # sys.get_int_max_str_digits(), 4300 digits by default.
        try:
            return int(raw)
        except ValueError:
            raise ValueError(self.expected) from None


@dataclass(frozen=True)
class Seconds:
    """A parser of finite durations in seconds, more than 0."""

    expected = "a number of seconds more than 0"

    def __call__(self, raw: object) -> float:
        if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
            raise ValueError(self.expected)

        try:
            seconds = float(raw)
        except (ValueError, OverflowError):
            raise ValueError(self.expected) from None

        if not math.isfinite(seconds) or seconds <= 0:
            raise ValueError(self.expected)
        return seconds


_TRUE_WORDS = ("1", "true", "yes")
_FALSE_WORDS = ("0", "false", "no")


@dataclass(frozen=True)
class Boolean:
    """A parser of yes/no values, also accepting TOML booleans and 0 or 1."""

    expected = "one of 1, 0, true, false, yes, no"

    def __call__(self, raw: object) -> bool:
        if isinstance(raw, bool):
            return raw

        if isinstance(raw, int) and raw in (0, 1):
            return bool(raw)

        word = raw.strip().lower() if isinstance(raw, str) else None
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
        raise ValueError(self.expected)


@dataclass(frozen=True)
class Choice:
    """A parser of one of `choices`, compared case-insensitively."""

    choices: tuple[str, ...]

    @property
    def expected(self) -> str:
        return "one of " + ", ".join(self.choices)

    def __call__(self, raw: object) -> str:
        if isinstance(raw, str):
            word = raw.strip().lower()
            for choice in self.choices:
                if choice.lower() == word:
                    return choice
        raise ValueError(self.expected)


@dataclass(frozen=True)
class MatchingText:
    """A parser of strings that match `pattern` as a whole."""

    pattern: re.Pattern[str]
    expected: str

    def __call__(self, raw: object) -> str:
        if isinstance(raw, str) and self.pattern.fullmatch(raw):
            return raw
        raise ValueError(self.expected)


REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


@dataclass(frozen=True)
class RedisUrl:
    """A parser of Redis URLs with the redis://, rediss:// or unix:// scheme."""

    expected = "a URL starting with redis://, rediss:// or unix://"

    def __call__(self, raw: object) -> str:
        if not isinstance(raw, str) or not raw.startswith(REDIS_SCHEMES):
            raise ValueError(self.expected)

        try:
            # Reading the port raises ValueError unless it is a number up to 65535.
            _ = urlsplit(raw).port
        except ValueError:
            raise ValueError(
                "a port number from 0 to 65535 after the host, such as "
                "redis://localhost:6379/0"
            ) from None
        return raw


@dataclass(frozen=True)
class FilePath:
    """A parser of file paths, expanding a leading ``~``."""

    expected = "a file path"

    def __call__(self, raw: object) -> Path:
        if isinstance(raw, Path):
            return raw.expanduser()
        if isinstance(raw, str) and raw:
            return Path(raw).expanduser()
        raise ValueError(self.expected)


@dataclass(frozen=True)
class SecretText:
    """A parser of non-empty strings."""

    expected = "a non-empty string"

    def __call__(self, raw: object) -> str:
        if isinstance(raw, str) and raw:
            return raw
        raise ValueError(self.expected)


@dataclass(frozen=True)
class NameList:
    """A parser of name lists, lower-cased, without duplicates, in order.

    A string is split at commas, and so is each string of a list, so that
    ``--capability linux,gpu`` and ``--capability linux --capability gpu`` agree.
    """

    expected = "non-empty names, as a list or separated by commas, such as 'linux,gpu'"

    def __call__(self, raw: object) -> tuple[str, ...]:
        items = [raw] if isinstance(raw, str) else raw
        if not isinstance(items, (list, tuple)):
            raise ValueError(self.expected)

        names = []
        for item in items:
            if not isinstance(item, str):
                raise ValueError(self.expected)
            names.extend(self._split(item))
        return tuple(dict.fromkeys(names))

    def _split(self, text: str) -> list[str]:
        names = [part.strip().lower() for part in text.split(",")]
        if "" in names:
            raise ValueError(self.expected)
        return names


def mask_url_password(url: str) -> str:
    """Return `url` with its password replaced by ``***``, for display.

    Both the password of the user info (``redis://user:secret@host``) and a
    ``password=`` query parameter are masked. A text without ``://`` but with an
    ``@``, such as a URL missing its scheme, is masked up to the last ``@``.
    """
    if "://" not in url and "@" in url:
        return MASKED + url[url.rindex("@") :]
    if "://" not in url:
        return url

    try:
        parts = urlsplit(url)
    except ValueError:
        # urlsplit rejects an unbalanced IPv6 bracket, so no part is known to be safe.
        return url[: url.index("://") + 3] + MASKED

    netloc = _mask_netloc_password(parts.netloc)
    query = "&".join(_mask_query_password(pair) for pair in parts.query.split("&"))
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _mask_netloc_password(netloc: str) -> str:
    userinfo, at, host = netloc.rpartition("@")
    username, colon, _password = userinfo.partition(":")
    if not at or not colon:
        return netloc
    return f"{username}:{MASKED}@{host}"


def _mask_query_password(pair: str) -> str:
    key, equals, _value = pair.partition("=")
    if equals and key.lower() == "password":
        return f"{key}={MASKED}"
    return pair


@dataclass(frozen=True)
class Setting:
    """The definition of one setting and of the names it is read under.

    Attributes:
        name: The Python identifier, also the setting's key in `resolve`'s flags.
        description: The setting's name in messages, such as "instance index".
        parse: The parser of raw values from every source.
        flag: The command-line flag, or None when there is none.
        environment: Environment variable names, the primary one first, then
            the aliases.
        pyproject_key: The key in ``[tool.pipeline_actors]``, or None when the
            setting must not be stored in a file.
        default: The value when no source sets the setting.
        secret: Whether the value is shown as ``***``.
        mask: A function that hides the secret parts of the value's text when
            it is shown, or None when nothing needs hiding.
        unset_meaning: What a value of None means, as `describe` shows it.
    """

    name: str
    description: str
    parse: Parser
    flag: str | None
    environment: tuple[str, ...]
    pyproject_key: str | None
    default: Any = None
    secret: bool = False
    mask: Callable[[str], str] | None = None
    unset_meaning: str = "not set"


RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,128}")
_RUN_ID = MatchingText(
    RUN_ID_PATTERN,
    "1 to 128 characters, each an ASCII letter, a digit, '.', '_' or '-'",
)
_KEY_PREFIX = MatchingText(
    re.compile(r"[A-Za-z0-9._:-]+"),
    "a non-empty string of ASCII letters, digits, '.', '_', '-' and ':'",
)


SETTINGS: tuple[Setting, ...] = (
    Setting(
        name="instance_index",
        description="instance index",
        parse=WholeNumber(0),
        flag="--instance-index",
        environment=(
            "PIPELINE_ACTORS_INSTANCE_INDEX",
            "MODULARPIPELINES_INSTANCE_INDEX",
        ),
        pyproject_key="instance-index",
        default=0,
    ),
    Setting(
        name="total_instances",
        description="total instances",
        parse=WholeNumber(1),
        flag="--total-instances",
        environment=(
            "PIPELINE_ACTORS_TOTAL_INSTANCES",
            "MODULARPIPELINES_TOTAL_INSTANCES",
        ),
        pyproject_key="total-instances",
        default=1,
    ),
    Setting(
        name="run_id",
        description="run id",
        parse=_RUN_ID,
        flag="--run-id",
        environment=("PIPELINE_ACTORS_RUN_ID", "MODULARPIPELINES_RUN_ID"),
        pyproject_key="run-id",
        unset_meaning="a random id",
    ),
    Setting(
        name="role",
        description="role",
        parse=Choice(("master", "worker")),
        flag="--role",
        environment=("PIPELINE_ACTORS_ROLE", "MODULAR_PIPELINES_INSTANCE"),
        pyproject_key="role",
        unset_meaning="derived from the instance index",
    ),
    Setting(
        name="redis_url",
        description="Redis URL",
        parse=RedisUrl(),
        flag="--redis",
        environment=("REDIS_URL",),
        pyproject_key="redis-url",
        mask=mask_url_password,
    ),
    Setting(
        name="secret",
        description="secret",
        parse=SecretText(),
        flag=None,
        environment=("PIPELINE_ACTORS_SECRET",),
        pyproject_key=None,
        secret=True,
    ),
    Setting(
        name="secret_file",
        description="secret file",
        parse=FilePath(),
        flag="--secret-file",
        environment=("PIPELINE_ACTORS_SECRET_FILE",),
        pyproject_key="secret-file",
    ),
    Setting(
        name="insecure",
        description="insecure",
        parse=Boolean(),
        flag="--insecure",
        environment=("PIPELINE_ACTORS_INSECURE",),
        pyproject_key="insecure",
        default=False,
    ),
    Setting(
        name="key_prefix",
        description="key prefix",
        parse=_KEY_PREFIX,
        flag="--key-prefix",
        environment=("PIPELINE_ACTORS_KEY_PREFIX",),
        pyproject_key="key-prefix",
        default="pipeline_actors",
    ),
    Setting(
        name="key_ttl",
        description="key TTL",
        parse=Seconds(),
        flag="--key-ttl",
        environment=("PIPELINE_ACTORS_KEY_TTL",),
        pyproject_key="key-ttl",
        default=3600.0,
    ),
    Setting(
        name="min_workers",
        description="minimum workers",
        parse=WholeNumber(0),
        flag="--min-workers",
        environment=("PIPELINE_ACTORS_MIN_WORKERS",),
        pyproject_key="min-workers",
        default=0,
    ),
    Setting(
        name="registration_timeout",
        description="registration timeout",
        parse=Seconds(),
        flag="--registration-timeout",
        environment=("PIPELINE_ACTORS_REGISTRATION_TIMEOUT",),
        pyproject_key="registration-timeout",
        default=300.0,
    ),
    Setting(
        name="local_workers",
        description="local workers",
        parse=WholeNumber(0),
        flag="--local-workers",
        environment=("PIPELINE_ACTORS_LOCAL_WORKERS",),
        pyproject_key="local-workers",
        unset_meaning="the CPU count",
    ),
    Setting(
        name="capabilities",
        description="capabilities",
        parse=NameList(),
        flag="--capability",
        environment=("PIPELINE_ACTORS_CAPABILITIES",),
        pyproject_key="capabilities",
        default=(),
    ),
    Setting(
        name="no_os_capability",
        description="no OS capability",
        parse=Boolean(),
        flag="--no-os-capability",
        environment=("PIPELINE_ACTORS_NO_OS_CAPABILITY",),
        pyproject_key="no-os-capability",
        default=False,
    ),
    Setting(
        name="capability_timeout",
        description="capability timeout",
        parse=Seconds(),
        flag="--capability-timeout",
        environment=("PIPELINE_ACTORS_CAPABILITY_TIMEOUT",),
        pyproject_key="capability-timeout",
        default=300.0,
    ),
    Setting(
        name="log_level",
        description="log level",
        parse=Choice(LEVELS),
        flag="--log-level",
        environment=("PIPELINE_ACTORS_LOG_LEVEL",),
        pyproject_key="log-level",
        default=DEFAULT_LEVEL,
    ),
    Setting(
        name="display",
        description="display",
        parse=Choice(("auto", "lines", "live")),
        flag="--display",
        environment=("PIPELINE_ACTORS_DISPLAY",),
        pyproject_key="display",
        default="auto",
    ),
    Setting(
        name="heartbeat_interval",
        description="heartbeat interval",
        parse=Seconds(),
        flag="--heartbeat-interval",
        environment=("PIPELINE_ACTORS_HEARTBEAT_INTERVAL",),
        pyproject_key="heartbeat-interval",
        default=1.0,
    ),
    Setting(
        name="heartbeat_timeout",
        description="heartbeat timeout",
        parse=Seconds(),
        flag="--heartbeat-timeout",
        environment=("PIPELINE_ACTORS_HEARTBEAT_TIMEOUT",),
        pyproject_key="heartbeat-timeout",
        default=10.0,
    ),
    Setting(
        name="cancel_grace",
        description="cancel grace",
        parse=Seconds(),
        flag="--cancel-grace",
        environment=("PIPELINE_ACTORS_CANCEL_GRACE",),
        pyproject_key="cancel-grace",
        default=10.0,
    ),
    Setting(
        name="max_attempts",
        description="maximum attempts",
        parse=WholeNumber(1),
        flag="--max-attempts",
        environment=("PIPELINE_ACTORS_MAX_ATTEMPTS",),
        pyproject_key="max-attempts",
        default=3,
    ),
    Setting(
        name="prefetch",
        description="prefetch",
        parse=WholeNumber(0),
        flag="--prefetch",
        environment=("PIPELINE_ACTORS_PREFETCH",),
        pyproject_key="prefetch",
        default=0,
    ),
)


def validate_run_id(text: str) -> str:
    """Return `text` when it is a valid run id, else raise ConfigError."""
    try:
        return _RUN_ID(text)
    except ValueError as exc:
        raise ConfigError(f"invalid run id {text!r}: expected {exc}") from None


@dataclass(frozen=True)
class ResolvedValue:
    """The value of one setting and the source it came from.

    The source reads, for example, "flag --run-id", "environment
    PIPELINE_ACTORS_RUN_ID", "pyproject.toml /path/to/pyproject.toml" or
    "default".
    """

    setting: Setting
    value: Any
    source: str


@dataclass(frozen=True)
class ResolvedConfig:
    """Every setting of a run with its value and source, in the order of SETTINGS.

    Each value reads as an attribute named after its setting, such as
    ``config.run_id``.
    """

    entries: tuple[ResolvedValue, ...]

    def __getattr__(self, name: str) -> Any:
        # Python calls this only for names that are not real attributes. The
        # entries come from __dict__ because unpickling looks up attributes
        # before it sets them.
        for entry in self.__dict__.get("entries", ()):
            if entry.setting.name == name:
                return entry.value
        raise AttributeError(f"{type(self).__name__} has no setting {name!r}")

    def entry(self, name: str) -> ResolvedValue:
        """Return the resolved value of the setting `name`, or raise KeyError."""
        for entry in self.entries:
            if entry.setting.name == name:
                return entry
        raise KeyError(f"unknown setting {name!r}")

    def source(self, name: str) -> str:
        """Return the source of the setting `name`, or raise KeyError."""
        return self.entry(name).source

    @property
    def effective_role(self) -> ResolvedValue:
        """The role of this instance, which is the role setting when it is set.

        Otherwise instance 0 is the master and every other instance a worker.
        """
        role = self.entry("role")
        if role.value is not None:
            return role

        index = self.entry("instance_index").value
        derived = "master" if index == 0 else "worker"
        return ResolvedValue(
            role.setting, derived, f"derived from instance index {index}"
        )

    def describe(self) -> list[str]:
        """Return one line per setting with its value and source, secrets masked.

        The role line shows the effective role.
        """
        width = max(len(entry.setting.name) for entry in self.entries)
        lines = []
        for entry in self.entries:
            if entry.setting.name == "role":
                entry = self.effective_role
            value_text = show_value(entry.setting, entry.value)
            line = f"{entry.setting.name:<{width}} = {value_text}  ({entry.source})"
            lines.append(line)
        return lines


def show_value(setting: Setting, value: Any) -> str:
    """Return the text of a resolved value for display, with secrets masked."""
    if value is None:
        return setting.unset_meaning

    if setting.secret:
        return MASKED

    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, tuple):
        text = ", ".join(value) if value else "none"
    else:
        text = str(value)
    return setting.mask(text) if setting.mask else text


def resolve(
    flags: Mapping[str, object | None],
    environ: Mapping[str, str],
    pyproject: Path | None,
) -> ResolvedConfig:
    """Resolve every setting from flags, the environment, pyproject.toml and defaults.

    `flags` maps setting names, such as ``"run_id"``, to the values argparse
    parsed, with None for a flag that was not given. Keys that name no setting
    with a flag are ignored, so ``vars(namespace)`` fits. `pyproject` is the
    file whose ``[tool.pipeline_actors]`` table is read, or None for no file.
    Relative paths in that table are relative to the file's folder.

    Raises ConfigError, naming the setting, the value and its source, for an
    invalid value, disagreeing environment aliases, an instance index not less
    than the total instances, or a heartbeat timeout not more than the heartbeat
    interval. It also raises ConfigError for a pyproject.toml that cannot be
    read or parsed, and for an unknown key in its table.
    """
    table: dict[str, object] = {}
    if pyproject is not None:
        table = _read_pyproject_table(pyproject)
        _check_pyproject_keys(table, pyproject)

    entries = tuple(
        _resolve_setting(setting, flags, environ, table, pyproject)
        for setting in SETTINGS
    )
    config = ResolvedConfig(entries)

    _check_instance_index(config)
    _check_heartbeat_timeout(config)
    return config


def _resolve_setting(
    setting: Setting,
    flags: Mapping[str, object | None],
    environ: Mapping[str, str],
    table: Mapping[str, object],
    pyproject: Path | None,
) -> ResolvedValue:
    flag_value = flags.get(setting.name) if setting.flag else None
    if flag_value is not None:
        return _parse_value(setting, flag_value, f"flag {setting.flag}")

    from_environment = _resolve_from_environment(setting, environ)
    if from_environment is not None:
        return from_environment

    if pyproject is not None and setting.pyproject_key in table:
        return _resolve_from_pyproject(setting, table, pyproject)

    return ResolvedValue(setting, setting.default, "default")


def _resolve_from_environment(
    setting: Setting, environ: Mapping[str, str]
) -> ResolvedValue | None:
    found = [(name, environ[name]) for name in setting.environment if environ.get(name)]
    resolved = [
        _parse_value(setting, raw, f"environment {name}") for name, raw in found
    ]
    if not resolved:
        return None

    for (name, raw), other in zip(found[1:], resolved[1:], strict=True):
        if other.value != resolved[0].value:
            first_name, first_raw = found[0]
            raise ConfigError(
                f"environment variables {first_name}="
                f"{_show_raw(setting, first_raw)} and {name}="
                f"{_show_raw(setting, raw)} set different {setting.description} "
                "values; unset one of them or give both the same value"
            )
    return resolved[0]


def _resolve_from_pyproject(
    setting: Setting, table: Mapping[str, object], pyproject: Path
) -> ResolvedValue:
    resolved = _parse_value(
        setting, table[setting.pyproject_key], f"pyproject.toml {pyproject}"
    )
    if isinstance(resolved.value, Path) and not resolved.value.is_absolute():
        relative_to_file = pyproject.parent / resolved.value
        return ResolvedValue(setting, relative_to_file, resolved.source)
    return resolved


def _parse_value(setting: Setting, raw: object, source: str) -> ResolvedValue:
    try:
        value = setting.parse(raw)
    except ValueError as exc:
        subject = setting.description
        if not setting.secret:
            subject += " " + _show_raw(setting, raw)
        raise ConfigError(f"invalid {subject} from {source}: expected {exc}") from None
    return ResolvedValue(setting, value, source)


def _show_raw(setting: Setting, raw: object) -> str:
    if setting.secret:
        return MASKED
    if isinstance(raw, str) and setting.mask:
        return repr(setting.mask(raw))
    return repr(raw)


def find_pyproject(start: Path) -> Path | None:
    """Return the first pyproject.toml in `start` or in a folder above it.

    `start` is the pipeline file's folder, or the file itself. A relative
    `start` is relative to the current folder. Returns None when no folder up
    to the root has a pyproject.toml file.
    """
    folder = Path(os.path.abspath(start))
    for candidate_folder in (folder, *folder.parents):
        candidate = candidate_folder / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def _read_pyproject_table(pyproject: Path) -> dict[str, object]:
    try:
        with pyproject.open("rb") as file:
            document = tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"cannot read {pyproject}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"invalid TOML in {pyproject}: {exc}") from None

    tool = document.get("tool", {})
    table = tool.get("pipeline_actors", {}) if isinstance(tool, dict) else None
    if not isinstance(table, dict):
        raise ConfigError(
            f"{PYPROJECT_TABLE} in {pyproject} is not a table; write the "
            f"settings under a {PYPROJECT_TABLE} header"
        )
    return table


def _check_pyproject_keys(table: Mapping[str, object], pyproject: Path) -> None:
    valid_keys = [s.pyproject_key for s in SETTINGS if s.pyproject_key]
    unknown_keys = sorted(key for key in table if key not in valid_keys)
    if not unknown_keys:
        return

    for setting in SETTINGS:
        key = setting.name.replace("_", "-")
        if setting.secret and setting.pyproject_key is None and key in table:
            raise ConfigError(_secret_in_pyproject_message(setting, pyproject))

    described = [_describe_unknown_key(key, valid_keys) for key in unknown_keys]
    raise ConfigError(
        f"unknown key{'s' if len(unknown_keys) > 1 else ''} "
        f"{', '.join(described)} in {PYPROJECT_TABLE} of {pyproject}; valid keys: "
        + ", ".join(valid_keys)
    )


def _describe_unknown_key(key: str, valid_keys: list[str]) -> str:
    matches = difflib.get_close_matches(key.replace("_", "-"), valid_keys, n=1)
    if matches:
        return f"{key!r} (did you mean {matches[0]!r}?)"
    return repr(key)


def _secret_in_pyproject_message(setting: Setting, pyproject: Path) -> str:
    places = [f"environment variable {name}" for name in setting.environment]
    if setting.flag:
        places.insert(0, f"flag {setting.flag}")
    return (
        f"the {setting.description} cannot be set in {PYPROJECT_TABLE} of "
        f"{pyproject}, because that file is usually committed; set it with "
        f"{' or '.join(places)}, or use the secret-file key"
    )


def _check_instance_index(config: ResolvedConfig) -> None:
    index = config.entry("instance_index")
    total = config.entry("total_instances")
    # A worker need not know how many instances there are; only a total that
    # was given can contradict the index.
    if total.source != "default" and index.value >= total.value:
        raise ConfigError(
            f"instance index {index.value} from {index.source} must be less than "
            f"the total instances {total.value} from {total.source}, because "
            "instances are numbered from 0"
        )


def _check_heartbeat_timeout(config: ResolvedConfig) -> None:
    interval = config.entry("heartbeat_interval")
    timeout = config.entry("heartbeat_timeout")
    if timeout.value <= interval.value:
        raise ConfigError(
            f"heartbeat timeout {timeout.value} s from {timeout.source} must be "
            f"more than the heartbeat interval {interval.value} s from "
            f"{interval.source}, or workers count as lost between two heartbeats"
        )


def load_secret(config: ResolvedConfig) -> bytes | None:
    """Return the secret from the secret setting or the secret file, or None.

    The file's content loses one trailing newline. Raises ConfigError when both
    are set, or when the file is missing, unreadable or empty.
    """
    secret = config.entry("secret")
    secret_file = config.entry("secret_file")
    if secret.value is not None and secret_file.value is not None:
        raise ConfigError(
            f"both a secret ({secret.source}) and a secret file "
            f"({secret_file.source}) are set; set only one of them"
        )

    if secret.value is not None:
        return secret.value.encode("utf-8")
    if secret_file.value is None:
        return None
    return _read_secret_file(secret_file.value, secret_file.source)


def _read_secret_file(path: Path, source: str) -> bytes:
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"secret file {path} from {source} not found") from None
    except OSError as exc:
        raise ConfigError(
            f"cannot read secret file {path} from {source}: {exc.strerror}"
        ) from None

    for newline in (b"\r\n", b"\n"):
        if content.endswith(newline):
            content = content[: -len(newline)]
            break

    if not content:
        raise ConfigError(f"secret file {path} from {source} is empty")
    return content
