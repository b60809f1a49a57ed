"""The form as customers see it: refused posts shown again with inline errors and what they
typed, ``required`` as configured, and every text in English or Japanese (overridable)."""

from __future__ import annotations

import html.parser
from pathlib import Path
from typing import Any

import pytest

from livebridge.exceptions import ConfigError
from livebridge.testing import build_config

ANN = {"name": "Ann", "email": "ann@example.com", "message": "hello"}


class Page(html.parser.HTMLParser):
    """The elements of a page: attributes by id, and the text inside each element with an id."""

    VOID = {"input", "meta", "br", "img", "link"}

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.texts: dict[str, str] = {}
        #: All the text a person sees (not attribute values such as hidden tokens).
        self.visible = ""
        self._open: list[str | None] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            ident = dict(attrs).get("id") or (f"label-{dict(attrs).get('for', '')[2:]}"
                                              if tag == "label" else None)
            self._open.append(ident)
            if ident:
                self.texts[ident] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag not in self.VOID and self._open:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        self.visible += data
        for ident in filter(None, self._open):
            self.texts[ident] += data

    def by_id(self, ident: str) -> dict[str, str | None]:
        [attrs] = [a for _, a in self.tags if a.get("id") == ident]
        return attrs

    def find(self, tag: str, **attrs: str) -> list[dict[str, str | None]]:
        return [a for t, a in self.tags if t == tag and all(a.get(k) == v
                                                              for k, v in attrs.items())]

    def described(self, ident: str) -> str:
        """The text of the elements that describe control ``ident`` (aria-describedby)."""
        ids = (self.by_id(ident).get("aria-describedby") or "").split()
        return " ".join(self.texts[i] for i in ids)


async def get(bridge: Any, path: str = "/form", **headers: str) -> tuple[Any, str]:
    resp = await bridge.client.get(path, headers=headers)
    return resp, await resp.text()


# --- refused posts ---------------------------------------------------------------------------

async def test_a_refused_post_shows_the_form_again_with_inline_errors(
        start_form: Any, nothing_stored: Any) -> None:
    bridge = await start_form()
    typed = {"name": 'Ann "<b>" Lee', "email": "<b>nope", "phone": "12",
             "message": "hi </textarea><script>alert(1)</script> & bye"}
    resp = await bridge.client.post("/form", data=typed)
    assert resp.status == 422 and resp.content_type == "text/html"
    text = await resp.text()
    page = Page(text)

    summary = page.find("div", **{"class": "summary"})
    assert summary and summary[0]["role"] == "alert" and summary[0]["tabindex"] == "-1"
    links = [a["href"] for a in page.find("a") if a["href"] and a["href"].startswith("#")]
    assert links == ["#f-email", "#f-phone"]
    assert page.texts["summary-title"] == "There is a problem"
    for key, error in (("email", "Enter an email address in the correct format"),
                       ("phone", "Enter a phone number in international format")):
        control = page.by_id(f"f-{key}")
        assert control["aria-invalid"] == "true"
        assert error in page.texts[f"f-{key}-error"]
        assert error in page.described(f"f-{key}")
    assert "aria-invalid" not in page.by_id("f-name")
    assert "aria-invalid" not in page.by_id("f-message")

    # What they typed is kept, as text (escaped), never as markup.
    for key in ("name", "email", "phone"):
        assert page.by_id(f"f-{key}")["value"] == typed[key]
    assert page.texts["f-message"] == typed["message"]
    assert "<script>" not in text and "<b>" not in text
    # A customer sees human sentences: no status code, no internal reason.
    # (in what a person reads: a hidden token's hex may hold any digits)
    assert "422" not in page.visible and "invalid fields" not in text
    assert "not a valid" not in text
    assert "<title>Error: Contact us</title>" in text
    await nothing_stored(bridge)


async def test_neither_email_nor_phone_is_one_error_at_their_group(start_form: Any) -> None:
    bridge = await start_form()
    resp = await bridge.client.post("/form", data={"name": "Ann", "message": "hello"})
    assert resp.status == 422
    page = Page(await resp.text())
    either = "Enter at least one of these: Email, Phone"
    assert [a["href"] for a in page.find("a")] == ["#f-email"]  # one summary entry
    assert page.texts["g-email-error"].endswith(either)
    for key in ("email", "phone"):
        assert page.by_id(f"f-{key}")["aria-invalid"] == "true"
        assert either in page.described(f"f-{key}")
        assert f"f-{key}-error" not in page.texts
    assert page.texts["f-message"] == "hello"


async def test_an_empty_browser_post_shows_what_to_fill_in(start_form: Any,
                                                           nothing_stored: Any) -> None:
    bridge = await start_form()
    resp = await bridge.client.post("/form", data={"_idempotency_key": "k", "name": " "})
    assert resp.status == 400
    page = Page(await resp.text())
    assert [a["href"] for a in page.find("a")] == ["#f-email", "#f-message"]
    assert page.texts["f-message-error"].endswith("Enter your message")
    await nothing_stored(bridge)


@pytest.mark.parametrize(("settings", "request_kwargs", "status", "sentence"), [
    ({"allowed_origins": ["https://www.example.com"]},
     {"data": ANN, "headers": {"Origin": "https://evil.example"}}, 403,
     "This form can only be sent from its own page."),
    ({"rate_limit": 1}, {"data": ANN}, 429, "You have sent several messages in a short time."),
    ({"max_body_bytes": 100}, {"data": {**ANN, "message": "x" * 200}}, 413,
     "Your message or its files are too large."),
    ({}, {"data": b"\xff", "headers": {"Content-Type": "text/plain"}}, 415,
     "Your message could not be read."),
])
async def test_other_refusals_are_told_in_a_sentence(
        start_form: Any, settings: dict[str, Any], request_kwargs: dict[str, Any],
        status: int, sentence: str) -> None:
    bridge = await start_form(**settings)
    if status == 429:
        first = await bridge.client.post("/form", data=ANN, allow_redirects=False)
        assert first.status == 303
    resp = await bridge.client.post("/form", allow_redirects=False, **request_kwargs)
    assert resp.status == status and resp.content_type == "text/html"
    text = await resp.text()
    page = Page(text)
    assert sentence in page.texts["summary"]
    assert str(status) not in page.visible
    assert page.find("form")  # the form is there to try again


async def test_when_busy_the_message_typed_is_kept(start_form: Any, store_down: object,
                                                   nothing_stored: Any) -> None:
    bridge = await start_form(plugins=(store_down,))
    resp = await bridge.client.post("/form", data=ANN, headers={"Accept-Language": "ja"})
    assert (resp.status, resp.headers["Retry-After"]) == (503, "10")
    text = await resp.text()
    page = Page(text)
    assert "ただいまメッセージを受け付けることができません" in page.texts["summary"]
    assert page.texts["f-message"] == "hello" and page.by_id("f-email")["value"] == ANN["email"]
    assert "redis" not in text and "503" not in page.visible
    await nothing_stored(bridge)


# --- required ------------------------------------------------------------------------------

@pytest.mark.parametrize(("required", "marked", "optional"), [
    (["email|phone", "message"], {"message"}, {"name"}),
    (["phone", "message"], {"phone", "message"}, {"name", "email"}),
    (["email", "name", "message"], {"email", "name", "message"}, {"phone"}),
    (["email|phone", "name|message"], set(), set()),
])
async def test_required_attributes_follow_the_setting(
        start_form: Any, required: list[str], marked: set[str], optional: set[str]) -> None:
    bridge = await start_form(required=required)
    _, text = await get(bridge)
    page = Page(text)
    for key in ("name", "email", "phone", "message"):
        control = page.by_id(f"f-{key}")
        assert ("required" in control) is (key in marked), key
        assert ("(optional)" in page.texts[f"label-{key}"]) is (key in optional), key
    groups = [g for g in required if "|" in g]
    for group in groups:
        keys = group.split("|")
        hint = "Fill in at least one of these: " + ", ".join(k.capitalize() for k in keys) + "."
        for key in keys:
            assert hint in page.described(f"f-{key}")


# --- languages ---------------------------------------------------------------------------

def test_negotiation_follows_q_values() -> None:
    from livebridge_form.texts import negotiate
    assert negotiate(None) == "en"
    assert negotiate("") == "en"
    assert negotiate("ja-JP,ja;q=0.9,en-US;q=0.8,en;q=0.7") == "ja"
    assert negotiate("en;q=0.5, JA;q=0.6") == "ja"
    assert negotiate("ja;q=0.5, en-GB") == "en"
    assert negotiate("fr-FR, de;q=0.9") == "en"
    assert negotiate("ja;q=0, fr") == "en"
    assert negotiate("ja;q=junk, fr") == "en"


def test_every_language_has_every_text() -> None:
    from livebridge_form.texts import LANGUAGES, TEXTS, TextOverrides, Texts
    assert set(TEXTS) == set(LANGUAGES) == set(TextOverrides.model_fields)
    assert LANGUAGES[0] == "en"  # the fallback
    for language, texts in TEXTS.items():
        if language != "en":
            assert texts.model_fields_set == set(Texts.model_fields), language


async def test_the_pages_speak_the_browsers_language(start_form: Any) -> None:
    bridge = await start_form()
    resp, text = await get(bridge, **{"Accept-Language": "fr;q=1, ja;q=0.8, en;q=0.5"})
    assert resp.headers["Content-Language"] == "ja"
    assert "Accept-Language" in resp.headers["Vary"]
    assert '<html lang="ja">' in text and "<title>お問い合わせ</title>" in text
    assert ">送信する</button>" in text and "お名前" in text
    resp, text = await get(bridge, **{"Accept-Language": "de"})
    assert '<html lang="en">' in text and ">Send message</button>" in text

    resp = await bridge.client.post("/form", data={"message": "こんにちは"},
                                    headers={"Accept-Language": "ja"})
    page = Page(await resp.text())
    assert page.texts["summary-title"] == "入力内容に誤りがあります"
    assert "メールアドレス、電話番号のいずれかをご入力ください" in page.texts["g-email-error"]
    assert page.texts["f-message"] == "こんにちは"
    resp, text = await get(bridge, "/form/thanks", **{"Accept-Language": "ja"})
    assert "<h1>お問い合わせありがとうございます</h1>" in text
    assert "お問い合わせを受け付けました。" in text and "<title>送信完了" in text


async def test_a_fixed_language_and_overridden_texts(start_form: Any) -> None:
    bridge = await start_form(language="ja", title="Acme", texts={
        "ja": {"submit": "送信", "thanks_body": "{title}様、ありがとうございました。"},
        "en": {"title": "Acme & Co"}})
    resp, text = await get(bridge, **{"Accept-Language": "en"})
    assert '<html lang="ja">' in text and ">送信</button>" in text
    assert "<title>Acme</title>" in text and "Accept-Language" not in resp.headers.get("Vary", "")
    assert "お名前" in text  # the rest stays built-in
    _, text = await get(bridge, "/form/thanks")
    assert "Acme様、ありがとうございました。" in text

    english = await start_form(language="en", title="Acme", texts={"en": {"title": "A & B"}})
    _, text = await get(english)
    assert "<title>A &amp; B</title>" in text


# --- config errors -----------------------------------------------------------------------

@pytest.mark.parametrize(("settings", "where"), [
    ({"language": "fr"}, "sources[0].language: Input should be 'auto', 'en' or 'ja'"),
    ({"texts": {"fr": {"submit": "Envoyer"}}},
     "sources[0].texts: unknown language 'fr' (the form speaks en, ja)"),
    ({"texts": {"ja": {"sumbit": "送信"}}},
     "sources[0].texts.ja.sumbit: unknown key; did you mean submit?"),
    ({"texts": ["submit"]}, "sources[0].texts: Input should be a valid dictionary"),
    ({"texts": {"ja": {"thanks_body": "{name}様"}}},
     "sources[0].texts.ja.thanks_body: unknown placeholder {name} (this text can use: {title})"),
    ({"texts": {"en": {"submit": "Send {"}}}, "sources[0].texts.en.submit: unmatched '{'"),
    ({"texts": {"en": {"submit": 3}}}, "sources[0].texts.en.submit: "),
])
def test_bad_texts_name_the_key(tmp_path: Path, settings: dict[str, Any], where: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_config({"sources": [{"type": "form", **settings}]}, tmp_path)
    [problem] = caught.value.problems
    assert problem.startswith(where), problem
