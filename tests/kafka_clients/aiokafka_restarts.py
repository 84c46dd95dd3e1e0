"""An aiokafka consumer group across broker restarts (issue 16): two members
of one group consume a topic that a producer keeps writing, each committing
after every message, while the broker is restarted again and again,
alternately with SIGTERM and kill -9. Passes when every offset of every
partition was delivered exactly once over the whole run: no duplicates (a
restart must not force a rebalance that re-reads from older commits) and
nothing missed.

    aiokafka_restarts.py SHARDLOG_BINARY

Starts its own broker (2 shards, a fixed Kafka port, a temporary data
directory). RESTARTS (default 3; the issue's target is 10) sets how many
restarts; RESTART_EVERY_S (default 3) the time between them. Prints one
line per restart and a summary; exits non-zero on a duplicate or a gap.
"""
import asyncio
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter

import aiokafka
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

BIN = sys.argv[1]
# aiokafka logs every failed connection while the broker is away; the
# summary says what matters.
logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
RESTARTS = int(os.environ.get("RESTARTS", "3"))
RESTART_EVERY_S = float(os.environ.get("RESTART_EVERY_S", "3"))
PARTITIONS = 3
run = uuid.uuid4().hex[:8]
topic = f"restarts-{run}"
group = f"restarts-group-{run}"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """A `shardlog serve` process on a fixed Kafka port and data directory."""

    def __init__(self, data_dir, port, log_path):
        self.data_dir, self.port, self.log_path = data_dir, port, log_path
        self.proc = None

    def start(self):
        ready = threading.Event()
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [BIN, "serve", "--data-dir", self.data_dir, "--listen", "127.0.0.1:0",
             "--kafka-listen", f"127.0.0.1:{self.port}", "--shards", "2"],
            stdout=subprocess.PIPE, stderr=log,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "info")},
        )

        def watch(out):
            for line in out:
                if line.startswith(b"shardlog ready:"):
                    ready.set()

        threading.Thread(target=watch, args=(self.proc.stdout,), daemon=True).start()
        if not ready.wait(60):
            raise SystemExit("the broker did not become ready; see " + self.log_path)

    def stop(self, how):
        if how == "SIGTERM":
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)
        else:
            self.proc.kill()
            self.proc.wait()


async def with_retry(what, f):
    """Run f until it succeeds or fails for good: retriable errors (the
    broker is down for a moment) are retried, the others raised."""
    while True:
        try:
            return await f()
        except KafkaError as e:
            if not getattr(e, "retriable", False):
                raise
            print(f"  {what}: {type(e).__name__}, retrying", flush=True)
            await asyncio.sleep(0.2)


async def produce(addr, stop):
    p = AIOKafkaProducer(bootstrap_servers=addr, client_id="restarts-producer",
                         enable_idempotence=True, request_timeout_ms=10000)
    await p.start()
    i = 0
    try:
        while not stop.is_set():
            try:
                await p.send_and_wait(topic, str(i).encode(), key=str(i).encode())
                i += 1
            except KafkaError as e:
                # Lost or not: the check counts offsets, not values.
                print(f"  producer: {type(e).__name__}", flush=True)
                await asyncio.sleep(0.2)
            await asyncio.sleep(0.005)
    finally:
        await p.stop()
    return i


async def consume(addr, name, seen, errors, stop):
    c = AIOKafkaConsumer(topic, bootstrap_servers=addr, group_id=group, client_id=name,
                         auto_offset_reset="earliest", enable_auto_commit=False)
    await c.start()
    try:
        while not stop.is_set():
            batch = await c.getmany(timeout_ms=200, max_records=1)
            for tp, msgs in batch.items():
                for m in msgs:
                    seen[(tp.partition, m.offset)] += 1
                    # Commit after every message; a commit that fails for
                    # good (the group rebalanced) is what causes duplicates.
                    try:
                        await with_retry(f"{name} commit",
                                         lambda: c.commit({tp: m.offset + 1}))
                    except Exception as e:  # CommitFailedError and the like
                        errors.append(f"{name}: commit of {tp.partition}@{m.offset}: {e!r}")
    finally:
        await c.stop()


async def main():
    print("aiokafka", aiokafka.__version__, "restarts", RESTARTS)
    tmp = tempfile.mkdtemp(prefix="shardlog-aiokafka-restarts-")
    port = free_port()
    addr = f"127.0.0.1:{port}"
    broker = Broker(os.path.join(tmp, "data"), port, os.path.join(tmp, "broker.log"))
    broker.start()
    ok = False
    try:
        admin = AIOKafkaAdminClient(bootstrap_servers=addr, client_id="restarts-admin")
        await admin.start()
        await admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1,
                                            topic_configs={"retention.ms": "-1"})])
        await admin.close()

        seen, errors = Counter(), []
        stop_producing, stop_consuming = asyncio.Event(), asyncio.Event()
        producer = asyncio.create_task(produce(addr, stop_producing))
        consumers = [asyncio.create_task(consume(addr, f"restarts-c{i}", seen, errors, stop_consuming))
                     for i in range(2)]
        async def deliveries_beyond(n, what):
            deadline = time.monotonic() + 60
            while sum(seen.values()) <= n:
                if time.monotonic() > deadline:
                    raise SystemExit(f"no deliveries {what} within 60 s")
                await asyncio.sleep(0.1)

        # The group forms (3 s initial delay) and consumes before the first restart.
        await deliveries_beyond(0, "before the first restart")
        await asyncio.sleep(RESTART_EVERY_S)
        for n in range(RESTARTS):
            how = "SIGTERM" if n % 2 == 0 else "kill -9"
            t0 = time.monotonic()
            await asyncio.get_running_loop().run_in_executor(None, broker.stop, how)
            await asyncio.get_running_loop().run_in_executor(None, broker.start)
            print(f"restart {n + 1}/{RESTARTS} ({how}): broker back in "
                  f"{time.monotonic() - t0:.1f} s; {sum(seen.values())} deliveries so far", flush=True)
            # Each restart lands on a group that is consuming and committing.
            await asyncio.sleep(RESTART_EVERY_S)
            await deliveries_beyond(sum(seen.values()), f"after restart {n + 1}")
        stop_producing.set()
        produced = await producer

        # Drain: wait until the consumers have caught up with every partition.
        probe = AIOKafkaConsumer(bootstrap_servers=addr, client_id="restarts-probe")
        await probe.start()
        from aiokafka import TopicPartition
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        ends = await with_retry("end offsets", lambda: probe.end_offsets(tps))
        await probe.stop()
        want = {(tp.partition, o) for tp in tps for o in range(ends[tp])}
        deadline = time.monotonic() + 60
        while not want.issubset(seen) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        stop_consuming.set()
        for c in consumers:
            await c
        dups = {k: v for k, v in seen.items() if v > 1}
        missing = want - set(seen)
        log = open(broker.log_path, errors="replace").read()
        log = re.sub(r"\x1b\[[0-9;]*m", "", log)
        rebalances = [l for l in log.splitlines() if "group rebalanced" in l and group in l]
        restored = [l for l in log.splitlines() if "group restored" in l and group in l]
        print(f"produced {produced} (acknowledged), {len(want)} offsets in the log, "
              f"{sum(seen.values())} deliveries, {len(dups)} duplicated offsets, "
              f"{len(missing)} missed; generations formed: {len(rebalances)}; "
              f"group restored {len(restored)} times; commit failures: {len(errors)}")
        for e in errors[:10]:
            print("  " + e)
        if dups:
            print("duplicated (partition, offset): count:", sorted(dups.items())[:20])
        if missing:
            print("missed (partition, offset):", sorted(missing)[:20])
        ok = not dups and not missing and not errors
    finally:
        if broker.proc and broker.proc.poll() is None:
            broker.stop("SIGTERM")
        if ok:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print("broker log and data kept in", tmp)
    sys.exit(0 if ok else 1)


asyncio.run(main())
