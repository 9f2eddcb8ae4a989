#!/usr/bin/env python3
"""Order-state wire conformance (issue 13): real clients against a real eventlogd.

  1) Browser: a headless Chromium's own `new EventSource("/v1/events?topic=orders/*&envelope=1&snapshot=latest")`
     (on a page of eventlogd's origin, as browser.py does) gets, before `eventlog.caughtup`, exactly the newest
     event of each (topic, key) under orders/* in id order (an event without a key counts as key == its topic;
     the same key on two topics is two keys; other topics never), `eventlog.open` says `from` 0; then live
     events. eventlogd is stopped (SIGKILL, then again SIGTERM) and restarted on the same database and port,
     events are published right after the restart (before the browser is back) and after it reconnected: the
     EventSource reconnects by itself with Last-Event-ID (the new `eventlog.open` says `from` = the last id it
     had) and gets every later event exactly once, in order, and no snapshot again.
  2) Python `websockets`: `{"op":"subscribe","topics":[..],"from":{"rewind":N}}` gives exactly the last N
     matching events (`subscribed.from` is the id before the first), `caughtup`, then live events; a rewind
     larger than the number of matching events gives all of them; `rewind` 0, -1, "x", 1.5 and 1000001 get an
     `error` with code `invalid_parameter` and the connection stays usable; a WebSocket `publish` with a wrong
     `expectedLastId` gets `expected_last_id_mismatch` with `lastId`, a right one an ack.
  3) curl: `Expected-Last-Id` on single-event publishes (0 on an empty topic 201; 0 again 409
     `expected_last_id_mismatch` with `lastId`; the right id 201; an Idempotency-Key retry of the first request
     200 with its original id though the topic moved on; `abc`, `-1` 400; header and body field differing 400;
     the header on an NDJSON batch 400), an NDJSON batch whose line 2 has a wrong `expectedLastId` is 409 with
     `index` 1 and appends nothing (checked in history), and a batch whose lines all match is 201.
  4) httpx SSE `since=`: an RFC 3339 time (Z and +02:00 offsets; the boundary is inclusive), a duration
     (`2s`, `1h`), a time in the future (nothing, then live); SSE `rewind=2`; `eventlog.open`'s `from` is the
     resolved position (for `since`, the id before the first event of any topic committed at or after the
     time); two start parameters, a bad `since`, `rewind=0` and `snapshot=newest` are 400 `invalid_parameter`.

Every server runs on 127.0.0.1 on an ephemeral port with a database in a temp directory; every wait is bounded.

Usage: python3 tools/conformance/orderstate.py [path/to/eventlogd]   (or set EVENTLOGD)
Prints `ok - ...` / `FAIL - ...` per check and ends with `N passed, M failed`; exits 1 on failure.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
import time
from urllib.parse import quote
from typing import Any, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import httpx  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402
from websockets.sync.client import connect as ws_connect  # noqa: E402

# browser.py sets NO_PROXY for 127.0.0.1 at import, and holds the Chromium driver this script reuses.
import browser as chromium  # noqa: E402
from lib import (  # noqa: E402
    HOST,
    Checks,
    SSEParser,
    Server,
    eventlogd_path,
    install_deadline,
    register_cleanup,
    unregister_cleanup,
)

SSE_RETRY_MS = 500
WAIT = 20.0

checks = Checks()
BINARY: Optional[str] = None


def parse_time(text: str) -> datetime.datetime:
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)


def rfc3339(moment: datetime.datetime, offset_hours: int = 0) -> str:
    """Millisecond RFC 3339: `...Z` for offset 0, else `...+HH:00`."""
    local = moment.astimezone(datetime.timezone(datetime.timedelta(hours=offset_hours)))
    text = local.strftime("%Y-%m-%dT%H:%M:%S.") + f"{local.microsecond // 1000:03d}"
    return text + ("Z" if offset_hours == 0 else f"{'+' if offset_hours > 0 else '-'}{abs(offset_hours):02d}:00")


def newest_per_key(events: list, prefix: str) -> list:
    """The snapshot as the contract defines it: the newest event of each (topic, key or topic), id order."""
    newest: dict = {}
    for event in events:
        if not event["topic"].startswith(prefix):
            continue
        slot = (event["topic"], event["key"] if event.get("key") is not None else event["topic"])
        if slot not in newest or newest[slot]["id"] < event["id"]:
            newest[slot] = event
    return sorted(newest.values(), key=lambda e: e["id"])


# --------------------------------------------------------------------------------------------
# 1) Browser: snapshot=latest, then restart and Last-Event-ID

# The browser's own EventSource; one sequence number across events and control events, so what came
# before `eventlog.caughtup` can be told apart from the tail.
SNAPSHOT_EVENTSOURCE_JS = """
let seq = 0;
const state = window.eventlog = {received: [], controls: [], status: "connecting", opens: 0};
const source = state.source = new EventSource(arguments[0]);
source.onopen = () => { state.status = "open"; };
source.onerror = () => { state.status = source.readyState === EventSource.CLOSED ? "closed" : "reconnecting"; };
source.addEventListener("message", (m) => {
  const e = JSON.parse(m.data);
  state.received.push({seq: seq++, id: e.id, lastEventId: m.lastEventId, topic: e.topic, key: e.key === undefined ? null : e.key,
                       type: e.type, data: e.data});
});
for (const name of ["eventlog.open", "eventlog.caughtup", "eventlog.gap", "eventlog.reset", "eventlog.error"]) {
  source.addEventListener(name, (m) => {
    if (name === "eventlog.open") state.opens++;
    let data = null;
    try { data = JSON.parse(m.data); } catch (err) { data = m.data; }
    state.controls.push({seq: seq++, type: name, data: data});
  });
}
"""


class Log:
    """What was published (every topic), in id order."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.events: list = []

    def add(self, topic: str, data: Any, key: Optional[str] = None) -> dict:
        answer = self.server.publish(topic, data, key=key)
        event = {"id": int(answer["id"]), "topic": topic, "key": key, "data": data, "time": answer["time"]}
        self.events.append(event)
        return event

    def matching(self, prefix: str, after: int = 0) -> list:
        return [e for e in self.events if e["topic"].startswith(prefix) and e["id"] > after]


def view(events: list) -> list:
    return [(e["id"], e["topic"], e.get("key"), e["data"]) for e in events]


def scenario_browser_snapshot() -> None:
    label = "browser snapshot"
    server = Server(BINARY, name="orderstate-browser", args=["--sse-retry", str(SSE_RETRY_MS)]).start()
    log = Log(server)
    # Several keys on two topics under orders/, some updated several times, interleaved; events without a
    # key (key == topic); the same key on two topics; other topics with the same keys (never delivered).
    log.add("orders/1", {"k": "a", "v": 1}, key="a")
    log.add("orders/1", {"k": "b", "v": 1}, key="b")
    log.add("orders/2", {"k": "a", "v": 1}, key="a")
    log.add("payments/1", {"k": "a", "v": 1}, key="a")
    log.add("orders/1", {"k": "a", "v": 2}, key="a")
    log.add("orders/2", {"nokey": 1})
    log.add("orders/1", {"k": "c", "v": 1}, key="c")
    log.add("orders/2", {"k": "a", "v": 2}, key="a")
    log.add("orders/1", {"k": "a", "v": 3}, key="a")
    log.add("orders/2", {"nokey": 2})
    log.add("orders/2", {"k": "orders/2", "v": 1}, key="orders/2")  # the keyless events' slot: replaces nokey 2
    log.add("payments/1", {"k": "a", "v": 2}, key="a")
    log.add("orders/1", {"k": "b", "v": 2}, key="b")
    log.add("orders/2", {"k": "d", "v": 1}, key="d")
    log.add("orders/1", {"k": "c", "v": 2}, key="c")
    log.add("payments/2", {"nokey": 1})
    expected_snapshot = newest_per_key(log.events, "orders/")
    checks.check(len(expected_snapshot) < len(log.matching("orders/")),
                 f"{label}: {len(log.matching('orders/'))} orders/* events published over "
                 f"{len(expected_snapshot)} (topic, key) pairs")
    epoch = server.health()["epoch"]

    browser = chromium.Browser("chromium orderstate")
    # A same-origin document: the EventSource needs no CORS.
    browser.open(server.url("/healthz"))
    browser.js(SNAPSHOT_EVENTSOURCE_JS, "/v1/events?topic=orders/*&envelope=1&snapshot=latest")
    state = browser.wait(lambda s: chromium.controls_of(s, "eventlog.caughtup"), "eventlog.caughtup")
    caught_seq = [c["seq"] for c in state["controls"] if c["type"] == "eventlog.caughtup"][0]
    before = [r for r in state["received"] if r["seq"] < caught_seq]
    checks.equal(view(before), view(expected_snapshot),
                 f"{label}: before eventlog.caughtup: exactly the newest event of each (topic, key) under orders/*, "
                 f"in id order (ids {[e['id'] for e in expected_snapshot]})")
    checks.equal([r["lastEventId"] for r in before], [str(e["id"]) for e in expected_snapshot],
                 f"{label}: each snapshot event's lastEventId is its own id")
    opens = chromium.controls_of(state, "eventlog.open")
    checks.equal(len(opens), 1, f"{label}: one eventlog.open")
    checks.equal((opens[0] or {}).get("from") if opens else None, 0, f"{label}: eventlog.open says from 0 for a snapshot")
    checks.equal(((opens[0] or {}).get("epoch") if opens else None), epoch, f"{label}: eventlog.open has the epoch")
    checks.equal((chromium.controls_of(state, "eventlog.caughtup")[0] or {}).get("head"), log.events[-1]["id"],
                 f"{label}: eventlog.caughtup says head {log.events[-1]['id']}")

    # Live: an update of a key the snapshot had, a new key, and noise.
    tail: list = []
    tail.append(log.add("orders/1", {"k": "a", "v": 4}, key="a"))
    log.add("payments/1", {"k": "a", "v": 3}, key="a")
    tail.append(log.add("orders/3", {"k": "e", "v": 1}, key="e"))
    tail.append(log.add("orders/2", {"nokey": 3}))

    def has(expected: list):
        want = [e["id"] for e in expected]
        return lambda s: want[-1] in [r["id"] for r in s.get("received", [])]

    state = browser.wait(has(tail), "live events after the snapshot")
    after = [r for r in state["received"] if r["seq"] > caught_seq]
    checks.equal(view(after), view(tail), f"{label}: after eventlog.caughtup: the live events, once, in order")

    for how in ("SIGKILL", "SIGTERM"):
        state = browser.state() or {}
        opens_before = state.get("opens", 0)
        last_had = state["received"][-1]["id"] if state.get("received") else None
        port = server.port
        if how == "SIGKILL":
            checks.equal(server.kill(), -signal.SIGKILL, f"{label}: eventlogd died of SIGKILL")
        else:
            checks.equal(server.terminate(), 0, f"{label}: eventlogd exits 0 on SIGTERM")
        browser.wait(lambda s: s.get("status") == "reconnecting", f"the page notices the {how}", timeout=10)
        checks.check(True, f"{label}: the EventSource notices the {how} (reconnecting)")
        time.sleep(1.0)  # the browser retries against a closed port
        server.restart(same_port=True)
        checks.equal(server.port, port, f"{label}: restarted on the same database and port after {how}")
        # Right after the restart, most likely before the browser is back (retry 500 ms) ...
        tail.append(log.add("orders/1", {"k": "b", "v": 3, "phase": f"restart {how}"}, key="b"))
        log.add("payments/1", {"phase": f"restart {how}"}, key="a")
        tail.append(log.add("orders/2", {"k": "a", "v": 3, "phase": f"restart {how}"}, key="a"))
        state = browser.wait(lambda s: s.get("opens", 0) > opens_before and s.get("status") == "open",
                             f"the EventSource reconnects after {how} + restart")
        # ... and after it is back.
        tail.append(log.add("orders/1", {"k": "a", "v": 5, "phase": f"back {how}"}, key="a"))
        tail.append(log.add("orders/4", {"phase": f"back {how}"}))
        state = browser.wait(has(tail), f"every event after {how} + restart")
        time.sleep(0.5)  # a duplicate would arrive now
        state = browser.state() or state
        after = [r for r in state["received"] if r["seq"] > caught_seq]
        checks.equal(view(after), view(tail),
                     f"{label}: after {how} + restart: every event after the snapshot exactly once, in order")
        ids = [r["id"] for r in state["received"]]
        checks.equal(ids, [e["id"] for e in expected_snapshot + tail],
                     f"{label}: after {how} + restart: everything received is the snapshot and the tail, no "
                     f"snapshot event again")
        opens = chromium.controls_of(state, "eventlog.open")
        checks.equal((opens[-1] or {}).get("from"), last_had,
                     f"{label}: after {how}: the reconnect resumed from the last id the browser had ({last_had}): "
                     f"Last-Event-ID wins over snapshot=latest")
        checks.equal(len(chromium.controls_of(state, "eventlog.caughtup")), len(opens),
                     f"{label}: after {how}: one eventlog.caughtup per connection")
    bad = [c for c in (browser.state() or {}).get("controls", [])
           if c["type"] in ("eventlog.gap", "eventlog.reset", "eventlog.error")]
    checks.equal(bad, [], f"{label}: no gap, reset or error along the way")
    browser.report_console()
    browser.close()
    server.close()


# --------------------------------------------------------------------------------------------
# 2) websockets: rewind, expectedLastId on publish


class WS:
    def __init__(self, server: Server, label: str) -> None:
        self.label = label
        self.conn = ws_connect(f"ws://{HOST}:{server.port}/v1/ws", open_timeout=10, close_timeout=3,
                               ping_interval=None, proxy=None, legacy=True, max_size=16 << 20)
        register_cleanup(self)

    def send(self, value: Any) -> None:
        self.conn.send(json.dumps(value))

    def next(self, timeout: float = 5.0) -> dict:
        return json.loads(self.conn.recv(timeout=timeout))

    def take(self, count: int, timeout: float = 10.0) -> list:
        deadline = time.monotonic() + timeout
        got = []
        try:
            for _ in range(count):
                got.append(self.next(max(0.01, deadline - time.monotonic())))
        except (TimeoutError, ConnectionClosed) as error:
            got.append({"ended": f"{type(error).__name__}: {error}"})
        return got

    def quiet_for(self, seconds: float) -> list:
        extra = []
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                extra.append(self.next(remaining))
            except TimeoutError:
                break
            except ConnectionClosed as error:
                extra.append({"closed": repr(error)})
                break
        return extra

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:  # noqa: BLE001
            pass
        unregister_cleanup(self)


def ws_view(messages: list) -> list:
    out = []
    for m in messages:
        if m.get("type") == "event":
            out.append(("event", m.get("id"), m.get("topic"), m.get("key"), m.get("data")))
        elif m.get("type") == "caughtup":
            out.append(("caughtup", m.get("head")))
        else:
            out.append({k: v for k, v in m.items() if k != "resume"})
    return out


def events_view(events: list) -> list:
    return [("event", e["id"], e["topic"], e.get("key"), e["data"]) for e in events]


def scenario_ws_rewind() -> None:
    label = "ws rewind"
    server = Server(BINARY, name="orderstate-ws").start()
    log = Log(server)
    for n in range(8):
        log.add(f"orders/{n % 3}", {"n": n}, key=f"k{n % 2}")
        if n % 3 == 1:
            log.add("payments/1", {"n": n})  # not matching, between matching ones
    matching = log.matching("orders/")
    health = server.health()

    ws = WS(server, label)
    ws.send({"op": "subscribe", "topics": ["orders/*"], "from": {"rewind": 3}})
    subscribed = ws.next()
    last3 = matching[-3:]
    checks.equal({k: subscribed.get(k) for k in ("type", "epoch", "earliest", "head", "from")},
                 {"type": "subscribed", "epoch": health["epoch"], "earliest": health["earliest"],
                  "head": health["head"], "from": last3[0]["id"] - 1},
                 f"{label}: rewind 3: subscribed, from = the id before the first of the last 3 matching events")
    got = ws.take(4)
    checks.equal(ws_view(got), events_view(last3) + [("caughtup", health["head"])],
                 f"{label}: rewind 3: exactly the last 3 orders/* events, in order, then caughtup")
    live = [log.add("orders/9", {"live": 1}), log.add("orders/0", {"live": 2}, key="k0")]
    log.add("payments/1", {"live": 3})
    live.append(log.add("orders/1", {"live": 4}))
    got = ws.take(len(live))
    checks.equal(ws_view(got), events_view(live), f"{label}: rewind 3: then the live events, in order")
    checks.equal(ws.quiet_for(0.5), [], f"{label}: rewind 3: nothing else")
    ws.close()

    matching = log.matching("orders/")
    head = server.health()["head"]
    ws = WS(server, f"{label} large")
    ws.send({"op": "subscribe", "topics": ["orders/*"], "from": {"rewind": 1000}})
    subscribed = ws.next()
    checks.equal((subscribed.get("type"), subscribed.get("from")), ("subscribed", 0),
                 f"{label}: rewind 1000 > {len(matching)} matching: subscribed from 0")
    got = ws.take(len(matching) + 1)
    checks.equal(ws_view(got), events_view(matching) + [("caughtup", head)],
                 f"{label}: rewind 1000: all {len(matching)} matching events, then caughtup")
    ws.close()

    # Two topics by exact name: the rewind counts only what they match.
    ws = WS(server, f"{label} exact")
    ws.send({"op": "subscribe", "topics": ["orders/1", "orders/2"], "from": {"rewind": 2}})
    two = [e for e in matching if e["topic"] in ("orders/1", "orders/2")][-2:]
    got = ws.take(4)
    checks.equal(ws_view(got[1:]), events_view(two) + [("caughtup", head)],
                 f"{label}: topics [orders/1, orders/2], rewind 2: the last 2 of those topics, then caughtup")
    checks.equal(got[0].get("from"), two[0]["id"] - 1, f"{label}: topics [orders/1, orders/2]: subscribed.from")
    ws.close()

    ws = WS(server, f"{label} bad")
    for bad in (0, -1, "x", 1.5, 1000001):
        ws.send({"op": "subscribe", "topics": ["orders/*"], "from": {"rewind": bad}})
        try:
            message = ws.next()
        except (TimeoutError, ConnectionClosed) as error:
            checks.fail(f"{label}: rewind {bad!r} -> error invalid_parameter", f"{type(error).__name__}: {error}")
            break
        checks.check(message.get("type") == "error" and message.get("code") == "invalid_parameter"
                     and isinstance(message.get("message"), str) and message["message"],
                     f"{label}: rewind {bad!r} -> error invalid_parameter", message)
    ws.send({"op": "subscribe", "topics": ["orders/*"], "from": {"rewind": 1}})
    got = ws.take(3)
    checks.equal([m.get("type") for m in got] + [got[1].get("id") if len(got) > 1 else None],
                 ["subscribed", "event", "caughtup", matching[-1]["id"]],
                 f"{label}: after the bad rewinds the connection works: rewind 1 gives the newest event")
    checks.equal(ws.quiet_for(0.3), [], f"{label}: no further message")
    ws.close()

    # expectedLastId on the WebSocket publish op.
    ws = WS(server, f"{label} publish")
    last = [e for e in log.events if e["topic"] == "orders/1"][-1]["id"]
    ws.send({"op": "publish", "ref": "p1", "topic": "orders/1", "data": {"cas": 1}, "expectedLastId": last - 1})
    message = ws.next()
    checks.check({k: message.get(k) for k in ("type", "ref", "code", "lastId")}
                 == {"type": "error", "ref": "p1", "code": "expected_last_id_mismatch", "lastId": last}
                 and isinstance(message.get("message"), str),
                 f"{label}: publish op with a wrong expectedLastId -> error expected_last_id_mismatch, lastId {last}",
                 message)
    ws.send({"op": "publish", "ref": "p2", "topic": "orders/1", "data": {"cas": 2}, "expectedLastId": last})
    message = ws.next()
    checks.check(message.get("type") == "ack" and message.get("ref") == "p2" and message.get("id") == head + 1,
                 f"{label}: publish op with the right expectedLastId -> ack with id {head + 1}", message)
    history = server.history("orders/1", after=head)
    checks.equal([(e["id"], e["data"]) for e in history["events"]], [(head + 1, {"cas": 2})],
                 f"{label}: only the conditional publish that matched was appended")
    ws.close()
    server.close()


# --------------------------------------------------------------------------------------------
# 3) curl: Expected-Last-Id


def curl(server: Server, method: str, path: str, headers: list, body: Optional[bytes] = None) -> tuple:
    """(status, {lower-case header: value}, body text) of one curl request."""
    command = ["curl", "-sS", "--noproxy", "*", "--max-time", "10", "-i", "-X", method]
    for header in headers:
        command += ["-H", header]
    if body is not None:
        command += ["--data-binary", "@-"]
    command.append(server.url(path))
    result = subprocess.run(command, input=body or b"", capture_output=True, timeout=20)
    if result.returncode != 0:
        raise RuntimeError(f"curl exited {result.returncode}: {result.stderr.decode(errors='replace')}")
    raw = result.stdout
    head, _, rest = raw.partition(b"\r\n\r\n")
    while head.startswith(b"HTTP/1.1 100"):
        head, _, rest = rest.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    found = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        found[name.strip().lower()] = value.strip()
    return status, found, rest.decode("utf-8", "replace")


def json_of(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def error_of(text: str) -> dict:
    body = json_of(text)
    return body.get("error", {}) if isinstance(body, dict) and isinstance(body.get("error"), dict) else {}


def topic_ids(server: Server, topic: str) -> list:
    return [e["id"] for e in server.history(topic)["events"]]


def scenario_curl_expected_last_id() -> None:
    label = "curl Expected-Last-Id"
    server = Server(BINARY, name="orderstate-curl").start()
    topic = "accounts/7"
    json_header = "Content-Type: application/json"
    server.publish("accounts/other", {"noise": 1})  # ids are log-wide: the topic's first id is not 1

    def post(data: Any, *extra: str) -> tuple:
        return curl(server, "POST", "/v1/events", [json_header, *extra],
                    json.dumps({"topic": topic, "data": data}).encode())

    first_body = {"op": "open"}
    status, headers, text = post(first_body, "Expected-Last-Id: 0", "Idempotency-Key: open-7")
    first = json_of(text) or {}
    checks.equal(status, 201, f"{label}: Expected-Last-Id: 0 on an empty topic -> 201")
    first_id = first.get("id")
    checks.equal(first_id, 2, f"{label}: the first event's id is 2 (after the other topic's 1)")

    status, headers, text = post({"op": "second"}, "Expected-Last-Id: 0")
    error = error_of(text)
    checks.equal(status, 409, f"{label}: Expected-Last-Id: 0 again -> 409")
    checks.check(headers.get("content-type", "").startswith("application/json")
                 and error.get("code") == "expected_last_id_mismatch" and error.get("lastId") == first_id
                 and isinstance(error.get("message"), str),
                 f"{label}: 409 body: code expected_last_id_mismatch, lastId {first_id}", text)

    server.publish("accounts/other", {"noise": 2})  # the log's head moves; the topic's newest does not
    status, headers, text = post({"op": "second"}, f"Expected-Last-Id: {first_id}")
    second_id = (json_of(text) or {}).get("id")
    checks.equal((status, second_id), (201, 4), f"{label}: Expected-Last-Id: {first_id} (the topic's newest) -> 201, id 4")

    status, headers, text = post(first_body, "Expected-Last-Id: 0", "Idempotency-Key: open-7")
    checks.equal((status, (json_of(text) or {}).get("id"), headers.get("idempotent-replayed")), (200, first_id, "true"),
                 f"{label}: the Idempotency-Key retry of the first request -> 200, its id {first_id}, "
                 f"Idempotent-Replayed: true, though the topic moved on")
    status, headers, text = post(first_body, "Expected-Last-Id: 12345", "Idempotency-Key: open-7")
    checks.equal((status, (json_of(text) or {}).get("id")), (200, first_id),
                 f"{label}: the retry with another Expected-Last-Id is still the replay (not part of the request hash)")

    for bad in ("abc", "-1", "1.0", ""):
        status, headers, text = post({"op": "bad"}, f"Expected-Last-Id: {bad}" if bad else "Expected-Last-Id;")
        error = error_of(text)
        checks.check(status == 400 and error.get("code") in ("invalid_parameter", "invalid_field")
                     and isinstance(error.get("message"), str),
                     f"{label}: Expected-Last-Id: {bad!r} -> 400 with a JSON error ({error.get('code')})",
                     (status, text))

    status, headers, text = curl(server, "POST", "/v1/events", [json_header, f"Expected-Last-Id: {second_id}"],
                                 json.dumps({"topic": topic, "data": {}, "expectedLastId": first_id}).encode())
    checks.equal(status, 400, f"{label}: header {second_id} and body expectedLastId {first_id} differ -> 400")
    status, headers, text = curl(server, "POST", "/v1/events", [json_header],
                                 json.dumps({"topic": topic, "data": {"op": "body"},
                                             "expectedLastId": first_id}).encode())
    checks.equal((status, error_of(text).get("code"), error_of(text).get("lastId")),
                 (409, "expected_last_id_mismatch", second_id),
                 f"{label}: body field expectedLastId {first_id} (stale) -> 409 with lastId {second_id}")
    checks.equal(topic_ids(server, topic), [first_id, second_id],
                 f"{label}: history of {topic}: only the two conditional appends that matched")

    # NDJSON.
    ndjson = "Content-Type: application/x-ndjson"
    other = "accounts/8"
    lines = [{"topic": topic, "data": {"batch": 1}, "expectedLastId": second_id},
             {"topic": other, "data": {"batch": 2}, "expectedLastId": 99},
             {"topic": other, "data": {"batch": 3}}]
    head = server.health()["head"]
    status, headers, text = curl(server, "POST", "/v1/events", [ndjson],
                                 "\n".join(json.dumps(line) for line in lines).encode())
    error = error_of(text)
    checks.equal((status, error.get("code"), error.get("index"), error.get("lastId")),
                 (409, "expected_last_id_mismatch", 1, 0),
                 f"{label}: NDJSON batch, line 2's expectedLastId 99 on an empty topic -> 409, index 1, lastId 0")
    checks.equal((topic_ids(server, topic), topic_ids(server, other), server.health()["head"]),
                 ([first_id, second_id], [], head),
                 f"{label}: the refused batch appended nothing (not even line 1, whose expectedLastId matched)")
    status, headers, text = curl(server, "POST", "/v1/events", [ndjson, f"Expected-Last-Id: {second_id}"],
                                 json.dumps({"topic": topic, "data": {}}).encode())
    checks.equal((status, error_of(text).get("code")), (400, "invalid_parameter"),
                 f"{label}: Expected-Last-Id on an NDJSON batch -> 400 invalid_parameter")
    lines[1]["expectedLastId"] = 0
    status, headers, text = curl(server, "POST", "/v1/events", [ndjson],
                                 "\n".join(json.dumps(line) for line in lines).encode())
    ids = (json_of(text) or {}).get("ids")
    checks.equal((status, ids), (201, [head + 1, head + 2, head + 3]),
                 f"{label}: the same batch with line 2's expectedLastId 0 -> 201, three ids")
    checks.equal((topic_ids(server, topic), topic_ids(server, other)),
                 ([first_id, second_id, head + 1], [head + 2, head + 3]), f"{label}: the batch is in history")
    server.close()


# --------------------------------------------------------------------------------------------
# 4) httpx: SSE since= and rewind=


def sse_read(server: Server, query: str, until: Any, publish_after_open: Any = None,
             timeout: float = 10.0) -> list:
    """Opens GET /v1/events?<query> with httpx and returns the frames (as (event, id, data)) until
    `until(frames)`; `publish_after_open()` runs once eventlog.caughtup has arrived."""
    frames: list = []
    parser = SSEParser()
    deadline = time.monotonic() + timeout
    published = False
    with httpx.Client(timeout=httpx.Timeout(timeout), trust_env=False) as client:
        with client.stream("GET", server.url("/v1/events?" + query), headers={"Accept": "text/event-stream"}) as response:
            if response.status_code != 200:
                raise RuntimeError(f"GET ?{query}: HTTP {response.status_code}: {response.read()[:300]!r}")
            for chunk in response.iter_raw():
                for frame in parser.feed(chunk):
                    data = frame.data
                    if data is None:  # a comment (heartbeat) or the `retry:` block: no event
                        continue
                    frames.append((frame.event or "message", frame.id, json_of(data)))
                if publish_after_open and not published and any(f[0] == "eventlog.caughtup" for f in frames):
                    published = True
                    publish_after_open()
                if until(frames):
                    return frames
                if time.monotonic() > deadline:
                    raise TimeoutError(f"?{query}: not done within {timeout}s; got {frames}")
    raise RuntimeError(f"?{query}: the stream ended; got {frames}")


def scenario_sse_since() -> None:
    label = "sse since"
    server = Server(BINARY, name="orderstate-since").start()
    log = Log(server)
    log.add("noise/1", {"n": 0})
    a1 = log.add("since/1", {"a": 1})
    time.sleep(0.05)
    a2 = log.add("since/2", {"a": 2})
    time.sleep(3.0)
    b1 = log.add("since/1", {"b": 1})
    log.add("noise/1", {"n": 1})
    b2 = log.add("since/2", {"b": 2}, key="x")
    t_a2, t_b1 = parse_time(a2["time"]), parse_time(b1["time"])
    checks.check(parse_time(a1["time"]) < t_a2 < t_b1, f"{label}: commit times a1 < a2 < b1",
                 (a1["time"], a2["time"], b1["time"]))

    def stream(query: str, start: Optional[dict], what: str) -> None:
        """Every since/* event from `start` on (the first event of any topic the start resolves to; None: nothing
        yet), then caughtup, then one live event published after caughtup. `eventlog.open`'s `from` is the
        resolved position: the id before `start` (the head for None)."""
        expected = [e for e in log.events if e["topic"].startswith("since/") and start and e["id"] >= start["id"]]
        holder: dict = {}

        def live() -> None:
            holder["live"] = log.add("since/3", {"live": query})

        def done(frames: list) -> bool:
            return "live" in holder and any(f[0] == "message" and f[1] == str(holder["live"]["id"]) for f in frames)

        frames = sse_read(server, f"topic=since/*&envelope=1&{query}", done, live)
        got = [f for f in frames if f[0] != "eventlog.open"]
        opens = [f[2] for f in frames if f[0] == "eventlog.open"]
        head = holder["live"]["id"] - 1
        want = [("message", str(e["id"]), (e["id"], e["topic"], e["data"])) for e in expected]
        want += [("eventlog.caughtup", None, head), ("message", str(holder["live"]["id"]),
                                                     (holder["live"]["id"], "since/3", {"live": query}))]
        seen = [(f[0], f[1], (f[2].get("id"), f[2].get("topic"), f[2].get("data")) if f[0] == "message"
                 else (f[2] or {}).get("head")) for f in got]
        checks.equal(seen, want, f"{label}: {what} ({query}): since/* ids {[e['id'] for e in expected]}, caughtup, "
                                 f"then live")
        want_from = start["id"] - 1 if start else head
        checks.equal([(o or {}).get("from") for o in opens], [want_from],
                     f"{label}: {what}: eventlog.open from {want_from}")

    # First, while b1 is still well inside the last 2 s.
    stream("since=2s", b1, "since=2s (a1, a2 and the first noise event are 3 s old)")
    stream(f"since={quote(b1['time'])}", b1, "since = b1's commit time (Z)")
    stream(f"since={quote(a2['time'])}", a2, "since = a2's commit time: the boundary is inclusive")
    stream(f"since={quote(rfc3339(t_a2 + datetime.timedelta(milliseconds=1)))}", b1, "since = a2's time + 1 ms")
    stream(f"since={quote(rfc3339(t_b1, 2))}", b1, "since = b1's time with a +02:00 offset")
    stream("since=1h", log.events[0], "since=1h: everything (from 0: the first noise event is after the start too)")
    future = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
    stream(f"since={quote(rfc3339(future))}", None, "since an hour from now: nothing, then live")
    stream("rewind=2", [e for e in log.events if e["topic"].startswith("since/")][-2],
           "SSE rewind=2: the last 2 matching events")

    for query, what in (("since=15m&rewind=2", "since and rewind"), ("snapshot=latest&lastEventId=3",
                                                                    "snapshot and lastEventId"),
                        ("since=yesterday", "since=yesterday"), ("rewind=0", "rewind=0"),
                        ("snapshot=newest", "snapshot=newest")):
        response = server.http.get(server.url(f"/v1/events?topic=since/*&{query}"),
                                   headers={"Accept": "text/event-stream"})
        checks.equal((response.status_code, error_of(response.text).get("code")), (400, "invalid_parameter"),
                     f"{label}: {what} -> 400 invalid_parameter")
    server.close()


# --------------------------------------------------------------------------------------------


def main(argv: list) -> int:
    global BINARY
    install_deadline(int(os.environ.get("CONFORMANCE_DEADLINE", "300")))
    started = time.monotonic()
    try:
        BINARY = eventlogd_path(argv[1] if len(argv) > 1 else None)
        chromium.BINARY = BINARY
        print(f"# eventlogd: {BINARY}", flush=True)
        if chromium.selenium is None:
            checks.fail("Selenium is importable", chromium.SELENIUM_ERROR)
        checks.run_scenario("3) curl: Expected-Last-Id, expectedLastId in NDJSON, idempotent retry",
                            scenario_curl_expected_last_id)
        checks.run_scenario("2) websockets: from {rewind: N}, bad rewinds, expectedLastId on publish",
                            scenario_ws_rewind)
        checks.run_scenario("4) httpx SSE: since= (time, offset, duration, future) and rewind=", scenario_sse_since)
        checks.run_scenario("1) Chromium EventSource: snapshot=latest, then restarts and Last-Event-ID",
                            scenario_browser_snapshot)
    except BaseException as error:  # noqa: BLE001 - deadline, missing binary, Ctrl-C: still summarize
        checks.fail(f"run aborted by {type(error).__name__}", str(error))
    finally:
        signal.alarm(0)
    print(f"# orderstate checks took {time.monotonic() - started:.1f} s", flush=True)
    return checks.summary()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
