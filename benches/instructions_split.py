#!/usr/bin/env python3
"""Splits a callgrind output file of chatstream-axum's `instructions` bench into gateway,
worker and scripted-backend instructions; prints one Markdown row. Used by
benches/instructions.sh (see there).

Usage: instructions_split.py LABEL DATE SIZE CALLGRIND_OUT... [--top N]

With several output files (repeated runs), each column is the median over them, and a last
column gives the spread of gateway + worker (largest minus smallest, in per cent of the
median): what is left of the scheduling and hashing that vary from run to run (tokio's
random `select!` branch order, `RandomState` hash keys).

Inclusive cost per function is computed here from the file itself, summed over every source
file a function's inlined code came from (callgrind_annotate lists a function once per such
file and gives each entry only part of its cost). A function's inclusive cost is its own
cost plus the cost of the calls it makes; the task polls summed here do not call one
another, so nothing is counted twice.

With --top N, also prints the N functions with the most exclusive (self) cost, per token
(of the first file).
"""

import re
import sys
from collections import defaultdict

TOKENS = {"single": 1 * 10_000, "many": 1_000 * 20}


def parse(path):
    """Returns (total, self cost by function, inclusive cost by function)."""
    self_cost = defaultdict(int)
    incl = defaultdict(int)
    names = {}
    npos = 1
    fn = None
    after_calls = False
    total = None
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            c = line[0]
            if c.isdigit() or c in "+-*":
                fields = line.split()
                ir = int(fields[npos]) if len(fields) > npos else 0
                if after_calls:
                    incl[fn] += ir
                    after_calls = False
                else:
                    self_cost[fn] += ir
                    incl[fn] += ir
                continue
            if line.startswith("fn="):
                m = re.match(r"fn=\((\d+)\)(?: (.*))?$", line)
                if m:
                    if m.group(2) is not None:
                        names[m.group(1)] = m.group(2)
                    fn = names[m.group(1)]
                else:
                    fn = line[3:]
            elif line.startswith("cfn="):
                m = re.match(r"cfn=\((\d+)\)(?: (.*))?$", line)
                if m and m.group(2) is not None:
                    names[m.group(1)] = m.group(2)
            elif line.startswith("calls="):
                after_calls = True
            elif line.startswith("positions:"):
                npos = len(line.split()[1:])
            elif line.startswith("totals:") or line.startswith("summary:"):
                total = int(line.split()[1])
    if total is None:
        total = sum(self_cost.values())
    return total, self_cost, incl


def split(path, tokens):
    """Instructions per token of one run: total, gateway, worker, gateway + worker, backend,
    other; and the function costs."""
    total, self_cost, incl = parse(path)
    side = {"gateway": 0, "worker": 0, "backend": 0}
    for fn, ir in incl.items():
        if fn.startswith("tokio::runtime::task::raw::poll::<"):
            if "chatstream_core::worker" in fn:
                side["worker"] += ir
            elif "chatstream_core::gateway" in fn or "instructions::client" in fn:
                side["gateway"] += ir
            elif ir > tokens:
                print(f"  (a task neither side claims, {ir / tokens:,.0f} per token: {fn[:160]})",
                      file=sys.stderr)
        elif fn.startswith("<instructions::Paced as ") and fn.endswith(">::poll_next"):
            side["backend"] += ir
        elif re.match(r"^<instructions::PacedBackend as [^>]*LlmBackend>::stream::\{closure#0\}$", fn):
            side["backend"] += ir
    worker = side["worker"] - side["backend"]
    other = total - side["gateway"] - side["worker"]
    values = (total, side["gateway"], worker, side["gateway"] + worker, side["backend"], other)
    return [v / tokens for v in values], self_cost, total


def main():
    args = [a for a in sys.argv[1:]]
    top = 0
    if "--top" in args:
        i = args.index("--top")
        top = int(args[i + 1])
        del args[i:i + 2]
    label, date, size = args[:3]
    paths = args[3:]
    tokens = TOKENS[size]
    runs = [split(p, tokens) for p in paths]
    columns = list(zip(*[r[0] for r in runs]))
    median = [sorted(c)[len(c) // 2] for c in columns]
    gw_wk = columns[3]
    spread = (max(gw_wk) - min(gw_wk)) / median[3] if median[3] else 0.0
    commit, _, note = label.partition(" ")
    note = " " + note if note else ""
    cells = [f"{v:,.0f}" for v in median] + [f"{spread:.1%} ({len(runs)} runs)"]
    print(f"| `{commit}`{note} | {date} | {size} | " + " | ".join(cells) + " |")
    if top:
        _, self_cost, total = runs[0]
        print(f"\nTop {top} functions by own cost, {label} {size}, instructions per token:",
              file=sys.stderr)
        for fn, ir in sorted(self_cost.items(), key=lambda kv: -kv[1])[:top]:
            print(f"  {ir / tokens:8,.0f}  {ir / total:6.1%}  {fn[:200]}", file=sys.stderr)


if __name__ == "__main__":
    main()
