"""The docs keep up with the code (as datasette's docs test does): every hook is documented in
docs/plugins.md with its signature, every public name is mentioned there, and every key of the
core config models is in docs/configuration.md."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
from pydantic import BaseModel

import livebridge
from livebridge import hookspecs
from livebridge.config import Config

DOCS = Path(__file__).resolve().parent.parent / "docs"
HOOKS = sorted(n for n, f in inspect.getmembers(hookspecs, inspect.isfunction)
               if n.startswith("livebridge_"))


def documented_hooks(text: str) -> dict[str, str]:
    """``name -> "name(a, b)"`` for every hook in the hook table's first column."""
    return {m[1]: m[0] for m in re.findall(r"^\| `((livebridge_\w+)\([^)]*\))`", text, re.M)}


def signature(name: str) -> str:
    params = inspect.signature(getattr(hookspecs, name)).parameters
    return f"{name}({', '.join(params)})"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented_with_its_signature(hook: str) -> None:
    documented = documented_hooks((DOCS / "plugins.md").read_text())
    assert hook in documented, f"{hook} is missing from the hook table of docs/plugins.md"
    assert documented[hook] == signature(hook), "docs/plugins.md shows the wrong signature"


def test_the_hook_check_sees_a_wrong_signature() -> None:
    table = "| `livebridge_reply_sent(reply, extra)` | after |\n| `livebridge_nothing()` | - |"
    documented = documented_hooks(table)
    assert documented["livebridge_reply_sent"] != signature("livebridge_reply_sent")
    assert "livebridge_inbound_message" not in documented


def test_every_public_name_is_documented() -> None:
    text = (DOCS / "plugins.md").read_text()
    missing = [n for n in livebridge.__all__ if not re.search(rf"`{n}\b", text)]
    assert missing == [], f"not in docs/plugins.md: {missing}"


def config_keys(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str]]:
    """``(section, key)`` of every field of the core config models."""
    keys = []
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        inner = [t for t in (field.annotation, *getattr(field.annotation, "__args__", ()))
                 if isinstance(t, type) and issubclass(t, BaseModel)]
        if inner:
            keys += [(prefix, name), *config_keys(inner[0], name)]
        else:
            keys.append((prefix, name))
    return keys


def documented_keys(text: str) -> set[tuple[str, str]]:
    keys = set()
    for chunk in re.split(r"^## ", text, flags=re.M)[1:]:
        section = re.match(r"`(\w+)`", chunk)
        if section is None:
            continue
        keys.add(("", section[1]))
        for row in re.findall(r"^\| ([^|]+) \|", chunk, re.M):
            keys.update((section[1], key) for key in re.findall(r"`(\w+)`", row))
    return keys


def test_every_core_config_key_is_documented() -> None:
    keys = config_keys(Config)
    assert ("delivery", "max_outbox") in keys and ("", "sources") in keys
    documented = documented_keys((DOCS / "configuration.md").read_text())
    missing = [f"{s}.{k}" if s else k for s, k in keys if (s, k) not in documented]
    assert missing == [], f"not in docs/configuration.md: {missing}"


def test_the_config_check_sees_a_missing_key() -> None:
    documented = documented_keys("## `server`\n| key | default |\n| --- | --- |\n"
                                 "| `host`, `port` | x |\n")
    assert {("", "server"), ("server", "host"), ("server", "port")} <= documented
    assert ("server", "max_body_bytes") not in documented
