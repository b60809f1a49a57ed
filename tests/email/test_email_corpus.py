"""Every message of the MIME corpus parses, and the facts in expected.json hold."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from livebridge_email.content import is_forward, new_text
from livebridge_email.parse import decode_text, html_to_text, parse_bytes
from livebridge_email.source import EmailSettings

CORPUS = Path(__file__).parent / "corpus"
EXPECTED: dict[str, dict[str, Any]] = json.loads((CORPUS / "expected.json").read_text())
LANGUAGES = EmailSettings(type="email", provider="ses").languages


def test_corpus_is_complete() -> None:
    emls = sorted(p.name for p in CORPUS.glob("*.eml"))
    assert len(emls) >= 20
    assert emls == sorted(EXPECTED), "every .eml has its facts in expected.json, and back"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_message(name: str) -> None:
    expected = EXPECTED[name]
    mail = parse_bytes((CORPUS / name).read_bytes(), keep_bytes=1024 * 1024)
    facts = {key: getattr(mail, key) for key in
             ("from_email", "from_name", "subject", "message_id", "in_reply_to", "references")}
    assert facts == {key: expected[key] for key in facts}
    assert bool(mail.auto) is expected["auto"]
    assert [{"name": a.name, "content_type": a.content_type} for a in mail.attachments] == \
        expected["attachments"]
    assert all(a.size > 0 for a in mail.attachments)
    text = mail.text if is_forward(mail.subject, mail.text) else new_text(mail.text, LANGUAGES)
    for wanted in expected["text_contains"]:
        assert wanted in text
    for unwanted in expected["text_excludes"]:
        assert unwanted not in text


def test_html_reply_keeps_only_the_new_part() -> None:
    html = ('<div dir="ltr">Still broken after the update.<br><br>Maria</div><br>'
            '<div class="gmail_quote"><div class="gmail_attr">On Mon, Mar 9, 2026 at 5:12 PM '
            'Livedesk Support &lt;<a href="mailto:support@help.example.com">support@help.example'
            '.com</a>&gt; wrote:<br></div><blockquote class="gmail_quote"><div>Please update.'
            '</div><blockquote><div>older</div></blockquote></blockquote></div>')
    text = html_to_text(html)
    assert "> Please update.\n>\n> > older" in text
    assert new_text(text, LANGUAGES) == "Still broken after the update.\n\nMaria"


def test_decode_text_falls_back_sensibly() -> None:
    assert decode_text("Grüße".encode(), "us-ascii") == "Grüße"  # mislabelled UTF-8
    assert decode_text("Grüße".encode("cp1252"), None) == "Grüße"
    assert decode_text("Grüße".encode("latin-1"), "x-unknown-charset") == "Grüße"
    assert decode_text("价格".encode("gbk"), "gb2312") == "价格"
