"""The daemon as an operator runs it: the shipped bridge.yaml, a real process, a real post."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import IO, Any

import pytest

from livebridge._logs import SecretMasker
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


def shipped(tmp_path: Path, port: int, out: IO[bytes]) -> subprocess.Popen[bytes]:
    """``livebridge run`` with the shipped bridge.yaml as in a fresh shell (no SMTP: the demo),
    on ``port`` with its store in ``tmp_path``, logging to ``out``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LIVEDESK_", "LIVEBRIDGE_", "SMTP_", "SLACK_", "MAILGUN_"))}
    env.update(LIVEBRIDGE_PORT=str(port), LIVEBRIDGE_STORE=f"sqlite:///{tmp_path / 'b.db'}",
               LIVEDESK_WEBHOOK_SECRET="hush-very-secret")
    return subprocess.Popen([sys.executable, "-m", "livebridge", "run", "--config",
                             str(ROOT / "bridge.yaml")], cwd=tmp_path, env=env, stdout=out,
                            stderr=subprocess.STDOUT)


def post_form(base: str, name: str, email: str, message: str) -> None:
    form = urllib.parse.urlencode({"name": name, "email": email, "message": message}).encode()
    req = urllib.request.Request(base + "/form", data=form, headers={
        "Accept": "application/json", "Origin": base})
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 200


def emulator_state(base: str, messages: int) -> dict[str, Any]:
    """The emulator's state once it holds ``messages`` messages."""
    deadline = time.monotonic() + 10
    while True:
        with urllib.request.urlopen(base + "/emulator/_emulator/state") as resp:
            state: dict[str, Any] = json.load(resp)
        if len(state["messages"]) == messages:
            return state
        assert time.monotonic() < deadline, f"not {messages} messages: {state['messages']}"
        time.sleep(0.05)  # polling another process's state


def agent_reply(base: str, conversation: int, text: str) -> None:
    """An agent's reply on the emulator's page; returns once the daemon has sent it."""
    urllib.request.urlopen(urllib.request.Request(
        f"{base}/emulator/_emulator/conversations/{conversation}/reply",
        data=json.dumps({"content": text}).encode(),
        headers={"Content-Type": "application/json"}))
    wanted = 'livebridge_messages_delivered_total{kind="reply",source="form"} 1.0'
    deadline = time.monotonic() + 10
    while wanted not in urllib.request.urlopen(base + "/metrics").read().decode():
        assert time.monotonic() < deadline, "the agent's reply never came back"
        time.sleep(0.05)  # polling another process's state


def test_shipped_config_runs_on_the_emulator_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "daemon.log"
    with log.open("wb") as out:
        proc = shipped(tmp_path, port, out)
        try:
            base = f"http://127.0.0.1:{port}"
            ready = wait_ready(base, proc)
            assert ready["livedesk"] == "emulator" and "nothing reaches" in str(ready["warning"])
            for _ in range(2):
                post_form(base, "Ada", "ada@example.com", "My order is late")
            state = emulator_state(base, 2)
            assert len(state["contacts"]) == 1 and len(state["conversations"]) == 1
            assert {m["message_type"] for m in state["messages"]} == {0}
            with urllib.request.urlopen(base + "/emulator/") as resp:
                page = resp.read().decode()
            assert "My order is late" in page and "ada@example.com" in page
            # an agent answers on the emulator's page: without SMTP, the demo catches the
            # mail to the form's customer and shows it, and the reply as sent
            agent_reply(base, state["conversations"][0]["id"], "It ships today")
            with urllib.request.urlopen(base + "/emulator/") as resp:
                page = resp.read().decode()
            caught = page.split('id="caught-mail"', 1)[1]
            assert "Ada &lt;ada@example.com&gt;" in caught and "It ships today" in caught
            assert '<span class="state sent">sent</span>' in page
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    text = log.read_text()
    assert "BUILT-IN LIVEDESK EMULATOR" in text
    assert "livebridge stopping" in text
    assert f"listening on http://127.0.0.1:{port}/form" in text
    assert f"listening on http://127.0.0.1:{port}/emulator/" in text
    assert text.index("livebridge started") < text.index("listening on")
    assert "no smtp:" not in text  # the demo catches mail instead
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


def test_the_demo_keeps_customers_apart_across_restarts(tmp_path: Path) -> None:
    """Customer A, restart, customer B, A again: three messages, each in its customer's own
    conversation (the emulator's data persists with the store, so no id is reused)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with (tmp_path / "daemon.log").open("wb") as out:
        proc = shipped(tmp_path, port, out)
        try:
            wait_ready(base, proc)
            post_form(base, "Ada", "ada@example.com", "first")
            conversation = emulator_state(base, 1)["conversations"][0]["id"]
            agent_reply(base, conversation, "Hello Ada")  # its state is kept too
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
            proc = shipped(tmp_path, port, out)
            wait_ready(base, proc)
            post_form(base, "Bob", "bob@example.com", "hello")
            emulator_state(base, 2)
            post_form(base, "Ada", "ada@example.com", "again")
            state = emulator_state(base, 4)
            with urllib.request.urlopen(base + "/emulator/") as resp:
                assert '<span class="state sent">sent</span>' in resp.read().decode()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    emails = {c["id"]: c["email"] for c in state["contacts"]}
    texts = {emails[c["account_info"]["contact_id"]]: [
        m["content"] for m in state["messages"] if m["conversation_id"] == c["id"]]
        for c in state["conversations"]}
    assert texts == {"ada@example.com": ["first", "Hello Ada", "again"],
                     "bob@example.com": ["hello"]}


def test_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with (tmp_path / "daemon.log").open("wb") as out:
            proc = shipped(tmp_path, port, out)
            assert proc.wait(30) == 1
    text = (tmp_path / "daemon.log").read_text()
    assert text.strip().splitlines()[-1] == (
        f"livebridge: cannot listen on 127.0.0.1:{port}: address already in use "
        "(set LIVEBRIDGE_PORT or server.port)")
    assert "Traceback" not in text and "livebridge started" not in text
