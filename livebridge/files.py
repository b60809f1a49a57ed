"""Fetching files over HTTP with a size cap: agents' reply files (Livedesk's ``data_url``) and
files a source downloads from its provider. A file that cannot be fetched, or is too large,
is never dropped silently: it becomes a line of text (``Attachment.line``)."""

from __future__ import annotations

import asyncio
import mimetypes
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import aiohttp
import structlog

from livebridge.model import Attachment, OutboundReply

__all__ = ["FileError", "ReplyFiles", "fetch_file", "fetch_reply_files", "guess_type", "name_of"]

log = structlog.get_logger("livebridge.files")

#: How long one file download may take.
FETCH_TIMEOUT = 60.0
_CHUNK = 64 * 1024


class FileError(Exception):
    """A file that could not be fetched, or that is over its size cap."""


def guess_type(name: str) -> str:
    """The content type of a file by its name (``application/octet-stream`` if unknown)."""
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


async def fetch_file(session: aiohttp.ClientSession, url: str, limit: int, *,
                     headers: Mapping[str, str] | None = None,
                     timeout: float = FETCH_TIMEOUT) -> tuple[bytes, str | None]:
    """GET ``url``: its bytes and ``Content-Type``. Raises ``FileError`` on an error answer,
    a transport failure, a timeout, or more than ``limit`` bytes (stops reading there)."""
    try:
        async with session.get(url, headers=headers,
                               timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            if response.status != 200:
                raise FileError(f"HTTP {response.status}")
            if (response.content_length or 0) > limit:
                raise FileError(f"over the {limit}-byte limit")
            data = bytearray()
            async for chunk in response.content.iter_chunked(_CHUNK):
                data += chunk
                if len(data) > limit:
                    raise FileError(f"over the {limit}-byte limit")
            kind = response.headers.get("Content-Type")
            return bytes(data), kind.split(";")[0].strip() if kind else None
    except (aiohttp.ClientError, TimeoutError) as exc:  # InvalidURL is a ClientError
        raise FileError(type(exc).__name__) from exc


@dataclass(frozen=True, slots=True)
class ReplyFiles:
    """A reply's files ready to send (with their bytes) and its text, which lists the files
    that could not be fetched."""

    files: list[Attachment]
    text: str


def name_of(url: str) -> str:
    """A file's name from its URL: the last path segment (Chatwoot's ``data_url`` ends with
    the file name)."""
    return unquote(urlsplit(url).path.rsplit("/", 1)[-1]) or "file"


async def fetch_reply_files(session: aiohttp.ClientSession, reply: OutboundReply,
                            limit: int) -> ReplyFiles:
    """Fetch the files of an agent's reply (each up to ``limit`` bytes) at once."""

    async def fetch(attachment: Attachment) -> Attachment:
        if attachment.data is not None or not attachment.url:
            return attachment
        if attachment.size is not None and attachment.size > limit:
            log.warning("reply file over the size cap, sent as a link",
                        name=attachment.name, size=attachment.size, limit=limit)
            return attachment
        try:
            data, kind = await fetch_file(session, attachment.url, limit)
        except FileError as exc:
            log.warning("reply file not fetched, sent as a link", name=attachment.name,
                        error=str(exc))
            return attachment
        content_type = attachment.content_type
        if content_type == "application/octet-stream" and kind:
            content_type = kind
        return attachment.model_copy(update={"data": data, "size": len(data),
                                             "content_type": content_type})

    fetched = await asyncio.gather(*(fetch(a) for a in reply.attachments))
    files = [a for a in fetched if a.data is not None]
    lines = [a.line() for a in fetched if a.data is None]
    text = "\n\n".join(p for p in (reply.text.strip(), *lines) if p)
    return ReplyFiles(files, text)
