"""Agents' Markdown (Livedesk's format) as plain text, as safe HTML, or in a chat's own format.

One CommonMark parser (``markdown-it-py``, with ``~~strike~~``) reads the Markdown; raw HTML in
it is text, and only ``http(s)`` and ``mailto`` links are links. ``render`` walks its token
stream once and asks a ``TextStyle`` how to write each construct: ``TextStyle`` itself writes
plain text; a chat plugin subclasses it (see ``livebridge_slack.mrkdwn``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml
from markdown_it.renderer import RendererHTML
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict

__all__ = ["TextStyle", "markdown_to_html", "markdown_to_text", "render"]

#: The schemes a link may have; any other ``[text](url)`` stays text.
LINK_SCHEMES = ("http://", "https://", "mailto:")


def _safe_link(url: str) -> bool:
    return url.lower().startswith(LINK_SCHEMES)


def _image_as_link(self: RendererHTML, tokens: Sequence[Token], idx: int,
                   options: OptionsDict, env: EnvType) -> str:
    """An image as a link to it: a mail fetches nothing by itself."""
    token = tokens[idx]
    src = escapeHtml(str(token.attrGet("src") or ""))
    alt = escapeHtml(self.renderInlineAsText(token.children or [], options, env))
    return f'<a href="{src}">{alt or src}</a>'


_MD = MarkdownIt("commonmark", {"html": False, "breaks": True}).enable("strikethrough")
_MD.validateLink = _safe_link  # type: ignore[method-assign]
_MD.add_render_rule("image", _image_as_link)


class TextStyle:
    """How ``render`` writes each construct, as plain text. Override what a format does
    differently; every method gets its content already rendered (and escaped)."""

    #: The marker of a bullet list item.
    bullet = "- "
    #: A thematic break (``---``).
    rule = "---"

    def escape(self, text: str) -> str:
        """Literal text as the format needs it."""
        return text

    def strong(self, inner: str) -> str:
        """``**inner**``."""
        return inner

    def em(self, inner: str) -> str:
        """``*inner*``."""
        return inner

    def strike(self, inner: str) -> str:
        """``~~inner~~``."""
        return inner

    def code(self, code: str) -> str:
        """Inline ``code`` (raw: not escaped)."""
        return code

    def code_block(self, code: str, lang: str) -> str:
        """A fenced or indented code block (raw, without its final newline)."""
        return code

    def heading(self, inner: str, level: int) -> str:
        """A heading's line."""
        return inner

    def link(self, text: str, url: str) -> str:
        """A link: ``text (url)``, or the bare address when the text is the address."""
        bare = url.removeprefix("mailto:")
        return bare if text in ("", url, bare) else f"{text} ({bare})"

    def quote(self, inner: str) -> str:
        """A block quote: every line behind ``> ``."""
        return "\n".join(f"> {line}" if line else ">" for line in inner.split("\n"))


@dataclass
class _Frame:
    """A block container being rendered: its token and its rendered children."""

    token: Token | None
    parts: list[str] = field(default_factory=list)
    tight: bool = False


def _inline(children: Sequence[Token], style: TextStyle) -> str:
    stack: list[tuple[Token | None, list[str]]] = [(None, [])]
    for token in children:
        if token.nesting == 1:
            stack.append((token, []))
        elif token.nesting == -1 and len(stack) > 1:
            opener, parts = stack.pop()
            stack[-1][1].append(_wrap(opener, "".join(parts), style))
        else:
            stack[-1][1].append(_leaf(token, style))
    while len(stack) > 1:  # never left open by the parser; flattened all the same
        _, parts = stack.pop()
        stack[-1][1].extend(parts)
    return "".join(stack[0][1])


def _wrap(opener: Token | None, inner: str, style: TextStyle) -> str:
    kind = opener.type if opener is not None else ""
    if kind == "link_open" and opener is not None:
        return style.link(inner, str(opener.attrGet("href") or ""))
    if not inner.strip():  # no markers around nothing
        return inner
    if kind == "strong_open":
        return style.strong(inner)
    if kind == "em_open":
        return style.em(inner)
    if kind == "s_open":
        return style.strike(inner)
    return inner


def _leaf(token: Token, style: TextStyle) -> str:
    if token.type in ("softbreak", "hardbreak"):
        return "\n"
    if token.type == "code_inline":
        return style.code(token.content)
    if token.type == "image":
        return style.link(_inline(token.children or [], style), str(token.attrGet("src") or ""))
    return style.escape(token.content)


def _close(frame: _Frame, style: TextStyle) -> str:
    """A container's text from its rendered children."""
    kind = frame.token.type if frame.token is not None else ""
    body = ("\n" if frame.tight else "\n\n").join(p for p in frame.parts if p)
    if kind == "heading_open" and frame.token is not None:
        return style.heading(body, int(frame.token.tag[1:] or 1))
    if kind == "blockquote_open":
        return style.quote(body)
    if kind == "list_item_open" and frame.token is not None:
        marker = f"{frame.token.info}{frame.token.markup} " if frame.token.info else style.bullet
        first, *rest = body.split("\n")
        indent = " " * len(marker)
        return "\n".join([(marker + first).rstrip(" "),
                          *(indent + line if line else "" for line in rest)])
    return body


def _tokens(md: str) -> list[Token] | None:
    """The parser's tokens for ``md``; None when ``md`` nests deeper than the parser follows
    (``maxNesting``: past it, the parser drops the rest of the text)."""
    tokens = _MD.parse(md)
    limit = _MD.options.maxNesting - 1
    return None if any(token.level >= limit for token in tokens) else tokens


def render(md: str, style: TextStyle) -> str:
    """``md`` in the format of ``style``: one pass over the parser's tokens (nested too deep
    to parse: as literal text)."""
    tokens = _tokens(md)
    if tokens is None:
        return style.escape(md).strip("\n")
    frames = [_Frame(None)]
    for token in tokens:
        if token.nesting == 1:
            if token.type == "paragraph_open" and token.hidden and len(frames) > 1:
                frames[-1].tight = True  # a tight list's item, and so its list
                if len(frames) > 2:
                    frames[-2].tight = True
            frames.append(_Frame(token))
        elif token.nesting == -1 and len(frames) > 1:
            frame = frames.pop()
            frames[-1].parts.append(_close(frame, style))
        elif token.type == "inline":
            frames[-1].parts.append(_inline(token.children or [], style))
        elif token.type in ("fence", "code_block"):
            frames[-1].parts.append(style.code_block(token.content.removesuffix("\n"),
                                                     token.info.strip()))
        elif token.type == "hr":
            frames[-1].parts.append(style.rule)
        else:
            frames[-1].parts.append(style.escape(token.content))
    while len(frames) > 1:
        frame = frames.pop()
        frames[-1].parts.append(_close(frame, style))
    return _close(frames[0], style).strip("\n")


_PLAIN = TextStyle()


def markdown_to_text(md: str) -> str:
    """Readable plain text: emphasis markers dropped, links as ``text (url)``, lists as
    ``- item`` / ``1. item``, code as it is (e.g. a mail's text/plain part)."""
    return render(md, _PLAIN)


def markdown_to_html(md: str) -> str:
    """Safe HTML (e.g. a mail's text/html part): raw HTML in ``md`` escaped, links only
    http(s) and mailto, images as links, line breaks kept (nested too deep to parse: as
    literal text)."""
    tokens = _tokens(md)
    if tokens is None:
        return "<p>" + escapeHtml(md.strip("\n")).replace("\n", "<br />\n") + "</p>\n"
    return str(_MD.renderer.render(tokens, _MD.options, {}))
