#!/usr/bin/env bash
# Trace export's cost in instructions per relayed token (issue 15), counted by valgrind's
# callgrind in the load generator's server processes, with export off and on.
#
# Run with: benches/trace_overhead_callgrind.sh
#   (build first: cargo build --release --example loadgen --features amqp,redis)
# Environment (defaults in brackets):
#   BROKER [amqp]   loadgen's --broker: amqp (a gateway process and a worker process, the
#                   RabbitMQ of CHATSTREAM_AMQP_URL, itself not counted) or memory (one
#                   process holding both)
#   MODE [group]    loadgen's --mode: group (no coalescing: one envelope, one SSE event and
#                   one span poll per token) or batched (the default relay)
#   STREAMS [200] TOKENS [200] RATE [4]   the measured run: streams x tokens at RATE tokens/s
#                   per stream (slow enough for the servers under valgrind to keep up)
#   SAMPLE [0.01]   OTEL_TRACES_SAMPLER_ARG of the "on" runs (parentbased_traceidratio)
#   RUNS [3]        off/on pairs, alternated (about 5 minutes a pair at the defaults)
#   LOADGEN [target/release/examples/loadgen]   OUT [a new temporary directory]
#
# Each configuration also runs a baseline of 1 stream x 1 token under the same set-up: the
# process start, connections, exporter set-up and exit are in both, so
#   instructions per token = (I(run) - I(baseline)) / (STREAMS x TOKENS - 1),
# per process (gateway, worker) and summed; the ratio is on / off of the sum. The "on" runs
# export to benches/otlp_sink.py on a free local port (it answers 200, keeps nothing; its
# own instructions are not counted). Everything the servers do is counted: accepting and
# answering the HTTP requests, the broker hops, the tokio runtimes, the batch span
# processor's thread. How much the relay batches (broker messages per token) follows the
# timing, so the whole-process counts still move a few % between runs of one configuration;
# the span work (tracing's own enter, exit, creation and close, inclusive) does not, and is
# printed beside them.
set -euo pipefail

ROOT=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
L=${LOADGEN:-$ROOT/target/release/examples/loadgen}
BROKER=${BROKER:-amqp}
MODE=${MODE:-group}
STREAMS=${STREAMS:-200}
TOKENS=${TOKENS:-200}
RATE=${RATE:-4}
SAMPLE=${SAMPLE:-0.01}
RUNS=${RUNS:-3}
OUT=${OUT:-$(mktemp -d /tmp/trace-overhead.XXXXXX)}
mkdir -p "$OUT"
[ -x "$L" ] || { echo "no $L: cargo build --release --example loadgen --features amqp,redis" >&2; exit 1; }
command -v valgrind >/dev/null || { echo "valgrind not installed" >&2; exit 1; }

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 "$ROOT/benches/otlp_sink.py" "$PORT" >/dev/null 2>&1 &
SINK=$!
trap 'kill $SINK 2>/dev/null || true' EXIT

# Runs loadgen once: $1 label, $2 streams, $3 tokens, $4 off|on. Leaves the callgrind files
# and the report under $OUT/$1.
run() {
    local label=$1 streams=$2 tokens=$3 export=$4 dir=$OUT/$1
    mkdir -p "$dir"
    local env=(LOG_LEVEL=warn)
    if [ "$export" = on ]; then
        env+=(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$PORT"
            OTEL_TRACES_SAMPLER=parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG="$SAMPLE")
    fi
    env -u OTEL_EXPORTER_OTLP_ENDPOINT -u OTEL_EXPORTER_OTLP_TRACES_ENDPOINT \
        "${env[@]}" \
        LOADGEN_SERVE_WRAPPER="valgrind --tool=callgrind --callgrind-out-file=$dir/callgrind.%p" \
        "$L" --broker "$BROKER" --mode "$MODE" --streams "$streams" --tokens "$tokens" \
        --rate "$RATE" --idle-streams 0 --raw-messages 0 --ramp-limit 300 --time-limit 600 \
        >"$dir/report.txt" 2>"$dir/stderr.txt"
    # Every token delivered, none lost, duplicated or garbled, or the count means nothing.
    python3 - "$dir/report.txt" "$((streams * tokens))" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
want = int(sys.argv[2])
m = re.search(r"^delivered: (\d+) of (\d+) tokens", text, re.M)
c = re.search(r"^correctness: (\d+) lost, (\d+) duplicated, (\d+) incomplete streams, (\d+) client errors", text, re.M)
if not m or int(m.group(1)) != want or not c or any(int(x) for x in c.groups()):
    sys.exit(f"{sys.argv[1]}: not every token delivered once: {m and m.group(0)}; {c and c.group(0)}")
EOF
}

# Instructions of the gateway and of the worker in $OUT/$1 ("both" for one process), and of
# the span work in them ("spans": the inclusive cost of tracing's span enter, exit, creation,
# close and record, every layer and what they call; 0 while export is off, whose INFO spans
# are disabled).
counts() {
    python3 - "$OUT/$1" <<'EOF'
import glob, re, subprocess, sys
SPAN_WORK = {"tracing_core::dispatcher::Dispatch::enter", "tracing_core::dispatcher::Dispatch::exit",
             "tracing_core::dispatcher::Dispatch::try_close", "tracing::span::Span::new",
             "tracing::span::Span::record_all"}
roles, spans = {}, 0
for path in glob.glob(sys.argv[1] + "/callgrind.*"):
    text = open(path, errors="replace").read()
    cmd = re.search(r"^cmd: (.*)$", text, re.M).group(1)
    role = re.search(r"--role (\w+)", cmd).group(1)
    total = re.search(r"^(?:summary|totals): (\d+)", text, re.M).group(1)
    roles[role] = roles.get(role, 0) + int(total)
    annotated = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", path],
                               capture_output=True, text=True).stdout
    for line in annotated.splitlines():
        m = re.match(r"\s*([\d,]+) \([^)]*\)\s+\S*?:(\S+) ", line)
        if m and m.group(2) in SPAN_WORK:
            spans += int(m.group(1).replace(",", ""))
roles["spans"] = spans
print(" ".join(f"{k}={v}" for k, v in sorted(roles.items())))
EOF
}

N=$((STREAMS * TOKENS))
echo "trace export, instructions per token: $BROKER, --mode $MODE, $STREAMS x $TOKENS at $RATE tokens/s, sampling $SAMPLE; output in $OUT"
for i in $(seq 1 "$RUNS"); do
    for export in off on; do
        run "$export-$i-base" 1 1 "$export"
        run "$export-$i" "$STREAMS" "$TOKENS" "$export"
        echo "$export $i $(counts "$export-$i-base") / $(counts "$export-$i")"
    done
done | tee "$OUT/counts.txt"
echo "export requests received by the sink: $(curl -s "http://127.0.0.1:$PORT/")"

python3 - "$OUT/counts.txt" "$N" <<'EOF'
import statistics, sys
n = int(sys.argv[2]) - 1
per = {"off": [], "on": []}
pairs, spans = {}, []
print(f"{'export':6} {'run':>3} {'gateway':>9} {'worker':>9} {'sum':>9} {'spans':>9}   (instructions per token)")
for line in open(sys.argv[1]):
    export, i, rest = line.split(" ", 2)
    base, run = (dict(kv.split("=") for kv in part.split()) for part in rest.split(" / "))
    row = {role: (int(run[role]) - int(base[role])) / n for role in run}
    span = row.pop("spans")
    total = sum(row.values())
    per[export].append(total)
    pairs.setdefault(i, {})[export] = total
    if export == "on":
        spans.append(span)
    cells = " ".join(f"{row.get(r, 0):9.0f}" for r in ("gateway", "worker")) if "both" not in row \
        else f"{'(one process)':>19}"
    print(f"{export:6} {i:>3} {cells} {total:9.0f} {span:9.0f}")
ratios = [p["on"] / p["off"] for p in pairs.values() if len(p) == 2]
off, on = statistics.median(per["off"]), statistics.median(per["on"])
print(f"on / off of each pair: {', '.join(f'{r:.3f}' for r in ratios)}; median {statistics.median(ratios):.3f}")
print(f"median sum per token: off {off:.0f}, on {on:.0f}; on / off = {on / off:.3f} ({(on / off - 1) * 100:+.1f} %)")
span = statistics.median(spans)
print(f"span work with export on: median {span:.0f} per token = {span / off * 100:.1f} % of off's median")
EOF
