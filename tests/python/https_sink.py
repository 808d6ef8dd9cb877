#!/usr/bin/env python3
"""An HTTPS receiver for Vigil's webhook TLS tests (Python's standard library only).

It listens on 127.0.0.1 on a free port with the given certificate, prints `PORT <n>`
on its first stdout line, answers every POST with 200 `ok`, and stores each body as
DIR/req-<n>.json.

Usage: https_sink.py --dir DIR --tls-cert PEM --tls-key PEM
"""

import argparse
import http.server
import os
import ssl
import sys


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dir", required=True)
    p.add_argument("--tls-cert", required=True)
    p.add_argument("--tls-key", required=True)
    args = p.parse_args()
    count = [0]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            count[0] += 1
            path = os.path.join(args.dir, "req-%d.json" % count[0])
            with open(path + ".tmp", "wb") as f:
                f.write(body)
            os.rename(path + ".tmp", path)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, fmt, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.tls_cert, args.tls_key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print("PORT %d" % server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
