#!/usr/bin/env python3
"""An HTTPS front for a test stand-in served over plain HTTP on loopback.

usage: https_front.py CERT KEY UPSTREAM_URL
Listens on 127.0.0.1 (a free port, printed on the first line of stdout),
terminates TLS with CERT/KEY and passes each GET, with its headers, to
UPSTREAM_URL; the answer goes back as it came. Used by the tests to put the
stand-in Schema Registry behind HTTPS with a certificate from the test CA.
With CERT and KEY given as `-` it serves plain HTTP, as a real HTTP server
does: a TLS handshake sent to it is answered 400 at once.
"""
import http.server
import ssl
import sys
import urllib.error
import urllib.request

cert, key, upstream = sys.argv[1], sys.argv[2], sys.argv[3].rstrip("/")


class Front(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        req = urllib.request.Request(upstream + self.path, headers={k: v for k, v in self.headers.items() if k.lower() != "host"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                status, body = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, body = e.code, e.read()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Front)
if cert != "-":
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
