"""aiokafka with its defaults, plus an idempotent producer: produce with
keys, headers and timestamps; a consumer group that commits after every
message, and a second member that resumes from the committed offsets;
offsets_for_times; per-key order."""
import asyncio
import sys
import time
import uuid

import aiokafka
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

addr = sys.argv[1]
run = uuid.uuid4().hex[:8]
topic = f"aio-{run}"
group = f"aio-group-{run}"
N = 300
T0 = 1_700_000_000_000  # record timestamps: T0 + i


async def main():
    print("aiokafka", aiokafka.__version__)
    admin = AIOKafkaAdminClient(bootstrap_servers=addr, client_id="aio-admin")
    await admin.start()
    # The records carry 2023 timestamps (T0), so time retention, which the
    # broker checks every few seconds, would delete them as Kafka does: this
    # topic keeps everything, or the second member could find nothing left.
    await admin.create_topics(
        [NewTopic(topic, num_partitions=3, replication_factor=1, topic_configs={"retention.ms": "-1"})]
    )
    await admin.close()

    producer = AIOKafkaProducer(
        bootstrap_servers=addr,
        client_id="aio-producer",
        enable_idempotence=True,
        compression_type="gzip",
    )
    await producer.start()
    sent = []
    for i in range(N):
        md = await producer.send_and_wait(
            topic,
            key=f"k{i % 10}".encode(),
            value=f"v{i}".encode(),
            headers=[("h", b"x")],
            timestamp_ms=T0 + i,
        )
        sent.append(md)
    await producer.stop()
    assert len({(m.partition, m.offset) for m in sent}) == N, "distinct offsets"

    async def consume(n, timeout_s=60):
        c = AIOKafkaConsumer(
            topic,
            bootstrap_servers=addr,
            client_id="aio-consumer",
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await c.start()
        got = []
        deadline = time.time() + timeout_s
        try:
            while len(got) < n and time.time() < deadline:
                batches = await c.getmany(timeout_ms=500, max_records=n - len(got))
                for tp, msgs in batches.items():
                    for m in msgs:
                        got.append(m)
                        # Commit after every message, as a careful consumer does.
                        await c.commit({tp: m.offset + 1})
        finally:
            await c.stop()
        return got

    first = await consume(200)
    assert len(first) == 200, f"first member read {len(first)}"
    assert all(m.headers == (("h", b"x"),) or list(m.headers) == [("h", b"x")] for m in first), "headers"
    assert all(m.timestamp == T0 + int(m.value[1:]) for m in first), "timestamps kept"
    second = await consume(100)
    assert len(second) == 100, f"second member read {len(second)}"
    values = {m.value for m in first} | {m.value for m in second}
    assert len(values) == N, f"distinct values {len(values)}: committed offsets were not honoured"

    # Per-key order: each key's values come back in the order sent.
    by_key = {}
    for m in first + second:
        by_key.setdefault(m.key, []).append(int(m.value[1:]))
    for k, vs in by_key.items():
        assert vs == sorted(vs), f"key {k} out of order: {vs[:10]}"

    # offsets_for_times: the first record at or after T0 + 150, per partition.
    c = AIOKafkaConsumer(bootstrap_servers=addr, client_id="aio-times")
    await c.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(3)]
        found = await c.offsets_for_times({tp: T0 + 150 for tp in tps})
        for tp, ot in found.items():
            want = [m for m in sent if m.partition == tp.partition and m.timestamp >= T0 + 150]
            if not want:
                assert ot is None, f"{tp}: {ot}, expected none"
                continue
            first_at = min(want, key=lambda m: m.offset)
            assert ot is not None and ot.offset == first_at.offset, f"{tp}: {ot}, expected offset {first_at.offset}"
            assert ot.timestamp == first_at.timestamp, f"{tp}: {ot}, expected timestamp {first_at.timestamp}"
    finally:
        await c.stop()
    print(f"aiokafka: {N} produced, 200 + 100 consumed with a commit after each, per-key order kept, offsets_for_times ok")


asyncio.run(main())
