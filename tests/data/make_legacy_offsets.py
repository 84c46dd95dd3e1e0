"""Writes the committed offsets of tests/data/legacy-offsets.tar.gz against
a running broker of the old encoding (shardlog at 4414c78): group
legacy-<i> (i = 1..4) commits offset 10*i + p on partition p of legacy-t;
legacy-gone commits and is then deleted (DeleteGroups); legacy-3's offset
of partition 2 is deleted (OffsetDelete)."""
import sys
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.structs import OffsetAndMetadata

addr = sys.argv[1]
admin = KafkaAdminClient(bootstrap_servers=addr)
admin.create_topics([NewTopic("legacy-t", 3, 1)])
p = KafkaProducer(bootstrap_servers=addr)
for i in range(60):
    p.send("legacy-t", b"m%d" % i, partition=i % 3)
p.flush()
for g in ["legacy-1", "legacy-2", "legacy-3", "legacy-4", "legacy-gone"]:
    i = int(g[-1]) if g[-1].isdigit() else 7
    c = KafkaConsumer(bootstrap_servers=addr, group_id=g, enable_auto_commit=False)
    tps = [TopicPartition("legacy-t", q) for q in range(3)]
    c.assign(tps)
    # Commit twice: replay must keep the later one.
    c.commit({tp: OffsetAndMetadata(1, "", -1) for tp in tps})
    c.commit({tp: OffsetAndMetadata(10 * i + tp.partition, "", -1) for tp in tps})
    print(g, c.committed(tps[0]), c.committed(tps[2]))
    c.close()
print(admin.delete_groups(["legacy-gone"]))
# OffsetDelete: legacy-3 loses its offset of partition 2.
print(admin.delete_group_offsets("legacy-3", [TopicPartition("legacy-t", 2)]))
