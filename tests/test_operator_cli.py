"""`livebridge status` and `livebridge dlq` against the store of a running daemon; the
command's help and its manners on a closed pipe."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from livebridge.cli import main
from livebridge.livedesk.emulator import Faults


async def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "livebridge", *args, "--config", str(config)],
        capture_output=True, text=True, timeout=60, check=False)


def into_closed_pipe(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the command with its output going to a pipe nobody reads (``... | head -0``)."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run([sys.executable, "-m", "livebridge", *args], stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=60, check=False)
    finally:
        os.close(write)


async def test_status_and_dead_letter_commands(make_bridge: Any, echo: Any,
                                               echo_post: Callable[..., dict[str, Any]],
                                               tmp_path: Path) -> None:
    db = tmp_path / "ops.db"
    bridge = await make_bridge({"sources": [{"type": "echo"}],
                                "store": {"url": f"sqlite:///{db}"}}, plugins=[echo])
    config = tmp_path / "ops.yaml"  # a Slack source without its secrets: only store: is read
    config.write_text(f"store:\n  url: sqlite:///{db}\nsources:\n  - type: slack\n")
    bridge.emulator.faults = Faults(reject_messages=True)
    await bridge.client.post("/echo", json=echo_post(1))
    await bridge.wait_for(lambda: bridge.daemon.metrics.dead_lettered.labels(
        source="echo", kind="inbound")._value.get() == 1)

    status = await cli(config, "status", "--json")
    assert status.returncode == 0, status.stderr
    figures = json.loads(status.stdout)
    assert figures["dead_letters"] == 1 and figures["outbox_depth"] == 0
    assert "HTTP 422" in figures["last_dead_letter_reason"]

    listing = await cli(config, "dlq", "list")
    [line] = listing.stdout.splitlines()
    letter_id = line.split("\t")[0]
    assert "inbound\techo\t1 attempts\tLivedesk create_message: HTTP 422" in line
    shown = json.loads((await cli(config, "dlq", "show", letter_id, "--json")).stdout)
    assert shown["payload"]["event_id"] == "ev1"  # an object, not JSON inside a string
    assert "could not be processed" in shown["response"]
    readable = (await cli(config, "dlq", "show", letter_id)).stdout
    assert "\npayload:\n  source: echo\n  event_id: ev1\n" in readable  # nested, indented
    letter = yaml.safe_load(readable)
    assert letter["reason"].startswith("Livedesk create_message: HTTP 422")
    assert letter["payload"]["event_id"] == "ev1" and letter["attempts"] == 1

    closed = await asyncio.to_thread(into_closed_pipe, "dlq", "list", "--config", str(config))
    assert (closed.returncode, closed.stderr) == (141, "")

    bridge.emulator.faults = Faults()
    replay = await cli(config, "dlq", "replay", letter_id)
    assert replay.returncode == 0 and "replayed" in replay.stdout
    await bridge.wait_for(lambda: len(bridge.emulator.state.messages) == 1)

    missing = await cli(config, "dlq", "drop", letter_id)
    assert missing.returncode == 1 and "no such dead letter" in missing.stdout
    no_ids = await cli(config, "dlq", "replay")
    assert no_ids.returncode == 2 and "give one or more dead-letter ids" in no_ids.stderr


def test_plugins_into_a_closed_pipe_stops_quietly() -> None:
    result = into_closed_pipe("plugins")
    assert (result.returncode, result.stderr) == (141, "")


@pytest.mark.parametrize("command", [[], ["run"], ["check"], ["plugins"], ["status"], ["dlq"],
                                     ["emulator"]])
def test_help_is_plain_text_with_examples(command: list[str],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main([*command, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "`" not in text and ":class:" not in text
    assert "examples:\n  livebridge " in text
