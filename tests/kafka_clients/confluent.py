"""confluent-kafka (librdkafka): idempotent zstd producer, consumer with
group.id and synchronous commits, committed offsets read back."""
import sys
import time
import uuid

import confluent_kafka
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

addr = sys.argv[1]
run = uuid.uuid4().hex[:8]
topic = f"ck-{run}"
group = f"ck-group-{run}"
print("confluent-kafka", confluent_kafka.version(), "librdkafka", confluent_kafka.libversion())

admin = AdminClient({"bootstrap.servers": addr, "client.id": "confluent-admin"})
for f in admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)]).values():
    f.result(30)

errors = []
acked = []
def on_delivery(err, msg):
    (errors if err else acked).append(err or (msg.partition(), msg.offset()))

p = Producer({"bootstrap.servers": addr, "client.id": "confluent-producer", "enable.idempotence": True, "compression.type": "zstd", "linger.ms": 10})
for i in range(300):
    p.produce(topic, key=f"k{i}", value=f"v{i}", headers=[("h", b"x")], on_delivery=on_delivery)
    p.poll(0)
assert p.flush(60) == 0, "messages left unflushed"
assert not errors, errors
assert len(set(acked)) == 300

c = Consumer({
    "bootstrap.servers": addr,
    "client.id": "confluent-consumer",
    "group.id": group,
    "auto.offset.reset": "earliest",
    "enable.auto.commit": False,
    "session.timeout.ms": 10000,
})
c.subscribe([topic])
got = []
deadline = time.time() + 60
while len(got) < 300 and time.time() < deadline:
    m = c.poll(0.5)
    if m is None:
        continue
    assert m.error() is None, m.error()
    got.append(m)
assert len(got) == 300, f"read {len(got)}"
assert all(m.headers() == [("h", b"x")] for m in got)
c.commit(asynchronous=False)
committed = c.committed([TopicPartition(topic, p) for p in range(3)], timeout=30)
c.close()
total = sum(tp.offset for tp in committed)
assert total == 300, f"committed offsets sum to {total}"

# A new member of the group has nothing left to read.
c = Consumer({"bootstrap.servers": addr, "client.id": "confluent-consumer", "group.id": group, "auto.offset.reset": "earliest"})
c.subscribe([topic])
extra = 0
deadline = time.time() + 8
while time.time() < deadline:
    m = c.poll(0.5)
    if m is not None and m.error() is None:
        extra += 1
c.close()
assert extra == 0, f"re-read {extra} committed messages"
listed = admin.list_consumer_groups().result(30)
assert group in [g.group_id for g in listed.valid], listed.valid
print("produced 300 (idempotent, zstd), consumed 300, committed, resumed at the end; the group is listed")
