#!/usr/bin/env python3
"""First-event latency of POST /v1/responses (stream) beside POST /v1/chat/completions
(stream), in one run against one running process (BENCHMARKS.md, "First event").

    TOKEN_DELAY_MS=0 PORT=3000 target/release/examples/quickstart &
    python3 benches/first_event.py --port 3000 -n 500

Alternates the two requests, one at a time, each on a new HTTP/1.0 connection, each
stream read to its end. Per request it measures, from the request's first byte sent: the
first SSE event (`response.created`; the first `chat.completion.chunk`) and the first text
(the first `response.output_text.delta`; the first chunk with `delta.content`). Prints
p50, p90, p99 and max of each in milliseconds, and the load average before and after.
Standard library only.
"""

import argparse
import json
import os
import socket
import time

BODIES = {
    "chat": ("/v1/chat/completions", {"stream": True, "messages": [{"role": "user", "content": "hi"}]}),
    "responses": ("/v1/responses", {"stream": True, "input": "hi"}),
}


def first_text(api, data):
    """True when the SSE data line `data` carries answer text."""
    if data == "[DONE]":
        return False
    v = json.loads(data)
    if api == "responses":
        return v.get("type") == "response.output_text.delta"
    choices = v.get("choices") or [{}]
    return bool((choices[0].get("delta") or {}).get("content"))


def one(port, api, model):
    path, body = BODIES[api]
    payload = json.dumps(dict(body, model=model)).encode()
    head = (
        f"POST {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    ).encode()
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = b""
    event = text = None
    start = time.perf_counter()
    s.sendall(head + payload)
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        now = time.perf_counter()
        buf += chunk
        # HTTP/1.0: the body is the bytes until the close, no chunked framing.
        *lines, buf = buf.split(b"\n")
        for line in lines:
            line = line.rstrip(b"\r")
            if not line.startswith(b"data: "):
                continue
            if event is None:
                event = now - start
            if text is None and first_text(api, line[6:].decode()):
                text = now - start
    s.close()
    if event is None or text is None:
        raise SystemExit(f"{api}: a stream without {'an event' if event is None else 'text'}")
    return event, text


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=3000)
    ap.add_argument("-n", type=int, default=500, help="requests per API")
    ap.add_argument("--warmup", type=int, default=50, help="requests per API not counted")
    ap.add_argument("--model", default="scripted")
    a = ap.parse_args()
    load_before = os.getloadavg()
    results = {api: ([], []) for api in BODIES}
    for i in range(a.warmup + a.n):
        for api in BODIES:
            event, text = one(a.port, api, a.model)
            if i >= a.warmup:
                results[api][0].append(event * 1000)
                results[api][1].append(text * 1000)
    load_after = os.getloadavg()
    print(f"n = {a.n} per API (after {a.warmup} warm-up each), alternating, one at a time")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in load_before)}")
    print(f"load average after:  {' '.join(f'{x:.2f}' for x in load_after)}")
    print()
    print("| request | first event p50 / p90 / p99 / max (ms) | first text p50 / p90 / p99 / max (ms) |")
    print("|---|---|---|")
    for api, (events, texts) in results.items():
        path = BODIES[api][0]
        e = " / ".join(f"{pct(events, p):.2f}" for p in (50, 90, 99, 100))
        t = " / ".join(f"{pct(texts, p):.2f}" for p in (50, 90, 99, 100))
        print(f"| `POST {path}` (stream) | {e} | {t} |")


if __name__ == "__main__":
    main()
