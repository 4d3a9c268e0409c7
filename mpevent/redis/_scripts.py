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

Claims (``AsyncResult.claim()``, ``_leases``).  A claimed result's hash
names its claimer's token ("<pid> <host> <nonce>") in the field ``claim``,
and a lease key beside it, ``<prefix>:{<name>}:claim`` (the same hash tag:
the same cluster slot), holds the token with a TTL of the lease, which
the claimer's process renews.  Scripts given the lease as KEYS[3] apply
the one rule of claims first (``lapse``): a ``claim`` whose lease key is
gone is failed now, by whichever script touches the result first, once
(``fail``).  A failure is stored in the exception slot as
``<exited> <token>`` with an empty signature: no client signed it, and
readers build :class:`~mpevent.ProcessDied` from it, never unpickle it.
Every store ends a claim (deletes the field and the lease); the
claimer's own store, passing its token, is refused (-2) once its claim
lapsed, and the failure stays (``lost`` keeps the failure's text).
"""

from __future__ import annotations

from typing import Final

REFRESH_FRACTION: Final = 0.25


# A claim's failure, stored once (see the module's docstring).  Needs KEYS[2]
# (the channel) and KEYS[3] (the lease).
_FAIL = """
local function fail(claim, exited)
  local text = exited .. ' ' .. claim
  redis.call('HSET', KEYS[1], 'lost', text, 'v1', text, 's1', '', 'h1', 1, 'flag', 1)
  redis.call('HDEL', KEYS[1], 'claim')
  redis.call('DEL', KEYS[3])
  redis.call('SPUBLISH', KEYS[2], redis.call('HINCRBY', KEYS[1], 'gen', 1))
end
local function lapse()
  if not KEYS[3] then return end
  local claim = redis.call('HGET', KEYS[1], 'claim')
  if claim and redis.call('EXISTS', KEYS[3]) == 0 then fail(claim, '0') end
end"""


def _script(body: str) -> str:
    """*body* after the one rule of ARGV[1]: alive() is false if the object is gone,
    and refreshes its expiry first when ARGV[1] asks for it; then, with a
    lease in KEYS[3], the one rule of claims (lapse)."""
    return (
        _FAIL
        + """
local function alive()
  local there
  if ARGV[1] == '0' then
    there = redis.call('EXISTS', KEYS[1]) == 1
  else
    there = redis.call('PEXPIRE', KEYS[1], ARGV[1]) == 1
  end
  if there then lapse() end
  return there
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

# KEYS hash, channel, lease; ARGV[1] expiry ms -> {kind, gen, flag, h0, h1,
# claim} or nil if gone.  Run only when a refresh is due or the result is
# claimed (to apply lapse); otherwise the state is a plain HMGET.
STATE: Final = _script("""
if not alive() then return nil end
return redis.call('HMGET', KEYS[1], 'kind', 'gen', 'flag', 'h0', 'h1', 'claim')
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

# KEYS hash, channel, lease; ARGV: expiry ms, slot, frame, signature, the
# largest frame a message carries, the claimer's token or '' -> 1, -1 gone,
# or -2 refused: the token's claim lapsed (see the module's docstring).  A
# frame that small travels in the message too ("<gen> <slot>
# <signature><frame>"), so a blocked reader has it without a second round
# trip (RedisRecord.load).
STORE: Final = _script("""
if not alive() then return -1 end
local claim = redis.call('HGET', KEYS[1], 'claim')
if ARGV[6] ~= '' and claim ~= ARGV[6] then
  local lost = redis.call('HGET', KEYS[1], 'lost')
  if claim or (lost and string.sub(lost, 3) == ARGV[6]) then return -2 end
end
local w = ARGV[2]
redis.call('HSET', KEYS[1], 'v' .. w, ARGV[3], 's' .. w, ARGV[4], 'h' .. w, 1, 'flag', 1)
if claim then
  redis.call('HDEL', KEYS[1], 'claim')
  redis.call('DEL', KEYS[3])
end
local gen = redis.call('HINCRBY', KEYS[1], 'gen', 1)
if #ARGV[3] <= tonumber(ARGV[5]) then
  redis.call('SPUBLISH', KEYS[2], gen .. ' ' .. w .. ' ' .. ARGV[4] .. ARGV[3])
else
  redis.call('SPUBLISH', KEYS[2], gen)
end
return 1
""")

# KEYS hash, channel, lease; ARGV: expiry ms, slot -> 1, or -1 gone.
# STORE for a frame too large to carry: run in one MULTI after a plain HSET
# of v<slot> and s<slot> (RedisRecord.store), so the frame never passes
# through Lua, which copies an argument in and out again (1 MiB: 3.1 ms of
# the server's time as STORE against 0.6 ms as HSET; docs/design.md).  If
# the object was gone, that HSET made a hash with no kind: it goes here.
# Out of memory, the MULTI's HSET is refused and EXEC with it: no change.
# A claimer never comes this way (its store must be refusable before it
# writes: STORE), so this store ends any claim, as STORE does.
STORED: Final = (
    _FAIL
    + """
if redis.call('HEXISTS', KEYS[1], 'kind') == 0 then
  redis.call('DEL', KEYS[1])
  return -1
end
if ARGV[1] ~= '0' then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
lapse()
local w = ARGV[2]
redis.call('HSET', KEYS[1], 'h' .. w, 1, 'flag', 1)
redis.call('HDEL', KEYS[1], 'claim')
redis.call('DEL', KEYS[3])
local gen = redis.call('HINCRBY', KEYS[1], 'gen', 1)
redis.call('SPUBLISH', KEYS[2], gen)
return 1
"""
)

# KEYS hash, channel, lease; ARGV: expiry ms, slot (0, 1, or -1: the value if any, else the
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

# KEYS hash, channel, lease; ARGV: expiry ms, token, lease ms -> 1 claimed
# (or claimed by this token already: its lease renewed), 0 set already, -1
# gone, or the token of the live claimer.  The lease is written before the
# claim field: refused out of memory, no claim is left without a lease.
CLAIM: Final = _script("""
if not alive() then return -1 end
local got = redis.call('HMGET', KEYS[1], 'h0', 'h1', 'claim')
if got[1] or got[2] then return 0 end
if got[3] and got[3] ~= ARGV[2] then return got[3] end
redis.call('SET', KEYS[3], ARGV[2], 'PX', ARGV[3])
redis.call('HSET', KEYS[1], 'claim', ARGV[2])
return 1
""")

# KEYS hash, channel, lease; ARGV: expiry ms, token -> 1 failed now (the
# claimer leaves without setting it: exited), 0 not its claim (set, or
# lapsed), -1 gone.
ABANDON: Final = _script("""
if not alive() then return -1 end
if redis.call('HGET', KEYS[1], 'claim') ~= ARGV[2] then return 0 end
fail(ARGV[2], '1')
return 1
""")
