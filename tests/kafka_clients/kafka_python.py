"""kafka-python 3 with its defaults (idempotent producer): produce with keys
and headers, then a consumer group that commits and a second member that
resumes from the committed offsets."""
import sys
import time
import uuid

import kafka
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

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
futures = [
    producer.send(topic, key=f"k{i}".encode(), value=f"v{i}".encode(), headers=[("h", b"x")])
    for i in range(300)
]
offsets = [f.get(timeout=60) for f in futures]
producer.flush()
producer.close()
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
admin.close()
print("produced 300, consumed 200 + 100 with a commit in between; admin lists, describes and reads the group")
