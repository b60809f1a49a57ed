"""UserDirectory: users.info over HTTP (FakeSlack), cached with a TTL and bounded."""

from __future__ import annotations

from aiohttp.test_utils import TestServer
from livebridge_slack.fake import FakeSlack
from livebridge_slack.users import LOOKUP_PAUSE, UserDirectory
from slack_sdk.web.async_client import AsyncWebClient

from livebridge import Sender


def directory(server: TestServer, fallbacks: list[tuple[str, str]], now: list[float],
              **kwargs: float) -> UserDirectory:
    web = AsyncWebClient(token="xoxb-test", base_url=str(server.make_url("/api/")))
    options = {"ttl": 60.0, "size": 2, "timeout": 1.0, **kwargs}
    return UserDirectory(web, ttl=options["ttl"], size=int(options["size"]),
                         timeout=options["timeout"],
                         on_fallback=lambda user, why: fallbacks.append((user, why)),
                         clock=lambda: now[0])


def lookups(slack: FakeSlack) -> list[str]:
    return [params["user"] for method, params in slack.calls if method == "users.info"]


async def test_profile_ttl_and_lru_bound(server: TestServer, slack: FakeSlack) -> None:
    for user in ("UA", "UB", "UC"):
        slack.add_user(user, user.lower(), email=f"{user.lower()}@example.com")
    now, fallbacks = [0.0], []
    users = directory(server, fallbacks, now)
    assert await users.sender("T1", "UA") == Sender(
        external_id="T1:UA", name="ua", email="ua@example.com",
        avatar_url="https://avatars.slack-edge.test/UA_192.png")
    now[0] = 59.0
    await users.sender("T1", "UA")
    assert lookups(slack) == ["UA"]
    now[0] = 61.0
    await users.sender("T1", "UA")  # expired
    await users.sender("T1", "UB")
    await users.sender("T1", "UA")  # cached, now the most recently used
    await users.sender("T1", "UC")  # evicts UB, the least recently used
    await users.sender("T1", "UA")
    await users.sender("T1", "UB")
    assert lookups(slack) == ["UA", "UA", "UB", "UC", "UB"]
    assert fallbacks == []


async def test_unknown_user_falls_back_without_pausing(server: TestServer,
                                                       slack: FakeSlack) -> None:
    slack.add_user("UA", "ada")
    now, fallbacks = [0.0], []
    users = directory(server, fallbacks, now)
    assert await users.sender("T1", "UGONE") == Sender(external_id="T1:UGONE", name="UGONE")
    assert (await users.sender("T1", "UA")).name == "ada"
    assert fallbacks == [("UGONE", "user_not_found")]


async def test_slow_slack_times_out_and_pauses_lookups(server: TestServer,
                                                       slack: FakeSlack) -> None:
    slack.add_user("UA", "ada")
    slack.users_info_delay = 5.0
    now, fallbacks = [0.0], []
    users = directory(server, fallbacks, now, timeout=0.05)
    assert (await users.sender("T1", "UA")).name == "UA"
    assert (await users.sender("T1", "UA")).name == "UA"
    assert [why for _, why in fallbacks] == ["TimeoutError()", "lookups paused"]
    slack.users_info_delay = 0.0
    now[0] = LOOKUP_PAUSE + 1
    assert (await users.sender("T1", "UA")).name == "ada"
    assert lookups(slack) == ["UA", "UA"]
