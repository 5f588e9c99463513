"""What the Redis bus keeps in Redis and the Lua scripts that change it (no I/O here).

Keys (every key of one session, or of one channel, carries the same hash tag, so each
script touches one Redis Cluster slot):

- ``weaver:{s:ID}``: the session's metadata hash: ``seq`` (the last number assigned,
  HINCRBY: one counter for every node), ``cookie``, ``events``, ``channels`` (JSON),
  ``slot:SLOT`` (the latest slot message, JSON ``[type, fields]``, for a reset),
  ``cur:CHANNEL`` (the last channel entry the session took) and ``new:CHANNEL`` (set
  while ``cur:`` is only where the subscription started: the first entry fanned out to
  the session is taken whatever its id, as the meta write that started the cursor may
  have run after the entry was made). TTL ``bus.session_ttl``.
- ``weaver:{s:ID}:log``: the session's messages, a stream whose entry id is
  ``SEQ-0``; ``XADD MAXLEN ~ bus.session_log`` (DROP_OLDEST: a resume from before the
  oldest entry gets ``reset``). Same TTL.
- ``weaver:{c:NAME}:history``: a channel's publications, ``MAXLEN ~
  bus.channel_history`` (DROP_OLDEST), expiring ``bus.session_ttl`` after the last one.

Pub/sub (one subscription per node, whatever the number of sessions):
``weaver:bus:sessions`` (``ID SEQ MESSAGE``: a session message was logged),
``weaver:bus:channels`` (``STREAM-ID LEN NAME PAYLOAD``), ``weaver:bus:purge``
(``NODE BODY``). Each script writes and publishes in one step, so a node sees a session's
messages in seq order and a channel's in stream order.
"""

from __future__ import annotations

from weaver.session.bus import ChannelMessage

SESSIONS = "weaver:bus:sessions"
CHANNELS = "weaver:bus:channels"
PURGES = "weaver:bus:purge"

_NEWER = """
local function newer(a, b)  -- stream id a after stream id b
  local a1, a2 = string.match(a, '^(%d+)-(%d+)$')
  local b1, b2 = string.match(b, '^(%d+)-(%d+)$')
  a1, a2, b1, b2 = tonumber(a1), tonumber(a2), tonumber(b1), tonumber(b2)
  return a1 > b1 or (a1 == b1 and a2 > b2)
end
"""

# KEYS meta, log. ARGV sid, head, tail, maxlen, ttl, cursor field, cursor id, must exist,
# then field/value pairs. Returns the seq, 0 (no such session) or -1 (entry already taken).
EMIT = (
    _NEWER
    + """
if ARGV[8] == '1' and redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if ARGV[6] ~= '' then
  local cur = redis.call('HGET', KEYS[1], ARGV[6])
  local fresh = redis.call('HDEL', KEYS[1], 'new:' .. string.sub(ARGV[6], 5))
  if cur and fresh == 0 and not newer(ARGV[7], cur) then return -1 end
  redis.call('HSET', KEYS[1], ARGV[6], ARGV[7])
end
for i = 9, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local msg = ARGV[2] .. seq .. ARGV[3]
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], seq .. '-0', 'm', msg)
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[5])
redis.call('PUBLISH', '"""
    + SESSIONS
    + """', ARGV[1] .. ' ' .. seq .. ' ' .. msg)
return seq
"""
)

# KEYS meta. ARGV ttl, cursor field to start ('' none), then field/value pairs.
META = """
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
if ARGV[2] ~= '' and redis.call('HEXISTS', KEYS[1], ARGV[2]) == 0 then
  local t = redis.call('TIME')  -- entries from the previous millisecond on are new
  local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - 1
  redis.call('HSET', KEYS[1], ARGV[2], string.format('%d-0', ms))
  redis.call('HSET', KEYS[1], 'new:' .. string.sub(ARGV[2], 5), 1)
end
redis.call('HSETNX', KEYS[1], 'seq', 0)
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"""

# KEYS meta, log. ARGV last seq, ttl. Returns {seq, is_reset, seq1, msg1, seq2, msg2, ...}.
REPLAY = """
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  redis.call('EXPIRE', KEYS[2], ARGV[2])
end
local last = tonumber(ARGV[1])
if last == seq then return {seq, 0} end
if last > seq then return {seq, 1} end
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
if #first == 0 or tonumber(string.match(first[1][1], '^(%d+)')) > last + 1 then
  return {seq, 1}
end
local out = {seq, 0}
for _, entry in ipairs(redis.call('XRANGE', KEYS[2], (last + 1) .. '-0', '+')) do
  out[#out + 1] = tonumber(string.match(entry[1], '^(%d+)'))
  out[#out + 1] = entry[2][2]
end
return out
"""

# KEYS meta, log. ARGV ttl, maxlen, local seq, field count, pairs, then seq/message pairs.
SEED = """
local have = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
local want = tonumber(ARGV[3])
if have > want then return 0 end
if have == want and redis.call('EXISTS', KEYS[1]) == 1 then return 1 end
local n = tonumber(ARGV[4])
for i = 5, 4 + 2 * n, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('HSET', KEYS[1], 'seq', want)
for i = 5 + 2 * n, #ARGV, 2 do
  local s = tonumber(ARGV[i])
  if s > have then
    redis.pcall('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], s .. '-0', 'm', ARGV[i + 1])
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[1])
return 1
"""

# KEYS history. ARGV name, payload, maxlen, ttl. Returns the entry id.
PUBLISH = (
    """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'p', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('PUBLISH', '"""
    + CHANNELS
    + """', id .. ' ' .. #ARGV[1] .. ' ' .. ARGV[1] .. ARGV[2])
return id
"""
)

SCRIPTS = {"emit": EMIT, "meta": META, "replay": REPLAY, "seed": SEED, "publish": PUBLISH}


def session_key(session_id: str) -> str:
    return f"weaver:{{s:{session_id}}}"


def log_key(session_id: str) -> str:
    return f"weaver:{{s:{session_id}}}:log"


def channel_key(channel: str) -> str:
    return f"weaver:{{c:{channel}}}:history"


def parse_channel_payload(data: bytes) -> ChannelMessage | None:
    """``STREAM-ID LEN NAME PAYLOAD`` as the publish script sends it; None if malformed."""
    entry_id, _, rest = data.partition(b" ")
    size, _, rest = rest.partition(b" ")
    if not size.isdigit() or len(rest) < int(size):
        return None
    name = rest[: int(size)].decode("utf-8", "replace")
    return ChannelMessage(name, rest[int(size) :], entry_id.decode("ascii", "replace"))
