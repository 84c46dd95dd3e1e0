"""Burrow (LinkedIn's consumer-lag monitor, Debian's 1.2.1, Sarama inside)
against the broker: it reads the topics' end offsets (ListOffsets) and the
groups' commits from `__consumer_offsets` (Fetch, records decoded in Kafka's
binary key/value format), and its HTTP API must report them:

1. a group that committed before Burrow started (Burrow reads
   `__consumer_offsets` from the oldest offset): per partition, the
   committed offset and the lag (end offset - commit);
2. after more records are produced, the lag grows by exactly that many
   (Burrow recomputes it against the end offsets it polls);
3. a commit made while Burrow runs (it tails `__consumer_offsets`) brings
   the lag down to what is left.

    burrow.py KAFKA_ADDR

Starts its own ZooKeeper (Burrow 1.2 needs one; Debian's `zookeeper`
package, standalone, on a free 127.0.0.1 port, its admin server off) and
Burrow (on a free 127.0.0.1 HTTP port), both in a temporary directory, and
stops them at the end. Burrow's client profile leaves `kafka-version` at
Burrow's default ("0.8": Metadata v0, ListOffsets v0, Fetch v0, message sets
of magic 0); only its polling intervals are shortened so the run takes
seconds. Producer and committer: confluent-kafka. BURROW_BIN and
ZOOKEEPER_CLASSPATH override where they are looked for;
BURROW_KAFKA_VERSION sets Burrow's `kafka-version` (e.g. 2.1.0, its newest).
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

addr = sys.argv[1]
BURROW = os.environ.get("BURROW_BIN", "/usr/bin/Burrow")
# zookeeper.jar names its dependencies in its manifest; slf4j-simple gives
# it a log (the default is none at all).
ZK_CLASSPATH = os.environ.get(
    "ZOOKEEPER_CLASSPATH", "/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar")
# Burrow's own default ("0.8") unless set: 0.10.0 to 2.1.0 also pass.
KAFKA_VERSION = os.environ.get("BURROW_KAFKA_VERSION", "")
CLUSTER = "shardlog"
run = uuid.uuid4().hex[:8]
topic = f"burrow-{run}"
group = f"burrow-group-{run}"
WAIT_S = 60


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def produce(counts):
    """Writes counts[p] records to partition p; returns nothing, asserts all acknowledged."""
    p = Producer({"bootstrap.servers": addr, "client.id": "burrow-producer", "linger.ms": 5})
    errors = []
    for part, n in enumerate(counts):
        for i in range(n):
            p.produce(topic, value=f"v{i}", partition=part,
                      on_delivery=lambda err, _m: err and errors.append(err))
    assert p.flush(60) == 0, "records left unflushed"
    assert not errors, errors


def commit(offsets, member=False):
    """Commits offsets[p] for partition p as the group: as a member that
    joined it (subscribed, partitions assigned), or else with no membership
    (generation -1, as Kafka's own tools commit)."""
    c = Consumer({"bootstrap.servers": addr, "client.id": "burrow-committer",
                  "group.id": group, "enable.auto.commit": False,
                  "auto.offset.reset": "earliest"})
    if member:
        c.subscribe([topic])
        deadline = time.time() + WAIT_S
        while len(c.assignment()) < len(offsets) and time.time() < deadline:
            m = c.poll(0.2)
            assert m is None or m.error() is None, m.error()
        assert len(c.assignment()) == len(offsets), c.assignment()
    c.commit(offsets=[TopicPartition(topic, p, o) for p, o in enumerate(offsets)],
             asynchronous=False)
    got = c.committed([TopicPartition(topic, p) for p in range(len(offsets))], timeout=30)
    c.close()
    assert [tp.offset for tp in got] == offsets, got


def wait_until(what, probe):
    """Polls probe() (None: not yet) for up to WAIT_S; returns its answer."""
    deadline = time.time() + WAIT_S
    last = None
    while time.time() < deadline:
        for name, proc in procs:
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with status {proc.returncode}")
        last = probe()
        if last is not None and last[0]:
            return last[1]
        time.sleep(0.5)
    raise AssertionError(f"Burrow never reported {what}; last answer: {last and last[1]}")


tmp = tempfile.mkdtemp(prefix="shardlog-burrow-")
procs = []
try:
    admin = AdminClient({"bootstrap.servers": addr, "client.id": "burrow-admin"})
    for f in admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)]).values():
        f.result(30)
    produce([10, 4])
    commit([3, 4])  # lag 7 on partition 0, 0 on partition 1

    zk_port, http_port = free_port(), free_port()
    with open(f"{tmp}/zoo.cfg", "w") as f:
        f.write(f"tickTime=2000\ndataDir={tmp}/zk\nclientPort={zk_port}\n"
                "clientPortAddress=127.0.0.1\nadmin.enableServer=false\n"
                "4lw.commands.whitelist=srvr\n")
    zk_log = open(f"{tmp}/zookeeper.log", "w")
    procs.append(("zookeeper", subprocess.Popen(
        ["java", "-Xmx128m", "-cp", ZK_CLASSPATH, "org.apache.zookeeper.server.ZooKeeperServerMain",
         f"{tmp}/zoo.cfg"], stdout=zk_log, stderr=subprocess.STDOUT)))

    def zk_serving():
        # "ruok" says imok before the server takes sessions; "srvr" names
        # the server's mode only once it does.
        try:
            with socket.create_connection(("127.0.0.1", zk_port), timeout=1) as s:
                s.sendall(b"srvr")
                got = s.makefile("rb").read().decode(errors="replace")
                return ("Mode: standalone" in got, got)
        except OSError as e:
            return (False, str(e))
    wait_until("(ZooKeeper) serving", zk_serving)

    with open(f"{tmp}/burrow.toml", "w") as f:
        f.write(f"""
[general]
pidfile="{tmp}/burrow.pid"

[logging]
level="info"

[zookeeper]
servers=["127.0.0.1:{zk_port}"]
root-path="/burrow"

[client-profile.shardlog]
client-id="burrow-lagchecker"
{f'kafka-version="{KAFKA_VERSION}"' if KAFKA_VERSION else ""}

[cluster.{CLUSTER}]
class-name="kafka"
servers=["{addr}"]
client-profile="shardlog"
offset-refresh=1
topic-refresh=5

[consumer.{CLUSTER}]
class-name="kafka"
cluster="{CLUSTER}"
servers=["{addr}"]
client-profile="shardlog"

[storage.default]
class-name="inmemory"
intervals=10
min-distance=1

[evaluator.default]
class-name="caching"
expire-cache=1

[httpserver.default]
address="127.0.0.1:{http_port}"
""")
    burrow_log = open(f"{tmp}/burrow.log", "w")
    procs.append(("burrow", subprocess.Popen(
        [BURROW, "-config-dir", tmp], stdout=burrow_log, stderr=subprocess.STDOUT, cwd=tmp)))

    def get(path):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}{path}", timeout=5) as r:
                return json.load(r)
        except urllib.error.HTTPError as e:
            return json.loads(e.read() or b"{}")
        except (OSError, ValueError) as e:
            return {"error": True, "message": str(e)}

    def topic_offsets(want):
        def probe():
            a = get(f"/v3/kafka/{CLUSTER}/topic/{topic}")
            return (a.get("offsets") == want, a)
        return probe

    def lags(want):
        """The group's current lag per partition, once it equals want."""
        def probe():
            a = get(f"/v3/kafka/{CLUSTER}/consumer/{group}/lag")
            parts = (a.get("status") or {}).get("partitions") or []
            got = {p["partition"]: (p["end"] or {}).get("offset") for p in parts if p["topic"] == topic}
            lag = {p["partition"]: p["current_lag"] for p in parts if p["topic"] == topic}
            return (lag == want, {"lag": lag, "committed": got, "answer": a})
        return probe

    # 1. End offsets, and the commit made before Burrow started.
    wait_until("the topic's end offsets [10, 4]", topic_offsets([10, 4]))
    print("topic offsets:", get(f"/v3/kafka/{CLUSTER}/topic/{topic}")["offsets"])
    seen = wait_until("lag {0: 7, 1: 0}", lags({0: 7, 1: 0}))
    assert seen["committed"] == {0: 3, 1: 4}, seen
    status = seen["answer"]["status"]
    assert status["totallag"] == 7, status
    assert status["maxlag"]["partition"] == 0 and status["maxlag"]["current_lag"] == 7, status
    print("lag after the first commit:", seen["lag"], "committed:", seen["committed"])
    consumers = get(f"/v3/kafka/{CLUSTER}/consumer")
    assert group in consumers.get("consumers", []), consumers

    # 2. More records: the lag follows the end offsets.
    produce([5, 6])
    wait_until("the topic's end offsets [15, 10]", topic_offsets([15, 10]))
    seen = wait_until("lag {0: 12, 1: 6}", lags({0: 12, 1: 6}))
    print("lag after 5 + 6 more records:", seen["lag"])

    # 3. A commit while Burrow runs (it tails __consumer_offsets), by a
    # member of the group this time.
    commit([14, 8], member=True)
    seen = wait_until("lag {0: 1, 1: 2}", lags({0: 1, 1: 2}))
    assert seen["committed"] == {0: 14, 1: 8}, seen
    print("lag after a live commit:", seen["lag"], "committed:", seen["committed"])
    # Every offset commit Burrow read decoded, and nothing went wrong.
    # Burrow 1.2 decodes group metadata values v0 and v1 only: the member's
    # join wrote v3 (as Kafka 2.3+ does), which it skips with a warning,
    # as it does against Kafka.
    with open(f"{tmp}/burrow.log", errors="replace") as f:
        lines = f.readlines()
    # Nor does it know the record types 3-8 of KIP-848 consumer-protocol
    # groups (Kafka 3.7+; confluent.py's group.protocol=consumer writes them
    # when run.sh runs it first): it skips their keys ("key version") with a
    # warning, as it would against Kafka 4.
    # ("unknown consumer" warnings are this script asking too early.)
    def skipped_as_against_kafka(line):
        if '"failed to decode"' not in line:
            return False
        if '"message_type":"metadata"' in line:
            return True
        entry = json.loads(line)
        return entry.get("reason") == "key version" and entry.get("version") in range(3, 9)
    complaints = [l for l in lines if '"level":"error"' in l
                  or ('"failed to decode"' in l and not skipped_as_against_kafka(l))]
    assert not complaints, "Burrow complained:\n" + "".join(complaints[:10])
    skipped = [l for l in lines if '"failed to decode"' in l]
    print(f"group metadata records Burrow skipped: {len(skipped)}",
          json.loads(skipped[0]).get("version") if skipped else "")
    print("burrow: ok")
except BaseException:
    # The logs first and the failure last, on one stream: run.sh shows only
    # the tail of this script's output, and a traceback on stderr would land
    # above a block-buffered stdout's logs.
    for name, keep in (("zookeeper", 8), ("burrow", 30)):
        path = f"{tmp}/{name}.log"
        if os.path.exists(path):
            print(f"--- {name} log (tail)")
            with open(path, errors="replace") as f:
                print("".join(f.readlines()[-keep:]))
    print("--- burrow.py failed:")
    traceback.print_exc(file=sys.stdout)
    sys.stdout.flush()
    sys.exit(1)
finally:
    for _, proc in reversed(procs):
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    shutil.rmtree(tmp, ignore_errors=True)
