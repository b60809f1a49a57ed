"""Amazon SNS message signatures (``SignatureVersion`` 1: SHA1, 2: SHA256), as AWS documents
them: the canonical string of the message's fields, RSA PKCS#1 v1.5, and a certificate from
``SigningCertURL`` on an ``sns.<region>.amazonaws.com`` host."""

from __future__ import annotations

import asyncio
import base64
import re
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

__all__ = ["CertificateUnavailable", "Fetch", "SNSError", "SNSVerifier", "canonical",
           "is_sns_url"]

#: Fetches a PEM certificate by URL (injectable, so tests run offline).
Fetch = Callable[[str], Awaitable[bytes]]

_HOST = re.compile(r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")
_NOTIFICATION = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
_SUBSCRIPTION = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn",
                 "Type")
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}


class SNSError(Exception):
    """The message is not authentically from SNS (the text says why)."""


class CertificateUnavailable(SNSError):
    """The signing certificate could not be fetched now; worth a retry."""


def is_sns_url(url: str) -> bool:
    """Whether ``url`` is https on an SNS host (for ``SigningCertURL`` and ``SubscribeURL``)."""
    parts = urlsplit(url)
    return (parts.scheme == "https" and _HOST.match(parts.hostname or "") is not None
            and parts.username is None and parts.port in (None, 443))


def canonical(message: Mapping[str, Any]) -> bytes:
    """The string SNS signs: ``Name\\nvalue\\n`` for each signed field present, in order."""
    keys = _NOTIFICATION if message.get("Type") == "Notification" else _SUBSCRIPTION
    return "".join(f"{key}\n{message[key]}\n" for key in keys
                   if message.get(key) is not None).encode()


class SNSVerifier:
    """Checks SNS signatures. Certificates are fetched only from ``.pem`` URLs on SNS hosts,
    once at a time per URL, at most ``FETCHES_PER_MINUTE`` a minute; the few good ones are
    cached (LRU), and a URL that failed is not fetched again for ``FAILURE_TTL`` seconds."""

    FETCHES_PER_MINUTE = 10
    FAILURE_TTL = 30.0

    def __init__(self, fetch: Fetch, cache_size: int = 16) -> None:
        self.fetch_certificate = fetch
        self._cache: OrderedDict[str, x509.Certificate] = OrderedDict()
        self._cache_size = cache_size
        self._failed: OrderedDict[str, tuple[float, SNSError]] = OrderedDict()
        self._pending: dict[str, asyncio.Future[x509.Certificate]] = {}
        self._fetched: deque[float] = deque()  # when the last fetches started

    async def verify(self, message: Mapping[str, Any]) -> None:
        """Raise ``SNSError`` unless ``message`` carries a valid SNS signature."""
        algorithm = _HASHES.get(str(message.get("SignatureVersion")))
        if algorithm is None:
            raise SNSError("unknown SignatureVersion")
        missing = [k for k in ("Message", "MessageId", "Timestamp", "TopicArn", "Type")
                   if not isinstance(message.get(k), str)]
        if missing or not isinstance(message.get("Signature"), str):
            raise SNSError(f"missing fields: {', '.join(missing) or 'Signature'}")
        url = str(message.get("SigningCertURL") or "")
        if not (is_sns_url(url) and urlsplit(url).path.endswith(".pem")):
            raise SNSError("SigningCertURL is not a .pem URL on an SNS host")
        certificate = await self._certificate(url)
        now = datetime.now(UTC)
        if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
            raise SNSError("signing certificate expired or not yet valid")
        key = certificate.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise SNSError("signing certificate has no RSA key")
        try:
            signature = base64.b64decode(message["Signature"], validate=True)
            key.verify(signature, canonical(message), padding.PKCS1v15(), algorithm())
        except (InvalidSignature, ValueError) as exc:  # ValueError: not base64, or not ASCII
            raise SNSError("bad signature") from exc

    async def _certificate(self, url: str) -> x509.Certificate:
        if url in self._cache:
            self._cache.move_to_end(url)
            return self._cache[url]
        now = time.monotonic()
        if url in self._failed:
            until, error = self._failed[url]
            if now < until:
                raise error
            del self._failed[url]
        if url not in self._pending:  # one fetch per URL, however many requests wait on it
            while self._fetched and self._fetched[0] < now - 60:
                self._fetched.popleft()
            if len(self._fetched) >= self.FETCHES_PER_MINUTE:
                raise CertificateUnavailable("too many certificate fetches: try again later")
            self._fetched.append(now)
            self._pending[url] = asyncio.ensure_future(self._load(url))
        try:
            return await asyncio.shield(self._pending[url])
        except SNSError as error:
            self._failed[url] = (time.monotonic() + self.FAILURE_TTL, error)
            while len(self._failed) > 4 * self._cache_size:
                self._failed.popitem(last=False)
            raise

    async def _load(self, url: str) -> x509.Certificate:
        try:
            try:
                pem = await self.fetch_certificate(url)
            except Exception as exc:
                raise CertificateUnavailable(
                    f"cannot fetch the signing certificate: {exc}") from exc
            try:
                certificate = x509.load_pem_x509_certificate(pem)
            except ValueError as exc:
                raise SNSError("the signing certificate is not a PEM certificate") from exc
        finally:
            del self._pending[url]
        self._cache[url] = certificate
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return certificate
