"""A reply that is dead-lettered reaches the agents as a private note in its conversation
(unless ``livedesk.note_failed_replies`` is off), the bridge ignores the note when Livedesk
echoes it back, and ``livebridge dlq replay`` sends the reply once the cause is fixed. Over
real sockets: a web-form customer, the emulator, a local SMTP server that refuses a mailbox
with 550, and the ``livebridge`` command on the daemon's store."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

from bridge_helpers import form_customer_wrote
from smtp_helpers import SMTPServer

from livebridge._livedesk.emulator import Faults
from livebridge.testing import BridgeHarness


async def refused_reply(make_bridge: Any, port: int, db: Path, faults: Faults | None = None,
                        **livedesk: Any) -> tuple[BridgeHarness, int]:
    """A web-form customer wrote, an agent answered (``faults`` then on the emulator), and
    the SMTP server refused the mail: the bridge and the conversation, once the reply is
    dead-lettered."""
    bridge, conversation = await form_customer_wrote(
        make_bridge, port, livedesk=livedesk, store={"url": f"sqlite:///{db}"})
    bridge.emulator.faults = faults or Faults()
    await bridge.agent_reply(conversation, "Your **invoice** is on its way.")

    async def dead() -> bool:
        return bool((await bridge.daemon.store.stats()).dead_letters == 1)

    await bridge.wait_for(dead)
    return bridge, conversation


def notes_in(bridge: BridgeHarness, conversation: int) -> list[dict[str, Any]]:
    return [m for m in bridge.emulator.state.messages_in(conversation) if m["private"]]


async def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "livebridge", *args, "--config", str(config)],
        capture_output=True, text=True, timeout=60, check=False)


async def test_a_dead_lettered_reply_leaves_a_private_note_and_replay_sends_it(
        make_bridge: Any, smtp_server: SMTPServer, tmp_path: Path) -> None:
    smtp_server.refused.add("ann@example.com")
    db = tmp_path / "notes.db"
    bridge, conversation = await refused_reply(make_bridge, smtp_server.port, db)
    assert smtp_server.inbox.empty()

    [note] = notes_in(bridge, conversation)
    assert note["message_type"] == 1  # outgoing: from the agents' side, never the customer's
    assert note["content"].startswith("livebridge could not deliver this reply to the "
                                      "customer (form); the customer has not received it.")
    assert "> Your **invoice** is on its way." in note["content"]
    assert "Why: SMTP refused the recipient: 550 5.1.1 <ann@example.com>: mailbox " \
           "unavailable" in note["content"]
    assert "`livebridge dlq replay`" in note["content"]

    # Livedesk echoes the note to the webhook (as Chatwoot does): it is not a reply.
    echo = {"event": "message_created", "id": note["id"], "content": note["content"],
            "message_type": "outgoing", "private": True, "content_attributes": {},
            "sender": {"id": 1, "name": "livebridge", "type": "user"},
            "conversation": {"id": conversation}}
    resp = await bridge.post_webhook(echo)
    assert await resp.json() == {"ignored": "not an agent reply"}
    assert (await bridge.daemon.store.stats()).depth == 0

    # The mailbox exists now: the operator replays the dead letter, the mail goes out.
    smtp_server.refused.clear()
    config = tmp_path / "ops.yaml"  # only store: is read (the slack source needs no secrets)
    config.write_text(f"store:\n  url: sqlite:///{db}\nsources:\n  - type: slack\n")
    [letter] = (await cli(config, "dlq", "list")).stdout.splitlines()
    assert "\treply\tform\t" in letter
    replay = await cli(config, "dlq", "replay", letter.split("\t")[0])
    assert replay.returncode == 0, replay.stderr
    mail = (await smtp_server.next()).message
    assert mail["To"] == "ann@example.com"
    plain = mail.get_body(("plain",))
    assert plain is not None and plain.get_content().strip() == "Your invoice is on its way."
    assert (await bridge.daemon.store.stats()).dead_letters == 0
    assert len(notes_in(bridge, conversation)) == 1


async def test_no_note_when_the_setting_is_off(make_bridge: Any, smtp_server: SMTPServer,
                                               tmp_path: Path) -> None:
    smtp_server.refused.add("ann@example.com")
    bridge, conversation = await refused_reply(make_bridge, smtp_server.port, tmp_path / "off.db",
                                                  note_failed_replies=False)
    assert notes_in(bridge, conversation) == []
    assert len(bridge.emulator.state.messages_in(conversation)) == 2  # question and reply


async def test_a_note_that_cannot_be_posted_keeps_the_dead_letter(
        make_bridge: Any, smtp_server: SMTPServer, tmp_path: Path) -> None:
    """Livedesk refuses the note (422): logged; the dead letter stays, to be replayed."""
    smtp_server.refused.add("ann@example.com")
    db = tmp_path / "refused.db"
    bridge, conversation = await refused_reply(make_bridge, smtp_server.port, db,
                                               faults=Faults(reject_messages=True))
    [letter] = await bridge.daemon.store.dead_letters()
    assert letter.kind == "reply" and "550" in letter.reason
    assert notes_in(bridge, conversation) == []
    refused = [c for c in bridge.emulator.state.calls
               if c.method == "POST" and c.path.endswith(f"/{conversation}/messages")]
    assert [c.status for c in refused] == [200, 422]  # the customer's message, the note
