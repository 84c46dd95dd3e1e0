#!/usr/bin/env bash
# Runs unchanged, real Kafka clients against shardlog's Kafka listener and
# checks what they produced and consumed.
#
#   tests/kafka_clients/run.sh [BROKER_KAFKA_ADDR | --cluster]
#
# With no address, starts its own broker (target/debug/shardlog, built if
# missing) on a free port in a temporary directory and stops it at the end.
# With --cluster, starts a 3-node cluster instead (node ids 1-3, each a
# controller voter, on free 127.0.0.1 ports) and gives every client node
# 2 as its bootstrap server: topics spread over the three nodes, so each
# client must follow partition leaders and group coordinators.
# Clients are installed by install.sh (next to this script) into
# $KAFKA_CLIENTS_DIR (default /tmp/shardlog-kafka-clients); set
# KAFKA_CLIENTS=kcat,kafka_python,confluent,aiokafka,kafkajs,platformatic,semantics,sarama,sarama_group,kafka_go,burrow,aiokafka_restarts,reassign
# to pick a subset (semantics.py: Kafka's admin answers in the details, issue 17;
# burrow.py: Burrow reports a group's lag, with its own ZooKeeper;
# reassign.py: replica moves through kafka-python (KIP-455), refused on one broker;
# aiokafka_restarts.py: a group across broker restarts, only when this script
# starts its own single broker; RESTARTS=10 for the issue's 10, default 3).
# Prints one line per client and ends with "N passed, M failed".
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
clients_dir=${KAFKA_CLIENTS_DIR:-/tmp/shardlog-kafka-clients}
only=${KAFKA_CLIENTS:-kcat,kafka_python,confluent,aiokafka,kafkajs,platformatic,semantics,sarama,sarama_group,kafka_go,burrow,aiokafka_restarts,reassign}
addr=${1:-}
cluster=
if [ "$addr" = "--cluster" ]; then
  cluster=1
  addr=
fi
broker_pids=()
tmp=

cleanup() {
  for pid in "${broker_pids[@]}"; do
    kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  [ -n "$tmp" ] && rm -rf "$tmp"
}
trap cleanup EXIT

tools="$here/install.sh"
bash "$tools" "$clients_dir" >/dev/null || { echo "installing the Kafka clients failed" >&2; exit 2; }

# Start one broker: start_broker NAME ARGS...; its Kafka address lands in
# $started_addr (empty if it did not come up within 30 s).
start_broker() {
  local name=$1
  shift
  RUST_LOG=${RUST_LOG:-shardlog::kafka=debug,info} "$bin" serve --data-dir "$tmp/$name" \
    --listen 127.0.0.1:0 --kafka-listen 127.0.0.1:0 --shards 2 "$@" \
    >"$tmp/$name.stdout" 2>"$tmp/$name.log" &
  broker_pids+=($!)
  started_addr=
  for _ in $(seq 1 300); do
    started_addr=$(sed -n 's/^shardlog ready:.* kafka=\([^ ]*\).*/\1/p' "$tmp/$name.stdout")
    [ -n "$started_addr" ] && return
    sleep 0.1
  done
  echo "broker $name did not start:" >&2
  cat "$tmp/$name.log" >&2
}

if [ -z "$addr" ]; then
  bin="$root/target/debug/shardlog"
  (cd "$root" && cargo build -q --bin shardlog) || exit 2
  tmp=$(mktemp -d /tmp/shardlog-kafka-clients-XXXXXX)
  if [ -z "$cluster" ]; then
    start_broker broker
    addr=$started_addr
  else
    # Free ports for the RPC listeners (the voter list names them up front).
    mapfile -t rpc < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(3)]
for s in ss: s.bind(("127.0.0.1", 0))
for s in ss: print("127.0.0.1:%d" % s.getsockname()[1])')
    voters="1@${rpc[0]},2@${rpc[1]},3@${rpc[2]}"
    for i in 1 2 3; do
      start_broker "node$i" --no-pin --node-id "$i" --rpc-listen "${rpc[$((i - 1))]}" --controller-voters "$voters"
      [ "$i" = 2 ] && addr=$started_addr
      [ -n "$started_addr" ] || exit 2
    done
    # Every node registered and live before any client starts.
    for _ in $(seq 1 300); do
      live=$("$bin" cluster status --rpc "${rpc[1]}" 2>/dev/null | grep -c $'\tlive\t')
      [ "$live" = 3 ] && break
      sleep 0.1
    done
    if [ "$live" != 3 ]; then
      echo "the cluster did not form (live brokers: $live):" >&2
      tail -20 "$tmp"/node*.log >&2
      exit 2
    fi
    echo "3-node cluster; clients bootstrap from node 2"
    export EXPECT_BROKERS=3
  fi
  [ -n "$addr" ] || exit 2
fi
echo "kafka listener: $addr"

passed=0
failed=0
run() {
  local name=$1
  shift
  case ",$only," in *",$name,"*) ;; *) return ;; esac
  local start=$SECONDS
  if timeout 180 "$@" >"/tmp/kafka-client-$name.log" 2>&1; then
    echo "ok      $name ($((SECONDS - start)) s)"
    passed=$((passed + 1))
  else
    echo "FAILED  $name ($((SECONDS - start)) s); its output:"
    sed 's/^/    /' "/tmp/kafka-client-$name.log" | tail -40
    failed=$((failed + 1))
  fi
}

run kcat bash "$here/kcat.sh" "$addr"
run kafka_python "$clients_dir/venv/bin/python" "$here/kafka_python.py" "$addr"
run confluent "$clients_dir/venv/bin/python" "$here/confluent.py" "$addr"
run aiokafka "$clients_dir/venv/bin/python" "$here/aiokafka_client.py" "$addr"
run semantics "$clients_dir/venv/bin/python" "$here/semantics.py" "$addr"
run kafkajs env NODE_PATH="$clients_dir/js/node_modules" node "$here/kafkajs.js" "$addr"
run platformatic env NODE_PATH="$clients_dir/js/node_modules" node "$here/platformatic.mjs" "$addr"
run sarama "$clients_dir/go/sarama_client" "$addr"
# Sarama consumer groups, default offset settings: commits, resume, rebalance.
run sarama_group "$clients_dir/go/sarama_group" "$addr"
run kafka_go "$clients_dir/go/kafka_go_client" "$addr"
# Replica moves through kafka-python's admin (KIP-455); refused on one broker.
run reassign "$clients_dir/venv/bin/python" "$here/reassign.py" "$addr"
# Starts its own ZooKeeper and Burrow (Debian) and reads the lag Burrow reports.
run burrow "$clients_dir/venv/bin/python" "$here/burrow.py" "$addr"
# Restarts its own broker (this build's binary): RESTARTS=10 for the issue's target.
if [ -n "${bin:-}" ] && [ -z "$cluster" ]; then
  run aiokafka_restarts "$clients_dir/venv/bin/python" "$here/aiokafka_restarts.py" "$bin"
fi

if [ -n "$tmp" ] && ls "$tmp"/*.log >/dev/null 2>&1; then
  # Strip colours, keep a copy, and list (client id, API, version) once each.
  cat "$tmp"/*.log | sed 's/\x1b\[[0-9;]*m//g' >/tmp/kafka-clients-broker.log
  echo "API versions the clients used (client_id api version; full log: /tmp/kafka-clients-broker.log):"
  # (client ids may hold spaces, kafka-go's does: they become underscores)
  sed -n 's/.*kafka client uses client_id=\(.*\) api="\?\([A-Za-z]*\)"\? version=\([0-9]*\).*/\1|\2|\3/p' \
    /tmp/kafka-clients-broker.log | tr ' |' '_ ' | sort -u | awk '{v[$1" "$2]=v[$1" "$2] (v[$1" "$2]?",":"") $3} END {for (k in v) print "    " k " v" v[k]}' | sort
  sed -n 's/.*kafka client identified itself client_id=\([^ ]*\) software=\([^ ]*\) software_version=\([^ ]*\).*/    \1: \2 \3/p' \
    /tmp/kafka-clients-broker.log | sort -u
  # Fetch sessions (KIP-227) are not served; which clients ask for one.
  sed -n 's/.*kafka client asks for a fetch session.* client_id=\([^ ]*\) session_id=\([-0-9]*\) session_epoch=\([-0-9]*\).*/    \1 asks for a fetch session (session id \2, epoch \3)/p' \
    /tmp/kafka-clients-broker.log | sort -u
fi
if [ -n "$cluster" ] && [ -n "$tmp" ]; then
  # Evidence that the clients' partitions were spread over the nodes.
  for i in 1 2 3; do
    echo "node $i opened $(grep -c 'partition log open' "$tmp/node$i.log") partitions"
  done
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
