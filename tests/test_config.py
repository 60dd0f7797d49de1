"""Resolving run settings from flags, the environment, pyproject.toml and defaults."""

from __future__ import annotations

import pickle
import string
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline_actors.config import (
    SETTINGS,
    Setting,
    find_pyproject,
    load_secret,
    mask_url_password,
    resolve,
    validate_run_id,
)
from pipeline_actors.errors import ConfigError, InvalidPipelineError
from pipeline_actors.logs import LEVELS
from pipeline_actors.runtime import new_run_id

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

SETTING_BY_NAME = {setting.name: setting for setting in SETTINGS}


def write_pyproject(folder: Path, body: str) -> Path:
    """Write a pyproject.toml whose [tool.pipeline_actors] table is `body`."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pyproject.toml"
    path.write_text("[tool.pipeline_actors]\n" + textwrap.dedent(body))
    return path


def pyproject_with(folder: Path, setting: Setting, toml_value: str) -> Path:
    return write_pyproject(folder, f"{setting.pyproject_key} = {toml_value}\n")


def toml_value(literal: str) -> object:
    return tomllib.loads(f"value = {literal}")["value"]


def config_error(flags=None, environ=None, pyproject=None) -> str:
    """Return the message of the ConfigError that resolving raises."""
    with pytest.raises(ConfigError) as info:
        resolve(flags or {}, environ or {}, pyproject)
    return str(info.value)


def describe_line(config, name: str) -> str:
    lines = [line for line in config.describe() if line.split(" ")[0] == name]
    assert len(lines) == 1, config.describe()
    return lines[0]


# The expected definitions, written out so that a change to the table shows.
EXPECTED_DEFINITIONS = {
    "instance_index": (
        "--instance-index",
        ("PIPELINE_ACTORS_INSTANCE_INDEX", "MODULARPIPELINES_INSTANCE_INDEX"),
        "instance-index",
        0,
    ),
    "total_instances": (
        "--total-instances",
        ("PIPELINE_ACTORS_TOTAL_INSTANCES", "MODULARPIPELINES_TOTAL_INSTANCES"),
        "total-instances",
        1,
    ),
    "run_id": (
        "--run-id",
        ("PIPELINE_ACTORS_RUN_ID", "MODULARPIPELINES_RUN_ID"),
        "run-id",
        None,
    ),
    "role": (
        "--role",
        ("PIPELINE_ACTORS_ROLE", "MODULAR_PIPELINES_INSTANCE"),
        "role",
        None,
    ),
    "redis_url": ("--redis", ("REDIS_URL",), "redis-url", None),
    "secret": (None, ("PIPELINE_ACTORS_SECRET",), None, None),
    "secret_file": (
        "--secret-file",
        ("PIPELINE_ACTORS_SECRET_FILE",),
        "secret-file",
        None,
    ),
    "insecure": ("--insecure", ("PIPELINE_ACTORS_INSECURE",), "insecure", False),
    "key_prefix": (
        "--key-prefix",
        ("PIPELINE_ACTORS_KEY_PREFIX",),
        "key-prefix",
        "pipeline_actors",
    ),
    "key_ttl": ("--key-ttl", ("PIPELINE_ACTORS_KEY_TTL",), "key-ttl", 3600.0),
    "min_workers": (
        "--min-workers",
        ("PIPELINE_ACTORS_MIN_WORKERS",),
        "min-workers",
        0,
    ),
    "registration_timeout": (
        "--registration-timeout",
        ("PIPELINE_ACTORS_REGISTRATION_TIMEOUT",),
        "registration-timeout",
        300.0,
    ),
    "local_workers": (
        "--local-workers",
        ("PIPELINE_ACTORS_LOCAL_WORKERS",),
        "local-workers",
        None,
    ),
    "capabilities": (
        "--capability",
        ("PIPELINE_ACTORS_CAPABILITIES",),
        "capabilities",
        (),
    ),
    "no_os_capability": (
        "--no-os-capability",
        ("PIPELINE_ACTORS_NO_OS_CAPABILITY",),
        "no-os-capability",
        False,
    ),
    "capability_timeout": (
        "--capability-timeout",
        ("PIPELINE_ACTORS_CAPABILITY_TIMEOUT",),
        "capability-timeout",
        300.0,
    ),
    "log_level": (
        "--log-level",
        ("PIPELINE_ACTORS_LOG_LEVEL",),
        "log-level",
        "WARNING",
    ),
    "display": ("--display", ("PIPELINE_ACTORS_DISPLAY",), "display", "auto"),
    "heartbeat_interval": (
        "--heartbeat-interval",
        ("PIPELINE_ACTORS_HEARTBEAT_INTERVAL",),
        "heartbeat-interval",
        1.0,
    ),
    "heartbeat_timeout": (
        "--heartbeat-timeout",
        ("PIPELINE_ACTORS_HEARTBEAT_TIMEOUT",),
        "heartbeat-timeout",
        10.0,
    ),
    "cancel_grace": (
        "--cancel-grace",
        ("PIPELINE_ACTORS_CANCEL_GRACE",),
        "cancel-grace",
        10.0,
    ),
    "max_attempts": (
        "--max-attempts",
        ("PIPELINE_ACTORS_MAX_ATTEMPTS",),
        "max-attempts",
        3,
    ),
    "prefetch": (
        "--prefetch",
        ("PIPELINE_ACTORS_PREFETCH",),
        "prefetch",
        0,
    ),
}


def test_settings_match_expected_names():
    assert [setting.name for setting in SETTINGS] == list(EXPECTED_DEFINITIONS)


@pytest.mark.parametrize("name", EXPECTED_DEFINITIONS)
def test_setting_definition(name):
    flag, environment, pyproject_key, default = EXPECTED_DEFINITIONS[name]
    setting = SETTING_BY_NAME[name]

    assert setting.flag == flag
    assert setting.environment == environment
    assert setting.pyproject_key == pyproject_key
    assert setting.default == default
    assert type(setting.default) is type(default)


@pytest.mark.parametrize(
    "setting",
    [setting for setting in SETTINGS if setting.default is not None],
    ids=lambda setting: setting.name,
)
def test_default_passes_own_parser(setting):
    assert setting.parse(setting.default) == setting.default


def test_setting_names_unique():
    flags = [setting.flag for setting in SETTINGS if setting.flag]
    names = [name for setting in SETTINGS for name in setting.environment]
    keys = [setting.pyproject_key for setting in SETTINGS if setting.pyproject_key]

    assert len(set(flags)) == len(flags)
    assert len(set(names)) == len(names)
    assert len(set(keys)) == len(keys)


def test_only_secret_is_secret():
    assert [setting.name for setting in SETTINGS if setting.secret] == ["secret"]


@dataclass(frozen=True)
class SourceCase:
    """Valid raw values of one setting from each source, and their parsed values."""

    name: str
    flag: object
    flag_value: object
    environment: str
    environment_value: object
    toml: str
    toml_value: object
    other_flags: dict = field(default_factory=dict)
    """Flags that keep the other settings consistent with these values."""


SOURCE_CASES = [
    SourceCase("instance_index", 3, 3, "2", 2, "1", 1, {"total_instances": 10}),
    SourceCase("total_instances", 4, 4, "3", 3, "2", 2),
    SourceCase(
        "run_id", "from-flag", "from-flag", "from.env", "from.env", '"toml_1"', "toml_1"
    ),
    SourceCase("role", "worker", "worker", "MASTER", "master", '"Worker"', "worker"),
    SourceCase(
        "redis_url",
        "redis://flag:6379/0",
        "redis://flag:6379/0",
        "rediss://env:6380/1",
        "rediss://env:6380/1",
        '"unix:///tmp/redis.sock"',
        "unix:///tmp/redis.sock",
    ),
    SourceCase(
        "secret_file",
        "flag.key",
        Path("flag.key"),
        "/env/secret",
        Path("/env/secret"),
        '"/toml/secret"',
        Path("/toml/secret"),
    ),
    SourceCase("insecure", False, False, "YES", True, "true", True),
    SourceCase(
        "key_prefix", "ci:flag", "ci:flag", "env.prefix", "env.prefix", '"t-1"', "t-1"
    ),
    SourceCase("key_ttl", 60.0, 60.0, "120", 120.0, "30", 30.0),
    SourceCase("min_workers", 5, 5, "4", 4, "3", 3),
    SourceCase("registration_timeout", 5.5, 5.5, "6.5", 6.5, "7.5", 7.5),
    SourceCase("local_workers", 0, 0, "8", 8, "2", 2),
    SourceCase(
        "capabilities",
        ["GPU", "linux"],
        ("gpu", "linux"),
        "Docker, arm64",
        ("docker", "arm64"),
        '["CUDA", "cuda", "x86"]',
        ("cuda", "x86"),
    ),
    SourceCase("no_os_capability", True, True, "0", False, "true", True),
    SourceCase("capability_timeout", 1.5, 1.5, "2.5", 2.5, "3.5", 3.5),
    SourceCase("log_level", "DEBUG", "DEBUG", "info", "INFO", '"error"', "ERROR"),
    SourceCase("display", "lines", "lines", "LIVE", "live", '"lines"', "lines"),
    SourceCase("heartbeat_interval", 0.5, 0.5, "0.25", 0.25, "2", 2.0),
    SourceCase("heartbeat_timeout", 30.0, 30.0, "20", 20.0, "15.5", 15.5),
    SourceCase("cancel_grace", 1.0, 1.0, "2", 2.0, "3", 3.0),
    SourceCase("max_attempts", 5, 5, "4", 4, "2", 2),
    SourceCase("prefetch", 1, 1, "2", 2, "0", 0),
]


def test_source_cases_cover_every_flag():
    names = [case.name for case in SOURCE_CASES]
    assert names == [setting.name for setting in SETTINGS if setting.flag]


@pytest.mark.parametrize("case", SOURCE_CASES, ids=lambda case: case.name)
def test_flag_beats_environment(case, tmp_path):
    setting = SETTING_BY_NAME[case.name]
    flags = {**case.other_flags, case.name: case.flag}
    environ = {setting.environment[0]: case.environment}
    pyproject = pyproject_with(tmp_path, setting, case.toml)

    config = resolve(flags, environ, pyproject)

    assert getattr(config, case.name) == case.flag_value
    assert config.source(case.name) == f"flag {setting.flag}"


@pytest.mark.parametrize("case", SOURCE_CASES, ids=lambda case: case.name)
def test_environment_beats_pyproject(case, tmp_path):
    setting = SETTING_BY_NAME[case.name]
    environ = {setting.environment[0]: case.environment}
    pyproject = pyproject_with(tmp_path, setting, case.toml)

    config = resolve(case.other_flags, environ, pyproject)

    assert getattr(config, case.name) == case.environment_value
    assert config.source(case.name) == f"environment {setting.environment[0]}"


@pytest.mark.parametrize("case", SOURCE_CASES, ids=lambda case: case.name)
def test_pyproject_beats_default(case, tmp_path):
    setting = SETTING_BY_NAME[case.name]
    pyproject = pyproject_with(tmp_path, setting, case.toml)

    config = resolve(case.other_flags, {}, pyproject)

    assert getattr(config, case.name) == case.toml_value
    assert config.source(case.name) == f"pyproject.toml {pyproject}"


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda setting: setting.name)
def test_default_when_no_source_sets_it(setting, tmp_path):
    pyproject = write_pyproject(tmp_path, "")

    config = resolve({}, {}, pyproject)

    assert getattr(config, setting.name) == setting.default
    assert config.source(setting.name) == "default"


def test_secret_from_environment():
    config = resolve({}, {"PIPELINE_ACTORS_SECRET": "hunter2"}, None)

    assert config.secret == "hunter2"
    assert config.source("secret") == "environment PIPELINE_ACTORS_SECRET"


def test_secret_flag_key_ignored():
    config = resolve({"secret": "from-flags"}, {}, None)

    assert config.secret is None
    assert config.source("secret") == "default"


ALIASES = [
    ("instance_index", "MODULARPIPELINES_INSTANCE_INDEX"),
    ("total_instances", "MODULARPIPELINES_TOTAL_INSTANCES"),
    ("run_id", "MODULARPIPELINES_RUN_ID"),
    ("role", "MODULAR_PIPELINES_INSTANCE"),
]
SOURCE_CASE_BY_NAME = {case.name: case for case in SOURCE_CASES}


def test_aliases_cover_every_alias():
    listed = [(s.name, alias) for s in SETTINGS for alias in s.environment[1:]]
    assert listed == ALIASES


@pytest.mark.parametrize(("name", "alias"), ALIASES)
def test_alias_sets_setting(name, alias):
    case = SOURCE_CASE_BY_NAME[name]

    config = resolve(case.other_flags, {alias: case.environment}, None)

    assert getattr(config, name) == case.environment_value
    assert config.source(name) == f"environment {alias}"


@pytest.mark.parametrize(("name", "alias"), ALIASES)
def test_flag_beats_alias(name, alias):
    case = SOURCE_CASE_BY_NAME[name]
    flags = {**case.other_flags, name: case.flag}

    config = resolve(flags, {alias: case.environment}, None)

    assert getattr(config, name) == case.flag_value
    assert config.source(name) == f"flag {SETTING_BY_NAME[name].flag}"


@pytest.mark.parametrize(("name", "alias"), ALIASES)
def test_alias_beats_pyproject(name, alias, tmp_path):
    case = SOURCE_CASE_BY_NAME[name]
    pyproject = pyproject_with(tmp_path, SETTING_BY_NAME[name], case.toml)

    config = resolve(case.other_flags, {alias: case.environment}, pyproject)

    assert getattr(config, name) == case.environment_value
    assert config.source(name) == f"environment {alias}"


@pytest.mark.parametrize(
    ("name", "primary_text", "alias_text", "expected"),
    [
        ("instance_index", "2", "02", 2),
        ("total_instances", "3", "+3", 3),
        ("run_id", "run-7", "run-7", "run-7"),
        ("role", "worker", "WORKER", "worker"),
    ],
)
def test_agreeing_aliases_accepted(name, primary_text, alias_text, expected):
    setting = SETTING_BY_NAME[name]
    primary, alias = setting.environment
    environ = {primary: primary_text, alias: alias_text}

    config = resolve(SOURCE_CASE_BY_NAME[name].other_flags, environ, None)

    assert getattr(config, name) == expected
    assert config.source(name) == f"environment {primary}"


@pytest.mark.parametrize(
    ("name", "primary_text", "alias_text"),
    [
        ("instance_index", "1", "2"),
        ("total_instances", "3", "4"),
        ("run_id", "run-a", "run-b"),
        ("role", "master", "worker"),
    ],
)
def test_disagreeing_aliases_rejected(name, primary_text, alias_text):
    setting = SETTING_BY_NAME[name]
    primary, alias = setting.environment
    environ = {primary: primary_text, alias: alias_text}

    message = config_error(SOURCE_CASE_BY_NAME[name].other_flags, environ)

    assert primary in message
    assert alias in message
    assert repr(primary_text) in message
    assert repr(alias_text) in message
    assert setting.description in message


@pytest.mark.parametrize(("name", "alias"), ALIASES)
def test_invalid_alias_named(name, alias):
    primary = SETTING_BY_NAME[name].environment[0]
    environ = {primary: SOURCE_CASE_BY_NAME[name].environment, alias: "not valid"}

    message = config_error(SOURCE_CASE_BY_NAME[name].other_flags, environ)

    assert f"from environment {alias}:" in message
    assert "'not valid'" in message


# Invalid raw values of each setting: environment text, TOML literal, flag value.
# None marks a source from which no value is invalid.
INVALID_CASES = [
    ("instance_index", "abc", "-1", -1),
    ("total_instances", "0", "1.5", 0),
    ("run_id", "has space", '"a/b"', "x" * 129),
    ("role", "boss", '"boss"', "boss"),
    ("redis_url", "http://host:6379", '"localhost:6379"', "redis://host:99999"),
    ("secret_file", None, "3", 3),
    ("insecure", "maybe", "2", "maybe"),
    ("key_prefix", "a b", '""', "a/b"),
    ("key_ttl", "0", "-5", float("nan")),
    ("min_workers", "-1", "true", -1),
    ("registration_timeout", "soon", "0", float("inf")),
    ("local_workers", "-2", '"four"', -1),
    ("capabilities", "linux,,gpu", "[1]", [""]),
    ("no_os_capability", "2", '"sometimes"', "2"),
    ("capability_timeout", "inf", "false", 0.0),
    ("log_level", "verbose", '"loud"', "VERBOSE"),
    ("display", "fancy", "1", "fancy"),
    ("heartbeat_interval", "0", "0", 0.0),
    ("heartbeat_timeout", "-1", "[]", -1.0),
    ("cancel_grace", "nan", '"later"', 0.0),
    ("max_attempts", "0", "0", 0),
    ("prefetch", "-1", "-1", -1),
]


def test_invalid_cases_cover_every_flag():
    names = [name for name, *_ in INVALID_CASES]
    assert names == [setting.name for setting in SETTINGS if setting.flag]


@pytest.mark.parametrize(
    ("name", "text"),
    [(name, text) for name, text, _, _ in INVALID_CASES if text is not None],
)
def test_invalid_environment_value_named(name, text):
    setting = SETTING_BY_NAME[name]
    variable = setting.environment[0]

    message = config_error(environ={variable: text})

    assert message.startswith(f"invalid {setting.description} {text!r} ")
    assert f"from environment {variable}: expected " in message


@pytest.mark.parametrize(
    ("name", "literal"), [(name, literal) for name, _, literal, _ in INVALID_CASES]
)
def test_invalid_pyproject_value_named(name, literal, tmp_path):
    setting = SETTING_BY_NAME[name]
    pyproject = pyproject_with(tmp_path, setting, literal)

    message = config_error(pyproject=pyproject)

    assert message.startswith(f"invalid {setting.description} ")
    assert repr(toml_value(literal)) in message
    assert f"from pyproject.toml {pyproject}: expected " in message


@pytest.mark.parametrize(
    ("name", "value"), [(name, value) for name, _, _, value in INVALID_CASES]
)
def test_invalid_flag_value_named(name, value):
    setting = SETTING_BY_NAME[name]

    message = config_error(flags={name: value})

    assert message.startswith(f"invalid {setting.description} {value!r} ")
    assert f"from flag {setting.flag}: expected " in message


def test_invalid_value_message_in_full():
    environ = {"PIPELINE_ACTORS_INSTANCE_INDEX": "abc"}

    message = config_error(environ=environ)

    assert message == (
        "invalid instance index 'abc' from environment "
        "PIPELINE_ACTORS_INSTANCE_INDEX: expected a whole number of 0 or more"
    )


def test_config_error_exits_as_invalid_input():
    assert issubclass(ConfigError, InvalidPipelineError)


@pytest.mark.parametrize("text", ["1", "true", "TRUE", "Yes", " yes "])
def test_boolean_true_words(text):
    config = resolve({}, {"PIPELINE_ACTORS_INSECURE": text}, None)
    assert config.insecure is True


@pytest.mark.parametrize("text", ["0", "false", "False", "NO"])
def test_boolean_false_words(text):
    config = resolve({}, {"PIPELINE_ACTORS_INSECURE": text}, None)
    assert config.insecure is False


@pytest.mark.parametrize(
    ("literal", "expected"),
    [("true", True), ("false", False), ("1", True), ("0", False), ('"no"', False)],
)
def test_boolean_from_toml(literal, expected, tmp_path):
    pyproject = write_pyproject(tmp_path, f"no-os-capability = {literal}\n")
    config = resolve({}, {}, pyproject)
    assert config.no_os_capability is expected


@pytest.mark.parametrize("text", ["1.5", "1e3", "1_000", "\u0663", "two", "0x10"])
def test_whole_number_rejects_other_numbers(text):
    message = config_error(environ={"PIPELINE_ACTORS_MIN_WORKERS": text})
    assert "expected a whole number of 0 or more" in message


def test_whole_number_allows_spaces():
    config = resolve({}, {"PIPELINE_ACTORS_MIN_WORKERS": " 2 "}, None)
    assert config.min_workers == 2


def test_whole_number_rejects_toml_float(tmp_path):
    pyproject = write_pyproject(tmp_path, "max-attempts = 2.0\n")
    message = config_error(pyproject=pyproject)
    assert message.startswith("invalid maximum attempts 2.0 ")


def test_seconds_from_toml_integer(tmp_path):
    pyproject = write_pyproject(tmp_path, "key-ttl = 5\n")

    config = resolve({}, {}, pyproject)

    assert config.key_ttl == 5.0
    assert isinstance(config.key_ttl, float)


def test_seconds_accept_exponent():
    config = resolve({}, {"PIPELINE_ACTORS_KEY_TTL": "1e2"}, None)
    assert config.key_ttl == 100.0


@pytest.mark.parametrize("text", ["0", "-0.5", "nan", "inf", "-inf", "1e999", "soon"])
def test_seconds_rejects_text(text):
    message = config_error(environ={"PIPELINE_ACTORS_CANCEL_GRACE": text})
    assert "expected a number of seconds more than 0" in message


def test_seconds_rejects_huge_toml_integer(tmp_path):
    pyproject = write_pyproject(tmp_path, f"cancel-grace = {10**400}\n")
    message = config_error(pyproject=pyproject)
    assert "expected a number of seconds more than 0" in message


@pytest.mark.parametrize("level", LEVELS)
def test_log_level_any_case(level):
    config = resolve({}, {"PIPELINE_ACTORS_LOG_LEVEL": level.lower()}, None)
    assert config.log_level == level


def test_log_level_error_lists_levels():
    message = config_error(environ={"PIPELINE_ACTORS_LOG_LEVEL": "verbose"})
    assert "expected one of " + ", ".join(LEVELS) in message


def test_capabilities_normalized():
    environ = {"PIPELINE_ACTORS_CAPABILITIES": "GPU, linux,gpu , Docker"}
    config = resolve({}, environ, None)
    assert config.capabilities == ("gpu", "linux", "docker")


def test_capability_flags_split_at_commas():
    config = resolve({"capabilities": ["linux,GPU", "docker", "gpu"]}, {}, None)
    assert config.capabilities == ("linux", "gpu", "docker")


def test_capabilities_from_toml_string(tmp_path):
    pyproject = write_pyproject(tmp_path, 'capabilities = "Linux, arm64"\n')
    config = resolve({}, {}, pyproject)
    assert config.capabilities == ("linux", "arm64")


def test_capabilities_empty_toml_list(tmp_path):
    pyproject = write_pyproject(tmp_path, "capabilities = []\n")

    config = resolve({}, {"PIPELINE_ACTORS_LOCAL_WORKERS": "1"}, pyproject)

    assert config.capabilities == ()
    assert config.source("capabilities") == f"pyproject.toml {pyproject}"


@pytest.mark.parametrize("text", [",", "linux,", " , gpu"])
def test_capabilities_reject_empty_names(text):
    message = config_error(environ={"PIPELINE_ACTORS_CAPABILITIES": text})
    assert "expected non-empty names" in message


@pytest.mark.parametrize(
    "url",
    ["redis://localhost:6379/0", "rediss://user:pw@host:6380", "unix:///run/r.sock"],
)
def test_redis_url_schemes_accepted(url):
    config = resolve({}, {"REDIS_URL": url}, None)
    assert config.redis_url == url


@pytest.mark.parametrize("url", ["http://host", "localhost:6379", "redis:/host"])
def test_redis_url_schemes_rejected(url):
    message = config_error(environ={"REDIS_URL": url})
    assert "expected a URL starting with redis://, rediss:// or unix://" in message


@pytest.mark.parametrize("url", ["redis://host:99999/0", "redis://host:port/0"])
def test_redis_url_bad_port_rejected(url):
    message = config_error(environ={"REDIS_URL": url})
    assert "expected a port number from 0 to 65535" in message


@pytest.mark.parametrize(
    "url",
    ["http://user:hunter2@host", "user:hunter2@host:6379", "redis://u:hunter2@h:x"],
)
def test_invalid_redis_url_password_masked(url):
    message = config_error(environ={"REDIS_URL": url})

    assert "hunter2" not in message
    assert "***" in message


def test_key_prefix_allows_colon():
    config = resolve({}, {"PIPELINE_ACTORS_KEY_PREFIX": "ci:pipeline_actors"}, None)
    assert config.key_prefix == "ci:pipeline_actors"


@pytest.mark.parametrize("text", ["auto", "Lines", "LIVE"])
def test_display_any_case(text):
    config = resolve({}, {"PIPELINE_ACTORS_DISPLAY": text}, None)
    assert config.display == text.lower()


RUN_ID_ALPHABET = string.ascii_letters + string.digits + "._-"


@given(st.text(alphabet=RUN_ID_ALPHABET, min_size=1, max_size=128))
def test_run_id_valid_text_returned(text):
    assert validate_run_id(text) == text


@given(
    st.text(min_size=1, max_size=130).filter(
        lambda text: any(character not in RUN_ID_ALPHABET for character in text)
    )
)
def test_run_id_other_characters_rejected(text):
    with pytest.raises(ConfigError):
        validate_run_id(text)


@pytest.mark.parametrize("text", ["", "x" * 129, "run\n", "run id", "r\u00e9sum\u00e9"])
def test_run_id_invalid_examples(text):
    with pytest.raises(ConfigError) as info:
        validate_run_id(text)
    assert str(info.value).startswith(f"invalid run id {text!r}: expected 1 to 128")


def test_run_id_maximum_length():
    assert validate_run_id("x" * 128) == "x" * 128


def test_generated_run_id_valid():
    run_id = new_run_id()
    assert validate_run_id(run_id) == run_id


def test_describe_lists_every_setting_once():
    config = resolve({}, {}, None)

    names = [line.split(" ")[0] for line in config.describe()]

    assert names == [setting.name for setting in SETTINGS]


def test_describe_shows_value_and_source():
    config = resolve({}, {"PIPELINE_ACTORS_RUN_ID": "nightly-7"}, None)

    line = describe_line(config, "run_id")

    assert "= nightly-7 " in line
    assert line.endswith("(environment PIPELINE_ACTORS_RUN_ID)")


def test_describe_shows_pyproject_source(tmp_path):
    pyproject = write_pyproject(tmp_path, "max-attempts = 5\n")
    config = resolve({}, {}, pyproject)

    line = describe_line(config, "max_attempts")

    assert "= 5 " in line
    assert line.endswith(f"(pyproject.toml {pyproject})")


def test_describe_masks_secret():
    config = resolve({}, {"PIPELINE_ACTORS_SECRET": "hunter2"}, None)

    text = "\n".join(config.describe())

    assert "hunter2" not in text
    assert "= ***  (environment PIPELINE_ACTORS_SECRET)" in describe_line(
        config, "secret"
    )


def test_describe_unset_secret_not_masked():
    config = resolve({}, {}, None)
    assert "= not set  (default)" in describe_line(config, "secret")


def test_describe_masks_redis_password():
    url = "redis://user:hunter2@host:6379/0"
    config = resolve({"redis_url": url}, {}, None)

    text = "\n".join(config.describe())

    assert "hunter2" not in text
    assert "= redis://user:***@host:6379/0  (flag --redis)" in describe_line(
        config, "redis_url"
    )


def test_masking_keeps_real_redis_url():
    url = "redis://user:hunter2@host:6379/0"
    config = resolve({"redis_url": url}, {}, None)
    assert config.redis_url == url


def test_describe_unset_meanings():
    config = resolve({}, {}, None)

    assert "= the CPU count  (default)" in describe_line(config, "local_workers")
    assert "= a random id  (default)" in describe_line(config, "run_id")


def test_describe_lists_and_booleans():
    flags = {"capabilities": ["gpu", "docker"], "insecure": True}
    config = resolve(flags, {}, None)

    assert "= gpu, docker  (flag --capability)" in describe_line(config, "capabilities")
    assert "= true  (flag --insecure)" in describe_line(config, "insecure")
    assert "= none  (default)" in describe_line(resolve({}, {}, None), "capabilities")


def test_describe_shows_derived_role():
    flags = {"instance_index": 2, "total_instances": 3}
    config = resolve(flags, {}, None)

    line = describe_line(config, "role")

    assert "= worker  (derived from instance index 2)" in line


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://user:pw@host:6379/0", "redis://user:***@host:6379/0"),
        ("redis://:pw@host", "redis://:***@host"),
        ("rediss://user:p@ss@host/1", "rediss://user:***@host/1"),
        ("unix://:pw@/run/redis.sock?db=0", "unix://:***@/run/redis.sock?db=0"),
        ("redis://host/0?password=pw&db=1", "redis://host/0?password=***&db=1"),
        ("redis://user@host:6379", "redis://user@host:6379"),
        ("redis://host:6379/0", "redis://host:6379/0"),
        ("user:pw@host:6379", "***@host:6379"),
        ("redis://user:pw@[::1", "redis://***"),
        ("plain text", "plain text"),
    ],
)
def test_mask_url_password(url, expected):
    assert mask_url_password(url) == expected


def test_find_pyproject_walks_up(tmp_path):
    pyproject = write_pyproject(tmp_path / "project", "")
    start = tmp_path / "project" / "pipelines" / "ci"
    start.mkdir(parents=True)

    assert find_pyproject(start) == pyproject


def test_find_pyproject_nearest_wins(tmp_path):
    write_pyproject(tmp_path / "outer", "")
    inner = write_pyproject(tmp_path / "outer" / "inner", "")

    assert find_pyproject(tmp_path / "outer" / "inner") == inner


def test_find_pyproject_from_pipeline_file(tmp_path):
    pyproject = write_pyproject(tmp_path, "")
    pipeline = tmp_path / "pipeline.py"
    pipeline.write_text("")

    assert find_pyproject(pipeline) == pyproject


def test_find_pyproject_skips_folder_named_pyproject(tmp_path):
    pyproject = write_pyproject(tmp_path, "")
    start = tmp_path / "sub"
    (start / "pyproject.toml").mkdir(parents=True)

    assert find_pyproject(start) == pyproject


def test_find_pyproject_relative_start(tmp_path, monkeypatch):
    pyproject = write_pyproject(tmp_path, "")
    (tmp_path / "sub" / "dir").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "sub")

    found = find_pyproject(Path("dir"))

    assert found == pyproject
    assert found.is_absolute()


def test_find_pyproject_none_found(tmp_path):
    start = tmp_path / "empty"
    start.mkdir()
    if any((folder / "pyproject.toml").is_file() for folder in start.parents):
        pytest.skip("a folder above the temporary folder has a pyproject.toml")

    assert find_pyproject(start) is None


def test_first_pyproject_without_table_wins(tmp_path):
    write_pyproject(tmp_path, "max-attempts = 7\n")
    inner = tmp_path / "inner" / "pyproject.toml"
    inner.parent.mkdir()
    inner.write_text('[project]\nname = "inner"\n')

    found = find_pyproject(inner.parent)
    config = resolve({}, {}, found)

    assert found == inner
    assert config.max_attempts == 3
    assert config.source("max_attempts") == "default"


def test_unknown_pyproject_key_rejected(tmp_path):
    pyproject = write_pyproject(tmp_path, "workers = 3\n")

    message = config_error(pyproject=pyproject)

    assert "unknown key 'workers'" in message
    assert str(pyproject) in message
    for setting in SETTINGS:
        if setting.pyproject_key:
            assert setting.pyproject_key in message


def test_unknown_pyproject_key_suggests_match(tmp_path):
    pyproject = write_pyproject(tmp_path, "instance_index = 1\n")

    message = config_error(pyproject=pyproject)

    assert "'instance_index' (did you mean 'instance-index'?)" in message


def test_unknown_pyproject_keys_all_listed(tmp_path):
    pyproject = write_pyproject(tmp_path, "alpha = 1\nbeta = 2\n")

    message = config_error(pyproject=pyproject)

    assert message.startswith("unknown keys 'alpha', 'beta' in")


def test_unknown_pyproject_key_despite_flags(tmp_path):
    pyproject = write_pyproject(tmp_path, "workers = 3\n")
    message = config_error(flags={"local_workers": 3}, pyproject=pyproject)
    assert "unknown key 'workers'" in message


def test_secret_in_pyproject_rejected(tmp_path):
    pyproject = write_pyproject(tmp_path, 'secret = "hunter2"\n')

    message = config_error(pyproject=pyproject)

    assert "hunter2" not in message
    assert "cannot be set in [tool.pipeline_actors]" in message
    assert "PIPELINE_ACTORS_SECRET" in message
    assert "secret-file" in message


def test_pyproject_table_not_a_table(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text("[tool]\npipeline_actors = 3\n")

    message = config_error(pyproject=pyproject)

    assert f"[tool.pipeline_actors] in {pyproject} is not a table" in message


def test_pyproject_invalid_toml(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text("[tool.pipeline_actors\n")

    message = config_error(pyproject=pyproject)

    assert message.startswith(f"invalid TOML in {pyproject}: ")


def test_pyproject_missing_file(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    message = config_error(pyproject=pyproject)
    assert message.startswith(f"cannot read {pyproject}: ")


def test_pyproject_other_tables_ignored(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "x"\n\n[tool.ruff]\nline-length = 88\n')

    config = resolve({}, {}, pyproject)

    assert config.source("max_attempts") == "default"


def test_lower_sources_not_parsed(tmp_path):
    pyproject = write_pyproject(tmp_path, 'instance-index = "abc"\n')
    environ = {"PIPELINE_ACTORS_INSTANCE_INDEX": "abc"}

    config = resolve({"instance_index": 0}, environ, pyproject)

    assert config.instance_index == 0


def test_relative_secret_file_from_pyproject(tmp_path):
    pyproject = write_pyproject(tmp_path / "project", 'secret-file = "keys/run.key"\n')

    config = resolve({}, {}, pyproject)

    assert config.secret_file == tmp_path / "project" / "keys" / "run.key"


def test_relative_secret_file_from_flag_kept():
    config = resolve({"secret_file": "keys/run.key"}, {}, None)
    assert config.secret_file == Path("keys/run.key")


def test_secret_file_expands_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    config = resolve({"secret_file": "~/run.key"}, {}, None)
    assert config.secret_file == tmp_path / "run.key"


def test_role_derived_master_for_index_zero():
    config = resolve({}, {}, None)

    assert config.role is None
    assert config.effective_role.value == "master"
    assert config.effective_role.source == "derived from instance index 0"


def test_role_derived_worker_for_other_index():
    config = resolve({"instance_index": 2, "total_instances": 3}, {}, None)

    assert config.effective_role.value == "worker"
    assert config.effective_role.source == "derived from instance index 2"


def test_explicit_role_beats_derivation():
    environ = {"PIPELINE_ACTORS_ROLE": "Master"}
    config = resolve({"instance_index": 2, "total_instances": 3}, environ, None)

    assert config.effective_role.value == "master"
    assert config.effective_role.source == "environment PIPELINE_ACTORS_ROLE"


def test_instance_index_below_total():
    message = config_error(
        flags={"instance_index": 2}, environ={"PIPELINE_ACTORS_TOTAL_INSTANCES": "2"}
    )

    assert message.startswith("instance index 2 from flag --instance-index must be")
    assert (
        "total instances 2 from environment PIPELINE_ACTORS_TOTAL_INSTANCES" in message
    )


def test_instance_index_without_total_is_fine():
    config = resolve({"instance_index": 5}, {}, None)

    assert config.instance_index == 5
    assert config.effective_role.value == "worker"


def test_heartbeat_timeout_above_interval():
    environ = {"PIPELINE_ACTORS_HEARTBEAT_INTERVAL": "10"}

    message = config_error(environ=environ)

    assert "heartbeat timeout 10.0 s from default must be more than" in message
    assert (
        "interval 10.0 s from environment PIPELINE_ACTORS_HEARTBEAT_INTERVAL" in message
    )


def test_flag_none_means_not_given():
    flags = {"run_id": None}
    config = resolve(flags, {"PIPELINE_ACTORS_RUN_ID": "from-env"}, None)
    assert config.source("run_id") == "environment PIPELINE_ACTORS_RUN_ID"


def test_flag_false_counts_as_given():
    config = resolve({"insecure": False}, {"PIPELINE_ACTORS_INSECURE": "1"}, None)

    assert config.insecure is False
    assert config.source("insecure") == "flag --insecure"


def test_flags_of_other_names_ignored():
    flags = {"pipeline": "pipeline.py", "print_config": True}
    config = resolve(flags, {}, None)
    assert config.source("run_id") == "default"


def test_flag_strings_parsed():
    config = resolve({"instance_index": "2", "total_instances": "3"}, {}, None)

    assert config.instance_index == 2
    assert config.total_instances == 3


def test_empty_environment_value_unset():
    environ = {"PIPELINE_ACTORS_RUN_ID": "", "MODULARPIPELINES_RUN_ID": "ci-9"}

    config = resolve({}, environ, None)

    assert config.run_id == "ci-9"
    assert config.source("run_id") == "environment MODULARPIPELINES_RUN_ID"


def test_config_pickles():
    config = resolve({"redis_url": "redis://host:6379/0"}, {}, None)

    copy = pickle.loads(pickle.dumps(config))

    assert copy == config
    assert copy.redis_url == "redis://host:6379/0"


def test_unknown_attribute_raises():
    config = resolve({}, {}, None)
    with pytest.raises(AttributeError):
        config.no_such_setting  # noqa: B018


def test_unknown_entry_raises():
    config = resolve({}, {}, None)
    with pytest.raises(KeyError):
        config.entry("no_such_setting")


def secret_config(tmp_path: Path, content: bytes) -> object:
    path = tmp_path / "run.key"
    path.write_bytes(content)
    return resolve({"secret_file": str(path)}, {}, None)


def test_load_secret_none():
    assert load_secret(resolve({}, {}, None)) is None


def test_load_secret_from_environment():
    config = resolve({}, {"PIPELINE_ACTORS_SECRET": "p\u00e4ss"}, None)
    assert load_secret(config) == "p\u00e4ss".encode()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"abc\n", b"abc"),
        (b"abc\r\n", b"abc"),
        (b"abc\n\n", b"abc\n"),
        (b"abc", b"abc"),
        (b"\x00\xff\n", b"\x00\xff"),
    ],
)
def test_load_secret_file_strips_one_newline(content, expected, tmp_path):
    assert load_secret(secret_config(tmp_path, content)) == expected


@pytest.mark.parametrize("content", [b"", b"\n", b"\r\n"])
def test_load_secret_empty_file_rejected(content, tmp_path):
    config = secret_config(tmp_path, content)

    with pytest.raises(ConfigError) as info:
        load_secret(config)

    assert str(info.value) == (
        f"secret file {tmp_path / 'run.key'} from flag --secret-file is empty"
    )


def test_load_secret_missing_file(tmp_path):
    path = tmp_path / "missing.key"
    config = resolve({}, {"PIPELINE_ACTORS_SECRET_FILE": str(path)}, None)

    with pytest.raises(ConfigError) as info:
        load_secret(config)

    assert str(info.value) == (
        f"secret file {path} from environment PIPELINE_ACTORS_SECRET_FILE not found"
    )


def test_load_secret_folder_rejected(tmp_path):
    config = resolve({"secret_file": str(tmp_path)}, {}, None)

    with pytest.raises(ConfigError) as info:
        load_secret(config)

    assert str(info.value).startswith(f"cannot read secret file {tmp_path} ")


def test_load_secret_both_rejected(tmp_path):
    config = resolve(
        {"secret_file": str(tmp_path / "run.key")},
        {"PIPELINE_ACTORS_SECRET": "hunter2"},
        None,
    )

    with pytest.raises(ConfigError) as info:
        load_secret(config)

    message = str(info.value)
    assert "environment PIPELINE_ACTORS_SECRET" in message
    assert "flag --secret-file" in message
    assert "hunter2" not in message


def test_load_secret_file_relative_to_pyproject(tmp_path):
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "run.key").write_bytes(b"s3cret\n")
    pyproject = write_pyproject(tmp_path, 'secret-file = "keys/run.key"\n')

    config = resolve({}, {}, pyproject)

    assert load_secret(config) == b"s3cret"
