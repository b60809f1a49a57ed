"""The ``livebridge`` command: run, check, plugins, emulator, status, dlq."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import yaml
from aiohttp import web

from livebridge.app import DAEMON, collect_source_types, create_app
from livebridge.config import Config, load_config
from livebridge.exceptions import LivebridgeError
from livebridge.livedesk.emulator import Emulator, Faults
from livebridge.logs import configure_logging
from livebridge.plugins import get_plugin_manager
from livebridge.server import run as serve
from livebridge.store import Store, create_store

__all__ = ["main"]


def _load(path: str) -> tuple[Config, Any]:
    pm = get_plugin_manager()
    return load_config(path, collect_source_types(pm)), pm


def cmd_run(args: argparse.Namespace) -> int:
    """Run the daemon until SIGTERM or SIGINT."""
    config, pm = _load(args.config)
    if args.host:
        config.server.host = args.host
    if args.port is not None:
        config.server.port = args.port
    configure_logging(config.logging.level, config.logging.format, config.secrets())
    app = create_app(config, pm)
    emulator = app[DAEMON].emulator
    if emulator is not None:  # agent replies typed on the emulator's page come back to us
        host = config.server.host if config.server.host not in ("0.0.0.0", "::") else "127.0.0.1"  # noqa: S104
        emulator.webhook_url = f"http://{host}:{config.server.port}{config.livedesk.webhook_path}"
        secret = config.livedesk.webhook_secret
        emulator.webhook_secret = secret.get_secret_value() if secret else None
    serve(app, config.server, shutdown_timeout=config.delivery.shutdown_timeout + 5)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Validate the config and print it as the daemon would use it, secrets masked."""
    config, _ = _load(args.config)
    data = config.masked()
    print(f"# {config.path}: OK" + ("  (Livedesk: built-in emulator)"
                                    if config.livedesk.emulated else ""))
    print(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), end="")
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    """List loaded plugins, the source types they provide and the hooks they implement."""
    pm = get_plugin_manager()
    types = collect_source_types(pm)
    rows = []
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda np: str(np[0])):
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        provided = sorted(t for t, cls in types.items()
                          if cls.__module__.split(".")[0] == getattr(plugin, "__name__", ""))
        rows.append({"name": name, "module": getattr(plugin, "__name__", repr(plugin)),
                     "source_types": provided, "hooks": hooks})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        print(f"{row['name']}  ({row['module']})")
        print(f"  source types: {', '.join(row['source_types']) or '-'}")
        print(f"  hooks: {', '.join(row['hooks'])}")
    return 0


def cmd_emulator(args: argparse.Namespace) -> int:
    """Run the Livedesk emulator on its own."""
    configure_logging()
    faults = Faults(latency=args.latency, error_rate=args.error_rate,
                    rate_limit=args.rate_limit, rate_limit_rate=args.rate_limit_rate,
                    retry_after=args.retry_after)
    emulator = Emulator(api_key=args.api_key, api_secret=args.api_secret,
                        inbox_id=args.inbox_id, faults=faults, webhook_url=args.webhook_url,
                        webhook_secret=args.webhook_secret)
    print(f"Livedesk emulator on http://{args.host}:{args.port}/ "
          f"(api key {args.api_key!r}, inbox {args.inbox_id})", flush=True)
    web.run_app(emulator.app(), host=args.host, port=args.port, access_log=None, print=None)
    return 0


def _with_store(args: argparse.Namespace, work: Callable[[Store], Awaitable[int]]) -> int:
    config, _ = _load(args.config)

    async def go() -> int:
        store = create_store(config.store, exclusive=False)
        await store.open()
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(go())


def cmd_status(args: argparse.Namespace) -> int:
    """Outbox depth, oldest age, in flight, dead letters (read from the store)."""

    async def work(store: Store) -> int:
        stats = await store.stats()
        oldest = time.time() - stats.oldest_created_at if stats.oldest_created_at else 0.0
        newest = await store.last_dead_letter()
        last = newest.reason if newest else None
        out = {"store": store.kind, "outbox_depth": stats.depth,
               "oldest_age_seconds": round(oldest, 1), "in_flight": stats.in_flight,
               "dead_letters": stats.dead_letters, "last_dead_letter_reason": last}
        print(json.dumps(out, indent=2) if args.json
              else "\n".join(f"{k}: {v}" for k, v in out.items()))
        return 0

    return _with_store(args, work)


def cmd_dlq(args: argparse.Namespace) -> int:
    """Inspect, replay or drop dead letters."""

    async def work(store: Store) -> int:
        if args.action == "list":
            for letter in await store.dead_letters(limit=args.limit):
                failed = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(letter.failed_at))
                print(f"{letter.id}\t{failed}Z\t{letter.kind}\t{letter.source}\t"
                      f"{letter.attempts} attempts\t{letter.reason[:120]}")
            return 0
        if not args.ids:
            print(f"livebridge dlq {args.action}: give one or more dead-letter ids "
                  "(see 'livebridge dlq list')", file=sys.stderr)
            return 2
        status = 0
        for letter_id in args.ids:
            if args.action == "show":
                found = await store.get_dead_letter(letter_id)
                if found is None:
                    print(f"{letter_id}: no such dead letter", file=sys.stderr)
                    status = 1
                    continue
                print(json.dumps(dataclasses.asdict(found), indent=2, default=str))
            else:
                done = await (store.replay_dead_letter(letter_id) if args.action == "replay"
                              else store.drop_dead_letter(letter_id))
                done_word = {"replay": "replayed", "drop": "dropped"}[args.action]
                print(f"{letter_id}: {done_word if done else 'no such dead letter'}")
                status = status or (0 if done else 1)
        return status

    return _with_store(args, work)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="livebridge", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", "-c", default="bridge.yaml",
                       help="the config file (default ./bridge.yaml)")
        return p

    run = with_config(sub.add_parser("run", help="run the daemon"))
    run.add_argument("--host", help="override server.host")
    run.add_argument("--port", type=int, help="override server.port")
    run.set_defaults(func=cmd_run)
    with_config(sub.add_parser("check", help="validate the config, print it with secrets masked")
                ).set_defaults(func=cmd_check)
    plugins = sub.add_parser("plugins", help="list plugins, source types and hooks")
    plugins.add_argument("--json", action="store_true")
    plugins.set_defaults(func=cmd_plugins)
    status = with_config(sub.add_parser("status", help="outbox and dead-letter figures"))
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)
    dlq = with_config(sub.add_parser("dlq", help="list, show, replay or drop dead letters"))
    dlq.add_argument("action", choices=["list", "show", "replay", "drop"])
    dlq.add_argument("ids", nargs="*")
    dlq.add_argument("--limit", type=int, default=100)
    dlq.set_defaults(func=cmd_dlq)
    emu = sub.add_parser("emulator", help="run the Livedesk emulator on its own")
    emu.add_argument("--host", default="127.0.0.1")
    emu.add_argument("--port", type=int, default=8090)
    emu.add_argument("--api-key", default="emulator")
    emu.add_argument("--api-secret", default="emulator")
    emu.add_argument("--inbox-id", type=int, default=1)
    emu.add_argument("--latency", type=float, default=0.0, help="seconds added to every call")
    emu.add_argument("--error-rate", type=float, default=0.0, help="share of 5xx answers")
    emu.add_argument("--rate-limit", type=float, default=0.0,
                     help="calls a second allowed (token bucket); beyond it 429 (0: no limit)")
    emu.add_argument("--rate-limit-rate", type=float, default=0.0, help="share of 429 answers")
    emu.add_argument("--retry-after", type=float, default=1.0,
                     help="the Retry-After of a 429, in seconds")
    emu.add_argument("--webhook-url")
    emu.add_argument("--webhook-secret")
    emu.set_defaults(func=cmd_emulator)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``livebridge`` command."""
    args = _parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except LivebridgeError as exc:
        print(f"livebridge: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return result


if __name__ == "__main__":
    sys.exit(main())
