"""Slack's ``mrkdwn`` both ways: agents' Markdown out as mrkdwn, customers' mrkdwn in as
readable text (mentions by name, links as ``text (url)``, entities unescaped).

Both are linear in the text and never raise: odd input comes out as text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from livebridge import TextStyle, render

__all__ = ["MrkdwnStyle", "markdown_to_mrkdwn", "mrkdwn_refs", "mrkdwn_to_text"]

#: ``<...>``: Slack escapes ``<`` and ``>`` in text, so a pair encloses one special token.
_SPECIAL = re.compile(r"<([^<>]*)>")
#: What a user, channel or user group id looks like (so that nothing else is looked up).
_ID = re.compile(r"[A-Z0-9]{2,30}")
_SPECIAL_MENTIONS = frozenset({"here", "channel", "everyone"})


class MrkdwnStyle(TextStyle):
    """Markdown as Slack's mrkdwn: ``*bold*``, ``_italic_``, ``~strike~``, ``<url|text>``,
    code as is, ``•`` lists, headings as bold lines, ``& < >`` escaped in text."""

    bullet = "• "

    def escape(self, text: str) -> str:
        """Slack's three control characters as entities."""
        return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    def strong(self, inner: str) -> str:
        """``*inner*``."""
        return f"*{inner}*"

    def em(self, inner: str) -> str:
        """``_inner_``."""
        return f"_{inner}_"

    def strike(self, inner: str) -> str:
        """``~inner~``."""
        return f"~{inner}~"

    def code(self, code: str) -> str:
        """`` `code` ``, escaped (Slack reads entities in code too)."""
        return f"`{self.escape(code)}`"

    def code_block(self, code: str, lang: str) -> str:
        """A ```` ``` ```` block, escaped."""
        return f"```\n{self.escape(code)}\n```"

    def heading(self, inner: str, level: int) -> str:
        """A bold line."""
        return f"*{inner}*"

    def link(self, text: str, url: str) -> str:
        """``<url|text>`` (the parser percent-encodes ``|``, ``<`` and ``>`` in the URL)."""
        return f"<{url}>" if text in ("", url, url.removeprefix("mailto:")) else f"<{url}|{text}>"


_MRKDWN = MrkdwnStyle()


def markdown_to_mrkdwn(md: str) -> str:
    """An agent's Markdown as Slack mrkdwn, for ``chat.postMessage``'s ``text``."""
    return render(md, _MRKDWN)


def _unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _ref(token: str) -> str | None:
    """The id a ``<...>`` token needs a name for: a user (always: the label is a legacy
    username) or a channel without a label; else None. (User groups always have a label.)"""
    body, _, label = token.partition("|")
    if not (body.startswith("@") or (body.startswith("#") and not label)):
        return None
    return body[1:] if _ID.fullmatch(body[1:]) else None


def mrkdwn_refs(text: str) -> set[str]:
    """The user and channel ids in ``text`` whose names ``mrkdwn_to_text`` needs."""
    return {ref for m in _SPECIAL.finditer(text) if (ref := _ref(m.group(1))) is not None}


def _special(token: str, names: Mapping[str, str]) -> str:
    """One ``<...>`` token as text."""
    body, _, label = token.partition("|")
    body, label = _unescape(body), _unescape(label)
    if body.startswith("@"):
        return "@" + (names.get(body[1:]) or label or body[1:])
    if body.startswith("#"):
        return "#" + (label or names.get(body[1:]) or body[1:])
    if body.startswith("!subteam^"):
        group = body.removeprefix("!subteam^")
        name = label or names.get(group) or group
        return name if name.startswith("@") else "@" + name
    if body.startswith("!"):
        command = body[1:].split("^", 1)[0]
        if command in _SPECIAL_MENTIONS:
            return "@" + command
        return label or f"<{body}>"  # <!date^...|fallback>: the fallback
    if body.startswith("mailto:"):
        address = body.removeprefix("mailto:")
        return address if label in ("", address) else f"{label} ({address})"
    if ":" in body:  # a link
        return body if label in ("", body) else f"{label} ({body})"
    return f"<{body}{'|' if label else ''}{label}>"  # not Slack's: as it came


def mrkdwn_to_text(text: str, names: Mapping[str, str]) -> str:
    """A Slack message's mrkdwn as readable text: ``<@U123>`` as ``@Real Name`` (``names``:
    id -> name, from ``mrkdwn_refs``; the id stands in for a missing one), ``<#C123|general>``
    as ``#general``, ``<!here>`` as ``@here``, ``<https://x|docs>`` as ``docs (https://x)``,
    ``&amp; &lt; &gt;`` unescaped. Formatting marks (``*bold*``) stay as they are."""
    out: list[str] = []
    end = 0
    for match in _SPECIAL.finditer(text):
        out.append(_unescape(text[end:match.start()]))
        out.append(_special(match.group(1), names))
        end = match.end()
    out.append(_unescape(text[end:]))
    return "".join(out)
