"""Checking that a request comes from the chat service: a shared token or an HMAC signature."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Literal

from livebridge import equal, timestamp_problem
from livebridge_webhook.settings import HmacVerify, TokenVerify

__all__ = ["signed_payload", "verify_problem"]


def signed_payload(template: str, timestamp: str, body: bytes) -> bytes:
    """``template`` (``"{timestamp}.{body}"``) filled with the timestamp and the raw body."""
    out = bytearray()
    for part in re.split(r"(\{timestamp\}|\{body\})", template):
        if part == "{body}":
            out += body
        elif part == "{timestamp}":
            out += timestamp.encode("utf-8", "surrogateescape")
        else:
            out += part.encode()
    return bytes(out)


def _signature(verify: HmacVerify, payload: bytes) -> str:
    digest = hmac.new(verify.secret.get_secret_value().encode(), payload,
                      getattr(hashlib, verify.algorithm)).digest()
    return digest.hex() if verify.encoding == "hex" else base64.b64encode(digest).decode()


def verify_problem(verify: Literal["none"] | TokenVerify | HmacVerify,
                   headers: Mapping[str, str], body: bytes) -> str | None:
    """Why the request is not the chat service's (``unsigned``, ``bad token``,
    ``bad signature``, ``bad timestamp``, ``stale timestamp``), or None."""
    if verify == "none":
        return None
    given = headers.get(verify.header)
    if not given:
        return "unsigned"
    if isinstance(verify, TokenVerify):
        return None if equal(given, verify.token.get_secret_value()) else "bad token"
    timestamp = ""
    if verify.timestamp_header:
        timestamp = headers.get(verify.timestamp_header, "")
        if not timestamp:
            return "unsigned"
        problem = timestamp_problem(timestamp, verify.window)
        if problem:
            return problem
    expected = verify.prefix + _signature(
        verify, signed_payload(verify.signed_payload, timestamp, body))
    if verify.encoding == "hex":  # hex digits in either case
        given, expected = given.lower(), expected.lower()
    return None if equal(given, expected) else "bad signature"
