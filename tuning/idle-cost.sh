#!/usr/bin/env bash
# What an idle cluster costs: 3 brokers on loopback (one shard each,
# unpinned), one topic of PARTITIONS partitions with replication factor RF,
# then the brokers' CPU over 30 s of nothing (after 20 s to settle) and
# their RSS. Needs the release build (`cargo build --release`) and ports
# 9701-9723 free.
#
#   tuning/idle-cost.sh PARTITIONS RF       e.g. tuning/idle-cost.sh 1000 3
set -euo pipefail
[ $# -eq 2 ] || { sed -n '2,8p' "$0"; exit 2; }
p=$1
rf=$2
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/target/release/shardlog
[ -x "$bin" ] || { echo "build it first: cargo build --release" >&2; exit 2; }
dir=$(mktemp -d /tmp/idle-cost-XXXXXX)
voters=1@127.0.0.1:9701,2@127.0.0.1:9702,3@127.0.0.1:9703
pids=()
cleanup() {
  [ ${#pids[@]} -gt 0 ] && kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
for i in 1 2 3; do
  "$bin" serve --node-id "$i" --rpc-listen "127.0.0.1:970$i" --controller-voters "$voters" \
    --data-dir "$dir/n$i" --listen "127.0.0.1:971$i" --kafka-listen "127.0.0.1:972$i" \
    --shards 1 --no-pin --set segment_preallocate_bytes=0 >"$dir/n$i.log" 2>&1 &
  pids+=($!)
done
"$bin" cluster status --rpc 127.0.0.1:9702 --wait-for-brokers 3 >/dev/null
"$bin" topic create idle --partitions "$p" --replication-factor "$rf" --broker 127.0.0.1:9711
sleep 20
cpu_ticks() { for q in "${pids[@]}"; do awk '{print $14 + $15}' "/proc/$q/stat"; done | paste -sd+ | bc; }
rss_kib() { for q in "${pids[@]}"; do awk '/VmRSS/ {print $2}' "/proc/$q/status"; done | paste -sd+ | bc; }
c0=$(cpu_ticks)
sleep 30
c1=$(cpu_ticks)
hz=$(getconf CLK_TCK)
echo "partitions=$p rf=$rf: idle CPU over 30 s $(echo "scale=3; ($c1 - $c0) / $hz / 30" | bc) cores (3 brokers together), RSS $(( $(rss_kib) / 1024 )) MiB in all"
