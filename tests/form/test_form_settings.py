"""``type: form`` settings (validated at load, errors naming the key path) and the pages."""

from __future__ import annotations

import html.parser
from pathlib import Path
from typing import Any

import pytest
from livebridge_form import FormSettings

from livebridge.exceptions import ConfigError
from livebridge.testing import build_config


def load(tmp_path: Path, **settings: Any) -> FormSettings:
    config = build_config({"sources": [{"type": "form", **settings}]}, tmp_path)
    [form] = config.sources
    assert isinstance(form, FormSettings)
    return form


def problems(tmp_path: Path, **settings: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, **settings)
    return caught.value.problems


def test_defaults(tmp_path: Path) -> None:
    form = load(tmp_path, rate_window="1h")
    assert (form.path, form.honeypot, form.conversation) == ("/form", "_gotcha", "per_customer")
    assert form.required_groups == [("email", "phone"), ("message",)]
    assert (form.rate_limit, form.rate_window, form.max_body_bytes) == (30, 3600.0, 1 << 20)
    assert form.thanks_url == "/form/thanks"


@pytest.mark.parametrize("url", ["https://evil.example/thanks", "//evil.example/thanks",
                                 "/\\evil.example", "javascript:alert(1)",
                                 "https://www.example.com.evil/"])
def test_thank_you_url_off_the_allowed_origins_is_refused_at_load(tmp_path: Path,
                                                                  url: str) -> None:
    [problem] = problems(tmp_path, thank_you_url=url, allowed_origins=["https://www.example.com"])
    assert problem.startswith("sources[0].thank_you_url: ")


def test_thank_you_url_on_an_allowed_origin_or_a_path(tmp_path: Path) -> None:
    form = load(tmp_path, allowed_origins=["https://WWW.example.com:443/"],
                thank_you_url="https://www.example.com/thanks")
    assert form.allowed_origins == ["https://www.example.com"]
    assert load(tmp_path, thank_you_url="/thanks").thanks_url == "/thanks"


@pytest.mark.parametrize(("settings", "where"), [
    ({"colour": "red"}, "sources[0].colour: unknown key"),
    ({"required": ["message"]}, "sources[0].required: must require an email address or a "
                                "phone number"),
    ({"required": ["email|fax"]}, "sources[0].required: 'email|fax': unknown field 'fax'"),
    ({"allowed_origins": ["https://example.com/contact"]}, "sources[0].allowed_origins: "),
    ({"fields": {"email": "_email"}}, "sources[0].fields: "),
    ({"fields": {"mail": "x"}}, "sources[0].fields.mail: unknown key"),
    ({"path": "form/"}, "sources[0].path: "),
    ({"rate_window": 0}, "sources[0].rate_window: must be longer than 0 s"),
    ({"conversation": "per_day"}, "sources[0].conversation: "),
    ({"honeypot": "message"}, "sources[0]: "),
])
def test_bad_settings_name_the_key(tmp_path: Path, settings: dict[str, Any], where: str) -> None:
    [problem] = problems(tmp_path, **settings)
    assert problem.startswith(where), problem


class _Page(html.parser.HTMLParser):
    """Collects the controls, labels and their attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


async def test_the_form_page_is_accessible_and_self_contained(start_form: Any) -> None:
    bridge = await start_form(title="<Acme & Co>")
    resp = await bridge.client.get("/form")
    assert resp.status == 200 and resp.content_type == "text/html"
    csp = resp.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp
    assert resp.headers["Cache-Control"] == "no-store"
    text = await resp.text()
    assert "<title>&lt;Acme &amp; Co&gt;</title>" in text and "<Acme" not in text
    page = _Page()
    page.feed(text)
    controls = {a["id"]: (t, a) for t, a in page.tags if t in ("input", "textarea") and "id" in a}
    labelled = {a["for"] for t, a in page.tags if t == "label"}
    assert set(controls) <= labelled  # every control has a bound label
    assert not [a for t, a in page.tags if (t in ("link", "script", "img")) or "src" in a]
    email = controls["f-email"][1]
    assert (email["type"], email["autocomplete"]) == ("email", "email")
    assert controls["f-name"][1]["autocomplete"] == "name"
    assert "required" in controls["f-message"][1]
    honeypot = controls["f-hp"][1]
    assert (honeypot["name"], honeypot["tabindex"]) == ("_gotcha", "-1")
    assert '<div class="hp" aria-hidden="true">' in text
    thanks = await bridge.client.get("/form/thanks")
    assert "&lt;Acme &amp; Co&gt;" in await thanks.text()
    assert (await bridge.client.head("/form")).status == 200
