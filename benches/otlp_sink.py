#!/usr/bin/env python3
"""A local OTLP/HTTP receiver for measuring trace export's cost (BENCHMARKS.md, "Trace
export overhead"): answers every POST (`/v1/traces`) with 200 and an empty protobuf
`ExportTraceServiceResponse`, keeps nothing, and counts export requests and bytes;
`GET /` returns the counts as JSON. Standard library only.

    python3 benches/otlp_sink.py 4318 &
    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 … target/release/examples/loadgen …
    curl -s http://127.0.0.1:4318/
"""

import http.server
import json
import sys
import threading

STATS = {"requests": 0, "bytes": 0}
LOCK = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        length = int(self.headers.get("content-length", 0))
        self.rfile.read(length)
        with LOCK:
            STATS["requests"] += 1
            STATS["bytes"] += length
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def do_GET(self):
        with LOCK:
            body = json.dumps(STATS).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 4318
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"OTLP receiver on http://127.0.0.1:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
