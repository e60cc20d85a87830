#!/usr/bin/env python3
"""An independent Kafka consumer for the tests (confluent-kafka, not Tapio's code): reads TOPIC
from the beginning of every partition to its end and prints one JSON line per message with its
partition, offset, key and value. Ends when every partition reported EOF; never relies on end
offsets (the test broker, tansu 0.6.0, reports the high watermark wrongly).

Usage: consume.py BOOTSTRAP TOPIC [TIMEOUT_SECONDS]
"""

import json
import sys
import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition


def main():
    bootstrap, topic = sys.argv[1], sys.argv[2]
    deadline = time.monotonic() + (float(sys.argv[3]) if len(sys.argv) > 3 else 60)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"tapio-test-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "session.timeout.ms": 6000,
        }
    )
    metadata = consumer.list_topics(topic, timeout=10)
    partitions = set(metadata.topics[topic].partitions)
    if not partitions:
        sys.exit(f"topic {topic} has no partitions")
    # Assigned, not subscribed: no group rebalance to wait for, every partition from offset 0.
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(partitions)])
    at_eof = set()
    while at_eof != partitions:
        if time.monotonic() > deadline:
            sys.exit(f"timed out; partitions at EOF: {sorted(at_eof)} of {sorted(partitions)}")
        message = consumer.poll(1.0)
        if message is None:
            continue
        if message.error():
            if message.error().code() == KafkaError._PARTITION_EOF:
                at_eof.add(message.partition())
                continue
            sys.exit(f"consumer error: {message.error()}")
        at_eof.discard(message.partition())
        key = message.key()
        headers = {k: v.decode() for k, v in (message.headers() or [])}
        print(
            json.dumps(
                {
                    "partition": message.partition(),
                    "offset": message.offset(),
                    "key": key.decode() if key is not None else None,
                    "value": message.value().decode(),
                    "headers": headers,
                }
            )
        )
    consumer.close()


if __name__ == "__main__":
    main()
