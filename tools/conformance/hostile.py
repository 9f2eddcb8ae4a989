#!/usr/bin/env python3
"""Hostile input against a real eventlogd: the server answers each with the right status or close
code, stays up and bounded in memory, and stores nothing it should not.

Server A runs with the default limits, server B with small ones (--max-body-bytes 4096,
--max-event-bytes 1024, --max-ws-frame-bytes 4096, --max-connections 64); both keep a 1 MiB
in-memory tail (see Memory below). Raw sockets (lib.RawHTTP, lib.RawWebSocket) send what a
well-behaved client would not:

  a) malformed HTTP: garbage request lines, bad header syntax, unknown methods, HTTP/0.9, invalid
     chunked encoding, Content-Length + Transfer-Encoding, bad Content-Length values -> 400 and the
     connection closed; huge headers and request lines (> 64 KB) -> 431 or 400 and closed.
  b) huge Content-Length -> 413 body_too_large without the body being sent (also with
     Expect: 100-continue, and no 100 Continue); a chunked body over the limit -> 413.
  c) a body longer than Content-Length (pipelined garbage): the request is answered, the garbage
     gets 400 and a close; pipelined valid requests are answered in order; a truncated body with a
     half-closed socket stores nothing.
  d) HTTP/1.0 requests (plain, publish, SSE without chunked encoding); TRACE, CONNECT, PUT,
     DELETE, PATCH -> 405 method_not_allowed (JSON, Allow) or 400; the connection stays usable;
     odd upgrade requests (WebSocket version 8, no key, h2c) get an ordinary answer, not a hang.
  e) invalid JSON bodies and fields -> 400 malformed_json / invalid_field / invalid_topic,
     415 for a wrong content type; NDJSON all-or-nothing with the failing index.
  f) SSE field injection: CR, LF or NUL in type and key, reserved `eventlog.*` types, empty and
     over-long values -> 400 invalid_type / invalid_key (HTTP, NDJSON, WebSocket), nothing
     stored; data that looks like SSE fields is stored and delivered as data lines only.
  g) malformed Last-Event-ID header and lastEventId parameter -> 400 invalid_last_event_id.
  h) tampered, truncated, foreign and non-string resume tokens -> invalid_resume_token, nothing
     replayed, the connection stays usable.
  i) WebSocket garbage: random bytes, reserved opcodes, RSV bits, unmasked frames, oversized or
     fragmented control frames, orphan continuations, bad close frames (1002), absurd length
     fields, frames and reassembled messages over the limit (1009), fragmented messages under it
     (accepted), binary (1003), invalid UTF-8 (1007), more than 20 bad messages (1008), a ping
     flood from a client that never reads.
  j) slowloris: 200 partial request heads and 20 partial bodies trickled byte by byte; other
     clients are answered quickly meanwhile; all of them are closed within the 30 s request
     timeout (+ slack).
  k) a connection flood over --max-connections -> 503 too_many_connections, and recovery.

After every step: /healthz answers 200 quickly and VmRSS stays under 200 MB. The battery runs
six times per server (rounds 2-6 must give round 1's results). At the end each log holds exactly the
events this script published legitimately (compared by id, topic, data), and the server log shows no
crash.

Memory: the question is whether hostile input makes the server keep anything once its caches are
full, so the check is that RSS stays flat after a warm-up: from the end of round 2 to the end of
round 6 it may grow by less than 1 MiB. Three things make RSS grow legitimately, and are dealt with:
- The log's in-memory tail keeps recent events up to --tail-bytes (64 MiB by default), and every
  round publishes a 512 KiB event on A, so with the default it grows 0.5 MiB a round for 128
  rounds. Both servers run with --tail-bytes 1 MiB, and A gets six 512 KiB events before round 1,
  which fill the tail and SQLite's page caches (2 MB a connection).
- glibc keeps freed memory in per-thread arenas, and once a buffer of more than 128 KiB was freed
  its dynamic mmap threshold rises, so later 1-8 MiB buffers come from whichever arena the thread
  serving them uses and stay there: RSS then jumped by 8-12 MB at random rounds while the live heap
  stayed flat (measured with malloc_stats: 4.9 MB in use, 26-48 MB held). The servers run with
  MALLOC_MMAP_THRESHOLD_=131072 (glibc's default value, fixed), so RSS follows the live heap.
- What a connection leaves behind for a bounded time (a timer not yet fired) grows until the
  oldest expire, then levels. Since the request timeout is cancelled with its connection, that is
  under 1 KB a connection (it was 4.5 KB for 30 s: the timer held the closed channel).
What a leak adds, against 1 MiB over four rounds: keeping one of a round's large buffers (a 1 MiB
WebSocket frame, a chunked body cut at 8 MiB, a 1 MB JSON string) is 1 MiB or more a round; keeping
every HTTP connection's closed channel (about 4 KB each) grew RSS by 1.9 MB on A and 1.6 MB on B
over the four rounds (measured with such a leak built in); WebSocket connections hold more (about
34 KB each while open). Smaller leaks go unseen by RSS, but a connection left open is caught exactly:
after the rounds /metrics must count one open connection (the one asking) and the process must hold
two sockets (that one and the listener).

Usage: python3 tools/conformance/hostile.py [path/to/eventlogd]   (or set EVENTLOGD)
Prints `ok - ...` / `FAIL - ...` per check and ends with `N passed, M failed`; exits 1 on failure.
"""

from __future__ import annotations

import json
import os
import random
import re
import select
import signal
import socket
import sys
import threading
import time
from typing import Any, Optional
from urllib.parse import quote

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import httpx  # noqa: E402

from lib import (  # noqa: E402
    HOST,
    Checks,
    CurlStream,
    HTTPClosed,
    RawHTTP,
    RawResponse,
    RawWebSocket,
    Server,
    StreamEnded,
    WSClosed,
    WSOpcode,
    all_history,
    eventlogd_path,
    install_deadline,
    raw_exchange,
    rss_bytes,
)

ROUNDS = 6
WARMUP_ROUNDS = 2  # RSS may still rise while these run; after them it must stay flat (see the docstring)
RSS_LIMIT = 200 * 1024 * 1024
RSS_STEADY_LIMIT = 1024 * 1024  # growth allowed over the ROUNDS - WARMUP_ROUNDS rounds after the warm-up
TAIL_BYTES = 1 << 20  # --tail-bytes for both servers: full after the warm-up events, not after 64 MiB
WARMUP_EVENTS = 6  # 512 KiB events published on A before round 1 (see the docstring)
# A fixed threshold turns off glibc's dynamic one, so buffers over 128 KiB are mapped on their own and
# unmapped when freed instead of staying in whichever thread's arena served them (other libcs ignore it).
SERVER_ENV = {"MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
CLOSE_WITHIN = 5.0  # seconds: "400 and close" means closed within this
REQUEST_TIMEOUT = 30.0  # the server's request timeout (no flag)
SLOWLORIS_BOUND = 40.0  # every slowloris connection must be closed within this many seconds
SMALL_BODY = 4096
SMALL_EVENT = 1024
SMALL_FRAME = 4096
SMALL_CONNECTIONS = 64
HEALTH_LATENCY = 2.0  # seconds

checks = Checks()
BINARY: Optional[str] = None


# --------------------------------------------------------------------------------------------
# Bookkeeping: one server, what was published legitimately, memory samples.


class Target:
    def __init__(self, server: Server, label: str) -> None:
        self.server = server
        self.label = label
        self.legit: dict = {}  # id -> (topic, data as history returns it)
        self.rss: list = []  # (step, bytes)

    @property
    def port(self) -> int:
        assert self.server.port is not None
        return self.server.port

    def publish(self, topic: str, data: Any, **kwargs: Any) -> dict:
        answer = self.server.publish(topic, data, **kwargs)
        self.legit[answer["id"]] = (topic, data)
        return answer

    def record(self, event_id: int, topic: str, data: Any) -> None:
        self.legit[event_id] = (topic, data)


def check_key(name: str) -> str:
    """A check's name without its numbers (counts and timings change from round to round)."""
    return re.sub(r"\d+(\.\d+)?", "#", name)


class Sink:
    """Where a step's checks go: printed one by one (round 1), or compared with round 1 and
    reported as one check per round (the later rounds, which repeat round 1 to watch memory): a
    check that passed in round 1 must pass again; one that failed in round 1 was reported then."""

    def __init__(self, verbose: bool, label: str, first: Optional["Sink"] = None) -> None:
        self.verbose = verbose
        self.label = label
        self.first = first
        self.count = 0
        self.failed_keys: set = set()
        self.regressions: list = []
        self.repeated = 0

    def check(self, condition: Any, name: str, detail: Any = None) -> bool:
        self.count += 1
        if not condition:
            self.failed_keys.add(check_key(name))
        if self.verbose:
            return checks.check(condition, name, detail)
        if not condition:
            if self.first is not None and check_key(name) in self.first.failed_keys:
                self.repeated += 1
            else:
                self.regressions.append(f"{name}: {detail}" if detail is not None else name)
        return bool(condition)

    def equal(self, actual: Any, expected: Any, name: str) -> bool:
        return self.check(actual == expected, name, f"expected {expected!r}, got {actual!r}")

    def finish(self) -> None:
        if not self.verbose:
            note = f" ({self.repeated} failures of round 1 repeat, not counted again)" if self.repeated else ""
            checks.check(not self.regressions,
                         f"{self.label}: the {self.count} checks give the results of round 1{note}",
                         self.regressions[:8])


def alive(target: Target, sink: Sink, step: str) -> None:
    """The server runs, a new client gets /healthz 200 quickly, RSS is bounded."""
    server = target.server
    started = time.monotonic()
    try:
        response = httpx.get(server.url("/healthz"), timeout=5.0, headers={"Connection": "close"}, trust_env=False)
        status: Any = response.status_code
    except httpx.HTTPError as error:
        status = repr(error)
    latency = time.monotonic() - started
    rss = rss_bytes(server.proc.pid) if server.proc is not None else None
    target.rss.append((step, rss))
    ok = server.running and status == 200 and latency < HEALTH_LATENCY and rss is not None and rss < RSS_LIMIT
    detail = {"running": server.running, "healthz": status, "latency_s": round(latency, 3),
              "rss_mb": round(rss / 1048576, 1) if rss else None}
    if not server.running:
        detail["log"] = server.log_tail(40)
    sink.check(ok, f"{target.label}: after {step}: up, /healthz 200 in {latency * 1000:.0f} ms, "
                   f"RSS {rss / 1048576 if rss else 0:.1f} MB", detail)
    if not server.running:
        raise RuntimeError(f"{target.label} is down after {step}")


def describe(outcome: Any) -> str:
    return outcome.short() if isinstance(outcome, RawResponse) else repr(outcome)


def wait_all_closed(conns: list, seconds: float) -> list:
    """Which of `conns` (RawHTTP) the server closed within `seconds` in all (one shared deadline)."""
    deadline = time.monotonic() + seconds
    result = []
    for conn in conns:
        result.append(conn.closed_within(max(0.05, deadline - time.monotonic())))
    return result


def http_request(method: str, path: str, headers: Optional[list] = None, body: bytes = b"",
                 version: str = "HTTP/1.1", content_length: bool = True) -> bytes:
    lines = [f"{method} {path} {version}", f"Host: {HOST}"]
    for name, value in headers or []:
        lines.append(f"{name}: {value}")
    if content_length and body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def publish_bytes(topic: str, data: str) -> bytes:
    return json.dumps({"topic": topic, "data": data}).encode()


# --------------------------------------------------------------------------------------------
# a) malformed HTTP, huge headers


MALFORMED = [
    ("binary garbage as the request line", b"\x00\x01\x02garbage\xff\xfe\r\n\r\n"),
    ("a request line without a version", b"GET /healthz\r\nHost: x\r\n\r\n"),
    ("HTTP/9.9", b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n"),
    ("an unknown method FOO", b"FOO /v1/events HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("a header line without a colon", b"GET /healthz HTTP/1.1\r\nHost x\r\n\r\n"),
    ("a space before the header colon", b"GET /healthz HTTP/1.1\r\nHost : x\r\n\r\n"),
    ("a NUL byte in a header value", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n"),
    ("a control byte in the request target", b"GET /heal\x01thz HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("4 KB of random bytes", random.Random(7).randbytes(4096)),
    ("chunked: a size that is not hex",
     http_request("POST", "/v1/events", [("Content-Type", "application/json"), ("Transfer-Encoding", "chunked")])
     + b"zz\r\n{\"topic\":\"bad/chunk\"}\r\n0\r\n\r\n"),
    ("chunked: a size that overflows",
     http_request("POST", "/v1/events", [("Content-Type", "application/json"), ("Transfer-Encoding", "chunked")])
     + b"FFFFFFFFFFFFFFFFFFFFFF\r\nabc\r\n"),
    ("chunked: no CRLF after the chunk data",
     http_request("POST", "/v1/events", [("Content-Type", "application/json"), ("Transfer-Encoding", "chunked")])
     + b"5\r\n{\"top\r\n" + b"XX" + b"0\r\n\r\n"),
    ("Content-Length together with Transfer-Encoding: chunked",
     http_request("POST", "/v1/events", [("Content-Type", "application/json"), ("Content-Length", "26"),
                                          ("Transfer-Encoding", "chunked")])
     + b"0\r\n\r\n" + b'{"topic":"bad/smuggle"}'),
    ("two different Content-Length headers",
     http_request("POST", "/v1/events", [("Content-Type", "application/json"), ("Content-Length", "22"),
                                          ("Content-Length", "23")]) + b'{"topic":"bad/twocl"} '),
    ("Content-Length -1", http_request("POST", "/v1/events", [("Content-Type", "application/json"),
                                                             ("Content-Length", "-1")])),
    ("Content-Length that overflows 64 bits",
     http_request("POST", "/v1/events", [("Content-Type", "application/json"),
                                          ("Content-Length", "99999999999999999999999")])),
    ("Content-Length that is not a number",
     http_request("POST", "/v1/events", [("Content-Type", "application/json"), ("Content-Length", "12abc")])),
]

HUGE = [
    ("one 70 KB header", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n"),
    ("1200 headers (80 KB)", b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
     + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 56) for i in range(1200)) + b"\r\n"),
    ("a 40 KB header (over the 32 KiB limit)", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 40_000
     + b"\r\n\r\n"),
    ("a 70 KB request target", b"GET /healthz?" + b"q" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
]


def step_malformed(target: Target, sink: Sink) -> None:
    conns = []
    for label, data in MALFORMED + HUGE:
        conn = RawHTTP(target.port)
        conn.send(data)
        try:
            outcome: Any = conn.read_response(5.0)
        except (HTTPClosed, TimeoutError) as error:
            outcome = error
        allowed = (400, 414, 431) if (label, data) in HUGE else (400,)
        status = outcome.status if isinstance(outcome, RawResponse) else None
        sink.check(status in allowed, f"{target.label}: {label} -> {' or '.join(map(str, allowed))}",
                   describe(outcome))
        conns.append((label, conn))
    closed = wait_all_closed([conn for _, conn in conns], CLOSE_WITHIN)
    late = [label for (label, _), was_closed in zip(conns, closed) if not was_closed]
    sink.check(not late, f"{target.label}: the server closes all {len(conns)} connections within {CLOSE_WITHIN:.0f} s "
                         "of its 400/431 answer", f"still open after {CLOSE_WITHIN} s: {late}")
    for _, conn in conns:
        conn.close()


# --------------------------------------------------------------------------------------------
# b) huge Content-Length, c) pipelining and bodies that do not match Content-Length


def expect_json_error(sink: Sink, outcome: Any, status: int, code: str, what: str) -> None:
    ok = isinstance(outcome, RawResponse) and outcome.status == status and outcome.is_json_error \
        and outcome.error_code == code
    sink.check(ok, f"{what} -> {status} {code} (JSON error body)", describe(outcome))


def step_content_length(target: Target, sink: Sink, limit: int) -> None:
    label = target.label
    huge = limit * 1000 + 1
    headers = [("Content-Type", "application/json"), ("Content-Length", str(huge))]
    started = time.monotonic()
    outcome, closed = raw_exchange(target.port, http_request("POST", "/v1/events", headers),
                                   close_within=CLOSE_WITHIN)
    elapsed = time.monotonic() - started
    expect_json_error(sink, outcome, 413, "body_too_large",
                      f"{label}: Content-Length {huge} with no body sent")
    sink.check(closed and elapsed < 3.0 + CLOSE_WITHIN,
               f"{label}: ... answered at once and the connection closed", {"closed": closed, "s": round(elapsed, 2)})

    with RawHTTP(target.port) as conn:
        conn.send(http_request("POST", "/v1/events", headers + [("Expect", "100-continue")]))
        try:
            first: Any = conn.read_response(5.0)
        except (HTTPClosed, TimeoutError) as error:
            first = error
        expect_json_error(sink, first, 413, "body_too_large",
                          f"{label}: Expect: 100-continue with Content-Length {huge} (no 100 Continue first)")

    # A chunked body that passes the limit: refused as soon as it does.
    with RawHTTP(target.port) as conn:
        conn.send(http_request("POST", "/v1/events", [("Content-Type", "application/json"),
                                                      ("Transfer-Encoding", "chunked")]))
        chunk = b"{" + b" " * 1022 + b"\n"
        sent = 0
        for _ in range(limit // len(chunk) + 8):
            if not conn.send(b"%x\r\n" % len(chunk) + chunk + b"\r\n"):
                break
            sent += len(chunk)
        try:
            answer: Any = conn.read_response(5.0)
        except (HTTPClosed, TimeoutError) as error:
            answer = error
        expect_json_error(sink, answer, 413, "body_too_large",
                          f"{label}: a chunked body that passes {limit} bytes ({sent} sent)")


def step_pipelining(target: Target, sink: Sink, round_no: int) -> None:
    label = target.label
    # Body longer than Content-Length: the rest is the next "request" (garbage).
    body = publish_bytes("hostile/pipe", f"exact body r{round_no}")
    data = http_request("POST", "/v1/events", [("Content-Type", "application/json")], body) + b"GARBAGE\x00\x01\r\n\r\n"
    with RawHTTP(target.port) as conn:
        conn.send(data)
        first: Any = None
        second: Any = None
        try:
            first = conn.read_response(5.0)
            if first.status == 201:
                target.record(first.json()["id"], "hostile/pipe", f"exact body r{round_no}")
            second = conn.read_response(5.0)
        except (HTTPClosed, TimeoutError) as error:
            if first is None:
                first = error
            second = error
        sink.check(isinstance(first, RawResponse) and first.status == 201,
                   f"{label}: a body longer than Content-Length: the request itself -> 201", describe(first))
        sink.check(isinstance(second, RawResponse) and second.status == 400,
                   f"{label}: ... the bytes after it (garbage) -> 400", describe(second))
        sink.check(conn.closed_within(CLOSE_WITHIN), f"{label}: ... and the connection is closed")

    # Two valid publishes in one write, then a healthz: answered in order.
    topics = [f"hostile/pipe/{round_no}/a", f"hostile/pipe/{round_no}/b"]
    data = b"".join(http_request("POST", "/v1/events", [("Content-Type", "application/json")],
                                 publish_bytes(topic, "pipelined")) for topic in topics)
    data += http_request("GET", "/healthz")
    with RawHTTP(target.port) as conn:
        conn.send(data)
        answers = []
        try:
            for _ in range(3):
                answers.append(conn.read_response(5.0))
        except (HTTPClosed, TimeoutError) as error:
            answers.append(error)
        statuses = [a.status if isinstance(a, RawResponse) else repr(a) for a in answers]
        topics_back = [a.json().get("topic") for a in answers[:2] if isinstance(a, RawResponse) and a.status == 201]
        for answer, topic in zip(answers[:2], topics):
            if isinstance(answer, RawResponse) and answer.status == 201:
                target.record(answer.json()["id"], topic, "pipelined")
        sink.check(statuses == [201, 201, 200] and topics_back == topics,
                   f"{label}: 2 pipelined publishes + GET /healthz in one write -> 201, 201, 200 in order", statuses)

    # A body shorter than Content-Length, then the client half-closes: nothing is stored.
    body = publish_bytes("hostile/truncated", "never complete")
    data = http_request("POST", "/v1/events", [("Content-Type", "application/json"),
                                               ("Content-Length", str(len(body) + 50))], content_length=False) + body
    with RawHTTP(target.port) as conn:
        conn.send(data)
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        try:
            got: Any = conn.read_response(CLOSE_WITHIN)
        except (HTTPClosed, TimeoutError) as error:
            got = error
        closed = conn.eof or conn.closed_within(1.0)
        sink.check(not (isinstance(got, RawResponse) and got.status < 300) and closed,
                   f"{label}: a body {50} bytes short of Content-Length, then EOF -> not accepted, connection closed",
                   describe(got))


# --------------------------------------------------------------------------------------------
# d) HTTP/1.0 and methods


def step_versions_methods(target: Target, sink: Sink, round_no: int) -> None:
    label = target.label
    outcome, closed = raw_exchange(target.port, b"GET /healthz HTTP/1.0\r\n\r\n", close_within=CLOSE_WITHIN)
    sink.check(isinstance(outcome, RawResponse) and outcome.status == 200 and closed,
               f"{label}: GET /healthz HTTP/1.0 -> 200, then the connection is closed", describe(outcome))

    topic, text = "hostile/http10", f"published over HTTP/1.0 r{round_no}"
    outcome, closed = raw_exchange(
        target.port, http_request("POST", "/v1/events", [("Content-Type", "application/json")],
                                  publish_bytes(topic, text), version="HTTP/1.0"), close_within=CLOSE_WITHIN)
    if isinstance(outcome, RawResponse) and outcome.status == 201:
        target.record(outcome.json()["id"], topic, text)
    sink.check(isinstance(outcome, RawResponse) and outcome.status == 201 and closed,
               f"{label}: POST /v1/events HTTP/1.0 -> 201, then closed", describe(outcome))

    with RawHTTP(target.port) as conn:
        conn.send(b"GET /v1/events?topic=hostile/http10&lastEventId=earliest HTTP/1.0\r\nAccept: text/event-stream\r\n\r\n")
        try:
            sse: Any = conn.read_response(5.0, body_timeout=1.0)
        except (HTTPClosed, TimeoutError) as error:
            sse = error
        ok = (isinstance(sse, RawResponse) and sse.status == 200
              and (sse.header("content-type") or "").startswith("text/event-stream")
              and (sse.header("transfer-encoding") or "").lower() != "chunked"
              and sse.body.startswith(b"retry: ") and b"event: eventlog.caughtup" in sse.body
              and text.encode() in sse.body)
        sink.check(ok, f"{label}: SSE over HTTP/1.0 -> 200 text/event-stream without chunked encoding, replay readable",
                   describe(sse))

    for method, path in (("TRACE", "/v1/events"), ("TRACE", "/"), ("TRACE", "/healthz"), ("PUT", "/v1/events"),
                         ("DELETE", "/v1/events"), ("PATCH", "/v1/events"), ("DELETE", "/healthz")):
        with RawHTTP(target.port) as conn:
            conn.send(http_request(method, path, [("Content-Length", "0")] if method in ("PUT", "PATCH") else []))
            try:
                answer: Any = conn.read_response(3.0, body_timeout=0.5)
            except (HTTPClosed, TimeoutError) as error:
                answer = error
            ok = (isinstance(answer, RawResponse) and answer.status == 405 and answer.is_json_error
                  and answer.error_code == "method_not_allowed" and bool(answer.header("allow"))
                  and answer.header("content-length") is not None)
            sink.check(ok, f"{label}: {method} {path} -> 405 method_not_allowed with Allow and a JSON body",
                       describe(answer) + f" headers={answer.headers if isinstance(answer, RawResponse) else None}")
            # The connection is still usable (or closed), never stuck.
            usable = conn.send(http_request("GET", "/healthz"))
            try:
                after: Any = conn.read_response(2.0)
            except (HTTPClosed, TimeoutError) as error:
                after = error
            sink.check((isinstance(after, RawResponse) and after.status == 200) or isinstance(after, HTTPClosed)
                       or not usable,
                       f"{label}: ... the connection then answers GET /healthz or is closed (not stuck)", describe(after))

    # CONNECT: NIO encodes answers to CONNECT without a body, so the server answers 405 (with Allow)
    # and no body, and closes (the client may expect a tunnel); a JSON 405 or a 400 would do too.
    for target_form in ("127.0.0.1:80", "/v1/events"):
        with RawHTTP(target.port) as conn:
            conn.send(f"CONNECT {target_form} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
            try:
                answer = conn.read_response(3.0, body_timeout=0.5)
            except (HTTPClosed, TimeoutError) as error:
                answer = error
            closed = conn.eof or conn.closed_within(2.0)
            ok = isinstance(answer, RawResponse) and (
                answer.status == 400
                or (answer.status == 405 and answer.is_json_error and answer.error_code == "method_not_allowed")
                or (answer.status == 405 and bool(answer.header("allow")) and answer.body == b""
                    and (answer.header("connection") or "").lower() == "close" and closed))
            sink.check(ok, f"{label}: CONNECT {target_form} -> 405 with Allow (a JSON body, or none and a close) or 400",
                       describe(answer) + f" headers={answer.headers if isinstance(answer, RawResponse) else None} "
                       f"closed={closed}")
            if not closed:
                usable = conn.send(http_request("GET", "/healthz"))
                try:
                    after = conn.read_response(2.0)
                except (HTTPClosed, TimeoutError) as error:
                    after = error
                sink.check((isinstance(after, RawResponse) and after.status == 200) or isinstance(after, HTTPClosed)
                           or not usable,
                           f"{label}: ... the connection then answers GET /healthz or is closed (not stuck)",
                           describe(after))

    # Odd upgrade requests get an ordinary answer (never a hang): 426 on /v1/ws, the resource elsewhere.
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    for what, path, headers, allowed in (
        ("a WebSocket upgrade with version 8", "/v1/ws",
         [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Key", key),
          ("Sec-WebSocket-Version", "8")], (400, 426)),
        ("a WebSocket upgrade without a key", "/v1/ws",
         [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Version", "13")], (400, 426)),
        ("an h2c upgrade on /v1/ws", "/v1/ws", [("Upgrade", "h2c"), ("Connection", "Upgrade, HTTP2-Settings"),
                                                ("HTTP2-Settings", "AAMAAABkAAQAAP__")], (400, 426)),
        ("an h2c upgrade on /healthz", "/healthz", [("Upgrade", "h2c"), ("Connection", "Upgrade, HTTP2-Settings"),
                                                   ("HTTP2-Settings", "AAMAAABkAAQAAP__")], (200,)),
        ("a WebSocket upgrade on /healthz", "/healthz",
         [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Key", key),
          ("Sec-WebSocket-Version", "13")], (200, 400, 404, 426)),
    ):
        outcome, _ = raw_exchange(target.port, http_request("GET", path, headers), timeout=3.0)
        sink.check(isinstance(outcome, RawResponse) and outcome.status in allowed,
                   f"{label}: {what} -> {' or '.join(map(str, allowed))}", describe(outcome))

    outcome, _ = raw_exchange(target.port, http_request("OPTIONS", "/v1/events", [("Origin", "http://example.test"),
                                                                                   ("Access-Control-Request-Method", "POST")]))
    sink.check(isinstance(outcome, RawResponse) and outcome.status == 204, f"{label}: OPTIONS (CORS preflight) -> 204",
               describe(outcome))


# --------------------------------------------------------------------------------------------
# e) invalid JSON and fields, f) SSE field injection


INVALID_BODIES = [
    ("an empty body", b"", "malformed_json"),
    ("'{'", b"{", "malformed_json"),
    ("a JSON array", b"[]", "malformed_json"),
    ("JSON null", b"null", "malformed_json"),
    ("a JSON number", b"123", "malformed_json"),
    ("a JSON string", b'"orders/1"', "malformed_json"),
    ("trailing bytes after the object", b'{"topic":"hostile/x","data":"a"} trailing', "malformed_json"),
    ("two objects", b'{"topic":"hostile/x"}{"topic":"hostile/x"}', "malformed_json"),
    ("invalid UTF-8 in a string", b'{"topic":"hostile/x","data":"\xff\xfe"}', "malformed_json"),
    ("a raw NUL inside a string", b'{"topic":"hostile/x","data":"a\x00b"}', "malformed_json"),
    ("a raw LF inside a string", b'{"topic":"hostile/x","data":"a\nb"}', "malformed_json"),
    ("a truncated escape", b'{"topic":"hostile/x","data":"\\u12"}', "malformed_json"),
    ("single quotes", b"{'topic':'hostile/x'}", "malformed_json"),
    ("a trailing comma", b'{"topic":"hostile/x",}', "malformed_json"),
    ("100,000 nested arrays", b'{"topic":"hostile/x","data":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
     "malformed_json"),
    ("100,000 nested objects", b'{"topic":"hostile/x","data":' + b'{"a":' * 100_000 + b"1" + b"}" * 100_000 + b"}",
     "malformed_json"),
    ("an unterminated 1 MB string", b'{"topic":"hostile/x","data":"' + b"s" * 1_000_000, "malformed_json"),
    ("topic as a number", b'{"topic":123}', "invalid_field"),
    ("type as an object", b'{"topic":"hostile/x","type":{}}', "invalid_field"),
    ("an unknown field", b'{"topic":"hostile/x","evil":1}', "invalid_field"),
    ("no topic", b'{"data":"x"}', None),
    ("a topic with a space", b'{"topic":"hostile x"}', "invalid_topic"),
    ("a topic with an empty segment", b'{"topic":"hostile//x"}', "invalid_topic"),
    ("a topic starting with /", b'{"topic":"/hostile"}', "invalid_topic"),
    ("a topic with LF", b'{"topic":"hostile\\nx"}', "invalid_topic"),
    ("a topic with NUL", b'{"topic":"hostile\\u0000x"}', "invalid_topic"),
    ("a topic of 300 bytes", json.dumps({"topic": "t" * 300}).encode(), "invalid_topic"),
    ("a wildcard topic", b'{"topic":"hostile/*"}', "invalid_topic"),
]

INJECTION = [
    # (what, field, value, code)
    ("type with LF", "type", "a\nb", "invalid_type"),
    ("type with CR", "type", "a\rb", "invalid_type"),
    ("type with CRLF + a forged id line", "type", "x\r\nid: 999999", "invalid_type"),
    ("type with NUL", "type", "a\u0000b", "invalid_type"),
    ("type eventlog.gap", "type", "eventlog.gap", "invalid_type"),
    ("type eventlog.reset", "type", "eventlog.reset", "invalid_type"),
    ("type eventlog.open", "type", "eventlog.open", "invalid_type"),
    ("type eventlog.caughtup", "type", "eventlog.caughtup", "invalid_type"),
    ("type eventlog.anything", "type", "eventlog.anything", "invalid_type"),
    ("an empty type", "type", "", "invalid_type"),
    ("a 129-byte type", "type", "t" * 129, "invalid_type"),
    ("key with LF", "key", "k\nevent: eventlog.reset", "invalid_key"),
    ("key with CR", "key", "k\rk", "invalid_key"),
    ("key with NUL", "key", "k\u0000k", "invalid_key"),
    ("an empty key", "key", "", "invalid_key"),
    ("a key over 1 KiB", "key", "k" * 1025, "invalid_key"),
    ("an idempotency key over 256 bytes", "idempotencyKey", "i" * 257, "invalid_idempotency_key"),
    ("an idempotency key with LF", "idempotencyKey", "i\ni", "invalid_idempotency_key"),
]


def step_bodies(target: Target, sink: Sink, round_no: int, body_limit: int) -> None:
    label = target.label
    client = target.server.http
    url = target.server.url("/v1/events")
    for what, body, code in INVALID_BODIES:
        response = client.post(url, content=body, headers={"Content-Type": "application/json"})
        try:
            got = response.json().get("error", {}).get("code")
        except (ValueError, AttributeError):
            got = None
        status = 400
        if len(body) > body_limit:
            status, code = 413, "body_too_large"
        expected = f"{status} {code}" if code else str(status)
        sink.check(response.status_code == status and (code is None or got == code)
                   and response.headers.get("content-type", "").startswith("application/json"),
                   f"{label}: publish with {what} -> {expected}", f"HTTP {response.status_code} {response.text[:200]}")
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "", "application/jsonx"):
        headers = {"Content-Type": content_type} if content_type else {}
        response = client.post(url, content=b'{"topic":"hostile/ct","data":"x"}', headers=headers)
        sink.check(response.status_code == 415 and "unsupported_media_type" in response.text,
                   f"{label}: publish with Content-Type {content_type or '(none)'!r} -> 415 unsupported_media_type",
                   f"HTTP {response.status_code} {response.text[:200]}")

    # NDJSON: one bad line refuses the whole batch, with its index.
    lines = [json.dumps({"topic": "hostile/batch", "data": f"line {i} r{round_no}"}) for i in range(3)]
    for what, bad, code in (("malformed line", "{nope", "malformed_json"),
                            ("type with LF", json.dumps({"topic": "hostile/batch", "type": "a\nb"}), "invalid_type"),
                            ("reserved type", json.dumps({"topic": "hostile/batch", "type": "eventlog.reset"}),
                             "invalid_type")):
        body = "\n".join([lines[0], bad, lines[2]]).encode()
        response = client.post(url, content=body, headers={"Content-Type": "application/x-ndjson"})
        try:
            error = response.json().get("error", {})
        except (ValueError, AttributeError):
            error = {}
        sink.check(response.status_code == 400 and error.get("code") == code and error.get("index") == 1,
                   f"{label}: NDJSON batch with a {what} on line 2 -> 400 {code} index 1 (whole batch refused)",
                   f"HTTP {response.status_code} {response.text[:200]}")
    for what, body in (("an empty body", b""), ("only blank lines", b"\n\n\r\n")):
        response = client.post(url, content=body, headers={"Content-Type": "application/x-ndjson"})
        sink.check(response.status_code == 400 and "empty_batch" in response.text,
                   f"{label}: NDJSON with {what} -> 400 empty_batch", f"HTTP {response.status_code} {response.text[:200]}")


def step_injection(target: Target, sink: Sink, round_no: int) -> None:
    label = target.label
    client = target.server.http
    url = target.server.url("/v1/events")
    for what, field_name, value, code in INJECTION:
        body = {"topic": "hostile/inject", "data": "must not be stored"}
        body[field_name] = value
        response = client.post(url, content=json.dumps(body), headers={"Content-Type": "application/json"})
        try:
            got = response.json().get("error", {}).get("code")
        except (ValueError, AttributeError):
            got = None
        sink.check(response.status_code == 400 and got == code, f"{label}: HTTP publish with {what} -> 400 {code}",
                   f"HTTP {response.status_code} {response.text[:200]}")
    # The Idempotency-Key header too.
    response = client.post(url, content=b'{"topic":"hostile/inject","data":"must not be stored"}',
                           headers={"Content-Type": "application/json", "Idempotency-Key": "i" * 257})
    sink.check(response.status_code == 400 and "invalid_idempotency_key" in response.text,
               f"{label}: an Idempotency-Key header over 256 bytes -> 400 invalid_idempotency_key",
               f"HTTP {response.status_code} {response.text[:200]}")

    # Over WebSocket: an error message each, nothing stored, the connection stays open.
    with RawWebSocket(target.port) as raw:
        answers = []
        for index, (what, field_name, value, code) in enumerate(INJECTION[:12]):
            message = {"op": "publish", "ref": f"inj{index}", "topic": "hostile/inject", "data": "must not be stored"}
            message[field_name] = value
            raw.send_json(message)
            try:
                answer = raw.recv_json(5.0)
            except (TimeoutError, WSClosed) as error:
                answer = {"exception": repr(error)}
            answers.append((what, code, answer))
        wrong = [(what, code, answer) for what, code, answer in answers
                 if not (answer.get("type") == "error" and answer.get("code") == code)]
        sink.check(not wrong, f"{label}: 12 WebSocket publishes with injected type/key -> an error with the right code each",
                   wrong[:3])

    # Data that looks like SSE fields is legitimate data: stored, and delivered as data lines only.
    text = f"x r{round_no}\n\nevent: eventlog.reset\ndata: {{}}\nid: 999999\nretry: 1\r\n: comment\rlast"
    answer = target.publish("hostile/inject/data", text)
    stream = CurlStream(target.server.url(f"/v1/events?topic=hostile/inject/data&lastEventId={answer['id'] - 1}"),
                        max_time=20)
    try:
        frames = []
        try:
            while True:
                frame = stream.next_frame(5.0)
                frames.append(frame)
                if frame.event == "eventlog.caughtup":
                    break
        except (TimeoutError, StreamEnded) as error:
            frames.append(repr(error))
        with_id = [f for f in frames if not isinstance(f, str) and f.has_id]
        events = [f.event for f in frames if not isinstance(f, str)]
        expected_data = text.replace("\r\n", "\n").replace("\r", "\n")
        ok = (len(with_id) == 1 and with_id[0].id == str(answer["id"]) and with_id[0].event == "message"
              and with_id[0].data == expected_data and "eventlog.reset" not in events
              and [f.values("retry") for f in with_id] == [[]])
        sink.check(ok, f"{label}: data holding 'event:', 'id:', 'retry:' lines is one event with data lines only "
                       "(no forged event, id or retry)", frames)
    finally:
        stream.close()


# --------------------------------------------------------------------------------------------
# g) Last-Event-ID, h) resume tokens


BAD_LAST_EVENT_IDS = ["abc", "-1", "1.5", "1e3", "0x10", "99999999999999999999999", "earliest2", "Infinity",
                      "1,2", "NaN"]


def step_last_event_id(target: Target, sink: Sink) -> None:
    label = target.label
    bad = []
    for value in BAD_LAST_EVENT_IDS:
        for how in ("header", "query"):
            url = target.server.url("/v1/events?topic=hostile/lei")
            headers = {"Accept": "text/event-stream"}
            if how == "header":
                headers["Last-Event-ID"] = value
            else:
                url += "&lastEventId=" + quote(value)
            try:
                with httpx.stream("GET", url, headers=headers, timeout=5.0, trust_env=False) as response:
                    response.read()
                    body = response.text
                    status = response.status_code
                    content_type = response.headers.get("content-type", "")
            except httpx.HTTPError as error:
                status, body, content_type = repr(error), "", ""
            if not (status == 400 and content_type.startswith("application/json")
                    and "invalid_last_event_id" in body):
                bad.append((how, value, status, body[:120]))
    sink.check(not bad, f"{label}: {len(BAD_LAST_EVENT_IDS)} malformed Last-Event-ID headers and lastEventId "
                        "parameters -> 400 invalid_last_event_id (JSON) before any stream", bad[:5])


def first_token(target: Target) -> tuple:
    """Subscribes from earliest on hostile/tok; returns (resume token of the first event, its id)."""
    with RawWebSocket(target.port) as raw:
        raw.send_json({"op": "subscribe", "topics": ["hostile/tok"], "from": "earliest"})
        for _ in range(10):
            message = raw.recv_json(5.0)
            if message.get("type") == "event":
                return message["resume"], message["id"]
    raise RuntimeError("no event on hostile/tok")


def tampered_tokens(token: str, foreign: Optional[str], frame_limit: int) -> list:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

    def flip(text: str, index: int) -> str:
        # +16 changes the second-highest of the character's 6 bits: a different decoded byte even
        # for a last character whose low bits are base64 padding.
        char = text[index]
        other = alphabet[(alphabet.index(char) + 16) % len(alphabet)] if char in alphabet else "A"
        return text[:index] + other + text[index + 1:]

    parts = token.split(".")
    variants = [
        ("the last character changed", flip(token, len(token) - 1)),
        ("a middle character changed", flip(token, len(token) // 2)),
        ("the first payload character changed", flip(token, len(parts[0]) + 1) if len(parts) > 1 else flip(token, 0)),
        ("one character cut off", token[:-1]),
        ("one character appended", token + "A"),
        ("an empty string", ""),
        ("garbage", "not-a-token"),
        ("dots only", ".."),
        (f"{min(10_000, frame_limit - 200)} characters", "v1." + "A" * min(10_000, frame_limit - 200) + ".B"),
        ("non-ASCII", "v1.é.ü"),
    ]
    if len(parts) >= 3:
        variants.append(("payload and MAC swapped", ".".join([parts[0], parts[2], parts[1], *parts[3:]])))
        variants.append(("another version prefix", ".".join(["v9", *parts[1:]])))
        variants.append(("the MAC dropped", ".".join(parts[:-1])))
    if foreign:
        variants.append(("a token of another server's log", foreign))
    return variants


def step_tokens(target: Target, sink: Sink, foreign: Optional[str], frame_limit: int) -> None:
    label = target.label
    token, _ = first_token(target)
    variants = tampered_tokens(token, foreign, frame_limit)
    wrong = []
    for what, value in variants:
        with RawWebSocket(target.port) as raw:
            raw.send_json({"op": "subscribe", "topics": ["hostile/tok"], "resume": value})
            try:
                answer = raw.recv_json(5.0)
                extra = []
                try:
                    extra.append(raw.recv_json(0.2))
                except TimeoutError:
                    pass
            except (TimeoutError, WSClosed) as error:
                answer, extra = {"exception": repr(error)}, []
            if not (answer.get("type") == "error" and answer.get("code") == "invalid_resume_token" and not extra):
                wrong.append((what, answer, extra[:1]))
    sink.check(not wrong, f"{label}: {len(variants)} tampered/foreign resume tokens -> invalid_resume_token, "
                          "nothing replayed", wrong[:3])
    # Non-string tokens, then the same connection still subscribes.
    with RawWebSocket(target.port) as raw:
        answers = []
        for value in (12345, {"v": 1}, ["v1"], True):
            raw.send_json({"op": "subscribe", "topics": ["hostile/tok"], "resume": value})
            try:
                answers.append(raw.recv_json(5.0))
            except (TimeoutError, WSClosed) as error:
                answers.append({"exception": repr(error)})
        sink.check(all(a.get("type") == "error" and a.get("code") in ("invalid_resume_token", "invalid_field")
                       for a in answers),
                   f"{label}: non-string resume tokens -> error invalid_resume_token or invalid_field", answers)
        raw.send_json({"op": "subscribe", "topics": ["hostile/tok"], "resume": token})
        try:
            kinds = [raw.recv_json(5.0).get("type") for _ in range(2)]
        except (TimeoutError, WSClosed) as error:
            kinds = [repr(error)]
        sink.check(kinds and kinds[0] == "subscribed",
                   f"{label}: ... after those errors the real token still subscribes on the same connection", kinds)


# --------------------------------------------------------------------------------------------
# i) WebSocket garbage


def close_code(raw: RawWebSocket, timeout: float = 5.0) -> tuple:
    """(close code, or 'EOF' when the TCP connection ended without one, or 'still open'; texts before)."""
    try:
        frame, before = raw.wait_close(timeout)
    except TimeoutError as error:
        return "still open", [f for f in getattr(error, "frames", []) if f.opcode == WSOpcode.TEXT]
    texts = [f for f in before if f.opcode == WSOpcode.TEXT]
    return (frame.close_code if frame is not None else "EOF"), texts


def with_rsv(frame: bytes, bits: int) -> bytes:
    return bytes([frame[0] | bits]) + frame[1:]


def ws_garbage_cases(frame_limit: int) -> list:
    """(what, bytes to send after the upgrade, accepted close codes)."""
    enc = RawWebSocket.encode_frame
    subscribe = json.dumps({"op": "subscribe", "topics": ["hostile/ws"]}).encode()
    rng = random.Random(11)
    return [
        ("1 KB of random bytes (first byte 0xFF)", b"\xff" + rng.randbytes(1023), (1002,)),
        ("reserved opcode 0x3", enc(0x3, b"x"), (1002,)),
        ("reserved opcode 0x7", enc(0x7, b"x"), (1002,)),
        ("reserved control opcode 0xB", enc(0xB, b"x"), (1002,)),
        ("reserved control opcode 0xF", enc(0xF, b""), (1002,)),
        ("RSV1 set without an extension", with_rsv(enc(WSOpcode.TEXT, subscribe), 0x40), (1002,)),
        ("RSV3 set", with_rsv(enc(WSOpcode.TEXT, subscribe), 0x10), (1002,)),
        ("an unmasked text frame", enc(WSOpcode.TEXT, subscribe, mask=False), (1002,)),
        ("a ping with 126 bytes of payload", enc(WSOpcode.PING, b"p" * 126), (1002,)),
        ("a fragmented ping", enc(WSOpcode.PING, b"p", fin=False), (1002,)),
        ("a continuation with no message started", enc(WSOpcode.CONTINUATION, b"orphan"), (1002,)),
        ("a new text frame inside a fragmented message",
         enc(WSOpcode.TEXT, b'{"op":', fin=False) + enc(WSOpcode.TEXT, b'"subscribe"}'), (1002,)),
        ("a close frame with a 1-byte payload", enc(WSOpcode.CLOSE, b"\x03"), (1002,)),
        ("a close frame with code 999", enc(WSOpcode.CLOSE, b"\x03\xe7"), (1002,)),
        ("a close frame with code 1005 (reserved)", enc(WSOpcode.CLOSE, b"\x03\xed"), (1002,)),
        ("a close frame with an invalid UTF-8 reason", enc(WSOpcode.CLOSE, b"\x03\xe8\xff\xfe"), (1002, 1007)),
        ("a length field of 2^63 - 1", enc(WSOpcode.TEXT, b"", length=(1 << 63) - 1), (1009, 1002)),
        ("a length field with the top bit set", enc(WSOpcode.TEXT, b"", length=1 << 63), (1002, 1009)),
        (f"a text frame of {frame_limit + 1} bytes", enc(WSOpcode.TEXT, b" " * (frame_limit + 1)), (1009,)),
        (f"fragments adding up to {frame_limit + 3} bytes",
         enc(WSOpcode.TEXT, b"{" + b" " * (frame_limit // 2), fin=False)
         + enc(WSOpcode.CONTINUATION, b" " * (frame_limit // 2), fin=False)
         + enc(WSOpcode.CONTINUATION, b" }"), (1009,)),
        ("a binary frame", enc(WSOpcode.BINARY, subscribe), (1003,)),
        ("a text frame of invalid UTF-8", enc(WSOpcode.TEXT, b'{"op":"\xc3\x28"}'), (1007,)),
        ("a text frame with an overlong UTF-8 encoding", enc(WSOpcode.TEXT, b'{"op":"\xc0\xaf"}'), (1007,)),
        ("a text frame with a UTF-16 surrogate", enc(WSOpcode.TEXT, b'{"op":"\xed\xa0\x80"}'), (1007,)),
    ]


def step_ws_garbage(target: Target, sink: Sink, frame_limit: int, event_limit: int) -> None:
    label = target.label
    for what, data, accepted in ws_garbage_cases(frame_limit):
        with RawWebSocket(target.port) as raw:
            try:
                raw.send_raw(data)
            except OSError:
                pass  # the server may close while we are still writing
            code, texts = close_code(raw, 3.0)
            sink.check(code in accepted and not texts,
                       f"{label}: WebSocket {what} -> close {' or '.join(map(str, accepted))}",
                       {"got": code, "texts": texts[:2]})

    # Fragmented messages under the limit are accepted (a publish in 3 fragments, a ping between).
    text = json.dumps({"op": "publish", "ref": "frag", "topic": "hostile/ws/frag",
                       "data": "f" * max(10, min(frame_limit // 2, event_limit) - 200)}).encode()
    third = len(text) // 3
    with RawWebSocket(target.port) as raw:
        raw.send_frame(WSOpcode.TEXT, text[:third], fin=False)
        raw.send_frame(WSOpcode.PING, b"mid")
        raw.send_frame(WSOpcode.CONTINUATION, text[third:2 * third], fin=False)
        raw.send_frame(WSOpcode.CONTINUATION, text[2 * third:], fin=True)
        try:
            answer = raw.recv_json(5.0)
        except (TimeoutError, WSClosed) as error:
            answer = {"exception": repr(error)}
        if answer.get("type") == "ack":
            target.record(answer["id"], "hostile/ws/frag", json.loads(text)["data"])
        sink.check(answer.get("type") == "ack" and answer.get("ref") == "frag",
                   f"{label}: WebSocket message of {len(text)} bytes in 3 fragments (ping between) -> one publish, ack",
                   answer)

    # 25 bad messages: 20 errors, then 1008.
    with RawWebSocket(target.port) as raw:
        for n in range(25):
            try:
                raw.send_text(f"not json {n}")
            except OSError:
                break
        code, texts = close_code(raw, 5.0)
        errors = [json.loads(f.payload).get("code") for f in texts]
        sink.check(code == 1008 and errors == ["malformed_json"] * 20,
                   f"{label}: WebSocket with 25 malformed messages -> 20 errors, then close 1008",
                   {"code": code, "errors": len(errors)})

    # A client that floods pings and never reads: the server neither dies nor buffers without bound.
    with RawWebSocket(target.port) as raw:
        ping = RawWebSocket.encode_frame(WSOpcode.PING, b"p" * 125)
        sent = 0
        raw.sock.settimeout(5.0)
        started = time.monotonic()
        try:
            for _ in range(200):
                raw.sock.sendall(ping * 100)
                sent += 100
                if time.monotonic() - started > 8.0:
                    break
        except OSError:
            pass
        sink.check(target.server.running, f"{label}: a client that sends {sent} pings and reads no pong: server up")


# --------------------------------------------------------------------------------------------
# j) slowloris (runs in the background while the other steps run)


class Slowloris(threading.Thread):
    """`heads` connections trickle a request head, `bodies` send a complete head and then trickle
    a body that never reaches its Content-Length (and would be refused if it did: the topic is
    invalid). One byte per connection every `interval` seconds, so nothing completes within
    `bound`; records when the server closes each connection."""

    def __init__(self, port: int, heads: int, bodies: int, interval: float = 2.0, bound: float = SLOWLORIS_BOUND):
        super().__init__(name="slowloris", daemon=True)
        self.port = port
        self.interval = interval
        self.bound = bound
        self.conns: list = []  # [socket, kind, pending bytes, closed_at or None, next send time]
        self.errors: list = []
        self.stop = threading.Event()
        for index in range(heads + bodies):
            try:
                sock = socket.create_connection((HOST, port), timeout=5.0)
            except OSError as error:
                self.errors.append(f"connect {index}: {error}")
                continue
            sock.setblocking(False)
            if index < heads:
                opening = b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
                pending = b"X-Slow: " + b"z" * 200 + b"\r\n"  # never ends within the bound
                kind = "head"
            else:
                opening = http_request("POST", "/v1/events", [("Content-Type", "application/json"),
                                                              ("Content-Length", "1000")], content_length=False)
                pending = b'{"topic":"hostile slowloris","data":"' + b"z" * 200
                kind = "body"
            try:
                sock.send(opening)
            except OSError as error:
                self.errors.append(f"send {index}: {error}")
            self.conns.append([sock, kind, pending, None, 0.0])
        self.started_at = time.monotonic()
        for n, conn in enumerate(self.conns):
            conn[4] = self.started_at + interval * (n / max(1, len(self.conns)))  # spread the sends

    def run(self) -> None:
        deadline = self.started_at + self.bound
        while not self.stop.is_set() and time.monotonic() < deadline:
            open_conns = [c for c in self.conns if c[3] is None]
            if not open_conns:
                break
            now = time.monotonic()
            wait = max(0.0, min(min(c[4] for c in open_conns) - now, deadline - now, 0.5))
            readable, _, _ = select.select([c[0] for c in open_conns], [], [], wait)
            now = time.monotonic()
            for conn in open_conns:
                sock = conn[0]
                if sock in readable:
                    try:
                        data = sock.recv(4096)
                    except BlockingIOError:
                        data = None
                    except OSError:
                        data = b""
                    if data == b"":
                        conn[3] = now - self.started_at
                        continue
                if now >= conn[4] and conn[2]:
                    conn[4] = now + self.interval
                    try:
                        sock.send(conn[2][:1])
                        conn[2] = conn[2][1:]
                    except BlockingIOError:
                        pass
                    except OSError:
                        conn[3] = now - self.started_at
        for conn in self.conns:
            try:
                conn[0].close()
            except OSError:
                pass

    def close(self) -> None:
        self.stop.set()
        self.join(timeout=self.bound + 5)

    def summary(self) -> dict:
        closed = [c[3] for c in self.conns if c[3] is not None]
        return {
            "connections": len(self.conns),
            "closed": len(closed),
            "first_close_s": round(min(closed), 1) if closed else None,
            "last_close_s": round(max(closed), 1) if closed else None,
            "open": len(self.conns) - len(closed),
            "open_by_kind": {kind: sum(1 for c in self.conns if c[1] == kind and c[3] is None)
                             for kind in ("head", "body")},
            "errors": self.errors[:3],
        }


# --------------------------------------------------------------------------------------------
# k) connection flood (server B)


def step_connection_flood(target: Target, sink: Sink) -> None:
    label = target.label
    extra = 16
    # Connections of earlier steps may still be closing (a WebSocket drains the client's frames for up
    # to 2 s after its close frame), and this script's own keep-alive client holds one; they count
    # against the limit. Start from a server that holds only the connection asking, so exactly `extra`
    # of the flood are over the limit.
    target.server.drop_client_connections()
    deadline = time.monotonic() + 10.0
    while (open_now := server_counts(target)[0]) != 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    socks = []
    refused = []
    try:
        for _ in range(SMALL_CONNECTIONS + extra):
            try:
                socks.append(socket.create_connection((HOST, target.port), timeout=5.0))
            except OSError as error:
                refused.append(f"connect: {error}")
        # Every answer the flood gets: the refused ones are answered and closed at once, the accepted ones
        # wait for a request. Collect until `extra` refusals came (bounded), then a little longer, so a
        # refusal too many would be seen too.
        answers: dict = {}
        deadline = time.monotonic() + 10.0
        settle: Optional[float] = None
        while True:
            now = time.monotonic()
            if now > (settle if settle is not None else deadline):
                break
            pending = [sock for sock in socks if sock not in answers]
            readable, _, _ = select.select(pending, [], [], 0.1) if pending else ([], [], [])
            for sock in readable:
                try:
                    answers[sock] = sock.recv(4096)
                except OSError as error:
                    answers[sock] = repr(error).encode()
            too_many = [a for a in answers.values()
                        if a and b" 503 " in a.split(b"\r\n", 1)[0] and b"too_many_connections" in a]
            if settle is None and len(too_many) >= extra:
                settle = time.monotonic() + 0.5
        other = [a[:120] for a in answers.values() if a not in too_many]
        sink.check(open_now == 1 and not refused and len(too_many) == extra and not other,
                   f"{label}: {SMALL_CONNECTIONS + extra} connections with --max-connections {SMALL_CONNECTIONS} -> "
                   f"exactly the {extra} over the limit get 503 too_many_connections, the others wait for a "
                   f"request ({len(too_many)} got 503)",
                   {"open_before": open_now, "refused": refused, "503": len(too_many), "other_answers": other[:5]})
    finally:
        for sock in socks:
            try:
                sock.close()
            except OSError:
                pass
    # Recovery: once they are gone, new clients are served.
    deadline = time.monotonic() + 5.0
    status: Any = None
    while time.monotonic() < deadline:
        try:
            status = httpx.get(target.server.url("/healthz"), timeout=2.0, trust_env=False).status_code
        except httpx.HTTPError as error:
            status = repr(error)
        if status == 200:
            break
        time.sleep(0.1)
    sink.equal(status, 200, f"{label}: after the flood is gone, /healthz answers 200 again")


# --------------------------------------------------------------------------------------------
# The battery


def battery(target: Target, sink: Sink, round_no: int, *, frame_limit: int, body_limit: int, event_limit: int,
            foreign: Optional[str], small: bool) -> None:
    steps: list = [
        ("malformed HTTP and huge headers", lambda: step_malformed(target, sink)),
        ("huge Content-Length and chunked bodies", lambda: step_content_length(target, sink, body_limit)),
        ("pipelining and Content-Length mismatches", lambda: step_pipelining(target, sink, round_no)),
        ("HTTP/1.0 and methods", lambda: step_versions_methods(target, sink, round_no)),
        ("invalid JSON bodies", lambda: step_bodies(target, sink, round_no, body_limit)),
        ("SSE field injection", lambda: step_injection(target, sink, round_no)),
        ("malformed Last-Event-ID", lambda: step_last_event_id(target, sink)),
        ("tampered resume tokens", lambda: step_tokens(target, sink, foreign, frame_limit)),
        ("WebSocket garbage", lambda: step_ws_garbage(target, sink, frame_limit, event_limit)),
    ]
    if small:
        steps.append(("a connection flood", lambda: step_connection_flood(target, sink)))
    for name, body in steps:
        if sink.verbose:
            print(f"## {target.label} round {round_no}: {name}", flush=True)
        started = time.monotonic()
        try:
            body()
        except Exception as error:  # noqa: BLE001 - one failed check, then go on with the next step
            sink.check(False, f"{target.label}: {name}: aborted by {type(error).__name__}", str(error)[:500])
        alive(target, sink, f"{name} (round {round_no})")
        if sink.verbose:
            print(f"# {name}: {time.monotonic() - started:.1f} s", flush=True)


def check_log(target: Target) -> None:
    events, _ = all_history(target.server)
    stored = {event["id"]: (event["topic"], event["data"]) for event in events}
    unexpected = {i: v for i, v in stored.items() if i not in target.legit}
    missing = {i: v for i, v in target.legit.items() if stored.get(i) != v}
    checks.check(not unexpected and not missing,
                 f"{target.label}: the log holds exactly the {len(target.legit)} events published legitimately",
                 {"unexpected": list(unexpected.items())[:5],
                  "missing_or_changed": [(i, v, stored.get(i)) for i, v in list(missing.items())[:5]]})


def rss_report(target: Target, ends: list) -> None:
    samples = [rss for _, rss in target.rss if rss]
    peak = max(samples) if samples else None
    checks.check(peak is not None and peak < RSS_LIMIT,
                 f"{target.label}: peak RSS {peak / 1048576 if peak else 0:.1f} MB < {RSS_LIMIT // 1048576} MB")
    if len(ends) == ROUNDS and all(ends):
        settled = ends[WARMUP_ROUNDS - 1]
        growth = max(ends[WARMUP_ROUNDS:]) - settled
        checks.check(growth < RSS_STEADY_LIMIT,
                     f"{target.label}: RSS after rounds 1..{len(ends)}: "
                     f"{', '.join(f'{r / 1048576:.1f}' for r in ends)} MB; after the {WARMUP_ROUNDS} warm-up rounds "
                     f"it grows {growth / 1048576:.2f} MB < {RSS_STEADY_LIMIT / 1048576:.0f} MB in "
                     f"{ROUNDS - WARMUP_ROUNDS} rounds")
    else:
        checks.fail(f"{target.label}: RSS measured at the end of each round", ends)


def socket_count(pid: int) -> Optional[int]:
    try:
        return sum(1 for fd in os.listdir(f"/proc/{pid}/fd")
                   if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"))
    except OSError:
        return None


def server_counts(target: Target) -> tuple:
    """The server's open connections by /metrics, counting the one asking (its text when unreadable),
    and the sockets its process holds, counted while that connection is still open."""
    assert target.server.proc is not None
    with RawHTTP(target.port) as conn:
        conn.send(http_request("GET", "/metrics"))
        try:
            text = conn.read_response(5.0).body.decode("utf-8", "replace")
        except (HTTPClosed, TimeoutError) as error:
            text = repr(error)
        sockets = socket_count(target.server.proc.pid)
    match = re.search(r"^eventlog_connections (\d+)$", text, re.M)
    return (int(match.group(1)) if match else text[:200], sockets)


def check_connections_released(target: Target) -> None:
    """Once the clients are gone the server holds exactly one connection (the one asking) and two
    sockets (that one and the listener): a connection the battery leaked would be one more."""
    server = target.server
    assert server.proc is not None
    server.drop_client_connections()
    deadline = time.monotonic() + CLOSE_WITHIN  # the server may not have read every FIN yet
    while True:
        counts = server_counts(target)
        if counts == (1, 2) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    checks.equal(counts, (1, 2), f"{target.label}: after the rounds, /metrics counts 1 open connection (its own) "
                                 "and the process holds 2 sockets (it and the listener)")


def scenario_hostile() -> None:
    server_a = Server(BINARY, name="hostile-a", args=["--tail-bytes", str(TAIL_BYTES)], env=SERVER_ENV).start()
    server_b = Server(BINARY, name="hostile-b", args=[
        "--max-body-bytes", str(SMALL_BODY), "--max-event-bytes", str(SMALL_EVENT),
        "--max-ws-frame-bytes", str(SMALL_FRAME), "--max-connections", str(SMALL_CONNECTIONS),
        "--tail-bytes", str(TAIL_BYTES),
    ], env=SERVER_ENV).start()
    a = Target(server_a, "A")
    b = Target(server_b, "B")
    for target in (a, b):
        for n in range(3):
            target.publish("hostile/tok", f"token source {n}")
        target.publish("hostile/baseline", {"n": 1})
    # Legitimate events that fill A's tail and SQLite's page caches now rather than one 512 KiB event
    # a round.
    for n in range(WARMUP_EVENTS):
        a.publish("hostile/warmup", f"{n} " + "w" * (512 << 10))
    token_a, _ = first_token(a)
    token_b, _ = first_token(b)
    alive(a, Sink(True, "A"), "start")
    alive(b, Sink(True, "B"), "start")

    # Slowloris on A in the background, from the start; the battery runs meanwhile.
    loris = Slowloris(a.port, heads=200, bodies=20)
    loris.start()
    quick = []
    for _ in range(5):
        started = time.monotonic()
        try:
            status = httpx.get(server_a.url("/healthz"), timeout=5.0, trust_env=False).status_code
        except httpx.HTTPError as error:
            status = repr(error)
        quick.append((status, round(time.monotonic() - started, 3)))
        time.sleep(0.2)
    checks.check(all(s == 200 and t < 1.0 for s, t in quick),
                 f"A: with {len(loris.conns)} slowloris connections open, /healthz answers 200 in < 1 s", quick)
    try:
        ends_a: list = []
        first_a: Optional[Sink] = None
        for round_no in range(1, ROUNDS + 1):
            sink = Sink(round_no == 1, f"A round {round_no}", first_a)
            first_a = first_a or sink
            battery(a, sink, round_no, frame_limit=1 << 20, body_limit=8 << 20, event_limit=1 << 20,
                    foreign=token_b, small=False)
            sink.finish()
            ends_a.append(rss_bytes(server_a.proc.pid))
            if round_no == 1:
                s = loris.summary()
                elapsed = time.monotonic() - loris.started_at
                checks.check(s["first_close_s"] is None or s["first_close_s"] >= REQUEST_TIMEOUT - 5,
                             f"A: slowloris connections are not closed early while they trickle ({s['closed']} of "
                             f"{s['connections']} closed after {elapsed:.0f} s)", s)

        # Slowloris outcome: every connection closed by the server within the bound.
        loris.join(timeout=max(0.0, loris.started_at + SLOWLORIS_BOUND + 2 - time.monotonic()))
        summary = loris.summary()
        print(f"# slowloris: {summary}", flush=True)
        checks.check(summary["open"] == 0 and summary["connections"] == 220 and not summary["errors"],
                     f"A: all 220 slowloris connections (200 partial heads, 20 partial bodies) closed by the server "
                     f"within {SLOWLORIS_BOUND:.0f} s (last after {summary['last_close_s']} s)", summary)
        checks.check(summary["first_close_s"] is not None and summary["first_close_s"] >= REQUEST_TIMEOUT - 5,
                     f"A: ... and none long before the {REQUEST_TIMEOUT:.0f} s request timeout "
                     f"(first after {summary['first_close_s']} s)", summary)
    finally:
        loris.close()
    alive(a, Sink(True, "A"), "slowloris")
    check_connections_released(a)

    ends_b: list = []
    first_b: Optional[Sink] = None
    for round_no in range(1, ROUNDS + 1):
        sink = Sink(round_no == 1, f"B round {round_no}", first_b)
        first_b = first_b or sink
        battery(b, sink, round_no, frame_limit=SMALL_FRAME, body_limit=SMALL_BODY, event_limit=SMALL_EVENT,
                foreign=token_a, small=True)
        sink.finish()
        ends_b.append(rss_bytes(server_b.proc.pid))
    check_connections_released(b)

    # Limits specific to B.
    sink = Sink(True, "B")
    response = server_b.http.post(server_b.url("/v1/events"),
                                  content=publish_bytes("hostile/big", "e" * (SMALL_EVENT + 1)),
                                  headers={"Content-Type": "application/json"})
    sink.check(response.status_code == 413 and "event_too_large" in response.text,
               f"B: event data of {SMALL_EVENT + 1} bytes in a body under the limit -> 413 event_too_large",
               f"HTTP {response.status_code} {response.text[:200]}")
    with RawWebSocket(b.port) as raw:
        message = json.dumps({"op": "publish", "ref": "max", "topic": "hostile/ws/max", "data": "m"}).encode()
        padded = message[:-1] + b" " * (SMALL_FRAME - len(message)) + b"}"
        raw.send_frame(WSOpcode.TEXT, padded)
        try:
            answer = raw.recv_json(5.0)
        except (TimeoutError, WSClosed) as error:
            answer = {"exception": repr(error)}
        if answer.get("type") == "ack":
            b.record(answer["id"], "hostile/ws/max", "m")
        sink.check(answer.get("type") == "ack", f"B: a WebSocket frame of exactly {SMALL_FRAME} bytes is accepted",
                   answer)
    alive(b, sink, "B limits")

    rss_report(a, ends_a)
    rss_report(b, ends_b)
    check_log(a)
    check_log(b)
    for target in (a, b):
        log = target.server.read_log()
        fatal = [line for line in log.splitlines() if "Fatal error" in line or "crashed" in line]
        checks.check(not fatal, f"{target.label}: the server log shows no crash", fatal[:3])
    server_a.close()
    server_b.close()


# --------------------------------------------------------------------------------------------


def main(argv: list) -> int:
    global BINARY
    install_deadline(int(os.environ.get("CONFORMANCE_DEADLINE", "240")))
    started = time.monotonic()
    try:
        BINARY = eventlogd_path(argv[1] if len(argv) > 1 else None)
        print(f"# eventlogd: {BINARY}", flush=True)
        checks.run_scenario("hostile input against server A (default limits) and B (small limits)", scenario_hostile)
    except BaseException as error:  # noqa: BLE001 - deadline, missing binary, Ctrl-C: still summarize
        checks.fail(f"run aborted by {type(error).__name__}", str(error))
    finally:
        signal.alarm(0)
    print(f"# hostile.py ran for {time.monotonic() - started:.1f} s", flush=True)
    return checks.summary()


if __name__ == "__main__":
    code = main(sys.argv)
    sys.exit(code)
