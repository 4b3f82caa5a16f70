"""A loopback HTTP/1.1 reverse proxy that injects faults between a client and a registry.

The proxy listens on ``127.0.0.1`` and forwards every request to one plain-HTTP upstream
(normally a ``docker-registry`` from :mod:`harness.registry`). Bodies stream in both
directions in bounded chunks, so blobs of any size pass without being held in memory. The
``Host`` header is forwarded unchanged, so the registry builds its ``Location`` URLs for the
proxy's address and the client keeps talking through the proxy.

A *fault plan* is a list of :class:`Rule`. A rule matches a method and a regular expression
searched in the request target (path and query); each match counts as one *occurrence* of
that rule, and the rule fires on chosen occurrences (``nth``), on every one (``every``), or
with a probability drawn from the proxy's seeded RNG, at most ``limit`` times. The first rule
that fires decides the request's fault; requests no rule fires for are forwarded untouched.

Faults (:class:`Fault`):

``reset``
    Abort the client's connection with a TCP RST (``SO_LINGER`` 0). ``phase`` says when:
    ``request`` (as soon as the headers arrived, nothing forwarded), ``request_body`` (after
    ``after_bytes`` of the request body were forwarded; the upstream connection is dropped
    too, so the registry sees a cut upload), ``response`` (the request was fully forwarded and
    answered upstream, the client gets nothing), ``response_body`` (headers and
    ``after_bytes`` of the response body sent).
``status``
    Read and discard the request body, then answer ``status`` (500, 502, 503, 429, ...) with a
    distribution-style JSON error and, if given, ``Retry-After``; the upstream never sees it.
``stall``
    Wait ``seconds`` (cut short when the proxy stops) before forwarding (``phase="request"``)
    or before answering (``phase="response"``), then behave normally.
``truncate``
    Forward, send the real headers (true ``Content-Length``) but only ``after_bytes`` of the
    body (half of it when ``after_bytes`` is None), then close the connection.
``lie_length``
    Forward, send a ``Content-Length`` of the real length plus ``delta`` (negative: smaller),
    send the whole real body, then close the connection.

Counters: :attr:`FaultProxy.injected` (per fault kind), :attr:`Rule.fired` and
:attr:`Rule.seen` (per rule), :attr:`FaultProxy.requests` (every request the proxy parsed)
and :attr:`FaultProxy.log` (method, target, status or fault; bounded).

Usage::

    with FaultProxy(reg.host) as proxy:
        proxy.add(Rule("PUT", r"/blobs/uploads/", Fault("status", status=503), nth={1}))
        ...  # point the client at proxy.host
        assert proxy.injected["status"] == 1
"""

from __future__ import annotations

import collections
import contextlib
import http.client
import json
import random
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FAULT_KINDS", "Fault", "FaultProxy", "Rule"]

FAULT_KINDS = ("reset", "status", "stall", "truncate", "lie_length")
PHASES = ("request", "request_body", "response", "response_body")
CHUNK = 256 * 1024
MAX_LINE = 65536
MAX_HEADERS = 200
MAX_STALL_S = 60.0
LOG_LIMIT = 20000
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "proxy-connection",
    }
)
REASONS = {
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    400: "Bad Request",
}


@dataclass(frozen=True)
class Fault:
    """What to do to a matched request (see the module docstring)."""

    kind: str
    phase: str = "request"
    status: int = 503
    retry_after: int | None = None
    seconds: float = 0.0
    after_bytes: int | None = None
    delta: int = 0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {self.kind!r}; expected one of {FAULT_KINDS}")
        if self.phase not in PHASES:
            raise ValueError(f"unknown phase {self.phase!r}; expected one of {PHASES}")
        if not 0 <= self.seconds <= MAX_STALL_S:
            raise ValueError(f"stall of {self.seconds}s is outside 0..{MAX_STALL_S}s")
        if self.kind == "lie_length" and self.delta == 0:
            raise ValueError("lie_length needs a non-zero delta")


@dataclass
class Rule:
    """Match ``method`` (exact, or ``None`` for any) and ``path`` (regex searched in the
    request target); fire on occurrence numbers in ``nth`` (1-based), on ``every`` one, or
    with ``probability``; at most ``limit`` times (``None``: unbounded)."""

    method: str | None
    path: str
    fault: Fault
    nth: frozenset[int] | set[int] | None = None
    every: bool = False
    probability: float | None = None
    limit: int | None = None
    name: str = ""
    seen: int = 0
    fired: int = 0
    _pattern: re.Pattern[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        chosen = [self.nth is not None, self.every, self.probability is not None]
        if sum(chosen) != 1:
            raise ValueError("a rule fires on nth occurrences, on every one, or by probability")
        if self.probability is not None and not 0.0 <= self.probability <= 1.0:
            raise ValueError("probability must lie in 0..1")
        self._pattern = re.compile(self.path)
        self.name = self.name or f"{self.method or '*'} {self.path} {self.fault.kind}"

    def matches(self, method: str, target: str) -> bool:
        return (self.method is None or self.method == method) and bool(self._pattern.search(target))

    def decide(self, rng: random.Random) -> bool:
        """Called once per matching request, under the proxy's lock."""
        self.seen += 1
        if self.limit is not None and self.fired >= self.limit:
            return False
        if self.nth is not None:
            fire = self.seen in self.nth
        elif self.every:
            fire = True
        else:
            assert self.probability is not None
            fire = rng.random() < self.probability
        if fire:
            self.fired += 1
        return fire


class _Abort(Exception):
    """The connection with the client is over (fault, protocol error or peer gone)."""


@dataclass
class _Request:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]

    def header(self, name: str) -> str | None:
        lname = name.lower()
        for key, value in self.headers:
            if key.lower() == lname:
                return value
        return None


class FaultProxy:
    """The proxy. ``upstream`` is ``host:port`` of a plain-HTTP server on loopback."""

    def __init__(
        self,
        upstream: str,
        *,
        seed: int = 0,
        timeout: float = 60.0,
        upstream_failure: str = "reset",
    ) -> None:
        if upstream_failure not in ("reset", "502"):
            raise ValueError("upstream_failure is 'reset' or '502'")
        self._upstream = upstream
        self.seed = seed
        self.timeout = timeout
        self.upstream_failure = upstream_failure
        self.rules: list[Rule] = []
        self.injected: collections.Counter[str] = collections.Counter()
        self.requests = 0
        self.upstream_errors = 0
        self.tls_probes = 0
        self.log: collections.deque[tuple[str, str, str]] = collections.deque(maxlen=LOG_LIMIT)
        self.hooks: list[Callable[[str, str], None]] = []
        self.hook_errors: list[BaseException] = []
        self.leaked_threads: list[str] = []
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._workers: set[threading.Thread] = set()
        self._clients: set[socket.socket] = set()
        self._upstreams: set[_Upstream] = set()
        self._port = 0

    # ------------------------------------------------------------------ plan and state
    @property
    def host(self) -> str:
        """``127.0.0.1:PORT`` of the proxy (what the client is pointed at)."""
        return f"127.0.0.1:{self._port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def ref(self, name: str) -> str:
        return f"{self.host}/{name}"

    @property
    def upstream(self) -> str:
        with self._lock:
            return self._upstream

    def set_upstream(self, upstream: str) -> None:
        """Send new connections to another upstream (a registry restarted on a new port)."""
        with self._lock:
            self._upstream = upstream

    def add(self, *rules: Rule) -> FaultProxy:
        with self._lock:
            self.rules.extend(rules)
        return self

    def clear(self) -> None:
        """Drop every rule (counters are kept)."""
        with self._lock:
            self.rules.clear()

    def on_request(self, hook: Callable[[str, str], None]) -> None:
        """Call ``hook(method, target)`` before each request is forwarded upstream. Whatever
        it raises is kept in :attr:`hook_errors` and does not disturb the request."""
        with self._lock:
            self.hooks.append(hook)

    @property
    def total_injected(self) -> int:
        with self._lock:
            return sum(self.injected.values())

    def _choose(self, method: str, target: str) -> Rule | None:
        with self._lock:
            self.requests += 1
            for rule in self.rules:
                if rule.matches(method, target) and rule.decide(self._rng):
                    self.injected[rule.fault.kind] += 1
                    return rule
        return None

    def _note(self, method: str, target: str, outcome: str) -> None:
        with self._lock:
            self.log.append((method, target, outcome))

    # ---------------------------------------------------------------------- lifecycle
    def start(self) -> FaultProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        listener.settimeout(0.1)
        self._listener = listener
        self._port = int(listener.getsockname()[1])
        self._acceptor = threading.Thread(
            target=self._accept_loop, name="faultproxy-accept", daemon=True
        )
        self._acceptor.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, cut every open connection, join every thread (bounded)."""
        self._stop.set()
        if self._acceptor is not None:
            self._acceptor.join(timeout)
            if self._acceptor.is_alive():
                self.leaked_threads.append(self._acceptor.name)
            self._acceptor = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            clients = list(self._clients)
            workers = list(self._workers)
            upstreams = list(self._upstreams)
        for sock in clients:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for conn in upstreams:
            conn.cut()
        deadline = time.monotonic() + timeout
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
            if worker.is_alive():
                self.leaked_threads.append(worker.name)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        listener = self._listener
        serial = 0
        while not self._stop.is_set():
            try:
                sock, _addr = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            serial += 1
            sock.settimeout(self.timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            worker = threading.Thread(
                target=self._serve, args=(sock,), name=f"faultproxy-conn-{serial}", daemon=True
            )
            with self._lock:
                self._clients.add(sock)
                self._workers.add(worker)
                # Forget threads that are done so the set stays small on long runs.
                self._workers = {w for w in self._workers if w.is_alive() or w is worker}
            worker.start()

    # ------------------------------------------------------------------- one connection
    def _serve(self, sock: socket.socket) -> None:
        rfile = sock.makefile("rb")
        upstream: _Upstream | None = None
        try:
            if self._is_tls_hello(sock):
                # A client trying HTTPS first: answer in plain HTTP so its TLS layer reports a
                # wrong version (what a plain-HTTP registry does) and moves on to http.
                with self._lock:
                    self.tls_probes += 1
                sock.sendall(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
                return
            for _ in range(100000):  # keep-alive requests on this connection, bounded
                if self._stop.is_set():
                    return
                request = self._read_request(rfile)
                if request is None:
                    return
                upstream, keep = self._handle(sock, rfile, request, upstream)
                if not keep:
                    return
        except (_Abort, OSError, http.client.HTTPException, ValueError):
            return
        finally:
            if upstream is not None:
                upstream.close()
            with contextlib.suppress(OSError):
                rfile.close()
            with contextlib.suppress(OSError):
                sock.close()
            with self._lock:
                self._clients.discard(sock)

    @staticmethod
    def _is_tls_hello(sock: socket.socket) -> bool:
        try:
            first = sock.recv(1, socket.MSG_PEEK)
        except OSError:
            return False
        return first == b"\x16"

    @staticmethod
    def _read_request(rfile: Any) -> _Request | None:
        line = rfile.readline(MAX_LINE + 1)
        while line in (b"\r\n", b"\n"):  # tolerate stray blank lines between requests
            line = rfile.readline(MAX_LINE + 1)
        if not line:
            return None
        if len(line) > MAX_LINE:
            raise _Abort("request line too long")
        parts = line.decode("latin-1").rstrip("\r\n").split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _Abort(f"bad request line {line[:80]!r}")
        headers: list[tuple[str, str]] = []
        for _ in range(MAX_HEADERS + 1):
            raw = rfile.readline(MAX_LINE + 1)
            if not raw:
                raise _Abort("connection closed inside headers")
            if raw in (b"\r\n", b"\n"):
                return _Request(parts[0], parts[1], parts[2], headers)
            name, sep, value = raw.decode("latin-1").partition(":")
            if not sep:
                raise _Abort("malformed header")
            headers.append((name.strip(), value.strip()))
        raise _Abort("too many headers")

    def _body(self, rfile: Any, request: _Request) -> Iterator[bytes]:
        """The request body, decoded, in chunks of at most ``CHUNK`` bytes; a client that
        fails mid-body ends the connection (:class:`_Abort`), never counted as upstream's."""
        try:
            yield from self._body_raw(rfile, request)
        except OSError as exc:
            raise _Abort(f"client failed inside the body: {exc}") from None

    def _body_raw(self, rfile: Any, request: _Request) -> Iterator[bytes]:
        te = (request.header("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            for _ in range(10_000_000):
                size_line = rfile.readline(MAX_LINE + 1)
                if not size_line:
                    raise _Abort("client closed inside a chunked body")
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    for _ in range(MAX_HEADERS + 1):  # trailers, then the blank line
                        trailer = rfile.readline(MAX_LINE + 1)
                        if trailer in (b"\r\n", b"\n", b""):
                            return
                    raise _Abort("too many trailers")
                left = size
                while left:
                    data = rfile.read(min(CHUNK, left))
                    if not data:
                        raise _Abort("client closed inside a chunk")
                    left -= len(data)
                    yield data
                rfile.readline(MAX_LINE + 1)  # CRLF after the chunk
            raise _Abort("too many chunks")
        length = request.header("Content-Length")
        left = int(length) if length and length.isdigit() else 0
        while left:
            data = rfile.read(min(CHUNK, left))
            if not data:
                raise _Abort("client closed inside the body")
            left -= len(data)
            yield data

    def _handle(
        self,
        sock: socket.socket,
        rfile: Any,
        request: _Request,
        upstream: _Upstream | None,
    ) -> tuple[_Upstream | None, bool]:
        """Serve one request; returns the upstream connection to reuse and whether the client
        connection stays open."""
        method, target = request.method, request.target
        rule = self._choose(method, target)
        fault = rule.fault if rule is not None else None
        kind = fault.kind if fault is not None else None
        phase = fault.phase if fault is not None else None
        client_close = (request.header("Connection") or "").lower() == "close"

        if fault is not None and kind == "reset" and phase == "request":
            self._note(method, target, "reset:request")
            _reset(sock)
            raise _Abort("reset")
        if fault is not None and kind == "status":
            for _ in self._body(rfile, request):
                pass
            self._note(method, target, f"status:{fault.status}")
            _send_status(sock, fault.status, fault.retry_after)
            return upstream, False
        if fault is not None and kind == "stall" and phase == "request":
            self._note(method, target, f"stall:{fault.seconds}")
            self._stop.wait(fault.seconds)
            if self._stop.is_set():
                raise _Abort("stopping")

        for hook in list(self.hooks):
            try:
                hook(method, target)
            except BaseException as exc:  # kept for the test to assert on
                with self._lock:
                    self.hook_errors.append(exc)

        # Forward the request.
        want = self.upstream
        if upstream is not None and (upstream.address != want or upstream.dead):
            upstream.close()
            upstream = None
        if upstream is None:
            upstream = _Upstream(want, self.timeout, self._upstreams, self._lock)
        try:
            upstream.send_head(request)
            cut = (
                (fault.after_bytes or 0)
                if fault is not None and kind == "reset" and phase == "request_body"
                else None
            )
            sent = 0
            for data in self._body(rfile, request):
                if cut is not None and sent + len(data) >= cut:
                    upstream.send_body(data[: max(0, cut - sent)])
                    self._note(method, target, f"reset:request_body@{cut}")
                    upstream.close()
                    _reset(sock)
                    raise _Abort("reset")
                upstream.send_body(data)
                sent += len(data)
            if cut is not None:  # the body was shorter than the cut: cut at its end
                self._note(method, target, f"reset:request_body@{sent}")
                upstream.close()
                _reset(sock)
                raise _Abort("reset")
            upstream.end_body()
            resp = upstream.conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:  # the client's own failures are _Abort
            upstream.close()
            with self._lock:
                self.upstream_errors += 1
            self._note(method, target, f"upstream-error:{type(exc).__name__}")
            if self.upstream_failure == "502":
                _send_status(sock, 502, None)
                return None, False
            _reset(sock)
            raise _Abort("upstream failed") from None

        # Answer the client.
        try:
            return self._answer(sock, request, resp, upstream, fault, client_close)
        except BaseException:
            upstream.close()
            raise

    def _answer(
        self,
        sock: socket.socket,
        request: _Request,
        resp: http.client.HTTPResponse,
        upstream: _Upstream,
        fault: Fault | None,
        client_close: bool,
    ) -> tuple[_Upstream | None, bool]:
        method, target = request.method, request.target
        kind = fault.kind if fault is not None else None
        phase = fault.phase if fault is not None else None
        if fault is not None and kind == "reset" and phase == "response":
            self._note(method, target, f"reset:response({resp.status})")
            upstream.close()
            _reset(sock)
            raise _Abort("reset")
        if fault is not None and kind == "stall" and phase == "response":
            self._note(method, target, f"stall-response:{fault.seconds}")
            self._stop.wait(fault.seconds)
            if self._stop.is_set():
                raise _Abort("stopping")

        headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP]
        length_text = resp.getheader("Content-Length")
        length = int(length_text) if length_text and length_text.isdigit() else None
        no_body = method == "HEAD" or resp.status in (204, 304) or 100 <= resp.status < 200
        chunked = (
            not no_body
            and length is None
            and "chunked" in (resp.getheader("Transfer-Encoding") or "").lower()
        )
        body_faults = kind in ("truncate", "lie_length") or (
            kind == "reset" and phase == "response_body"
        )
        close_after = (
            client_close or body_faults or (not no_body and length is None and not chunked)
        )

        if kind == "lie_length" and length is not None:
            assert fault is not None
            declared = max(0, length + fault.delta)
            headers = [
                (k, str(declared) if k.lower() == "content-length" else v) for k, v in headers
            ]
        if chunked:
            headers.append(("Transfer-Encoding", "chunked"))
        if close_after:
            headers.append(("Connection", "close"))
        head = (
            f"HTTP/1.1 {resp.status} {resp.reason}\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in headers)
            + "\r\n"
        )
        sock.sendall(head.encode("latin-1"))

        limit: int | None = None
        outcome = str(resp.status)
        if kind == "truncate":
            assert fault is not None
            whole = length if length is not None else 0
            limit = fault.after_bytes if fault.after_bytes is not None else whole // 2
            outcome = f"truncate@{limit}/{length}"
        elif kind == "reset" and phase == "response_body":
            assert fault is not None
            limit = fault.after_bytes or 0
            outcome = f"reset:response_body@{limit}"
        elif kind == "lie_length":
            assert fault is not None
            outcome = f"lie_length:{fault.delta:+d}({length})"

        sent = 0
        if no_body:
            resp.read()  # lets the upstream connection serve the next request
        else:
            for _ in range(10_000_000):
                want = CHUNK if limit is None else min(CHUNK, limit - sent)
                if want <= 0:
                    break
                data = resp.read(want)
                if not data:
                    break
                if chunked:
                    sock.sendall(b"%x\r\n" % len(data) + data + b"\r\n")
                else:
                    sock.sendall(data)
                sent += len(data)
            if chunked and limit is None:
                sock.sendall(b"0\r\n\r\n")
        self._note(method, target, outcome)
        if kind == "reset" and phase == "response_body":
            upstream.close()
            _reset(sock)
            raise _Abort("reset")
        if limit is not None or kind == "lie_length":
            upstream.close()
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            raise _Abort("closed after a body fault")
        if resp.will_close or not resp.isclosed():
            upstream.close()
            upstream_out: _Upstream | None = None
        else:
            upstream_out = upstream
        return upstream_out, not close_after


class _Upstream:
    """One HTTP/1.1 connection to the upstream, reused across requests while it lasts."""

    def __init__(
        self, address: str, timeout: float, registry: set[_Upstream], lock: threading.Lock
    ) -> None:
        host, port = address.rsplit(":", 1)
        self.address = address
        self.conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
        self.dead = False
        self._chunked = False
        self._registry, self._lock = registry, lock
        with lock:
            registry.add(self)

    def cut(self) -> None:
        """Unblock a thread waiting on this connection (the proxy is stopping)."""
        sock = self.conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def send_head(self, request: _Request) -> None:
        self.conn.putrequest(
            request.method, request.target, skip_host=True, skip_accept_encoding=True
        )
        te = (request.header("Transfer-Encoding") or "").lower()
        self._chunked = "chunked" in te
        for name, value in request.headers:
            if name.lower() in HOP_BY_HOP:
                continue
            self.conn.putheader(name, value)
        if self._chunked:
            self.conn.putheader("Transfer-Encoding", "chunked")
        self.conn.endheaders()

    def send_body(self, data: bytes) -> None:
        if not data:
            return
        if self._chunked:
            self.conn.send(b"%x\r\n" % len(data) + data + b"\r\n")
        else:
            self.conn.send(data)

    def end_body(self) -> None:
        if self._chunked:
            self.conn.send(b"0\r\n\r\n")

    def close(self) -> None:
        self.dead = True
        with contextlib.suppress(Exception):
            self.conn.close()
        with self._lock:
            self._registry.discard(self)


def _reset(sock: socket.socket) -> None:
    """Make the coming close abort the connection with RST instead of an orderly FIN (the
    caller raises :class:`_Abort`; the connection's ``finally`` closes the socket)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _send_status(sock: socket.socket, status: int, retry_after: int | None) -> None:
    code = "TOOMANYREQUESTS" if status == 429 else "UNAVAILABLE"
    body = json.dumps(
        {"errors": [{"code": code, "message": f"injected fault: HTTP {status}"}]}
    ).encode()
    head = [
        f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    if retry_after is not None:
        head.append(f"Retry-After: {retry_after}")
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
