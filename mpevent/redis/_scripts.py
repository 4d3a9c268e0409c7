"""The server side: every operation on an object is one atomic step, one round trip.

Each step is one Lua script, except a plain HMGET for a state read (see
the expiry below) and, for frames too large for Lua's copies, a plain HSET
and STORED in one MULTI, or a plain HMGET after LOAD.

An object is one hash, ``<prefix>:{<name>}``, with the fields ``kind``,
``gen`` (bumped by every set), ``flag``, and per value slot *w* (0 value,
1 exception) ``v<w>`` (the pickled frame), ``s<w>`` (its HMAC) and ``h<w>``
(present once filled).  Its channel is ``<prefix>:{<name>}:set``: the hash
tag ``{<name>}`` puts both in one slot of a cluster, so every script runs
on one node, and SPUBLISH (sharded pub/sub) reaches that node's
subscribers only.  A step is atomic: a value is stored, flagged and
announced at once, never half.

ARGV[1] of every script is the expiry to set in ms, or 0: each handle
refreshes the TTL at most every REFRESH_FRACTION of it (``RedisRecord``),
and sets it to the TTL plus that fraction, so an object in use never
expires and an unused one expires between one and 1.25 TTLs after its last
use.  With 0 the script only checks that the object exists.  PEXPIRE is a
write, copied to replicas and the AOF; most calls no longer make one, and
the state read is then a plain HMGET, with no script (docs/design.md).

A server out of memory (maxmemory, a policy that does not evict) refuses
a write that would use memory (HSET, HSETNX, HINCRBY) and ends the script
there, without undoing what it did before.  In every script that write is
the first change but a refreshed TTL, so a refused script changed nothing
(``Connection.call`` raises MemoryError).
"""

from __future__ import annotations

from typing import Final

REFRESH_FRACTION: Final = 0.25


def _script(body: str) -> str:
    """*body* after the one rule of ARGV[1]: alive() is false if the object is gone,
    and refreshes its expiry first when ARGV[1] asks for it."""
    return (
        """
local function alive()
  if ARGV[1] == '0' then return redis.call('EXISTS', KEYS[1]) == 1 end
  return redis.call('PEXPIRE', KEYS[1], ARGV[1]) == 1
end"""
        + body
    )


# KEYS[1] hash, ARGV[1] expiry ms, ARGV[2] kind -> 1 created, 0 name taken
CREATE: Final = """
if redis.call('HSETNX', KEYS[1], 'kind', ARGV[2]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'gen', 0, 'flag', 0)
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""

# KEYS[1] hash, ARGV[1] expiry ms -> {kind, gen, flag, h0, h1} or nil if gone.
# Run only when a refresh is due; otherwise the state is a plain HMGET.
STATE: Final = _script("""
if not alive() then return nil end
return redis.call('HMGET', KEYS[1], 'kind', 'gen', 'flag', 'h0', 'h1')
""")

# KEYS[1] hash, KEYS[2] channel, ARGV[1] expiry ms -> 1 raised, 0 was up, -1 gone
SET: Final = _script("""
if not alive() then return -1 end
if redis.call('HGET', KEYS[1], 'flag') == '1' then return 0 end
local gen = redis.call('HINCRBY', KEYS[1], 'gen', 1)
redis.call('HSET', KEYS[1], 'flag', 1)
redis.call('SPUBLISH', KEYS[2], gen)
return 1
""")

# KEYS[1] hash, ARGV[1] expiry ms -> 1, or -1 gone
CLEAR: Final = _script("""
if not alive() then return -1 end
redis.call('HSET', KEYS[1], 'flag', 0)
return 1
""")

# KEYS[1] hash, KEYS[2] channel, ARGV: expiry ms, slot, frame, signature, the
# largest frame a message carries -> 1, or -1 gone.  A frame that small
# travels in the message too ("<gen> <slot> <signature><frame>"), so a
# blocked reader has it without a second round trip (RedisRecord.load).
STORE: Final = _script("""
if not alive() then return -1 end
local w = ARGV[2]
redis.call('HSET', KEYS[1], 'v' .. w, ARGV[3], 's' .. w, ARGV[4], 'h' .. w, 1, 'flag', 1)
local gen = redis.call('HINCRBY', KEYS[1], 'gen', 1)
if #ARGV[3] <= tonumber(ARGV[5]) then
  redis.call('SPUBLISH', KEYS[2], gen .. ' ' .. w .. ' ' .. ARGV[4] .. ARGV[3])
else
  redis.call('SPUBLISH', KEYS[2], gen)
end
return 1
""")

# KEYS[1] hash, KEYS[2] channel, ARGV: expiry ms, slot -> 1, or -1 gone.
# STORE for a frame too large to carry: run in one MULTI after a plain HSET
# of v<slot> and s<slot> (RedisRecord.store), so the frame never passes
# through Lua, which copies an argument in and out again (1 MiB: 3.1 ms of
# the server's time as STORE against 0.6 ms as HSET; docs/design.md).  If
# the object was gone, that HSET made a hash with no kind: it goes here.
# Out of memory, the MULTI's HSET is refused and EXEC with it: no change.
STORED: Final = """
if redis.call('HEXISTS', KEYS[1], 'kind') == 0 then
  redis.call('DEL', KEYS[1])
  return -1
end
if ARGV[1] ~= '0' then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local w = ARGV[2]
redis.call('HSET', KEYS[1], 'h' .. w, 1, 'flag', 1)
local gen = redis.call('HINCRBY', KEYS[1], 'gen', 1)
redis.call('SPUBLISH', KEYS[2], gen)
return 1
"""

# KEYS[1] hash, ARGV: expiry ms, slot (0, 1, or -1: the value if any, else the
# exception), the generation the caller has, the largest frame to return ->
# {gen, slot} when the slot is empty (slot -1) or the caller has it, else
# {gen, slot, frame, signature}, or {gen, slot, nil, signature} when the
# frame is larger (the caller reads it with a plain HMGET: not through Lua);
# nil if gone.  One round trip for get(), and none of a value's bytes again
# for a reader that holds them.
LOAD: Final = _script("""
if not alive() then return nil end
local got = redis.call('HMGET', KEYS[1], 'gen', 'h0', 'h1')
local w = tonumber(ARGV[2])
if w < 0 then
  if got[2] then w = 0 else w = 1 end
end
if not got[w + 2] then return {got[1], -1} end
if got[1] == ARGV[3] then return {got[1], w} end
local signature = redis.call('HGET', KEYS[1], 's' .. w)
if redis.call('HSTRLEN', KEYS[1], 'v' .. w) > tonumber(ARGV[4]) then
  return {got[1], w, false, signature}
end
return {got[1], w, redis.call('HGET', KEYS[1], 'v' .. w), signature}
""")
