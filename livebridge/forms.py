"""Reading request bodies within caps: the raw body, and multipart forms part by part.

Malformed input becomes a ``BodyError`` with a 4xx status (never a 500), and no body is
read past the smaller of the source's cap and ``server.max_body_bytes``.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

__all__ = ["BodyError", "FormPart", "read_body", "read_multipart"]

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
