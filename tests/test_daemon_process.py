"""The daemon as an operator runs it: the shipped bridge.yaml, a real process, a real post."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from livebridge.logs import SecretMasker
from livebridge.testing import free_port

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the daemon exited"
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=1) as resp:
                return dict(json.load(resp))
        except OSError:
            time.sleep(0.05)  # polling another process's readiness
    raise TimeoutError("daemon not ready")


def test_shipped_config_runs_on_the_emulator_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LIVEDESK_", "LIVEBRIDGE_", "SMTP_", "SLACK_", "MAILGUN_"))}
    env.update(LIVEBRIDGE_PORT=str(port), LIVEBRIDGE_STORE=f"sqlite:///{tmp_path / 'b.db'}",
               LIVEDESK_WEBHOOK_SECRET="hush-very-secret")
    log = tmp_path / "daemon.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "livebridge", "run", "--config",
                                 str(ROOT / "bridge.yaml")], cwd=tmp_path, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
        try:
            base = f"http://127.0.0.1:{port}"
            ready = wait_ready(base, proc)
            assert ready["livedesk"] == "emulator" and "nothing reaches" in str(ready["warning"])
            form = urllib.parse.urlencode({"name": "Ada", "email": "ada@example.com",
                                           "message": "My order is late"}).encode()
            for _ in range(2):
                req = urllib.request.Request(base + "/form", data=form, headers={
                    "Accept": "application/json", "Origin": base})
                with urllib.request.urlopen(req, timeout=5) as resp:
                    assert resp.status == 200
            deadline = time.monotonic() + 10
            while True:
                with urllib.request.urlopen(base + "/emulator/_emulator/state") as resp:
                    state = json.load(resp)
                if len(state["messages"]) == 2:
                    break
                assert time.monotonic() < deadline
                time.sleep(0.05)  # polling another process's state
            assert len(state["contacts"]) == 1 and len(state["conversations"]) == 1
            assert {m["message_type"] for m in state["messages"]} == {0}
            with urllib.request.urlopen(base + "/emulator/") as resp:
                page = resp.read().decode()
            assert "My order is late" in page and "ada@example.com" in page
            # an agent answers on the emulator's page: without SMTP, the form's reply is
            # counted and dead-lettered as not deliverable (and the daemon says why)
            conversation = state["conversations"][0]["id"]
            reply = json.dumps({"content": "It ships today"}).encode()
            urllib.request.urlopen(urllib.request.Request(
                f"{base}/emulator/_emulator/conversations/{conversation}/reply", data=reply,
                headers={"Content-Type": "application/json"}))
            wanted = 'livebridge_messages_dead_lettered_total{kind="reply",source="form"} 1.0'
            deadline = time.monotonic() + 10
            while wanted not in urllib.request.urlopen(base + "/metrics").read().decode():
                assert time.monotonic() < deadline, "the agent's reply never came back"
                time.sleep(0.05)  # polling another process's state
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    text = log.read_text()
    assert "BUILT-IN LIVEDESK EMULATOR" in text
    assert "livebridge stopping" in text
    assert "hush-very-secret" not in text
    assert (tmp_path / "b.db").exists()


def test_secret_masker_masks_nested_values() -> None:
    mask = SecretMasker(["s3cr3t-token", "abc"])
    event = mask(None, "info", {"event": "calling with s3cr3t-token",
                                "detail": {"headers": ["Bearer s3cr3t-token"]},
                                "error": ValueError("bad s3cr3t-token"), "n": 3})
    assert event == {"event": "calling with ***", "detail": {"headers": ["Bearer ***"]},
                     "error": "ValueError: bad ***", "n": 3}
    assert mask.secrets == ["s3cr3t-token"]  # too-short values would mask ordinary words
