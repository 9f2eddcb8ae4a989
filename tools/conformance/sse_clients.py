#!/usr/bin/env python3
"""SSE conformance with real, independent clients against a real eventlogd process.

  a) `curl -sN` reads the stream (raw lines parsed here), resumes with a Last-Event-ID header.
  b) httpx + httpx-sse reads the stream and resumes after a disconnect, after SIGKILL + restart
     and after SIGTERM + restart on the same database; ids are seen exactly once, in order.
  c) reset (Last-Event-ID ahead of head), gap (position older than earliest), and a malformed
     Last-Event-ID (400 invalid_last_event_id) as a real client sees them.

Usage: python3 tools/conformance/sse_clients.py [path/to/eventlogd]   (or set EVENTLOGD)
Prints `ok - ...` / `FAIL - ...` per check and ends with `N passed, M failed`; exits 1 on failure.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import httpx  # noqa: E402
from httpx_sse import connect_sse  # noqa: E402

from lib import (  # noqa: E402
    eventlog_maint_path,
    run_maint,
    HOST,
    Checks,
    CurlStream,
    Server,
    StreamEnded,
    eventlogd_path,
    install_deadline,
)

SELECTOR = "orders/*"
DEFAULT_RETRY_MS = 2000
CONTROL_PREFIX = "eventlog."

checks = Checks()
BINARY: Optional[str] = None


# --------------------------------------------------------------------------------------------
# One view of a received SSE block, whichever client produced it.


@dataclass
class Msg:
    event: str
    data: str
    id: Optional[str]  # curl: the block's id line (None if absent); httpx-sse: its last-event-id
    retry: Optional[int]
    id_line: Optional[bool]  # curl: whether the block has an id line; httpx-sse cannot tell (None)
    raw: Any = None

    @property
    def is_control(self) -> bool:
        return self.event.startswith(CONTROL_PREFIX)

    @property
    def is_retry_only(self) -> bool:
        return self.retry is not None and self.data == "" and self.event in ("", "message") and not self.id_line

    def json(self) -> Any:
        return json.loads(self.data)

    def short(self) -> tuple:
        return (self.id, self.event, self.data)


class CurlReader:
    """Msgs from a CurlStream."""

    def __init__(self, stream: CurlStream, label: str) -> None:
        self.stream = stream
        self.label = label
        self.last_id: Optional[str] = None

    def next(self, timeout: float = 5.0) -> Msg:
        frame = self.stream.next_frame(timeout)
        retry = frame.retry
        msg = Msg(
            event=frame.event or "message",
            data=frame.data if frame.data is not None else "",
            id=frame.id,
            retry=int(retry) if retry is not None and retry.isdigit() else None,
            id_line=frame.has_id,
            raw=frame,
        )
        if msg.id_line:
            self.last_id = msg.id
        return msg

    def close(self) -> None:
        self.stream.close()


class HttpxReader:
    """Msgs from httpx_sse.connect_sse; every read is bounded by httpx's read timeout."""

    def __init__(
        self,
        base_url: str,
        label: str,
        *,
        last_event_id: Optional[str] = None,
        query_last_event_id: Optional[str] = None,
        selectors: tuple = (SELECTOR,),
        read_timeout: float = 5.0,
    ) -> None:
        self.label = label
        params = [("topic", selector) for selector in selectors]
        if query_last_event_id is not None:
            params.append(("lastEventId", query_last_event_id))
        headers = {}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        self.client = httpx.Client(timeout=httpx.Timeout(5.0, read=read_timeout), trust_env=False)
        self._context = connect_sse(self.client, "GET", base_url + "/v1/events", params=params, headers=headers)
        self.source = self._context.__enter__()
        self.response = self.source.response
        self._iterator = self.source.iter_sse()
        self.last_id = ""  # httpx-sse's last-event-id buffer starts empty on every connection
        self.ids_before_control: list = []

    def next(self, timeout: float = 5.0) -> Msg:  # noqa: ARG002 - bounded by the read timeout
        try:
            sse = next(self._iterator)
        except StopIteration:
            raise StreamEnded("httpx-sse stream ended") from None
        msg = Msg(event=sse.event, data=sse.data, id=sse.id, retry=sse.retry, id_line=None, raw=sse)
        if msg.is_control or msg.is_retry_only:
            # A block without an id line leaves the client's last-event-id where it was.
            self.ids_before_control.append((msg.event, self.last_id, msg.id))
        else:
            self.last_id = msg.id
        return msg

    def close(self) -> None:
        try:
            self._context.__exit__(None, None, None)
        except Exception:  # noqa: BLE001 - the server may be gone
            pass
        self.client.close()


Reader = Any  # CurlReader | HttpxReader


# --------------------------------------------------------------------------------------------
# Shared expectations


@dataclass
class Expected:
    id: int
    type: str
    data: str  # the text an SSE client rebuilds
    topic: str = ""
    value: Any = None  # the data as a JSON value (envelopes)
    time: str = ""

    def short(self) -> tuple:
        return (str(self.id), self.type, self.data)


def publish(server: Server, log: list, topic: str, data: Any, *, type: Optional[str] = None,  # noqa: A002
            text: Optional[str] = None, matching: bool = True) -> Expected:
    """Publishes; appends the expectation to `log` when the topic matches the subscription."""
    answer = server.publish(topic, data, type=type)
    if text is None:
        if isinstance(data, str):
            text = data
        elif data is None:
            text = ""
        else:
            text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    expected = Expected(int(answer["id"]), type or "message", text, topic=topic, value=data,
                        time=answer.get("time", ""))
    if matching:
        log.append(expected)
    return expected


def check_control_has_no_id(reader: Reader, msg: Msg, what: str) -> None:
    if isinstance(reader, CurlReader):
        checks.check(msg.id_line is False, f"{reader.label}: {what} has no id: line", msg.raw)
    else:
        # A spec-following client keeps its last-event-id across an id-less block.
        checks.equal(msg.id, reader.last_id, f"{reader.label}: {what} does not move the client's last-event-id")


def expect_preamble(reader: Reader, *, epoch: str, earliest: int, head: int, start: int,
                    retry: int = DEFAULT_RETRY_MS) -> None:
    """`retry:` then `eventlog.open` with no id, as the first things on the stream."""
    first = reader.next()
    checks.check(first.is_retry_only and first.retry == retry,
                 f"{reader.label}: stream starts with retry: {retry}", first.raw)
    if isinstance(reader, CurlReader):
        checks.equal(reader.stream.parser.first_line, f"retry: {retry}",
                     f"{reader.label}: the very first line is 'retry: {retry}'")
    opened = reader.next()
    checks.equal(opened.event, "eventlog.open", f"{reader.label}: eventlog.open follows retry")
    check_control_has_no_id(reader, opened, "eventlog.open")
    checks.equal(opened.json(), {"epoch": epoch, "earliest": earliest, "head": head, "from": start},
                 f"{reader.label}: eventlog.open data")


def expect_events(reader: Reader, expected: list, what: str, timeout: float = 10.0) -> list:
    """The next len(expected) blocks are exactly these events, in order, each with its id line."""
    got = []
    deadline = time.monotonic() + timeout
    for _ in expected:
        got.append(reader.next(max(0.05, deadline - time.monotonic())))
    checks.equal([msg.short() for msg in got], [item.short() for item in expected], f"{reader.label}: {what}")
    if isinstance(reader, CurlReader):
        checks.check(all(msg.id_line for msg in got), f"{reader.label}: {what}: every event has an id: line")
    return got


def expect_control(reader: Reader, name: str, data: Any) -> Msg:
    msg = reader.next()
    checks.equal(msg.event, name, f"{reader.label}: next is {name}")
    check_control_has_no_id(reader, msg, name)
    try:
        value = msg.json()
    except ValueError:
        value = msg.data
    checks.equal(value, data, f"{reader.label}: {name} data")
    return msg


def expect_caughtup(reader: Reader, head: int) -> None:
    expect_control(reader, "eventlog.caughtup", {"head": head})


def check_sse_headers(label: str, status: Any, headers: Any) -> None:
    checks.equal(str(status), "200", f"{label}: HTTP 200")
    content_type = headers.get("content-type", "")
    checks.check(content_type.split(";")[0].strip() == "text/event-stream",
                 f"{label}: Content-Type text/event-stream", content_type)
    checks.equal(headers.get("cache-control"), "no-store", f"{label}: Cache-Control: no-store")
    checks.equal(headers.get("x-accel-buffering"), "no", f"{label}: X-Accel-Buffering: no")


def multiline_cases() -> list:
    """(data to publish, text a client must rebuild)."""
    return [
        ("line one\nline two\r\nline three\rline four", "line one\nline two\nline three\nline four"),
        ("ends with a newline\n", "ends with a newline\n"),
        ("\nstarts with a newline", "\nstarts with a newline"),
        ("a\n\nb\r\n\r\nc", "a\n\nb\n\nc"),
        ("data: not a field\nid: 999999\nevent: forged\n: no comment", "data: not a field\nid: 999999\nevent: forged\n: no comment"),
        ("unicode ✓ ü 日本\n第二行", "unicode ✓ ü 日本\n第二行"),
    ]


def sse_url(server: Server, query: str) -> str:
    return f"{server.base_url}/v1/events?{query}"


# --------------------------------------------------------------------------------------------
# a) curl


def scenario_curl() -> None:
    server = Server(BINARY, name="curl", args=["--keepalive", "1"]).start()
    log: list = []
    publish(server, log, "orders/1", {"b": 2, "a": "x", "nested": {"z": [1, 2], "y": None}}, type="created")
    publish(server, log, "orders/1/items", "plain text")
    publish(server, log, "payments/1", "not for orders/*", matching=False)
    for data, text in multiline_cases()[:3]:
        publish(server, log, "orders/2", data, type="note", text=text)
    publish(server, log, "orders/3", None)  # a tombstone: one empty data line
    health = server.health()
    epoch, head = health["epoch"], health["head"]
    checks.equal(health["earliest"], log[0].id, "curl: /healthz earliest is the first id of a new log")

    url = sse_url(server, "topic=orders/*&lastEventId=earliest")
    first = CurlReader(CurlStream(url), "curl earliest")
    try:
        expect_preamble(first, epoch=epoch, earliest=health["earliest"], head=head, start=health["earliest"] - 1)
        check_sse_headers("curl earliest", first.stream.headers().get(":status"), first.stream.headers())
        replayed = expect_events(first, log, "replays exactly the matching events, in id order")
        tombstone = replayed[-1].raw if replayed else None
        if tombstone is not None:
            checks.equal(tombstone.lines[-1].rstrip(" "), "data:", "curl earliest: a tombstone is one empty data line")
        multi = replayed[2].raw if len(replayed) > 2 else None
        if multi is not None:
            checks.equal(multi.values("data"), ["line one", "line two", "line three", "line four"],
                         "curl earliest: CRLF, LF and CR in data each start a new data: line")
        expect_caughtup(first, head)

        # Idle: keepalive comments (server runs with --keepalive 1), which a client ignores.
        comment = None
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline and comment is None:
            frame = first.stream.next_frame(max(0.05, deadline - time.monotonic()), skip_comments=False)
            if frame.is_comment_only:
                comment = frame
            else:
                checks.fail("curl earliest: nothing but comments while idle", frame)
        checks.check(comment is not None and comment.lines == [": keepalive"],
                     "curl earliest: idle stream gets ': keepalive' comments", comment)

        live = []
        live.append(publish(server, log, "orders/7", "live one"))
        publish(server, log, "payments/2", "not for orders/*", matching=False)
        data, text = multiline_cases()[3]
        live.append(publish(server, log, "orders/7/lines", data, type="note", text=text))
        expect_events(first, live, "live events after caughtup, non-matching topics filtered")
        checks.check(b"\r" not in first.stream.parser.raw,
                     "curl earliest: the stream has LF line ends only (no CR reaches the wire)")
        last_seen = first.last_id
        checks.equal(last_seen, str(live[-1].id), "curl earliest: last id seen is the last live event")
    finally:
        first.close()

    # Disconnected: publish more, then resume with the Last-Event-ID header. The query still says
    # lastEventId=earliest: the header must win.
    missed = []
    for data, text in multiline_cases()[4:]:
        missed.append(publish(server, log, "orders/8", data, type="note", text=text))
    publish(server, log, "payments/3", "not for orders/*", matching=False)
    missed.append(publish(server, log, "orders/9", {"n": 9}))
    head = server.health()["head"]
    second = CurlReader(CurlStream(url, headers=[f"Last-Event-ID: {last_seen}"]), "curl resume")
    try:
        expect_preamble(second, epoch=epoch, earliest=health["earliest"], head=head, start=int(last_seen))
        expect_events(second, missed, "Last-Event-ID header resumes with exactly the missed events (header beats query)")
        expect_caughtup(second, head)
        live = [publish(server, log, "orders/10", "after resume"), publish(server, log, "orders/10", "x\ny")]
        expect_events(second, live, "live events after the resumed replay")
        extra = second.stream.quiet_for(1.5)
        checks.equal([frame.lines for frame in extra], [], "curl resume: nothing else (no duplicate) arrives")
        last_seen = second.last_id
    finally:
        second.close()

    # First connect of a browser: the lastEventId query parameter, nothing missed.
    head = server.health()["head"]
    third = CurlReader(CurlStream(sse_url(server, f"topic=orders/*&lastEventId={last_seen}")), "curl query")
    try:
        expect_preamble(third, epoch=epoch, earliest=health["earliest"], head=head, start=int(last_seen))
        expect_caughtup(third, head)
        live = [publish(server, log, "orders/11/a", "q")]
        expect_events(third, live, "lastEventId query parameter: caughtup at once, then live")
    finally:
        third.close()

    # Live tail only (no position): nothing replayed.
    head = server.health()["head"]
    fourth = CurlReader(CurlStream(sse_url(server, "topic=orders/*")), "curl live")
    try:
        expect_preamble(fourth, epoch=epoch, earliest=health["earliest"], head=head, start=head)
        expect_caughtup(fourth, head)
        live = [publish(server, log, "orders/12", "tail")]
        expect_events(fourth, live, "no position: live tail only")
    finally:
        fourth.close()

    # Reset, as curl sees it.
    head = server.health()["head"]
    ahead = head + 1000
    fifth = CurlReader(CurlStream(url, headers=[f"Last-Event-ID: {ahead}"]), "curl reset")
    try:
        expect_preamble(fifth, epoch=epoch, earliest=health["earliest"], head=head, start=head)
        expect_control(fifth, "eventlog.reset", {"requested": ahead, "head": head, "epoch": epoch})
        expect_caughtup(fifth, head)
        live = [publish(server, log, "orders/13", "after reset")]
        checks.equal(live[0].id, head + 1, "curl reset: the next id is head + 1")
        expect_events(fifth, live, "after eventlog.reset the stream continues from the live tail")
    finally:
        fifth.close()

    # Malformed Last-Event-ID, as curl sees it.
    result = subprocess.run(
        ["curl", "-s", "--max-time", "10", "-D", "-", "-H", "Accept: text/event-stream",
         "-H", "Last-Event-ID: abc", url],
        capture_output=True, timeout=20, check=False,
    )
    text = result.stdout.decode("utf-8", "replace")
    head_text, _, body = text.replace("\r\n", "\n").partition("\n\n")
    status_line = head_text.splitlines()[0] if head_text else ""
    checks.check(" 400" in status_line, "curl: malformed Last-Event-ID is HTTP 400", status_line)
    try:
        error = json.loads(body)["error"]
        checks.equal(error.get("code"), "invalid_last_event_id", "curl: 400 body has code invalid_last_event_id")
    except (ValueError, KeyError, TypeError) as failure:
        checks.fail("curl: 400 body is the JSON error", f"{failure}: {body[:200]!r}")

    # envelope=1: one data line with the whole event as JSON.
    head = server.health()["head"]
    enveloped = CurlReader(CurlStream(sse_url(server, "topic=orders/*&lastEventId=earliest&envelope=1")),
                           "curl envelope")
    try:
        expect_preamble(enveloped, epoch=epoch, earliest=health["earliest"], head=head,
                        start=health["earliest"] - 1)
        sample = log[:3]
        got = [enveloped.next() for _ in sample]
        checks.equal([(msg.id, msg.event) for msg in got], [(str(item.id), item.type) for item in sample],
                     "curl envelope: ids and event names as without envelope")
        checks.check(all(len(msg.raw.values("data")) == 1 for msg in got),
                     "curl envelope: one data: line per event, even for multi-line data")
        bodies = [json.loads(msg.data) for msg in got]
        checks.equal(bodies, [{"id": item.id, "topic": item.topic, "type": item.type, "time": item.time,
                               "data": item.value} for item in sample],
                     "curl envelope: {id, topic, type, time, data} with data as a JSON value")
        checks.check(all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", body.get("time", ""))
                         for body in bodies),
                     "curl envelope: time is RFC 3339 UTC with milliseconds", [body.get("time") for body in bodies])
    finally:
        enveloped.close()

    # A graceful stop ends curl's transfer as a complete response; a crash leaves it incomplete.
    head = server.health()["head"]
    sixth = CurlReader(CurlStream(sse_url(server, "topic=orders/*")), "curl SIGTERM")
    try:
        expect_preamble(sixth, epoch=epoch, earliest=health["earliest"], head=head, start=head)
        expect_caughtup(sixth, head)
        checks.equal(server.terminate(), 0, "curl SIGTERM: eventlogd exits 0")
        try:
            code = sixth.stream.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            code = "still running 15 s later"
        checks.equal(code, 0, "curl SIGTERM: the stream ends as a complete response (curl exit 0)")
    finally:
        sixth.close()
    server.restart(same_port=True)
    seventh = CurlReader(CurlStream(url, headers=[f"Last-Event-ID: {head}"]), "curl SIGKILL")
    try:
        expect_preamble(seventh, epoch=epoch, earliest=health["earliest"], head=head, start=head)
        expect_caughtup(seventh, head)
        checks.equal(server.kill(), -9, "curl SIGKILL: eventlogd died of SIGKILL")
        try:
            code = seventh.stream.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            code = "still running 15 s later"
        # 18: partial file (the chunked body never ended); 56: failure receiving network data.
        checks.check(code in (18, 56), "curl SIGKILL: curl reports an incomplete transfer (exit 18 or 56)", code)
    finally:
        seventh.close()
    server.close()

    # --sse-retry reaches the client.
    other = Server(BINARY, name="retry", args=["--sse-retry", "750"]).start()
    stream = CurlReader(CurlStream(sse_url(other, "topic=orders/*")), "curl --sse-retry 750")
    try:
        other_health = other.health()
        expect_preamble(stream, epoch=other_health["epoch"], earliest=other_health["earliest"],
                        head=other_health["head"], start=other_health["head"], retry=750)
    finally:
        stream.close()
    other.close()


# --------------------------------------------------------------------------------------------
# b) httpx-sse, with disconnects, SIGKILL and SIGTERM


def scenario_httpx() -> None:
    server = Server(BINARY, name="httpx").start()
    log: list = []
    seen: list = []  # every event id a client saw, across all connections

    def read_events(reader: HttpxReader, expected: list, what: str) -> None:
        got = expect_events(reader, expected, what)
        seen.extend(int(msg.id) for msg in got if msg.id)

    publish(server, log, "orders/1", {"total": 12.5, "items": ["a", "b"]}, type="created")
    for data, text in multiline_cases():
        publish(server, log, "orders/2", data, type="note", text=text)
    publish(server, log, "payments/1", "not for orders/*", matching=False)
    publish(server, log, "orders/2/items/3", "deep topic")
    health = server.health()
    epoch, earliest, head = health["epoch"], health["earliest"], health["head"]

    first = HttpxReader(server.base_url, "httpx earliest", query_last_event_id="earliest")
    try:
        check_sse_headers("httpx earliest", first.response.status_code, first.response.headers)
        expect_preamble(first, epoch=epoch, earliest=earliest, head=head, start=earliest - 1)
        read_events(first, list(log), "replays exactly the matching events, in id order")
        expect_caughtup(first, head)
        live = [publish(server, log, "orders/3", "live 1"), publish(server, log, "orders/3", "live\n2")]
        publish(server, log, "payments/2", "no", matching=False)
        live.append(publish(server, log, "orders/4", {"k": True}))
        read_events(first, live, "live events after caughtup")
        last_seen = first.last_id
    finally:
        first.close()

    # 1. Plain disconnect, publishes while away, resume with the Last-Event-ID header.
    missed = [publish(server, log, "orders/5", f"missed {n}") for n in range(3)]
    head = server.health()["head"]
    second = HttpxReader(server.base_url, "httpx resume", last_event_id=last_seen)
    try:
        expect_preamble(second, epoch=epoch, earliest=earliest, head=head, start=int(last_seen))
        read_events(second, missed, "Last-Event-ID resumes with exactly the missed events")
        expect_caughtup(second, head)
        live = [publish(server, log, "orders/6", "live after resume")]
        read_events(second, live, "live after the resumed replay")
        last_seen = second.last_id

        # 2. SIGKILL while the client is connected: the stream breaks (no clean end).
        acked_head = server.health()["head"]
        old_port = server.port
        status = server.kill()
        checks.equal(status, -9, "httpx: eventlogd died of SIGKILL")
        outcome = "no end"
        try:
            second.next()
            outcome = "got another event"
        except StreamEnded:
            outcome = "clean end"
        except httpx.HTTPError as error:
            outcome = type(error).__name__
        checks.check(outcome not in ("no end", "got another event"),
                     f"httpx: the client notices the killed server ({outcome})", outcome)
    finally:
        second.close()

    server.restart(same_port=True)
    checks.check(True, f"httpx: restarted after SIGKILL on the same database (port {old_port} -> {server.port})")
    health = server.health()
    checks.equal(health["epoch"], epoch, "httpx: the epoch survives kill -9")
    checks.equal(health["head"], acked_head, "httpx: every acknowledged event survives kill -9 (head unchanged)")
    missed = [publish(server, log, "orders/7", "after crash"), publish(server, log, "orders/7", {"after": "crash"})]
    checks.check(missed[0].id > acked_head, "httpx: ids keep increasing after the restart",
                 f"{missed[0].id} <= {acked_head}")
    head = server.health()["head"]
    third = HttpxReader(server.base_url, "httpx after SIGKILL", last_event_id=last_seen)
    try:
        expect_preamble(third, epoch=epoch, earliest=earliest, head=head, start=int(last_seen))
        read_events(third, missed, "resume after SIGKILL + restart gets exactly the missed events")
        expect_caughtup(third, head)
        live = [publish(server, log, "orders/8", "live after crash")]
        read_events(third, live, "live after SIGKILL + restart")
        last_seen = third.last_id

        # 3. SIGTERM while connected: the stream ends cleanly, the process exits 0.
        acked_head = server.health()["head"]
        status = server.terminate()
        checks.equal(status, 0, "httpx: eventlogd exits 0 on SIGTERM")
        outcome = "no end"
        try:
            msg = third.next()
            outcome = f"got {msg.short()}"
        except StreamEnded:
            outcome = "clean end"
        except httpx.HTTPError as error:
            outcome = type(error).__name__
        checks.equal(outcome, "clean end", "httpx: SIGTERM ends the stream cleanly")
    finally:
        third.close()

    server.restart(same_port=True)
    health = server.health()
    checks.equal((health["epoch"], health["head"]), (epoch, acked_head),
                 "httpx: epoch and head unchanged after SIGTERM + restart")
    fourth = HttpxReader(server.base_url, "httpx after SIGTERM", last_event_id=last_seen)
    try:
        expect_preamble(fourth, epoch=epoch, earliest=earliest, head=acked_head, start=int(last_seen))
        expect_caughtup(fourth, acked_head)  # nothing missed: caughtup right after open
        live = [publish(server, log, "orders/9", "live after graceful restart")]
        read_events(fourth, live, "live after SIGTERM + restart")
        sentinel = [publish(server, log, "orders/9", "sentinel")]
        read_events(fourth, sentinel, "the next event is the sentinel (nothing extra in between)")
        ids_before = fourth.ids_before_control
    finally:
        fourth.close()

    checks.equal(seen, [item.id for item in log], "httpx: across 4 connections every id seen exactly once, in order")
    checks.check(all(isinstance(i, int) for i in seen) and seen == sorted(set(seen)),
                 "httpx: ids strictly increasing across connections")
    checks.check(all(before == carried for _, before, carried in ids_before),
                 "httpx: control events never changed the client's last-event-id", ids_before)
    server.close()


SENTINEL = {"sentinel": True}
SENTINEL_TEXT = '{"sentinel":true}'


def scenario_httpx_concurrent() -> None:
    """Replay/live boundary while publishes continue, and a resume in the middle of them."""
    server = Server(BINARY, name="boundary").start()
    total = 150
    published: list = []
    errors: list = []
    done = threading.Event()

    def publisher() -> None:
        try:
            for n in range(total):
                if done.is_set():
                    break
                topic = "orders/busy" if n % 5 else "payments/busy"
                answer = server.publish(topic, {"n": n})
                if topic.startswith("orders/"):
                    published.append(int(answer["id"]))
                time.sleep(0.01)
            # The last event: a reader that sees it has seen everything before it.
            published.append(int(server.publish("orders/busy", SENTINEL)["id"]))
        except Exception as error:  # noqa: BLE001
            errors.append(repr(error))
        finally:
            done.set()

    for n in range(20):
        published.append(int(server.publish("orders/busy", {"pre": n})["id"]))
    thread = threading.Thread(target=publisher, name="publisher", daemon=True)
    thread.start()
    seen: list = []
    caughtups = 0
    try:
        reader = HttpxReader(server.base_url, "httpx boundary", query_last_event_id="earliest")
        try:
            deadline = time.monotonic() + 60
            while len(seen) < 60 and time.monotonic() < deadline:
                msg = reader.next()
                if msg.event == "eventlog.caughtup":
                    caughtups += 1
                elif not msg.is_control and not msg.is_retry_only:
                    seen.append(int(msg.id))
            last = reader.last_id
        finally:
            reader.close()
        checks.check(len(seen) >= 60, "httpx boundary: read 60 events while publishes continue", len(seen))
        reader = HttpxReader(server.base_url, "httpx boundary resume", last_event_id=last)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                msg = reader.next()
                if msg.event == "eventlog.caughtup":
                    caughtups += 1
                elif not msg.is_control and not msg.is_retry_only:
                    seen.append(int(msg.id))
                    if msg.data == SENTINEL_TEXT:
                        break
        finally:
            reader.close()
    finally:
        done.set()
        thread.join(timeout=30)
    checks.equal(errors, [], "httpx boundary: every publish succeeded")
    checks.equal(seen, published, "httpx boundary: no gap and no duplicate across replay/live and a mid-stream resume")
    checks.check(1 <= caughtups <= 2, "httpx boundary: at most one caughtup per stream", caughtups)
    server.close()


# --------------------------------------------------------------------------------------------
# c) reset, gap and malformed Last-Event-ID


def scenario_reset_gap_errors() -> None:
    server = Server(BINARY, name="errors").start()
    log: list = []
    for n in range(10):
        publish(server, log, f"orders/{n}", {"n": n})
    health = server.health()
    epoch, earliest, head = health["epoch"], health["earliest"], health["head"]

    # Reset via the header, and via the query parameter (a browser's first connect).
    for how in ("header", "query"):
        ahead = str(head + 500)
        kwargs = {"last_event_id": ahead} if how == "header" else {"query_last_event_id": ahead}
        reader = HttpxReader(server.base_url, f"httpx reset ({how})", **kwargs)
        try:
            expect_preamble(reader, epoch=epoch, earliest=earliest, head=head, start=head)
            expect_control(reader, "eventlog.reset", {"requested": head + 500, "head": head, "epoch": epoch})
            expect_caughtup(reader, head)
            live = [publish(server, log, "orders/live", f"after reset {how}")]
            expect_events(reader, live, "continues from the live tail after reset")
            head = live[-1].id
        finally:
            reader.close()

    # Overlapping selectors: each event once.
    reader = HttpxReader(server.base_url, "httpx overlapping selectors", query_last_event_id="earliest",
                         selectors=("orders/*", "orders/1", "orders/1", "*"))
    try:
        expect_preamble(reader, epoch=epoch, earliest=earliest, head=head, start=earliest - 1)
        expect_events(reader, list(log), "an event matched by several selectors is delivered once")
        expect_caughtup(reader, head)
    finally:
        reader.close()

    # Exactly at head is not a reset.
    reader = HttpxReader(server.base_url, "httpx at head", last_event_id=str(head))
    try:
        expect_preamble(reader, epoch=epoch, earliest=earliest, head=head, start=head)
        expect_caughtup(reader, head)
    finally:
        reader.close()

    # Malformed positions: 400 before the stream opens, JSON error body.
    bad_values = ["abc", "-1", "1.5", "12abc", "0x10", "latest", "99999999999999999999999"]
    url = server.base_url + "/v1/events"
    with httpx.Client(timeout=10.0, trust_env=False) as client:
        for value in bad_values:
            for where in ("header", "query"):
                params = [("topic", SELECTOR)]
                headers = {"Accept": "text/event-stream"}
                if where == "header":
                    headers["Last-Event-ID"] = value
                else:
                    params.append(("lastEventId", value))
                response = client.get(url, params=params, headers=headers)
                label = f"malformed {where} {value!r}"
                try:
                    body = response.json()
                except ValueError:
                    body = response.text[:200]
                code = body.get("error", {}).get("code") if isinstance(body, dict) else None
                message = body.get("error", {}).get("message") if isinstance(body, dict) else None
                checks.check(
                    response.status_code == 400
                    and response.headers.get("content-type", "").startswith("application/json")
                    and code == "invalid_last_event_id"
                    and isinstance(message, str) and message != "",
                    f"httpx: {label} -> 400 application/json invalid_last_event_id",
                    f"HTTP {response.status_code} {response.headers.get('content-type')} {body!r}",
                )

    # Gap: eventlog-maint retention on the stopped database keeps ids >= cut (every event is selected, so
    # the newest head - cut + 1 stay), then restart.
    cut = log[4].id  # keep ids >= cut
    status = server.terminate()
    checks.equal(status, 0, "gap: eventlogd exits 0 on SIGTERM")
    retention = run_maint(eventlog_maint_path(near=BINARY), "retain", "--db", server.db,
                          "--max-events", str(head - cut + 1), "--quiet")
    checks.check(retention.returncode == 0, "gap: eventlog-maint retain exits 0", retention.stderr)
    server.restart(same_port=True)
    health = server.health()
    checks.equal(health["earliest"], cut, "gap: /healthz reports the raised earliest")
    retained = [item for item in log if item.id >= cut]
    requested = cut - 3  # older than earliest - 1
    reader = HttpxReader(server.base_url, "httpx gap", last_event_id=str(requested))
    try:
        # The stream opens at the requested position; the gap names the id after the last removed one, and
        # what is left after the position follows.
        expect_preamble(reader, epoch=epoch, earliest=cut, head=head, start=requested)
        expect_control(reader, "eventlog.gap", {"requested": requested, "earliest": cut, "reason": "retention"})
        expect_events(reader, retained, "after eventlog.gap the replay goes on with what is left")
        expect_caughtup(reader, head)
    finally:
        reader.close()
    for label, kwargs, start in (
        ("earliest", {"query_last_event_id": "earliest"}, cut - 1),
        ("0", {"last_event_id": "0"}, cut - 1),
        ("earliest - 1", {"last_event_id": str(cut - 1)}, cut - 1),
    ):
        reader = HttpxReader(server.base_url, f"httpx no gap from {label}", **kwargs)
        try:
            expect_preamble(reader, epoch=epoch, earliest=cut, head=head, start=start)
            expect_events(reader, retained, "replays what is retained with no gap event")
            expect_caughtup(reader, head)
        finally:
            reader.close()
    curl = CurlReader(CurlStream(sse_url(server, "topic=orders/*"), headers=[f"Last-Event-ID: {requested}"]),
                      "curl gap")
    try:
        expect_preamble(curl, epoch=epoch, earliest=cut, head=head, start=requested)
        expect_control(curl, "eventlog.gap", {"requested": requested, "earliest": cut, "reason": "retention"})
        expect_events(curl, retained[:1], "the first event after the gap is the earliest retained")
    finally:
        curl.close()
    server.close()


# --------------------------------------------------------------------------------------------


def main(argv: list) -> int:
    global BINARY
    install_deadline(int(os.environ.get("CONFORMANCE_DEADLINE", "420")))
    try:
        BINARY = eventlogd_path(argv[1] if len(argv) > 1 else None)
        print(f"# eventlogd: {BINARY}", flush=True)
        print(f"# curl: {subprocess.run(['curl', '--version'], capture_output=True, text=True, timeout=10).stdout.splitlines()[0]}", flush=True)
        import httpx_sse
        print(f"# httpx {httpx.__version__}, httpx-sse {getattr(httpx_sse, '__version__', '?')}", flush=True)
        checks.run_scenario("a) curl -N: replay, caughtup, live, resume with Last-Event-ID, reset, 400", scenario_curl)
        checks.run_scenario("b) httpx-sse: resume after disconnect, SIGKILL + restart, SIGTERM + restart", scenario_httpx)
        checks.run_scenario("b) httpx-sse: replay/live boundary while publishing, mid-stream resume", scenario_httpx_concurrent)
        checks.run_scenario("c) reset, gap and malformed Last-Event-ID", scenario_reset_gap_errors)
    except BaseException as error:  # noqa: BLE001 - deadline, missing binary, Ctrl-C: still summarize
        checks.fail(f"run aborted by {type(error).__name__}", str(error))
    finally:
        signal.alarm(0)
    return checks.summary()


if __name__ == "__main__":
    code = main(sys.argv)
    sys.exit(code)
