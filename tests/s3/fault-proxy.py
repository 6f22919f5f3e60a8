#!/usr/bin/env python3
"""An HTTP/1.1 proxy that injects faults between an S3 client and a gateway.

Point the client's endpoint at the proxy (AWS_ENDPOINT_URL=http://127.0.0.1:PORT)
and the proxy at the gateway (--upstream).  Requests and responses pass
through byte for byte: the Host header stays the one the client sent and
signed, so SigV4 signatures still match at the gateway.  Keep-alive,
Content-Length and chunked bodies, and Expect: 100-continue are relayed.

Faults come from rules, given with --rule JSON (repeatable) or in a JSON
control file (--control FILE: {"seed": 1, "rules": [...]}) that is read
again whenever it changes, so a test can change the faults mid-run; the
rules' counters restart then.  The first rule that fires for a request
decides its fate.  A rule is an object with:

  fault   "500"           answer 500 InternalError (S3 XML body), not forwarded
          "503"           answer 503 SlowDown (S3 XML body), not forwarded
          "drop-request"  read the headers and half the body, then close:
                          nothing reaches the gateway
          "drop-response" forward, then relay the status line, the headers
                          and `bytes` bytes of the body (default: half;
                          without a body, half the status line), then close:
                          the gateway did the work, the client never
                          learns it
          "delay"         wait `seconds` (default 1), then forward
          "hang"          read the request, then wait `seconds` (default
                          3600) and close: for client timeouts
          "cut"           close the connection at once, unanswered (a
                          network cut; use with "after")
  match   regex searched in "METHOD TARGET" (e.g. "^PUT .*partNumber=");
          default: every request
  rate    fraction of matching requests that get the fault (default 1),
          drawn from a random generator seeded by "seed" (default 0)
  after   let this many matching requests through first (default 0)
  count   fire at most this many times (default: no limit)

Each request gets one line in --log: its number, method, target and
outcome, e.g. "7 PUT /b/k?partNumber=2&uploadId=x fault 503" or
"8 GET /b/k pass 206".  The actual port goes to --port-file when listening
on port 0.
"""

import argparse
import json
import os
import random
import re
import socket
import sys
import threading
import time
import urllib.parse

FAULTS = ("500", "503", "drop-request", "drop-response", "delay", "hang",
          "cut")

ERROR_BODIES = {
    "500": ("500 Internal Server Error", "InternalError",
            "We encountered an internal error. Please try again."),
    "503": ("503 Slow Down", "SlowDown", "Please reduce your request rate."),
}


class Rule:
    def __init__(self, spec):
        unknown = set(spec) - {"fault", "match", "rate", "after", "count",
                               "seconds", "bytes"}
        if unknown:
            raise ValueError(f"unknown rule keys {sorted(unknown)}")
        self.fault = str(spec["fault"])
        if self.fault not in FAULTS:
            raise ValueError(f"fault '{self.fault}' is not one of {FAULTS}")
        self.match = re.compile(spec.get("match", ""))
        self.rate = float(spec.get("rate", 1))
        self.after = int(spec.get("after", 0))
        self.count = spec.get("count")
        self.seconds = spec.get("seconds")
        self.bytes = spec.get("bytes")
        self.seen = 0
        self.fired = 0


class Rules:
    """The rules in force, reloaded when the control file changes."""

    def __init__(self, cli_rules, control, seed):
        self.lock = threading.Lock()
        self.control = control
        self.mtime = None
        self.cli_rules = cli_rules
        self.rules = [Rule(r) for r in cli_rules]
        self.seed = seed
        self.rng = random.Random(seed)
        self.reload()

    def reload(self):
        if not self.control:
            return
        try:
            st = os.stat(self.control)
        except FileNotFoundError:
            return
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == self.mtime:
            return
        with open(self.control) as f:
            text = f.read()
        conf = json.loads(text) if text.strip() else {}
        self.rules = ([Rule(r) for r in self.cli_rules] +
                      [Rule(r) for r in conf.get("rules", [])])
        self.rng = random.Random(conf.get("seed", self.seed))
        self.mtime = stamp

    def decide(self, request_line):
        """The rule that fires for this request, or None."""
        with self.lock:
            try:
                self.reload()
            except (OSError, ValueError) as e:
                print(f"fault-proxy: control file: {e}", file=sys.stderr)
            for rule in self.rules:
                if not rule.match.search(request_line):
                    continue
                rule.seen += 1
                if rule.seen <= rule.after:
                    continue
                if rule.count is not None and rule.fired >= int(rule.count):
                    continue
                if rule.rate < 1 and self.rng.random() >= rule.rate:
                    continue
                rule.fired += 1
                return rule
            return None


class Log:
    def __init__(self, path):
        self.lock = threading.Lock()
        self.f = open(path, "a", buffering=1) if path else None
        self.n = 0

    def next_number(self):
        with self.lock:
            self.n += 1
            return self.n

    def line(self, text):
        if self.f:
            with self.lock:
                self.f.write(text + "\n")


class Closed(Exception):
    """The peer closed the connection where a message was expected."""


class Reader:
    """Buffered reads from a socket that keep the raw bytes."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise Closed()
        self.buf += data

    def until(self, marker, limit=1 << 20):
        while marker not in self.buf:
            if len(self.buf) > limit:
                raise ValueError("header too long")
            self.fill()
        i = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def some(self, n):
        """Up to n bytes, at least one."""
        if not self.buf:
            self.fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


def parse_head(raw):
    """The start line and the headers (lowercase names) of a message head."""
    lines = raw.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return lines[0], headers


def relay_body(reader, headers, sink, limit=None):
    """Copy one message body from reader to sink(bytes), framed by the
    headers (Content-Length or chunked).  With limit, stop after that many
    bytes and return False."""
    sent = 0

    def out(data):
        nonlocal sent
        if limit is not None and sent + len(data) > limit:
            sink(data[:limit - sent])
            sent = limit
            return False
        sink(data)
        sent += len(data)
        return True

    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size_line = reader.until(b"\r\n")
            if not out(size_line):
                return False
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                while True:
                    trailer = reader.until(b"\r\n")
                    if not out(trailer):
                        return False
                    if trailer == b"\r\n":
                        return True
            left = size + 2
            while left:
                data = reader.some(left)
                left -= len(data)
                if not out(data):
                    return False
    left = int(headers.get("content-length", "0") or 0)
    while left:
        data = reader.some(min(left, 65536))
        left -= len(data)
        if not out(data):
            return False
    return True


def body_length(headers):
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return None
    return int(headers.get("content-length", "0") or 0)


def response_has_body(method, status):
    return not (method == "HEAD" or 100 <= status < 200 or
                status in (204, 304))


class Proxy:
    def __init__(self, upstream, rules, log):
        self.upstream = upstream
        self.rules = rules
        self.log = log

    def connect_upstream(self):
        return socket.create_connection(self.upstream, timeout=600)

    def serve(self, client):
        up = None
        try:
            client.settimeout(600)
            creader = Reader(client)
            while True:
                try:
                    head = creader.until(b"\r\n\r\n")
                except Closed:
                    return
                line, headers = parse_head(head)
                method, target = line.split(" ")[:2]
                n = self.log.next_number()
                request = f"{method} {target}"
                rule = self.rules.decide(request)
                fault = rule.fault if rule else None

                if fault == "cut":
                    self.log.line(f"{n} {request} fault cut")
                    return
                if fault == "drop-request":
                    length = body_length(headers)
                    half = (length or 0) // 2
                    if half:
                        relay_body(creader, headers, lambda d: None, half)
                    self.log.line(f"{n} {request} fault drop-request")
                    return
                expect = headers.get("expect", "").lower() == "100-continue"
                if fault in ERROR_BODIES:
                    keep = not expect
                    if keep:
                        relay_body(creader, headers, lambda d: None)
                    self.send_error(client, method, fault, n, keep)
                    self.log.line(f"{n} {request} fault {fault}")
                    if not keep:
                        return
                    continue
                if fault == "hang":
                    if not expect:
                        relay_body(creader, headers, lambda d: None)
                    self.log.line(f"{n} {request} fault hang")
                    time.sleep(float(rule.seconds or 3600))
                    return
                if fault == "delay":
                    time.sleep(float(rule.seconds or 1))

                if up is None:
                    up = self.connect_upstream()
                    ureader = Reader(up)
                up.sendall(head)
                status, rhead, rheaders, body_sent = self.forward_body(
                    client, creader, up, ureader, headers, expect)
                outcome = f"fault {fault} " if fault == "delay" else ""
                if fault == "drop-response":
                    limit = rule.bytes
                    length = (body_length(rheaders) or 0
                              if response_has_body(method, status) else 0)
                    if limit is None:
                        limit = length // 2
                    if length == 0:
                        # Nothing to cut in the body: cut the status line
                        # (a client may accept a head cut later).
                        client.sendall(rhead[:rhead.index(b"\r\n") // 2])
                    else:
                        client.sendall(rhead)
                        relay_body(ureader, rheaders, client.sendall,
                                   int(limit))
                    self.log.line(f"{n} {request} fault drop-response "
                                  f"{status}")
                    return
                client.sendall(rhead)
                if response_has_body(method, status):
                    if ("content-length" in rheaders or "chunked" in
                            rheaders.get("transfer-encoding", "").lower()):
                        relay_body(ureader, rheaders, client.sendall)
                    else:
                        self.relay_until_close(ureader, client)
                        self.log.line(f"{n} {request} {outcome}pass {status}")
                        return
                self.log.line(f"{n} {request} {outcome}pass {status}")
                if rheaders.get("connection", "").lower() == "close":
                    up.close()
                    up = None
                if (headers.get("connection", "").lower() == "close" or
                        not body_sent):
                    return
        except (Closed, OSError, ValueError):
            return
        finally:
            client.close()
            if up is not None:
                up.close()

    def forward_body(self, client, creader, up, ureader, headers, expect):
        """Send the request body upstream and read the final response
        head, relaying a 100 Continue when the client asked for one."""
        if expect:
            head = ureader.until(b"\r\n\r\n")
            line, rheaders = parse_head(head)
            status = int(line.split(" ")[1])
            if status == 100:
                client.sendall(head)
                relay_body(creader, headers, up.sendall)
            else:
                # The gateway answered without taking the body: the
                # client's connection cannot be reused.
                return status, head, rheaders, False
        else:
            relay_body(creader, headers, up.sendall)
        while True:
            head = ureader.until(b"\r\n\r\n")
            line, rheaders = parse_head(head)
            status = int(line.split(" ")[1])
            if status >= 200:
                return status, head, rheaders, True
            client.sendall(head)

    def relay_until_close(self, reader, client):
        if reader.buf:
            client.sendall(reader.buf)
            reader.buf = b""
        while True:
            data = reader.sock.recv(65536)
            if not data:
                return
            client.sendall(data)

    def send_error(self, client, method, fault, n, keep):
        status, code, message = ERROR_BODIES[fault]
        body = ('<?xml version="1.0" encoding="UTF-8"?>'
                f"<Error><Code>{code}</Code><Message>{message}</Message>"
                f"<RequestId>fault-proxy-{n}</RequestId></Error>").encode()
        head = (f"HTTP/1.1 {status}\r\n"
                "Content-Type: application/xml\r\n"
                f"Content-Length: {len(body)}\r\n"
                f"x-amz-request-id: fault-proxy-{n}\r\n"
                f"Connection: {'keep-alive' if keep else 'close'}\r\n"
                "\r\n").encode()
        client.sendall(head + (b"" if method == "HEAD" else body))


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--listen", default="127.0.0.1:0",
                    help="HOST:PORT to listen on (port 0: any free port)")
    ap.add_argument("--port-file", help="write the port here once listening")
    ap.add_argument("--upstream", default=os.environ.get("AWS_ENDPOINT_URL"),
                    help="the gateway's URL (default: $AWS_ENDPOINT_URL)")
    ap.add_argument("--rule", action="append", default=[],
                    help="a fault rule as a JSON object (repeatable)")
    ap.add_argument("--control", help="JSON control file, reread on change")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--log", help="append one line per request here")
    args = ap.parse_args()
    if not args.upstream:
        ap.error("no --upstream and no AWS_ENDPOINT_URL")
    url = urllib.parse.urlsplit(args.upstream)
    if url.scheme != "http":
        ap.error("--upstream must be an http:// URL")
    upstream = (url.hostname, url.port or 80)
    try:
        rules = Rules([json.loads(r) for r in args.rule], args.control,
                      args.seed)
    except (ValueError, KeyError, OSError) as e:
        ap.error(f"bad rule: {e}")
    host, port = args.listen.rsplit(":", 1)
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, int(port)))
    srv.listen(128)
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{srv.getsockname()[1]}\n")
        os.replace(tmp, args.port_file)
    proxy = Proxy(upstream, rules, Log(args.log))
    while True:
        client, _ = srv.accept()
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=proxy.serve, args=(client,),
                         daemon=True).start()


if __name__ == "__main__":
    main()
