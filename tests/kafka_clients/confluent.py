"""confluent-kafka (librdkafka): idempotent zstd producer, consumer with
group.id and synchronous commits, committed offsets read back; then the
AdminClient's delete_records, delete_consumer_groups, alter_configs and
incremental_alter_configs, each checked by its effect; then a KIP-848
group.protocol=consumer consumer reads everything once and commits."""
import sys
import time
import uuid

import confluent_kafka
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic, ResourceType,
)

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

# delete_records: partition 0's log start moves to half its end; a fresh
# consumer sees the new low watermark.
probe = Consumer({"bootstrap.servers": addr, "group.id": f"probe-{run}"})
lo, hi = probe.get_watermark_offsets(TopicPartition(topic, 0), timeout=30)
assert (lo, hi) == (0, committed[0].offset), (lo, hi)
target = hi // 2
for tp, f in admin.delete_records([TopicPartition(topic, 0, target)]).items():
    deleted = f.result(30)
    assert deleted.low_watermark == target, deleted
lo, _ = probe.get_watermark_offsets(TopicPartition(topic, 0), timeout=30)
assert lo == target, f"low watermark {lo} after delete_records to {target}"
probe.close()

# delete_consumer_groups: the (now empty) group and its offsets go.
for f in admin.delete_consumer_groups([group]).values():
    f.result(30)
listed = admin.list_consumer_groups().result(30)
assert group not in [g.group_id for g in listed.valid], listed.valid
c = Consumer({"bootstrap.servers": addr, "group.id": group})
left = c.committed([TopicPartition(topic, p) for p in range(3)], timeout=30)
c.close()
assert all(tp.offset < 0 for tp in left), f"offsets survived the delete: {left}"

# alter_configs (whole set) then incremental_alter_configs (one name);
# describe_configs shows both.
res = ConfigResource(ResourceType.TOPIC, topic, set_config={"retention.ms": "86400001"})
for f in admin.alter_configs([res]).values():
    f.result(30)
inc = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
    ConfigEntry("retention.bytes", "1073741825", incremental_operation=AlterConfigOpType.SET),
])
for f in admin.incremental_alter_configs([inc]).values():
    f.result(30)
described = list(admin.describe_configs([ConfigResource(ResourceType.TOPIC, topic)]).values())[0].result(30)
assert described["retention.ms"].value == "86400001", described["retention.ms"]
assert described["retention.bytes"].value == "1073741825", described["retention.bytes"]
bad = ConfigResource(ResourceType.TOPIC, topic, set_config={"retention.ms": "soon"})
try:
    list(admin.alter_configs([bad]).values())[0].result(30)
    raise AssertionError("an invalid retention.ms was accepted")
except confluent_kafka.KafkaException as e:
    assert e.args[0].code() == confluent_kafka.KafkaError.INVALID_CONFIG, e
print(f"delete_records to {target}, delete_consumer_groups, alter_configs and incremental_alter_configs: each took effect")

# The KIP-848 consumer protocol (group.protocol=consumer): a consumer of a
# new group reads every message left (delete_records took partition 0's
# first `target`) once through ConsumerGroupHeartbeat's assignment and
# commits; never a silent stall.
left = 300 - target
c = Consumer({"bootstrap.servers": addr, "client.id": "confluent-kip848", "group.id": f"kip848-{run}",
              "group.protocol": "consumer", "auto.offset.reset": "earliest", "enable.auto.commit": False})
c.subscribe([topic])
seen = set()
deadline = time.time() + 60
while len(seen) < left and time.time() < deadline:
    m = c.poll(0.5)
    if m is None:
        continue
    assert m.error() is None, f"group.protocol=consumer: {m.error()}"
    assert (m.partition(), m.offset()) not in seen, "read twice"
    seen.add((m.partition(), m.offset()))
assert len(seen) == left, f"group.protocol=consumer: read {len(seen)} of {left} within 60 s"
c.commit(asynchronous=False)
committed = c.committed([TopicPartition(topic, p) for p in range(3)], timeout=30)
c.close()
total = sum(tp.offset for tp in committed)
assert total == 300, f"group.protocol=consumer: committed offsets sum to {total}"
print(f"group.protocol=consumer: {left} messages read once and committed")
