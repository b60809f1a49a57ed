"""The public edge: what ``livebridge`` exports is all a plugin needs, the built-in plugins
use nothing else, and errors map to responses in one place (``Source.reject``)."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

import livebridge
from livebridge import (
    BodyError,
    Busy,
    Duration,
    Overloaded,
    Refused,
    Source,
    SourceSettings,
    StoreUnavailable,
    hookimpl,
)

ROOT = Path(__file__).resolve().parent.parent
PUBLIC_MODULES = {"livebridge", "livebridge.testing"}


def _private_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                 else [])
        found += [f"{path}:{node.lineno}: {name}" for name in names
                  if name.startswith("livebridge.") and name not in PUBLIC_MODULES]
    return found


def test_plugins_import_only_the_public_api() -> None:
    modules = [*ROOT.glob("plugins/**/*.py"), *ROOT.glob("examples/**/*.py")]
    assert len(modules) > 10
    problems = [p for path in modules for p in _private_imports(path)]
    assert problems == [], "plugins may import only livebridge and livebridge.testing"


def test_the_import_check_sees_a_private_import(tmp_path: Path) -> None:
    module = tmp_path / "probe.py"
    module.write_text("import livebridge.app\nfrom livebridge.config import Duration\n"
                      "from livebridge import Source\nfrom livebridge.testing import make_bridge\n"
                      "from . import sibling\n")
    assert [p.split(": ")[1] for p in _private_imports(module)] == [
        "livebridge.app", "livebridge.config"]


def test_every_export_is_real_and_documented() -> None:
    for name in livebridge.__all__:
        value = getattr(livebridge, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), f"livebridge.{name} has no docstring"


class ChatSettings(SourceSettings):
    path: str = "/chat"
    wait: Duration = 1.0


class ChatSource(Source[ChatSettings]):
    """Answers each post with what the test asks for: an error raised or a setting."""

    type_name = "chat"
    raised: Exception | None = None

    def routes(self) -> list[web.RouteDef]:
        return [web.post(self.settings.path, self.handle)]

    async def handle(self, request: web.Request) -> web.Response:
        try:
            if self.raised is not None:
                raise self.raised
        except (Refused, Busy) as exc:
            return self.reject(request, exc)
        self.count_dropped("test")
        return web.json_response({"wait": self.settings.wait})


class ChatPlugin:
    @hookimpl
    def livebridge_source_types(self) -> list[type[Source]]:
        return [ChatSource]


def test_settings_come_from_the_generic_parameter() -> None:
    assert ChatSource.Settings is ChatSettings
    assert Source.Settings is SourceSettings
    with pytest.raises(TypeError, match="Settings differs from the Source\\[ChatSettings\\]"):
        class Confused(Source[ChatSettings]):
            Settings = SourceSettings


@pytest.mark.parametrize(("error", "status", "body", "retry_after"), [
    (Refused(422, "bad thing", "field x"), 422, {"error": "bad thing", "detail": "field x"},
     None),
    (Refused(401, "bad signature", headers={"WWW-Authenticate": "Sig"}), 401,
     {"error": "bad signature"}, None),
    (BodyError(413, "body too large"), 413, {"error": "body too large"}, None),
    (Overloaded(), 503, {"error": "busy"}, "30"),
    (StoreUnavailable("Redis is unreachable"), 503, {"error": "busy"}, "10"),
])
async def test_errors_map_to_responses_in_reject(make_bridge: Any, error: Exception,
                                                 status: int, body: dict[str, Any],
                                                 retry_after: str | None) -> None:
    bridge = await make_bridge({"sources": [{"type": "chat", "wait": "250ms"}]},
                               plugins=[ChatPlugin()])
    ChatSource.raised = error
    try:
        resp = await bridge.client.post("/chat")
    finally:
        ChatSource.raised = None
    assert resp.status == status
    assert await resp.json() == body
    assert resp.headers.get("Retry-After") == retry_after
    if isinstance(error, Refused) and error.headers:
        assert resp.headers["WWW-Authenticate"] == "Sig"
    metrics = await (await bridge.client.get("/metrics")).text()
    assert f'livebridge_requests_rejected_total{{reason="{body["error"]}",source="chat"}} 1.0' \
        in metrics


async def test_generic_settings_are_validated_and_counted(make_bridge: Any) -> None:
    bridge = await make_bridge({"sources": [{"type": "chat", "wait": "250ms"}]},
                               plugins=[ChatPlugin()])
    resp = await bridge.client.post("/chat")
    assert await resp.json() == {"wait": 0.25}
    metrics = await (await bridge.client.get("/metrics")).text()
    assert 'livebridge_messages_dropped_total{reason="test",source="chat"} 1.0' in metrics


def test_the_example_plugin_stays_small() -> None:
    """docs/plugins.md promises a whole plugin in 60 lines (no blanks or comments)."""
    source = ROOT / "examples" / "livebridge_acmechat" / "livebridge_acmechat" / "__init__.py"
    lines = [line for line in source.read_text().splitlines()
             if line.strip() and not line.strip().startswith("#")]
    assert len(lines) <= 60
