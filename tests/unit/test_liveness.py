"""workers.liveness: the refresh-and-sweep script and the rules around it, on fakeredis."""

from __future__ import annotations

import itertools

import fakeredis
import pytest

from workers import liveness
from workers.liveness import HEARTBEAT_LUA, LIVENESS_KEY, OWNER_KEY, Holder


@pytest.fixture
def r() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


def _beat_all(r, me: str, sweep: bool, *dead: str, window: float = 4.0) -> tuple[list[str], ...]:
    """One refresh: (claimed tags, dead holders, tags held by ``me``), each sorted."""
    reply = r.register_script(HEARTBEAT_LUA)(
        keys=[LIVENESS_KEY, OWNER_KEY], args=[me, window, 1 if sweep else 0, *dead]
    )
    return tuple(sorted(v.decode() for v in part) for part in reply)


def _beat(r, me: str, sweep: bool, *dead: str, window: float = 4.0) -> tuple[list[str], list[str]]:
    claimed, gone, _ = _beat_all(r, me, sweep, *dead, window=window)
    return claimed, gone


def _now(r) -> float:
    sec, usec = r.time()
    return sec + usec / 1e6


def test_a_refresh_registers_and_claims_nothing_of_live_holders(r) -> None:
    r.zadd(LIVENESS_KEY, {"other": _now(r)})
    r.hset(OWNER_KEY, mapping={"t1": "other", "t2": "me"})
    assert _beat(r, "me", sweep=True) == ([], [])
    assert r.zscore(LIVENESS_KEY, "me") is not None
    assert r.hget(OWNER_KEY, "t1") == b"other"


def test_a_lapsed_holders_messages_go_to_one_sweeper_only(r) -> None:
    r.zadd(LIVENESS_KEY, {"dead": _now(r) - 10, "b": _now(r)})
    r.hset(OWNER_KEY, mapping={"t1": "dead", "t2": "dead", "t3": "b"})
    assert _beat(r, "a", sweep=True) == (["t1", "t2"], ["dead"])
    assert r.hget(OWNER_KEY, "t1") == b"a" and r.zscore(LIVENESS_KEY, "dead") is None
    assert _beat(r, "b", sweep=True) == ([], [])  # nothing left for a second sweeper


def test_without_a_steady_window_a_sweeper_judges_nobody(r) -> None:
    r.zadd(LIVENESS_KEY, {"stale": _now(r) - 100})
    r.hset(OWNER_KEY, mapping={"t1": "stale", "t2": "unregistered"})
    assert _beat(r, "a", sweep=False) == ([], [])  # e.g. just after a Redis restart
    assert _beat(r, "a", sweep=True) == (["t1", "t2"], ["stale"])


def test_a_previous_incarnation_is_claimed_at_once(r) -> None:
    r.zadd(LIVENESS_KEY, {"me-before": _now(r)})  # fresh, but named dead by its successor
    r.hset(OWNER_KEY, "t1", "me-before")
    assert _beat(r, "me", False, "me-before") == (["t1"], ["me-before"])


def test_a_holder_knows_its_previous_runs_by_name_host_and_a_gone_pid() -> None:
    me = Holder("w1@h", "h", 100, "new")
    assert me.previous(Holder("w1@h", "h", 100, "old"))  # same pid: a container restart
    assert me.previous(Holder("w1@h", "h", 2**22 + 7, "old"))  # no such process
    assert not me.previous(Holder("w1@h", "h", 1, "old"))  # pid 1 runs: a duplicate node name
    assert not me.previous(Holder("w2@h", "h", 100, "old"))
    assert not me.previous(Holder("w1@h", "other", 100, "old"))
    assert Holder.parse(me.member) == me and Holder.parse("junk") is None


def test_a_refresh_names_the_tags_redis_says_the_refresher_holds(r) -> None:
    r.zadd(LIVENESS_KEY, {"other": _now(r), "dead": _now(r) - 10})
    r.hset(OWNER_KEY, mapping={"t1": "me", "t2": "other", "t3": "dead", "t4": "me"})
    assert _beat_all(r, "me", sweep=False) == ([], [], ["t1", "t4"])
    assert _beat_all(r, "me", sweep=True) == (["t3"], ["dead"], ["t1", "t4"])  # claimed ones apart


class _Channel:
    """What the reconcile reads of a channel: the delivery tags its QoS holds."""

    def __init__(self, *tags: str) -> None:
        self._qos = type("QoS", (), {"_delivered": dict.fromkeys(tags)})()


class _Lv(liveness.Liveness):
    def __init__(self, running: set[str] | None, *channels: _Channel) -> None:  # bookkeeping only
        self.held, self._orphans, self._claimed, self.window = set(), {}, set(), 4.0
        self.running = (lambda: running) if running is not None else None
        self._receiving, self._receipts, self._unknown = set(), itertools.count(), {}
        self.channels = list(channels)  # type: ignore[assignment]


def test_a_message_recorded_for_this_worker_that_it_never_got_is_handed_back_on_the_next_refresh() -> None:
    lv = _Lv(set())
    lv._reconcile({"lost"})  # first seen: its reply might still be on its way
    assert lv._claimed == set()
    lv._reconcile({"lost"})
    assert lv._claimed == {"lost"}


def test_what_this_worker_holds_runs_or_orphaned_is_never_handed_back() -> None:
    lv = _Lv({"running"}, _Channel("delivered"))
    lv._orphans["orphan"] = [0.0, None]
    for _ in range(3):
        lv._reconcile({"running", "delivered", "orphan"})
    assert lv._claimed == set() and lv._unknown == {}


def test_a_tag_unknown_only_once_in_a_row_stays() -> None:
    channel = _Channel()
    lv = _Lv(set(), channel)
    lv._reconcile({"t"})
    channel._qos._delivered["t"] = None  # delivered meanwhile
    lv._reconcile({"t"})
    del channel._qos._delivered["t"]  # acked; Redis catches up late
    lv._reconcile({"t"})
    assert lv._claimed == set()
    lv._reconcile(set())  # gone from Redis: forgotten
    assert lv._unknown == {}


def test_a_receive_in_flight_when_a_tag_was_first_seen_is_waited_for() -> None:
    channel = _Channel()
    lv = _Lv(set(), channel)
    with lv.receiving():  # its script ran on the server; the reply is still on its way
        lv._reconcile({"slow"})
        lv._reconcile({"slow"})
        lv._reconcile({"slow"})
        assert lv._claimed == set()
        channel._qos._delivered["slow"] = None  # the reply came: delivered
    lv._reconcile({"slow"})
    assert lv._claimed == set()
    with lv.receiving():  # a reply lost: the receive ends without delivering
        lv._reconcile({"lost"})
    lv._reconcile({"lost"})
    assert lv._claimed == {"lost"}


def test_a_reconcile_waits_while_celerys_view_is_unreadable() -> None:
    lv = _Lv(None)
    lv.running = lambda: None  # changed size while copied
    lv._reconcile({"t"})
    lv._reconcile({"t"})
    assert lv._claimed == set()


def test_a_closed_channels_message_not_running_past_the_ack_grace_is_handed_back() -> None:
    lv = _Lv(running={"busy"})
    lv.held |= {"busy", "dropped", "acked"}
    lv.orphan(["busy", "dropped", "acked"], visibility_timeout=3600)
    lv.held.discard("acked")
    lv._settle_orphans(now=0)
    assert lv._claimed == set() and set(lv._orphans) == {"busy", "dropped"}
    lv._settle_orphans(now=liveness.ACK_RETRY_S)  # its ack may still be retrying
    assert lv._claimed == set()
    lv._settle_orphans(now=liveness.ACK_RETRY_S + 4.0)
    assert lv._claimed == {"dropped"} and set(lv._orphans) == {"busy"}


def test_without_celerys_view_a_lost_channels_message_waits_for_the_visibility_timeout() -> None:
    lv = _Lv(running=None)
    lv.held.add("t")
    lv.orphan(["t"], visibility_timeout=10)
    lv._settle_orphans(now=0)
    lv._settle_orphans(now=1)
    assert lv._claimed == set()
    lv._settle_orphans(now=10**9)
    assert lv._claimed == {"t"}
