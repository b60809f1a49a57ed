"""The Redis store: one Redis server shared by any number of daemons.

Every change is one Lua script, so it is atomic, and every script reads the clock with
``TIME``, so daemons with skewed clocks agree on what is due. Keys (``P`` is the prefix,
``livebridge:`` unless the URL says ``?prefix=``):

- ``P item:<id>``: hash of one outbox item; ``P seq``: the id counter
- ``P q:<thread>``: list of the thread's item ids, oldest first
- ``P due:<route>``: sorted set of the route's threads with items, scored by when their head
  may be claimed (ms): now when ready, the retry time after ``retry``, the lease's end while
  leased; ``P routes``: set of the route names (an older store's single ``P due`` set is
  split into these on ``open``)
- ``P leases``: hash thread → token of the claim that holds its lease (``OutboxItem.claim``)
- ``P items``: sorted set of item ids by ``created_at`` (depth, oldest item)
- ``P seen:<source>:<key>``: dedupe record with an expiry, set in the same script as the item
- ``P kv:<ns>:<key>``: key-value records with an optional expiry; ``P lock:<name>``: locks
- ``P dl:<id>``: hash of one dead letter; ``P dead``: sorted set of dead-letter ids (by id)
- ``P work``: pub/sub channel announcing new work to every daemon
- ``P health``: written (with a short expiry) by ``ping``, to prove Redis takes writes

Commands share a bounded pool of connections (``max_connections``, the work listener's
included): a command that finds them all busy waits for one, up to the socket timeout,
rather than failing.

A claim leases a thread by moving its score to the lease's end, so a thread whose daemon
died becomes due again by itself when the lease runs out; nothing needs ``release_all``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
import structlog
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import (
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import TimeoutError as RedisTimeoutError

from livebridge.exceptions import LivebridgeError, StoreUnavailable
from livebridge.store.base import DeadLetter, OutboxItem, OutboxStats, Store, item_route, route_of

__all__ = ["RedisStore"]

log = structlog.get_logger("livebridge.store")

DEFAULT_PREFIX = "livebridge:"

#: Error replies that mean "Redis cannot take this now" rather than "this command is wrong".
_UNAVAILABLE_REPLIES = ("MISCONF", "MASTERDOWN", "NOREPLICAS", "BUSY", "CLUSTERDOWN")

_LIB = """
local P = ARGV[1]
local function clock()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000),
         t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
end
local function push(id, kind, source, thread, payload, created, ms, route)
  redis.call('HSET', P .. 'item:' .. id, 'kind', kind, 'source', source, 'thread', thread,
             'payload', payload, 'created_at', created, 'attempts', 0, 'route', route)
  if redis.call('LLEN', P .. 'q:' .. thread) == 0 then
    redis.call('ZADD', P .. 'due:' .. route, 'NX', ms, thread)
    redis.call('SADD', P .. 'routes', route)
  end
  redis.call('RPUSH', P .. 'q:' .. thread, id)
  redis.call('ZADD', P .. 'items', created, id)
  redis.call('PUBLISH', P .. 'work', '1')
end
-- After an item left its thread: hand the thread on if this claim holds it (token), or if
-- the caller has no token (an item not from claim) and really removed the item.
local function release(thread, token, removed, ms, due)
  local holder = redis.call('HGET', P .. 'leases', thread)
  if not ((token ~= '' and holder == token) or (token == '' and removed > 0)) then
    return
  end
  redis.call('HDEL', P .. 'leases', thread)
  if redis.call('LLEN', P .. 'q:' .. thread) > 0 then
    redis.call('ZADD', due, ms, thread)
    redis.call('PUBLISH', P .. 'work', '1')
  else
    redis.call('ZREM', due, thread)
  end
end
"""

# ARGV: prefix, kind, source, seen key, thread, payload, dedupe ttl (ms; 0: no record), route
_ENQUEUE = _LIB + """
local ms, stamp = clock()
local ttl = tonumber(ARGV[7])
if ttl > 0 and not redis.call('SET', ARGV[4], '1', 'NX', 'PX', ttl) then
  return 0
end
local id = redis.call('INCR', P .. 'seq')
push(id, ARGV[2], ARGV[3], ARGV[5], ARGV[6], stamp, ms, ARGV[8])
return id
"""

# ARGV: prefix, limit, lease (ms), token, route ('': every route)
_CLAIM = _LIB + """
local ms = clock()
local limit = tonumber(ARGV[2])
local due = {}
local routes = {ARGV[5]}
if ARGV[5] == '' then
  routes = redis.call('SMEMBERS', P .. 'routes')
end
for _, route in ipairs(routes) do
  local key = P .. 'due:' .. route
  local found = redis.call('ZRANGEBYSCORE', key, '-inf', ms, 'WITHSCORES', 'LIMIT', 0, limit)
  for i = 1, #found, 2 do
    due[#due + 1] = {found[i], tonumber(found[i + 1]), route, key}
  end
end
table.sort(due, function(a, b) return a[2] < b[2] end)
local out = {}
for n, entry in ipairs(due) do
  if n > limit then break end
  local thread, route, key = entry[1], entry[3], entry[4]
  local q = P .. 'q:' .. thread
  local id, f = nil, nil
  while true do
    id = redis.call('LINDEX', q, 0)
    if not id then break end
    f = redis.call('HMGET', P .. 'item:' .. id, 'kind', 'source', 'payload', 'created_at',
                   'attempts', 'last_error')
    if f[1] then break end
    redis.call('LPOP', q)  -- an id without its item cannot happen; heal it
    redis.call('ZREM', P .. 'items', id)
  end
  if id then
    redis.call('ZADD', key, ms + tonumber(ARGV[3]), thread)
    redis.call('HSET', P .. 'leases', thread, ARGV[4])
    out[#out + 1] = {id, thread, f[1], f[2], f[3], f[4], f[5], f[6], route}
  else
    redis.call('ZREM', key, thread)
    redis.call('HDEL', P .. 'leases', thread)
  end
end
return out
"""

# ARGV: prefix, thread, id, token, route
_COMPLETE = _LIB + """
local ms = clock()
local removed = redis.call('LREM', P .. 'q:' .. ARGV[2], 1, ARGV[3])
if removed > 0 then
  redis.call('DEL', P .. 'item:' .. ARGV[3])
  redis.call('ZREM', P .. 'items', ARGV[3])
end
release(ARGV[2], ARGV[4], removed, ms, P .. 'due:' .. ARGV[5])
return removed
"""

# ARGV: prefix, thread, id, token, route, delay (ms), error, count (0/1)
_RETRY = _LIB + """
local ms = clock()
local holder = redis.call('HGET', P .. 'leases', ARGV[2])
if ARGV[4] ~= '' and holder ~= ARGV[4] then
  return 0  -- the lease ran out and another claim holds the thread now
end
local item = P .. 'item:' .. ARGV[3]
local due = P .. 'due:' .. ARGV[5]
if redis.call('EXISTS', item) == 0 then
  release(ARGV[2], ARGV[4], 0, ms, due)
  return 0
end
if ARGV[8] == '1' then
  redis.call('HINCRBY', item, 'attempts', 1)
  redis.call('HSET', item, 'last_error', ARGV[7])
end
redis.call('HDEL', P .. 'leases', ARGV[2])
redis.call('ZADD', due, ms + tonumber(ARGV[6]), ARGV[2])
return 1
"""

# ARGV: prefix, thread, id, token, reason, response, has response (0/1), route
_DEAD_LETTER = _LIB + """
local ms, stamp = clock()
if ARGV[4] ~= '' and redis.call('HGET', P .. 'leases', ARGV[2]) ~= ARGV[4] then
  return 0  -- the lease ran out and another claim holds the thread now
end
local item = P .. 'item:' .. ARGV[3]
local f = redis.call('HMGET', item, 'kind', 'source', 'payload', 'created_at', 'attempts')
local removed = 0
if f[1] then
  removed = redis.call('LREM', P .. 'q:' .. ARGV[2], 1, ARGV[3])
end
if removed > 0 then
  local dl = P .. 'dl:' .. ARGV[3]
  redis.call('HSET', dl, 'kind', f[1], 'source', f[2], 'thread', ARGV[2], 'payload', f[3],
             'created_at', f[4], 'failed_at', stamp, 'attempts', tonumber(f[5]) + 1,
             'reason', ARGV[5], 'route', ARGV[8])
  if ARGV[7] == '1' then
    redis.call('HSET', dl, 'response', ARGV[6])
  end
  redis.call('ZADD', P .. 'dead', tonumber(ARGV[3]), ARGV[3])
  redis.call('DEL', item)
  redis.call('ZREM', P .. 'items', ARGV[3])
end
release(ARGV[2], ARGV[4], removed, ms, P .. 'due:' .. ARGV[8])
return removed
"""

# ARGV: prefix, letter id, its route if the letter has none (an older store's). The replayed
# item is new: created now, no attempts yet.
_REPLAY = _LIB + """
local ms, stamp = clock()
local dl = P .. 'dl:' .. ARGV[2]
local f = redis.call('HMGET', dl, 'kind', 'source', 'thread', 'payload', 'route')
if not f[1] then
  return 0
end
local id = redis.call('INCR', P .. 'seq')
push(id, f[1], f[2], f[3], f[4], stamp, ms, f[5] or ARGV[3])
redis.call('DEL', dl)
redis.call('ZREM', P .. 'dead', ARGV[2])
return 1
"""

# ARGV: prefix, then the dead-letter fields to return. The newest letter: {id, fields...}.
_LAST_DEAD = """
local P = ARGV[1]
for _, id in ipairs(redis.call('ZREVRANGE', P .. 'dead', 0, 9)) do
  local f = redis.call('HMGET', P .. 'dl:' .. id, unpack(ARGV, 2))
  if f[1] then
    return {id, unpack(f)}
  end
end
return false
"""

# ARGV: prefix, letter id
_DROP = _LIB + """
redis.call('ZREM', P .. 'dead', ARGV[2])
return redis.call('DEL', P .. 'dl:' .. ARGV[2])
"""

# ARGV: prefix
_STATS = _LIB + """
local ms = clock()
local in_flight = 0
local routes = redis.call('SMEMBERS', P .. 'routes')
for _, thread in ipairs(redis.call('HKEYS', P .. 'leases')) do
  for _, route in ipairs(routes) do
    local score = redis.call('ZSCORE', P .. 'due:' .. route, thread)
    if score and tonumber(score) > ms then
      in_flight = in_flight + 1
    end
  end
end
local oldest = redis.call('ZRANGE', P .. 'items', 0, 0, 'WITHSCORES')
return {redis.call('ZCARD', P .. 'items'), oldest[2] or false, in_flight,
        redis.call('ZCARD', P .. 'dead')}
"""

# KEYS: lock key; ARGV: prefix, token, ttl (ms). Idempotent, so a retried call cannot lock us out.
_LOCK_ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[2] then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
end
if holder then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""

# KEYS: lock key; ARGV: prefix, token, ttl (ms)
_LOCK_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[2] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return 0
"""

# KEYS: lock key; ARGV: prefix, token
_LOCK_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[2] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))


def _part(value: str) -> str:
    """A key component that cannot run into the next one (``a:b`` + ``c`` ≠ ``a`` + ``b:c``)."""
    return f"{len(value)}:{value}"


@contextlib.contextmanager
def _unavailable() -> Iterator[None]:
    """Turn "Redis cannot answer now" into ``StoreUnavailable`` (503s, paused delivery)."""
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        raise StoreUnavailable(f"Redis is unreachable: {exc}") from exc
    except (ReadOnlyError, OutOfMemoryError, TryAgainError) as exc:  # codes dropped by redis-py
        raise StoreUnavailable(f"Redis cannot take the command: {exc}") from exc
    except ResponseError as exc:
        if str(exc).split(" ", 1)[0] in _UNAVAILABLE_REPLIES:
            raise StoreUnavailable(f"Redis cannot take the command: {exc}") from exc
        raise


def split_url(url: str) -> tuple[str, str]:
    """``redis://host:port/db?prefix=x`` → (the URL for redis-py, the key prefix)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = DEFAULT_PREFIX
    kept = []
    for key, value in query:
        if key == "prefix":
            prefix = value
        else:
            kept.append((key, value))
    return urlunsplit(parts._replace(query=urlencode(kept))), prefix


class RedisStore(Store):
    """A ``Store`` in Redis (``redis://host:port/db``, ``rediss://`` for TLS), shared by
    every daemon that names the same server, database and prefix.
    """

    kind = "redis"

    #: How long a lock outlives a holder that stopped renewing it (a dead daemon).
    lock_ttl = 15.0
    #: Whether an older store's single ``due`` set was looked for (on the first claim).
    _due_split = False

    #: How long ``ping``'s health record lives (s).
    health_ttl = 10.0

    def __init__(self, url: str, *, max_connections: int = 64, socket_timeout: float = 5.0,
                 connect_timeout: float = 2.0) -> None:
        super().__init__()
        self.url, self.prefix = split_url(url)
        self.max_connections = max_connections
        self._socket_timeout = socket_timeout
        self._connect_timeout = connect_timeout
        self._redis: aioredis.Redis | None = None
        self._scripts: dict[str, AsyncScript] = {}
        self._listener: asyncio.Task[None] | None = None

    # --- lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect; an unreachable Redis is not fatal (the daemon reports not ready)."""
        try:
            pool = aioredis.BlockingConnectionPool.from_url(
                self.url, max_connections=self.max_connections, timeout=self._socket_timeout,
                decode_responses=True, socket_timeout=self._socket_timeout,
                socket_connect_timeout=self._connect_timeout, health_check_interval=15,
                retry=Retry(ExponentialWithJitterBackoff(base=0.02, cap=0.25), retries=2),
            )
        except ValueError as exc:
            raise LivebridgeError(f"store url: {exc}") from exc
        self._redis = aioredis.Redis.from_pool(pool)  # closing the client closes the pool
        scripts = {"enqueue": _ENQUEUE, "claim": _CLAIM, "complete": _COMPLETE,
                   "retry": _RETRY, "dead_letter": _DEAD_LETTER, "replay": _REPLAY,
                   "last_dead": _LAST_DEAD, "drop": _DROP, "stats": _STATS,
                   "lock_acquire": _LOCK_ACQUIRE, "lock_extend": _LOCK_EXTEND,
                   "lock_release": _LOCK_RELEASE}
        self._scripts = {name: self._redis.register_script(s) for name, s in scripts.items()}
        self._listener = asyncio.create_task(self._listen(), name="livebridge-redis-listener")
        try:
            await self.ping()
        except StoreUnavailable as exc:
            log.warning("Redis is unreachable; waiting for it (not ready until it answers)",
                        error=str(exc))

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
            self._listener = None
        if self._redis is not None:
            client, self._redis = self._redis, None
            with contextlib.suppress(RedisError, OSError):
                await client.aclose()

    async def ping(self) -> None:
        """Raise ``StoreUnavailable`` unless Redis takes a write (a replica, ``MISCONF``,
        ``OOM`` or too few replicas refuse it)."""
        with _unavailable():
            await self._client().set(self.prefix + "health", self._owner,
                                     px=_ms(self.health_ttl))

    def _client(self) -> aioredis.Redis:
        if self._redis is None:
            raise StoreUnavailable("the Redis store is not open")
        return self._redis

    async def _run(self, script: str, *args: Any, keys: tuple[str, ...] = ()) -> Any:
        self._client()
        with _unavailable():
            return await self._scripts[script](keys=list(keys), args=[self.prefix, *args])

    async def _split_due(self) -> None:
        """Move the threads of an older store's single ``due`` set into per-route sets (once,
        before this instance's first claim)."""
        client, old = self._client(), self.prefix + "due"
        with _unavailable():
            entries: list[Any] = await client.zrange(old, 0, -1, withscores=True)
            self._due_split = True
            if not entries:
                return
            routes: dict[str, dict[str, float]] = {}
            for thread, score in entries:
                routes.setdefault(route_of(str(thread)), {})[str(thread)] = float(score)
            pipe = client.pipeline(transaction=True)
            for route, scored in routes.items():
                pipe.zadd(f"{self.prefix}due:{route}", scored, nx=True)
                pipe.sadd(self.prefix + "routes", route)
            pipe.delete(old)
            await pipe.execute()
        log.info("outbox split into routes", routes=sorted(routes))

    async def _listen(self) -> None:
        """Signal work whenever any daemon announces it (resubscribing after outages)."""
        channel = self.prefix + "work"
        while self._redis is not None:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(channel)
                self._signal_work()  # announcements may have been missed while unsubscribed
                while True:
                    if await pubsub.get_message(timeout=1.0) is not None:
                        self._signal_work()
            except Exception as exc:  # Redis is down: keep trying, the dispatcher polls anyway
                log.debug("work announcements interrupted", error=str(exc))
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    # --- accepting ------------------------------------------------------------------------

    async def enqueue(
        self, kind: str, source: str, dedupe_key: str, thread: str, payload: str,
        dedupe_ttl: float, *, route: str | None = None,
    ) -> bool:
        stored = await self._run("enqueue", kind, source, self._seen_key(source, dedupe_key),
                                 thread, payload, _ms(dedupe_ttl), route or route_of(thread))
        if stored:
            self._signal_work()
        return bool(stored)

    def _seen_key(self, source: str, dedupe_key: str) -> str:
        return f"{self.prefix}seen:{_part(source)}:{dedupe_key}"

    async def seen(self, source: str, dedupe_key: str) -> bool:
        with _unavailable():
            return bool(await self._client().exists(self._seen_key(source, dedupe_key)))

    async def depth(self) -> int:
        with _unavailable():
            return int(await self._client().zcard(self.prefix + "items"))

    # --- delivering -----------------------------------------------------------------------

    async def claim(self, limit: int, lease: float, *, route: str | None = None
                    ) -> list[OutboxItem]:
        if limit <= 0:
            return []
        if not self._due_split:
            await self._split_due()
        token = self._claim_token()
        rows = await self._run("claim", limit, _ms(lease), token, route or "")
        return [OutboxItem(str(id_), kind, source, thread, payload, float(created), int(attempts),
                           error, claim=token, route=item_route)
                for id_, thread, kind, source, payload, created, attempts, error, item_route
                in rows]

    async def complete(self, item: OutboxItem) -> None:
        await self._run("complete", item.thread, item.id, item.claim or "", item_route(item))

    async def retry(self, item: OutboxItem, delay: float, error: str, *,
                    count: bool = True) -> None:
        await self._run("retry", item.thread, item.id, item.claim or "", item_route(item),
                        _ms(delay), error, "1" if count else "0")

    async def dead_letter(self, item: OutboxItem, reason: str, response: str | None) -> None:
        await self._run("dead_letter", item.thread, item.id, item.claim or "",
                        reason, response or "", "0" if response is None else "1",
                        item_route(item))

    async def release_all(self) -> None:
        """Nothing to do: leases are shared by all daemons and run out by themselves."""

    async def stats(self) -> OutboxStats:
        depth, oldest, in_flight, dead = await self._run("stats")
        return OutboxStats(int(depth), None if oldest is None else float(oldest),
                           int(in_flight), int(dead))

    # --- dead letters ---------------------------------------------------------------------

    _DL_FIELDS = ("kind", "source", "thread", "payload", "created_at", "failed_at", "attempts",
                  "reason", "response")

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        if limit <= 0:
            return []
        client = self._client()
        with _unavailable():
            ids = [str(i) for i in await client.zrange(self.prefix + "dead", 0, limit - 1)]
            pipe = client.pipeline(transaction=False)
            for letter_id in ids:
                pipe.hmget(f"{self.prefix}dl:{letter_id}", self._DL_FIELDS)
            rows = await pipe.execute()
        return [_dead_letter(letter_id, row) for letter_id, row in zip(ids, rows, strict=True)
                if row[0] is not None]

    async def last_dead_letter(self) -> DeadLetter | None:
        row = await self._run("last_dead", *self._DL_FIELDS)
        return None if row is None else _dead_letter(row[0], row[1:])

    async def get_dead_letter(self, letter_id: str) -> DeadLetter | None:
        with _unavailable():
            row = await self._client().hmget(f"{self.prefix}dl:{letter_id}", self._DL_FIELDS)
        return None if row[0] is None else _dead_letter(letter_id, row)

    async def replay_dead_letter(self, letter_id: str) -> bool:
        letter = await self.get_dead_letter(letter_id)
        if letter is None:
            return False
        replayed = bool(await self._run("replay", letter_id, route_of(letter.thread)))
        if replayed:
            self._signal_work()
        return replayed

    async def drop_dead_letter(self, letter_id: str) -> bool:
        return bool(await self._run("drop", letter_id))

    # --- key-value ------------------------------------------------------------------------

    def _kv_key(self, namespace: str, key: str) -> str:
        return f"{self.prefix}kv:{_part(namespace)}:{key}"

    async def kv_get(self, namespace: str, key: str) -> str | None:
        with _unavailable():
            value = await self._client().get(self._kv_key(namespace, key))
        return None if value is None else str(value)

    async def kv_set(self, namespace: str, key: str, value: str, ttl: float | None = None) -> None:
        client = self._client()
        with _unavailable():
            if ttl is None:
                await client.set(self._kv_key(namespace, key), value)
            elif _ms(ttl) > 0:
                await client.set(self._kv_key(namespace, key), value, px=_ms(ttl))
            else:  # already expired
                await client.delete(self._kv_key(namespace, key))

    async def kv_delete(self, namespace: str, key: str) -> None:
        with _unavailable():
            await self._client().delete(self._kv_key(namespace, key))

    def lock(self, name: str, timeout: float = 30.0) -> AbstractAsyncContextManager[None]:
        """A lock held in Redis (renewed while held, so it outlives slow work but not a dead
        daemon by more than ``lock_ttl``); raises ``TimeoutError`` after ``timeout`` s."""
        return self._lock(name, timeout)

    @asynccontextmanager
    async def _lock(self, name: str, wait: float) -> AsyncIterator[None]:
        deadline = time.monotonic() + wait
        async with self._local_locks.hold(name, wait):  # this process's tasks queue here
            key, token = f"{self.prefix}lock:{name}", uuid.uuid4().hex
            await self._acquire(name, key, token, deadline, wait)
            keeper = asyncio.create_task(self._keep(name, key, token))
            try:
                yield
            finally:
                keeper.cancel()
                await asyncio.gather(keeper, return_exceptions=True)
                try:
                    await self._run("lock_release", token, keys=(key,))
                except StoreUnavailable as exc:
                    log.warning("lock not released; it expires by itself", lock=name,
                                error=str(exc))

    async def _acquire(self, name: str, key: str, token: str, deadline: float,
                       wait: float) -> None:
        backoff = 0.005
        ttl = _ms(self.lock_ttl)
        while not await self._run("lock_acquire", token, ttl, keys=(key,)):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"lock {name!r} held elsewhere for more than {wait} s")
            await asyncio.sleep(min(backoff, remaining))
            backoff = min(backoff * 2, 0.1)

    async def _keep(self, name: str, key: str, token: str) -> None:
        """Renew the lock while it is held."""
        while True:
            await asyncio.sleep(self.lock_ttl / 3)
            try:
                if not await self._run("lock_extend", token, _ms(self.lock_ttl), keys=(key,)):
                    log.error("lock lost while held (Redis unreachable too long?)", lock=name)
                    return
            except StoreUnavailable as exc:
                log.warning("lock not renewed", lock=name, error=str(exc))

    async def purge_expired(self) -> int:
        """Nothing to do: Redis expires dedupe records, keys and locks by itself."""
        return 0


def _dead_letter(letter_id: str, row: list[Any]) -> DeadLetter:
    kind, source, thread, payload, created, failed, attempts, reason, response = row
    return DeadLetter(str(letter_id), kind, source, thread, payload, float(created),
                      float(failed), int(attempts), reason, response)
