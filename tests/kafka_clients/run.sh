#!/usr/bin/env bash
# Runs unchanged, real Kafka clients against shardlog's Kafka listener and
# checks what they produced and consumed.
#
#   tests/kafka_clients/run.sh [BROKER_KAFKA_ADDR]
#
# With no address, starts its own broker (target/debug/shardlog, built if
# missing) on a free port in a temporary directory and stops it at the end.
# Clients are installed by install.sh (next to this script) into
# $KAFKA_CLIENTS_DIR (default /tmp/shardlog-kafka-clients); set
# KAFKA_CLIENTS=kcat,kafka_python,confluent,aiokafka,kafkajs,platformatic,semantics,aiokafka_restarts
# to pick a subset (semantics.py: Kafka's admin answers in the details, issue 17;
# aiokafka_restarts.py: a group across broker restarts, only when this script
# starts its own broker; RESTARTS=10 for the issue's 10, default 3).
# Prints one line per client and ends with "N passed, M failed".
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
clients_dir=${KAFKA_CLIENTS_DIR:-/tmp/shardlog-kafka-clients}
only=${KAFKA_CLIENTS:-kcat,kafka_python,confluent,aiokafka,kafkajs,platformatic,semantics,aiokafka_restarts}
addr=${1:-}
broker_pid=
tmp=

cleanup() {
  if [ -n "$broker_pid" ]; then
    kill "$broker_pid" 2>/dev/null
    wait "$broker_pid" 2>/dev/null
  fi
  [ -n "$tmp" ] && rm -rf "$tmp"
}
trap cleanup EXIT

tools="$here/install.sh"
bash "$tools" "$clients_dir" >/dev/null || { echo "installing the Kafka clients failed" >&2; exit 2; }

if [ -z "$addr" ]; then
  bin="$root/target/debug/shardlog"
  (cd "$root" && cargo build -q --bin shardlog) || exit 2
  tmp=$(mktemp -d /tmp/shardlog-kafka-clients-XXXXXX)
  RUST_LOG=${RUST_LOG:-shardlog::kafka=debug,info} "$bin" serve --data-dir "$tmp/data" \
    --listen 127.0.0.1:0 --kafka-listen 127.0.0.1:0 --shards 2 >"$tmp/stdout" 2>"$tmp/broker.log" &
  broker_pid=$!
  for _ in $(seq 1 300); do
    addr=$(sed -n 's/^shardlog ready:.* kafka=\([^ ]*\).*/\1/p' "$tmp/stdout")
    [ -n "$addr" ] && break
    sleep 0.1
  done
  if [ -z "$addr" ]; then
    echo "the broker did not start:" >&2
    cat "$tmp/broker.log" >&2
    exit 2
  fi
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
# Restarts its own broker (this build's binary): RESTARTS=10 for the issue's target.
if [ -n "${bin:-}" ]; then
  run aiokafka_restarts "$clients_dir/venv/bin/python" "$here/aiokafka_restarts.py" "$bin"
fi

if [ -n "$tmp" ] && [ -f "$tmp/broker.log" ]; then
  # Strip colours, keep a copy, and list (client id, API, version) once each.
  sed 's/\x1b\[[0-9;]*m//g' "$tmp/broker.log" >/tmp/kafka-clients-broker.log
  echo "API versions the clients used (client_id api version; full log: /tmp/kafka-clients-broker.log):"
  sed -n 's/.*kafka client uses client_id=\([^ ]*\) api="\?\([A-Za-z]*\)"\? version=\([0-9]*\).*/\1 \2 \3/p' \
    /tmp/kafka-clients-broker.log | sort -u | awk '{v[$1" "$2]=v[$1" "$2] (v[$1" "$2]?",":"") $3} END {for (k in v) print "    " k " v" v[k]}' | sort
  sed -n 's/.*kafka client identified itself client_id=\([^ ]*\) software=\([^ ]*\) software_version=\([^ ]*\).*/    \1: \2 \3/p' \
    /tmp/kafka-clients-broker.log | sort -u
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
