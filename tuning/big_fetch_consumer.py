#!/usr/bin/env python3
"""A confluent-kafka consumer asking for 1 GB fetches (fetch.max.bytes,
max.partition.fetch.bytes), to measure the broker's memory under huge
fetches. Usage: big_fetch_consumer.py BOOTSTRAP TOPIC SECONDS
(confluent-kafka: tests/kafka_clients/install.sh installs it in a venv)."""
import sys, time
from confluent_kafka import Consumer
c = Consumer({'bootstrap.servers': sys.argv[1], 'group.id': 'big-reader', 'auto.offset.reset': 'earliest',
              'fetch.max.bytes': 1000000000, 'max.partition.fetch.bytes': 1000000000,
              'receive.message.max.bytes': 2147483647, 'enable.auto.commit': False})
c.subscribe([sys.argv[2]])
n = 0; b = 0; t0 = time.time(); end = t0 + float(sys.argv[3])
while time.time() < end:
    m = c.poll(0.5)
    if m is None or m.error():
        continue
    n += 1; b += len(m.value())
print(f"consumed {n} messages, {b/2**20:.0f} MiB in {time.time()-t0:.1f} s")
c.close()
