"""Reading request bodies within caps: the raw body, and multipart forms part by part.

Malformed input becomes a ``BodyError`` with a 4xx status (never a 500), and no body is
read past the smaller of the source's cap and ``server.max_body_bytes``.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

__all__ = ["TEXT_CHARSETS", "BodyError", "FormPart", "read_body", "read_multipart", "text_codec"]

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


def text_codec(charset: str | None) -> str | None:
    """The codec of a declared ``charset`` (quotes and case ignored) if it is one of
    ``TEXT_CHARSETS``, else None: decode only with what this returns."""
    try:
        name = codecs.lookup((charset or "").strip().strip('"').strip()).name
    except (LookupError, ValueError):
        return None
    return name if name in TEXT_CHARSETS else None

#: What aiohttp raises on a malformed multipart body (truncated, bad headers, bad encoding).
_MALFORMED = (ValueError, AssertionError, LookupError, RuntimeError, HttpProcessingError)


class BodyError(Exception):
    """A body refused while reading it: ``status`` (400, 413, 415), a short fixed ``reason``
    (fit for a metric label) and, for malformed bodies, the parser's ``detail``."""

    def __init__(self, status: int, reason: str, detail: str | None = None) -> None:
        super().__init__(reason if detail is None else f"{reason}: {detail}")
        self.status = status
        self.reason = reason
        self.detail = detail


@dataclass(slots=True)
class FormPart:
    """One part of a multipart form, transfer-decoded; ``filename`` is set for files."""

    name: str
    data: bytes
    filename: str | None
    content_type: str | None
    charset: str | None


def _cap(request: web.Request, limit: int) -> int:
    return min(limit, request.client_max_size)


async def read_body(request: web.Request, limit: int) -> bytes:
    """The raw body; ``BodyError(413)`` past ``limit`` (or the server's cap)."""
    limit = _cap(request, limit)
    if request.content_length is not None and request.content_length > limit:
        raise BodyError(413, f"body too large (at most {limit} bytes)")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise BodyError(413, f"body too large (at most {limit} bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_multipart(request: web.Request, limit: int, *, max_file: int | None = None,
                         max_files: int = 20) -> list[FormPart]:
    """Every part of a ``multipart/form-data`` body, within ``limit`` bytes in all.

    Files (parts with a filename) are refused past ``max_file`` bytes each (None: only the
    total counts) and past ``max_files`` in number.
    """
    if request.content_type != "multipart/form-data":
        raise BodyError(415, "expected multipart/form-data")
    limit = _cap(request, limit)
    parts: list[FormPart] = []
    total = 0
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise BodyError(400, "nested multipart form")
            is_file = part.filename is not None
            if is_file and sum(p.filename is not None for p in parts) >= max_files:
                raise BodyError(413, f"too many files (at most {max_files})")
            data = bytearray()
            while chunk := await part.read_chunk():
                total += len(chunk)
                if total > limit:
                    raise BodyError(413, f"body too large (at most {limit} bytes)")
                if is_file and max_file is not None and len(data) + len(chunk) > max_file:
                    raise BodyError(413, f"file too large (at most {max_file} bytes)")
                data.extend(chunk)
            parts.append(FormPart(
                name=part.name or "", data=bytes(part.decode(data)), filename=part.filename,
                content_type=part.headers.get("Content-Type"), charset=part.get_charset("") or None,
            ))
    except _MALFORMED as exc:
        raise BodyError(400, "malformed multipart body", str(exc)) from None
    return parts
