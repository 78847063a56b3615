#!/usr/bin/env bash
# The plots of BENCHMARKS.md: loadgen at 100 … 10,000 streams × 20 tokens/s over the
# in-memory broker, RabbitMQ and Redis (chatstream's defaults), each run appended to
# benches/plots/runs.jsonl, then `loadgen plot` draws benches/plots/*.svg from that file.
#
#   benches/sweep.sh                 # every broker, every size (about 15 minutes)
#   BROKERS="memory" SIZES="100 1000" benches/sweep.sh
#   PLOT_ONLY=1 benches/sweep.sh     # redraw from runs.jsonl
#
# Needs RabbitMQ on 127.0.0.1:5672 and Redis on 127.0.0.1:6379 (as the tests do), and a
# quiet machine: the figures are wall-clock and /proc CPU; the load average before and after
# each run is recorded beside them.
set -euo pipefail
cd "$(dirname "$0")/.."

BROKERS=${BROKERS:-"memory amqp redis"}
SIZES=${SIZES:-"100 300 1000 3000 10000"}
TOKENS=${TOKENS:-100}
OUT=benches/plots
mkdir -p "$OUT"

cargo build --release --quiet --example loadgen --features amqp,redis
LOADGEN=target/release/examples/loadgen
if [ -z "${PLOT_ONLY:-}" ]; then
    ulimit -n "$(ulimit -Hn)"  # each stream holds a socket in the driver and one in the gateway
    for broker in $BROKERS; do
        for n in $SIZES; do
            echo "== $broker, $n streams × $TOKENS tokens at 20 tokens/s" >&2
            "$LOADGEN" --broker "$broker" --streams "$n" --tokens "$TOKENS" --rate 20 \
                --idle-streams 0 --json "$OUT/runs.jsonl" | grep -E '^(delivered|added|CPU|correctness)' || true
        done
    done
fi
"$LOADGEN" plot --input "$OUT/runs.jsonl" --out-dir "$OUT"
