#!/usr/bin/env bash
# The long soak: producers (acks=all) and a consumer group against a broker
# killed with kill -9 at random moments, on both protocols.
#   tests/soak.sh [MINUTES]     (default 10 per protocol)
# Prints, per protocol: produced, acknowledged, stored, consumed, lost,
# duplicated and restarts; exits non-zero if anything acknowledged was lost,
# stored twice, or not consumed and committed by the group.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-10}
export SHARDLOG_SOAK_SECS=$(( minutes * 60 ))
cargo test --release --test soak -- --nocapture --test-threads 1 2>&1 | grep --line-buffered -E "^soak |^test |panicked|assertion|left|right"
