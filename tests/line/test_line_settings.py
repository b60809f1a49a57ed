"""The line source's settings: the shipped bridge.yaml entry and the required secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from livebridge import ConfigError
from livebridge.config import load_config
from livebridge.plugins import collect_source_types, get_plugin_manager
from livebridge.testing import build_config

ROOT = Path(__file__).resolve().parents[2]
TYPES = collect_source_types(get_plugin_manager())


def test_the_shipped_entry_is_off_until_enabled_and_takes_the_secrets() -> None:
    off = load_config(ROOT / "bridge.yaml", TYPES, env={})
    assert "line" not in [s.type for s in off.sources]
    env = {"LINE_ENABLED": "true", "LINE_CHANNEL_SECRET": "s3cret",
           "LINE_CHANNEL_ACCESS_TOKEN": "t0ken"}
    config = load_config(ROOT / "bridge.yaml", TYPES, env=env)
    [line] = [s for s in config.sources if s.type == "line"]
    assert line.model_dump()["path"] == "/line/webhook"
    assert line.channel_secret.get_secret_value() == "s3cret"  # type: ignore[attr-defined]


def test_missing_secrets_name_their_variables(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        build_config({"sources": [{"type": "line", "channel_secret": "",
                                   "channel_access_token": ""}]}, tmp_path)
    assert exc.value.problems == [
        "sources[0].channel_secret: must not be empty "
        "(e.g. channel_secret: ${LINE_CHANNEL_SECRET})",
        "sources[0].channel_access_token: must not be empty "
        "(e.g. channel_access_token: ${LINE_CHANNEL_ACCESS_TOKEN})"]
