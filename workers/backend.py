"""Quorum's result backend: Celery's Redis backend, with a chord body that survives the death of
the worker that was sending it.

Celery's ``on_chord_part_return`` lets the header task that completes a chord claim the right to
send its body (a claim key with an expiry of ``2 × result_chord_join_timeout``, 6 s by default,
extended for the publish). A worker killed after the claim but before the body is published
leaves the claim behind; its header task comes back to another worker within the liveness window
(``workers.transport``), finds the claim held, and nobody ever sends the body: the job stays
pending. Here the header task that claimed is remembered beside the claim, and when that same
task (same id, same header index) runs again it takes the claim over and sends the body itself.
The body may then be sent twice (its first sender was only frozen, or died after sending it but
before releasing the claim): a body answers behind the job's publication guard, so the job is
answered once. Selected by ``workers.app`` as ``workers.backend:ResultBackend+redis://…``.
"""

from __future__ import annotations

from typing import Any

from celery.backends.redis import RedisBackend
from kombu.utils.objects import cached_property

#: Celery 5.7's ``CHORD_PART_RETURN_LUA`` (celery/backends/redis.py), one step changed: the
#: claim. The member that wins it is also recorded in the chord's ``.d`` set (as ``claim:`` +
#: member, where Celery keeps the members already counted), and a later run of that member finds
#: itself there and takes the claim over: its earlier run is what the claim was waiting for.
#: Everything else (counting each member once, the ``done`` marker, expiries, the reply) is
#: Celery's. tests/unit/test_result_backend.py fails when Celery's script changes.
CHORD_PART_RETURN_LUA = """
local jkey, tkey, skey, dkey, gkey, ckey = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local tid, value, ordered, score = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local expires, group_expires = tonumber(ARGV[5]), tonumber(ARGV[6])
local claim_expires = tonumber(ARGV[7])
local claim_token = ARGV[8]

local done_marker = redis.call('GET', ckey)
if done_marker == 'done' then
    return {-1, 0, 0, 0}
end

local member = tid .. ':' .. score
if redis.call('SISMEMBER', dkey, member) == 0 then
    if ordered == '1' then
        redis.call('ZADD', jkey, score, value)
    else
        redis.call('RPUSH', jkey, value)
    end
    redis.call('SADD', dkey, member)
end
local readycount
if ordered == '1' then
    readycount = redis.call('ZCOUNT', jkey, '-inf', '+inf')
else
    readycount = redis.call('LLEN', jkey)
end
if expires > 0 then
    for _, key in ipairs({jkey, tkey, skey, dkey}) do
        redis.call('EXPIRE', key, expires)
    end
    if group_expires > 0 then
        redis.call('EXPIRE', gkey, group_expires)
    end
end

local totaldiff = redis.call('GET', tkey)
local size = redis.call('GET', skey)
local claimed = 0
if size and readycount == tonumber(size) + tonumber(totaldiff or 0) then
    local claimant = 'claim:' .. member
    if redis.call('SET', ckey, claim_token, 'NX', 'EX', claim_expires) then
        redis.call('SADD', dkey, claimant)
        claimed = 1
    elseif redis.call('SISMEMBER', dkey, claimant) == 1 then
        redis.call('SET', ckey, claim_token, 'EX', claim_expires)
        claimed = 1
    end
end

return {readycount, totaldiff, size, claimed}
"""


class ResultBackend(RedisBackend):
    """Celery's Redis result backend; a chord header task that claimed the body's dispatch and
    runs again (its worker died) takes the claim over instead of leaving the body unsent."""

    @cached_property
    def _chord_part_return_script(self) -> Any:
        return self.client.register_script(CHORD_PART_RETURN_LUA)
