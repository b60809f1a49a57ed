"""The ``slack`` scenario: signed Slack events accepted per second against the form's rate.

Daemons with one configuration (the shipped form source and a ``type: slack`` source in events
mode, SQLite, a Livedesk emulator each, a fake Slack Web API for ``users.info``): one loaded
with signed ``message.channels`` events, another with form posts, in alternating rounds;
both as shipped (delivering what they accept meanwhile) and with delivery held (the ingest
path alone). Signature checking (and the rest of the Slack path) must not halve the form's
rate.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from benchmarks.loadgen import slack_body, slack_signer
from benchmarks.procs import Service, daemon, emulator, fake_slack, run_loadgen
from benchmarks.run import (
    CONNECTIONS,
    Bench,
    Check,
    Report,
    Table,
    _load_row,
    _Side,
    log,
    scenario,
)
from benchmarks.servers import SLACK_BOT_TOKEN

__all__ = ["SIGNING_SECRET", "slack"]

#: The Slack app's signing secret in this benchmark (a test value, like Slack's docs' example).
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
SLACK_PATH = "/slack/events"
#: What the load generator sends, per kind of load.
_LOADS: dict[str, dict[str, Any]] = {
    "form": {"path": "/form", "options": {}},
    "slack": {"path": SLACK_PATH, "options": {"body": "slack", "signing_secret": SIGNING_SECRET}},
}


async def _metrics(b: Bench, service: Service) -> dict[str, float]:
    """The daemon's ``/metrics`` samples: ``name{label=value,...}`` -> value."""
    async with b.session.get(service.url + "/metrics") as resp:
        resp.raise_for_status()
        text = await resp.text()
    return {f"{sample.name}{{{','.join(f'{k}={v}' for k, v in sorted(sample.labels.items()))}}}":
            sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def _sum(samples: dict[str, float], name: str, source: str = "") -> int:
    """The sum of ``name`` over its label sets (those with ``source=<source>``, if given)."""
    return int(sum(v for k, v in samples.items()
                   if k.startswith(name + "{") and (not source or f"source={source}" in k)))


async def _forged_status(b: Bench, bridge: Service) -> int:
    """The status a well-formed event signed with the wrong secret gets (must be 401)."""
    body = slack_body(0, 1, "FORGED")
    headers = {"Content-Type": "application/json", **slack_signer("not-the-secret")(body)}
    async with b.session.post(bridge.url + SLACK_PATH, data=body, headers=headers) as resp:
        return resp.status


@dataclass
class _Load(_Side):
    kind: str = "form"  # form | slack
    held: bool = False
    seq: int = 0  # the next message number: never repeated on one daemon
    outbox: tuple[int, ...] = ()  # the outbox depth after each run


@scenario("slack")
async def slack(b: Bench) -> Report:
    """Signed Slack events per second at 32 connections against form posts, same config."""
    customers = 200 if b.quick else 1000
    rounds = 1 if b.quick else 3
    params = {"connections": CONNECTIONS, "duration": 3 if b.quick else 6,
              "warmup": 500 if b.quick else 1000, "customers": customers}
    api = await b.start(fake_slack(b.workdir, users=customers))
    # ``conversation: sender``: one Livedesk conversation per Slack user, as the form keeps
    # one per customer (``per_customer``), so that both deliver the same work.
    source = {"type": "slack", "mode": "events", "path": SLACK_PATH,
              "signing_secret": SIGNING_SECRET, "bot_token": SLACK_BOT_TOKEN,
              "api_url": api.url + "/api/", "conversation": "sender"}
    loads: list[_Load] = []
    for held in (False, True):
        for kind in ("form", "slack"):
            what = ("form posts (reference)" if kind == "form" else "signed Slack events")
            mode = "delivery held" if held else "delivering meanwhile"
            name = f"{kind}-{'held' if held else 'shipped'}"
            # Held: Livedesk never answers, one delivery hangs, nothing else moves (as in the
            # ingest scenario). max_outbox is raised so that no run meets backpressure (503).
            desk = await b.start(emulator(b.workdir, latency=3600 if held else 0.0,
                                          name=f"emulator-{name}"))
            delivery = ({"concurrency": 1, "shutdown_timeout": 1} if held
                        else {"concurrency": b.options.concurrency})
            bridge = await b.start(daemon(
                b.workdir, desk=desk, name=f"daemon-{name}", sources=[source],
                delivery={**delivery, "max_outbox": 1_000_000},
                livedesk={"timeout": 7200} if held else {}))
            # One message per customer first: on the Slack side this fills the user cache
            # (each user's first event waits for ``users.info``); on both it makes contacts.
            warm = await run_loadgen(bridge.url + _LOADS[kind]["path"], connections=CONNECTIONS,
                                     total=customers, customers=customers,
                                     **_LOADS[kind]["options"])
            if warm.result.errors:
                raise RuntimeError(f"{name} pre-warm failed: {warm.result.errors}; "
                                   f"see {bridge.log_path}")
            loads.append(_Load(f"{what}, {mode}", bridge, reference=kind == "form", kind=kind,
                               held=held, seq=customers))
    forged = [await _forged_status(b, load.service) for load in loads if load.kind == "slack"]
    for i in range(rounds):  # alternate, so slow patches of the machine hit every side
        for load in loads:
            log(f"slack round {i + 1}/{rounds}: {load.label}")
            run = await b.load(load.service.url + _LOADS[load.kind]["path"], seq_start=load.seq,
                               **params, **_LOADS[load.kind]["options"])
            load.seq += run.result.requests + int(params["warmup"])
            load.runs.append(run)
            depth = _sum(await _metrics(b, load.service), "livebridge_outbox_depth")
            load.outbox += (depth,)
    samples = {load.service.name: await _metrics(b, load.service) for load in loads}

    rows = [_load_row(load.label, j, run, load.service.name,
                      median=run is load.median and rounds > 1, extra=[f"{load.outbox[j]:,}"])
            for load in loads for j, run in enumerate(load.runs)]
    checks = []
    for held in (False, True):
        form, ours = (next(x for x in loads if x.kind == kind and x.held == held).median
                      for kind in ("form", "slack"))
        ratio = ours.result.rate / form.result.rate
        checks.append(Check(
            f"Slack events/s vs form posts/s, {'delivery held' if held else 'delivering meanwhile'}"
            " (medians)", "≥ 50 %", f"{ratio:.0%} ({ours.result.rate:,.0f} events/s / "
            f"{form.result.rate:,.0f} posts/s)", ratio >= 0.5))
    errors = sum(sum(r.result.errors.values()) for load in loads for r in load.runs)
    slack_loads = [load for load in loads if load.kind == "slack"]
    answered = sum(r.result.ok for load in slack_loads for r in load.runs)
    accepted = sum(_sum(samples[x.service.name], "livebridge_messages_accepted_total", "slack")
                   for x in slack_loads)
    lost = {what: sum(_sum(samples[x.service.name], f"livebridge_{what}_total", "slack")
                      for x in slack_loads)
            for what in ("messages_dropped", "messages_deduplicated", "requests_rejected",
                         "slack_profile_fallbacks")}
    lost["requests_rejected"] -= forged.count(401)  # the forged probes are meant to be refused
    checks += [
        Check("every request answered 200", "0 errors", str(errors), errors == 0),
        Check("signatures are checked: an event signed with another secret, each Slack daemon",
              "401", ", ".join(map(str, forged)), all(s == 401 for s in forged)),
        Check("every signed event stored with its Slack profile (daemons' counters)",
              "0 dropped, deduplicated, refused (but the forged ones) or profile fallbacks",
              ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in lost.items())
              + f"; {accepted:,} stored (pre-warm and warm-ups included), {answered:,} timed "
              "200s", not any(lost.values()) and accepted >= answered),
    ]
    cost = {load.label: load.median.cpu_us_per_request(load.service.name) for load in loads}
    return Report(
        "slack", f"Slack events: signed message events against form posts, {CONNECTIONS} "
        "connections",
        tables=[Table(["load", "run", "requests/s", "p50 ms", "p90 ms", "p99 ms", "max ms",
                       "errors", "outbox after the run", "daemon CPU %",
                       "daemon CPU µs/request", "loadgen CPU %", "others' CPU %"], rows)],
        checks=checks,
        notes=[
            "Every daemon: the shipped form source plus a `type: slack` source (events mode, "
            f"signing secret, bot token `{SLACK_BOT_TOKEN}`, `api_url` = a fake Slack Web API "
            f"in its own process knowing the {customers:,} users, `conversation: sender`: one "
            "conversation per user, as the form's `per_customer`), SQLite with "
            "synchronous=full, max_outbox 1,000,000; a fresh daemon and emulator per side. "
            "Delivering meanwhile: as shipped, to an emulator answering at once (delivery."
            f"concurrency {b.options.concurrency}, rate_limit 0). Delivery held: its Livedesk "
            "never answers, so one delivery waits and nothing else moves.",
            f"Pre-warm: one message per customer ({customers:,}) to each daemon, so that "
            "every Slack user's profile is cached (`users.info` is not in the timed runs) and "
            f"every contact exists. Then per run {params['warmup']:,} warm-up requests and "
            f"{params['duration']} s timed; {rounds} alternating round(s), each started on an "
            "idle machine; the checks use each side's median run (by rate).",
            "Slack load: `message.channels` events as Slack sends them (a realistic payload "
            "with blocks and authorizations, about 1.1 KB, a unique `event_id` each, users "
            f"round-robin over {customers:,}), signed at send time by the load generator: "
            "`X-Slack-Request-Timestamp` now and `X-Slack-Signature` = `v0=` + HMAC-SHA256 of "
            "`v0:{timestamp}:{body}` with the signing secret.",
            "Daemon CPU per request (median runs): " + "; ".join(
                f"{label} {us:.0f} µs" for label, us in cost.items()) + ". Delivering "
            "meanwhile, the two loads split the daemon's one core differently between "
            "accepting and delivering: the outbox column shows what was accepted but not yet "
            "delivered when each run ended (0: delivery kept up). A side that lets the "
            "outbox grow accepts faster for as long as it grows; the held pair compares the "
            "ingest paths alone.",
        ],
        data={"params": params, "runs": {x.label: [asdict(r) for r in x.runs] for x in loads},
              "outbox": {x.label: x.outbox for x in loads}, "cpu_us_per_request": cost,
              "metrics": samples, "accepted": accepted, "lost": lost, "forged": forged},
    )
