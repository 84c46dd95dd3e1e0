#!/usr/bin/env bash
# Installs the real, unchanged Kafka clients the scripts here drive:
#   kcat (Debian), kafka-python 3, confluent-kafka and aiokafka (PyPI, in a venv),
#   kafkajs and @platformatic/kafka (npm), Sarama and kafka-go (Debian's golang
#   packages, built offline in GOPATH mode from /usr/share/gocode: no module proxy),
#   Burrow and ZooKeeper (Debian).
# Usage: install.sh DIR      then: DIR/venv/bin/python, NODE_PATH=DIR/js/node_modules node ..., kcat,
#                            DIR/go/sarama_client, DIR/go/sarama_group, DIR/go/kafka_go_client
# Idempotent: what is already installed is left alone.
set -euo pipefail
dir=${1:?usage: install.sh DIR}
mkdir -p "$dir"
if ! command -v kcat >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kcat >/dev/null
fi
if [ ! -x "$dir/venv/bin/python" ]; then
  python3 -m venv "$dir/venv"
  "$dir/venv/bin/pip" install -q kafka-python==3.0.12 confluent-kafka==2.16.1
fi
# Added later than the others: a venv made before it lacks it.
if ! "$dir/venv/bin/python" -c "import aiokafka" 2>/dev/null; then
  "$dir/venv/bin/pip" install -q aiokafka==0.14.0
fi
if [ ! -d "$dir/js/node_modules/kafkajs" ]; then
  mkdir -p "$dir/js" && (cd "$dir/js" && npm init -y >/dev/null && npm install -s kafkajs@2.2.4 >/dev/null)
fi
if [ ! -d "$dir/js/node_modules/@platformatic/kafka" ]; then
  (cd "$dir/js" && npm install -s @platformatic/kafka@1.35.0 >/dev/null)
fi
go_pkgs="golang-go golang-github-shopify-sarama-dev golang-github-segmentio-kafka-go-dev"
# shellcheck disable=SC2086
if ! dpkg -s $go_pkgs >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $go_pkgs >/dev/null
fi
# Burrow (the consumer-lag monitor) and the ZooKeeper it needs; burrow.py
# starts both itself (ZooKeeper from zookeeper.jar, not as a service).
if ! dpkg -s burrow zookeeper >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends burrow zookeeper >/dev/null
fi
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$dir/go"
for prog in sarama_client sarama_group kafka_go_client; do
  if [ ! -x "$dir/go/$prog" ] || [ "$here/$prog.go" -nt "$dir/go/$prog" ] || [ "$here/go_helpers.go" -nt "$dir/go/$prog" ]; then
    (cd "$here" && GO111MODULE=off GOFLAGS= GOPATH="$dir/go/path:/usr/share/gocode" GOCACHE="$dir/go/cache" \
      go build -o "$dir/go/$prog" "$prog.go" go_helpers.go 2>"$dir/go/$prog.build.log") ||
      { cat "$dir/go/$prog.build.log" >&2; exit 1; }
  fi
done
echo "kcat: $(command -v kcat)"
echo "python: $dir/venv/bin/python (kafka-python, confluent-kafka, aiokafka)"
echo "node: NODE_PATH=$dir/js/node_modules (kafkajs, @platformatic/kafka)"
echo "go: $dir/go/sarama_client, $dir/go/sarama_group, $dir/go/kafka_go_client"
echo "burrow: /usr/bin/Burrow, zookeeper: /usr/share/java/zookeeper.jar"
