"""workers.transport overrides and calls kombu's Redis transport internals: when kombu changes
one of their signatures (a new minor release), this fails loudly instead of the worker."""

from __future__ import annotations

import inspect

import pytest
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

from workers import transport

#: The kombu 5.7 signatures workers.transport was written against.
RECORDED = {
    (kombu_redis.QoS, "append"): "(self, message, delivery_tag)",
    (kombu_redis.QoS, "ack"): "(self, delivery_tag)",
    (kombu_redis.QoS, "reject"): "(self, delivery_tag, requeue=False)",
    (kombu_redis.QoS, "restore_by_tag"): "(self, tag, client=None, leftmost=False)",
    (kombu_redis.QoS, "_remove_from_indices"): "(self, delivery_tag, pipe=None)",
    (kombu_redis.QoS, "pipe_or_acquire"): "(self, pipe=None, client=None)",
    (kombu_redis.QoS, "restore_visible"): "(self, start=0, num=10, interval=10)",
    (kombu_redis.Channel, "basic_consume"): "(self, queue, *args, **kwargs)",
    (kombu_redis.Channel, "_brpop_start"): "(self, timeout=None)",
    (kombu_redis.Channel, "_brpop_read"): "(self, **options)",
    (kombu_redis.Channel, "_restore"): "(self, message, leftmost=False)",
    (kombu_redis.Channel, "close"): "(self)",
    (kombu_redis.Channel, "_do_restore_message"): (
        "(self, payload, exchange, routing_key, pipe, leftmost=False)"
    ),
    (kombu_redis.Channel, "_q_for_pri"): "(self, queue, pri)",
    (kombu_redis.Channel, "_connparams"): "(self, asynchronous=False)",
    (kombu_redis.Channel, "_create_client"): "(self, asynchronous=False)",
    (kombu_redis.Channel, "_get_pool"): "(self, asynchronous=False)",
    (kombu_redis.Channel, "_flush_brpop_reauth"): "(self)",
    (kombu_redis.Channel, "conn_or_acquire"): "(self, client=None)",
    (virtual.QoS, "append"): "(self, message, delivery_tag)",
    (virtual.QoS, "ack"): "(self, delivery_tag)",
    (virtual.Channel, "basic_consume"): "(self, queue, no_ack, callback, consumer_tag, **kwargs)",
}


@pytest.mark.parametrize(("cls", "name"), list(RECORDED), ids=lambda v: getattr(v, "__qualname__", v))
def test_kombus_method_keeps_the_signature_the_transport_was_written_for(cls, name) -> None:
    found = str(inspect.signature(getattr(cls, name)))
    assert found == RECORDED[cls, name], (
        f"kombu changed {cls.__module__}.{cls.__qualname__}.{name}{found} (was {RECORDED[cls, name]}): "
        "review workers/transport.py against the new kombu before widening the pin in pyproject.toml"
    )


def test_each_override_accepts_what_kombu_passes() -> None:
    for (cls, name), recorded in RECORDED.items():
        ours = getattr(transport.QoS if issubclass(cls, virtual.QoS) else transport.Channel, name)
        if ours is getattr(cls, name) or cls in (virtual.QoS, virtual.Channel):
            continue  # not overridden: only called
        theirs = inspect.signature(getattr(cls, name))
        mine = inspect.signature(ours)
        assert list(mine.parameters) == list(theirs.parameters), f"{name}: {mine} vs {recorded}"


def test_the_transport_extends_kombus_redis_transport() -> None:
    assert issubclass(transport.Transport, kombu_redis.Transport)
    assert transport.Transport.Channel is transport.Channel
    assert transport.Channel.QoS is transport.QoS
    assert kombu_redis.Transport.Channel is kombu_redis.Channel  # nothing assigned into kombu
    assert kombu_redis.Channel.QoS is kombu_redis.QoS
