"""Webhook-source settings: the README's example parses, and every mapping error at load
names its key path."""

from __future__ import annotations

import copy
import datetime
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from chatterbox import API_TOKEN, ENV, SECRET, readme_config
from livebridge_webhook import WebhookSettings
from livebridge_webhook.settings import HmacVerify

from livebridge import ConfigError
from livebridge.testing import build_config

MINIMAL = {"type": "webhook", "verify": "none",
           "mapping": {"event_id": "id", "thread": "chat", "sender": {"id": "user"},
                       "text": "text"}}


def test_the_readme_example_parses(tmp_path: Path) -> None:
    config = build_config(readme_config(), tmp_path, env=ENV)
    [source] = config.sources
    assert isinstance(source, WebhookSettings)
    assert source.name == "chatterbox" and source.path == "/hooks/chatterbox"
    assert isinstance(source.verify, HmacVerify)
    assert source.verify.secret.get_secret_value() == SECRET
    assert source.verify.window == 300
    assert source.mapping.context == {"workspace": "workspace.id"}
    assert source.reply is not None
    assert source.reply.headers["Authorization"].get_secret_value() == f"Bearer {API_TOKEN}"


def test_check_masks_the_reply_headers(tmp_path: Path) -> None:
    config = build_config(readme_config(), tmp_path, env=ENV)
    [source] = config.masked()["sources"]
    assert source["reply"]["headers"] == {"Authorization": "***"}
    assert source["verify"]["secret"] == "***"
    assert f"Bearer {API_TOKEN}" in config.secrets()
    assert API_TOKEN not in yaml.safe_dump(config.masked())


def test_livebridge_check_prints_the_example_masked(tmp_path: Path) -> None:
    path = tmp_path / "bridge.yaml"
    path.write_text(yaml.safe_dump(readme_config()))
    done = subprocess.run([sys.executable, "-m", "livebridge", "check", "--config", str(path)],
                          env={"PATH": "", **ENV}, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "type: webhook" in done.stdout
    assert API_TOKEN not in done.stdout and SECRET not in done.stdout


def problems(tmp_path: Path, *entries: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        build_config({"sources": list(entries)}, tmp_path, env=ENV)
    return caught.value.problems


def with_(change: dict[str, Any], base: dict[str, Any] = MINIMAL) -> dict[str, Any]:
    """``base`` with ``change`` merged in (nested mappings merged key by key)."""
    out = copy.deepcopy(base)
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = with_(value, out[key])
        else:
            out[key] = value
    return out


@pytest.mark.parametrize(("change", "problem"), [
    ({"mapping": {"thread": "data.[conversation"}},
     "sources[2].mapping.thread: invalid JMESPath expression: "),
    ({"mapping": {"sender": {"email": "author.`email"}}},
     "sources[2].mapping.sender.email: invalid JMESPath expression: "),
    ({"mapping": {"context": {"team": "team.id)"}}},
     "sources[2].mapping.context.team: invalid JMESPath expression: "),
    ({"events": "type == "}, "sources[2].events: invalid JMESPath expression: "),
    ({"items": ""}, "sources[2].items: String should have at least 1 character"),
    ({"mapping": {"thread": None}}, "sources[2].mapping.thread: Input should be a valid string"),
    ({"mapping": {"sender": {"id": ""}}},
     "sources[2].mapping.sender.id: String should have at least 1 character"),
    ({"mapping": {"subject": "s"}}, "sources[2].mapping.subject: unknown key"),
    ({"mapping": {"context": {"text": "t"}}},
     "sources[2].mapping.context: 'text' is a built-in reply placeholder"),
    ({"verify": None}, "sources[2].verify"),
    ({"verify": "nope"}, "sources[2].verify.none: Input should be 'none'"),
    ({"verify": {"header": "X-Sig"}}, "sources[2].verify.hmac.secret: Field required"),
    ({"verify": {"header": "X-Tok", "token": ""}}, "sources[2].verify.token.token: must not"),
    ({"verify": {"header": "X-Sig", "secret": "s", "algorithm": "md5"}},
     "sources[2].verify.hmac.algorithm: Input should be 'sha1', 'sha256' or 'sha512'"),
    ({"verify": {"header": "X-Sig", "secret": "s", "signed_payload": "{timestamp}.{body}"}},
     "sources[2].verify.hmac.signed_payload: {timestamp} and timestamp_header go together"),
    ({"verify": {"header": "X-Sig", "secret": "s", "timestamp_header": "X-Time"}},
     "sources[2].verify.hmac.signed_payload: {timestamp} and timestamp_header go together"),
    ({"verify": {"header": "X-Sig", "secret": "s", "signed_payload": "{ts}:{body}"}},
     "sources[2].verify.hmac.signed_payload: unknown placeholder {ts}"),
    ({"reply": {"url": "https://chat.example/{thread}", "body": {"text": "{txt}"}}},
     "sources[2].reply: body.text: unknown placeholder {txt} (known: text, thread"),
    ({"reply": {"url": "https://{team}.chat.example/", "body": {}}},
     "sources[2].reply.url: placeholders may stand in the path and query only"),
    ({"reply": {"url": "ftp://chat.example/", "body": {}}},
     "sources[2].reply.url: expected an http:// or https:// URL"),
    ({"reply": {"url": "https://chat.example/"}}, "sources[2].reply.body: Field required"),
    ({"reply": {"url": "https://chat.example/", "body": {"on": datetime.date(2026, 1, 1)}}},
     "sources[2].reply.body: expected JSON data"),
])
def test_mapping_errors_name_the_key_path(tmp_path: Path, change: dict[str, Any],
                                          problem: str) -> None:
    entries = [with_({"name": "a"}), with_({"name": "b"}), with_({"name": "c", **change})]
    found = problems(tmp_path, *entries)
    assert any(p.startswith(problem) for p in found), found
    assert all(p.startswith("sources[2].") for p in found), found


def test_verify_is_required(tmp_path: Path) -> None:
    entry = {k: v for k, v in MINIMAL.items() if k != "verify"}
    assert problems(tmp_path, entry) == ["sources[0].verify: Field required"]


def test_reply_placeholders_may_name_the_context(tmp_path: Path) -> None:
    entry = with_({"mapping": {"context": {"team": "team.id"}},
                   "reply": {"url": "https://chat.example/{team}/{thread}?to={sender_id}",
                             "body": {"t": ["{text}", "{{literal}}", "{conversation_id}"]}}})
    [source] = build_config({"sources": [entry]}, tmp_path).sources
    assert isinstance(source, WebhookSettings) and source.reply is not None
