#!/usr/bin/env python3
"""WebSocket conformance with real, independent clients against a real eventlogd process.

  1-3) Python `websockets` (sync client): subscribe from earliest (subscribed, exact replay with
       resume tokens, caughtup, live events published over HTTP and over WS `publish`); resume by
       token after a disconnect, and after SIGKILL + restart on the same database.
  4)   bad resume tokens (tampered, truncated, garbage, not a string, another server's) are refused
       with `invalid_resume_token`, nothing is replayed, and the connection stays usable.
  5)   publish over WS: ack after the commit (checked via HTTP history), idempotent retry, conflict,
       invalid topic/type/field, numeric ref, many publishes in flight.
  6)   bad input and close codes: malformed JSON, unknown op, binary (1003), invalid UTF-8 (1007),
       frame and reassembled message over the limit (1009), fragmented messages under it, more
       than 20 errors (1008), protocol violations (1002). A raw-socket client (lib.RawWebSocket)
       sends what `websockets` will not.
  7)   `from` ahead of head: reset, then live; other `from` values; a new subscribe replaces the old;
       a token older than earliest - 1 gets gap, a token of another epoch (simulated restore) reset.
  8)   SIGTERM closes WebSocket connections with 1001.
  9)   `--ws-ping 1`: a client that answers pings stays; one that does not is closed with 1008.

Usage: python3 tools/conformance/ws_clients.py [path/to/eventlogd]   (or set EVENTLOGD)
Prints `ok - ...` / `FAIL - ...` per check and ends with `N passed, M failed`; exits 1 on failure.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import sys
import threading
import time
from typing import Any, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import websockets  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402
from websockets.sync.client import connect as ws_connect  # noqa: E402

from lib import (  # noqa: E402
    eventlog_maint_path,
    run_maint,
    HOST,
    Checks,
    RawWebSocket,
    Server,
    WSClosed,
    WSOpcode,
    eventlogd_path,
    install_deadline,
    register_cleanup,
    unregister_cleanup,
)

SELECTOR = "orders/*"
MAX_FRAME = 1 << 20  # the default --max-ws-frame-bytes
TOKEN_RE = re.compile(r"^[A-Za-z0-9._-]+$")
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
EVENT_KEYS = {"type", "id", "topic", "event", "time", "data", "resume"}

checks = Checks()
BINARY: Optional[str] = None


# --------------------------------------------------------------------------------------------
# A `websockets` connection with bounded reads.


class WS:
    """One connection of the real `websockets` sync client to /v1/ws.

    The client's own keepalive pings are off (the server's pings are still answered
    automatically); every read has a timeout."""

    def __init__(self, server: Server, label: str, **options: Any) -> None:
        self.label = label
        settings: dict = dict(open_timeout=10, close_timeout=3, ping_interval=None, proxy=None, legacy=True,
                              max_size=16 << 20)
        settings.update(options)
        self.conn = ws_connect(f"ws://{HOST}:{server.port}/v1/ws", **settings)
        register_cleanup(self)

    def send(self, value: Any) -> None:
        self.conn.send(json.dumps(value))

    def next(self, timeout: float = 5.0) -> dict:
        """The next message as JSON; TimeoutError if none within `timeout`, ConnectionClosed at the end."""
        text = self.conn.recv(timeout=timeout)
        if not isinstance(text, str):
            raise AssertionError(f"{self.label}: the server sent a binary message: {text[:80]!r}")
        return json.loads(text)

    def quiet_for(self, seconds: float) -> list:
        """Messages that arrive within `seconds` (normally none)."""
        extra = []
        deadline = time.monotonic() + seconds
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                extra.append(self.next(remaining))
            except TimeoutError:
                break
            except ConnectionClosed as error:
                extra.append({"closed": repr(error)})
                break
        return extra

    def wait_closed(self, timeout: float = 5.0) -> tuple:
        """Reads until the server closes: (close code received or an outcome string, [messages before])."""
        before = []
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "still open", before
            try:
                before.append(self.conn.recv(timeout=remaining))
            except TimeoutError:
                return "still open", before
            except ConnectionClosed as error:
                return (error.rcvd.code if error.rcvd is not None else f"no close frame ({error!r})"), before

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:  # noqa: BLE001 - the server may be gone
            pass
        unregister_cleanup(self)


# --------------------------------------------------------------------------------------------
# Expectations


def expected_event(answer: dict, topic: str, data: Any, type: Optional[str] = None,  # noqa: A002
                   key: Optional[str] = None) -> dict:
    """The `event` message a subscriber must get for a published event (without its token)."""
    expected = {"type": "event", "id": int(answer["id"]), "topic": topic, "event": type or "message",
                "time": answer["time"], "data": data}
    if key is not None:
        expected["key"] = key
    return expected


def publish(server: Server, log: Optional[list], topic: str, data: Any, *, type: Optional[str] = None,  # noqa: A002
            key: Optional[str] = None) -> dict:
    """Publishes over HTTP; appends the expected `event` message to `log` (None: it does not match)."""
    answer = server.publish(topic, data, type=type, key=key)
    expected = expected_event(answer, topic, data, type, key)
    if log is not None:
        log.append(expected)
    return expected


def strip_resume(message: dict) -> dict:
    return {name: value for name, value in message.items() if name != "resume"}


def expect_events(ws: WS, expected: list, what: str, timeout: float = 10.0) -> list:
    """The next len(expected) messages are exactly these events, in order, each with a resume token."""
    got = []
    deadline = time.monotonic() + timeout
    try:
        for _ in expected:
            got.append(ws.next(max(0.01, deadline - time.monotonic())))
    except (TimeoutError, ConnectionClosed) as error:
        checks.fail(f"{ws.label}: {what}", f"after {len(got)} of {len(expected)}: {type(error).__name__} {error}")
        return got
    checks.equal([strip_resume(message) for message in got], expected, f"{ws.label}: {what}")
    bad = [message for message in got if not TOKEN_RE.match(str(message.get("resume", "")))]
    checks.check(not bad, f"{ws.label}: {what}: every event has a URL-safe resume token", bad[:3])
    return got


def expect_subscribed(ws: WS, *, epoch: str, earliest: int, head: int, start: int) -> dict:
    message = ws.next()
    checks.equal(strip_resume(message),
                 {"type": "subscribed", "epoch": epoch, "earliest": earliest, "head": head, "from": start},
                 f"{ws.label}: subscribed {{epoch, earliest, head, from}}")
    checks.check(TOKEN_RE.match(str(message.get("resume", ""))), f"{ws.label}: subscribed has a resume token",
                 message)
    return message


def expect_caughtup(ws: WS, head: int) -> dict:
    message = ws.next()
    checks.equal(strip_resume(message), {"type": "caughtup", "head": head}, f"{ws.label}: caughtup {{head: {head}}}")
    checks.check(TOKEN_RE.match(str(message.get("resume", ""))), f"{ws.label}: caughtup has a resume token", message)
    return message


def expect_error(ws: WS, code: str, what: str, ref: Any = None) -> Optional[dict]:
    try:
        message = ws.next()
    except (TimeoutError, ConnectionClosed) as error:
        checks.fail(f"{ws.label}: {what} -> error {code}", f"{type(error).__name__}: {error}")
        return None
    expected = {"type": "error", "code": code}
    if ref is not None:
        expected["ref"] = ref
    got = {name: message.get(name) for name in expected}
    checks.check(got == expected and isinstance(message.get("message"), str) and message["message"] != "",
                 f"{ws.label}: {what} -> error {code}" + (f" with ref {ref!r}" if ref is not None else ""), message)
    return message


def expect_still_open(ws: WS, what: str) -> None:
    """A following subscribe is answered: the connection stayed open."""
    ws.send({"op": "subscribe", "topics": ["still/open"], "from": "latest"})
    try:
        message = ws.next()
        kinds = [message.get("type"), ws.next().get("type")]
    except (TimeoutError, ConnectionClosed) as error:
        checks.fail(f"{ws.label}: the connection stays open after {what}", f"{type(error).__name__}: {error}")
        return
    checks.equal(kinds, ["subscribed", "caughtup"], f"{ws.label}: the connection stays open after {what}")


# --------------------------------------------------------------------------------------------
# 1-3) subscribe, replay, live; resume after a disconnect and after SIGKILL + restart


def scenario_subscribe_resume_restart() -> None:
    server = Server(BINARY, name="ws-main").start()
    log: list = []
    publish(server, log, "orders/1", {"a": 1, "nested": {"z": [1, 2, 3], "b": True}}, type="created", key="order-1")
    publish(server, log, "orders/2", "plain text")
    publish(server, None, "payments/1", {"x": 1})
    publish(server, log, "orders/1/items", [1, "two", None, 3.5, {"k": "v"}], type="item")
    publish(server, log, "orders/3", '{"looks":"like json"}')  # a JSON string: delivered as text
    publish(server, log, "orders/1", None, key="order-1")  # tombstone
    publish(server, log, "orders/4", "")  # empty text, not a tombstone
    publish(server, log, "orders/5", "multi\nline\r\ntext ✓ héllo \u2028 end")
    publish(server, log, "orders/6", 42)
    publish(server, log, "orders/6", False, type="flag")
    publish(server, None, "payments/2", "not for orders/*")  # the head is an event the subscriber does not get
    health = server.health()
    epoch, earliest, head = health["epoch"], health["earliest"], health["head"]

    ws = WS(server, "ws earliest")
    try:
        ws.send({"op": "subscribe", "topics": [SELECTOR], "from": "earliest"})
        sub = expect_subscribed(ws, epoch=epoch, earliest=earliest, head=head, start=earliest - 1)
        checks.equal(set(sub), {"type", "epoch", "earliest", "head", "from", "resume"},
                     "ws earliest: subscribed has exactly type, epoch, earliest, head, from, resume")
        replay = expect_events(ws, list(log), "replay: exact ids, topics, event types, keys, times and data "
                                              "(JSON as values, text as strings, tombstone null)")
        checks.check(all(set(message) == EVENT_KEYS | ({"key"} if "key" in message else set()) for message in replay),
                     "ws earliest: events carry exactly type, id, topic, event, time, data, resume (+ key when set)",
                     [sorted(message) for message in replay])
        checks.check(all(TIME_RE.match(str(message.get("time"))) for message in replay),
                     "ws earliest: time is RFC 3339 UTC with milliseconds")
        checks.equal(len({message.get("resume") for message in replay}), len(replay),
                     "ws earliest: every event has its own resume token")
        expect_caughtup(ws, head)

        live = [publish(server, log, "orders/live", {"live": 1})]
        expect_events(ws, live, "live event published over HTTP after caughtup")

        # Publish on the subscribing connection itself: an ack and the event, in either order.
        ws.send({"op": "publish", "ref": "live-ws", "topic": "orders/live", "type": "ws", "data": {"via": "ws"}})
        pair = [ws.next(), ws.next()]
        acks = [message for message in pair if message.get("type") == "ack"]
        events = [message for message in pair if message.get("type") == "event"]
        checks.check(len(acks) == 1 and len(events) == 1 and acks[0].get("ref") == "live-ws",
                     "ws earliest: its own WS publish gets an ack (ref live-ws) and comes back as an event", pair)
        if acks:
            expected = expected_event(acks[0], "orders/live", {"via": "ws"}, "ws")
            log.append(expected)
            checks.equal([strip_resume(message) for message in events], [expected],
                         "ws earliest: the event of its own WS publish is exact")

        # A publish from another WS connection reaches the subscriber.
        other = WS(server, "ws publisher")
        try:
            other.send({"op": "publish", "ref": 1001, "topic": "orders/other", "key": "k-other",
                        "data": ["from", "another", "connection"]})
            ack = other.next()
            checks.check(ack.get("type") == "ack" and isinstance(ack.get("id"), int),
                         "ws publisher: ack for a publish from a second connection", ack)
            expected = expected_event(ack, "orders/other", ["from", "another", "connection"], key="k-other")
            log.append(expected)
            last = expect_events(ws, [expected], "live event published over a second WS connection")
        finally:
            other.close()
        checks.equal(ws.quiet_for(0.5), [], "ws earliest: nothing else arrives (no duplicate)")
        last_token, last_id = last[-1]["resume"], last[-1]["id"]
        seen = [message["id"] for message in replay] + [message["id"] for message in live] + \
            [message["id"] for message in events] + [message["id"] for message in last]
    finally:
        ws.close()
    mid_token, mid_id = replay[2]["resume"], replay[2]["id"]

    # 2. Disconnected: more is published; the old token resumes with exactly the missing events.
    missed = [
        publish(server, log, "orders/7", "missed 1"),
        publish(server, None, "payments/3", "not for us"),
        publish(server, log, "orders/8", {"missed": 2}),
        publish(server, log, "orders/7/x", {"missed": 3}, type="t", key="k"),
    ]
    missed = [item for item in missed if item["topic"].startswith("orders/")]
    head = server.health()["head"]
    ws = WS(server, "ws resume")
    try:
        ws.send({"op": "subscribe", "topics": [SELECTOR], "resume": last_token})
        expect_subscribed(ws, epoch=epoch, earliest=earliest, head=head, start=last_id)
        got = expect_events(ws, missed, "resume after a disconnect: exactly the missed events")
        caught = expect_caughtup(ws, head)
        live = [publish(server, log, "orders/9", "live after resume")]
        got += expect_events(ws, live, "live after the resumed replay")
        checks.equal(ws.quiet_for(0.5), [], "ws resume: nothing else arrives (no duplicate)")
        seen += [message["id"] for message in got]
        before_kill_token, before_kill_id = got[-1]["resume"], got[-1]["id"]
    finally:
        ws.close()
    checks.equal(seen, [item["id"] for item in log], "ws: across connections every id seen exactly once, in order")

    # The caughtup token names the head at that moment: resuming with it replays what came after.
    ws = WS(server, "ws caughtup token")
    try:
        ws.send({"op": "subscribe", "topics": [SELECTOR], "resume": caught["resume"]})
        expect_subscribed(ws, epoch=epoch, earliest=earliest, head=before_kill_id, start=head)
        expect_events(ws, live, "the caughtup token resumes right after the head it named")
        expect_caughtup(ws, before_kill_id)
    finally:
        ws.close()

    # 3. SIGKILL while a client is connected; a new process on the same database honours old tokens.
    ws = WS(server, "ws SIGKILL")
    try:
        ws.send({"op": "subscribe", "topics": [SELECTOR], "from": "latest"})
        ws.next()
        ws.next()
        acked_head = server.health()["head"]
        old_pid = server.proc.pid
        checks.equal(server.kill(), -signal.SIGKILL, "eventlogd died of SIGKILL")
        outcome, _ = ws.wait_closed(5.0)
        checks.check(outcome != "still open", f"ws SIGKILL: the client notices the killed server ({outcome})")
    finally:
        ws.close()
    server.restart(same_port=True)
    checks.check(server.proc.pid != old_pid, f"restarted as a new process on the same database "
                                             f"(pid {old_pid} -> {server.proc.pid})")
    health = server.health()
    checks.equal((health["epoch"], health["head"]), (epoch, acked_head), "epoch and head survive kill -9")
    after = [publish(server, log, "orders/10", "after crash"), publish(server, log, "orders/10", {"after": "crash"})]
    head = server.health()["head"]
    ws = WS(server, "ws after SIGKILL")
    try:
        ws.send({"op": "subscribe", "topics": [SELECTOR], "resume": before_kill_token})
        expect_subscribed(ws, epoch=epoch, earliest=earliest, head=head, start=before_kill_id)
        expect_events(ws, after, "a token from before the SIGKILL resumes with exactly the events after it")
        expect_caughtup(ws, head)
        live = [publish(server, log, "orders/11", "live after restart")]
        expect_events(ws, live, "live after SIGKILL + restart")
        checks.equal(ws.quiet_for(0.5), [], "ws after SIGKILL: nothing else arrives")
    finally:
        ws.close()
    head = server.health()["head"]
    ws = WS(server, "ws old token after SIGKILL")
    try:
        ws.send({"op": "subscribe", "topics": [SELECTOR], "resume": mid_token})
        expect_subscribed(ws, epoch=epoch, earliest=earliest, head=head, start=mid_id)
        expect_events(ws, [item for item in log if item["id"] > mid_id],
                      "a token from the first connection's replay still resumes exactly after its event")
        expect_caughtup(ws, head)
    finally:
        ws.close()
    server.close()


# --------------------------------------------------------------------------------------------
# 4) bad resume tokens


def flip(token: str, fraction: float) -> str:
    """The token with one character changed near `fraction` of its length (never a '.', and never
    the last character of a segment, whose low bits may be base64 padding)."""
    index = int(len(token) * fraction)
    while index < len(token) - 1 and (token[index] == "." or token[index + 1] == "."):
        index += 1
    replacement = "B" if token[index] != "B" else "C"
    return token[:index] + replacement + token[index + 1:]


def first_tokens(server: Server, label: str, count: int) -> list:
    ws = WS(server, label)
    try:
        ws.send({"op": "subscribe", "topics": [SELECTOR], "from": "earliest"})
        ws.next()
        return [ws.next() for _ in range(count)]
    finally:
        ws.close()


def scenario_tokens() -> None:
    a = Server(BINARY, name="ws-tokens-a").start()
    b = Server(BINARY, name="ws-tokens-b").start()
    for n in range(5):
        a.publish(f"orders/{n}", {"server": "a", "n": n})
        b.publish(f"orders/{n}", {"server": "b", "n": n})
    a_health = a.health()
    checks.check(a_health["epoch"] != b.health()["epoch"], "two databases have different epochs")
    a_events = first_tokens(a, "ws token source A", 5)
    b_events = first_tokens(b, "ws token source B", 5)
    token, position = a_events[1]["resume"], a_events[1]["id"]
    foreign = b_events[1]["resume"]
    checks.equal(b_events[1]["id"], position, "the foreign token names the same position (id) on the other log")

    variants = [
        ("tampered (a character in the middle flipped)", flip(token, 0.5)),
        ("tampered (a character at 3/4 flipped)", flip(token, 0.75)),
        ("tampered (a character at 1/4 flipped)", flip(token, 0.25)),
        ("truncated (last 4 characters cut)", token[:-4]),
        ("truncated to half", token[: len(token) // 2]),
        ("garbage", "garbage-token"),
        ("garbage with a version-like prefix", "v1.AAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAA"),
        ("empty string", ""),
        ("not a string", 12345),
        ("from another eventlogd on another database", foreign),
    ]
    for label, bad in variants:
        if isinstance(bad, str) and bad == token:
            checks.fail(f"token {label}: differs from the valid token", bad)
            continue
        ws = WS(a, f"ws token {label}")
        try:
            ws.send({"op": "subscribe", "topics": [SELECTOR], "resume": bad})
            expect_error(ws, "invalid_resume_token", "subscribe")
            checks.equal(ws.quiet_for(0.4), [], f"{ws.label}: nothing is replayed")
            ws.send({"op": "subscribe", "topics": [SELECTOR], "from": "earliest"})
            sub = ws.next()
            first = ws.next()
            checks.check(sub.get("type") == "subscribed" and first.get("type") == "event" and first.get("id") == 1,
                         f"{ws.label}: the connection stays open; a following subscribe from earliest works",
                         [sub, first])
        finally:
            ws.close()

    # The genuine token still works, and A's token is refused by B too.
    ws = WS(a, "ws genuine token")
    try:
        ws.send({"op": "subscribe", "topics": [SELECTOR], "resume": token})
        expect_subscribed(ws, epoch=a_health["epoch"], earliest=a_health["earliest"], head=a_health["head"],
                          start=position)
        got = [ws.next() for _ in range(3)]
        checks.equal([message.get("id") for message in got], [3, 4, 5],
                     f"{ws.label}: the untampered token resumes after id {position}")
    finally:
        ws.close()
    ws = WS(b, "ws A's token on B")
    try:
        ws.send({"op": "subscribe", "topics": [SELECTOR], "resume": token})
        expect_error(ws, "invalid_resume_token", "subscribe")
        checks.equal(ws.quiet_for(0.4), [], f"{ws.label}: nothing is replayed")
    finally:
        ws.close()
    a.close()
    b.close()


# --------------------------------------------------------------------------------------------
# 5) publish over WebSocket


def scenario_publish() -> None:
    server = Server(BINARY, name="ws-publish").start()
    ws = WS(server, "ws publish")
    try:
        ws.send({"op": "publish", "ref": "p1", "topic": "orders/ws", "type": "created", "key": "k1",
                 "data": {"a": 1, "b": [True, None]}})
        ack = ws.next()
        checks.equal(set(ack), {"type", "ref", "id", "topic", "time", "replayed"},
                     "ws publish: ack has exactly type, ref, id, topic, time, replayed")
        checks.check(ack.get("type") == "ack" and ack.get("ref") == "p1" and isinstance(ack.get("id"), int)
                     and ack.get("topic") == "orders/ws" and ack.get("replayed") is False
                     and TIME_RE.match(str(ack.get("time"))),
                     "ws publish: ack {ref: p1, id, topic, time, replayed: false}", ack)
        history = server.history("orders/ws")
        checks.equal(history["events"], [{"id": ack.get("id"), "topic": "orders/ws", "type": "created", "key": "k1",
                                          "time": ack.get("time"), "data": {"a": 1, "b": [True, None]}}],
                     "ws publish: the acked event is in HTTP history (committed before the ack)")
        checks.check(history["head"] >= ack.get("id", 1 << 62), "ws publish: head covers the acked id", history)

        # Idempotency.
        body = {"op": "publish", "topic": "orders/idem", "type": "t", "data": {"n": 1}, "idempotencyKey": "idem-1"}
        ws.send({**body, "ref": "i1"})
        first = ws.next()
        checks.check(first.get("type") == "ack" and first.get("ref") == "i1" and first.get("replayed") is False,
                     "ws publish: first publish with an idempotencyKey is acked, replayed false", first)
        ws.send({**body, "ref": "i2"})
        retry = ws.next()
        checks.check(retry.get("type") == "ack" and retry.get("ref") == "i2" and retry.get("id") == first.get("id")
                     and retry.get("replayed") is True,
                     "ws publish: retry with the same key and body -> ack with the same id, replayed true",
                     {"first": first, "retry": retry})
        http_retry = server.publish("orders/idem", {"n": 1}, type="t", idempotency_key="idem-1", expect_status=200)
        checks.equal(http_retry.get("id"), first.get("id"),
                     "the same idempotency key over HTTP (200) names the event published over WS")
        ws.send({**body, "ref": "i3", "data": {"n": 2}})
        expect_error(ws, "idempotency_conflict", "same idempotencyKey, different data", ref="i3")
        checks.equal([event["id"] for event in server.history("orders/idem")["events"]], [first.get("id")],
                     "ws publish: exactly one event stored for the idempotency key")

        # Invalid input: an error with the ref, the connection stays open.
        for ref, topic in (("t1", "bad topic"), ("t2", ""), ("t3", "a//b"), ("t4", "orders/"), ("t5", "x" * 300)):
            ws.send({"op": "publish", "ref": ref, "topic": topic, "data": 1})
            expect_error(ws, "invalid_topic", f"publish to topic {topic[:20]!r}", ref=ref)
        ws.send({"op": "publish", "ref": "t6", "data": 1})
        expect_error(ws, "invalid_topic", "publish without a topic", ref="t6")
        ws.send({"op": "publish", "ref": "y1", "topic": "orders/x", "type": "eventlog.gap", "data": 1})
        expect_error(ws, "invalid_type", "publish with a reserved eventlog.* type", ref="y1")
        ws.send({"op": "publish", "ref": "f1", "topic": "orders/x", "colour": "red"})
        expect_error(ws, "invalid_field", "publish with an unknown field", ref="f1")
        ws.send({"op": "publish", "ref": "ok", "topic": "orders/after-errors", "data": "fine"})
        ack = ws.next()
        checks.check(ack.get("type") == "ack" and ack.get("ref") == "ok",
                     "ws publish: after those errors the connection stays open and publishes", ack)

        # A numeric ref is echoed as given.
        ws.send({"op": "publish", "ref": 7, "topic": "orders/numeric-ref", "data": 7})
        ack = ws.next()
        checks.check(ack.get("type") == "ack" and ack.get("ref") == 7 and type(ack.get("ref")) is int,
                     "ws publish: a numeric ref (7) is echoed as the number 7 (docs: string or number, echoed)",
                     f"sent ref 7, got {ack!r}")

        # Many publishes in flight on one connection: acks matched by ref.
        count = 40
        for n in range(count):
            ws.send({"op": "publish", "ref": f"c{n}", "topic": f"orders/burst/{n % 4}", "data": {"c": n}})
        acks = [ws.next() for _ in range(count)]
        by_ref = {message.get("ref"): message for message in acks if message.get("type") == "ack"}
        checks.equal(sorted(by_ref), sorted(f"c{n}" for n in range(count)),
                     f"ws publish: {count} pipelined publishes get {count} acks, one per ref")
        stored = {event["id"]: event["data"] for event in server.history("orders/burst/*")["events"]}
        checks.equal({ref: stored.get(message.get("id")) for ref, message in by_ref.items()},
                     {f"c{n}": {"c": n} for n in range(count)},
                     "ws publish: each ack's id names the event that ref published")
    finally:
        ws.close()
    server.close()


# --------------------------------------------------------------------------------------------
# 6) bad input and close codes


def raw_close(raw: RawWebSocket, expected: int, what: str, timeout: float = 5.0) -> None:
    try:
        frame, before = raw.wait_close(timeout)
    except TimeoutError as error:
        checks.fail(f"raw: {what} -> close {expected}",
                    f"no close within {timeout}s; frames received instead: {getattr(error, 'frames', [])!r}")
        return
    code = frame.close_code if frame is not None else "EOF without a close frame"
    checks.equal(code, expected, f"raw: {what} -> close {expected}" +
                 (f" ({frame.close_reason!r})" if frame is not None and frame.close_reason else ""))
    texts = [f for f in before if f.opcode == WSOpcode.TEXT]
    if texts:
        checks.fail(f"raw: {what}: no message before the close", texts)


def padded_subscribe(size: int) -> bytes:
    """A valid subscribe message of exactly `size` bytes (JSON whitespace as padding)."""
    core = json.dumps({"op": "subscribe", "topics": ["padded/x"], "from": "latest"}).encode()
    return core[:-1] + b" " * (size - len(core)) + b"}"


def scenario_bad_input() -> None:
    server = Server(BINARY, name="ws-bad-input").start()
    response = server.http.get(server.url("/v1/ws"))
    code = response.json().get("error", {}).get("code") if response.headers.get("content-type", "").startswith(
        "application/json") else None
    checks.equal((response.status_code, code), (426, "upgrade_required"),
                 "GET /v1/ws without an upgrade -> 426 upgrade_required")

    ws = WS(server, "ws bad input")
    try:
        ws.conn.send("{not json")
        expect_error(ws, "malformed_json", "malformed JSON")
        expect_still_open(ws, "malformed JSON")
        ws.send({"op": "frobnicate", "ref": "u1"})
        expect_error(ws, "invalid_op", "unknown op", ref="u1")
        ws.send({"ref": "u2", "topics": ["x"]})
        expect_error(ws, "invalid_op", "missing op", ref="u2")
        expect_still_open(ws, "invalid_op")
    finally:
        ws.close()

    # Close codes with the real client where it can send the frame...
    ws = WS(server, "ws binary")
    try:
        ws.conn.send(json.dumps({"op": "subscribe", "topics": ["x"]}).encode())  # bytes: a binary frame
        code, before = ws.wait_closed()
        checks.equal((code, before), (1003, []), "ws binary: a binary frame -> close 1003")
    finally:
        ws.close()
    ws = WS(server, "ws invalid UTF-8")
    try:
        ws.conn.send(b'{"op":"subscribe","topics":["\xff\xfe"]}', text=True)
        code, before = ws.wait_closed()
        checks.equal((code, before), (1007, []), "ws invalid UTF-8: invalid UTF-8 in a text frame -> close 1007")
    finally:
        ws.close()

    # ... and with the raw client, byte by byte.
    with RawWebSocket(server.port) as raw:
        raw.send_frame(WSOpcode.BINARY, b"\x00\x01\x02")
        raw_close(raw, 1003, "a binary frame")
    with RawWebSocket(server.port) as raw:
        raw.send_frame(WSOpcode.TEXT, b"\xff\xfe")
        raw_close(raw, 1007, "a text frame of bytes ff fe")
    with RawWebSocket(server.port) as raw:
        raw.send_frame(WSOpcode.TEXT, b'{"op":"subscribe","topics":["a\xe2\x82"]}')  # truncated sequence
        raw_close(raw, 1007, "a text frame with a truncated UTF-8 sequence")
    with RawWebSocket(server.port) as raw:
        raw.send_frame(WSOpcode.TEXT, b'{"op":"sub', fin=False)
        raw.send_frame(WSOpcode.CONTINUATION, b'scribe","topics":["\xc3', fin=False)
        raw.send_frame(WSOpcode.CONTINUATION, b'\x28"]}', fin=True)
        raw_close(raw, 1007, "a fragmented text message whose reassembly is invalid UTF-8")

    # Size limit: a frame of exactly the limit is fine, one byte more is 1009.
    with RawWebSocket(server.port) as raw:
        raw.send_frame(WSOpcode.TEXT, padded_subscribe(MAX_FRAME))
        try:
            kinds = [raw.recv_json(10.0).get("type"), raw.recv_json(5.0).get("type")]
        except (TimeoutError, WSClosed) as error:
            kinds = [repr(error)]
        checks.equal(kinds, ["subscribed", "caughtup"], f"raw: a text frame of exactly {MAX_FRAME} bytes is accepted")
    with RawWebSocket(server.port) as raw:
        payload = padded_subscribe(MAX_FRAME + 1)
        frame = RawWebSocket.encode_frame(WSOpcode.TEXT, payload)
        header_and_some = len(frame) - len(payload) + 4096
        raw.send_raw(frame[:header_and_some])  # the length field already says too much
        try:
            closed, _ = raw.wait_close(3.0)
            how = "on the length field"
        except TimeoutError:
            try:
                raw.send_raw(frame[header_and_some:])
            except OSError:
                pass
            closed, _ = raw.wait_close(5.0)
            how = "after the whole frame"
        code = closed.close_code if closed is not None else "EOF without a close frame"
        checks.equal(code, 1009, f"raw: a text frame of {MAX_FRAME + 1} bytes -> close 1009 ({how})")

    # Fragmentation: the real client's fragmented send, reassembled into one message.
    data = "y" * 300_000
    message = json.dumps({"op": "publish", "ref": "frag", "topic": "orders/fragmented", "data": data})
    parts = [message[i:i + 70_000] for i in range(0, len(message), 70_000)]
    ws = WS(server, "ws fragmented", compression=None)
    try:
        ws.conn.send(parts)
        ack = ws.next(10.0)
        checks.check(ack.get("type") == "ack" and ack.get("ref") == "frag",
                     f"ws fragmented: a message in {len(parts)} fragments ({len(message)} bytes) is one publish", ack)
        stored = server.history("orders/fragmented")["events"]
        checks.check(len(stored) == 1 and stored[0]["data"] == data,
                     "ws fragmented: the reassembled data is stored whole", [len(str(e.get("data"))) for e in stored])
    finally:
        ws.close()
    with RawWebSocket(server.port) as raw:
        text = json.dumps({"op": "publish", "ref": "frag-raw", "topic": "orders/fragmented/raw", "data": "fragments"})
        pieces = [text[i:i + 9].encode() for i in range(0, len(text), 9)]
        for index, piece in enumerate(pieces):
            opcode = WSOpcode.TEXT if index == 0 else WSOpcode.CONTINUATION
            raw.send_frame(opcode, piece, fin=index == len(pieces) - 1)
            if index == 2:
                raw.send_frame(WSOpcode.PING, b"between")  # a control frame between fragments is allowed
        got = []
        try:
            for _ in range(2):
                frame = raw.recv_frame(5.0)
                got.append((frame.opcode, frame.payload if frame.opcode == WSOpcode.PONG else json.loads(frame.payload)))
        except (TimeoutError, WSClosed, ValueError) as error:
            got.append(repr(error))
        pong = [payload for opcode, payload in got[:2] if opcode == WSOpcode.PONG] if len(got) >= 2 else []
        acks = [payload for item in got if isinstance(item, tuple) and item[0] == WSOpcode.TEXT
                for payload in [item[1]] if payload.get("type") == "ack" and payload.get("ref") == "frag-raw"]
        checks.check(pong == [b"between"] and len(acks) == 1,
                     f"raw: {len(pieces)} fragments with a ping in between -> one pong (same payload) and one ack", got)
    with RawWebSocket(server.port) as raw:
        piece = b" " * (400 * 1024)
        raw.send_frame(WSOpcode.TEXT, b"{" + piece, fin=False)
        raw.send_frame(WSOpcode.CONTINUATION, piece, fin=False)
        raw.send_frame(WSOpcode.CONTINUATION, piece + b"}", fin=True)
        raw_close(raw, 1009, "3 fragments of 400 KiB each (1.2 MiB reassembled)")

    # More than 20 bad messages: 20 errors, then close 1008.
    ws = WS(server, "ws abuse")
    try:
        for n in range(25):
            try:
                ws.conn.send(f"bad {n}")
            except ConnectionClosed:
                break
        code, before = ws.wait_closed(5.0)
        errors = [json.loads(text).get("code") for text in before]
        checks.equal((code, errors), (1008, ["malformed_json"] * 20),
                     "ws abuse: 25 malformed messages -> 20 error messages, then close 1008")
    finally:
        ws.close()

    # Protocol violations: 1002.
    with RawWebSocket(server.port) as raw:
        raw.send_frame(0x3, b"reserved")
        raw_close(raw, 1002, "a frame with the reserved opcode 0x3")
    with RawWebSocket(server.port) as raw:
        raw.send_frame(WSOpcode.CONTINUATION, b"orphan", fin=True)
        raw_close(raw, 1002, "a continuation frame with no message started")
    with RawWebSocket(server.port) as raw:
        raw.send_frame(WSOpcode.TEXT, json.dumps({"op": "subscribe", "topics": ["x"]}).encode(), mask=False)
        raw_close(raw, 1002, "an unmasked client frame (RFC 6455 5.1)")
    server.close()


# --------------------------------------------------------------------------------------------
# 7) from beyond head: reset; other start positions; resubscribe


def scenario_reset() -> None:
    server = Server(BINARY, name="ws-reset").start()
    log: list = []
    for n in range(6):
        publish(server, log, f"orders/{n}", {"n": n})
    health = server.health()
    epoch, earliest, head = health["epoch"], health["earliest"], health["head"]

    ws = WS(server, "ws reset")
    try:
        ahead = head + 500
        ws.send({"op": "subscribe", "topics": [SELECTOR], "from": ahead})
        expect_subscribed(ws, epoch=epoch, earliest=earliest, head=head, start=head)
        reset = ws.next()
        checks.equal(reset, {"type": "reset", "requested": ahead, "head": head, "epoch": epoch},
                     "ws reset: from beyond head -> reset {requested, head, epoch}")
        expect_caughtup(ws, head)
        live = [publish(server, log, "orders/live", "after reset")]
        checks.equal(live[0]["id"], head + 1, "ws reset: the next id is head + 1")
        expect_events(ws, live, "after reset the subscription continues with the live tail")
        checks.equal(ws.quiet_for(0.4), [], "ws reset: nothing else arrives")
        head = live[0]["id"]
    finally:
        ws.close()

    cases = [
        ("from head (not a reset)", head, head, []),
        ("from 3", 3, 3, [item for item in log if item["id"] > 3]),
        ("from 0", 0, earliest - 1, list(log)),
        ("from latest", "latest", head, []),
        ("no from (live only)", None, head, []),
    ]
    for label, start, resolved, replay in cases:
        ws = WS(server, f"ws {label}")
        try:
            request = {"op": "subscribe", "topics": [SELECTOR]}
            if start is not None:
                request["from"] = start
            ws.send(request)
            expect_subscribed(ws, epoch=epoch, earliest=earliest, head=head, start=resolved)
            if replay:
                expect_events(ws, replay, "replays exactly the events after the position")
            expect_caughtup(ws, head)
        finally:
            ws.close()
    for label, value in (("-1", -1), ("1.5", 1.5), ("'abc'", "abc"), ("true", True)):
        ws = WS(server, f"ws from {label}")
        try:
            ws.send({"op": "subscribe", "topics": [SELECTOR], "from": value})
            expect_error(ws, "invalid_parameter", f"subscribe from {label}")
            checks.equal(ws.quiet_for(0.3), [], f"{ws.label}: nothing is replayed")
        finally:
            ws.close()

    # A new subscribe on the same connection replaces the previous one.
    ws = WS(server, "ws resubscribe")
    try:
        ws.send({"op": "subscribe", "topics": ["orders/*"], "from": "latest"})
        ws.next()
        ws.next()
        ws.send({"op": "subscribe", "topics": ["payments/*"], "from": "latest"})
        kinds = [ws.next().get("type"), ws.next().get("type")]
        checks.equal(kinds, ["subscribed", "caughtup"], "ws resubscribe: the second subscribe is answered")
        publish(server, None, "orders/old-selector", "must not arrive")
        wanted = [publish(server, None, "payments/new-selector", "must arrive")]
        expect_events(ws, wanted, "only the new subscription's events arrive")
        checks.equal(ws.quiet_for(0.4), [], "ws resubscribe: nothing from the replaced subscription")
    finally:
        ws.close()
    server.close()


def scenario_token_gap_epoch() -> None:
    """Tokens older than earliest - 1 get gap; tokens of this log for another epoch get reset.

    Retention and restores are not reachable from outside the server, so both are simulated on the
    stopped database (as sse_clients.py does for the gap), then the server is restarted."""
    server = Server(BINARY, name="ws-token-gap").start()
    log: list = []
    for n in range(6):
        publish(server, log, f"orders/{n}", {"n": n})
    tokens = {message["id"]: message["resume"] for message in first_tokens(server, "ws token source", 6)}
    epoch, head = server.health()["epoch"], log[-1]["id"]
    cut = 4  # keep ids >= cut
    checks.equal(server.terminate(), 0, "token gap: eventlogd exits 0 on SIGTERM")
    retention = run_maint(eventlog_maint_path(near=BINARY), "retain", "--db", server.db,
                          "--max-events", str(head - cut + 1), "--quiet")
    checks.check(retention.returncode == 0, "token gap: eventlog-maint retain exits 0", retention.stderr)
    server.restart(same_port=True)
    checks.equal(server.health()["earliest"], cut, "token gap: /healthz reports the raised earliest")
    retained = [item for item in log if item["id"] >= cut]
    ws = WS(server, "ws token older than earliest")
    try:
        ws.send({"op": "subscribe", "topics": [SELECTOR], "resume": tokens[1]})
        expect_subscribed(ws, epoch=epoch, earliest=cut, head=head, start=1)
        checks.equal(ws.next(), {"type": "gap", "requested": 1, "earliest": cut, "reason": "retention"},
                     "ws token older than earliest: gap {requested, earliest, reason}")
        expect_events(ws, retained, "after gap the replay goes on with what is left")
        expect_caughtup(ws, head)
    finally:
        ws.close()
    ws = WS(server, "ws token at earliest - 1")
    try:
        ws.send({"op": "subscribe", "topics": [SELECTOR], "resume": tokens[cut - 1]})
        expect_subscribed(ws, epoch=epoch, earliest=cut, head=head, start=cut - 1)
        expect_events(ws, retained, "no gap: replays what is retained")
        expect_caughtup(ws, head)
    finally:
        ws.close()

    # A restore from a backup gives the log a new epoch; its own older tokens then mean "reset".
    new_epoch = "restored" + epoch[8:]
    checks.equal(server.terminate(), 0, "token epoch: eventlogd exits 0 on SIGTERM")
    with sqlite3.connect(server.db, timeout=10) as database:
        database.execute("UPDATE meta SET value = ? WHERE name = 'epoch'", (new_epoch,))
    database.close()
    server.restart(same_port=True)
    checks.equal(server.health()["epoch"], new_epoch, "token epoch: /healthz reports the new epoch")
    ws = WS(server, "ws token of another epoch")
    try:
        ws.send({"op": "subscribe", "topics": [SELECTOR], "resume": tokens[5]})
        expect_subscribed(ws, epoch=new_epoch, earliest=cut, head=head, start=head)
        checks.equal(ws.next(), {"type": "reset", "requested": 5, "head": head, "epoch": new_epoch},
                     "ws token of another epoch: reset {requested, head, epoch}")
        expect_caughtup(ws, head)
        live = [publish(server, None, "orders/live", "after epoch reset")]
        expect_events(ws, live, "after reset the live tail follows")
        checks.equal(ws.quiet_for(0.4), [], "ws token of another epoch: nothing else arrives")
    finally:
        ws.close()
    server.close()


# --------------------------------------------------------------------------------------------
# 8) SIGTERM: close 1001


def scenario_sigterm() -> None:
    server = Server(BINARY, name="ws-sigterm").start()
    server.publish("orders/1", "before shutdown")
    subscribed = WS(server, "ws subscribed at SIGTERM")
    idle = WS(server, "ws idle at SIGTERM")
    raw = RawWebSocket(server.port)
    try:
        subscribed.send({"op": "subscribe", "topics": [SELECTOR], "from": "earliest"})
        kinds = [subscribed.next().get("type") for _ in range(3)]
        checks.equal(kinds, ["subscribed", "event", "caughtup"], "ws subscribed at SIGTERM: caught up")
        raw.send_json({"op": "subscribe", "topics": ["payments/*"], "from": "latest"})
        raw_kinds = [raw.recv_json().get("type"), raw.recv_json().get("type")]
        checks.equal(raw_kinds, ["subscribed", "caughtup"], "raw subscribed at SIGTERM: caught up")
        results: dict = {}

        def watch(name: str, client: Any) -> None:
            try:
                if isinstance(client, RawWebSocket):
                    frame, before = client.wait_close(15.0)
                    results[name] = (frame.close_code if frame is not None else "EOF without a close frame",
                                     [f for f in before if f.opcode == WSOpcode.TEXT])
                else:
                    results[name] = client.wait_closed(15.0)
            except Exception as error:  # noqa: BLE001
                results[name] = (repr(error), [])

        threads = [threading.Thread(target=watch, args=(name, client), daemon=True)
                   for name, client in (("subscribed", subscribed), ("idle", idle), ("raw", raw))]
        for thread in threads:
            thread.start()
        status = server.terminate()
        for thread in threads:
            thread.join(timeout=20)
        checks.equal(status, 0, "eventlogd exits 0 on SIGTERM with WebSocket clients connected")
        for name in ("subscribed", "idle", "raw"):
            code, before = results.get(name, ("no result", []))
            checks.equal((code, before), (1001, []), f"SIGTERM closes the {name} connection with 1001")
    finally:
        subscribed.close()
        idle.close()
        raw.close()
    server.close()


# --------------------------------------------------------------------------------------------
# 9) ping/pong liveness


def scenario_ping() -> None:
    server = Server(BINARY, name="ws-ping", args=["--ws-ping", "1"]).start()
    ws = WS(server, "ws --ws-ping 1")  # websockets answers pings by itself
    connected = time.monotonic()
    silent = RawWebSocket(server.port)
    answering = RawWebSocket(server.port)
    try:
        ws.send({"op": "subscribe", "topics": [SELECTOR], "from": "latest"})
        ws.next()
        ws.next()
        result: dict = {}

        def never_answer() -> None:
            started = time.monotonic()
            try:
                frame, before = silent.wait_close(8.0, answer_pings=False)
                result["code"] = frame.close_code if frame is not None else "EOF without a close frame"
                result["pings"] = sum(1 for f in before if f.opcode == WSOpcode.PING)
            except Exception as error:  # noqa: BLE001
                result["code"] = repr(error)
            result["elapsed"] = time.monotonic() - started

        thread = threading.Thread(target=never_answer, daemon=True)
        thread.start()
        # A raw client that does answer pings, watched for 4 s.
        try:
            frame, before = answering.wait_close(4.0, answer_pings=True)
            outcome = f"closed with {frame.close_code if frame is not None else 'EOF'}"
            pings = sum(1 for f in before if f.opcode == WSOpcode.PING)
        except TimeoutError:
            outcome, pings = "still open", None
        checks.equal(outcome, "still open", "raw client that answers pings stays connected for 4 s")
        thread.join(timeout=10)
        checks.check(result.get("pings", 0) >= 1, "raw client that never answers receives pings", result)
        elapsed = result.get("elapsed", 99.0)
        checks.check(result.get("code") == 1008 and 1.5 <= elapsed <= 4.5,
                     f"raw client that never answers pings is closed with 1008 within ~2-4 s "
                     f"(code {result.get('code')}, after {elapsed:.1f} s)", result)

        alive_for = time.monotonic() - connected
        live = [publish(server, None, "orders/alive", "still here")]
        expect_events(ws, live, f"websockets client is still connected after {alive_for:.1f} s and gets live events")
        checks.check(alive_for > 3.0, f"websockets client stayed connected > 3 s ({alive_for:.1f} s)")
        checks.equal(ws.conn.state.name, "OPEN", "websockets client: connection state OPEN")
    finally:
        ws.close()
        silent.close()
        answering.close()
    server.close()


# --------------------------------------------------------------------------------------------


def main(argv: list) -> int:
    global BINARY
    install_deadline(int(os.environ.get("CONFORMANCE_DEADLINE", "150")))
    try:
        BINARY = eventlogd_path(argv[1] if len(argv) > 1 else None)
        print(f"# eventlogd: {BINARY}", flush=True)
        print(f"# websockets {websockets.__version__}", flush=True)
        checks.run_scenario("1-3) subscribe from earliest, live, resume after disconnect and after SIGKILL + restart",
                            scenario_subscribe_resume_restart)
        checks.run_scenario("4) tampered, truncated, garbage and foreign resume tokens", scenario_tokens)
        checks.run_scenario("5) publish over WebSocket: ack, idempotency, errors", scenario_publish)
        checks.run_scenario("6) bad input and close codes (1003, 1007, 1009, 1008, 1002)", scenario_bad_input)
        checks.run_scenario("7) from beyond head: reset; other start positions; resubscribe", scenario_reset)
        checks.run_scenario("7) resume tokens older than earliest (gap) and of another epoch (reset)",
                            scenario_token_gap_epoch)
        checks.run_scenario("8) SIGTERM closes WebSocket connections with 1001", scenario_sigterm)
        checks.run_scenario("9) ping/pong liveness with --ws-ping 1", scenario_ping)
    except BaseException as error:  # noqa: BLE001 - deadline, missing binary, Ctrl-C: still summarize
        checks.fail(f"run aborted by {type(error).__name__}", str(error))
    finally:
        signal.alarm(0)
    return checks.summary()


if __name__ == "__main__":
    code = main(sys.argv)
    sys.exit(code)
