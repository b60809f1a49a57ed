"""Agent replies as an HTTP request built from the ``reply:`` template."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote

import aiohttp

from livebridge import OutboundReply, Permanent, Retryable, parse_retry_after
from livebridge_webhook.settings import PLACEHOLDER, ReplySettings

__all__ = ["render", "send"]

#: How much of a refusing answer is kept with the dead letter.
_RESPONSE_CHARS = 500


def _values(reply: OutboundReply) -> dict[str, Any]:
    """What the placeholders stand for: the reply's own fields and its thread's context.
    ``text`` lists the agent's files (name, type, size, link): a JSON webhook takes no file,
    and a file is never dropped silently."""
    text = "\n\n".join(p for p in (reply.text, *(a.line() for a in reply.attachments)) if p)
    return {**reply.reply_context, "text": text, "thread": reply.thread_key,
            "agent_name": reply.agent_name, "conversation_id": reply.conversation_id}


def _fill(template: str, values: dict[str, Any], *, url: bool = False) -> Any:
    """``template`` with its placeholders filled; a template that is one placeholder alone
    keeps the value's JSON type (in a body)."""
    whole = re.fullmatch(PLACEHOLDER, template)
    if whole and whole.group(1) and not url:
        return values.get(whole.group(1))

    def sub(match: re.Match[str]) -> str:
        if not match.group(1):
            return match.group(0)[0]  # "{{" → "{", "}}" → "}"
        value = values.get(match.group(1))
        text = "" if value is None else value if isinstance(value, str) else json.dumps(value)
        return quote(text, safe="") if url else text

    return PLACEHOLDER.sub(sub, template)


def _body(node: Any, values: dict[str, Any]) -> Any:
    if isinstance(node, str):
        return _fill(node, values)
    if isinstance(node, dict):
        return {k: _body(v, values) for k, v in node.items()}
    if isinstance(node, list):
        return [_body(v, values) for v in node]
    return node


def render(settings: ReplySettings, reply: OutboundReply) -> tuple[str, Any]:
    """The URL and the JSON body of ``reply``."""
    values = _values(reply)
    return str(_fill(settings.url, values, url=True)), _body(settings.body, values)


async def send(http: aiohttp.ClientSession, settings: ReplySettings,
               reply: OutboundReply) -> None:
    """Send ``reply``; raise ``Retryable`` on 408, 429, 5xx and transport errors (honouring
    ``Retry-After``), ``Permanent`` on any other answer that is not 2xx."""
    url, body = render(settings, reply)
    headers = {k: v.get_secret_value() for k, v in settings.headers.items()}
    try:
        async with http.request(settings.method, url, json=body, headers=headers,
                                allow_redirects=False,
                                timeout=aiohttp.ClientTimeout(total=settings.timeout)) as resp:
            if 200 <= resp.status < 300:
                return
            answer = (await resp.content.read(4 * _RESPONSE_CHARS)).decode(
                errors="replace")[:_RESPONSE_CHARS]  # not the whole of a huge error body
            message = f"webhook reply: HTTP {resp.status}"
            if resp.status in (408, 429) or resp.status >= 500:
                raise Retryable(message, response=answer,
                                retry_after=parse_retry_after(resp.headers.get("Retry-After")))
            raise Permanent(message, response=answer)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise Retryable(f"webhook reply: {type(exc).__name__}") from exc
