"""MIME to facts: sender, subject, Message-IDs, auto-reply marks, body text, attachments.

Everything goes through the standard library's ``email`` package (``policy.default``); a
provider that posts parsed fields instead of MIME gives its header block to ``parse_fields``,
so both paths share the header and body rules here.
"""

from __future__ import annotations

import email.errors
import email.header
import email.utils
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser, HeaderParser
from html.parser import HTMLParser

from livebridge import text_codec

__all__ = [
    "ParsedAttachment",
    "ParsedEmail",
    "decode_text",
    "header_block",
    "html_to_text",
    "normalize_id",
    "parse_bytes",
    "parse_fields",
]

_ID = re.compile(r"<([^<>\s]+)>")
_COPIED_HEADERS = ("To", "Cc")
_DELIVERY_HEADERS = ("Delivered-To", "X-Original-To", "Envelope-To")
_AUTO_HEADERS = ("X-Autoreply", "X-Autorespond", "X-Autoresponder", "X-Auto-Reply")
_BULK_PRECEDENCE = {"bulk", "junk"}
#: Declared charsets that are usually a smaller relative of what was really sent.
_SUPERSETS = {
    "gb2312": "gb18030", "gbk": "gb18030", "x-gbk": "gb18030", "shift_jis": "cp932",
    "x-sjis": "cp932", "ks_c_5601-1987": "cp949", "euc-kr": "cp949",
    "iso-8859-1": "cp1252", "latin1": "cp1252", "us-ascii": "ascii",
}


@dataclass(frozen=True, slots=True)
class ParsedAttachment:
    """A file of the mail; ``data`` is kept only up to the configured cap."""

    name: str | None
    content_type: str
    size: int
    data: bytes | None = None


@dataclass(slots=True)
class ParsedEmail:
    """What the email source needs from one message."""

    from_email: str | None
    from_name: str | None
    reply_to: str | None
    subject: str | None
    message_id: str | None
    in_reply_to: str | None
    references: list[str]
    #: The addresses in To and Cc (lowercased).
    copied: list[str]
    #: Where the mail was delivered: Delivered-To-style headers, then the provider's envelope
    #: recipients (our own addresses).
    delivered: list[str]
    #: Why the mail is not a person writing: ``auto-reply``, ``bulk``, ``bounce``, or None.
    auto: str | None
    text: str
    attachments: list[ParsedAttachment] = field(default_factory=list)

    @property
    def recipients(self) -> list[str]:
        """Every address the mail names as a recipient or was delivered to."""
        return [*self.copied, *self.delivered]


def normalize_id(message_id: str) -> str:
    """The lookup form of a Message-ID: no angle brackets or spaces, lowercased."""
    return message_id.strip().strip("<>").strip().lower()


def decode_text(data: bytes, charset: str | None) -> str:
    """Decode body bytes: the declared charset (or its usual superset), else UTF-8, else
    Windows-1252; never raises."""
    declared = (charset or "").strip().strip('"').lower()
    codec = text_codec(_SUPERSETS.get(declared, declared)) or ""  # only linear-time codecs
    for candidate in (codec, "utf-8"):
        if candidate:
            try:
                return data.decode(candidate)
            except UnicodeDecodeError:
                continue
    return data.decode(codec if codec not in ("", "ascii") else "cp1252", "replace")


def parse_bytes(raw: bytes, keep_bytes: int) -> ParsedEmail:
    """Parse a whole RFC 5322 message; attachment bytes are kept up to ``keep_bytes`` each."""
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(msg, EmailMessage)
    body = _Body(keep_bytes)
    body.collect(msg)
    return _facts(msg, body.text(), body.attachments)


def header_block(pairs: Iterable[tuple[str, str]]) -> EmailMessage:
    """A header-only message from (name, value) pairs, as parsed-mode providers post them."""
    lines = []
    for name, value in pairs:
        if name.strip() and ":" not in name:
            lines.append(f"{name.strip()}: {' '.join(str(value).splitlines())}")
    msg = HeaderParser(policy=policy.default).parsestr("\n".join(lines) + "\n\n")
    assert isinstance(msg, EmailMessage)
    return msg


def parse_fields(headers: EmailMessage, text: str | None, html: str | None,
                 attachments: list[ParsedAttachment]) -> ParsedEmail:
    """Facts from a provider's header block and its already-decoded bodies."""
    plain = (text or "").strip()
    body = plain or html_to_text(html or "")
    return _facts(headers, body, attachments)


# --- headers ------------------------------------------------------------------------------


def _facts(msg: EmailMessage, text: str, attachments: list[ParsedAttachment]) -> ParsedEmail:
    from_name, from_email = _first_address(msg, "From")
    _, reply_to = _first_address(msg, "Reply-To")
    raw_id = _raw(msg, "Message-ID").strip()
    message_ids = _ID.findall(raw_id)
    message_id = f"<{message_ids[0]}>" if message_ids else (
        f"<{raw_id}>" if raw_id and " " not in raw_id else None)
    if message_id is not None and not normalize_id(message_id):
        message_id = None  # "<>" and the like: no id (the caller fingerprints the mail)
    in_reply_to = _ID.findall(_raw(msg, "In-Reply-To"))
    return ParsedEmail(
        from_email=from_email, from_name=from_name, reply_to=reply_to,
        subject=_header(msg, "Subject"), message_id=message_id,
        in_reply_to=f"<{in_reply_to[0]}>" if in_reply_to else None,
        references=[f"<{i}>" for i in _ID.findall(_raw(msg, "References"))],
        copied=[addr for name in _COPIED_HEADERS for _, addr in _addresses(msg, name)],
        delivered=[addr for name in _DELIVERY_HEADERS for _, addr in _addresses(msg, name)],
        auto=_auto(msg, from_email), text=text, attachments=attachments,
    )


def _raw(msg: Message, name: str) -> str:
    """The unparsed value of a header (the first one), or ''."""
    for key, value in msg.raw_items():
        if key.lower() == name.lower():
            return _unsurrogate(str(value))
    return ""


def _unsurrogate(value: str) -> str:
    """Undo the surrogate escapes of raw 8-bit header bytes (UTF-8 in practice)."""
    if not any("\udc80" <= ch <= "\udcff" for ch in value):
        return value
    return decode_text(value.encode("utf-8", "surrogateescape"), None)


def _decode_words(value: str) -> str:
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except (LookupError, UnicodeError, ValueError, email.errors.HeaderParseError):
        return value


def _header(msg: Message, name: str) -> str | None:
    """A header's decoded, unfolded value, or None when absent or empty."""
    if name not in msg:
        return None
    try:
        value = str(msg[name])
    except Exception:  # a malformed header must not lose the mail
        value = _decode_words(_raw(msg, name))
    value = " ".join(_unsurrogate(value).split())
    return value or None


def _addresses(msg: Message, name: str) -> list[tuple[str | None, str]]:
    """(display name, lowercased address) of every address in the ``name`` headers."""
    found: list[tuple[str | None, str]] = []
    try:
        for header in msg.get_all(name) or []:
            for address in getattr(header, "addresses", ()):
                if "@" in address.addr_spec:
                    display = _unsurrogate(address.display_name).strip()
                    found.append((display or None, address.addr_spec.lower()))
    except Exception:  # fall back to the lenient parser below
        found = []
        raw = [value for key, value in msg.raw_items() if key.lower() == name.lower()]
        for display, addr in email.utils.getaddresses([_unsurrogate(str(v)) for v in raw]):
            if "@" in addr:
                found.append((_decode_words(display).strip() or None, addr.lower()))
    return found


def _first_address(msg: Message, name: str) -> tuple[str | None, str | None]:
    found = _addresses(msg, name)
    return found[0] if found else (None, None)


def _auto(msg: Message, from_email: str | None) -> str | None:
    """Why this mail was written by a machine (``bounce``, ``auto-reply``, ``bulk``), or None."""
    if (msg.get_content_type() == "multipart/report" or "X-Failed-Recipients" in msg
            or (from_email or "").split("@")[0] == "mailer-daemon"):
        return "bounce"
    submitted = _raw(msg, "Auto-Submitted").split(";")[0].strip().lower()
    precedence = _raw(msg, "Precedence").strip().lower()
    if (submitted not in ("", "no") or any(h in msg for h in _AUTO_HEADERS)
            or precedence == "auto_reply" or _raw(msg, "Return-Path").strip() == "<>"):
        return "auto-reply"
    if precedence in _BULK_PRECEDENCE:
        return "bulk"
    return None


# --- body -------------------------------------------------------------------------------


class _Body:
    """Walks a MIME tree: the readable text of the message, and its files."""

    def __init__(self, keep_bytes: int) -> None:
        self.keep_bytes = keep_bytes
        self.fragments: list[str] = []
        self.attachments: list[ParsedAttachment] = []

    def text(self) -> str:
        return "\n\n".join(f.strip() for f in self.fragments if f.strip())

    def collect(self, part: Message, files_only: bool = False) -> None:
        """Add ``part``'s text and files (only its files when it is an unread alternative)."""
        content_type = part.get_content_type()
        if part.get_content_maintype() == "multipart":
            children = list(part.iter_parts()) if isinstance(part, EmailMessage) else []
            chosen = _best_alternative(children) if content_type == "multipart/alternative" \
                else None
            for child in children:
                self.collect(child, files_only or (chosen is not None and child is not chosen))
        elif content_type in ("text/plain", "text/html") and not _is_attachment(part):
            if not files_only:
                text = _text_of(part)
                self.fragments.append(
                    _unflow(part, text) if content_type == "text/plain" else html_to_text(text))
        elif not (files_only and part.get_content_maintype() == "text"):
            self.attachments.append(self._attachment(part))

    def _attachment(self, part: Message) -> ParsedAttachment:
        if part.is_multipart():  # message/rfc822 and friends arrive parsed: serialize back
            data = b"".join(_as_bytes(p) for p in part.get_payload() if isinstance(p, Message))
        else:
            payload = part.get_payload(decode=True)
            data = payload if isinstance(payload, bytes) else b""
        return ParsedAttachment(
            name=_filename(part), content_type=part.get_content_type(), size=len(data),
            data=data if len(data) <= self.keep_bytes else None,
        )


def _as_bytes(part: Message) -> bytes:
    try:
        return part.as_bytes()
    except Exception:  # an unprintable inner message still counts as a file
        return b""


def _best_alternative(children: Sequence[Message]) -> Message | None:
    """The alternative to read: plain text, else HTML, else the last nested multipart."""
    for wanted in ("text/plain", "text/html"):
        for child in children:
            if child.get_content_type() == wanted and not _is_attachment(child):
                return child
    nested = [c for c in children if c.get_content_maintype() == "multipart"]
    return nested[-1] if nested else None


def _is_attachment(part: Message) -> bool:
    return part.get_content_disposition() == "attachment" or _filename(part) is not None


def _filename(part: Message) -> str | None:
    try:
        name = part.get_filename()
    except Exception:  # a mangled parameter is no filename
        return None
    if not name:
        return None
    return _decode_words(_unsurrogate(name)).strip() or None


def _text_of(part: Message) -> str:
    payload = part.get_payload(decode=True)
    data = payload if isinstance(payload, bytes) else b""
    return decode_text(data, part.get_content_charset()).replace("\r\n", "\n")


def _unflow(part: Message, text: str) -> str:
    """Join the soft line breaks of ``format=flowed`` text (RFC 3676)."""
    if str(part.get_param("format") or "").lower() != "flowed":
        return text
    delsp = str(part.get_param("delsp") or "").lower() == "yes"
    out: list[str] = []
    soft_before, depth_before = False, -1
    for line in text.split("\n"):
        content = line.lstrip(">")
        depth = len(line) - len(content)
        content = content.removeprefix(" ")  # space-stuffing
        soft = content.endswith(" ") and content != "-- "
        if soft and delsp:
            content = content[:-1]
        if soft_before and depth == depth_before:
            out[-1] += content
        else:
            out.append(("> " * depth) + content)
        soft_before, depth_before = soft, depth
    return "\n".join(out)


# --- HTML -------------------------------------------------------------------------------

_SKIP = {"script", "style", "head", "title", "template", "noscript"}
_PARAGRAPH = {"p", "div", "table", "ul", "ol", "blockquote", "pre", "hr", "h1", "h2", "h3",
              "h4", "h5", "h6", "section", "article", "header", "footer", "address", "dl"}
_LINE = {"tr", "li", "dt", "dd"}
_SPACE = re.compile(r"\s+")


class _HTMLText(HTMLParser):
    """Readable plain text from HTML: paragraphs, lists, tables, quoted blocks, link targets."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self.line = ""
        self.skip = 0
        self.quote = 0
        self.pre = 0
        self.lists: list[int] = []  # -1 for <ul>, else the next <ol> number
        self.links: list[tuple[str, list[str]]] = []  # (href, label text so far)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self.skip += 1
        elif tag == "br":
            self._newline(force=True)
        elif tag in _PARAGRAPH:
            self._paragraph()
            self.quote += tag == "blockquote"
            self.pre += tag == "pre"
            if tag in ("ul", "ol"):
                self.lists.append(-1 if tag == "ul" else 1)
        elif tag in _LINE:
            self._newline()
            if tag == "li":
                number = self.lists[-1] if self.lists else -1
                self.line += "- " if number < 0 else f"{number}. "
                if number > 0:
                    self.lists[-1] += 1
        elif tag in ("td", "th") and self.line.strip():
            self.line += " | "
        elif tag == "a":
            self.links.append((dict(attrs).get("href") or "", []))

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag in _PARAGRAPH:
            self._paragraph()
            if tag == "blockquote":
                self.quote = max(0, self.quote - 1)
            elif tag == "pre":
                self.pre = max(0, self.pre - 1)
            elif tag in ("ul", "ol") and self.lists:
                self.lists.pop()
        elif tag in _LINE:
            self._newline()
        elif tag == "a" and self.links:
            href, label = self.links.pop()
            if href.startswith(("http://", "https://")) and href not in "".join(label):
                self.line += f" ({href})"

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        for _, label in self.links:
            label.append(data)
        if self.pre:
            first, *rest = data.split("\n")
            self.line += first
            for piece in rest:
                self._newline(force=True)
                self.line += piece
            return
        text = _SPACE.sub(" ", data)
        if not self.line.strip() or self.line.endswith(" "):
            text = text.lstrip()
        self.line += text

    def _newline(self, force: bool = False) -> None:
        if self.line.strip() or force:
            self.lines.append((("> " * self.quote) + self.line.strip()).rstrip())
        self.line = ""

    def _paragraph(self) -> None:
        self._newline()
        if self.lines and self.lines[-1].strip("> "):
            self.lines.append((">" * self.quote).rstrip())

    def text(self) -> str:
        """The text so far, blank runs collapsed."""
        self._newline()
        return re.sub(r"\n{3,}", "\n\n", "\n".join(self.lines)).strip()


def html_to_text(html: str) -> str:
    """HTML as readable plain text (blockquotes become ``> `` lines, links keep their URL)."""
    parser = _HTMLText()
    parser.feed(html)
    parser.close()
    return parser.text()
