"""Processes for the benchmarks, written once: servers under test and the load generator.

Every server is a real subprocess on 127.0.0.1 with its own free port, output in a log file
in the run's work directory, readiness polled over HTTP. ``Service`` also reads the CPU time
and RSS of its process (psutil), which the scenarios report next to the figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import yaml

from benchmarks.loadgen import LoadResult
from benchmarks.servers import API_KEY, API_SECRET, INBOX_ID
from livebridge.testing import free_port

__all__ = ["REPO", "Baseline", "CpuWatch", "LoadRun", "Service", "daemon", "emulator",
           "fake_slack", "reference", "run_loadgen", "wait_for_quiet"]

REPO = Path(__file__).resolve().parent.parent
_PROXY_VARS = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}


def _env() -> dict[str, str]:
    """The environment for children: no proxies (loopback only), no livebridge overrides."""
    return {k: v for k, v in os.environ.items()
            if k.lower() not in _PROXY_VARS and not k.startswith(("LIVEBRIDGE_", "LIVEDESK_"))}


class Service:
    """A server subprocess: ``await start()``, measure, ``await stop()``."""

    def __init__(self, name: str, argv: list[str], port: int, ready_path: str,
                 workdir: Path, stop_timeout: float = 30.0, cwd: Path = REPO) -> None:
        self.name = name
        self.cwd = cwd
        self.stop_timeout = stop_timeout
        self.argv = argv
        self.port = port
        self.ready_path = ready_path
        self.log_path = workdir / f"{name}.log"
        self.proc: asyncio.subprocess.Process | None = None
        self.ps: psutil.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, timeout: float = 30.0) -> Service:
        """Start the process and wait until ``ready_path`` answers 200."""
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=self.cwd, env=_env())
        self.ps = psutil.Process(self.proc.pid)
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.proc.returncode is not None:
                    raise RuntimeError(f"{self.name} exited at start-up: see {self.log_path}")
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with session.get(self.url + self.ready_path) as resp:
                        if resp.status == 200:
                            return self
                await asyncio.sleep(0.05)
        raise TimeoutError(f"{self.name} not ready in {timeout} s: see {self.log_path}")

    async def stop(self) -> None:
        """SIGTERM this process (by its pid) and wait; SIGKILL it if it does not exit in
        ``stop_timeout`` seconds."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), self.stop_timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()

    async def kill(self) -> None:
        """SIGKILL this process (by its pid), as a crash would, and reap it."""
        proc = self.proc
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the process (all its threads) so far."""
        assert self.ps is not None
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def rss(self) -> int:
        """Resident set size now, in bytes."""
        assert self.ps is not None
        return int(self.ps.memory_info().rss)

    def peak_rss(self) -> int:
        """The kernel's high-water mark of the RSS (``VmHWM``), in bytes."""
        assert self.proc is not None
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmHWM in /proc/<pid>/status")

    async def get_json(self, path: str, session: aiohttp.ClientSession) -> Any:
        async with session.get(self.url + path) as resp:
            resp.raise_for_status()
            return await resp.json()


def emulator(workdir: Path, *, latency: float, name: str = "emulator",
             rate_limit: float = 0.0, retry_after: float = 1.0,
             webhook: tuple[str, str] | None = None) -> Service:
    """The Livedesk emulator (with ``/_emulator/stats``), ``latency`` s per API call, at most
    ``rate_limit`` calls/s (beyond: 429 + ``Retry-After: retry_after``; 0: no limit), agent
    replies posted to ``webhook`` = (URL, secret).

    A latency of an hour or more is a stalled Livedesk: its calls never finish during a run,
    and it is killed after 3 s at the end rather than waiting for them.
    """
    port = free_port()
    argv = [sys.executable, "-m", "benchmarks.servers", "emulator", "--port", str(port),
            "--latency", str(latency), "--rate-limit", str(rate_limit),
            "--retry-after", str(retry_after)]
    if webhook is not None:
        argv += ["--webhook-url", webhook[0], "--webhook-secret", webhook[1]]
    return Service(name, argv, port, "/_emulator/stats", workdir,
                   stop_timeout=3.0 if latency >= 3600 else 30.0)


def reference(kind: str, workdir: Path, *, livedesk: Service | None = None,
              concurrency: int | None = None) -> Service:
    """A reference server of ``benchmarks.servers``: ``bare`` (reads the form), ``seed``
    (three inline calls), ``floor-ingest`` (bare plus a SQLite outbox in ``workdir``) or
    ``floor-delivery`` (answers, then one call per message in the background,
    ``concurrency`` at a time)."""
    port = free_port()
    argv = [sys.executable, "-m", "benchmarks.servers", kind, "--port", str(port)]
    if livedesk is not None:
        argv += ["--livedesk", livedesk.url]
    if concurrency is not None:
        argv += ["--concurrency", str(concurrency)]
    if kind == "floor-ingest":
        argv += ["--store", str(workdir / f"{kind}.db")]
    return Service(kind, argv, port, "/healthz", workdir)


def fake_slack(workdir: Path, *, users: int, name: str = "fake-slack") -> Service:
    """``livebridge_slack.fake.FakeSlack`` (Web API at ``/api/``) knowing ``users`` users,
    ``loadgen.slack_user(i)`` for i < ``users``, so that ``users.info`` answers at once."""
    port = free_port()
    argv = [sys.executable, "-m", "benchmarks.servers", "slack", "--port", str(port),
            "--users", str(users)]
    return Service(name, argv, port, "/api/auth.test", workdir)


class Baseline:
    """The daemon as of an older commit, to run beside this one: a detached git worktree of
    ``rev`` in ``workdir`` with its own venv (``python -m venv``, ``pip install -e``)."""

    def __init__(self, rev: str, workdir: Path) -> None:
        self.rev = rev
        self.path = workdir / f"baseline-{rev}"
        self.python = self.path / ".venv" / "bin" / "python"
        self.commit = ""

    async def prepare(self) -> None:
        """Check out ``rev`` and install it (a minute or less with pip's cache)."""
        await _check([*_GIT, "worktree", "add", "--detach", str(self.path), self.rev])
        self.commit = (await _check([*_GIT, "-C", str(self.path), "rev-parse", "--short",
                                     "HEAD"])).strip()
        await _check([sys.executable, "-m", "venv", str(self.path / ".venv")])
        await _check([str(self.python), "-m", "pip", "install", "--quiet", "-e",
                      str(self.path)])

    async def remove(self) -> None:
        """Remove the worktree (and its venv) again."""
        await _check([*_GIT, "worktree", "remove", "--force", str(self.path)])


_GIT = ["git", "-C", str(REPO)]


async def _check(argv: Sequence[str]) -> str:
    """Run ``argv`` (with this environment: pip may need its proxy); its stdout, or raise."""
    proc = await asyncio.create_subprocess_exec(*argv, stdout=subprocess.PIPE,
                                                stderr=subprocess.PIPE)
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): "
                           f"{err.decode(errors='replace')[-2000:]}")
    return out.decode()


def daemon(workdir: Path, *, desk: Service, name: str = "daemon",
           sources: Sequence[Mapping[str, Any]] = (), port: int | None = None,
           engine: Baseline | None = None, **sections: Mapping[str, Any]) -> Service:
    """``livebridge run`` with the shipped form source (plus ``sources``, more entries of the
    config's ``sources:``), a fresh SQLite file in ``workdir``, logging at warning, and
    Livedesk at ``desk`` (an ``emulator``). ``sections`` are merged into the config's
    sections, e.g. ``delivery={"concurrency": 64}`` or ``store={"url": "redis://..."}``.
    ``engine``: run that baseline's code (its venv, from its worktree) instead of this one."""
    port = port or free_port()
    config: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": port},
        "livedesk": {"base_url": desk.url, "api_key": API_KEY, "api_secret": API_SECRET,
                     "inbox_id": INBOX_ID},
        "store": {"url": f"sqlite:///{workdir / f'{name}.db'}", "sqlite_synchronous": "full"},
        "delivery": {"rate_limit": 0},
        "logging": {"level": "warning", "format": "json"},
        # The form's per-IP limit (30 posts an hour by default) would refuse a load generator.
        "sources": [{"type": "form", "path": "/form", "rate_limit": 0}, *sources],
    }
    for section, values in sections.items():
        config[section] = {**config.get(section, {}), **values}
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    python = sys.executable if engine is None else str(engine.python)
    argv = [python, "-m", "livebridge", "run", "--config", str(path)]
    return Service(name, argv, port, "/readyz", workdir,
                   cwd=REPO if engine is None else engine.path)


def _busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all cores) since boot."""
    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + t.irq + t.softirq + t.steal)


class CpuWatch:
    """How much CPU the machine spent on things other than ours (other people's test runs
    share these two cores): machine busy time minus the CPU of our processes."""

    def __init__(self) -> None:
        self._me = psutil.Process()
        self._start = (_busy_seconds(), self._own())

    def _own(self) -> float:
        t = self._me.cpu_times()
        return float(t.user + t.system)

    def foreign(self, ours: float) -> float:
        """CPU seconds spent by others since creation, given ``ours`` (our children's)."""
        busy, own = self._start
        return max(0.0, _busy_seconds() - busy - (self._own() - own) - ours)


async def wait_for_quiet(limit: float = 0.15, window: float = 1.0, patience: float = 300.0,
                         ours: Callable[[], float] = lambda: 0.0) -> float:
    """Wait until others use less than ``limit`` of one core over ``window`` seconds (give
    up after ``patience`` s); ``ours()`` is the CPU seconds our own children used so far.
    Returns the seconds waited."""
    began = time.monotonic()
    while True:
        watch, before = CpuWatch(), ours()
        await asyncio.sleep(window)
        if watch.foreign(ours() - before) / window < limit:
            return time.monotonic() - began
        if time.monotonic() - began > patience:
            return time.monotonic() - began


@dataclass
class LoadRun:
    """A load generator run, with the CPU each watched server used in its timed phase."""

    result: LoadResult
    cpu: dict[str, float]  # service name -> CPU seconds during the timed phase
    foreign_cpu: float  # CPU seconds used by processes not ours during the timed phase

    def cpu_percent(self, name: str) -> float:
        """CPU of service ``name`` in the timed phase, in % of one core."""
        return 100.0 * self.cpu[name] / self.result.elapsed if self.result.elapsed else 0.0

    def cpu_us_per_request(self, name: str) -> float:
        """CPU microseconds service ``name`` spent per answered request."""
        return 1e6 * self.cpu[name] / self.result.ok if self.result.ok else 0.0

    @property
    def foreign_percent(self) -> float:
        """CPU of other people's processes in the timed phase, in % of one core."""
        return 100.0 * self.foreign_cpu / self.result.elapsed if self.result.elapsed else 0.0

    @property
    def loadgen_cpu_percent(self) -> float:
        r = self.result
        return 100.0 * r.cpu_seconds / r.elapsed if r.elapsed else 0.0


async def run_loadgen(url: str | Sequence[str], *, watch: Sequence[Service] = (),
                      progress: Callable[[int], None] | None = None, **options: Any) -> LoadRun:
    """Run ``python -m benchmarks.loadgen`` against ``url`` (several: round-robin; options
    as its flags, e.g. ``connections=32, total=4000``) and return its result; CPU of
    ``watch`` is measured over the timed phase (after the warm-up)."""
    urls = [url] if isinstance(url, str) else url
    argv = [sys.executable, "-m", "benchmarks.loadgen", *(a for u in urls for a in ("--url", u)),
            "--progress"]
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value not in (None, False):
            argv += [flag, str(value)]
    proc = await asyncio.create_subprocess_exec(*argv, stdout=subprocess.PIPE, cwd=REPO,
                                                env=_env())
    assert proc.stdout is not None
    cpu_start: dict[str, float] = {}
    result: LoadResult | None = None
    cpu_end: dict[str, float] = {}
    watch_cpu = CpuWatch()
    async for raw in proc.stdout:
        line = json.loads(raw)
        if "timed" in line:
            cpu_start = {s.name: s.cpu_seconds() for s in watch}
            watch_cpu = CpuWatch()
        elif "progress" in line:
            if progress is not None:
                progress(int(line["progress"]))
        elif "result" in line:
            cpu_end = {s.name: s.cpu_seconds() for s in watch}
            result = LoadResult(**line["result"])
            ours = sum(cpu_end[k] - cpu_start.get(k, 0.0) for k in cpu_end) + result.cpu_seconds
            foreign = watch_cpu.foreign(ours)
    if await proc.wait() != 0 or result is None:
        raise RuntimeError(f"the load generator failed (exit {proc.returncode})")
    cpu = {k: cpu_end[k] - cpu_start.get(k, 0.0) for k in cpu_end}
    return LoadRun(result, cpu, foreign)
