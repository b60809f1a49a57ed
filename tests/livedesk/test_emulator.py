"""The embedded Livedesk emulator, exercised over real sockets."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import json
import os
import shutil
import socket
import time
import uuid
from datetime import datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pytest_aiohttp import AiohttpClient, AiohttpServer
from yarl import URL

from livebridge.livedesk.emulator import EMULATOR, Emulator, Faults

INBOX = 407
AUTH = {"Authorization": "Basic " + base64.b64encode(b"key:secret").decode()}
CONTACTS = "/api/v2/accounts/contacts"
CONVERSATIONS = "/api/v2/accounts/conversations"
SEED_CONTACT_KEYS = {
    "additional_attributes",
    "availability_status",
    "email",
    "id",
    "name",
    "phone_number",
    "blocked",
    "identifier",
    "thumbnail",
    "custom_attributes",
    "created_at",
    "contact_inboxes",
}
SEED_CONVERSATION_KEYS = {
    "meta",
    "id",
    "messages",
    "account_id",
    "uuid",
    "inbox_id",
    "additional_attributes",
    "agent_last_seen_at",
    "assignee_last_seen_at",
    "can_reply",
    "contact_last_seen_at",
    "custom_attributes",
    "labels",
    "muted",
    "snoozed_until",
    "status",
    "priority",
    "conversation_category",
    "chat_mode",
    "is_forum",
    "created_at",
    "updated_at",
    "timestamp",
    "first_reply_created_at",
    "unread_count",
    "last_non_activity_message",
    "last_activity_at",
    "waiting_since",
    "sla_policy_id",
    "ticket_id",
    "over_limit",
    "content_preview",
    "platform",
    "account_info",
    "assignment",
}
MESSAGE_KEYS = {
    "id",
    "content",
    "inbox_id",
    "conversation_id",
    "message_type",
    "content_type",
    "content_attributes",
    "created_at",
    "private",
    "source_id",
    "sender",
    "attachments",
}

Client = TestClient[web.Request, web.Application]


@pytest.fixture
def emulator() -> Emulator:
    return Emulator(api_key="key", api_secret="secret", inbox_id=INBOX)


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, emulator: Emulator) -> Client:
    return await aiohttp_client(emulator.app())


async def post(client: Client, path: str, body: Any, status: int = 200) -> Any:
    response = await client.post(path, json=body, headers=AUTH)
    assert response.status == status, await response.text()
    return await response.json()


async def get(client: Client, path: str, status: int = 200) -> Any:
    response = await client.get(path, headers=AUTH)
    assert response.status == status, await response.text()
    return await response.json()


async def new_contact(client: Client, **fields: Any) -> dict[str, Any]:
    body = await post(client, CONTACTS, {"inbox_id": INBOX, **fields})
    contact: dict[str, Any] = body["payload"]["contact"]
    return contact


async def new_conversation(client: Client, **fields: Any) -> dict[str, Any]:
    contact = await new_contact(client, **fields)
    conversation: dict[str, Any] = await post(
        client, CONVERSATIONS, {"inbox_id": INBOX, "contact_id": contact["id"]}
    )
    return conversation


# -- contacts ------------------------------------------------------------------------------


async def test_create_contact_has_exactly_the_seed_shape(client: Client) -> None:
    body = await post(
        client,
        CONTACTS,
        {
            "inbox_id": INBOX,
            "name": "Test",
            "email": "alice@acme.inc",
            "phone_number": "+123456789",
            "avatar_url": "https://example.com/avatar.png",
            "identifier": "1234567890",
        },
    )
    assert set(body) == {"payload"}
    assert body["payload"]["contact_inbox"] == {"inbox": None, "source_id": None}
    contact = body["payload"]["contact"]
    assert set(contact) == SEED_CONTACT_KEYS
    assert isinstance(contact["id"], int)
    assert contact["name"] == "Test"
    assert contact["email"] == "alice@acme.inc"
    assert contact["availability_status"] == "offline"
    assert contact["blocked"] is False
    assert contact["thumbnail"] == "https://example.com/avatar.png"
    assert abs(contact["created_at"] - time.time()) < 5
    second = await new_contact(client, name="Second")
    assert second["id"] > contact["id"]
    assert second["email"] is None and second["custom_attributes"] == {}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Basic " + base64.b64encode(b"key:wrong").decode()},
        {"Authorization": "Bearer " + base64.b64encode(b"key:secret").decode()},
        {"Authorization": "Basic not-base64!"},
    ],
)
async def test_bad_or_missing_auth_is_401(
    client: Client, emulator: Emulator, headers: dict[str, str]
) -> None:
    response = await client.post(CONTACTS, json={"inbox_id": INBOX, "name": "x"}, headers=headers)
    assert response.status == 401
    assert await response.json() == {"error": "Invalid Access Token"}
    assert emulator.state.contacts == {}
    assert [c.status for c in emulator.state.calls] == [401]


async def test_inbox_id_is_required_and_must_be_ours(client: Client) -> None:
    body = await post(client, CONTACTS, {"name": "x"}, status=422)
    assert body == {"message": "Inbox can't be blank", "attributes": ["inbox_id"]}
    body = await post(client, CONTACTS, {"inbox_id": 999, "name": "x"}, status=404)
    assert body == {"error": "Resource could not be found"}
    body = await post(client, CONTACTS, {"inbox_id": str(INBOX), "name": "x"})
    assert body["payload"]["contact"]["name"] == "x"


async def test_malformed_json_is_400(client: Client, emulator: Emulator) -> None:
    response = await client.post(CONTACTS, data=b"{nope", headers=AUTH)
    assert response.status == 400
    assert "error" in await response.json()
    response = await client.post(CONTACTS, data=b"[1]", headers=AUTH)
    assert response.status == 400
    assert emulator.state.contacts == {}


@pytest.mark.parametrize(
    ("first", "second", "message", "attribute"),
    [
        ({"email": "Alice@Acme.inc"}, {"email": "alice@ACME.INC"}, "Email", "email"),
        ({"identifier": "u-1"}, {"identifier": "u-1"}, "Identifier", "identifier"),
        ({"phone_number": "+4915"}, {"phone_number": "+4915"}, "Phone number", "phone_number"),
    ],
)
async def test_duplicate_unique_attribute_is_422(
    client: Client,
    first: dict[str, str],
    second: dict[str, str],
    message: str,
    attribute: str,
) -> None:
    await new_contact(client, name="one", **first)
    body = await post(client, CONTACTS, {"inbox_id": INBOX, "name": "two", **second}, status=422)
    assert body == {"message": f"{message} has already been taken", "attributes": [attribute]}
    assert (await get(client, CONTACTS))["meta"]["count"] == 1


async def test_search_is_case_insensitive_and_paged(client: Client) -> None:
    for n in range(20):
        await new_contact(client, name=f"Alice {n}", email=f"alice{n}@acme.inc")
    await new_contact(client, name="Bob", phone_number="+4930123", identifier="slack:U42")
    page1 = await get(client, f"{CONTACTS}?q=ALICE")
    assert page1["meta"] == {"count": 20, "current_page": 1}
    assert len(page1["payload"]) == 15
    page2 = await get(client, f"{CONTACTS}?q=alice&page=2")
    assert page2["meta"] == {"count": 20, "current_page": 2}
    assert [c["name"] for c in page2["payload"]] == [f"Alice {n}" for n in range(15, 20)]
    assert (await get(client, f"{CONTACTS}?q=ACME.INC"))["meta"]["count"] == 20
    assert (await get(client, f"{CONTACTS}?q=4930"))["payload"][0]["name"] == "Bob"
    assert (await get(client, f"{CONTACTS}?q=slack:u42"))["payload"][0]["name"] == "Bob"
    assert (await get(client, f"{CONTACTS}?q=nobody"))["payload"] == []
    everyone = await get(client, f"{CONTACTS}?page=2")
    assert everyone["meta"] == {"count": 21, "current_page": 2}
    assert len(everyone["payload"]) == 6


async def test_get_and_patch_contact(client: Client) -> None:
    contact = await new_contact(client, name="A", custom_attributes={"plan": "free", "x": 1})
    await new_contact(client, name="B", email="b@example.com")
    url = f"{CONTACTS}/{contact['id']}"
    assert (await get(client, url))["payload"]["name"] == "A"
    response = await client.patch(
        url, json={"name": "A2", "custom_attributes": {"plan": "pro"}}, headers=AUTH
    )
    assert response.status == 200
    patched = (await response.json())["payload"]
    assert patched["name"] == "A2"
    assert patched["custom_attributes"] == {"plan": "pro", "x": 1}
    response = await client.patch(url, json={"email": "B@example.com"}, headers=AUTH)
    assert response.status == 422
    assert (await response.json())["attributes"] == ["email"]
    assert (await get(client, f"{CONTACTS}?q=a2"))["meta"]["count"] == 1
    await get(client, f"{CONTACTS}/1", status=404)
    response = await client.patch(f"{CONTACTS}/1", json={"name": "x"}, headers=AUTH)
    assert response.status == 404


# -- conversations -------------------------------------------------------------------------


async def test_create_conversation_has_the_seed_shape(client: Client) -> None:
    contact = await new_contact(client, name="Test", email="t@example.com")
    conversation = await post(
        client,
        CONVERSATIONS,
        {
            "inbox_id": INBOX,
            "contact_id": contact["id"],
            "custom_attributes": {"thread": "T1"},
            "additional_attributes": {"source": "slack"},
        },
    )
    assert set(conversation) == SEED_CONVERSATION_KEYS
    assert isinstance(conversation["id"], int)
    assert str(uuid.UUID(conversation["uuid"])) == conversation["uuid"]
    assert conversation["status"] == "open"
    assert conversation["inbox_id"] == INBOX
    assert conversation["meta"]["channel"] == "Channel::Api"
    assert conversation["meta"]["sender"]["id"] == contact["id"]
    assert conversation["meta"]["sender"]["email"] == "t@example.com"
    assert conversation["platform"]["channel_type"] == "Channel::Api"
    assert conversation["platform"]["inbox_id"] == INBOX
    assert conversation["account_info"]["contact_id"] == contact["id"]
    assert conversation["account_info"]["contact_name"] == "Test"
    assert conversation["custom_attributes"] == {"thread": "T1"}
    assert conversation["additional_attributes"] == {"source": "slack"}
    fetched = await get(client, f"{CONVERSATIONS}/{conversation['id']}")
    assert fetched["id"] == conversation["id"]
    assert fetched["custom_attributes"] == {"thread": "T1"}
    await get(client, f"{CONVERSATIONS}/99999", status=404)


async def test_conversation_by_source_id(client: Client) -> None:
    contact = await new_contact(client, name="S")
    first = await post(
        client,
        CONVERSATIONS,
        {"inbox_id": INBOX, "contact_id": str(contact["id"]), "source_id": "src-1"},
    )
    second = await post(client, CONVERSATIONS, {"inbox_id": INBOX, "source_id": "src-1"})
    assert second["meta"]["sender"]["id"] == contact["id"]
    assert second["id"] != first["id"]
    body = await post(client, CONVERSATIONS, {"inbox_id": INBOX, "source_id": "nope"}, 404)
    assert body == {"error": "Resource could not be found"}


async def test_conversation_validation(client: Client) -> None:
    contact = await new_contact(client, name="V")
    body = await post(client, CONVERSATIONS, {"contact_id": contact["id"]}, status=422)
    assert body == {"message": "Inbox can't be blank", "attributes": ["inbox_id"]}
    body = await post(client, CONVERSATIONS, {"inbox_id": INBOX}, status=422)
    assert body["message"]
    await post(client, CONVERSATIONS, {"inbox_id": INBOX, "contact_id": 12345}, status=404)
    await post(
        client, CONVERSATIONS, {"inbox_id": INBOX + 1, "contact_id": contact["id"]}, status=404
    )


async def test_toggle_status(client: Client) -> None:
    conversation = await new_conversation(client, name="T")
    url = f"{CONVERSATIONS}/{conversation['id']}/toggle_status"
    body = await post(client, url, {"status": "resolved"})
    assert body["payload"]["current_status"] == "resolved"
    assert body["payload"]["conversation_id"] == conversation["id"]
    await post(client, url, {"status": "deleted"}, status=422)
    await post(client, url, {}, status=422)
    fetched = await get(client, f"{CONVERSATIONS}/{conversation['id']}")
    assert fetched["status"] == "resolved"
    await post(client, f"{CONVERSATIONS}/99999/toggle_status", {"status": "open"}, status=404)


# -- an agent deleting and merging ---------------------------------------------------------

NOT_FOUND = {"error": "Resource could not be found"}


async def delete(client: Client, path: str, status: int = 200) -> bytes:
    response = await client.delete(path, headers=AUTH)
    assert response.status == status, await response.text()
    return await response.read()


async def incoming(client: Client, conversation_id: int, content: str) -> dict[str, Any]:
    url = f"{CONVERSATIONS}/{conversation_id}/messages"
    message: dict[str, Any] = await post(client, url, {"content": content,
                                                      "message_type": "incoming"})
    return message


async def test_deleting_a_contact_deletes_its_conversations_and_messages(
    client: Client, emulator: Emulator
) -> None:
    kept = await new_conversation(client, name="Kept")
    contact = await new_contact(client, name="Gone", email="gone@example.com", phone_number="+1")
    conversation = await post(client, CONVERSATIONS, {"inbox_id": INBOX, "source_id": "src-g",
                                                      "contact_id": contact["id"]})
    await incoming(client, conversation["id"], "bye")
    await incoming(client, kept["id"], "still here")
    assert await delete(client, f"{CONTACTS}/{contact['id']}") == b""  # Chatwoot: head :ok
    assert await get(client, f"{CONTACTS}/{contact['id']}", status=404) == NOT_FOUND
    assert await get(client, f"{CONVERSATIONS}/{conversation['id']}", status=404) == NOT_FOUND
    await post(client, f"{CONVERSATIONS}/{conversation['id']}/messages",
               {"content": "late", "message_type": "incoming"}, status=404)
    await post(client, CONVERSATIONS, {"inbox_id": INBOX, "source_id": "src-g"}, status=404)
    assert [m["content"] for m in emulator.state.messages.values()] == ["still here"]
    assert list(emulator.state.conversations) == [kept["id"]]
    assert (await get(client, f"{CONTACTS}?q=gone"))["payload"] == []
    again = await new_contact(client, email="gone@example.com", phone_number="+1")  # free again
    assert again["id"] > contact["id"]
    assert await delete(client, f"{CONTACTS}/{contact['id']}", status=404) == (
        b'{"error": "Resource could not be found"}')


async def test_merge_moves_the_mergees_conversations_to_the_base_contact(
    client: Client, emulator: Emulator
) -> None:
    mergee = await new_contact(client, name="Ann", email="ann@example.com", identifier="echo:ann",
                               custom_attributes={"plan": "pro", "nested": {"a": 1}})
    moved = await post(client, CONVERSATIONS, {"inbox_id": INBOX, "source_id": "src-ann",
                                               "contact_id": mergee["id"]})
    await incoming(client, moved["id"], "from Ann")
    base = await new_contact(client, name="Ann Lee", phone_number="+15550001",
                             custom_attributes={"plan": "free", "nested": {"b": 2}})
    own = await post(client, CONVERSATIONS, {"inbox_id": INBOX, "contact_id": base["id"]})
    merge = "/api/v2/accounts/actions/contact_merge"
    merged = await post(client, merge, {"base_contact_id": base["id"],
                                        "mergee_contact_id": mergee["id"]})
    assert merged["id"] == base["id"]
    # the base keeps its own fields and takes the mergee's where its own are blank
    assert (merged["name"], merged["phone_number"]) == ("Ann Lee", "+15550001")
    assert (merged["email"], merged["identifier"]) == ("ann@example.com", "echo:ann")
    assert merged["custom_attributes"] == {"plan": "free", "nested": {"a": 1, "b": 2}}
    assert await get(client, f"{CONTACTS}/{base['id']}") == {"payload": merged}
    assert await get(client, f"{CONTACTS}/{mergee['id']}", status=404) == NOT_FOUND
    listed = await get(client, f"{CONTACTS}/{base['id']}/conversations")
    assert [c["id"] for c in listed["payload"]] == [moved["id"], own["id"]]
    assert {c["meta"]["sender"]["email"] for c in listed["payload"]} == {"ann@example.com"}
    fetched = await get(client, f"{CONVERSATIONS}/{moved['id']}")
    assert fetched["meta"]["sender"]["id"] == base["id"]
    assert fetched["account_info"]["contact_name"] == "Ann Lee"
    [message] = emulator.state.messages_in(moved["id"])
    assert message["sender"]["id"] == base["id"]
    await incoming(client, moved["id"], "still the same conversation")
    by_source = await post(client, CONVERSATIONS, {"inbox_id": INBOX, "source_id": "src-ann"})
    assert by_source["meta"]["sender"]["id"] == base["id"]
    search = await get(client, f"{CONTACTS}?q=echo:ann")
    assert [c["id"] for c in search["payload"]] == [base["id"]]
    await post(client, CONTACTS, {"inbox_id": INBOX, "email": "ANN@example.com"}, status=422)
    # unknown or missing ids: 404, nothing changes; a contact merged into itself stays
    for body in ({"base_contact_id": 99999, "mergee_contact_id": base["id"]},
                 {"base_contact_id": base["id"], "mergee_contact_id": mergee["id"]},
                 {"base_contact_id": base["id"]}, {}):
        assert await post(client, merge, body, status=404) == NOT_FOUND
    assert await post(client, merge, {"base_contact_id": base["id"],
                                      "mergee_contact_id": base["id"]}) == merged
    assert list(emulator.state.contacts) == [base["id"]]


async def test_deleting_a_conversation_deletes_its_messages(
    client: Client, emulator: Emulator
) -> None:
    conversation = await new_conversation(client, name="D")
    cid = conversation["id"]
    await incoming(client, cid, "one")
    assert await delete(client, f"{CONVERSATIONS}/{cid}") == b""
    assert await get(client, f"{CONVERSATIONS}/{cid}", status=404) == NOT_FOUND
    assert await get(client, f"{CONVERSATIONS}/{cid}/messages", status=404) == NOT_FOUND
    await post(client, f"{CONVERSATIONS}/{cid}/messages",
               {"content": "two", "message_type": "incoming"}, status=404)
    contact_id = conversation["meta"]["sender"]["id"]
    assert (await get(client, f"{CONTACTS}/{contact_id}/conversations"))["payload"] == []
    assert emulator.state.messages == {}
    assert await delete(client, f"{CONVERSATIONS}/{cid}", status=404) == (
        b'{"error": "Resource could not be found"}')
    await delete(client, f"{CONVERSATIONS}/abc", status=404)


# -- messages ------------------------------------------------------------------------------


async def test_messages_shape_and_listing(client: Client) -> None:
    conversation = await new_conversation(client, name="M", email="m@example.com")
    url = f"{CONVERSATIONS}/{conversation['id']}/messages"
    incoming = await post(
        client,
        url,
        {
            "content": "hello",
            "message_type": "incoming",
            "private": False,
            "content_attributes": {"in_reply_to": 29},
        },
    )
    assert set(incoming) == MESSAGE_KEYS
    assert incoming["message_type"] == 0
    assert incoming["content_type"] == "text"
    assert incoming["content_attributes"] == {"in_reply_to": 29}
    assert incoming["conversation_id"] == conversation["id"]
    assert incoming["inbox_id"] == INBOX
    assert incoming["source_id"] is None
    assert incoming["attachments"] == []
    assert isinstance(incoming["created_at"], int)
    assert incoming["sender"]["id"] == conversation["meta"]["sender"]["id"]
    default = await post(client, url, {"content": "defaults to outgoing"})
    assert default["message_type"] == 1
    assert default["sender"]["type"] == "user"
    listed = await get(client, url)
    assert [m["id"] for m in listed["payload"]] == [incoming["id"], default["id"]]


async def test_message_validation(client: Client) -> None:
    conversation = await new_conversation(client, name="V")
    url = f"{CONVERSATIONS}/{conversation['id']}/messages"
    body = await post(client, url, {"content": "", "message_type": "incoming"}, status=422)
    assert body == {"message": "Content can't be blank", "attributes": ["content"]}
    await post(client, url, {"message_type": "incoming"}, status=422)
    await post(client, url, {"content": "x" * 150_001, "message_type": "incoming"}, status=422)
    await post(client, url, {"content": "x" * 150_000, "message_type": "incoming"})
    await post(client, url, {"content": "x", "message_type": "sideways"}, status=422)
    await post(client, f"{CONVERSATIONS}/99999/messages", {"content": "x"}, status=404)
    await get(client, f"{CONVERSATIONS}/99999/messages", status=404)


async def test_incoming_reopens_a_resolved_conversation(client: Client) -> None:
    conversation = await new_conversation(client, name="R")
    cid = conversation["id"]
    await post(client, f"{CONVERSATIONS}/{cid}/toggle_status", {"status": "resolved"})
    await post(client, f"{CONVERSATIONS}/{cid}/messages", {"content": "agent note"})
    assert (await get(client, f"{CONVERSATIONS}/{cid}"))["status"] == "resolved"
    await post(
        client, f"{CONVERSATIONS}/{cid}/messages", {"content": "back", "message_type": "incoming"}
    )
    assert (await get(client, f"{CONVERSATIONS}/{cid}"))["status"] == "open"


async def test_too_many_messages_in_a_minute(client: Client) -> None:
    conversation = await new_conversation(client, name="Chatty")
    url = f"{CONVERSATIONS}/{conversation['id']}/messages"
    for n in range(200):
        await post(client, url, {"content": f"m{n}", "message_type": "incoming"})
    body = await post(client, url, {"content": "one more", "message_type": "incoming"}, 422)
    assert body == {"message": "Too many messages"}


async def test_unknown_api_path_is_json_404(client: Client, emulator: Emulator) -> None:
    body = await get(client, "/api/v2/accounts/nothing", status=404)
    assert body == {"error": "Resource could not be found"}
    assert emulator.state.count_calls("GET", "/api/v2/accounts/nothing") == 1


# -- faults --------------------------------------------------------------------------------


async def test_latency_is_added(client: Client, emulator: Emulator) -> None:
    emulator.faults = Faults(latency=0.2)
    started = time.monotonic()
    await get(client, CONTACTS)
    assert time.monotonic() - started >= 0.2


async def statuses(client: Client, count: int) -> list[int]:
    result = []
    for _ in range(count):
        response = await client.get(CONTACTS)  # faults come before auth
        result.append(response.status)
    return result


async def test_server_errors_are_deterministic_with_a_seed(
    aiohttp_client: AiohttpClient, client: Client, emulator: Emulator
) -> None:
    emulator.faults = Faults(error_rate=1.0, seed=7)
    first = await statuses(client, 12)
    assert set(first) <= {500, 502, 503}
    assert len(set(first)) > 1
    faults = Faults(error_rate=1.0, seed=7)
    other = Emulator(api_key="key", api_secret="secret", inbox_id=INBOX, faults=faults)
    assert await statuses(await aiohttp_client(other.app()), 12) == first
    assert emulator.state.count_calls("GET") == 12
    assert emulator.state.contacts == {}


async def test_rate_limit_answers_429_with_retry_after(client: Client, emulator: Emulator) -> None:
    emulator.faults = Faults(rate_limit_rate=1.0, retry_after=1.5, seed=1)
    response = await client.post(CONTACTS, json={"inbox_id": INBOX}, headers=AUTH)
    assert response.status == 429
    assert response.headers["Retry-After"] == "2"
    assert emulator.state.contacts == {}
    assert emulator.state.calls[-1].status == 429


async def test_token_bucket_rate_limit(client: Client, emulator: Emulator) -> None:
    # 5 calls a second, a burst of 3: three calls pass at once, the fourth gets a 429.
    response = await client.post("/_emulator/faults", json={
        "rate_limit": 5, "rate_limit_burst": 3, "retry_after": 1})
    assert response.status == 200
    statuses = [(await client.get(CONTACTS, headers=AUTH)).status for _ in range(4)]
    assert statuses[:3] == [200, 200, 200]
    assert statuses[3] == 429
    limited = await client.get(CONTACTS, headers=AUTH)
    if limited.status == 429:  # the bucket may have refilled one token in between
        assert limited.headers["Retry-After"] == "1"
    emulator.faults = Faults()
    assert (await client.get(CONTACTS, headers=AUTH)).status == 200


async def test_outage_window_via_admin_endpoint(client: Client, emulator: Emulator) -> None:
    response = await client.post("/_emulator/faults", json={"outage_seconds": 60})
    assert response.status == 200
    assert (await response.json())["faults"]["outage_until"] > time.time() + 50
    response = await client.get(CONTACTS, headers=AUTH)
    assert response.status == 503
    assert await response.json() == {"error": "Service Unavailable"}
    assert int(response.headers["Retry-After"]) > 50
    await client.post("/_emulator/faults", json={"outage_seconds": 0})
    await get(client, CONTACTS)
    response = await client.post("/_emulator/faults", json={"bogus": 1})
    assert response.status == 400
    response = await client.post("/_emulator/faults", json={"error_rate": 2})
    assert response.status == 400
    assert emulator.faults.error_rate == 0


# -- admin and HTML ------------------------------------------------------------------------


async def test_state_summary_and_reset(client: Client, emulator: Emulator) -> None:
    conversation = await new_conversation(client, name="S", email="s@example.com")
    await post(client, CONTACTS, {"inbox_id": INBOX, "email": "S@example.com"}, status=422)
    await get(client, f"{CONVERSATIONS}/{conversation['id']}")
    response = await client.get("/_emulator/state")
    state = await response.json()
    assert len(state["contacts"]) == 1
    assert len(state["conversations"]) == 1
    assert state["messages"] == []
    assert state["calls"]["POST /api/v2/accounts/contacts"] == {"200": 1, "422": 1}
    assert state["calls"]["GET /api/v2/accounts/conversations/{id}"] == {"200": 1}
    assert emulator.state.count_calls("POST", CONTACTS) == 2
    assert emulator.state.count_calls(path_prefix=CONVERSATIONS) == 2
    assert emulator.state.contacts_list()[0]["email"] == "s@example.com"
    emulator.faults = Faults(latency=0.01)
    assert (await client.post("/_emulator/reset", json={})).status == 200
    assert emulator.state.contacts == {} and emulator.state.calls == []
    assert emulator.faults == Faults()
    again = await new_contact(client, email="s@example.com")
    assert again["id"] > conversation["meta"]["sender"]["id"]


async def test_html_page_escapes_and_replies(client: Client, emulator: Emulator) -> None:
    evil = "<script>alert(1)</script>"
    conversation = await new_conversation(client, name=evil, email="e@example.com")
    cid = conversation["id"]
    await post(
        client, f"{CONVERSATIONS}/{cid}/messages", {"content": evil, "message_type": "incoming"}
    )
    response = await client.get("/")
    assert response.status == 200
    assert response.content_type == "text/html"
    page = await response.text()
    assert evil not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Livedesk emulator — nothing here reaches the real Livedesk" in page
    assert f'action="_emulator/conversations/{cid}/reply"' in page
    response = await client.post(
        f"/_emulator/conversations/{cid}/reply", json={"content": "Hi <b>there</b>"}
    )
    assert response.status == 200
    assert (await response.json())["content"] == "Hi <b>there</b>"
    assert "Hi &lt;b&gt;there&lt;/b&gt;" in await (await client.get("/")).text()
    assert emulator.state.messages_in(cid)[-1]["message_type"] == 1


def snapshot(emulator: Emulator) -> str:
    state = emulator.state
    return json.dumps([state.contacts, state.conversations, state.messages,
                       dataclasses.asdict(emulator.faults)])


async def test_admin_posts_take_json_from_the_same_origin_only(
    client: Client, emulator: Emulator
) -> None:
    """No other web page can drive the admin endpoints: a cross-site form or a "simple"
    fetch (text/plain) gets 415, a JSON fetch (which needs CORS) from elsewhere gets 403."""
    mergee = await new_conversation(client, name="Mergee", email="m@example.com")
    conversation = await new_conversation(client, name="Base")
    cid, base_id = conversation["id"], conversation["meta"]["sender"]["id"]
    mergee_id = mergee["meta"]["sender"]["id"]
    own = str(client.make_url("")).rstrip("/")
    actions: list[tuple[str, dict[str, Any]]] = [  # each valid when accepted, in this order
        ("/_emulator/faults", {"latency": 0.001}),
        (f"/_emulator/conversations/{cid}/reply", {"content": "hello", "private": True}),
        (f"/_emulator/conversations/{cid}/status", {"status": "resolved"}),
        ("/_emulator/actions/contact_merge", {"base_contact_id": base_id,
                                              "mergee_contact_id": mergee_id}),
        (f"/_emulator/conversations/{mergee['id']}/delete", {}),
        (f"/_emulator/contacts/{base_id}/delete", {}),
        ("/_emulator/reset", {}),
    ]
    for path, body in actions:
        before = snapshot(emulator)
        refused: list[tuple[int, dict[str, Any]]] = [
            (415, {"data": json.dumps(body), "headers": {"Content-Type": "text/plain"}}),
            (415, {"data": {k: str(v) for k, v in body.items()} or {"x": "1"}}),
            (415, {}),
            (403, {"json": body, "headers": {"Origin": "https://evil.example"}}),
            (403, {"json": body, "headers": {"Origin": "null"}}),
            (403, {"json": body, "headers": {"Origin": "http://[bad"}}),
            (403, {"json": body, "headers": {"Referer": "https://evil.example/page"}}),
            (403, {"json": body, "headers": {"Origin": "https://evil.example",
                                             "Referer": f"{own}/"}}),
        ]
        for status, request in refused:
            response = await client.post(path, **request)
            assert response.status == status, (path, request, await response.text())
            assert "error" in await response.json()
            assert snapshot(emulator) == before, (path, request)
        response = await client.post(path, json=body, headers={"Origin": own,
                                                               "Referer": f"{own}/"})
        assert response.status == 200, (path, await response.text())
        assert snapshot(emulator) != before, path
    assert emulator.state.contacts == {} and emulator.faults == Faults()
    # without Origin, a same-origin Referer (or neither, as curl sends) is accepted
    response = await client.post("/_emulator/faults", json={"latency": 0},
                                 headers={"Referer": f"{own}/some/page"})
    assert response.status == 200
    assert (await client.post("/_emulator/reset", json={})).status == 200


async def test_the_page_has_an_agents_actions(client: Client) -> None:
    conversation = await new_conversation(client, name="P", email="p@example.com",
                                          identifier="echo:p")
    cid, contact_id = conversation["id"], conversation["meta"]["sender"]["id"]
    page = await (await client.get("/")).text()
    assert f"Contact {contact_id}: P &lt;p@example.com&gt; (identifier echo:p)" in page
    for action in (f"conversations/{cid}/reply", f"conversations/{cid}/status",
                   f"conversations/{cid}/delete", f"contacts/{contact_id}/delete",
                   "actions/contact_merge"):
        assert f'action="_emulator/{action}"' in page
    assert '<input type="hidden" name="status" value="resolved">' in page
    assert '"Content-Type": "application/json"' in page  # the forms post JSON
    await post(client, f"{CONVERSATIONS}/{cid}/toggle_status", {"status": "resolved"})
    page = await (await client.get("/")).text()
    assert f"Conversation {cid} (resolved)" in page
    assert '<input type="hidden" name="status" value="open">' in page


async def test_works_mounted_as_a_sub_app(
    aiohttp_client: AiohttpClient, emulator: Emulator
) -> None:
    parent = web.Application()
    sub = emulator.app()
    parent.add_subapp("/emulator", sub)
    client = await aiohttp_client(parent)
    assert sub[EMULATOR] is emulator
    contact = (await post(client, f"/emulator{CONTACTS}", {"inbox_id": INBOX}))["payload"]
    conversation = await post(
        client,
        f"/emulator{CONVERSATIONS}",
        {"inbox_id": INBOX, "contact_id": contact["contact"]["id"]},
    )
    assert emulator.state.count_calls("POST", CONTACTS) == 1
    state = await (await client.get("/emulator/_emulator/state")).json()
    assert state["calls"]["POST /api/v2/accounts/contacts"] == {"200": 1}
    response = await client.get("/emulator/")
    assert "Reply as agent" in await response.text()
    response = await client.post(
        f"/emulator/_emulator/conversations/{conversation['id']}/reply",
        json={"content": "from the page", "private": True},
        headers={"Origin": str(client.make_url("")).rstrip("/")},
    )
    assert response.status == 200
    assert "from the page" in await (await client.get("/emulator/")).text()
    assert emulator.state.messages_in(conversation["id"])[-1]["private"] is True


# -- webhooks ------------------------------------------------------------------------------


Received = asyncio.Queue[tuple[dict[str, str], bytes]]


@pytest.fixture
async def receiver(aiohttp_server: AiohttpServer) -> tuple[TestServer, Received]:
    received: Received = asyncio.Queue()

    async def hook(request: web.Request) -> web.Response:
        await received.put((dict(request.headers), await request.read()))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    return await aiohttp_server(app), received


def verify(headers: dict[str, str], body: bytes, secret: str) -> None:
    timestamp = headers["X-Chatwoot-Timestamp"]
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    assert hmac.compare_digest(headers["X-Chatwoot-Signature"], f"sha256={digest.hexdigest()}")
    assert abs(int(timestamp) - time.time()) < 60
    uuid.UUID(headers["X-Chatwoot-Delivery"])


async def test_webhooks_are_signed_message_created_events(
    aiohttp_client: AiohttpClient, receiver: tuple[TestServer, Received]
) -> None:
    server, received = receiver
    emulator = Emulator(
        api_key="key",
        api_secret="secret",
        inbox_id=INBOX,
        webhook_url=str(server.make_url("/hook")),
        webhook_secret="whsec",
    )
    client = await aiohttp_client(emulator.app())
    conversation = await new_conversation(client, name="W", email="w@example.com")
    cid = conversation["id"]
    message = await post(
        client, f"{CONVERSATIONS}/{cid}/messages", {"content": "hi", "message_type": "incoming"}
    )
    headers, body = await asyncio.wait_for(received.get(), timeout=5)
    verify(headers, body, "whsec")
    event = json.loads(body)
    assert event["event"] == "message_created"
    assert event["id"] == message["id"]
    assert event["message_type"] == "incoming"
    assert event["content"] == "hi"
    assert event["private"] is False
    assert event["sender"]["type"] == "contact"
    assert event["sender"]["email"] == "w@example.com"
    assert event["conversation"]["id"] == cid
    assert event["conversation"]["status"] == "open"
    assert event["conversation"]["meta"]["sender"]["id"] == conversation["meta"]["sender"]["id"]
    assert event["conversation"]["contact_inbox"]["source_id"]
    assert event["inbox"]["id"] == INBOX
    assert set(event["account"]) == {"id", "name"}
    datetime.fromisoformat(event["created_at"])

    response = await client.post(
        f"/_emulator/conversations/{cid}/reply", json={"content": "agent here", "private": False}
    )
    assert response.status == 200
    reply = await response.json()
    headers, body = received.get_nowait()  # agent replies return after the webhook POST
    verify(headers, body, "whsec")
    event = json.loads(body)
    assert event["id"] == reply["id"]
    assert event["message_type"] == "outgoing"
    assert event["sender"]["type"] == "user"
    assert event["content"] == "agent here"


async def test_unsigned_webhook_and_runtime_url_change(
    client: Client, emulator: Emulator, receiver: tuple[TestServer, Received]
) -> None:
    server, received = receiver
    conversation = await new_conversation(client, name="U")
    await emulator.agent_reply(conversation["id"], "nobody listens")
    assert received.empty()
    emulator.webhook_url = str(server.make_url("/hook"))
    message = await emulator.agent_reply(conversation["id"], "secret note", private=True)
    headers, body = received.get_nowait()
    assert "X-Chatwoot-Signature" not in headers
    event = json.loads(body)
    assert event["id"] == message["id"]
    assert event["private"] is True


async def test_webhook_failure_never_breaks_the_api(client: Client, emulator: Emulator) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    emulator.webhook_url = f"http://127.0.0.1:{port}/hook"
    conversation = await new_conversation(client, name="F")
    url = f"{CONVERSATIONS}/{conversation['id']}/messages"
    await post(client, url, {"content": "still fine", "message_type": "incoming"})
    message = await emulator.agent_reply(conversation["id"], "also fine")
    assert message["content"] == "also fine"


async def test_agent_reply_errors(client: Client) -> None:
    response = await client.post("/_emulator/conversations/99999/reply", json={"content": "x"})
    assert response.status == 404
    conversation = await new_conversation(client, name="E")
    response = await client.post(
        f"/_emulator/conversations/{conversation['id']}/reply", json={"content": " "}
    )
    assert response.status == 422
    assert await response.json() == {"message": "Content can't be blank", "attributes": ["content"]}


async def test_one_emulator_served_by_two_apps_at_once(
    aiohttp_client: AiohttpClient, emulator: Emulator, receiver: tuple[TestServer, Received]
) -> None:
    server, received = receiver
    emulator.webhook_url = str(server.make_url("/hook"))
    standalone = await aiohttp_client(emulator.app())
    parent = web.Application()
    parent.add_subapp("/emulator/", emulator.app())
    mounted = await aiohttp_client(parent)
    conversation = await new_conversation(standalone, name="Both")
    assert (await get(mounted, f"/emulator{CONVERSATIONS}/{conversation['id']}"))["id"]
    await standalone.close()
    await emulator.agent_reply(conversation["id"], "still delivered")
    _, body = received.get_nowait()
    assert json.loads(body)["content"] == "still delivered"


# -- files, edits, deletions and templates ---------------------------------------------------

PUSH_EVENT_KEYS = {"id", "message_id", "file_type", "account_id", "extension", "data_url",
                   "thumb_url", "file_size", "width", "height"}
PDF = b"%PDF-1.4\n%%EOF\n"


async def test_files_go_out_in_webhooks_as_chatwoot_shapes_them_and_are_served(
    aiohttp_client: AiohttpClient, emulator: Emulator, receiver: tuple[TestServer, Received]
) -> None:
    server, received = receiver
    emulator.webhook_url = str(server.make_url("/hook"))
    parent = web.Application()
    parent.add_subapp("/emulator/", emulator.app())  # as the daemon mounts it
    client = await aiohttp_client(parent)
    conversation = await new_conversation(await aiohttp_client(emulator.app()), name="Files")
    cid = conversation["id"]

    await client.post(f"/emulator/_emulator/conversations/{cid}/reply", json={"content": "hi"})
    event = json.loads(received.get_nowait()[1])
    assert "attachments" not in event  # Chatwoot omits the key when there are no files

    # An agent's file-only reply through the API: multipart, outgoing, no content.
    form = aiohttp.FormData({"message_type": "outgoing"})
    form.add_field("attachments[]", PDF, filename="invoice-42.pdf",
                   content_type="application/pdf")
    response = await client.post(f"/emulator{CONVERSATIONS}/{cid}/messages", data=form,
                                 headers=AUTH)
    assert response.status == 200, await response.text()
    message = await response.json()
    event = json.loads((await asyncio.wait_for(received.get(), timeout=5))[1])
    assert (event["id"], event["content"], event["message_type"]) == (
        message["id"], None, "outgoing")
    [attachment] = event["attachments"]
    assert set(attachment) == PUSH_EVENT_KEYS
    assert (attachment["message_id"], attachment["file_type"], attachment["extension"],
            attachment["file_size"]) == (message["id"], "file", "pdf", len(PDF))
    url = URL(attachment["data_url"])
    assert url.is_absolute() and url.path == "/emulator/_emulator/files/1/invoice-42.pdf"
    served = await client.get(url.path_qs)  # no credentials, like a signed blob URL
    assert (served.status, served.content_type, await served.read()) == (
        200, "application/pdf", PDF)
    assert (await client.get("/emulator/_emulator/files/2/x.pdf")).status == 404


async def test_the_page_reply_takes_base64_files(client: Client, emulator: Emulator) -> None:
    cid = (await new_conversation(client, name="Page"))["id"]
    url = f"/_emulator/conversations/{cid}/reply"
    png = {"name": "my shot.png", "content_type": "image/png",
           "data": base64.b64encode(b"\x89PNG").decode()}
    response = await client.post(url, json={"content": "", "attachments": [png]})
    assert response.status == 200, await response.text()
    [attachment] = (await response.json())["attachments"]
    assert (attachment["file_type"], attachment["thumb_url"]) == ("image",
                                                                  attachment["data_url"])
    assert emulator.state.attachments == [b"\x89PNG"]
    assert attachment["data_url"].endswith("/_emulator/files/1/my%20shot.png")
    served = await client.get(URL(attachment["data_url"]).path_qs)
    assert (served.content_type, await served.read()) == ("image/png", b"\x89PNG")
    for files in ([{**png, "data": "not base64!"}], [{"data": "AAAA"}], "x"):
        response = await client.post(url, json={"content": "x", "attachments": files})
        assert response.status == 422, files
    response = await client.post(url, json={"content": " "})
    assert response.status == 422  # no text and no file
    response = await client.post(url, data={"content": "x"})
    assert response.status == 415  # JSON only, as every admin endpoint


async def test_edits_deletions_and_templates_send_their_events(
    client: Client, emulator: Emulator, receiver: tuple[TestServer, Received]
) -> None:
    server, received = receiver
    emulator.webhook_url = str(server.make_url("/hook"))
    cid = (await new_conversation(client, name="Edits"))["id"]
    response = await client.post(f"/_emulator/conversations/{cid}/template",
                                 json={"content": "We are away."})
    template = await response.json()
    event = json.loads(received.get_nowait()[1])
    assert (event["event"], event["id"], event["message_type"], event["sender"]) == (
        "message_created", template["id"], "template", None)

    reply = await emulator.agent_reply(cid, "It ships today.")
    received.get_nowait()
    response = await client.post(f"/_emulator/messages/{reply['id']}/edit",
                                 json={"content": "It ships tomorrow."})
    assert response.status == 200
    event = json.loads(received.get_nowait()[1])
    assert (event["event"], event["id"], event["content"], event["message_type"]) == (
        "message_updated", reply["id"], "It ships tomorrow.", "outgoing")
    response = await client.post(f"/_emulator/messages/{reply['id']}/delete", json={})
    assert response.status == 200
    event = json.loads(received.get_nowait()[1])
    assert (event["event"], event["content"], event["content_attributes"]) == (
        "message_updated", "This message was deleted", {"deleted": True})
    assert (await client.post("/_emulator/messages/99999/delete", json={})).status == 404
    page = await (await client.get("/")).text()
    assert 'type="file" name="attachments"' in page
    assert f'action="_emulator/conversations/{cid}/template"' in page
    assert f'action="_emulator/messages/{template["id"]}/edit"' in page
    assert f'action="_emulator/messages/{reply["id"]}/delete"' not in page  # deleted already


@pytest.mark.browser
async def test_on_the_page_an_agent_attaches_a_file_sends_a_template_edits_and_deletes(
    aiohttp_server: AiohttpServer, emulator: Emulator
) -> None:
    executable = shutil.which("chromium") or "/usr/bin/chromium"
    if not os.access(executable, os.X_OK):
        pytest.skip("no Chromium: install Debian's chromium (see .ci/run)")
    async_api = pytest.importorskip("playwright.async_api")
    expect = async_api.expect
    server = await aiohttp_server(emulator.app())
    async with aiohttp.ClientSession(base_url=str(server.make_url("/"))) as http:
        async with http.post(CONTACTS, json={"inbox_id": INBOX, "name": "Pat"},
                             headers=AUTH) as response:
            contact = (await response.json())["payload"]["contact"]
        async with http.post(CONVERSATIONS, json={"inbox_id": INBOX, "contact_id": contact["id"]},
                             headers=AUTH) as response:
            cid = (await response.json())["id"]
    state = emulator.state

    async with async_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=executable, args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            page = await browser.new_page()
            page.on("dialog", lambda dialog: dialog.accept())
            await page.goto(str(server.make_url("/")))
            status = page.get_by_role("status")
            section = page.get_by_role("region", name=f"Conversation {cid} (open)")
            await section.get_by_label("Attach files").set_input_files(
                files=[{"name": "invoice.pdf", "mimeType": "application/pdf", "buffer": PDF}])
            await section.get_by_role("button", name="Send reply").click()  # file only
            await expect(status).to_have_text(f"Reply to conversation {cid}: done.")
            [reply] = state.messages_in(cid)
            assert reply["content"] is None
            assert [(a["name"], a["content_type"]) for a in reply["attachments"]] == [
                ("invoice.pdf", "application/pdf")]
            assert state.attachments == [PDF]
            await expect(section.get_by_role("link", name="invoice.pdf")).to_be_visible()

            await section.get_by_role("button", name="Send template message").click()
            await expect(status).to_have_text(f"Template message in conversation {cid}: done.")
            template = state.messages_in(cid)[-1]
            assert template["message_type"] == 3 and template["sender"] is None

            await section.get_by_label(f"New text of message {template['id']}").fill("Back soon")
            await section.get_by_role("button", name="Edit").last.click()
            await expect(status).to_have_text(f"Edit message {template['id']}: done.")
            assert state.messages[template["id"]]["content"] == "Back soon"
            await section.get_by_role("button", name="Delete", exact=True).first.click()
            await expect(status).to_have_text(f"Delete message {reply['id']}: done.")
            assert state.messages[reply["id"]]["content_attributes"] == {"deleted": True}
        finally:
            await browser.close()
