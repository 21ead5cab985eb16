#!/usr/bin/env python3
"""A TLS front for a plain-HTTP S3 endpoint, for tests: serves HTTPS on 127.0.0.1:PORT with
CERT/KEY and forwards each request (method, path, headers including Host, body) to UPSTREAM,
answering with the upstream's status, headers and body. SigV4 signatures stay valid because the
Host header is passed on unchanged.

usage: tls_forward.py PORT CERT KEY UPSTREAM_HOST:PORT
"""
import http.client
import http.server
import ssl
import sys

PORT, CERT, KEY, UPSTREAM = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
UP_HOST, UP_PORT = UPSTREAM.rsplit(":", 1)
HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}


class Forward(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def forward(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        conn = http.client.HTTPConnection(UP_HOST, int(UP_PORT), timeout=60)
        conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
        for k, v in self.headers.items():
            if k.lower() not in HOP:
                conn.putheader(k, v)
        conn.endheaders(body)
        resp = conn.getresponse()
        data = resp.read()
        self.send_response(resp.status, resp.reason)
        for k, v in resp.getheaders():
            # A HEAD answer's Content-Length is the object's size: pass it on as it is.
            if k.lower() not in HOP and (self.command == "HEAD" or k.lower() != "content-length"):
                self.send_header(k, v)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        conn.close()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = forward

    def log_message(self, *args):
        pass


ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(CERT, KEY)
server = http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Forward)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
print("ready", flush=True)
server.serve_forever()
