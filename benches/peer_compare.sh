#!/usr/bin/env bash
# Side by side in one run: the Python peer of seed 003's flow (FastAPI + aio-pika, in
# ../shared/peer) and chatstream's queue_worker, against the same fake OpenAI server
# (200 tokens per answer at 50 tokens/s) and the same load client (N clients at once).
# Prints each side's load-client JSON and the CPU ticks (1/100 s) of its server processes
# and of RabbitMQ.
#
#   cp -r ../shared/peer /tmp/peer && cd /tmp/peer
#   (cd fake-llm && cargo build --release) && (cd loadclient && cargo build --release)
#   cargo build --release --example queue_worker        # in this repository
#   QW_CONCURRENCY=500 benches/peer_compare.sh         # N=500 clients by default
#
# The peer's worker takes up to 1,000 requests at once (WORKER_PREFETCH); queue_worker's
# WORKER_CONCURRENCY defaults to 16, so QW_CONCURRENCY sets it for a like-for-like run.
# PEER_DIR (default /tmp/peer) is the built copy; its binaries are looked for under
# target/release/ there (CARGO_TARGET_DIR=$PEER_DIR/target when building both).
set -euo pipefail
PEER_DIR=${PEER_DIR:-/tmp/peer}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$PEER_DIR"
N=${N:-500}
cpu() { local t=0; for p in "$@"; do read -r -a f < /proc/$p/stat; t=$((t + f[13] + f[14])); done; echo $t; }
beam() { pgrep -f beam.smp | head -1; }
FAKE_TOKENS=200 FAKE_RATE=50 ./target/release/fake-llm 127.0.0.1:8900 > fake.log 2>&1 &
FAKE=$!
sleep 1
rabbitmqctl purge_queue default-queue >/dev/null 2>&1 || true
./run.sh 8080 http://127.0.0.1:8900/v1
PIDS=$(cat .pids | tr '\n' ' ')
B=$(beam)
echo "load before peer: $(cut -d' ' -f1-3 /proc/loadavg)"
c0=$(cpu $PIDS); b0=$(cpu $B)
./target/release/loadclient --url http://127.0.0.1:8080 --n $N --count $N --expect-tokens 200 --duration 150 --stream-timeout 140 > peer.json
c1=$(cpu $PIDS); b1=$(cpu $B)
echo "peer: $(cat peer.json)"
echo "peer CPU ticks (1/100 s): servers $((c1-c0)), rabbitmq $((b1-b0))"
./run.sh stop
rabbitmqctl purge_queue default-queue >/dev/null 2>&1 || true
sleep 3
WORKER_CONCURRENCY=${QW_CONCURRENCY:-16} RABBITMQ_QUEUE=peer-compare RABBITMQ_TOKEN_STREAM=peer-compare.log OPENAI_URL=http://127.0.0.1:8900/v1 OPENAI_MODEL=fake-model \
  RESTAPI_HOST=127.0.0.1 RESTAPI_PORT=8081 LOG_LEVEL=warn "$ROOT"/target/release/examples/queue_worker > qw.log 2>&1 &
QW=$!
for _ in $(seq 50); do curl -sf http://127.0.0.1:8081/ping >/dev/null && break; sleep 0.2; done
echo "load before chatstream: $(cut -d' ' -f1-3 /proc/loadavg)"
c0=$(cpu $QW); b0=$(cpu $B)
./target/release/loadclient --url http://127.0.0.1:8081 --n $N --count $N --expect-tokens 200 --duration 150 --stream-timeout 140 > qw.json
c1=$(cpu $QW); b1=$(cpu $B)
echo "chatstream: $(cat qw.json)"
echo "chatstream CPU ticks (1/100 s): server $((c1-c0)), rabbitmq $((b1-b0))"
kill $QW $FAKE
rabbitmqctl delete_queue peer-compare >/dev/null 2>&1 || true
rabbitmqctl delete_queue peer-compare.log >/dev/null 2>&1 || true
