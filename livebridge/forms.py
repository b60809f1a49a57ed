"""Reading request bodies within caps: the raw body, and multipart forms part by part.

Malformed input becomes a ``BodyError`` with a 4xx status (never a 500). A body is read
whole, within the caller's cap on its size *as received* (multipart framing included) and
within ``server.body_timeout`` (408 past it); a multipart body is then split off the event
loop, in one linear pass, within caps on its parts, their headers and names.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import codecs
import functools
from dataclasses import dataclass

from aiohttp import web
from aiohttp.helpers import parse_mimetype
from aiohttp.multipart import content_disposition_filename, parse_content_disposition

from livebridge.exceptions import Refused

__all__ = ["BODY_TIMEOUT", "MAX_PARTS", "MAX_PART_HEADER_BYTES", "MAX_PART_NAME_CHARS",
           "TEXT_CHARSETS", "BodyError", "FormPart", "read_body", "read_multipart",
           "split_multipart", "text_codec"]

#: The text charsets a sender may declare: those the web and mail use, each decoded in linear
#: time by a C codec. Any other codec name (``punycode`` is quadratic, ``base64`` is not text)
#: is refused before a byte is decoded.
TEXT_CHARSETS = frozenset(codecs.lookup(name).name for name in (
    "utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le",
    "utf-32-be", "utf-7", "ascii", "latin-1", *(f"iso8859-{n}" for n in range(2, 17) if n != 12),
    *(f"cp125{n}" for n in range(9)), "cp437", "cp850", "cp866", "cp874", "cp932", "cp949",
    "cp950", "koi8-r", "koi8-u", "mac-roman", "tis-620", "shift_jis", "shift_jis_2004",
    "euc-jp", "euc-jis-2004", "iso2022-jp", "iso2022-jp-2", "iso2022-jp-3", "iso2022-kr",
    "euc-kr", "johab", "gb2312", "gbk", "gb18030", "hz", "big5", "big5hkscs",
))

#: Where the application keeps ``server.body_timeout`` (seconds to read a whole body).
BODY_TIMEOUT = web.AppKey("body_timeout", float)
#: Parts a multipart body may have, unless the caller says otherwise.
MAX_PARTS = 1000
#: Bytes of one part's header block, and header lines in it.
MAX_PART_HEADER_BYTES = 8192
MAX_PART_HEADERS = 16
#: Characters of a part's ``name``.
MAX_PART_NAME_CHARS = 256
_DEFAULT_TIMEOUT = 60.0
#: Multipart bodies up to this size are split on the event loop (a thread costs more).
_INLINE_BYTES = 64 * 1024


def text_codec(charset: str | None) -> str | None:
    """The codec of a declared ``charset`` (quotes and case ignored) if it is one of
    ``TEXT_CHARSETS``, else None: decode only with what this returns."""
    try:
        name = codecs.lookup((charset or "").strip().strip('"').strip()).name
    except (LookupError, ValueError):
        return None
    return name if name in TEXT_CHARSETS else None


class BodyError(Refused):
    """A body refused while reading it: ``status`` (400, 413, 415), a short ``reason`` and,
    for malformed bodies, the parser's ``detail``."""


@dataclass(slots=True)
class FormPart:
    """One part of a multipart form, transfer-decoded; ``filename`` is set for files."""

    name: str
    data: bytes
    filename: str | None
    content_type: str | None
    charset: str | None


def _too_large(limit: int) -> BodyError:
    return BodyError(413, f"body too large (at most {limit} bytes)")


async def read_body(request: web.Request, limit: int) -> bytes:
    """The raw body as received: ``BodyError(413)`` past ``limit`` bytes, ``BodyError(408)``
    when it takes longer than ``server.body_timeout``."""
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(request.config_dict.get(BODY_TIMEOUT, _DEFAULT_TIMEOUT)):
            async for chunk in request.content.iter_any():
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                chunks.append(chunk)
    except TimeoutError:
        raise BodyError(408, "body read timeout") from None
    return b"".join(chunks)


async def read_multipart(request: web.Request, limit: int, *, max_file: int | None = None,
                         max_files: int = 20, max_parts: int = MAX_PARTS) -> list[FormPart]:
    """Every part of a ``multipart/form-data`` body of at most ``limit`` bytes as received.

    At most ``max_parts`` parts; files (parts with a filename) are refused past ``max_file``
    bytes each (None: only the total counts) and past ``max_files`` in number.
    """
    if request.content_type != "multipart/form-data":
        raise BodyError(415, "expected multipart/form-data")
    boundary = parse_mimetype(request.headers.get("Content-Type", "")).parameters.get(
        "boundary", "")
    if not 0 < len(boundary) <= 70 or not boundary.isascii():
        raise BodyError(400, "malformed multipart body", "no usable boundary")
    body = await read_body(request, limit)
    split = functools.partial(split_multipart, body, boundary.encode(), max_parts=max_parts,
                              max_file=max_file, max_files=max_files)
    return split() if len(body) <= _INLINE_BYTES else await asyncio.to_thread(split)


def split_multipart(body: bytes, boundary: bytes, *, max_parts: int = MAX_PARTS,
                    max_file: int | None = None, max_files: int = 20) -> list[FormPart]:
    """The parts of a ``multipart/form-data`` body (RFC 7578), in one pass over its bytes."""
    delimiter = b"\r\n--" + boundary
    body = b"\r\n" + body  # the first delimiter needs no line break before it
    pos = body.find(delimiter)
    parts: list[FormPart] = []
    files = 0
    while pos >= 0:
        pos += len(delimiter)
        if body.startswith(b"--", pos):
            return parts
        line_end = body.find(b"\r\n", pos, pos + 256)  # transport padding, then CRLF
        if line_end < 0 or body[pos:line_end].strip(b" \t"):
            break
        if len(parts) >= max_parts:
            raise BodyError(413, f"too many parts (at most {max_parts})")
        start = line_end + 2
        if body.startswith(b"\r\n", start):
            head, data_start = b"", start + 2
        else:
            head_end = body.find(b"\r\n\r\n", start, start + MAX_PART_HEADER_BYTES + 4)
            if head_end < 0:
                raise BodyError(400, "malformed multipart body", "part headers too long or "
                                "unterminated")
            head, data_start = body[start:head_end], head_end + 4
        end = body.find(delimiter, data_start)
        if end < 0:
            break
        part = _part(head, body[data_start:end])
        if part.filename is not None:
            files += 1
            if files > max_files:
                raise BodyError(413, f"too many files (at most {max_files})")
            if max_file is not None and len(part.data) > max_file:
                raise BodyError(413, f"file too large (at most {max_file} bytes)")
        parts.append(part)
        pos = end
    raise BodyError(400, "malformed multipart body", "truncated or no closing delimiter")


def _part(head: bytes, data: bytes) -> FormPart:
    """One part from its header block and raw content."""
    try:
        lines = head.decode().split("\r\n") if head else []
    except UnicodeDecodeError:
        raise BodyError(400, "malformed multipart body", "part headers not UTF-8") from None
    if len(lines) > MAX_PART_HEADERS:
        raise BodyError(400, "malformed multipart body", "too many part headers")
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon:
            raise BodyError(400, "malformed multipart body", "bad part header line")
        headers[name.strip().lower()] = value.strip()
    _, params = parse_content_disposition(headers.get("content-disposition"))
    name = params.get("name", "")
    if len(name) > MAX_PART_NAME_CHARS:
        raise BodyError(400, "malformed multipart body", "part name too long")
    encoding = headers.get("content-transfer-encoding", "").lower()
    try:
        if encoding == "base64":
            data = base64.b64decode(data)
        elif encoding == "quoted-printable":
            data = binascii.a2b_qp(data)
        elif encoding not in ("", "binary", "8bit", "7bit"):
            raise BodyError(400, "malformed multipart body", "unknown transfer encoding")
    except binascii.Error as exc:
        raise BodyError(400, "malformed multipart body", f"bad {encoding}: {exc}") from None
    if headers.get("content-encoding", "identity").lower() != "identity":
        raise BodyError(415, "compressed parts are not accepted")
    content_type = headers.get("content-type")
    if content_type and content_type.lower().startswith("multipart/"):
        raise BodyError(400, "nested multipart form")
    charset = parse_mimetype(content_type).parameters.get("charset") if content_type else None
    return FormPart(name=name, data=data,
                    filename=content_disposition_filename(params, "filename"),
                    content_type=content_type, charset=charset or None)
