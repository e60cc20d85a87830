#!/usr/bin/env python3
"""An independent Kafka producer for the tests and benchmarks (confluent-kafka, not Tapio's code):
writes COUNT UnifiedEvent JSON messages to TOPIC, ids `evt_<FIRST+i>` zero-padded, each about a
pod of namespace `shop` (`pod-<i mod 64>`) and keyed by that pod's routing key, with acks=all.
Prints one JSON line with the count and the seconds it took (the raw producer speed).

PER_BATCH caps the messages of one record batch (default 10000). The tests pass 1: the test
broker, tansu 0.6.0, answers a fetch from an offset inside a record batch with the batch after it,
so a consumer resuming mid-batch (after a commit, a pause or a rebalance) would skip messages;
with one message per batch every offset starts a batch.

Usage: produce.py BOOTSTRAP TOPIC COUNT [FIRST [PER_BATCH]]
"""

import json
import sys
import time

from confluent_kafka import Producer

PODS = 64


def event(seq):
    pod = f"pod-{seq % PODS}"
    return {
        "id": f"evt_{seq:012d}",
        "timestamp": f"2026-01-01T00:{seq // 60000 % 60:02d}:{seq // 1000 % 60:02d}.{seq % 1000:03d}000000Z",
        "type": "process",
        "source": "ebpf",
        "entity": {"type": "pod", "id": f"uid-{pod}", "name": pod, "namespace": "shop"},
        "process": {"pid": 1000 + seq % 30000, "comm": "worker", "operation": "exit", "exit_code": 0},
    }


def main():
    bootstrap, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    first = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    per_batch = int(sys.argv[5]) if len(sys.argv) > 5 else 10000
    failures = []
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "batch.num.messages": per_batch,
            "queue.buffering.max.messages": 1000000,
        }
    )
    payloads = [
        (json.dumps(event(seq), separators=(",", ":")).encode(), f"shop/pod-{seq % PODS}".encode())
        for seq in range(first, first + count)
    ]
    started = time.monotonic()
    for value, key in payloads:
        while True:
            try:
                producer.produce(topic, value, key, on_delivery=lambda err, _msg: err and failures.append(err))
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    remaining = producer.flush(120)
    seconds = time.monotonic() - started
    if remaining or failures:
        sys.exit(f"{remaining} messages unconfirmed, {len(failures)} failed: {failures[:3]}")
    print(json.dumps({"count": count, "seconds": seconds}))


if __name__ == "__main__":
    main()
