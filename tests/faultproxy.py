"""A fault-injecting HTTP/1.1 proxy on loopback, put in front of a real server (the moto S3 server, an
OpenAI-compatible stub) to see what srcal does when the network or the server misbehaves.

Why a proxy and not mocks: the failures that matter happen on the wire — a connection reset after half an
upload, a response whose ``Content-Length`` promises more bytes than arrive, a 503 burst from a load
balancer. Injecting them between the real client stack (boto3/urllib3, httpx) and a real server exercises
every layer that must notice them: botocore's retries, s3transfer's download retries, our own read retries,
and the completion-marker checks.

Usage::

    proxy = FaultProxy("http://127.0.0.1:5000")      # upstream
    proxy.add("status", method="PUT", status=503, times=3)   # the next 3 PUTs get a 503
    proxy.add("truncate", method="GET", path=r"/rft\\.jsonl$")
    ... point the client at proxy.url ...
    proxy.fired("status")  # how many times the fault was injected
    proxy.close()

Each request is matched against the rules in the order they were added; the first rule that matches and
still has ``times`` left fires (``times=None``: forever). Fault kinds:

* ``reset_upload`` — read half the request body, then reset the connection (TCP RST);
* ``status`` — answer ``status`` (default 503) with an S3-style XML error body, without forwarding;
* ``slow`` — forward, then wait ``delay`` seconds before answering;
* ``truncate`` — forward, send the response head (with the real ``Content-Length``) and half the body,
  then close the connection cleanly (FIN): the client gets fewer bytes than promised. An empty body (a
  PUT's answer) is cut before the head: the server did the work, the client never hears of it;
* ``reset_download`` — like ``truncate`` but ends with a reset (RST);
* ``corrupt`` — forward, flip one byte in the middle of the body (length unchanged); with
  ``strip_checksums`` the ``x-amz-checksum-*`` response headers go too, so only the marker's sha256 can
  notice.

``every=n`` fires on every n-th matching request only, to spread faults over a run of requests (a client
that retries then meets the next fault only after some successes, as on a flaky network).

``on_request(method, path)`` (optional) is called for every request before it is handled; a kill test uses
it to SIGKILL a process at an exact moment of an upload.
"""

from __future__ import annotations

import re
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

_ERRORS = {500: ("InternalError", "We encountered an internal error. Please try again."),
           502: ("BadGateway", "Bad gateway."),
           503: ("SlowDown", "Please reduce your request rate.")}


@dataclass
class Rule:
    kind: str
    method: str | None = None
    path: str | None = None  # a regular expression searched in the request target
    times: int | None = 1
    status: int = 503
    delay: float = 0.0
    every: int = 1  # fire on every n-th matching request (spreads faults over a run of requests)
    strip_checksums: bool = False  # corrupt: also drop x-amz-checksum-* headers, so no client check sees it
    fired: int = 0
    seen: int = 0
    _re: re.Pattern | None = field(default=None, repr=False)

    def matches(self, method: str, target: str) -> bool:
        if self.times is not None and self.fired >= self.times:
            return False
        if self.method and self.method != method:
            return False
        if self.path:
            self._re = self._re or re.compile(self.path)
            if not self._re.search(target):
                return False
        self.seen += 1
        return self.seen % self.every == 0


def _read_head(rfile) -> bytes | None:
    lines = []
    while True:
        line = rfile.readline(65537)
        if not line:
            return None  # the client closed the connection
        if not lines and line in (b"\r\n", b"\n"):
            continue
        lines.append(line)
        if line in (b"\r\n", b"\n"):
            return b"".join(lines)


def _headers(head: bytes) -> dict[str, str]:
    out = {}
    for line in head.split(b"\r\n")[1:]:
        if b":" in line:
            k, v = line.split(b":", 1)
            out[k.decode("latin-1").strip().lower()] = v.decode("latin-1").strip()
    return out


def _read_chunked(rfile, limit: int | None = None) -> bytes:
    """The raw bytes of a chunked body (framing included), or its first ``limit`` bytes."""
    out = bytearray()
    while True:
        size_line = rfile.readline(65537)
        out += size_line
        size = int(size_line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while True:  # trailers, then the empty line
                line = rfile.readline(65537)
                out += line
                if line in (b"\r\n", b"\n", b""):
                    return bytes(out)
        out += rfile.read(size + 2)
        if limit is not None and len(out) >= limit:
            return bytes(out[:limit])


def _rst(conn: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a crashed peer or a dropping middlebox does."""
    try:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        conn.close()


def _without(head: bytes, names: set[str], add: bytes = b"") -> bytes:
    lines = head.rstrip(b"\r\n").split(b"\r\n")
    kept = [lines[0]] + [ln for ln in lines[1:] if ln.split(b":", 1)[0].strip().lower().decode("latin-1") not in names]
    return b"\r\n".join(kept) + b"\r\n" + add + b"\r\n"


class FaultProxy:
    """A threaded loopback proxy to ``upstream`` (``http://host:port``) that injects scripted faults."""

    def __init__(self, upstream: str, on_request: Callable[[str, str], None] | None = None):
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.rules: list[Rule] = []
        self.requests: list[tuple[str, str]] = []
        self.events: list[tuple[str, str, str]] = []  # (kind, method, target) of every injected fault
        self.on_request = on_request
        self.lock = threading.Lock()
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                try:
                    proxy._serve(self.request)
                except (ConnectionError, OSError):
                    pass  # the client went away (or we reset it on purpose)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    # -- script ------------------------------------------------------------------------------------

    def add(self, kind: str, *, method: str | None = None, path: str | None = None, times: int | None = 1,
            status: int = 503, delay: float = 0.0, every: int = 1, strip_checksums: bool = False) -> Rule:
        if kind not in ("reset_upload", "status", "slow", "truncate", "reset_download", "corrupt"):
            raise ValueError(f"unknown fault kind {kind!r}")
        rule = Rule(kind, method, path, times, status, delay, every, strip_checksums)
        with self.lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self.lock:
            self.rules.clear()

    def fired(self, kind: str | None = None) -> int:
        with self.lock:
            return sum(1 for e in self.events if kind is None or e[0] == kind)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- serving -----------------------------------------------------------------------------------

    def _pick(self, method: str, target: str) -> Rule | None:
        with self.lock:
            self.requests.append((method, target))
            for rule in self.rules:
                if rule.matches(method, target):
                    rule.fired += 1
                    self.events.append((rule.kind, method, target))
                    return rule
        return None

    def _serve(self, conn: socket.socket) -> None:
        rfile = conn.makefile("rb")
        while True:
            head = _read_head(rfile)
            if head is None:
                return
            method, target = head.split(b" ", 2)[:2]
            method, target = method.decode(), target.decode("latin-1")
            hdrs = _headers(head)
            if self.on_request is not None:
                self.on_request(method, target)
            rule = self._pick(method, target)
            kind = rule.kind if rule else None
            if hdrs.get("expect", "").lower() == "100-continue":
                conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            chunked = "chunked" in hdrs.get("transfer-encoding", "").lower()
            length = int(hdrs.get("content-length", "0") or 0)
            if kind == "reset_upload":
                if chunked:
                    _read_chunked(rfile, limit=64)
                else:
                    rfile.read(length // 2)
                _rst(conn)
                return
            body = _read_chunked(rfile) if chunked else rfile.read(length)
            if not chunked and len(body) < length:
                return  # the client died mid-request (a kill test): forward nothing half-sent
            if kind == "status":
                code, message = _ERRORS.get(rule.status, ("Error", "Injected error."))
                xml = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}'
                       "</Message><RequestId>faultproxy</RequestId></Error>").encode()
                payload = b"" if method == "HEAD" else xml
                conn.sendall(f"HTTP/1.1 {rule.status} Injected\r\nContent-Type: application/xml\r\n"
                             f"Content-Length: {len(xml)}\r\n\r\n".encode() + payload)
                continue
            resp = self._forward(head, body)
            resp_head, _, resp_body = resp.partition(b"\r\n\r\n")
            rh = _headers(resp_head + b"\r\n")
            framed = "content-length" in rh or "chunked" in rh.get("transfer-encoding", "").lower() \
                or method == "HEAD" or resp_head.split(b" ", 2)[1] in (b"204", b"304")
            drop = {"connection", "keep-alive"}
            if kind == "corrupt" and rule.strip_checksums:
                drop |= {k for k in rh if k.startswith("x-amz-checksum-")}
            out_head = _without(resp_head + b"\r\n\r\n", drop, b"" if framed else b"Connection: close\r\n")
            if kind == "slow":
                time.sleep(rule.delay)
            if kind in ("truncate", "reset_download"):
                # Half the body; an empty body (a PUT's answer) is cut before the head: the request was
                # carried out but the client never learns it.
                conn.sendall(out_head + resp_body[: len(resp_body) // 2] if resp_body else b"")
                if kind == "truncate":
                    conn.shutdown(socket.SHUT_WR)
                    conn.close()
                else:
                    _rst(conn)
                return
            if kind == "corrupt" and resp_body:
                i = len(resp_body) // 2
                resp_body = resp_body[:i] + bytes([resp_body[i] ^ 0xFF]) + resp_body[i + 1:]
            conn.sendall(out_head + resp_body)
            if not framed:
                conn.close()
                return

    def _forward(self, head: bytes, body: bytes) -> bytes:
        """One request to the upstream on a fresh connection (``Connection: close``); the whole response."""
        with socket.create_connection(self.upstream, timeout=60) as up:
            up.sendall(_without(head, {"connection", "expect", "keep-alive"}, b"Connection: close\r\n") + body)
            chunks = []
            while data := up.recv(1 << 16):
                chunks.append(data)
        return b"".join(chunks)
