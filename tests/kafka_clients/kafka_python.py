"""kafka-python 3 with its defaults (idempotent producer): produce with keys
and headers, then a consumer group that commits and a second member that
resumes from the committed offsets. The admin's describe_producers
(DescribeProducers, key 61) reports that producer on every partition: its id
and epoch, last sequence (records in the partition - 1) and last timestamp;
a partition that does not exist and one asked of a broker that does not lead
it (with several brokers) get their errors."""
import sys
import time
import uuid
from collections import Counter

import kafka
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import NotLeaderForPartitionError, UnknownTopicOrPartitionError

addr = sys.argv[1]
run = uuid.uuid4().hex[:8]
topic = f"kpy-{run}"
group = f"kpy-group-{run}"
print("kafka-python", kafka.__version__)

admin = KafkaAdminClient(bootstrap_servers=addr, client_id="kpy-admin")
admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
admin.close()

producer = KafkaProducer(bootstrap_servers=addr, client_id="kpy-producer", compression_type="gzip")
print("idempotence:", producer.config.get("enable_idempotence"))
sent_from_ms = int(time.time() * 1000)
futures = [
    producer.send(topic, key=f"k{i}".encode(), value=f"v{i}".encode(), headers=[("h", b"x")])
    for i in range(300)
]
offsets = [f.get(timeout=60) for f in futures]
producer.flush()
sent_until_ms = int(time.time() * 1000)
pid_epoch = producer._transaction_manager.producer_id_and_epoch
pid, epoch = pid_epoch.producer_id, pid_epoch.epoch
producer.close()
print(f"producer id {pid}, epoch {epoch}")
assert len({(m.partition, m.offset) for m in offsets}) == 300, "distinct offsets"

def consume(n, timeout_s=60):
    c = KafkaConsumer(
        topic,
        bootstrap_servers=addr,
        client_id="kpy-consumer",
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=10000,
        heartbeat_interval_ms=1000,
    )
    got = []
    deadline = time.time() + timeout_s
    while len(got) < n and time.time() < deadline:
        for _tp, msgs in c.poll(timeout_ms=500, max_records=n - len(got)).items():
            got.extend(msgs)
    c.commit()
    c.close()
    return got

first = consume(200)
assert len(first) == 200, f"first member read {len(first)}"
assert all(m.headers == [("h", b"x")] for m in first)
assert all(m.value == b"v" + m.key[1:] for m in first)
second = consume(100)
values = {m.value for m in first} | {m.value for m in second}
assert len(second) == 100, f"second member read {len(second)}"
assert len(values) == 300, f"distinct values {len(values)}: committed offsets were not honoured"
admin = KafkaAdminClient(bootstrap_servers=addr, client_id="kpy-admin")
listed = admin.list_groups()
print("list_groups:", listed)
assert group in str(listed), f"{group} not listed"
committed = admin.list_group_offsets({group: None})
print("list_group_offsets:", committed)
assert sum(o.offset for o in committed[group].values()) == 300, committed
described = admin.describe_groups([group])
print("describe_groups:", described)
assert described[group]["group_state"] == "Empty", described

# DescribeProducers: the idempotent producer above, per partition it wrote.
per_partition = Counter(m.partition for m in offsets)
tps = [TopicPartition(topic, p) for p in range(3)]
states = admin.describe_producers(tps)
print("describe_producers:", states)
for tp in tps:
    active = states[tp].active_producers
    assert len(active) == 1, (tp, active)
    s = active[0]
    assert (s.producer_id, s.producer_epoch) == (pid, epoch), (tp, s, pid, epoch)
    assert s.last_sequence == per_partition[tp.partition] - 1, (tp, s, per_partition)
    assert sent_from_ms <= s.last_timestamp <= sent_until_ms, (tp, s, sent_from_ms, sent_until_ms)
    assert (s.coordinator_epoch, s.current_transaction_start_offset) == (-1, -1), (tp, s)
leaders = {
    p["partition_index"]: p["leader_id"]
    for t in admin.describe_topics([topic])
    for p in t["partitions"]
}
try:
    admin.describe_producers([TopicPartition(topic, 3)], broker_id=leaders[0])
    raise AssertionError("describe_producers of partition 3 of 3 did not fail")
except UnknownTopicOrPartitionError:
    pass
brokers = [b["broker_id"] for b in admin.describe_cluster()["brokers"]]
others = [b for b in brokers if b != leaders[0]]
if others:
    try:
        admin.describe_producers([TopicPartition(topic, 0)], broker_id=others[0])
        raise AssertionError(f"broker {others[0]}, not the leader {leaders[0]}, described partition 0")
    except NotLeaderForPartitionError:
        pass
print(f"describe_producers: producer {pid} epoch {epoch} with last sequences {dict(per_partition)} - 1; "
      f"UNKNOWN_TOPIC_OR_PARTITION for partition 3; NOT_LEADER_OR_FOLLOWER from a non-leader: "
      f"{'checked' if others else 'one broker, not checked'}")
admin.close()
print("produced 300, consumed 200 + 100 with a commit in between; admin lists, describes and reads the group")
