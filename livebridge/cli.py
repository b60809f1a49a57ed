"""The ``livebridge`` command: run, check, plugins, emulator, status, dlq."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import yaml
from aiohttp import web

from livebridge.app import DAEMON, create_app
from livebridge.config import Config, load_config, load_store_config
from livebridge.exceptions import LivebridgeError
from livebridge.livedesk.emulator import Emulator, Faults
from livebridge.logs import configure_logging
from livebridge.plugins import collect_source_types, get_plugin_manager
from livebridge.server import run as serve
from livebridge.store import DeadLetter, Store, create_store

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
    serve(app, config.server, shutdown_timeout=config.delivery.shutdown_timeout + 5)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Validate the config and print it as the daemon would use it, secrets masked."""
    config, pm = _load(args.config)
    configure_logging(config.logging.level, config.logging.format, config.secrets())
    create_app(config, pm)  # the checks ``run`` makes (routes, sources), nothing started
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
    """Run ``work`` on the store of ``args.config`` (only its ``store:`` section is read)."""
    store_config = load_store_config(args.config)

    async def go() -> int:
        store = create_store(store_config, exclusive=False)
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


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(timestamp))


def _letter(letter: DeadLetter) -> dict[str, Any]:
    """A dead letter as plain data, its payload (last) as the object it encodes."""
    data = dataclasses.asdict(letter)
    payload: Any = data.pop("payload")
    with contextlib.suppress(ValueError):  # not JSON: shown as written
        payload = json.loads(payload)
    return {**data, "payload": payload}


class _Readable(yaml.SafeDumper):
    """YAML for people: multi-line text as indented blocks, not quoted with blank lines."""


_Readable.add_representer(str, lambda dumper, text: dumper.represent_scalar(
    "tag:yaml.org,2002:str", text, style="|" if "\n" in text else None))


def cmd_dlq(args: argparse.Namespace) -> int:
    """Inspect, replay or drop dead letters."""

    async def work(store: Store) -> int:
        if args.action == "list":
            letters = await store.dead_letters(limit=args.limit)
            if args.json:
                print(json.dumps([_letter(letter) for letter in letters], indent=2))
                return 0
            for letter in letters:
                print(f"{letter.id}\t{_when(letter.failed_at)}\t{letter.kind}\t{letter.source}\t"
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
                elif args.json:
                    print(json.dumps(_letter(found), indent=2))
                else:
                    shown = {**_letter(found), "created_at": _when(found.created_at),
                             "failed_at": _when(found.failed_at)}
                    print(yaml.dump(shown, Dumper=_Readable, sort_keys=False, allow_unicode=True,
                                    width=100, explicit_start=len(args.ids) > 1), end="")
            else:
                done = await (store.replay_dead_letter(letter_id) if args.action == "replay"
                              else store.drop_dead_letter(letter_id))
                done_word = {"replay": "replayed", "drop": "dropped"}[args.action]
                print(f"{letter_id}: {done_word if done else 'no such dead letter'}")
                status = status or (0 if done else 1)
        return status

    return _with_store(args, work)


_EXAMPLES = """\
examples:
  livebridge check                 validate ./bridge.yaml, print it with secrets masked
  livebridge run --port 9000       run the daemon on another port
  livebridge status                outbox depth, oldest age, dead letters
  livebridge dlq list | head       the oldest dead letters
  livebridge dlq show ID           one dead letter with its message

'livebridge COMMAND --help' shows a command's options. After 'make run' or 'make test' the
command is .venv/bin/livebridge (or run '. .venv/bin/activate' first).
"""

#: name: (one line for the command list, what it does, examples)
_COMMANDS: dict[str, tuple[str, str, str]] = {
    "run": ("run the daemon",
            "Run the daemon with the config until SIGTERM or SIGINT (then shut down cleanly). "
            "With no Livedesk credentials it runs the built-in Livedesk emulator.",
            "livebridge run\n  livebridge run --config /etc/livebridge.yaml --port 9000"),
    "check": ("validate the config, print it with secrets masked",
              "Validate the config the way 'run' does (sources, routes and all) without "
              "starting anything, then print the effective config with secrets masked. "
              "Exits 1 listing every problem.",
              "livebridge check\n  LIVEBRIDGE_PORT=9000 livebridge check -c bridge.yaml"),
    "plugins": ("list plugins, source types and hooks",
                "List the loaded plugins, the source types they provide and the hooks they "
                "implement.",
                "livebridge plugins\n  livebridge plugins --json"),
    "status": ("outbox and dead-letter figures",
               "Show the outbox depth, the age of its oldest item, the items in flight and the "
               "dead letters, read from the store (only the config's store: section is used).",
               "livebridge status\n  livebridge status --json"),
    "dlq": ("list, show, replay or drop dead letters",
            "Dead letters are items that will not be delivered without an operator. 'list' "
            "shows the oldest ones, 'show' one in full (its message as an object), 'replay' "
            "puts them back in the outbox once the cause is fixed, 'drop' deletes them. Only "
            "the config's store: section is used.",
            "livebridge dlq list\n  livebridge dlq show ID\n  livebridge dlq show ID --json\n"
            "  livebridge dlq replay ID [ID ...]\n  livebridge dlq drop ID"),
    "emulator": ("run the Livedesk emulator on its own",
                 "Run the built-in Livedesk emulator as a standalone server, with fault "
                 "injection (latency, errors, rate limits) for testing.",
                 "livebridge emulator --port 8090\n"
                 "  livebridge emulator --error-rate 0.1 --rate-limit 5"),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="livebridge", epilog=_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Route web-form, Slack and email chats into an EngageLab Livedesk inbox, "
                    "and agents' replies back.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str) -> argparse.ArgumentParser:
        summary, description, examples = _COMMANDS[name]
        return sub.add_parser(name, help=summary, description=textwrap.fill(description, 88),
                              epilog=f"examples:\n  {examples}",
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", "-c", default="bridge.yaml",
                       help="the config file (default ./bridge.yaml)")
        return p

    run = with_config(command("run"))
    run.add_argument("--host", help="override server.host")
    run.add_argument("--port", type=int, help="override server.port")
    run.set_defaults(func=cmd_run)
    with_config(command("check")).set_defaults(func=cmd_check)
    plugins = command("plugins")
    plugins.add_argument("--json", action="store_true", help="print JSON")
    plugins.set_defaults(func=cmd_plugins)
    status = with_config(command("status"))
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=cmd_status)
    dlq = with_config(command("dlq"))
    dlq.add_argument("action", choices=["list", "show", "replay", "drop"])
    dlq.add_argument("ids", nargs="*", metavar="ID", help="dead-letter ids (see 'dlq list')")
    dlq.add_argument("--limit", type=int, default=100, help="how many 'list' shows (default 100)")
    dlq.add_argument("--json", action="store_true",
                     help="print JSON ('list', 'show'), the payload as an object")
    dlq.set_defaults(func=cmd_dlq)
    emu = command("emulator")
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
    emu.add_argument("--webhook-url", help="where to POST agent replies typed on its page")
    emu.add_argument("--webhook-secret", help="sign those webhooks with this secret")
    emu.set_defaults(func=cmd_emulator)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``livebridge`` command."""
    args = _parser().parse_args(argv)
    try:
        result: int = args.func(args)
        sys.stdout.flush()  # here, so that a closed pipe is caught below
    except BrokenPipeError:  # the reader left (``livebridge dlq list | head -1``): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # for the exit flush
        return 141  # 128 + SIGPIPE, what a shell reports for a command the signal ended
    except LivebridgeError as exc:
        print(f"livebridge: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return result


if __name__ == "__main__":
    sys.exit(main())
