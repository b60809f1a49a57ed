"""bridge.yaml: interpolation, validation, error messages, masking, and the CLI around it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import Field, SecretStr

from livebridge import Source, SourceSettings
from livebridge.config import Config, load_config, load_store_config, parse_config
from livebridge.exceptions import ConfigError
from livebridge.plugins import collect_source_types, get_plugin_manager
from livebridge.source import parse_duration

ROOT = Path(__file__).resolve().parent.parent
TYPES = collect_source_types(get_plugin_manager())


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bridge.yaml"
    path.write_text(text)
    return path


def problems(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), TYPES, env=env or {})
    return str(info.value)


def test_shipped_config_loads_with_an_empty_environment() -> None:
    config = load_config(ROOT / "bridge.yaml", TYPES, env={})
    assert config.livedesk.emulated
    assert config.server.port == 8080
    assert config.store.url == f"sqlite:///{ROOT / 'var' / 'livebridge.db'}"  # beside the file
    assert config.smtp is None
    assert [s.type for s in config.sources] == ["form"]


def test_shipped_config_takes_the_documented_environment() -> None:
    env = {"LIVEDESK_BASE_URL": "https://ld.example", "LIVEDESK_API_KEY": "k123",
           "LIVEDESK_API_SECRET": "s3cr3t-value", "LIVEDESK_INBOX_ID": "407",
           "LIVEBRIDGE_HOST": "0.0.0.0", "LIVEBRIDGE_PORT": "9000",
           "LIVEBRIDGE_STORE": "redis://127.0.0.1:6379/3"}
    config = load_config(ROOT / "bridge.yaml", TYPES, env=env)
    assert not config.livedesk.emulated
    assert config.livedesk.inbox_id == 407
    assert config.server.host == "0.0.0.0" and config.server.port == 9000
    assert config.store.url == "redis://127.0.0.1:6379/3"
    assert "s3cr3t-value" in config.secrets()
    assert "s3cr3t-value" not in repr(config.masked())


def test_interpolation_defaults_and_escapes(tmp_path: Path) -> None:
    path = write(tmp_path, "server:\n  host: ${H:-localhost}\n  port: ${P}\n"
                           "logging:\n  level: $${notavar}\n")
    with pytest.raises(ConfigError, match=r"logging\.level"):
        load_config(path, TYPES, env={"P": "81"})
    config = load_config(write(tmp_path, "server:\n  host: ${H:-localhost}\n  port: ${P}\n"),
                         TYPES, env={"P": "81"})
    assert (config.server.host, config.server.port) == ("localhost", 81)


def test_unset_variable_names_the_key_and_the_fix(tmp_path: Path) -> None:
    text = problems(tmp_path, "server:\n  port: ${NOPE}\n")
    assert "bridge.yaml" in text
    assert "server.port: environment variable NOPE is not set" in text
    assert "${NOPE:-value}" in text


def test_unknown_keys_are_rejected_with_their_path(tmp_path: Path) -> None:
    text = problems(tmp_path, "server:\n  prot: 1\nsources:\n  - type: form\n"
                              "  - type: form\n    name: other\n    redirect: /x\n")
    assert "server.prot: unknown key" in text
    assert "sources[1].redirect: unknown key" in text


def test_a_misspelled_key_gets_a_suggestion(tmp_path: Path) -> None:
    text = problems(tmp_path, "srever:\n  port: 1\nsmtp:\n  host: h\n  sender: a@b\n"
                              "  passwrd: x\nsources:\n  - type: slack\n    singing_secret: s\n"
                              "    bot_token: xoxb-1\n  - type: form\n    zzzzz: 1\n")
    assert "srever: unknown key; did you mean server?" in text
    assert "smtp.passwrd: unknown key; did you mean password?" in text
    assert "sources[0].singing_secret: unknown key; did you mean signing_secret?" in text
    assert "sources[1].zzzzz: unknown key (check the spelling, or remove it)" in text


def test_a_bad_value_from_the_environment_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(ROOT / "bridge.yaml", TYPES,
                    env={"LIVEBRIDGE_PORT": "80a", "SLACK_ENABLED": "true", "SLACK_MODE": "event",
                         "SLACK_SIGNING_SECRET": "s", "SLACK_BOT_TOKEN": "xoxb-1"})
    text = str(info.value)
    assert "server.port: LIVEBRIDGE_PORT='80a': Input should be a valid integer" in text
    assert "sources[1].mode: SLACK_MODE='event': Input should be 'events' or 'socket'" in text
    text = problems(tmp_path, "server:\n  port: ${H}${P}\n  max_body_bytes: ${NOPE:-8a}\n",
                    env={"H": "8", "P": "a"})
    assert "server.port: '8a' from H, P: Input should be a valid integer" in text
    assert "server.max_body_bytes: Input should be a valid integer" in text  # the file's default


class VaultSettings(SourceSettings):
    """A throwaway source type with a secret that has a rule."""

    token: SecretStr = Field(min_length=16)


class VaultSource(Source):
    type_name = "vault"
    Settings = VaultSettings


def test_a_bad_secret_from_the_environment_is_not_shown(tmp_path: Path) -> None:
    path = write(tmp_path, "sources:\n  - type: vault\n    token: ${VAULT_TOKEN}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, {**TYPES, "vault": VaultSource}, env={"VAULT_TOKEN": "short-secret"})
    text = str(info.value)
    assert "sources[0].token: VAULT_TOKEN=***: Value should have at least 16 items" in text
    assert "short-secret" not in text


def test_store_only_loading_skips_sources_and_other_sections(tmp_path: Path) -> None:
    path = write(tmp_path, "server:\n  port: eighty\nstore:\n  url: ${DB:-sqlite:///d/x.db}\n"
                           "sources:\n  - type: slack\n  - type: nope\n")
    assert load_store_config(path, env={}).url == f"sqlite:///{tmp_path / 'd' / 'x.db'}"
    assert load_store_config(path, env={"DB": "redis://h/1"}).url == "redis://h/1"
    with pytest.raises(ConfigError, match=r"store\.url: environment variable DB2 is not set"):
        load_store_config(write(tmp_path, "store:\n  url: ${DB2}\n"), env={})
    assert load_store_config(write(tmp_path, ""), env={}).url.endswith("/var/livebridge.db")


def test_unknown_source_type_lists_the_available_ones(tmp_path: Path) -> None:
    text = problems(tmp_path, "sources:\n  - type: telegram\n")
    assert "sources[0].type: unknown source type 'telegram'" in text
    assert "available: " in text and "form" in text


def test_duplicate_source_names(tmp_path: Path) -> None:
    text = problems(tmp_path, "sources:\n  - type: form\n  - type: form\n    path: /f2\n")
    assert "sources[1].name: 'form' is already used by sources[0]" in text


def test_livedesk_url_needs_credentials(tmp_path: Path) -> None:
    text = problems(tmp_path, "livedesk:\n  base_url: https://x\n")
    assert "livedesk: base_url is set, so api_key, api_secret, inbox_id must be set" in text


@pytest.mark.parametrize(("raw", "seconds"), [("250ms", 0.25), ("5m", 300), ("7d", 604800),
                                              (12, 12), ("1.5h", 5400)])
def test_durations(raw: object, seconds: float) -> None:
    assert parse_duration(raw) == seconds


def test_bad_values(tmp_path: Path) -> None:
    text = problems(tmp_path, "delivery:\n  max_age: soon\nstore:\n  url: postgres://u:pw@x\n")
    assert "delivery.max_age: expected a duration" in text
    assert ("store: url: unknown scheme 'postgres'; use sqlite:///path/file.db or "
            "redis://host:port/db") in text
    assert "pw" not in text  # a password in a URL of the wrong scheme is not shown


def test_not_yaml_and_missing_file(tmp_path: Path) -> None:
    assert "not valid YAML" in problems(tmp_path, "server: [\n")
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_config(tmp_path / "missing.yaml", TYPES)


def test_parse_config_defaults() -> None:
    config = parse_config({}, TYPES, env={})
    assert isinstance(config, Config) and config.sources == []


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT
            ) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEDESK_", "SMTP_"))}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "livebridge", *args], capture_output=True,
                          text=True, env=full_env, cwd=cwd, timeout=60, check=False)


def test_check_prints_the_effective_config_with_secrets_masked() -> None:
    env = {"LIVEDESK_BASE_URL": "https://ld.example", "LIVEDESK_API_KEY": "key-visible-no",
           "LIVEDESK_API_SECRET": "very-secret-value", "LIVEDESK_INBOX_ID": "9",
           "SMTP_HOST": "smtp.example", "SMTP_PASSWORD": "smtp-pass-word"}
    result = run_cli("check", "--config", str(ROOT / "bridge.yaml"), env=env)
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    for secret in ("key-visible-no", "very-secret-value", "smtp-pass-word"):
        assert secret not in out
    assert "api_secret: '***'" in result.stdout
    assert "inbox_id: 9" in result.stdout


def test_check_on_a_broken_config_exits_non_zero_naming_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, "sources:\n  - type: form\n    redirect: /thanks\n")
    result = run_cli("check", "--config", str(path))
    assert result.returncode == 1
    assert "sources[0].redirect: unknown key" in result.stderr
    assert str(path) in result.stderr


def test_check_makes_the_checks_run_makes_without_opening_anything(tmp_path: Path) -> None:
    sources = "sources:\n  - type: form\n    path: /f\n  - type: form\n    name: other\n"
    path = write(tmp_path, f"store:\n  url: sqlite:///var/x.db\n{sources}")
    assert run_cli("check", "--config", str(path)).returncode == 0
    assert not (tmp_path / "var").exists()  # the store is not created
    result = run_cli("check", "--config", str(write(tmp_path, f"{sources}    path: /f\n")))
    assert result.returncode == 1
    assert "'other' and 'form' both serve GET /f; give one of them another path" in result.stderr
    assert "OK" not in result.stdout


def test_run_refuses_to_start_on_a_broken_config(tmp_path: Path) -> None:
    path = write(tmp_path, "server:\n  port: eighty\n")
    result = run_cli("run", "--config", str(path))
    assert result.returncode == 1
    assert "server.port" in result.stderr


def test_plugins_lists_types_and_hooks() -> None:
    result = run_cli("plugins")
    assert result.returncode == 0, result.stderr
    assert "form" in result.stdout and "livebridge_source_types" in result.stdout


def test_a_switched_off_source_needs_no_secrets_but_a_known_type(tmp_path: Path) -> None:
    config = load_config(ROOT / "bridge.yaml", TYPES, env={"SLACK_ENABLED": "false"})
    assert [s.type for s in config.sources] == ["form"]
    text = problems(tmp_path, "sources:\n  - type: nope\n    enabled: false\n"
                              "  - type: form\n    enabled: maybe\n")
    assert "sources[0].type: unknown source type 'nope'" in text
    assert "sources[1].enabled: expected true or false" in text


def test_slack_switched_on_without_secrets_refuses_to_start() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(ROOT / "bridge.yaml", TYPES, env={"SLACK_ENABLED": "true"})
    assert "sources[1].signing_secret" in str(info.value)


def test_a_switched_off_source_may_name_unset_variables(tmp_path: Path) -> None:
    path = write(tmp_path, "sources:\n  - type: form\n  - type: slack\n    enabled: false\n"
                           "    signing_secret: ${NOT_SET_ANYWHERE}\n")
    config = load_config(path, TYPES, env={})
    assert [s.type for s in config.sources] == ["form"]


def test_redis_password_is_masked_everywhere(tmp_path: Path) -> None:
    url = "redis://:hunter2pass@redis.internal:6379/0"
    config = load_config(write(tmp_path, f"store:\n  url: {url}\n"), TYPES, env={})
    assert config.store.url == url
    assert "hunter2pass" in config.secrets()
    assert config.masked()["store"]["url"] == "redis://:***@redis.internal:6379/0"


@pytest.mark.parametrize(("url", "shown", "secret"), [
    ("redis://h:6379/0?password=hunter2pass&prefix=lb:",
     "redis://h:6379/0?password=***&prefix=lb:", "hunter2pass"),
    ("redis://app:hunter2pass@h/0?db=1", "redis://app:***@h/0?db=1", "hunter2pass"),
    ("rediss://h/0?ssl_password=key%2Bpass&ssl_cert_reqs=none",
     "rediss://h/0?ssl_password=***&ssl_cert_reqs=none", "key+pass"),
    ("redis://h/0?socket_timeout=3&token=abc123&username=app",
     "redis://h/0?socket_timeout=3&token=***&username=app", "abc123"),
])
def test_every_secret_form_of_a_store_url_is_masked(url: str, shown: str, secret: str) -> None:
    config = parse_config({"store": {"url": url}}, TYPES, env={})
    assert config.store.url == url
    assert config.masked()["store"]["url"] == shown
    assert secret in config.secrets()


def test_check_masks_a_password_in_the_store_urls_query(tmp_path: Path) -> None:
    path = write(tmp_path, "store:\n  url: redis://h:6379/0?password=hunter2pass&db=2\n")
    result = run_cli("check", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert "hunter2pass" not in result.stdout + result.stderr
    assert "url: redis://h:6379/0?password=***&db=2" in result.stdout


def test_redis_pool_is_sized_from_the_delivery_concurrency() -> None:
    config = parse_config({"delivery": {"concurrency": 100}}, TYPES, env={})
    assert config.store.max_connections == 132
    config = parse_config({"store": {"max_connections": 10}}, TYPES, env={})
    assert config.store.max_connections == 10
    assert parse_config({}, TYPES, env={}).store.max_connections == 64


def test_relative_sqlite_path_is_beside_the_config(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "store:\n  url: sqlite:///data/x.db\n"), TYPES, env={})
    assert config.store.url == f"sqlite:///{tmp_path / 'data' / 'x.db'}"


def test_lease_and_backoff_have_floors(tmp_path: Path) -> None:
    text = problems(tmp_path, "delivery:\n  lease: 0\n  initial_backoff: 0\n")
    assert "delivery.lease: Input should be greater than or equal to 1" in text
    assert "delivery.initial_backoff: Input should be greater than 0" in text
