"""kafka-python 3's admin moves replicas (KIP-455) through any broker.

Against 3 brokers (run.sh --cluster): a topic with 2 partitions and 2
replicas each; alter_partition_reassignments moves every partition onto
the two brokers that did not all hold it (each partition swaps one
replica for the broker outside its set), list_partition_reassignments
shows the move until it is done, describe_topics then reports the new
replica sets, and every message produced before, during and after is
consumed once. Cancelling when nothing moves is NO_REASSIGNMENT_IN_PROGRESS;
an unknown broker id is refused.
Against one broker: the request is refused with an error the client
reports (one broker holds one replica of everything)."""
import os
import sys
import time
import uuid

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
import kafka.errors as Errors

addr = sys.argv[1]
brokers = int(os.environ.get("EXPECT_BROKERS", "1"))
run = uuid.uuid4().hex[:8]
topic = f"reassign-{run}"
admin = KafkaAdminClient(bootstrap_servers=addr, client_id="reassign-admin")

if brokers < 3:
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    res = admin.alter_partition_reassignments({TopicPartition(topic, 0): [1, 2]})
    err = res[TopicPartition(topic, 0)]
    assert err is Errors.InvalidReplicationAssignmentError, f"single broker: {res}"
    print("single broker: refused with", err.__name__)
    sys.exit(0)

admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=2)])


def replicas():
    for _ in range(100):
        d = admin.describe_topics([topic])[0]
        parts = {p["partition_index"]: sorted(p["replica_nodes"]) for p in d["partitions"]}
        if len(parts) == 2 and all(p["leader_id"] >= 0 for p in d["partitions"]):
            return parts
        time.sleep(0.2)
    raise AssertionError(f"no leaders for {topic}: {d}")


before = replicas()
print("replicas before:", before)
all_ids = {1, 2, 3}
# Each partition: keep its first replica, swap the second for the broker
# outside its set.
target = {p: sorted([r[0], (all_ids - set(r)).pop()]) for p, r in before.items()}

producer = KafkaProducer(bootstrap_servers=addr, client_id="reassign-producer", acks="all")
sent = 0


def produce(n):
    global sent
    fs = [producer.send(topic, value=str(sent + i).encode()) for i in range(n)]
    for f in fs:
        f.get(timeout=60)
    sent += n


produce(200)
res = admin.alter_partition_reassignments({TopicPartition(topic, p): r for p, r in target.items()})
assert all(e is None for e in res.values()), f"alter: {res}"
print("reassigning to:", target)
# Moves run in the background: listed until done, while producing.
deadline = time.time() + 60
seen_listed = False
while True:
    produce(20)
    ongoing = admin.list_partition_reassignments({topic: [0, 1]})
    if ongoing:
        seen_listed = True
        for tp, r in ongoing.items():
            assert set(r["adding_replicas"]) <= set(target[tp.partition]), r
    else:
        break
    assert time.time() < deadline, f"still moving after 60 s: {ongoing}"
    time.sleep(0.1)
print("listed while moving:", seen_listed)
after = replicas()
print("replicas after:", after)
assert after == target, f"{after} != {target}"
produce(200)
producer.close()

res = admin.alter_partition_reassignments({TopicPartition(topic, 0): None})
assert res[TopicPartition(topic, 0)] is Errors.NoReassignmentInProgressError, res
res = admin.alter_partition_reassignments({TopicPartition(topic, 0): [1, 99]})
assert res[TopicPartition(topic, 0)] is not None, res
print("cancel with nothing moving and an unknown broker: refused")
admin.close()

consumer = KafkaConsumer(
    topic,
    bootstrap_servers=addr,
    client_id="reassign-consumer",
    auto_offset_reset="earliest",
    enable_auto_commit=False,
)
got = []
deadline = time.time() + 60
while len(got) < sent and time.time() < deadline:
    for _tp, msgs in consumer.poll(timeout_ms=500).items():
        got.extend(int(m.value) for m in msgs)
consumer.close()
assert sorted(got) == list(range(sent)), f"read {len(got)} of {sent} ({len(set(got))} distinct)"
print(f"{sent} produced before, during and after the move; all read once")
