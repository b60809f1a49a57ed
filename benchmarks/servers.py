"""The reference servers and the counting emulator, each run as its own process.

    python -m benchmarks.servers bare --port P
        A bare aiohttp app: ``POST /form`` reads the JSON body and answers 200 JSON. The
        floor of what any aiohttp form handler costs (the ingest reference).
    python -m benchmarks.servers seed --port P --livedesk URL
        The seed's recipe done inline: per post, create contact, create conversation,
        create message (three Livedesk calls, no state), then answer (the delivery reference).
        It uses livebridge's own ``LivedeskClient``, so both sides pay the same HTTP client.
    python -m benchmarks.servers floor-ingest --port P --store FILE
        A floor for ingest: the bare handler plus livebridge's ``SQLiteStore.enqueue`` of the
        body (group commit, synchronous=full) before the answer. No validation, no model, no
        metrics: strictly less than any durable accept does.
    python -m benchmarks.servers floor-delivery --port P --livedesk URL [--concurrency N]
        A floor for delivery: answers at once, then makes the one Livedesk call per message
        in the background (N at a time, default 64), contact and conversation created once
        per email and kept in a dict. No store, no validation: strictly less than any bridge
        does, and nothing survives a crash.
    python -m benchmarks.servers emulator --port P --latency S [--rate-limit N]
            [--retry-after S] [--webhook-url URL --webhook-secret SECRET]
        ``livebridge emulator`` (the same ``Emulator`` and ``Faults``: latency, a token-bucket
        limit of N calls/s answered ``429`` + ``Retry-After``; outages through ``POST
        /_emulator/faults {"outage_seconds": N}``; agent replies signed to URL) plus a cheap
        ``GET /_emulator/stats`` with counts, since ``/_emulator/state`` serialises everything,
        and ``GET /_emulator/digest``: per conversation its contact's email and the ``[seq]``
        numbers of its incoming messages, in order.
    python -m benchmarks.servers slack --port P --users N
        ``livebridge_slack.fake.FakeSlack``'s Web API (bot token ``xoxb-bench``) knowing N users
        (``loadgen.slack_user(i)``), so that ``users.info`` answers at once; its
        ``GET /_fake/stats`` gives when each ``chat.postMessage`` arrived.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import secrets
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import aiohttp
from aiohttp import web
from livebridge_slack.fake import FakeSlack

from benchmarks.loadgen import slack_user
from livebridge._livedesk.client import LivedeskClient
from livebridge._livedesk.emulator import Emulator, Faults
from livebridge._logs import configure_logging
from livebridge._store.sqlite import SQLiteStore

__all__ = ["API_KEY", "API_SECRET", "INBOX_ID", "SLACK_BOT_TOKEN",
           "bare_app", "emulator_app", "floor_delivery_app", "floor_ingest_app", "seed_app",
           "slack_app"]

API_KEY, API_SECRET, INBOX_ID = "emulator", "emulator", 1
SLACK_BOT_TOKEN = "xoxb-bench"
FORM_PATH = "/form"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"alive": True})


def bare_app() -> web.Application:
    """Reads the posted form and answers: no validation, no store, no Livedesk."""

    async def submit(request: web.Request) -> web.Response:
        await request.json()
        return web.json_response({"ok": True, "status": "accepted"})

    return _form_app(submit)


def _form_app(submit: Handler) -> web.Application:
    """An app with ``submit`` at ``POST /form`` and ``GET /healthz``."""
    app = web.Application()
    app.router.add_post(FORM_PATH, submit)
    app.router.add_get("/healthz", _healthz)
    return app


CLIENT: web.AppKey[LivedeskClient] = web.AppKey("client", LivedeskClient)


def _with_client(app: web.Application, livedesk_url: str) -> web.Application:
    """Give ``app`` a ``LivedeskClient`` (``app[CLIENT]``) for its lifetime."""

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession() as session:
            app[CLIENT] = LivedeskClient(session, livedesk_url, API_KEY, API_SECRET)
            yield

    app.cleanup_ctx.append(session_ctx)
    return app


def seed_app(livedesk_url: str) -> web.Application:
    """The seed's inline recipe: three calls per post, nothing remembered."""

    async def submit(request: web.Request) -> web.Response:
        form = await request.json()
        client = request.app[CLIENT]
        contact = await client.create_contact(INBOX_ID, name=form["name"], email=form["email"])
        conversation = await client.create_conversation(INBOX_ID, int(contact["id"]))
        message = await client.create_message(int(conversation["id"]), form["message"])
        return web.json_response({"ok": True, "message_id": message["id"]})

    return _with_client(_form_app(submit), livedesk_url)


def floor_ingest_app(store_path: str) -> web.Application:
    """Reads the posted form and commits it to a SQLite outbox before answering."""
    store = SQLiteStore(store_path, synchronous="full")

    async def store_ctx(app: web.Application) -> AsyncIterator[None]:
        await store.open()
        yield
        await store.close()

    async def submit(request: web.Request) -> web.Response:
        form = await request.json()
        await store.enqueue("inbound", "form", secrets.token_hex(16), form["email"],
                            json.dumps(form), 7 * 86400)
        return web.json_response({"ok": True, "status": "accepted"})

    app = _form_app(submit)
    app.cleanup_ctx.append(store_ctx)
    return app


def floor_delivery_app(livedesk_url: str, concurrency: int) -> web.Application:
    """Answers at once; one Livedesk call per message in the background, ids in a dict."""
    conversations: dict[str, int] = {}
    locks: dict[str, asyncio.Lock] = {}
    slots = asyncio.Semaphore(concurrency)
    tasks: set[asyncio.Task[None]] = set()

    def finished(task: asyncio.Task[None]) -> None:
        tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            print(f"floor-delivery: a message was lost: {task.exception()!r}", file=sys.stderr)

    async def deliver(client: LivedeskClient, form: dict[str, str]) -> None:
        email = form["email"]
        async with locks.setdefault(email, asyncio.Lock()), slots:
            conversation = conversations.get(email)
            if conversation is None:
                contact = await client.create_contact(INBOX_ID, name=form["name"], email=email)
                created = await client.create_conversation(INBOX_ID, int(contact["id"]))
                conversation = conversations[email] = int(created["id"])
            await client.create_message(conversation, form["message"])

    async def submit(request: web.Request) -> web.Response:
        form = await request.json()
        task = asyncio.create_task(deliver(request.app[CLIENT], form))
        tasks.add(task)
        task.add_done_callback(finished)
        return web.json_response({"ok": True, "status": "accepted"})

    return _with_client(_form_app(submit), livedesk_url)


_SEQ = re.compile(r"\[(\d+)\]")


def emulator_app(latency: float, rate_limit: float = 0.0, retry_after: float = 1.0,
                 webhook_url: str | None = None,
                 webhook_secret: str | None = None) -> web.Application:
    """The Livedesk emulator with ``GET /_emulator/stats`` (counts: of records, of API calls,
    of calls by status) and ``GET /_emulator/digest``."""
    emulator = Emulator(api_key=API_KEY, api_secret=API_SECRET, inbox_id=INBOX_ID,
                        faults=Faults(latency=latency, rate_limit=rate_limit,
                                      retry_after=retry_after),
                        webhook_url=webhook_url, webhook_secret=webhook_secret)

    async def stats(request: web.Request) -> web.Response:
        state = emulator.state
        by_status: dict[str, int] = {}
        for route in state.call_summary().values():
            for status, n in route.items():
                by_status[status] = by_status.get(status, 0) + n
        return web.json_response({
            "contacts": len(state.contacts), "conversations": len(state.conversations),
            "messages": len(state.messages),
            "incoming": sum(m["message_type"] == 0 for m in state.messages.values()),
            "calls": sum(by_status.values()),
            "failed_calls": sum(n for status, n in by_status.items() if int(status) >= 300),
            "by_status": by_status,
        })

    async def digest(request: web.Request) -> web.Response:
        state = emulator.state
        seqs: dict[int, list[int]] = {cid: [] for cid in state.conversations}
        for message in state.messages.values():
            found = _SEQ.match(message["content"] or "") if message["message_type"] == 0 else None
            if found is not None:
                seqs.setdefault(message["conversation_id"], []).append(int(found[1]))
        return web.json_response({"conversations": [
            {"id": cid, "email": conversation["meta"]["sender"].get("email"),
             "seqs": seqs.get(cid, [])}
            for cid, conversation in state.conversations.items()]})

    app = emulator.app()
    app.router.add_get("/_emulator/stats", stats)
    app.router.add_get("/_emulator/digest", digest)
    return app


def slack_app(users: int) -> web.Application:
    """The fake Slack Web API with ``users`` users, each with a name and an email."""
    fake = FakeSlack(bot_token=SLACK_BOT_TOKEN)
    for i in range(users):
        fake.add_user(slack_user(i), f"customer{i}", real_name=f"Customer {i}",
                      email=f"customer{i}@bench.example")
    return fake.app()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.servers")
    parser.add_argument("kind", choices=["bare", "seed", "floor-ingest", "floor-delivery",
                                         "emulator", "slack"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--livedesk", help="the emulator's base URL (seed, floor-delivery)")
    parser.add_argument("--store", help="the SQLite file (floor-ingest)")
    parser.add_argument("--concurrency", type=int, default=64,
                        help="Livedesk calls at once (floor-delivery)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per call (emulator)")
    parser.add_argument("--rate-limit", type=float, default=0.0,
                        help="calls/s beyond which it answers 429 (emulator; 0: none)")
    parser.add_argument("--retry-after", type=float, default=1.0,
                        help="the Retry-After of its 429s, seconds (emulator)")
    parser.add_argument("--webhook-url", help="where agent replies are posted (emulator)")
    parser.add_argument("--webhook-secret", help="what they are signed with (emulator)")
    parser.add_argument("--users", type=int, default=1000, help="users it knows (slack)")
    args = parser.parse_args(argv)
    configure_logging("warning", "json")
    if args.kind in ("seed", "floor-delivery") and not args.livedesk:
        parser.error(f"{args.kind} needs --livedesk")
    if args.kind == "floor-ingest" and not args.store:
        parser.error("floor-ingest needs --store")
    if args.kind == "bare":
        app = bare_app()
    elif args.kind == "seed":
        app = seed_app(args.livedesk)
    elif args.kind == "floor-ingest":
        app = floor_ingest_app(args.store)
    elif args.kind == "floor-delivery":
        app = floor_delivery_app(args.livedesk, args.concurrency)
    elif args.kind == "slack":
        app = slack_app(args.users)
    else:
        app = emulator_app(args.latency, args.rate_limit, args.retry_after, args.webhook_url,
                           args.webhook_secret)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
