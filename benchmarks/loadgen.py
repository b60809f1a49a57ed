"""An HTTP load generator on aiohttp: N keep-alive connections, a fixed total or a duration.

It posts web-form messages as JSON (``Accept: application/json``), or with ``--body slack``
Slack Events API ``message`` events signed as Slack signs them, one request at a time per
connection, and records every request's latency. Run it as its own process, so that it has a
core of its own and does not share an event loop (or the GIL) with the server under test::

    python -m benchmarks.loadgen --url http://127.0.0.1:8080/form --connections 32 --duration 10

Given ``--url`` more than once, request ``seq`` goes to URL ``seq % len(urls)`` (round-robin
over several servers, each worker keeping a connection to each). ``--rate R`` paces the timed
phase: request k is not sent before k / R seconds after its start (a steady offered load, as
long as the connections keep up). ``--acked-file F`` writes the ``seq`` of every timed request
answered 2xx to F, one a line (what the server acknowledged).

The last stdout line is ``{"result": {...}}``: requests, ok, errors by status, the rate of ok
answers, latency percentiles (ms) and the CPU seconds this process used. With ``--progress``
it also prints ``{"progress": ok}`` lines twice a second, and ``{"timed": true}`` when the
warm-up ends and the timed phase starts.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import itertools
import json
import math
import secrets
import sys
import time
from array import array
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

import aiohttp

__all__ = ["LoadResult", "form_body", "percentile", "run_load", "slack_body", "slack_signer",
           "slack_user"]

ENGINES = ("raw", "aiohttp")
BODIES = ("form", "slack")
HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
_TEXT = ("Hello, my order has not arrived yet and the tracking page has not changed for two "
         "days. Could you check what is going on? Thanks!")


def form_body(seq: int, customers: int, unique_emails: bool = False) -> bytes:
    """Message ``seq`` of the run, from customer ``seq % customers``.

    ``unique_emails`` gives every message its own address (for the stateless seed recipe,
    which creates a contact per message and would get 422 for a reused email).
    """
    customer = seq % customers
    local = f"customer{customer}.m{seq}" if unique_emails else f"customer{customer}"
    return json.dumps({"name": f"Customer {customer}", "email": f"{local}@bench.example",
                       "message": f"[{seq}] {_TEXT}"}).encode()


#: The Slack workspace, channel and app of ``slack_body``; ``UBOT0001`` is the app's bot user
#: (``livebridge_slack.fake.FakeSlack``'s default).
SLACK_TEAM, SLACK_CHANNEL, SLACK_APP = "T0BENCH01", "C0BENCH01", "A0BENCH01"
SLACK_BOT_USER = "UBOT0001"
_SLACK_EPOCH = 1_764_000_000  # message ts = epoch + seq seconds: unique per message


def slack_user(customer: int) -> str:
    """The Slack user id of customer ``customer`` (``slack_body`` and the fake's users)."""
    return f"UB{customer:07d}"


def slack_body(seq: int, customers: int, run: str = "") -> bytes:
    """Message ``seq`` as Slack's Events API sends a ``message.channels`` event: from user
    ``slack_user(seq % customers)``, a top-level message in one public channel, with the
    ``blocks``, ``authorizations`` and ids a real payload carries. The ``event_id`` is
    ``run`` + ``seq``: unique as long as ``run`` differs between runs against one daemon
    (a repeated measurement reuses its ``seq`` numbers)."""
    user = slack_user(seq % customers)
    ts = f"{_SLACK_EPOCH + seq}.000100"
    text = f"[{seq}] {_TEXT}"
    event = {
        "user": user, "type": "message", "ts": ts, "client_msg_id": f"bench-{seq:012d}",
        "text": text, "team": SLACK_TEAM,
        "blocks": [{"type": "rich_text", "block_id": f"b{seq % 100000:05d}", "elements": [
            {"type": "rich_text_section", "elements": [{"type": "text", "text": text}]}]}],
        "channel": SLACK_CHANNEL, "event_ts": ts, "channel_type": "channel",
    }
    return json.dumps({
        "token": "bench-verification-token", "team_id": SLACK_TEAM, "context_team_id": SLACK_TEAM,
        "context_enterprise_id": None, "api_app_id": SLACK_APP, "event": event,
        "type": "event_callback", "event_id": f"Ev{run}{seq:011d}",
        "event_time": _SLACK_EPOCH + seq,
        "authorizations": [{"enterprise_id": None, "team_id": SLACK_TEAM,
                            "user_id": SLACK_BOT_USER, "is_bot": True,
                            "is_enterprise_install": False}],
        "is_ext_shared_channel": False,
        "event_context": f"4-eyJldCI6Im1lc3NhZ2UiLCJ0aWQiOiJUMEJFTkNIMDEifQ-{seq}",
    }).encode()


def slack_signer(secret: str) -> Callable[[bytes], dict[str, str]]:
    """The headers Slack signs a request with: ``X-Slack-Request-Timestamp`` (now, Unix
    seconds) and ``X-Slack-Signature`` = ``v0=`` + hex HMAC-SHA256 of ``v0:{ts}:{body}``."""
    key = secret.encode()

    def sign(body: bytes) -> dict[str, str]:
        ts = str(int(time.time()))
        digest = hmac.new(key, b"v0:" + ts.encode() + b":" + body, hashlib.sha256).hexdigest()
        return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": "v0=" + digest}

    return sign


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile ``q`` (0-100) of already sorted values (0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass
class LoadResult:
    """What one load run measured (times in ms, rate in ok answers per second)."""

    requests: int
    ok: int
    errors: dict[str, int]
    started_at: float  # epoch seconds when the timed phase started
    elapsed: float  # seconds from the first timed request to the last answer
    rate: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    cpu_seconds: float  # CPU time this process used during the timed phase


class _RawConnection:
    """One keep-alive HTTP/1.1 connection over asyncio streams, for JSON POSTs.

    Cheaper per request than ``aiohttp.ClientSession`` (measured ~115 against ~276 µs of
    CPU), so one load-generator core can keep a one-core server busy. Understands what the
    servers under test answer: a status line, headers and a ``Content-Length`` body.
    """

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.head = (f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                     "Content-Type: application/json\r\nAccept: application/json\r\n"
                     "Content-Length: ").encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, body: bytes, headers: Mapping[str, str] | None = None) -> int:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.reader, self.writer
        extra = "".join(f"\r\n{k}: {v}" for k, v in headers.items()).encode() if headers else b""
        writer.write(b"%s%d%s\r\n\r\n%s" % (self.head, len(body), extra, body))
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            lower = head.lower()
            at = lower.find(b"\r\ncontent-length:")
            if at < 0:
                raise ValueError("answer without Content-Length")
            length = int(lower[at + 17 : lower.index(b"\r\n", at + 2)])
            await reader.readexactly(length)
            if b"\r\nconnection: close" in lower:
                self.close()
        except BaseException:
            self.close()
            raise
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def run_load(
    url: str | Sequence[str], *, connections: int, total: int | None = None,
    duration: float | None = None, warmup: int = 0, body: Callable[[int], bytes],
    headers: Callable[[bytes], Mapping[str, str]] | None = None, seq_start: int = 0,
    engine: str = "raw", on_timed: Callable[[], None] | None = None,
    progress: Callable[[int], None] | None = None, rate: float | None = None,
    acked: list[int] | None = None,
) -> LoadResult:
    """Post ``body(seq)`` for seq = seq_start, seq_start + 1, ... until ``total`` requests
    were sent or ``duration`` seconds passed, ``connections`` at a time (after ``warmup``
    requests that are not measured), with the extra ``headers(body)`` computed at send time
    (e.g. a signature). Several URLs: request ``seq`` goes to ``urls[seq % len(urls)]``.
    ``engine``: ``raw`` (lean asyncio streams) or ``aiohttp`` (``ClientSession``).
    ``rate``: timed request k waits until k / ``rate`` s after the phase began. ``acked``
    gets the ``seq`` of every timed request answered 2xx."""
    urls = [url] if isinstance(url, str) else list(url)
    if (total is None) == (duration is None):
        raise ValueError("give exactly one of total and duration")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}")
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        seqs = itertools.count(seq_start)

        async def aiohttp_post(target: str, data: bytes, extra: Mapping[str, str] | None) -> int:
            async with session.post(target, data=data, headers={**HEADERS, **(extra or {})}
                                    ) as resp:
                await resp.read()
                return resp.status

        async def phase(count: int | None, seconds: float | None,
                        latencies: array[float] | None, statuses: Counter[str],
                        pace: float | None = None, oks: list[int] | None = None) -> None:
            began = time.perf_counter()
            deadline = None if seconds is None else began + seconds
            sent = itertools.count()

            async def worker() -> None:
                raws = [_RawConnection(u) for u in urls]
                try:
                    while True:
                        k = next(sent)
                        if count is not None and k >= count:
                            return
                        if pace is not None:
                            await asyncio.sleep(began + k / pace - time.perf_counter())
                        if deadline is not None and time.perf_counter() >= deadline:
                            return
                        seq = next(seqs)
                        data = body(seq)
                        extra = headers(data) if headers is not None else None
                        sent_at = time.perf_counter()
                        try:
                            if engine == "raw":
                                status = str(await raws[seq % len(raws)].post(data, extra))
                            else:
                                status = str(await aiohttp_post(urls[seq % len(urls)], data,
                                                                extra))
                        except (aiohttp.ClientError, OSError, TimeoutError, ValueError,
                                asyncio.IncompleteReadError) as exc:
                            status = type(exc).__name__
                        if latencies is not None and status == "200":
                            latencies.append(time.perf_counter() - sent_at)
                        if oks is not None and status.startswith("2"):
                            oks.append(seq)
                        statuses[status] += 1
                finally:
                    for raw in raws:
                        raw.close()

            await asyncio.gather(*(worker() for _ in range(connections)))

        if warmup:
            await phase(warmup, None, None, Counter())
        if on_timed is not None:
            on_timed()
        latencies: array[float] = array("d")
        statuses: Counter[str] = Counter()
        reporter = None
        if progress is not None:
            report = progress

            async def report_forever() -> None:
                while True:
                    report(statuses["200"])
                    await asyncio.sleep(0.5)

            reporter = asyncio.create_task(report_forever())
        started_at, began, cpu = time.time(), time.perf_counter(), time.process_time()
        await phase(total, duration, latencies, statuses, rate, acked)
        elapsed = time.perf_counter() - began
        cpu = time.process_time() - cpu
        if reporter is not None:
            reporter.cancel()
            report(statuses["200"])
    ordered = sorted(latencies)
    ok = statuses.pop("200", 0)
    ms = 1000.0
    return LoadResult(
        requests=ok + sum(statuses.values()), ok=ok, errors=dict(statuses),
        started_at=started_at, elapsed=elapsed, rate=ok / elapsed if elapsed else 0.0,
        p50_ms=percentile(ordered, 50) * ms, p90_ms=percentile(ordered, 90) * ms,
        p99_ms=percentile(ordered, 99) * ms, max_ms=(ordered[-1] if ordered else 0.0) * ms,
        mean_ms=(sum(ordered) / len(ordered) if ordered else 0.0) * ms, cpu_seconds=cpu,
    )


def _emit(obj: object) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loadgen",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, action="append",
                        help="where to post; repeat it to spread the requests round-robin")
    parser.add_argument("--connections", type=int, default=32)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--total", type=int, help="requests in the timed phase")
    what.add_argument("--duration", type=float, help="seconds of the timed phase")
    parser.add_argument("--warmup", type=int, default=0, help="unmeasured requests first")
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--seq-start", type=int, default=0,
                        help="first message number (runs against one store must not overlap)")
    parser.add_argument("--unique-emails", action="store_true",
                        help="a new email address per message (for the stateless seed recipe)")
    parser.add_argument("--body", choices=BODIES, default="form",
                        help="form: web-form JSON; slack: signed Slack message events")
    parser.add_argument("--signing-secret", default="",
                        help="the Slack app's signing secret (--body slack)")
    parser.add_argument("--engine", choices=ENGINES, default="raw",
                        help="raw: lean asyncio-streams client (default); aiohttp: ClientSession")
    parser.add_argument("--rate", type=float,
                        help="requests/s the timed phase offers at most (paced, not bursts)")
    parser.add_argument("--acked-file",
                        help="write the seq of every timed request answered 2xx here")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    if args.rate is not None and args.rate <= 0:
        parser.error("--rate must be > 0")

    if args.body == "slack" and not args.signing_secret:
        parser.error("--body slack needs --signing-secret")

    run_id = secrets.token_hex(4).upper()  # event ids unique to this process

    def body(seq: int) -> bytes:
        if args.body == "slack":
            return slack_body(seq, args.customers, run_id)
        return form_body(seq, args.customers, args.unique_emails)

    acked: list[int] | None = [] if args.acked_file else None
    result = asyncio.run(run_load(
        args.url, connections=args.connections, total=args.total, duration=args.duration,
        warmup=args.warmup, body=body, seq_start=args.seq_start, engine=args.engine,
        headers=slack_signer(args.signing_secret) if args.body == "slack" else None,
        on_timed=(lambda: _emit({"timed": True})) if args.progress else None,
        progress=(lambda n: _emit({"progress": n})) if args.progress else None,
        rate=args.rate, acked=acked,
    ))
    if args.acked_file:
        with open(args.acked_file, "w") as out:
            out.writelines(f"{seq}\n" for seq in sorted(acked or ()))
    _emit({"result": asdict(result)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
