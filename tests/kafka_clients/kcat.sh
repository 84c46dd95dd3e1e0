#!/usr/bin/env bash
# kcat (librdkafka): metadata, produce with every codec (topics auto-created),
# consume from the beginning, and a balanced consumer group.
set -euo pipefail
addr=$1
base="kcat-$$-$RANDOM"
echo "kcat: $(kcat -V 2>&1 | head -1)"
kcat -X client.id=kcat -b "$addr" -L | tee /tmp/kcat-meta.txt | head -3
# EXPECT_BROKERS: how many brokers Metadata must list (run.sh --cluster: 3).
grep -q "${EXPECT_BROKERS:-1} brokers" /tmp/kcat-meta.txt

for codec in none gzip snappy lz4 zstd; do
  topic="$base-$codec"
  seq 1 300 | sed 's/^\(.*\)$/key\1:value \1/' | kcat -X client.id=kcat -b "$addr" -P -t "$topic" -K: -z "$codec" -X linger.ms=20
  got=$(timeout 60 kcat -X client.id=kcat -b "$addr" -C -t "$topic" -o beginning -e -q -f '%k=%s\n' | sort -u | wc -l)
  [ "$got" -eq 300 ] || { echo "codec $codec: consumed $got of 300"; exit 1; }
  timeout 60 kcat -X client.id=kcat -b "$addr" -C -t "$topic" -o beginning -e -q -f '%k=%s\n' | grep -qx 'key7=value 7'
  echo "codec $codec: 300 produced and consumed"
done

# A balanced consumer group reads every message and commits.
topic="$base-none"
group="$base-group"
got=$(timeout 60 kcat -X client.id=kcat -b "$addr" -G "$group" "$topic" -o beginning -e -q -f '%s\n' -X enable.auto.commit=true -X auto.commit.interval.ms=100 | wc -l)
[ "$got" -eq 300 ] || { echo "group consumed $got of 300"; exit 1; }
echo "group $group consumed 300"
# Its committed offsets hold: the group resumes at the end.
seq 1 5 | sed 's/^/late /' | kcat -X client.id=kcat -b "$addr" -P -t "$topic"
got=$(timeout 60 kcat -X client.id=kcat -b "$addr" -G "$group" "$topic" -e -q -f '%s\n' | wc -l)
[ "$got" -eq 5 ] || { echo "group resumed with $got messages, expected the 5 new ones"; exit 1; }
echo "group resumed from its committed offsets"
