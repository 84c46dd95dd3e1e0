"""Kafka's answers in the details (issue 17), through confluent-kafka's
AdminClient and producer (librdkafka) and, for DeleteConsumerGroupOffsets,
which confluent-kafka does not expose, kafka-python's admin client:

- CreateTopics with the topic configs admin tools send (cleanup.policy=compact
  among them) is accepted and DescribeConfigs shows them; an unknown name is
  INVALID_CONFIG;
- a record without a key produced to a compacted topic is INVALID_RECORD;
- DescribeTopics / DescribeCluster with include_authorized_operations list
  every operation (no authorizer);
- ListOffsets by timestamp and max_timestamp on records with explicit
  timestamps answer the matching record's offset and timestamp;
- AlterConsumerGroupOffsets naming a topic that does not exist is
  UNKNOWN_TOPIC_OR_PARTITION for that partition;
- DescribeAcls/CreateAcls/DeleteAcls answer SECURITY_DISABLED (no authorizer);
- DescribeUserScramCredentials: no users;
- DeleteConsumerGroupOffsets removes a committed offset durably enough to be
  read back as gone; an unknown group is GROUP_ID_NOT_FOUND;
- a record over the topic's max.message.bytes is MESSAGE_TOO_LARGE;
- CreateTopics: an existing topic is TOPIC_ALREADY_EXISTS, a replication
  factor above the broker count INVALID_REPLICATION_FACTOR, an invalid name
  INVALID_TOPIC_EXCEPTION, 0 partitions (kafka-python) INVALID_PARTITIONS."""
import sys
import time
import uuid

import confluent_kafka
from confluent_kafka import (
    Consumer, ConsumerGroupTopicPartitions, KafkaError, KafkaException, Producer,
    TopicCollection, TopicPartition,
)
from confluent_kafka.admin import (
    AclBinding, AclBindingFilter, AclOperation, AclPermissionType, AdminClient,
    ConfigResource, NewTopic, OffsetSpec, ResourcePatternType, ResourceType,
)

addr = sys.argv[1]
run = uuid.uuid4().hex[:8]
admin = AdminClient({"bootstrap.servers": addr, "client.id": "semantics-admin"})
checks = 0


def check(cond, what):
    global checks
    if not cond:
        raise AssertionError(what)
    checks += 1


def code_of(exc):
    err = exc.args[0]
    return err.code() if isinstance(err, KafkaError) else None


# --- CreateTopics with Kafka topic configs --------------------------------
compacted = f"sem-compacted-{run}"
configs = {
    "cleanup.policy": "compact",
    "compression.type": "lz4",
    "delete.retention.ms": "900",
    "min.compaction.lag.ms": "0",
    "message.timestamp.type": "CreateTime",
    "min.insync.replicas": "1",
    "segment.jitter.ms": "0",
    "retention.ms": "86400000",
}
for f in admin.create_topics([NewTopic(compacted, 1, 1, config=configs)]).values():
    f.result(30)
res = ConfigResource(ResourceType.TOPIC, compacted)
got = admin.describe_configs([res])[res].result(30)
check(got["cleanup.policy"].value == "compact", f"cleanup.policy: {got['cleanup.policy'].value}")
check(got["compression.type"].value == "lz4", "compression.type stored")
check(got["delete.retention.ms"].value == "900", "delete.retention.ms stored")
check(got["retention.ms"].value == "86400000", "retention.ms applied")
bad = f"sem-bad-{run}"
try:
    admin.create_topics([NewTopic(bad, 1, 1, config={"dummy.doesntexist": "x"})])[bad].result(30)
    check(False, "an unknown topic config name must be refused")
except KafkaException as e:
    check(code_of(e) == KafkaError.INVALID_CONFIG, f"unknown config: {e}")

# --- Keyless records on a compacted topic ---------------------------------
results = []
p = Producer({"bootstrap.servers": addr, "client.id": "semantics-producer", "linger.ms": 5,
              "enable.idempotence": False, "retries": 0})
p.produce(compacted, key=b"k", value=b"keyed", on_delivery=lambda e, m: results.append(("keyed", e)))
p.flush(30)
p.produce(compacted, value=b"no key", on_delivery=lambda e, m: results.append(("keyless", e)))
p.flush(30)
outcome = dict(results)
check(outcome["keyed"] is None, f"keyed record: {outcome['keyed']}")
check(outcome["keyless"] is not None and outcome["keyless"].code() == KafkaError.INVALID_RECORD,
      f"keyless record on a compacted topic: {outcome['keyless']}")

# --- A record over the topic's max.message.bytes --------------------------
small = f"sem-small-{run}"
for f in admin.create_topics([NewTopic(small, 1, 1, config={"max.message.bytes": "2000"})]).values():
    f.result(30)
results = []
p.produce(small, key=b"k", value=b"x" * 4000, on_delivery=lambda e, m: results.append(("big", e)))
p.flush(30)
p.produce(small, key=b"k", value=b"x" * 100, on_delivery=lambda e, m: results.append(("fits", e)))
p.flush(30)
outcome = dict(results)
check(outcome["big"] is not None and outcome["big"].code() == KafkaError.MSG_SIZE_TOO_LARGE,
      f"a 4000-byte record over max.message.bytes=2000: {outcome['big']}")
check(outcome["fits"] is None, f"a record that fits: {outcome['fits']}")

# --- CreateTopics refusals ------------------------------------------------
def create_error(new_topic):
    try:
        admin.create_topics([new_topic])[new_topic.topic].result(30)
        return None
    except KafkaException as e:
        return code_of(e)


brokers = len(admin.list_topics(timeout=30).brokers)
check(create_error(NewTopic(compacted, 1, 1)) == KafkaError.TOPIC_ALREADY_EXISTS, "an existing topic")
check(create_error(NewTopic(f"sem-rf-{run}", 1, brokers + 1)) == KafkaError.INVALID_REPLICATION_FACTOR,
      f"replication factor {brokers + 1} with {brokers} broker(s)")
check(create_error(NewTopic(f"sem bad name {run}", 1, 1)) == KafkaError.TOPIC_EXCEPTION,
      "an invalid topic name")

# --- Authorized operations ------------------------------------------------
plain = f"sem-plain-{run}"
for f in admin.create_topics([NewTopic(plain, 2, 1)]).values():
    f.result(30)
desc = admin.describe_topics(TopicCollection([plain]), include_authorized_operations=True)[plain].result(30)
ops = set(desc.authorized_operations or [])
want = {AclOperation.READ, AclOperation.WRITE, AclOperation.CREATE, AclOperation.DELETE,
        AclOperation.ALTER, AclOperation.DESCRIBE, AclOperation.DESCRIBE_CONFIGS,
        AclOperation.ALTER_CONFIGS}
check(ops == want, f"topic authorized operations: {ops}")
cluster = admin.describe_cluster(include_authorized_operations=True).result(30)
cops = set(cluster.authorized_operations or [])
check({AclOperation.DESCRIBE, AclOperation.ALTER, AclOperation.CREATE,
       AclOperation.CLUSTER_ACTION, AclOperation.IDEMPOTENT_WRITE} <= cops,
      f"cluster authorized operations: {cops}")

# --- ListOffsets by timestamp and max_timestamp ---------------------------
timed = f"sem-timed-{run}"
for f in admin.create_topics([NewTopic(timed, 1, 1)]).values():
    f.result(30)
base = int(time.time() * 1000) - 10_000
stamps = [base + 100, base + 400, base + 250]
errs = []
for i, ts in enumerate(stamps):
    p.produce(timed, value=f"v{i}", partition=0, timestamp=ts, on_delivery=lambda e, m: e and errs.append(e))
p.flush(30)
check(not errs, f"timed produce: {errs}")
tp = TopicPartition(timed, 0)
def offset_for(spec):
    r = admin.list_offsets({tp: spec}).get(tp).result(30)
    return r.offset, r.timestamp
check(offset_for(OffsetSpec.earliest())[0] == 0, "earliest")
check(offset_for(OffsetSpec.latest())[0] == 3, "latest")
check(offset_for(OffsetSpec.max_timestamp()) == (1, base + 400),
      f"max_timestamp: {offset_for(OffsetSpec.max_timestamp())}")
check(offset_for(OffsetSpec.for_timestamp(base + 300)) == (1, base + 400),
      f"for_timestamp(+300): {offset_for(OffsetSpec.for_timestamp(base + 300))}")
check(offset_for(OffsetSpec.for_timestamp(base + 200)) == (1, base + 400), "for_timestamp(+200)")
check(offset_for(OffsetSpec.for_timestamp(base + 100))[0] == 0, "for_timestamp(+100)")
check(offset_for(OffsetSpec.for_timestamp(base + 500))[0] == -1, "for_timestamp past every record")

# --- AlterConsumerGroupOffsets --------------------------------------------
group = f"sem-group-{run}"
req = ConsumerGroupTopicPartitions(group, [TopicPartition(plain, 0, 7), TopicPartition(plain, 1, 3)])
admin.alter_consumer_group_offsets([req])[group].result(30)
listed = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result(30)
check(sorted((t.partition, t.offset) for t in listed.topic_partitions) == [(0, 7), (1, 3)],
      f"altered offsets read back: {listed.topic_partitions}")
for tps in ([TopicPartition(f"sem-missing-{run}", 0, 5)], [TopicPartition(plain, 9, 5)]):
    bad_req = ConsumerGroupTopicPartitions(group, tps)
    try:
        out = admin.alter_consumer_group_offsets([bad_req])[group].result(30)
        errs = [t.error for t in out.topic_partitions if t.error is not None]
        check(errs and errs[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART, f"alter {tps}: {out.topic_partitions}")
    except KafkaException as e:
        check(code_of(e) == KafkaError.UNKNOWN_TOPIC_OR_PART, f"alter {tps}: {e}")

# --- ACLs: no authorizer --------------------------------------------------
flt = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                       AclOperation.ANY, AclPermissionType.ANY)
# librdkafka reads DescribeAcls' top-level error code but does not report
# it: from Kafka without an authorizer, as from us, it gets an empty list
# (before DescribeAcls was served it failed: "feature not supported").
# kafka-python reports the code: see below.
check(admin.describe_acls(flt).result(30) == [], "describe_acls: no bindings")
binding = AclBinding(ResourceType.TOPIC, plain, ResourcePatternType.LITERAL, "User:alice", "*",
                     AclOperation.READ, AclPermissionType.ALLOW)
for f in admin.create_acls([binding]).values():
    try:
        f.result(30)
        check(False, "create_acls must fail without an authorizer")
    except KafkaException as e:
        check(code_of(e) == KafkaError.SECURITY_DISABLED, f"create_acls: {e}")
for f in admin.delete_acls([flt]).values():
    try:
        f.result(30)
        check(False, "delete_acls must fail without an authorizer")
    except KafkaException as e:
        check(code_of(e) == KafkaError.SECURITY_DISABLED, f"delete_acls: {e}")

# --- SCRAM credentials: none ----------------------------------------------
check(admin.describe_user_scram_credentials().result(30) == {}, "no SCRAM users")
for user, f in admin.describe_user_scram_credentials(["alice"]).items():
    try:
        f.result(30)
        check(False, "alice has no credentials")
    except KafkaException as e:
        check(code_of(e) == KafkaError.RESOURCE_NOT_FOUND, f"describe alice: {e}")

# --- DeleteConsumerGroupOffsets (kafka-python) ----------------------------
from kafka import KafkaAdminClient
from kafka.structs import TopicPartition as KTP

kadmin = KafkaAdminClient(bootstrap_servers=addr, client_id="semantics-kafka-python")
from kafka.admin import ACLFilter, ACLOperation, ACLPermissionType, ResourcePatternFilter
from kafka.admin import ResourceType as KResourceType, ACLResourcePatternType
try:
    kadmin.describe_acls(ACLFilter(
        principal=None, host="*", operation=ACLOperation.ANY,
        permission_type=ACLPermissionType.ANY,
        resource_pattern=ResourcePatternFilter(KResourceType.ANY, None, ACLResourcePatternType.ANY)))
    check(False, "kafka-python describe_acls must report SECURITY_DISABLED")
except Exception as e:
    check("SecurityDisabled" in type(e).__name__, f"kafka-python describe_acls: {type(e).__name__} {e}")
out = kadmin.delete_group_offsets(group, [KTP(plain, 0)])
check(all(err is None or getattr(err, "errno", 0) == 0 for err in out.values()), f"delete_group_offsets: {out}")
listed = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result(30)
left = sorted((t.partition, t.offset) for t in listed.topic_partitions if t.offset >= 0)
check(left == [(1, 3)], f"offsets after deleting partition 0: {left}")
try:
    out = kadmin.delete_group_offsets(f"sem-nobody-{run}", [KTP(plain, 0)])
    check(False, f"an unknown group must be refused: {out}")
except Exception as e:  # kafka-python raises GroupIdNotFoundError
    check("GroupIdNotFound" in type(e).__name__ or "GROUP_ID_NOT_FOUND" in str(e).upper()
          or "69" in str(e), f"unknown group: {type(e).__name__} {e}")
# librdkafka refuses a partition count of 0 itself; kafka-python sends it.
from kafka.admin import NewTopic as KNewTopic
try:
    kadmin.create_topics([KNewTopic(f"sem-zero-{run}", 0, 1)])
    check(False, "0 partitions must be refused")
except Exception as e:  # kafka-python raises InvalidPartitionsError
    check("InvalidPartitions" in type(e).__name__, f"0 partitions: {type(e).__name__} {e}")
kadmin.close()

print(f"semantics: {checks} checks passed")
