"""A local fake of Slack's Web API and Socket Mode, served over real HTTP and WebSocket.

Files go both ways: ``add_file`` registers a file for ``files.info`` and its
``url_private_download`` (which needs the bot token, else answers Slack's login page);
``files.getUploadURLExternal``, the upload URL and ``files.completeUploadExternal`` record the
files the bot uploads in ``uploaded``, with their bytes.

Run ``FakeSlack().app()`` with any aiohttp server and point slack_sdk at it::

    web = AsyncWebClient(token="xoxb-test", base_url=str(server.make_url("/api/")))
    socket = SocketModeClient(app_token="xapp-test", web_client=web)
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

APP_ID = "A0PNCHHK2"

Params = dict[str, Any]
Handler = Callable[[web.Request, Params], web.Response]


def _ok(**fields: Any) -> web.Response:
    return web.json_response({"ok": True, **fields})


def _error(error: str, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"ok": False, "error": error}, status=status, headers=headers)


class FakeSlack:
    """A local Slack Web API + Socket Mode server for tests."""

    def __init__(
        self,
        *,
        bot_token: str = "xoxb-test",  # noqa: S107 - fake credentials
        app_token: str = "xapp-test",  # noqa: S107
        team_id: str = "T123ABC456",
        bot_user_id: str = "UBOT0001",
        bot_id: str = "BBOT0001",
    ) -> None:
        self.bot_token = bot_token
        self.app_token = app_token
        self.team_id = team_id
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.users: dict[str, dict[str, Any]] = {}
        self.channels: dict[str, dict[str, Any]] = {}
        self.posted: list[dict[str, Any]] = []
        #: When each ``posted`` message arrived (epoch seconds), in the same order.
        self.posted_at: list[float] = []
        self.calls: list[tuple[str, Params]] = []
        self.fail_users_info = False
        #: Seconds users.info takes to answer (a slow Slack).
        self.users_info_delay = 0.0
        #: Answer chat.postMessage with this error ("ratelimited": HTTP 429, Retry-After 7).
        self.fail_post_message: str | None = None
        #: Files the bot uploaded into a channel: ``id``, ``title``, ``filename``, ``data``,
        #: ``channel``, ``thread_ts``, ``initial_comment``.
        self.uploaded: list[dict[str, Any]] = []
        #: Files that can be read (``files.info``, download), by id; see ``add_file``.
        self.files: dict[str, dict[str, Any]] = {}
        self._file_data: dict[str, bytes] = {}
        self._pending_uploads: dict[str, dict[str, Any]] = {}
        self._file_ids = itertools.count(1)
        self.socket_connections = 0
        self._last_ts_us = 0
        self._sockets: list[web.WebSocketResponse] = []
        self._socket_ready = asyncio.Event()
        self._acks: dict[str, asyncio.Future[dict[str, Any]]] = {}
        # method -> (token it requires, handler)
        self._methods: dict[str, tuple[str, Handler]] = {
            "auth.test": (bot_token, self._auth_test),
            "users.info": (bot_token, self._users_info),
            "conversations.info": (bot_token, self._conversations_info),
            "chat.postMessage": (bot_token, self._chat_post_message),
            "chat.update": (bot_token, self._chat_update),
            "chat.delete": (bot_token, self._chat_delete),
            "files.info": (bot_token, self._files_info),
            "files.getUploadURLExternal": (bot_token, self._get_upload_url),
            "files.completeUploadExternal": (bot_token, self._complete_upload),
            "apps.connections.open": (app_token, self._apps_connections_open),
        }

    def add_user(
        self,
        user_id: str,
        name: str,
        *,
        email: str | None = None,
        display_name: str = "",
        real_name: str | None = None,
    ) -> dict[str, Any]:
        """Register a user for users.info; ``email`` is omitted from the profile when None."""
        real = real_name if real_name is not None else name
        profile: dict[str, Any] = {
            "display_name": display_name,
            "real_name": real,
            "image_192": f"https://avatars.slack-edge.test/{user_id}_192.png",
        }
        if email is not None:
            profile["email"] = email
        user = {
            "id": user_id,
            "team_id": self.team_id,
            "name": name,
            "real_name": real,
            "deleted": False,
            "is_bot": False,
            "profile": profile,
        }
        self.users[user_id] = user
        return user

    def add_channel(self, channel_id: str, name: str, *, private: bool = False
                    ) -> dict[str, Any]:
        """Register a channel for conversations.info (the shape Slack answers with)."""
        channel = {
            "id": channel_id,
            "name": name,
            "is_channel": not private,
            "is_group": private,
            "is_im": False,
            "is_mpim": False,
            "is_private": private,
            "created": 1449252889,
            "creator": "U0CREATOR",
            "is_archived": False,
            "is_general": False,
            "unlinked": 0,
            "name_normalized": name,
            "is_shared": False,
            "is_ext_shared": False,
            "is_org_shared": False,
            "shared_team_ids": [self.team_id],
            "pending_shared": [],
            "is_pending_ext_shared": False,
            "is_member": True,
            "topic": {"value": "", "creator": "", "last_set": 0},
            "purpose": {"value": "", "creator": "", "last_set": 0},
            "previous_names": [],
            "locale": "en-US",
        }
        self.channels[channel_id] = channel
        return channel

    def add_file(self, name: str, data: bytes, mimetype: str, *, file_id: str | None = None
                 ) -> dict[str, Any]:
        """Register a file someone shared; returns it as a ``message`` event's ``files``
        carry it (the URLs are filled in by ``files.info``, which knows the host)."""
        file_id = file_id or f"F{next(self._file_ids):08d}"
        self._file_data[file_id] = data
        self.files[file_id] = {
            "id": file_id, "created": int(time.time()), "timestamp": int(time.time()),
            "name": name, "title": name, "mimetype": mimetype,
            "filetype": name.rsplit(".", 1)[-1] if "." in name else "binary",
            "user": "U2147483697", "user_team": self.team_id, "mode": "hosted",
            "editable": False, "is_external": False, "is_public": False, "size": len(data),
            "permalink": f"https://test.slack.com/files/U2147483697/{file_id}/{name}",
        }
        return dict(self.files[file_id])

    def app(self) -> web.Application:
        """Build the aiohttp application serving ``/api/{method}``, ``/socket-mode``, file
        downloads and upload URLs."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/files-pri/{team}-{id}/download/{name}", self._download)
        app.router.add_post("/upload/v1/{id}", self._upload)
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_get("/socket-mode", self._socket_mode)
        app.router.add_get("/_fake/stats", self._stats)
        app.on_shutdown.append(self._on_shutdown)
        return app

    async def _stats(self, request: web.Request) -> web.Response:
        """``chat.postMessage`` arrivals from index ``?since=`` on: ``[epoch, text]`` each."""
        try:
            since = max(0, int(request.query.get("since", "0")))
        except ValueError:
            return _error("invalid_arguments", status=400)
        arrivals = [[at, str(message.get("text", ""))] for at, message in
                    zip(self.posted_at[since:], self.posted[since:], strict=True)]
        return web.json_response({"posted": len(self.posted), "arrivals": arrivals})

    # Web API

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params: Params = dict(request.query)
        if request.can_read_body:
            if request.content_type == "application/json":
                params.update(await request.json())
            else:
                params.update(
                    (k, v) for k, v in (await request.post()).items() if isinstance(v, str)
                )
        auth = request.headers.get("Authorization", "")
        token = params.pop("token", None)
        if auth.startswith("Bearer "):
            token = auth.removeprefix("Bearer ")
        self.calls.append((method, params))
        if method not in self._methods:
            return _error("unknown_method")
        required, handler = self._methods[method]
        if not token:
            return _error("not_authed")
        if token in (self.bot_token, self.app_token) and token != required:
            return _error("not_allowed_token_type")
        if token != required:
            return _error("invalid_auth")
        if method == "users.info" and self.users_info_delay:
            await asyncio.sleep(self.users_info_delay)
        return handler(request, params)

    def _auth_test(self, request: web.Request, params: Params) -> web.Response:
        return _ok(
            url="https://test.slack.com/",
            team="Test",
            user="livebridge",
            team_id=self.team_id,
            user_id=self.bot_user_id,
            bot_id=self.bot_id,
            is_enterprise_install=False,
        )

    def _users_info(self, request: web.Request, params: Params) -> web.Response:
        if self.fail_users_info:
            return _error("ratelimited", status=429, headers={"Retry-After": "1"})
        user = self.users.get(params.get("user", ""))
        return _ok(user=user) if user is not None else _error("user_not_found")

    def _conversations_info(self, request: web.Request, params: Params) -> web.Response:
        channel = self.channels.get(params.get("channel", ""))
        return _ok(channel=channel) if channel is not None else _error("channel_not_found")

    def _chat_post_message(self, request: web.Request, params: Params) -> web.Response:
        if self.fail_post_message == "ratelimited":
            return _error("ratelimited", status=429, headers={"Retry-After": "7"})
        if self.fail_post_message:
            return _error(self.fail_post_message)
        channel = params.get("channel")
        if not channel:
            return _error("channel_not_found")
        if not any(params.get(k) for k in ("text", "blocks", "attachments")):
            return _error("no_text")
        ts = self._next_ts()
        message: dict[str, Any] = {
            "type": "message",
            "text": params.get("text", ""),
            "user": self.bot_user_id,
            "bot_id": self.bot_id,
            "ts": ts,
        }
        if params.get("thread_ts"):
            message["thread_ts"] = params["thread_ts"]
        self.posted.append({**params, "ts": ts})
        self.posted_at.append(time.time())
        return _ok(channel=channel, ts=ts, message=message)

    def _posted_message(self, params: Params) -> dict[str, Any] | None:
        return next((m for m in self.posted if m.get("channel") == params.get("channel")
                     and m["ts"] == params.get("ts") and not m.get("deleted")), None)

    def _chat_update(self, request: web.Request, params: Params) -> web.Response:
        message = self._posted_message(params)
        if message is None:
            return _error("message_not_found")
        message["text"] = params.get("text", "")
        message["edited"] = True
        return _ok(channel=message["channel"], ts=message["ts"], text=message["text"])

    def _chat_delete(self, request: web.Request, params: Params) -> web.Response:
        message = self._posted_message(params)
        if message is None:
            return _error("message_not_found")
        message["deleted"] = True
        return _ok(channel=message["channel"], ts=message["ts"])

    def _files_info(self, request: web.Request, params: Params) -> web.Response:
        file = self.files.get(params.get("file", ""))
        if file is None:
            return _error("file_not_found")
        base = f"http://{request.host}/files-pri/{self.team_id}-{file['id']}"
        return _ok(file={**file, "url_private": f"{base}/{file['name']}",
                         "url_private_download": f"{base}/download/{file['name']}"})

    async def _download(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.bot_token}":
            # Slack answers a file URL without the token with its sign-in page.
            return web.Response(text="<html><body>Sign in to Slack</body></html>",
                                content_type="text/html")
        file_id = request.match_info["id"]
        if file_id not in self._file_data:
            return web.Response(status=404, text="Not found")
        return web.Response(body=self._file_data[file_id],
                            content_type=self.files[file_id]["mimetype"])

    def _get_upload_url(self, request: web.Request, params: Params) -> web.Response:
        filename, length = params.get("filename"), str(params.get("length", ""))
        if not filename or not length.isdigit():
            return _error("invalid_arguments")
        file_id = f"F{next(self._file_ids):08d}"
        self._pending_uploads[file_id] = {"filename": filename, "length": int(length)}
        return _ok(upload_url=f"http://{request.host}/upload/v1/{file_id}", file_id=file_id)

    async def _upload(self, request: web.Request) -> web.Response:
        pending = self._pending_uploads.get(request.match_info["id"])
        if pending is None:
            return web.Response(status=404, text="Not found")
        pending["data"] = await request.read()
        return web.Response(text=f"OK - {len(pending['data'])}")

    def _complete_upload(self, request: web.Request, params: Params) -> web.Response:
        try:
            files = json.loads(params.get("files", ""))
        except ValueError:
            return _error("invalid_arguments")
        done = []
        for item in files if isinstance(files, list) else []:
            pending = self._pending_uploads.pop(str(item.get("id")), None)
            if pending is None or "data" not in pending:
                return _error("file_not_found")
            uploaded = {"id": item["id"], "title": item.get("title") or pending["filename"],
                        "filename": pending["filename"], "data": pending["data"],
                        "channel": params.get("channel_id"),
                        "thread_ts": params.get("thread_ts"),
                        "initial_comment": params.get("initial_comment")}
            self.uploaded.append(uploaded)
            done.append({"id": uploaded["id"], "title": uploaded["title"]})
        if not done:
            return _error("invalid_arguments")
        return _ok(files=done)

    def _apps_connections_open(self, request: web.Request, params: Params) -> web.Response:
        return _ok(url=f"ws://{request.host}/socket-mode")

    def _next_ts(self) -> str:
        """A unique, strictly increasing Slack timestamp ("seconds.micro")."""
        self._last_ts_us = max(time.time_ns() // 1000, self._last_ts_us + 1)
        seconds, micro = divmod(self._last_ts_us, 1_000_000)
        return f"{seconds}.{micro:06d}"

    # Socket Mode

    async def _socket_mode(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()  # autoping answers the client's pings
        await ws.prepare(request)
        self.socket_connections += 1
        self._sockets.append(ws)
        await ws.send_json(
            {
                "type": "hello",
                "num_connections": len(self._sockets),
                "debug_info": {
                    "host": "applink-fake",
                    "build_number": 1,
                    "approximate_connection_time": 18060,
                },
                "connection_info": {"app_id": APP_ID},
            }
        )
        self._socket_ready.set()
        try:
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    self._receive_ack(msg.data)
        finally:
            if ws in self._sockets:
                self._sockets.remove(ws)
            if not self._sockets:
                self._socket_ready.clear()
        return ws

    def _receive_ack(self, data: str) -> None:
        try:
            ack = json.loads(data)
        except ValueError:
            return
        if not isinstance(ack, dict):
            return
        future = self._acks.get(str(ack.get("envelope_id")))
        if future is not None and not future.done():
            future.set_result(ack)

    async def wait_for_socket_client(self, timeout: float = 10) -> None:
        """Wait until a Socket Mode client is connected and has been sent "hello"."""
        async with asyncio.timeout(timeout):
            await self._socket_ready.wait()

    async def send_events_api(
        self,
        payload: dict[str, Any],
        *,
        retry_attempt: int = 0,
        envelope_id: str | None = None,
        timeout: float = 10,
    ) -> dict[str, Any]:
        """Push an events_api envelope to the newest client and return its ack.

        Waits (within ``timeout`` overall) for a connected client and then for the ack;
        raises TimeoutError if either does not come.
        """
        envelope_id = envelope_id or str(uuid.uuid4())
        envelope = {
            "type": "events_api",
            "envelope_id": envelope_id,
            "payload": payload,
            "accepts_response_payload": False,
            "retry_attempt": retry_attempt,
            "retry_reason": "timeout" if retry_attempt else "",
        }
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._acks[envelope_id] = future
        try:
            async with asyncio.timeout(timeout):
                await self._socket_ready.wait()
                await self._sockets[-1].send_json(envelope)
                return await future
        finally:
            self._acks.pop(envelope_id, None)

    async def drop_socket_clients(self) -> None:
        """Close every Socket Mode connection from the server side, as Slack does on refresh."""
        sockets, self._sockets = self._sockets, []
        self._socket_ready.clear()
        for ws in sockets:
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"refresh_requested")

    async def _on_shutdown(self, app: web.Application) -> None:
        await self.drop_socket_clients()
