"""MIME to facts: sender, subject, Message-IDs, auto-reply marks, body text, attachments.

Everything goes through the standard library's ``email`` package (``policy.default``); a
provider that posts parsed fields instead of MIME gives its header block to ``parse_fields``,
so both paths share the header and body rules here.
"""

from __future__ import annotations

import email.errors
import email.header
import email.utils
import html as html_lib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser, HeaderParser

from livebridge import text_codec

__all__ = [
    "MAX_HTML_TEXT",
    "MAX_MIME_PARTS",
    "ParsedAttachment",
    "ParsedEmail",
    "TooManyParts",
    "decode_text",
    "header_block",
    "html_to_text",
    "normalize_id",
    "parse_bytes",
    "parse_fields",
]

_ID = re.compile(r"<([^<>\s]+)>")
#: Characters of text taken from one HTML body (the source cuts text much shorter).
MAX_HTML_TEXT = 1 << 20
#: MIME parts a message may have.
MAX_MIME_PARTS = 1000
_BOUNDARY = re.compile(rb'boundary\s*=\s*(?:"([^"\r\n]{1,200})"|([^\s;"]{1,200}))',
                       re.IGNORECASE)
_BOUNDARY_2231 = re.compile(rb"boundary\s*\*", re.IGNORECASE)
_DELIMITER = re.compile(rb"^--(\S{1,202})", re.MULTILINE)
_ENCODED_WORD = re.compile(r"=\?([^?\s*]{1,64})((?:\*[^?\s]{0,64})?\?[bBqQ]\?)")
_RFC2231_CHARSET = re.compile(r"""(\*(?:\d{1,3}\*)?=\s*"?)([^'"\s;]{1,64})'""")
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


class TooManyParts(ValueError):
    """A message with more than ``MAX_MIME_PARTS`` MIME parts (refused before parsing)."""


def parse_bytes(raw: bytes, keep_bytes: int) -> ParsedEmail:
    """Parse a whole RFC 5322 message; attachment bytes are kept up to ``keep_bytes`` each.

    Raises ``TooManyParts`` past ``MAX_MIME_PARTS``; encoded words and parameters in
    charsets outside ``TEXT_CHARSETS`` are read as unknown 8-bit text, never decoded by a
    slow codec."""
    if _mime_parts(raw) > MAX_MIME_PARTS:
        raise TooManyParts(f"more than {MAX_MIME_PARTS} MIME parts")
    raw = _safe_charsets(raw.decode("latin-1")).encode("latin-1")
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
    msg = HeaderParser(policy=policy.default).parsestr(_safe_charsets("\n".join(lines))
                                                       + "\n\n")
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


def _mime_parts(raw: bytes) -> int:
    """How many delimiter lines of the boundaries ``raw`` declares it has (counted up to
    one past ``MAX_MIME_PARTS``): a bound on its MIME parts, found in one pass."""
    lines = raw.count(b"\n--") + raw.startswith(b"--")  # every delimiter-like line
    if lines <= MAX_MIME_PARTS:  # under the cap: no regex scan, which would hold the GIL
        return lines  # (and so the event loop) for a quarter second on a 16 MB mail
    boundaries = {m.group(1) or m.group(2) for m in _BOUNDARY.finditer(raw)}
    # An RFC 2231 boundary (boundary*=, boundary*0=...), which the parser reads too, is not
    # read here: then every delimiter-like line counts (still a bound, one pass).
    every_line = _BOUNDARY_2231.search(raw) is not None
    count = 0
    for line in _DELIMITER.finditer(raw):
        token = line.group(1)
        if every_line or token in boundaries or token.removesuffix(b"--") in boundaries:
            count += 1
            if count > MAX_MIME_PARTS:
                break
    return count


def _safe_charsets(text: str) -> str:
    """``text`` with the charsets of its RFC 2047 encoded words and RFC 2231 parameters
    that are not ``TEXT_CHARSETS`` replaced by ones the parser reads as unknown bytes."""

    def word(m: re.Match[str]) -> str:
        return m.group(0) if _allowed(m.group(1)) else f"=?unknown-8bit{m.group(2)}"

    def parameter(m: re.Match[str]) -> str:
        return m.group(0) if _allowed(m.group(2)) else f"{m.group(1)}x-unknown'"

    return _RFC2231_CHARSET.sub(parameter, _ENCODED_WORD.sub(word, text))


def _allowed(charset: str) -> bool:
    name = charset.lower()
    return text_codec(_SUPERSETS.get(name, name)) is not None


def _decode_words(value: str) -> str:
    try:
        return str(email.header.make_header(email.header.decode_header(_safe_charsets(value))))
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
                if "@" in address.addr_spec:  # raw 8-bit (UTF-8) addresses too
                    display = _unsurrogate(address.display_name).strip()
                    found.append((display or None, _unsurrogate(address.addr_spec).lower()))
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
    out: list[list[str]] = []  # each line in pieces, joined once at the end
    soft_before, depth_before = False, -1
    for line in text.split("\n"):
        content = line.lstrip(">")
        depth = len(line) - len(content)
        content = content.removeprefix(" ")  # space-stuffing
        soft = content.endswith(" ") and content != "-- "
        if soft and delsp:
            content = content[:-1]
        if soft_before and depth == depth_before:
            out[-1].append(content)
        else:
            out.append([("> " * depth) + content])
        soft_before, depth_before = soft, depth
    return "\n".join("".join(pieces) for pieces in out)


# --- HTML -------------------------------------------------------------------------------

_SKIP = {"script", "style", "head", "title", "template", "noscript"}
_PARAGRAPH = {"p", "div", "table", "ul", "ol", "blockquote", "pre", "hr", "h1", "h2", "h3",
              "h4", "h5", "h6", "section", "article", "header", "footer", "address", "dl"}
_LINE = {"tr", "li", "dt", "dd"}
_SPACE = re.compile(r"\s+")
#: Quote markers shown at most per line, however deep ``<blockquote>``s nest.
_MAX_QUOTE = 10


_MARKUP = re.compile(r"<(!--|[!?]|/?[a-zA-Z])")
#: The rest of a tag after ``<`` or ``</``: its name, its attributes (quoted values may hold
#: ``>``) and the closing ``>``, empty when the input ends first. It always matches, and its
#: alternatives start with different characters: no backtracking.
_TAG = re.compile(r"""([a-zA-Z][^\s/>]*)((?:[^>"']+|"[^"]*(?:"|\Z)|'[^']*(?:'|\Z))*)(>?)""")
_ATTRIBUTE = re.compile(r"""([^\s=/>"']+)\s*(?:=\s*("[^"]*"|'[^']*'|[^\s>"']+))?""")
_RAW_TEXT = {"script", "style", "title", "textarea"}


class _HTMLText:
    """Readable plain text from HTML: paragraphs, lists, tables, quoted blocks, link targets.

    Linear in the input. The markup is read in one pass, each construct scanned once (one
    left open reaches the end of the input, as HTML5 reads it: the standard library's
    ``HTMLParser`` rescans those, in quadratic time). The current line is a list of pieces
    (what is known of it is kept as flags, never re-read), one link is open at a time (an
    ``<a>`` closes the one before, as in browsers), quote marks are capped at ``_MAX_QUOTE``
    deep, and text stops being collected past ``limit`` characters."""

    def __init__(self, limit: int) -> None:
        self.lines: list[str] = []
        self.line: list[str] = []
        self.blank = True  # the line has no visible text yet
        self.spaced = False  # the line ends with a space
        self.gap = True  # the last line is empty (but for quote marks), or there is none
        self.size = 0
        self.limit = limit
        self.skip = 0
        self.quote = 0
        self.pre = 0
        self.lists: list[int] = []  # -1 for <ul>, else the next <ol> number
        self.link: tuple[str, list[str]] | None = None  # (href, label text so far)

    def feed(self, html: str) -> None:
        """Read a whole document."""
        pos, n = 0, len(html)
        while pos < n:
            markup = _MARKUP.search(html, pos)
            if markup is None:
                self.handle_data(html_lib.unescape(html[pos:]))
                return
            if markup.start() > pos:
                self.handle_data(html_lib.unescape(html[pos:markup.start()]))
            kind = markup.group(1)
            if kind in ("!--", "!", "?"):  # a comment, a declaration, a processing instruction
                end = html.find("-->" if kind == "!--" else ">", markup.end())
                if end < 0:
                    return
                pos = end + (3 if kind == "!--" else 1)
                continue
            tag = _TAG.match(html, markup.end() - 1)
            assert tag is not None  # it always matches
            if not tag.group(3):
                return  # the input ends inside a tag
            name, pos = tag.group(1).lower(), tag.end()
            if kind.startswith("/"):
                self.handle_endtag(name)
                continue
            attrs = [(k.lower(), html_lib.unescape(v.strip("\"'")) if v else None)
                     for k, v in _ATTRIBUTE.findall(tag.group(2))] if name == "a" else []
            self.handle_starttag(name, attrs)
            if name in _RAW_TEXT:  # its text runs to its end tag, markup or not
                closing = re.compile(rf"</{name}[\s/>]", re.IGNORECASE).search(html, pos)
                if closing is None:
                    return
                if name == "textarea":
                    self.handle_data(html_lib.unescape(html[pos:closing.start()]))
                pos = closing.start()

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
                self._add("- " if number < 0 else f"{number}. ")
                if number > 0:
                    self.lists[-1] += 1
        elif tag in ("td", "th") and not self.blank:
            self._add(" | ")
        elif tag == "a":
            self._close_link()
            self.link = (dict(attrs).get("href") or "", [])

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
        elif tag == "a":
            self._close_link()

    def _close_link(self) -> None:
        if self.link is not None:
            href, label = self.link
            self.link = None
            if href.startswith(("http://", "https://")) and href not in "".join(label):
                self._add(f" ({href})")

    def handle_data(self, data: str) -> None:
        if self.skip or self.size > self.limit:
            return
        if self.link is not None:
            self.link[1].append(data)
        if self.pre:
            first, *rest = data.split("\n")
            self._add(first)
            for piece in rest:
                self._newline(force=True)
                self._add(piece)
            return
        text = _SPACE.sub(" ", data)
        if self.blank or self.spaced:
            text = text.lstrip()
        self._add(text)

    def _add(self, text: str) -> None:
        if text:
            self.line.append(text)
            self.size += len(text)
            self.blank = self.blank and not text.strip()
            self.spaced = text[-1].isspace()

    def _newline(self, force: bool = False) -> None:
        if not self.blank or force:
            line = "".join(self.line).strip()
            self.lines.append(("> " * min(self.quote, _MAX_QUOTE) + line).rstrip())
            self.gap = not line.strip("> ")
        self.line, self.blank, self.spaced = [], True, False

    def _paragraph(self) -> None:
        self._newline()
        if not self.gap:
            self.lines.append((">" * min(self.quote, _MAX_QUOTE)).rstrip())
            self.gap = True

    def text(self) -> str:
        """The text so far, blank runs collapsed."""
        self._close_link()
        self._newline()
        return re.sub(r"\n{3,}", "\n\n", "\n".join(self.lines)).strip()


def html_to_text(html: str, limit: int = MAX_HTML_TEXT) -> str:
    """HTML as readable plain text (blockquotes become ``> `` lines, links keep their URL),
    in time linear in ``html``; text past about ``limit`` characters is left out."""
    parser = _HTMLText(limit)
    parser.feed(html)
    return parser.text()
