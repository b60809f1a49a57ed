"""What an agent should read of a mail: the new part of a reply, the subject once, a cap."""

from __future__ import annotations

import re
from collections.abc import Sequence

from mailparser_reply.constants import MAIL_LANGUAGES
from mailparser_reply.parser import EmailMessage as ReplyParser

__all__ = ["LANGUAGES", "is_forward", "new_text", "reply_subject", "same_subject", "truncate"]

#: Languages ``mail-parser-reply`` knows quote headers and signatures of.
LANGUAGES = frozenset(MAIL_LANGUAGES)

_FORWARD_SUBJECT = re.compile(r"^\s*(fwd?|wg|tr|rv|enc|vl|doorst)\s*:", re.IGNORECASE)
_FORWARD_MARKER = re.compile(
    r"^\s*(-{2,}\s*(forwarded message|weitergeleitete nachricht|message transféré|"
    r"mensaje reenviado|messaggio inoltrato|doorgestuurd bericht)\s*-{2,}|"
    r"begin forwarded message:)\s*$",
    re.IGNORECASE | re.MULTILINE,
)
_REPLY_PREFIX = re.compile(
    r"^\s*((re|aw|sv|vs|antw|odp|ref|rif|r|fwd?|wg|tr|rv|enc|回复|答复|回覆|转发|轉寄)"
    r"\s*(\[\d+\])?\s*[:\uff1a]\s*)+", re.IGNORECASE)
_TAGS = re.compile(r"\[[^\[\]]{1,40}\]")
#: The first line of a quoted header block ("From: ..." followed by "Sent: ...") in the
#: languages mail clients write it in, with an ASCII or a full-width colon.
_FROM_LINE = re.compile(
    r"^[ \t*>]*(from|von|de|da|van|från|fra|od|от|kimden|feladó|lähettäjä|发件人|寄件人|"
    r"寄件者|差出人|보낸 사람)[ \t*]*[:\uff1a]", re.IGNORECASE)
_FIELD_LINE = re.compile(r"^[ \t*>]*[^\s:\uff1a]{1,24}( [^\s:\uff1a]{1,24}){0,2}[ \t*]*[:\uff1a]")
_SEPARATOR = re.compile(r"^\s*([-_=*]{3,}.*[-_=*]{3,}|[-_]{10,})\s*$")


def is_forward(subject: str | None, text: str) -> bool:
    """Whether the mail forwards another one (kept whole: the agent needs what it forwards)."""
    return bool(_FORWARD_SUBJECT.match(subject or "") or _FORWARD_MARKER.search(text))


def new_text(text: str, languages: Sequence[str], stripped: str | None = None) -> str:
    """The new part of a reply: without quoted history, quote headers and signature.

    ``stripped`` is the provider's own answer to the same question, preferred when given.
    """
    if stripped and stripped.strip():
        return stripped.strip()
    body = _above_first_quote(text, languages)
    body = _above_first_quote(_cut_at_header_block(_drop_quotes(body)), languages)
    lines = body.strip().split("\n")
    while lines and _SEPARATOR.match(lines[-1]):
        lines.pop()
    body = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    return body or text.strip()


def _above_first_quote(text: str, languages: Sequence[str]) -> str:
    """What ``mail-parser-reply`` finds above the first quote header, less the signature;
    ``text`` itself when nothing is written above it (a bottom-posted or interleaved reply)."""
    replies = ReplyParser(text=text, languages=list(languages), keep_hyphen_lists=True).read()
    first = replies.replies[0] if replies.replies else None
    return first.body if first is not None and not first.headers else text


def same_subject(a: str | None, b: str | None) -> bool:
    """Whether two subjects name the same topic (``Re:``, ``AW:``, ``Fwd:`` ignored)."""
    return _topic(a) == _topic(b)


def reply_subject(subject: str | None) -> str:
    """The subject of an answer: ``Re: <subject>`` unless it already starts with ``Re:``."""
    subject = (subject or "").strip() or "(no subject)"
    return subject if re.match(r"re\s*:", subject, re.IGNORECASE) else f"Re: {subject}"


def _topic(subject: str | None) -> str:
    """A subject without reply/forward prefixes and ``[#123]``-style tags, lowercased."""
    text = _TAGS.sub(" ", _REPLY_PREFIX.sub("", subject or ""))
    return " ".join(_REPLY_PREFIX.sub("", text).split()).lower()


def truncate(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters with a visible note of what was left out."""
    if len(text) <= limit:
        return text
    note = f"\n\n[truncated: {len(text) - limit} more characters not shown]"
    return text[: max(0, limit - len(note))].rstrip() + note


def _drop_quotes(text: str) -> str:
    """Remove ``>`` quoted lines and the attribution line ("On ... wrote:") above each block."""
    lines = text.split("\n")
    quoted = [line.lstrip().startswith(">") for line in lines]
    drop = list(quoted)
    previous: int | None = None  # the last non-blank line
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        if (quoted[i] and previous is not None and not quoted[previous]
                and lines[previous].rstrip().endswith((":", "\uff1a"))):
            drop[previous] = True
        previous = i
    return "\n".join(line for line, dropped in zip(lines, drop, strict=True) if not dropped)


def _cut_at_header_block(text: str) -> str:
    """Cut at a quoted header block (a "From:" line and two more fields, as Outlook, Foxmail
    and forwards write it) and at the rule above it."""
    lines = text.split("\n")
    for i in range(1, len(lines) - 2):
        if _FROM_LINE.match(lines[i]) and all(_FIELD_LINE.match(x) for x in lines[i + 1:i + 3]):
            head = lines[:i]
            while head and (not head[-1].strip() or _SEPARATOR.match(head[-1])):
                head.pop()
            if head:
                return "\n".join(head)
    return text
