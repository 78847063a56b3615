#!/usr/bin/env bash
# Instructions per relayed token (issue 16), counted by valgrind's callgrind, for the working
# tree and/or any commits, in one run.
#
# Run with: benches/instructions.sh [TARGET...]
#   TARGET is a commit (anything `git rev-parse` takes) or `.` for the working tree (the
#   default when none is given). `benches/instructions.sh HEAD~1 .` is an A/B run.
# Environment: SIZES (default "single many": 1 x 10,000 and 1,000 x 20 tokens),
#   REPEAT (default 3: runs per size; each figure is the median, and the last column the
#   spread of gateway + worker over the runs), KEEP=1 keeps the callgrind output files (under $OUT, default /tmp/chatstream-instructions),
#   TOP=N prints the N functions with the most own cost per token (on stderr).
#
# What it does for each target: builds chatstream-axum's `instructions` bench
# (chatstream-axum/benches/instructions.rs) in release with line tables and v0 symbol names
# (so each tokio task's poll function names its future type), runs it under
# `valgrind --tool=callgrind` once per size, and splits the count
# (benches/instructions_split.py, inclusive costs read from callgrind's file): the cost of every task poll
# (`tokio::runtime::task::raw::poll::<T, _>`) goes to the gateway when `T` is the gateway's
# (`chatstream_core::gateway`) or the bench's client task (submit + SSE body), to the worker
# when `T` is the worker's (`chatstream_core::worker`); the scripted backend's own cost (the
# bench's `Paced` stream and `PacedBackend::stream`, run inside the worker's task) is given
# apart and taken out of the worker's. "other" is the rest: the runtime's scheduler loop and
# timer driver between polls, the set-up, process start and exit.
#
# A commit is checked out into a temporary worktree under /tmp; the commits of a run share one
# target directory under /tmp; both are deleted afterwards. If the commit has no such bench, the working tree's
# instructions.rs is copied in and the [[bench]] entry added (said in the output). The working
# tree builds into target/instructions (RUSTFLAGS differ from the usual build's, so it
# cannot share target/).
set -euo pipefail

ROOT=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
SIZES=${SIZES:-"single many"}
REPEAT=${REPEAT:-3}
OUT=${OUT:-/tmp/chatstream-instructions}
HARNESS=chatstream-axum/benches/instructions.rs
mkdir -p "$OUT"
[ $# -eq 0 ] && set -- .

# The commits of one run share a target directory (their dependencies mostly agree), deleted
# at the end with the worktrees.
COMMITS_TARGET=/tmp/chatstream-instr-target-$$
CLEANUP=()
cleanup() {
    for dir in "${CLEANUP[@]}"; do
        if [ -d "$dir" ]; then
            git -C "$ROOT" worktree remove --force "$dir" 2>/dev/null || true
            rm -rf "$dir"
        fi
    done
    rm -rf "$COMMITS_TARGET"
    git -C "$ROOT" worktree prune
}
trap cleanup EXIT

# Builds the bench in $1 with target dir $2; prints the executable's path.
build() {
    (
        cd "$1"
        CARGO_TARGET_DIR="$2" \
            RUSTFLAGS="-C symbol-mangling-version=v0" \
            CARGO_PROFILE_RELEASE_DEBUG=line-tables-only \
            CARGO_PROFILE_BENCH_DEBUG=line-tables-only \
            cargo bench -p chatstream-axum --bench instructions --no-run \
            --message-format=json-render-diagnostics
    ) | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "instructions" and m.get("executable"):
        print(m["executable"])'
}

# Splits one callgrind output file; prints a Markdown row (TOP=N: the top N functions too).
split() {
    python3 "$ROOT/benches/instructions_split.py" "$@" ${TOP:+--top "$TOP"}
}

ROWS=()
for target in "$@"; do
    if [ "$target" = . ]; then
        dir=$ROOT
        tdir=$ROOT/target/instructions
        label="$(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- . 2>/dev/null || echo +tree)"
        date=$(git -C "$ROOT" log -1 --format=%cs HEAD)
    else
        hash=$(git -C "$ROOT" rev-parse --short "$target^{commit}")
        dir=/tmp/chatstream-instr-$hash
        tdir=$COMMITS_TARGET
        label=$hash
        date=$(git -C "$ROOT" log -1 --format=%cs "$hash")
        rm -rf "$dir"
        git -C "$ROOT" worktree prune
        CLEANUP+=("$dir")
        git -C "$ROOT" worktree add --quiet --detach "$dir" "$hash"
        if [ ! -f "$dir/$HARNESS" ]; then
            mkdir -p "$(dirname "$dir/$HARNESS")"
            cp "$ROOT/$HARNESS" "$dir/$HARNESS"
            label="$hash (harness copied)"
        fi
        if ! grep -q '^name = "instructions"' "$dir/chatstream-axum/Cargo.toml"; then
            printf '\n[[bench]]\nname = "instructions"\nharness = false\n' >>"$dir/chatstream-axum/Cargo.toml"
        fi
    fi
    echo "== $label: building in $tdir" >&2
    exe=$(build "$dir" "$tdir" | tail -1)
    [ -x "$exe" ] || { echo "build of $label failed" >&2; exit 1; }
    for size in $SIZES; do
        files=()
        for run in $(seq "$REPEAT"); do
            file=$OUT/callgrind.$(echo "$label" | cut -d' ' -f1).$size.$run.out
            echo "== $label: $size under callgrind ($run of $REPEAT)" >&2
            valgrind --tool=callgrind --callgrind-out-file="$file" "$exe" "$size" >&2 2>"$file.log" \
                || { cat "$file.log" >&2; exit 1; }
            files+=("$file")
        done
        ROWS+=("$(split "$label" "$date" "$size" "${files[@]}")")
        [ "${KEEP:-0}" = 1 ] || for f in "${files[@]}"; do rm -f "$f" "$f.log"; done
    done
    if [ "$target" != . ]; then
        git -C "$ROOT" worktree remove --force "$dir"
        rm -rf "$dir"
    fi
done

echo
echo "Instructions per relayed token (callgrind Ir ÷ tokens; sizes: single = 1 x 10,000, many = 1,000 x 20)"
echo
echo "| commit | date | size | total | gateway | worker | gateway + worker | scripted backend (not in worker) | other | spread of gateway + worker |"
echo "|---|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
