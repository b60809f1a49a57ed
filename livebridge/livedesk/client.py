"""The Livedesk API channel client: the three documented calls and contact search."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import aiohttp

from livebridge.http import parse_retry_after
from livebridge.metrics import Metrics
from livebridge.model import Attachment

if TYPE_CHECKING:
    from livebridge.outbox import RateLimiter

__all__ = ["LivedeskClient", "LivedeskError", "parse_retry_after"]

_RETRYABLE_STATUS = {408, 429}
_BODY_KEPT = 2000


class LivedeskError(Exception):
    """A failed Livedesk call, classified as retryable or permanent, with the response."""

    def __init__(
        self, endpoint: str, status: int | None, body: str, *, retry_after: float | None = None
    ) -> None:
        self.endpoint = endpoint
        self.status = status
        self.body = body[:_BODY_KEPT]
        self.retry_after = retry_after
        what = f"HTTP {status}" if status is not None else "transport error"
        super().__init__(f"Livedesk {endpoint}: {what}: {self.body}")

    @property
    def retryable(self) -> bool:
        """Transport errors, timeouts, 408, 429 and 5xx are worth retrying; other 4xx not."""
        return self.status is None or self.status in _RETRYABLE_STATUS or self.status >= 500


class LivedeskClient:
    """Calls the Livedesk API channel over one shared ``aiohttp.ClientSession``."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        api_key: str,
        api_secret: str,
        *,
        timeout: float = 10.0,
        metrics: Metrics | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self._session = session
        self.base_url = base_url.rstrip("/")
        token = base64.b64encode(f"{api_key}:{api_secret}".encode()).decode()
        self._auth_only = {"Authorization": f"Basic {token}"}
        self._headers = {**self._auth_only, "Content-Type": "application/json"}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._metrics = metrics
        self._limiter = limiter

    async def create_contact(self, inbox_id: int, **fields: Any) -> dict[str, Any]:
        """``POST /contacts``; returns the contact (``payload.contact``)."""
        body = {"inbox_id": inbox_id, **{k: v for k, v in fields.items() if v not in (None, {})}}
        data = await self._call("create_contact", "POST", "/api/v2/accounts/contacts", body)
        contact: dict[str, Any] = data["payload"]["contact"]
        return contact

    async def search_contacts(self, query: str) -> list[dict[str, Any]]:
        """``GET /contacts?q=``; the first page of matches."""
        data = await self._call(
            "search_contacts", "GET", "/api/v2/accounts/contacts", params={"q": query}
        )
        payload: list[dict[str, Any]] = data.get("payload") or []
        return payload

    async def create_conversation(
        self, inbox_id: int, contact_id: int, *, custom_attributes: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """``POST /conversations`` for ``contact_id``; returns the conversation."""
        body: dict[str, Any] = {"inbox_id": inbox_id, "contact_id": contact_id}
        if custom_attributes:
            body["custom_attributes"] = custom_attributes
        conversation: dict[str, Any] = await self._call(
            "create_conversation", "POST", "/api/v2/accounts/conversations", body
        )
        return conversation

    async def create_message(
        self, conversation_id: int, content: str, *, in_reply_to: int | None = None,
        files: Sequence[Attachment] = (),
    ) -> dict[str, Any]:
        """``POST /conversations/{id}/messages`` as the customer (``message_type: incoming``).

        ``files`` (attachments with their bytes) go as ``multipart/form-data`` parts named
        ``attachments[]``, as Chatwoot takes them; without files the body is JSON.
        """
        path = f"/api/v2/accounts/conversations/{conversation_id}/messages"
        if not files:
            body: dict[str, Any] = {"content": content, "private": False,
                                    "message_type": "incoming"}
            if in_reply_to is not None:
                body["content_attributes"] = {"in_reply_to": in_reply_to}
            message: dict[str, Any] = await self._call("create_message", "POST", path, body)
            return message

        def form() -> aiohttp.FormData:
            data = aiohttp.FormData()
            data.add_field("content", content)
            data.add_field("message_type", "incoming")
            data.add_field("private", "false")
            if in_reply_to is not None:
                data.add_field("content_attributes[in_reply_to]", str(in_reply_to))
            for f in files:
                data.add_field("attachments[]", f.data or b"", filename=f.name,
                               content_type=f.content_type)
            return data

        uploaded: dict[str, Any] = await self._call("create_message", "POST", path, form=form)
        return uploaded

    async def contact_conversations(self, contact_id: int) -> list[dict[str, Any]]:
        """``GET /contacts/{id}/conversations`` (Chatwoot's; not in the seed document)."""
        data = await self._call("contact_conversations", "GET",
                                f"/api/v2/accounts/contacts/{contact_id}/conversations")
        payload: list[dict[str, Any]] = data.get("payload") or []
        return payload

    async def _call(
        self, endpoint: str, method: str, path: str, body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
        form: Callable[[], aiohttp.FormData] | None = None,
    ) -> Any:
        if self._limiter is not None:
            await self._limiter.acquire()
        started = time.monotonic()
        status: str = "error"
        try:
            headers = self._headers if form is None else self._auth_only
            async with self._session.request(
                method, self.base_url + path, json=body, params=params, headers=headers,
                data=form() if form is not None else None, timeout=self._timeout,
            ) as resp:
                status = str(resp.status)
                raw = await resp.read()  # parsed once; decoded as text only for an error
                if resp.status >= 300:
                    raise LivedeskError(
                        endpoint, resp.status, raw.decode(errors="replace"),
                        retry_after=parse_retry_after(resp.headers.get("Retry-After")),
                    )
                try:
                    return json.loads(raw)
                except ValueError as exc:
                    raise LivedeskError(endpoint, resp.status,
                                        f"not JSON: {raw.decode(errors='replace')}") from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise LivedeskError(endpoint, None, f"{type(exc).__name__}: {exc}") from exc
        finally:
            if self._metrics is not None:
                m = self._metrics
                m.labels(m.livedesk_calls, endpoint, status).inc()
                m.labels(m.livedesk_seconds, endpoint).observe(
                    time.monotonic() - started
                )
