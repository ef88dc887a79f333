"""Quorum's result backend: Celery's Redis backend, with a chord body that survives the death of
the worker that was sending it, and a result stored in one round trip.

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

Celery stores a result in two round trips: it reads the task's key first and leaves a stored
SUCCESS alone (a redelivered task must not overwrite it), then writes and publishes. Here the
same rule runs as one script (:data:`STORE_LUA`), which also closes the gap between the read and
the write. Quorum's chord header tasks store no result of their own (``ignore_result``: their
outcome goes into the chord's results only), and the call that completes the chord gets the
header results and its claim back in the round trip that counts it (Celery read the saved
group, the results and extended the claim in three more).
A job's count can ride with its answer (``store_result(..., also=...)``), and a chord's size
goes out in one round trip. Where the backend is the state's server, two writes can ride in a
task's round trip of the state's: a job's answer behind its publication guard
(:data:`GUARDED_STORE_LUA`), and a chord call's count (:meth:`ResultBackend.queue_chord_part`:
the tracer then completes the chord from its reply, without counting again).
A worker sending a chord no longer subscribes to its header tasks'
results (Celery did, for a barrier no worker waits on: 3 channels per consensus job, never
read, never left).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

from celery import states
from celery._state import task_join_will_block
from celery.backends.base import BackendStoreError
from celery.backends.redis import RedisBackend
from celery.canvas import maybe_signature
from celery.exceptions import ChordError
from celery.result import GroupResult
from celery.utils.functional import _regen
from kombu.utils.encoding import bytes_to_str
from kombu.utils.objects import cached_property

from orchestration.state.cache import CacheEntry
from orchestration.state.scripts import Queued, execute_queued

log = logging.getLogger("quorum.backend")

#: Store a task's result unless a SUCCESS is stored already (Celery's rule), and publish it to
#: the result consumers, in one step. KEYS: the task's key. ARGV: the encoded meta (JSON: the
#: only result serializer), its expiry in seconds (0: none). Replies 1 stored, 0 left alone.
STORE_LUA = """
local current = redis.call('GET', KEYS[1])
if current then
  local ok, meta = pcall(cjson.decode, current)
  if ok and type(meta) == 'table' and meta['status'] == 'SUCCESS' then return 0 end
end
local expires = tonumber(ARGV[2])
if expires > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', expires)
else
  redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
"""

#: :data:`STORE_LUA` behind a job's publication guard, for a backend on the state's server: the
#: guard is claimed (``SET NX GET``: the first publisher, or that same one again) and the result
#: stored, and the answer's cache entry written, only when it is this publisher's. KEYS: the
#: result, the guard, the cache entry (optional); ARGV: the result and its expiry (as
#: STORE_LUA's), the publisher, the guard's TTL, the cache entry's value and TTL. Reply:
#: STORE_LUA's (1 stored, 0 a SUCCESS was there), or -1 when another publisher holds the guard
#: (nothing written).
GUARDED_STORE_LUA = (
    "local function store(KEYS, ARGV)\n" + STORE_LUA + "end\n"
    "local held = redis.call('SET', KEYS[2], ARGV[3], 'NX', 'GET', 'EX', ARGV[4])\n"
    "if held and held ~= ARGV[3] then return -1 end\n"
    "if KEYS[3] then redis.call('SET', KEYS[3], ARGV[5], 'EX', ARGV[6]) end\n"
    "return store({KEYS[1]}, {ARGV[1], ARGV[2]})\n"
)

#: Celery 5.7's ``CHORD_PART_RETURN_LUA`` (celery/backends/redis.py), one step changed and one
#: added. The claim: the member that wins it is also recorded in the chord's ``.d`` set (as
#: ``claim:`` + member, where Celery keeps the members already counted), and a later run of that
#: member finds itself there and takes the claim over: its earlier run is what the claim was
#: waiting for. Added: asked (``ARGV[9]`` = 1), a member that claims also gets whether the
#: header's group was saved and the header results (Celery reads both in round trips of their
#: own). Everything else (counting each member once, the ``done`` marker, expiries, the reply
#: Celery's caller unpacks) is Celery's. tests/unit/test_result_backend.py fails when Celery's
#: script changes.
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

if claimed == 1 and ARGV[9] == '1' then
    local results
    if ordered == '1' then
        results = redis.call('ZRANGE', jkey, 0, -1)
    else
        results = redis.call('LRANGE', jkey, 0, -1)
    end
    return {readycount, totaldiff, size, claimed, redis.call('EXISTS', gkey), results}
end
return {readycount, totaldiff, size, claimed}
"""


#: Where a header task that counted itself keeps its :class:`ChordPart` (on its request).
COUNTED_PART = "quorum_chord_part"


@dataclass
class ChordPart:
    """One header task's count of its chord: the script's keys and arguments, and what completing
    the chord needs (the body, the claim's token and expiry); ``reply`` once counted."""

    gid: str
    keys: list[str]
    args: list[Any]
    callback: Any
    token: str
    claim_expires: int
    reply: Any = None


class ResultBackend(RedisBackend):
    """Celery's Redis result backend; a chord header task that claimed the body's dispatch and
    runs again (its worker died) takes the claim over instead of leaving the body unsent; the
    completing header task reads the chord with its count."""

    def add_pending_result(self, result: Any, weak: bool = False, start_drainer: bool = True) -> Any:
        """Celery's, except for a group's barrier in a worker: sending a chord subscribed to
        every header task's result (``res.then(barrier, weak=True)``), which no worker waits
        for (``get()`` is refused in a task); the subscriptions piled up, 3 per consensus job,
        and each header result was pushed to the worker unread. ``get()`` is not weak: unchanged."""
        if weak and task_join_will_block():
            return result
        return super().add_pending_result(result, weak=weak, start_drainer=start_drainer)

    def apply_chord(self, header_result_args: Any, body: Any, **kwargs: Any) -> None:
        """Celery's, without building a ``GroupResult`` only to look for nested groups in the
        header's results (building one subscribes to each of them: see ``add_pending_result``)."""
        results = header_result_args[1]
        if not isinstance(results, _regen) and any(isinstance(r, GroupResult) for r in results):
            super().apply_chord(header_result_args, body, **kwargs)

    def set_chord_size(self, group_id: Any, chord_size: int) -> None:
        """Celery's two writes (forget a previous run's claim, set the size) in one round trip;
        both are safe to repeat, so the pair retries like one."""

        def both() -> None:
            pipe = self.client.pipeline(transaction=False)
            pipe.delete(self.get_key_for_group(group_id, ".c"))
            pipe.set(self.get_key_for_group(group_id, ".s"), chord_size, ex=self.chord_expires or None)
            pipe.execute()

        self.ensure(both, ())

    @cached_property
    def _chord_part_return_script(self) -> Any:
        """Quorum's chord count (:data:`CHORD_PART_RETURN_LUA`), where Celery's method and ours
        both look for it: Celery's own path (a saved group) takes a dead member's claim over too."""
        return self.client.register_script(CHORD_PART_RETURN_LUA)

    @cached_property
    def _store_script(self) -> Any:
        return self.client.register_script(STORE_LUA)

    @cached_property
    def _guarded_store_script(self) -> Any:
        return self.client.register_script(GUARDED_STORE_LUA)

    def queue_store_guarded(
        self, task_id: str, result: Any, guard: tuple[str, int], by: str, cache: CacheEntry | None = None
    ) -> Queued[bool]:
        """A SUCCESS ``result`` stored under ``task_id`` behind the publication guard ``guard``
        (its key and TTL) claimed for ``by``, with the answer's ``cache`` entry, as a step for a
        round trip of the state's (the caller checks that this backend is the state's server):
        True when the guard is ``by``'s, the result then stored (or a SUCCESS already there
        kept) and the entry written. Safe to repeat."""
        keys, args = self._store_call(task_id, result, states.SUCCESS, None, None)
        guard_key, ttl = guard
        keys += [guard_key] + ([cache.key] if cache else [])
        args += [by, ttl] + ([cache.value, cache.ttl_s] if cache else [])
        sha = self._guarded_store_script.sha

        def queue(pipe: Any) -> int:
            pipe.evalsha(sha, len(keys), *keys, *args)
            return 1

        return Queued(queue, lambda replies: replies[0] != -1, (GUARDED_STORE_LUA,))

    def chord_part(self, request: Any, state: str, result: Any) -> ChordPart | None:
        """The chord count of header task ``request`` ending in ``state`` with ``result`` (None
        when it is no chord's member), to run now or in a round trip the task chooses."""
        tid, gid, group_index = request.id, request.group, request.group_index
        if not gid or not tid:
            return None
        jkey, tkey, skey, dkey, ckey = (
            self.get_key_for_group(gid, s) for s in (".j", ".t", ".s", ".d", ".c")
        )
        callback = maybe_signature(request.chord, app=self.app)
        claim_expires = max(5, int((self.app.conf.result_chord_join_timeout or 5.0) * 2))
        if callback is not None:
            claim_expires = self._chord_publish_claim_expires(claim_expires, callback)
        token = uuid4().hex
        encoded = self.encode([1, tid, state, self.encode_result(result, state)])
        return ChordPart(
            gid=gid,
            keys=[jkey, tkey, skey, dkey, self.get_key_for_group(gid), ckey],
            args=[tid, encoded, 1 if self._chord_zset else 0, "+inf" if group_index is None else group_index,
                  self.chord_expires or 0, self._chord_result_expires, claim_expires, token, 1],
            callback=callback,
            token=token,
            claim_expires=claim_expires,
        )  # fmt: skip

    def queue_chord_part(self, request: Any, result: Any) -> Queued[Any] | None:
        """The chord count of header task ``request`` that succeeded with ``result`` (the value
        it returns), as a step for a round trip of the state's (the caller checks that this
        backend is the state's server); once it ran, the tracer's :meth:`on_chord_part_return`
        completes the chord from its reply instead of counting again. None outside a chord."""
        part = self.chord_part(request, states.SUCCESS, result)
        if part is None:
            return None
        sha = self._chord_part_return_script.sha

        def queue(pipe: Any) -> int:
            pipe.evalsha(sha, len(part.keys), *part.keys, *part.args)
            return 1

        def parse(replies: list[Any]) -> Any:
            part.reply = replies[0]
            setattr(request, COUNTED_PART, part)
            return part.reply

        return Queued(queue, parse, (CHORD_PART_RETURN_LUA,))

    def on_chord_part_return(
        self, request: Any, state: str, result: Any, propagate: Any = None, **kwargs: Any
    ) -> None:
        """Celery's, with the completing member's reads in the round trip that counts it: once
        the script claims the body, it also returns the header results and whether the header's
        group was saved, where Celery read the group (``GroupResult.restore``), then the results,
        then extended the claim for the publish, three more round trips per chord. There is no
        join to wait for, so the claim is taken for the publish at once. A member that counted
        itself in a round trip of its own (:meth:`queue_chord_part`) is not counted again. A
        header whose group was saved (nested groups; Quorum sends none) is left to Celery's
        method, which counts the member again (a no-op) and takes the claim over
        (:data:`CHORD_PART_RETURN_LUA`)."""
        part = getattr(request, COUNTED_PART, None)
        if not isinstance(part, ChordPart):
            part = self.chord_part(request, state, result)
            if part is None:
                return
            part.reply = self._chord_part_return_script(keys=part.keys, args=part.args, client=self.client)
        reply, callback, gid = part.reply, part.callback, part.gid
        jkey, tkey, skey, dkey, _, ckey = part.keys
        if reply[0] == -1 or not reply[3] or callback is None:
            return  # the chord is done, or incomplete, or this member did not claim its body
        if reply[4]:
            super().on_chord_part_return(request, state, result, propagate=propagate, **kwargs)
            return
        try:
            results = [self._unpack_chord_result(packed, self.decode) for packed in reply[5]]
        except Exception as exc:  # a header task failed (ChordError), or a result does not decode
            log.exception("Chord %r raised: %r", gid, exc)
            error = exc if isinstance(exc, ChordError) else ChordError(f"Join error: {exc!r}")
            try:
                self.chord_error_from_stack(callback, error)
            finally:
                self.client.delete(skey)  # a late copy of a header task fails the chord no more
            return
        try:
            self.app.amqp._retry_publish(callback.delay, results)
        except Exception as exc:
            log.exception("Chord callback for %r raised: %r", gid, exc)
            self.chord_error_from_stack(callback, ChordError(f"Callback error: {exc!r}"))
        finally:
            done_expires = int(max(part.claim_expires * 2, 300))
            keys = [ckey, jkey, tkey, skey, dkey]
            if not self._chord_cleanup_script(keys=keys, args=[part.token, done_expires], client=self.client):
                log.warning("Chord callback claim for %r was lost before cleanup; left for expiry", gid)

    def _store_call(
        self, task_id: Any, result: Any, state: str, traceback: Any, request: Any
    ) -> tuple[list[str], list[Any]]:
        """The store script's keys and arguments for an encoded result (Celery's meta and expiry)."""
        meta = self._get_result_meta(result=result, state=state, traceback=traceback, request=request)
        meta["task_id"] = bytes_to_str(task_id)
        value = self.encode(meta)
        if isinstance(value, str) and len(value) > self._MAX_STR_VALUE_SIZE:
            raise BackendStoreError("value too large for Redis backend", state=state, task_id=task_id)
        expires = self.failure_expires if state == states.FAILURE else None
        if expires is None:
            expires = self.expires
        return [self.get_key_for_task(task_id)], [value, int(expires or 0)]

    def _store_result(
        self,
        task_id: Any,
        result: Any,
        state: str,
        traceback: Any = None,
        request: Any = None,
        also: Queued[Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Celery's ``_store_result`` (a stored SUCCESS is never overwritten), in one round trip;
        ``also`` (``store_result(..., also=...)``: e.g. the job's count) rides in the same one,
        retried with the store, so it must be safe to repeat. Its failure is logged, not raised."""
        keys, args = self._store_call(task_id, result, state, traceback, request)
        if also is None:
            self.ensure(lambda: self._store_script(keys=keys, args=args), ())
            return result

        def queue(pipe: Any) -> int:
            pipe.evalsha(self._store_script.sha, 1, *keys, *args)
            return 1

        store = Queued(queue, lambda replies: replies[0], (STORE_LUA,))

        def both() -> list[Any]:
            return execute_queued(self.client, [store, also], raise_on_error=False)

        stored, extra = self.ensure(both, ())
        if isinstance(stored, Exception):
            raise stored
        if isinstance(extra, Exception):
            log.warning("%s: what rode with its result was not recorded: %s", task_id, extra)
        return result
