"""Side-by-side benchmarks: livebridge against a reference, in the same run.

    python -m benchmarks.run [--only ingest,delivery,memory] [--quick] [--update-results]
                             [--baseline REV | --no-baseline]

Each scenario is one async function registered with ``@scenario``; it starts what it needs
as real subprocesses (``benchmarks.procs``), drives them with the load generator (its own
process) and returns a ``Report``: tables, pass/fail checks against the targets, notes.
The run writes ``benchmarks/out/<stamp>/results.{md,json}`` (logs and configs beside them);
``--update-results`` also puts the tables into ``benchmarks/RESULTS.md``. Scenarios that
compare against the baseline engine (``--baseline``, an older commit) get it from
``Bench.baseline()``: checked out and installed once per run, in the run's directory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shlex
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from benchmarks.procs import (
    REPO,
    Baseline,
    CpuWatch,
    LoadRun,
    Service,
    daemon,
    emulator,
    reference,
    run_loadgen,
)
from benchmarks.procs import wait_for_quiet as _wait_for_quiet

__all__ = ["SCENARIOS", "Bench", "Check", "Report", "main", "scenario"]

RESULTS_MD = REPO / "benchmarks" / "RESULTS.md"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
MB = 1024 * 1024
CONNECTIONS = 32
#: Above this share of one core used by other processes during a timed phase, the phase is
#: measured again (up to ``_ATTEMPTS`` times); what remains is shown in the tables.
FOREIGN_LIMIT = 15.0
_ATTEMPTS = 3


# --- reports ----------------------------------------------------------------------------------


@dataclass
class Check:
    """One target: what was wanted, what was measured, and whether it holds."""

    name: str
    target: str
    measured: str
    ok: bool


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    caption: str = ""

    def markdown(self) -> str:
        lines = [f"| {' | '.join(self.headers)} |", f"|{'|'.join('---' for _ in self.headers)}|"]
        lines += [f"| {' | '.join(row)} |" for row in self.rows]
        return (f"{self.caption}\n\n" if self.caption else "") + "\n".join(lines)


@dataclass
class Report:
    """What a scenario found."""

    name: str
    title: str
    tables: list[Table] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def markdown(self) -> str:
        parts = [f"### {self.title}", *(t.markdown() for t in self.tables)]
        if self.checks:
            parts.append(Table(["target", "wanted", "measured", "result"], [
                [c.name, c.target, c.measured, "PASS" if c.ok else "**FAIL**"]
                for c in self.checks]).markdown())
        parts += [f"- {n}" for n in self.notes]
        parts.append(f"_Scenario time: {self.seconds:.0f} s._")
        return "\n\n".join(parts)


# --- the context every scenario gets ----------------------------------------------------------


class Engines:
    """The run's baseline engine (``--baseline REV``; none with ``--no-baseline``), checked
    out and installed when a scenario first asks for it, removed when the run ends."""

    def __init__(self, rev: str | None, outdir: Path) -> None:
        self.rev = rev
        self.outdir = outdir
        self._baseline: Baseline | None = None
        self._ready = False
        self._lock = asyncio.Lock()

    async def baseline(self) -> Baseline | None:
        if self.rev is None:
            return None
        async with self._lock:
            if self._baseline is None:
                log(f"preparing the baseline engine {self.rev} (git worktree and venv)")
                self._baseline = Baseline(self.rev, self.outdir)
                await self._baseline.prepare()
                self._ready = True
            elif not self._ready:
                raise RuntimeError(f"the baseline engine {self.rev} could not be prepared")
        return self._baseline

    async def close(self) -> None:
        if self._baseline is not None and self._baseline.path.exists():
            await self._baseline.remove()


@dataclass
class Bench:
    """Where a scenario works, how big it runs, and the processes it started."""

    workdir: Path
    quick: bool
    options: argparse.Namespace
    stack: contextlib.AsyncExitStack
    session: aiohttp.ClientSession
    engines: Engines
    running: list[Service] = field(default_factory=list)

    async def baseline(self) -> Baseline | None:
        """The baseline engine to run beside this commit (None: ``--no-baseline``)."""
        return await self.engines.baseline()

    async def start(self, service: Service) -> Service:
        """Start ``service``; it is stopped when the scenario ends (or by ``stop``)."""
        await service.start()
        self.running.append(service)
        self.stack.push_async_callback(self.stop, service)
        return service

    async def stop(self, service: Service) -> None:
        await service.stop()
        if service in self.running:
            self.running.remove(service)

    async def quiet(self) -> None:
        """Wait until the machine is idle: other people's processes (they share the two
        cores) and our own servers' leftover work (a delivery backlog) are done."""
        waited = await _wait_for_quiet()
        if waited > 2:
            log(f"  waited {waited:.0f} s for the machine to be quiet")

    async def load(self, url: str, **options: Any) -> LoadRun:
        """One timed load run, started on a quiet machine and measured again (up to
        ``_ATTEMPTS`` times) if others used the CPU meanwhile. Only for runs that can be
        repeated against the same server (ingest); see ``load_once``."""
        for attempt in range(1, _ATTEMPTS + 1):
            run = await self.load_once(url, **options)
            if run.foreign_percent <= FOREIGN_LIMIT or attempt == _ATTEMPTS:
                return run
            log(f"  others used {run.foreign_percent:.0f}% of a core: measuring again")
        raise AssertionError("unreachable")

    async def load_once(self, url: str, **options: Any) -> LoadRun:
        await self.quiet()
        return await run_loadgen(url, watch=list(self.running), **options)

    async def stats(self, emu: Service) -> dict[str, Any]:
        return dict(await emu.get_json("/_emulator/stats", self.session))

    async def prewarm(self, url: str | Sequence[str], emu: Service,
                      customers: int) -> dict[str, int]:
        """One post per customer to ``url`` (several: round-robin), wait until all are in
        ``emu`` and the machine is quiet; returns the emulator's counts then (a timed phase
        counts its calls from there). Raises if a post failed."""
        warm = await run_loadgen(url, connections=CONNECTIONS, total=customers,
                                 customers=customers)
        if warm.result.errors:
            raise RuntimeError(f"pre-warm posts failed: {warm.result.errors}; see the logs in "
                               f"{self.workdir}")
        await self.until_messages(emu, customers, timeout=120, every=0.1)
        counts = await self.stats(emu)
        await self.quiet()
        return counts

    async def until_messages(self, emu: Service, count: int, timeout: float = 120.0,
                             every: float = 0.01, key: str = "messages") -> float:
        """Poll the emulator until it holds ``count`` messages (``key``: or another of its
        stats, e.g. ``incoming``); returns that epoch time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (await self.stats(emu))[key] >= count:
                return time.time()
            dead = [s.name for s in self.running if s.proc and s.proc.returncode is not None]
            if dead:
                raise RuntimeError(f"{', '.join(dead)} exited: see the logs in {self.workdir}")
            await asyncio.sleep(every)
        raise TimeoutError(f"{emu.name}: fewer than {count} messages after {timeout} s "
                           f"(see the logs in {self.workdir})")


Scenario = Callable[[Bench], Awaitable[Report]]
#: The scenarios by name, in the order they run. Add one with ``@scenario("name")``.
SCENARIOS: dict[str, Scenario] = {}


def scenario(name: str) -> Callable[[Scenario], Scenario]:
    def register(fn: Scenario) -> Scenario:
        SCENARIOS[name] = fn
        return fn

    return register


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _ms(value: float) -> str:
    return f"{value:.1f}"


def _median_run(runs: list[LoadRun]) -> LoadRun:
    return sorted(runs, key=lambda r: r.result.rate)[len(runs) // 2]


# --- scenarios --------------------------------------------------------------------------------


def _load_row(label: str, j: int, run: LoadRun, service: str, *, median: bool,
              extra: Sequence[str] = ()) -> list[str]:
    """One row of a load table: the run's rate, latencies and errors, ``extra`` columns, then
    the CPU of ``service``, of the load generator and of everything else."""
    r = run.result
    return [f"{label}{' **(median)**' if median else ''}", f"{j + 1}", f"{r.rate:,.0f}",
            _ms(r.p50_ms), _ms(r.p90_ms), _ms(r.p99_ms), _ms(r.max_ms),
            str(sum(r.errors.values())), *extra, f"{run.cpu_percent(service):.0f}",
            f"{run.cpu_us_per_request(service):.0f}", f"{run.loadgen_cpu_percent:.0f}",
            f"{run.foreign_percent:.0f}"]


def _delivery_outcome(run: LoadRun, done_at: float, messages: int, before: dict[str, Any],
                      after: dict[str, Any]) -> dict[str, Any]:
    """The figures of a timed delivery: time from the first post until the last message is in
    the emulator, the rate, and the emulator's counts (calls counted from ``before``)."""
    seconds = done_at - run.result.started_at
    return {"seconds": seconds, "rate": messages / seconds, "run": run,
            "calls_per_message": (after["calls"] - before["calls"]) / messages,
            "failed_calls": after["failed_calls"], "contacts": after["contacts"],
            "conversations": after["conversations"], "messages": after["messages"]}


@dataclass
class _Side:
    label: str
    service: Service
    reference: bool = False
    runs: list[LoadRun] = field(default_factory=list)

    @property
    def median(self) -> LoadRun:
        return _median_run(self.runs)


@scenario("ingest")
async def ingest(b: Bench) -> Report:
    """Form posts accepted per second at 32 connections: the daemon against a bare handler."""
    rounds = 1 if b.quick else 3
    params = {"connections": CONNECTIONS, "duration": 3 if b.quick else 10,
              "warmup": 500 if b.quick else 2000, "customers": 1000}
    bare = await b.start(reference("bare", b.workdir))
    floor = await b.start(reference("floor-ingest", b.workdir))
    emu = await b.start(emulator(b.workdir, latency=0.0))
    bridge = await b.start(daemon(b.workdir, desk=emu,
                                  delivery={"concurrency": b.options.concurrency}))
    # The ingest path alone: Livedesk never answers, one delivery hangs, nothing else moves.
    stalled = await b.start(emulator(b.workdir, latency=3600, name="emulator-stalled"))
    held = await b.start(daemon(b.workdir, desk=stalled, name="daemon-held",
                                livedesk={"timeout": 7200},
                                # the outbox only grows: its backpressure bound must not answer
                                # 503 within the run (three runs reach 100,000 on a fast machine)
                                delivery={"concurrency": 1, "shutdown_timeout": 1,
                                          "attempt_timeout": 7200, "max_outbox": 10_000_000}))
    floor_side = _Side("floor: bare + SQLite outbox, no validation (reference)", floor,
                       reference=True)
    sides = [_Side("bare aiohttp handler (reference)", bare, reference=True), floor_side,
             _Side("livebridge, delivering meanwhile (as shipped)", bridge),
             _Side("livebridge, delivery held (ingest path alone)", held)]
    seq = 0
    for i in range(rounds):  # alternate, so slow patches of the machine hit every side
        for side in sides:
            log(f"ingest round {i + 1}/{rounds}: {side.label}")
            run = await b.load(side.service.url + "/form", seq_start=seq, **params)
            seq += run.result.requests + params["warmup"]
            side.runs.append(run)
    delivered = (await b.stats(emu))["messages"]

    rows = [_load_row(side.label, j, run, side.service.name,
                      median=run is side.median and rounds > 1)
            for side in sides for j, run in enumerate(side.runs)]
    ref = sides[0].median
    checks = []
    for side in sides:
        if side.reference:
            continue
        ours = side.median
        ratio = ours.result.rate / ref.result.rate
        checks += [
            Check(f"{side.label}: rate vs bare handler (medians)", "≥ 50 %",
                  f"{ratio:.0%} ({ours.result.rate:,.0f} / {ref.result.rate:,.0f} posts/s)",
                  ratio >= 0.5),
            Check(f"{side.label}: p99 answer latency (median run)", "≤ 15 ms",
                  f"{ours.result.p99_ms:.1f} ms", ours.result.p99_ms <= 15.0),
        ]
    errors = sum(sum(r.result.errors.values()) for side in sides for r in side.runs)
    checks.append(Check("every post answered 200", "0 errors", str(errors), errors == 0))
    cost = {side.label: side.median.cpu_us_per_request(side.service.name) for side in sides}
    bare_cost = cost[sides[0].label]
    least = floor_side.median.result
    return Report(
        "ingest", "Ingest: form posts at 32 connections",
        tables=[Table(["server", "run", "posts/s", "p50 ms", "p90 ms", "p99 ms", "max ms",
                       "errors", "server CPU %", "server CPU µs/post", "loadgen CPU %",
                       "others' CPU %"], rows)],
        checks=checks,
        notes=[
            f"The floor is what any durable accept must at least do, and nothing else: read "
            f"the JSON, commit it to livebridge's SQLite outbox (group commit, "
            f"synchronous=full), answer. It reached {least.rate / ref.result.rate:.0%} of the "
            f"bare handler ({least.rate:,.0f} posts/s), p99 {least.p99_ms:.1f} ms. Its "
            "SQLite file, like the held daemon's outbox, grows from run to run.",
            f"Each run: {params['warmup']:,} warm-up posts, then {params['duration']} s timed; "
            f"{rounds} alternating round(s), each started once the machine is idle; the "
            "checks use each side's median run (by rate).",
            "CPU per post of the server process (all its threads), which does not depend on "
            "the load generator: " + "; ".join(
                f"{label} {us:.0f} µs ({us / bare_cost:.1f}x)" for label, us in cost.items())
            + ".",
            f"As shipped, the daemon delivers what it accepts while accepting (to a separate "
            f"emulator, 0 ms latency; delivery.concurrency {b.options.concurrency}, rate_limit "
            f"0): {delivered:,} messages were delivered by the end. Delivery held: its Livedesk "
            "never answers, so one delivery waits and nothing else moves; the outbox only "
            "grows. Both use the shipped form source and SQLite with synchronous=full.",
        ],
        data={"params": params, "runs": {s.label: [asdict(r) for r in s.runs] for s in sides},
              "cpu_us_per_post": cost, "delivered": delivered},
    )


async def _delivery_side(b: Bench, side: str, customers: int, messages: int, latency: float,
                         round_no: int) -> dict[str, Any]:
    """One side, one round, on a fresh emulator: ``bridge`` (the daemon) and ``floor`` (the
    floor-delivery server) pre-warm ``customers`` threads first; ``seed`` (the inline recipe,
    nothing remembered) gives every post its own email, as the emulator refuses a reused one.
    Then ``messages`` posts are timed until all are in the emulator."""
    emu = await b.start(emulator(b.workdir, latency=latency, name=f"emulator-{side}{round_no}"))
    if side == "bridge":
        server = daemon(b.workdir, desk=emu, name=f"daemon-delivery{round_no}",
                        delivery={"concurrency": b.options.concurrency})
    elif side == "floor":
        server = reference("floor-delivery", b.workdir, livedesk=emu,
                           concurrency=b.options.concurrency)
    else:
        server = reference("seed", b.workdir, livedesk=emu)
    url = (await b.start(server)).url + "/form"
    if side == "seed":
        await b.quiet()
        before = {"calls": 0, "messages": 0}
    else:
        before = await b.prewarm(url, emu, customers)
    timed = asyncio.create_task(run_loadgen(url, watch=list(b.running), connections=CONNECTIONS,
                                            total=messages, customers=customers,
                                            seq_start=customers, unique_emails=side == "seed"))
    done_at = await b.until_messages(emu, before["messages"] + messages)
    run = await timed
    after = await b.stats(emu)
    await b.stop(server)
    await b.stop(emu)
    return _delivery_outcome(run, done_at, messages, before, after)


@scenario("delivery")
async def delivery(b: Bench) -> Report:
    """Known threads through a 20 ms Livedesk: the outbox design against the inline seed."""
    customers, messages = (200, 800) if b.quick else (1000, 4000)
    rounds = 1 if b.quick else 3
    latency = 0.020
    labels = {"seed": "seed recipe inline (reference)",
              "floor": "floor: one call per message in the background, no store (reference)",
              "bridge": "livebridge (outbox)"}
    results: dict[str, list[dict[str, Any]]] = {side: [] for side in labels}
    for i in range(rounds):
        for side, label in labels.items():
            log(f"delivery round {i + 1}/{rounds}: {label}")
            results[side].append(
                await _delivery_side(b, side, customers, messages, latency, i))

    def median(side: str) -> dict[str, Any]:
        ordered = sorted(results[side], key=lambda x: x["rate"])
        return ordered[len(ordered) // 2]

    watched = {"seed": "seed", "floor": "floor-delivery", "bridge": "daemon-delivery"}
    rows = []
    for side, label in labels.items():
        for j, x in enumerate(results[side]):
            run: LoadRun = x["run"]
            name = next(k for k in run.cpu if k.startswith(watched[side]))
            rows.append([
                f"{label}{' **(median)**' if x is median(side) and rounds > 1 else ''}",
                str(j + 1), f"{x['seconds']:.2f}", f"{x['rate']:,.0f}",
                f"{x['calls_per_message']:.3f}", f"{x['contacts']:,}",
                f"{x['conversations']:,}", f"{x['messages']:,}",
                _ms(run.result.p50_ms), _ms(run.result.p99_ms),
                str(sum(run.result.errors.values()) + x["failed_calls"]),
                f"{run.cpu_percent(name):.0f}", f"{run.foreign_percent:.0f}"])
    ref, floor, ours = median("seed"), median("floor"), median("bridge")
    ratio = ours["rate"] / ref["rate"]
    errors = sum(sum(x["run"].result.errors.values()) + x["failed_calls"]
                 for side in results.values() for x in side)
    calls_ok = all(abs(x["calls_per_message"] - 1.0) < 1e-9 for x in results["bridge"])
    contacts_ok = all(x["contacts"] == customers for x in results["bridge"])
    return Report(
        "delivery", f"Delivery: {messages:,} messages to {customers:,} known customers, "
        f"Livedesk +{latency * 1000:.0f} ms per call",
        tables=[Table(["side", "run", "time s", "msgs/s", "API calls/msg", "contacts",
                       "conversations", "messages in emulator", "answer p50 ms",
                       "answer p99 ms", "errors", "server CPU %", "others' CPU %"], rows)],
        checks=[
            Check("delivered msgs/s vs seed inline (medians)", "≥ 4x",
                  f"{ratio:.1f}x ({ours['rate']:,.0f} / {ref['rate']:,.0f} msgs/s)",
                  ratio >= 4.0),
            Check("API calls per message, known threads (every run)", "1.0",
                  ", ".join(f"{x['calls_per_message']:.3f}" for x in results["bridge"]),
                  calls_ok),
            Check("contacts in Livedesk (every run)", f"{customers:,} (one per customer)",
                  ", ".join(f"{x['contacts']:,}" for x in results["bridge"]), contacts_ok),
            Check("no failed posts or Livedesk calls", "0", str(errors), errors == 0),
        ],
        notes=[
            f"The floor does strictly less than any bridge: it answers at once and makes the "
            f"one Livedesk call per message in the background ({b.options.concurrency} at a "
            f"time), with contact and conversation created once per customer and kept in a "
            f"dict; no store, no validation, nothing survives a crash. It reached "
            f"{floor['rate'] / ref['rate']:.1f}x the seed ({floor['rate']:,.0f} msgs/s).",
            f"Time = from the first timed post to the moment the emulator holds every message "
            f"(polled every 10 ms), for every side. {CONNECTIONS} connections; {rounds} "
            "alternating round(s), each side on a fresh emulator.",
            f"livebridge and the floor: pre-warm first ({customers:,} posts, one per "
            f"customer, all delivered), then {messages:,} posts ({messages // customers} per "
            "customer, round-robin); API calls are counted over the timed phase only. delivery: "
            f"concurrency {b.options.concurrency}, rate_limit 0 (no client-side limit), "
            "store.sqlite_synchronous full.",
            "Seed recipe: per post create contact, create conversation, create message, then "
            "answer (3 calls, no state); each message gets its own email address, since the "
            "emulator refuses a reused one (422), the same as Livedesk.",
        ],
        data={side: [{k: (asdict(v.result) if isinstance(v, LoadRun) else v)
                      for k, v in x.items()} for x in xs] for side, xs in results.items()}
        | {"ratio": ratio},
    )


@scenario("memory")
async def memory(b: Bench) -> Report:
    """Peak RSS of one daemon over many messages: bounded, and flat in the count."""
    total, customers = (20_000, 2_000) if b.quick else (200_000, 2_000)
    emu = await b.start(emulator(b.workdir, latency=0.0))
    bridge = await b.start(daemon(b.workdir, desk=emu, delivery={
        "concurrency": b.options.concurrency, "max_outbox": total + 1}))
    samples: list[tuple[float, int, int, int]] = []  # t, rss, accepted, delivered
    accepted = 0
    began = time.time()

    def on_progress(n: int) -> None:
        nonlocal accepted
        accepted = n

    async def sample_forever() -> None:
        while True:
            delivered = (await b.stats(emu))["messages"]
            samples.append((time.time() - began, bridge.rss(), accepted, delivered))
            await asyncio.sleep(0.5)

    await b.quiet()
    start_rss = bridge.rss()
    others = CpuWatch()
    sampler = asyncio.create_task(sample_forever())
    run = await run_loadgen(bridge.url + "/form", watch=list(b.running), progress=on_progress,
                            connections=CONNECTIONS, total=total, customers=customers)
    ingest_done = time.time() - began
    await b.until_messages(emu, total, timeout=3600, every=0.5)
    await asyncio.sleep(1.0)
    sampler.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sampler
    peak = bridge.peak_rss()
    end = await b.stats(emu)
    elapsed = time.time() - began
    ours = sum(s.cpu_seconds() for s in b.running) + run.result.cpu_seconds
    foreign = 100 * others.foreign(ours) / elapsed

    marks = [total // 4 * k for k in range(1, 5)]

    def rss_at(column: int, mark: int) -> int:
        return next(s[1] for s in samples if s[column] >= mark)

    rows = [[f"{m:,}", f"{rss_at(2, m) / MB:.1f}", f"{rss_at(3, m) / MB:.1f}"] for m in marks]
    sampled_peak = max(s[1] for s in samples)
    first, last = rss_at(3, marks[0]), rss_at(3, marks[-1])
    growth = (last - first) / first
    return Report(
        "memory", f"Memory: one daemon over {total:,} messages ({customers:,} customers)",
        tables=[Table(["messages", "RSS when that many were accepted (MB)",
                       "RSS when that many were delivered (MB)"], rows)],
        checks=[
            Check("peak RSS (kernel high-water mark, VmHWM)", "≤ 150 MB",
                  f"{peak / MB:.1f} MB", peak <= 150 * MB),
            Check(f"RSS growth from {marks[0]:,} to {marks[-1]:,} delivered", "≤ 10 %",
                  f"{growth:+.1%} ({first / MB:.1f} → {last / MB:.1f} MB)", growth <= 0.10),
            Check("all delivered, no errors", f"{total:,}, 0 errors",
                  f"{end['messages']:,}, {sum(run.result.errors.values()) + end['failed_calls']}"
                  " errors",
                  end["messages"] == total and not run.result.errors and not end["failed_calls"]),
        ],
        notes=[
            f"RSS sampled every 0.5 s with psutil ({len(samples)} samples, max "
            f"{sampled_peak / MB:.1f} MB); {start_rss / MB:.1f} MB when ready, before any post.",
            f"Ingest took {ingest_done:.0f} s ({run.result.rate:,.0f} posts/s at "
            f"{CONNECTIONS} connections), delivery of the last message ended at {elapsed:.0f} s "
            f"({total / elapsed:,.0f} msgs/s end to end; others used {foreign:.0f}% of a core "
            "meanwhile); emulator latency 0, "
            f"delivery.concurrency {b.options.concurrency}, max_outbox raised to {total + 1:,} "
            "so backpressure (503) does not cut the run short; the backlog waits on disk.",
        ],
        data={"samples": samples, "peak": peak, "total": total, "elapsed": elapsed,
              "ingest": asdict(run.result)},
    )


# Scenarios in their own modules register themselves with ``scenario`` when imported. Run as
# ``python -m benchmarks.run`` this file is ``__main__``: alias it, so that their ``from
# benchmarks.run import scenario`` fills this registry rather than a second copy's.
sys.modules.setdefault("benchmarks.run", sys.modules[__name__])
from benchmarks import slack_ingest  # noqa: E402, F401, I001
from benchmarks import scaleout  # noqa: E402, F401
from benchmarks import group_commit  # noqa: E402, F401
from benchmarks import resilience  # noqa: E402, F401


# --- the run ----------------------------------------------------------------------------------


def _version(package: str) -> str:
    with contextlib.suppress(metadata.PackageNotFoundError):
        return metadata.version(package)
    return "-"


def machine() -> dict[str, str]:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor())
    git = ["git", "-C", str(REPO)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip()
    dirty = subprocess.run([*git, "status", "--porcelain", "livebridge", "plugins"],
                           capture_output=True, text=True, check=False).stdout.strip()
    return {
        "nproc": str(os.cpu_count()), "cpu": cpu,
        "memory": f"{psutil.virtual_memory().total / 1024**3:.0f} GiB",
        "kernel": platform.release(), "python": platform.python_version(),
        "aiohttp": _version("aiohttp"), "pydantic": _version("pydantic"),
        "sqlite": sqlite3.sqlite_version, "livebridge": _version("livebridge"),
        "commit": commit + (" + uncommitted changes in livebridge/ or plugins/" if dirty else ""),
    }


def render(command: str, info: dict[str, str], reports: list[Report]) -> str:
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [f"Measured {when} with:", "", "```", command, "```", "",
             Table(["machine", ""], [[k, v] for k, v in info.items()]).markdown(), ""]
    summary = [[r.title, c.name, c.target, c.measured, "PASS" if c.ok else "**FAIL**"]
               for r in reports for c in r.checks]
    lines += [Table(["scenario", "target", "wanted", "measured", "result"], summary,
                    "#### Summary").markdown(), ""]
    lines += [r.markdown() + "\n" for r in reports]
    return "\n".join(lines)


def update_results(block: str) -> None:
    text = RESULTS_MD.read_text() if RESULTS_MD.exists() else f"{BEGIN}\n{END}\n"
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    RESULTS_MD.write_text(f"{head}{BEGIN}\n{block}\n{END}{tail}")


async def run(names: Sequence[str], options: argparse.Namespace, outdir: Path) -> list[Report]:
    reports = []
    engines = Engines(options.baseline, outdir)
    async with aiohttp.ClientSession() as session, contextlib.AsyncExitStack() as run_stack:
        run_stack.push_async_callback(engines.close)
        for name in names:
            workdir = outdir / name
            workdir.mkdir(parents=True, exist_ok=True)
            began = time.monotonic()
            log(f"== {name}")
            try:
                async with contextlib.AsyncExitStack() as stack:
                    bench = Bench(workdir, options.quick, options, stack, session, engines)
                    report = await SCENARIOS[name](bench)
            except Exception as exc:  # one broken scenario must not lose the others
                log(f"{name}: {type(exc).__name__}: {exc}")
                report = Report(name, f"{name}: did not complete", checks=[
                    Check("scenario ran", "completes", f"{type(exc).__name__}: {exc}", False)])
            report.seconds = time.monotonic() - began
            if not options.keep:
                for db in workdir.glob("*.db*"):
                    db.unlink()
            reports.append(report)
            log(report.markdown())
    return reports


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--only", help=f"comma-separated scenarios ({', '.join(SCENARIOS)})")
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    parser.add_argument("--concurrency", type=int, default=64,
                        help="the daemon's delivery.concurrency (default 64)")
    parser.add_argument("--update-results", action="store_true",
                        help="write the tables into benchmarks/RESULTS.md")
    parser.add_argument("--keep", action="store_true", help="keep the SQLite files")
    parser.add_argument("--baseline", default="f458e79", metavar="REV",
                        help="the engine to compare with where a scenario does (default "
                        "f458e79, before the delivery redesign)")
    parser.add_argument("--no-baseline", dest="baseline", action="store_const", const=None,
                        help="run no baseline engine")
    args = parser.parse_args(argv)
    names = list(SCENARIOS) if not args.only else [n.strip() for n in args.only.split(",")]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(unknown)} (have {', '.join(SCENARIOS)})")
    command = shlex.join(["python", "-m", "benchmarks.run", *(argv or sys.argv[1:])])
    outdir = REPO / "benchmarks" / "out" / time.strftime("%Y%m%d-%H%M%S")
    outdir.mkdir(parents=True, exist_ok=True)
    info = machine()
    reports = asyncio.run(run(names, args, outdir))
    block = render(command, info, reports)
    (outdir / "results.md").write_text(block)
    (outdir / "results.json").write_text(json.dumps(
        {"command": command, "machine": info, "reports": [asdict(r) for r in reports]},
        indent=1, default=str))
    if args.update_results and not args.quick:
        update_results(block)
    print(block)
    log(f"results: {outdir / 'results.md'}")
    return 0 if all(c.ok for r in reports for c in r.checks) else 1


if __name__ == "__main__":
    sys.exit(main())
