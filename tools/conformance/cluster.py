#!/usr/bin/env python3
"""Several eventlogd nodes on one PostgreSQL database, with real, independent clients.

Each scenario gets its own fresh database (CREATE DATABASE with a random name) on one PostgreSQL
server: $EVENTLOG_TEST_POSTGRES (a superuser URL) and $EVENTLOG_TEST_PG_DIR (its tools/pg.sh
directory, for the restart) when set, as tools/test.sh exports them; otherwise a throwaway cluster
started here with tools/pg.sh in a temp directory and stopped at exit, whatever the outcome.

  1) 3 nodes; 50 httpx publishers (threads) spread over them, 40 events each on 4 topics, every
     acknowledged id recorded; an SSE (curl) and a WebSocket (`websockets`) subscriber on each node.
     One node is SIGKILLed mid-stream: its publishers retry on another node with the same
     Idempotency-Key, its subscribers reconnect to another node with their Last-Event-ID (SSE) or
     resume token (WS). Every acknowledged event is delivered exactly once, in id order, to every
     subscriber; the log holds exactly the acknowledged events; every node (the killed one restarted
     too) serves the same history.
  2) PostgreSQL restart mid-load (tools/pg.sh restart): publishers retry on 503 / connection errors
     with the same Idempotency-Key and count only acknowledged events; afterwards every node publishes
     again, every acknowledged id is in every node's history, and every subscriber (staying connected
     or reconnecting) gets every acknowledged event exactly once, in id order.
  3) Transactional publish with psycopg: concurrent transactions call eventlog.publish(...), some
     COMMIT and some ROLLBACK; events of rolled-back transactions never appear, those of committed ones
     all appear, each transaction's events together, in commit order (the outbox seq each commit held,
     and every pair of commits whose COMMIT calls did not overlap in time); the outbox empties; SSE
     subscribers on both nodes get them in id order.
  4) Shared idempotency and conditional append: a key retried on other nodes gives the same id
     (200, Idempotent-Replayed), a different body is 409 on any node; 21 concurrent conditional appends
     with the same Expected-Last-Id over 3 nodes: exactly one wins, the others get 409 with its id; a
     retry of the winner (same key) on another node is 200 with the same id.
  5) PostgreSQL down for seconds (tools/pg.sh stop-server): publishes on both nodes are 503
     storage_unavailable with a JSON body, /healthz 503, an open SSE stream stays open with keepalives and
     no event; after start-server the node publishes again by itself, the stream delivers that event next,
     and the log holds exactly the acknowledged events.

Usage: python3 tools/conformance/cluster.py [path/to/eventlogd]   (or set EVENTLOGD)
Prints `ok - ...` / `FAIL - ...` per check and ends with `N passed, M failed`; exits 1 on failure.
"""

from __future__ import annotations

import atexit
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from typing import Any, Callable, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import httpx  # noqa: E402
import psycopg  # noqa: E402
from psycopg.types.json import Jsonb  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402
from websockets.sync.client import connect as ws_connect  # noqa: E402

from lib import (  # noqa: E402
    HOST,
    REPO_ROOT,
    Checks,
    CurlStream,
    Server,
    StreamEnded,
    all_history,
    eventlogd_path,
    free_port,
    install_deadline,
    register_cleanup,
    unregister_cleanup,
)

checks = Checks()
BINARY: Optional[str] = None
PG_SH = str(REPO_ROOT / "tools" / "pg.sh")
NODE_ARGS = ["--keepalive", "1"]


def info(text: str) -> None:
    print(f"# {text}", flush=True)


def short(values: Any, limit: int = 20) -> str:
    values = list(values)
    if len(values) <= limit:
        return repr(values)
    return f"{values[:limit]!r}... ({len(values)} in all)"


def wait_until(condition: Callable[[], Any], timeout: float, interval: float = 0.1) -> Any:
    """Polls `condition` until it is truthy or `timeout` seconds pass; returns its last value."""
    deadline = time.monotonic() + timeout
    value = condition()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = condition()
    return value


# --------------------------------------------------------------------------------------------
# PostgreSQL: the server, and a fresh database per scenario.


class Postgres:
    """The PostgreSQL server the scenarios use: the one tools/test.sh started, or our own."""

    def __init__(self) -> None:
        self.url = os.environ.get("EVENTLOG_TEST_POSTGRES") or ""
        self.dir = os.environ.get("EVENTLOG_TEST_PG_DIR") or ""
        self.own = False
        self.databases: list = []
        if not self.url:
            self.dir = tempfile.mkdtemp(prefix="eventlog-cluster-pg-")
            port = free_port()
            self.own = True
            atexit.register(self.stop)
            result = run_pg_sh("start", self.dir, str(port), timeout=600)
            if result.returncode != 0:
                raise RuntimeError(f"tools/pg.sh start failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
            self.url = result.stdout.strip().splitlines()[-1]
        info(f"PostgreSQL: {self.url} ({'started here' if self.own else 'from $EVENTLOG_TEST_POSTGRES'}, "
             f"dir {self.dir or '(unknown: $EVENTLOG_TEST_PG_DIR unset)'})")

    def admin(self) -> psycopg.Connection:
        return psycopg.connect(self.url, autocommit=True, connect_timeout=10)

    def fresh_database(self) -> str:
        """CREATE DATABASE with a random name; returns its URL."""
        name = "eventlog_cluster_" + secrets.token_hex(5)
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.databases.append(name)
        parts = urllib.parse.urlsplit(self.url)
        return urllib.parse.urlunsplit(parts._replace(path="/" + name))

    def drop_databases(self) -> None:
        """Best effort (the nodes are gone by then): the shared server keeps no leftovers."""
        names, self.databases = self.databases, []
        try:
            with self.admin() as conn:
                for name in names:
                    try:
                        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                    except psycopg.Error:
                        pass
        except psycopg.Error:
            pass

    def restart(self) -> subprocess.CompletedProcess:
        if not self.dir:
            raise RuntimeError("EVENTLOG_TEST_POSTGRES is set but EVENTLOG_TEST_PG_DIR is not: cannot restart PostgreSQL")
        return run_pg_sh("restart", self.dir, timeout=120)

    def stop(self) -> None:
        if self.own and self.dir:
            directory, self.dir = self.dir, ""
            run_pg_sh("stop", directory, timeout=120)


def run_pg_sh(*args: str, timeout: float) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([PG_SH, *args], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired as error:
        return subprocess.CompletedProcess(error.cmd, 124, error.stdout or "", f"timed out after {timeout}s")


PG: Optional[Postgres] = None


def start_nodes(db_url: str, count: int, prefix: str = "node") -> list:
    nodes = []
    for index in range(count):
        nodes.append(Server(BINARY, db=db_url, name=f"{prefix}{index}", args=NODE_ARGS).start(timeout=60))
    info("nodes: " + ", ".join(f"{node.name}=:{node.port}" for node in nodes))
    return nodes


def error_code(response: httpx.Response) -> Optional[str]:
    try:
        body = response.json()
        return body["error"]["code"]
    except Exception:  # noqa: BLE001
        return None


# --------------------------------------------------------------------------------------------
# Subscribers that follow the cluster: reconnect to another live node with their position.


class Subscriber:
    """Reads `selector` from `home` in a thread; when the connection ends it reconnects to the next
    live node (at most `max_connects` connections) from its last position. Records every event id."""

    kind = "?"

    def __init__(self, label: str, nodes: list, home: int, selector: str, max_connects: int = 60) -> None:
        self.label = label
        self.nodes = nodes
        self.home = home
        self.selector = selector
        self.max_connects = max_connects
        self.ids: list = []
        self.connections: list = []  # node names, in order
        self.controls: list = []  # (node, name, data) of control messages
        self.problems: list = []  # anything unexpected
        self.epochs: set = set()
        self.starts: list = []  # SSE: (node, Last-Event-ID sent, eventlog.open's "from")
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=label, daemon=True)

    def start(self) -> "Subscriber":
        register_cleanup(self)  # stopped by cleanup_all when a scenario ends early
        self.thread.start()
        return self

    def close(self) -> None:
        self.finish(5.0)
        unregister_cleanup(self)

    def _pick(self, attempt: int) -> Optional[Server]:
        for offset in range(len(self.nodes)):
            node = self.nodes[(self.home + attempt + offset) % len(self.nodes)]
            if node.running:
                return node
        return None

    def _run(self) -> None:
        attempt = 0
        quick = 0
        while not self.stop.is_set() and len(self.connections) < self.max_connects:
            node = self._pick(attempt)
            if node is None:
                self.problems.append("no live node")
                time.sleep(0.2)
                attempt += 1
                continue
            self.connections.append(node.name)
            opened = time.monotonic()
            try:
                self.follow(node)
            except Exception as error:  # noqa: BLE001 - recorded, then reconnect
                self.problems.append(f"{node.name}: {type(error).__name__}: {error}"[:300])
            if self.stop.is_set():
                break
            # The connection ended: the same node when it is still alive (stream closed by an
            # outage), else the next. A pause, as a browser's retry would, longer after quick failures.
            if not node.running:
                attempt += 1
            quick = quick + 1 if time.monotonic() - opened < 1.0 else 0
            time.sleep(min(0.1 * (1 + quick), 1.0))

    def follow(self, node: Server) -> None:
        raise NotImplementedError

    def record(self, event_id: int) -> None:
        self.ids.append(event_id)

    @property
    def last_id(self) -> int:
        return self.ids[-1] if self.ids else 0

    def finish(self, timeout: float = 10.0) -> None:
        self.stop.set()
        self.thread.join(timeout)

    def has_all(self, wanted: set) -> bool:
        return wanted.issubset(self.ids)


class SSESubscriber(Subscriber):
    kind = "sse"

    def follow(self, node: Server) -> None:
        query = urllib.parse.urlencode({"topic": self.selector})
        sent = self.last_id
        stream = CurlStream(node.url(f"/v1/events?{query}"), headers=[f"Last-Event-ID: {self.last_id}"],
                            max_time=170)
        try:
            while not self.stop.is_set():
                try:
                    frame = stream.next_frame(0.5)
                except TimeoutError:
                    continue
                except StreamEnded:
                    return
                if frame.has_id:
                    try:
                        self.record(int(frame.id))
                    except ValueError:
                        self.problems.append(f"{node.name}: bad id {frame.id!r}")
                elif frame.event is not None or frame.data is not None:
                    name = frame.event
                    self.controls.append((node.name, name, frame.data))
                    if name == "eventlog.open":
                        try:
                            opened = json.loads(frame.data or "{}")
                            self.epochs.add(opened.get("epoch"))
                            self.starts.append((node.name, sent, opened.get("from")))
                        except ValueError:
                            self.problems.append(f"{node.name}: bad open data {frame.data!r}")
                    elif name not in ("eventlog.caughtup",):
                        self.problems.append(f"{node.name}: control event {name} {frame.data!r}")
        finally:
            stream.close()


class WSSubscriber(Subscriber):
    kind = "ws"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.token: Optional[str] = None

    def follow(self, node: Server) -> None:
        conn = ws_connect(f"ws://{HOST}:{node.port}/v1/ws", open_timeout=5, close_timeout=2, ping_interval=None,
                          proxy=None, legacy=True, max_size=16 << 20)
        try:
            request: dict = {"op": "subscribe", "topics": [self.selector]}
            if self.token is None:
                request["from"] = "earliest"
            else:
                request["resume"] = self.token
            conn.send(json.dumps(request))
            while not self.stop.is_set():
                try:
                    text = conn.recv(timeout=0.5)
                except TimeoutError:
                    continue
                except ConnectionClosed:
                    return
                message = json.loads(text)
                kind = message.get("type")
                if kind == "event":
                    self.record(int(message["id"]))
                elif kind == "subscribed":
                    self.epochs.add(message.get("epoch"))
                    self.controls.append((node.name, kind, None))
                elif kind == "caughtup":
                    self.controls.append((node.name, kind, None))
                else:
                    self.problems.append(f"{node.name}: {message!r}"[:300])
                    self.controls.append((node.name, kind, message))
                if isinstance(message.get("resume"), str):
                    self.token = message["resume"]
        finally:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - the node may be gone
                pass


def start_subscribers(nodes: list, selector: str, per_node: tuple = ("sse", "ws")) -> list:
    subscribers = []
    for index, node in enumerate(nodes):
        for number, kind in enumerate(per_node):
            cls = SSESubscriber if kind == "sse" else WSSubscriber
            subscribers.append(cls(f"{kind}{number}@{node.name}", nodes, index, selector).start())
    return subscribers


def wait_caught_up(subscribers: list, timeout: float = 15.0) -> bool:
    return bool(wait_until(lambda: all(any(c[1] in ("eventlog.caughtup", "caughtup") for c in s.controls)
                                       for s in subscribers), timeout))


def check_deliveries(subscribers: list, acked: set, log_ids: list, what: str, timeout: float = 30.0) -> None:
    """Every subscriber got exactly the acknowledged events (and the log's), once each, in id order."""
    wait_until(lambda: all(s.has_all(acked) and s.has_all(set(log_ids)) for s in subscribers), timeout, 0.2)
    time.sleep(0.5)  # anything extra (a duplicate, an unacknowledged event) would arrive now
    for subscriber in subscribers:
        subscriber.finish()
    for subscriber in subscribers:
        ids = list(subscriber.ids)
        label = f"{what}: {subscriber.label} (connections {subscriber.connections})"
        increasing = all(a < b for a, b in zip(ids, ids[1:]))
        bad = [(a, b) for a, b in zip(ids, ids[1:]) if a >= b]
        checks.check(increasing, f"{label}: ids strictly increasing (no duplicate)", f"out of order / repeated: {bad[:10]}")
        got = set(ids)
        checks.check(got == acked, f"{label}: received exactly the {len(acked)} acknowledged ids",
                     f"missing {short(sorted(acked - got))}, unacknowledged extra {short(sorted(got - acked))}, "
                     f"received {len(ids)}")
        odd = [c for c in subscriber.controls if c[1] not in ("eventlog.open", "eventlog.caughtup", "subscribed", "caughtup")]
        checks.check(not odd, f"{label}: no gap, reset or error message", short(odd, 5))
        if subscriber.problems:
            info(f"{subscriber.label}: {short(subscriber.problems, 5)}")


# --------------------------------------------------------------------------------------------
# Publishers that follow the cluster: retry on another live node with the same Idempotency-Key.


class Publishers:
    def __init__(self, nodes: list, count: int, per: int, topics: list, tag: str, *, pause: float = 0.005,
                 retry_for: float = 40.0) -> None:
        self.nodes = nodes
        self.count = count
        self.per = per
        self.topics = topics
        self.tag = tag
        self.pause = pause
        self.retry_for = retry_for
        self.lock = threading.Lock()
        self.acked: list = []  # (id, topic, data, idempotency key, status, node)
        self.outcomes: dict = {}  # "201", "200", "503 storage_unavailable", "ConnectError", ...
        self.unexpected: list = []
        self.given_up: list = []
        self.per_publisher: dict = {}
        self.threads = [threading.Thread(target=self._run, args=(index,), name=f"pub{index}", daemon=True)
                        for index in range(count)]

    def start(self) -> "Publishers":
        for thread in self.threads:
            thread.start()
        return self

    def join(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.01, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self.threads)

    def _note(self, outcome: str) -> None:
        with self.lock:
            self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    def _run(self, index: int) -> None:
        client = httpx.Client(timeout=httpx.Timeout(10.0), trust_env=False)
        mine: list = []
        try:
            for number in range(self.per):
                topic = self.topics[(index + number) % len(self.topics)]
                data = {"p": index, "n": number, "tag": self.tag}
                key = f"{self.tag}-{index}-{number}"
                body = json.dumps({"topic": topic, "type": "load", "data": data})
                deadline = time.monotonic() + self.retry_for
                attempt = 0
                done = False
                while not done and time.monotonic() < deadline and attempt < 400:
                    node = None
                    for offset in range(len(self.nodes)):
                        candidate = self.nodes[(index + attempt + offset) % len(self.nodes)]
                        if candidate.running:
                            node = candidate
                            break
                    attempt += 1
                    if node is None:
                        time.sleep(0.1)
                        continue
                    try:
                        response = client.post(node.url("/v1/events"), content=body,
                                               headers={"Content-Type": "application/json", "Idempotency-Key": key})
                    except httpx.HTTPError as error:
                        self._note(type(error).__name__)
                        time.sleep(0.05)
                        continue
                    status = response.status_code
                    if status in (200, 201):
                        self._note(str(status))
                        answer = response.json()
                        if status == 200 and response.headers.get("idempotent-replayed") != "true":
                            with self.lock:
                                self.unexpected.append(f"200 without Idempotent-Replayed: {response.text[:200]}")
                        with self.lock:
                            self.acked.append((int(answer["id"]), topic, data, key, status, node.name))
                        mine.append(int(answer["id"]))
                        done = True
                    elif status == 503:
                        self._note(f"503 {error_code(response)}")
                        if error_code(response) != "storage_unavailable":
                            with self.lock:
                                self.unexpected.append(f"{node.name}: 503 {response.text[:200]}")
                        time.sleep(0.1)
                    else:
                        self._note(f"{status} {error_code(response)}")
                        with self.lock:
                            self.unexpected.append(f"{node.name}: {key}: HTTP {status} {response.text[:200]}")
                        time.sleep(0.1)
                if not done:
                    with self.lock:
                        self.given_up.append(key)
                if self.pause:
                    time.sleep(random.uniform(0, 2 * self.pause))
        except Exception as error:  # noqa: BLE001
            with self.lock:
                self.unexpected.append(f"pub{index} crashed: {type(error).__name__}: {error}")
        finally:
            client.close()
            with self.lock:
                self.per_publisher[index] = mine

    def acked_count(self) -> int:
        with self.lock:
            return len(self.acked)


def check_publishers(pubs: Publishers, what: str) -> set:
    expected = pubs.count * pubs.per
    checks.check(not pubs.given_up, f"{what}: every publish was acknowledged in the end ({expected})",
                 f"gave up on {len(pubs.given_up)}: {short(pubs.given_up, 10)}")
    checks.check(not pubs.unexpected, f"{what}: publishers saw only 2xx, 503 storage_unavailable or connection errors",
                 short(pubs.unexpected, 10))
    ids = [entry[0] for entry in pubs.acked]
    keys = {}
    for entry in pubs.acked:
        keys.setdefault(entry[3], set()).add(entry[0])
    checks.check(len(set(ids)) == len(ids), f"{what}: acknowledged ids are unique ({len(ids)})",
                 f"duplicates: {short(sorted({i for i in ids if ids.count(i) > 1}))}")
    not_monotonic = {index: mine for index, mine in pubs.per_publisher.items()
                     if any(a >= b for a, b in zip(mine, mine[1:]))}
    checks.check(not not_monotonic, f"{what}: each publisher's acknowledged ids increase (commit order across nodes)",
                 short(not_monotonic.items(), 3))
    info(f"{what}: outcomes {dict(sorted(pubs.outcomes.items()))}")
    return set(ids)


def fetch_history(node: Server, selector: str, attempts: int = 1) -> tuple:
    """all_history, tried up to `attempts` times (0.3 s apart): (events or None, [failures])."""
    failures: list = []
    for _ in range(attempts):
        try:
            return all_history(node, selector)[0], failures
        except Exception as error:  # noqa: BLE001 - recorded
            failures.append(str(error)[:300])
            time.sleep(0.3)
    return None, failures


def check_log(nodes: list, pubs: Publishers, selector: str, what: str, attempts: int = 1) -> list:
    """History from every running node: identical, and exactly the acknowledged events. Returns the ids."""
    histories = {}
    for node in nodes:
        if node.running:
            events, failures = fetch_history(node, selector, attempts)
            if events is None:
                checks.fail(f"{what}: {node.name} answers GET history", failures[-3:])
                continue
            if failures:
                info(f"{what}: {node.name}'s history needed {len(failures) + 1} attempts: {failures[:3]}")
            histories[node.name] = events
    names = sorted(histories)
    reference = histories[names[0]]
    for name in names[1:]:
        same = histories[name] == reference
        detail = None
        if not same:
            diff = [(a, b) for a, b in zip(reference, histories[name]) if a != b][:3]
            detail = f"{names[0]} has {len(reference)} events, {name} {len(histories[name])}; first differences {diff}"
        checks.check(same, f"{what}: {name}'s history is identical to {names[0]}'s ({len(reference)} events)", detail)
    log_ids = [event["id"] for event in reference]
    by_id = {event["id"]: event for event in reference}
    acked = {entry[0]: entry for entry in pubs.acked}
    missing = sorted(set(acked) - set(by_id))
    checks.check(not missing, f"{what}: every acknowledged id is in the history ({len(acked)})",
                 f"missing {short(missing)}")
    extra = sorted(set(by_id) - set(acked))
    checks.check(not extra, f"{what}: the history holds nothing unacknowledged",
                 f"extra {short([(i, by_id[i]['topic'], by_id[i].get('data')) for i in extra], 10)}")
    wrong = []
    for event_id, entry in acked.items():
        event = by_id.get(event_id)
        if event is None:
            continue
        data = decoded_data(event)
        if event.get("topic") != entry[1] or data != entry[2]:
            wrong.append((event_id, entry[1], entry[2], event.get("topic"), event.get("data")))
    checks.check(not wrong, f"{what}: each acknowledged id names the event published (topic, data)", short(wrong, 5))
    datas = [json.dumps(event.get("data"), sort_keys=True) for event in reference]
    checks.check(len(set(datas)) == len(datas), f"{what}: no event is stored twice",
                 f"{len(datas) - len(set(datas))} repeated data")
    return log_ids


# --------------------------------------------------------------------------------------------
# 1) three nodes, load, SIGKILL of one node


def scenario_kill() -> None:
    assert PG is not None
    nodes = start_nodes(PG.fresh_database(), 3)
    selector = "cl/*"
    topics = [f"cl/t{i}" for i in range(4)]
    subscribers = start_subscribers(nodes, selector, ("sse", "ws", "sse", "ws"))
    checks.check(wait_caught_up(subscribers), "1: every subscriber (SSE and WS, 4 per node) is caught up before the load",
                 [(s.label, s.controls, s.problems) for s in subscribers if not s.controls][:4])
    pubs = Publishers(nodes, 50, 40, topics, "kill", pause=0.01).start()
    total = pubs.count * pubs.per
    victim = nodes[1]
    reached = wait_until(lambda: pubs.acked_count() >= total // 4, 30.0, 0.02)
    at = pubs.acked_count()
    victim.kill()
    info(f"1: SIGKILLed {victim.name} after {at} of {total} acknowledged publishes (reached a quarter: {bool(reached)})")
    checks.check(at < total, f"1: {victim.name} was killed mid-load ({at} of {total} acknowledged)")
    finished = pubs.join(90.0)
    checks.check(finished, "1: the publishers finished within 90 s")
    acked = check_publishers(pubs, "1")
    log_ids = check_log(nodes, pubs, selector, "1 (live nodes)")
    check_deliveries(subscribers, acked, log_ids, "1")
    resumed = [(s.label, start) for s in subscribers for start in s.starts[1:]]
    checks.check(resumed and all(start[1] == start[2] and start[1] > 0 for _label, start in resumed),
                 "1: every SSE reconnect opened at its Last-Event-ID (eventlog.open's from)", resumed)
    moved = [s for s in subscribers if s.home == 1]
    checks.check(all(len(s.connections) >= 2 and victim.name not in s.connections[1:] for s in moved),
                 f"1: the killed node's subscribers reconnected to another node",
                 [(s.label, s.connections) for s in moved])
    epochs = set().union(*(s.epochs for s in subscribers))
    checks.check(len(epochs) == 1 and None not in epochs, "1: every node reports the same epoch", epochs)
    # The killed node comes back on the same database and serves the same log.
    victim.restart(same_port=False, timeout=60)
    check_log(nodes, pubs, selector, f"1 ({victim.name} restarted)")
    for node in nodes:
        node.close()
    PG.drop_databases()


# --------------------------------------------------------------------------------------------
# 2) PostgreSQL restart mid-load


def scenario_pg_restart() -> None:
    assert PG is not None
    nodes = start_nodes(PG.fresh_database(), 3)
    selector = "pg/*"
    topics = [f"pg/t{i}" for i in range(4)]
    subscribers = start_subscribers(nodes, selector, ("sse", "ws"))
    checks.check(wait_caught_up(subscribers), "2: every subscriber (SSE and WS on each node) is caught up before the load")
    pubs = Publishers(nodes, 30, 40, topics, "pgr", pause=0.02, retry_for=60.0).start()
    total = pubs.count * pubs.per
    wait_until(lambda: pubs.acked_count() >= total // 4, 30.0, 0.02)
    at = pubs.acked_count()
    started = time.monotonic()
    result = PG.restart()
    took = time.monotonic() - started
    info(f"2: tools/pg.sh restart after {at} of {total} acknowledged publishes took {took:.1f} s "
         f"(exit {result.returncode}) {result.stderr.strip()[-300:]}")
    checks.check(result.returncode == 0, "2: tools/pg.sh restart succeeded", result.stderr.strip()[-500:])
    checks.check(at < total, f"2: PostgreSQL restarted mid-load ({at} of {total} acknowledged)")
    finished = pubs.join(90.0)
    checks.check(finished, "2: the publishers finished within 90 s")
    checks.check(all(node.running for node in nodes), "2: every node is still running after the PostgreSQL restart",
                 [(node.name, node.log_tail(10)) for node in nodes if not node.running])
    # Every node publishes again (it reconnected by itself).
    for node in nodes:
        answers: list = []

        def publish_ok(node: Server = node, answers: list = answers) -> bool:
            try:
                response = node.http.post(node.url("/v1/events"), content=json.dumps(
                    {"topic": "pg/after", "data": {"node": node.name}}),
                    headers={"Content-Type": "application/json", "Idempotency-Key": f"after-{node.name}"})
            except httpx.HTTPError as error:
                answers.append(repr(error))
                return False
            answers.append(response.status_code)
            if response.status_code in (200, 201):
                with pubs.lock:
                    if not any(entry[3] == f"after-{node.name}" for entry in pubs.acked):
                        pubs.acked.append((int(response.json()["id"]), "pg/after", {"node": node.name},
                                           f"after-{node.name}", response.status_code, node.name))
                return True
            return False

        checks.check(wait_until(publish_ok, 30.0, 0.2), f"2: {node.name} publishes again after the restart",
                     f"answers {answers[-5:]}")
    # Once a node publishes again, PostgreSQL is back: its reads must work too, at the first try: a
    # GET history on node0, new subscribers (replaying from the database) on node1 and node2.
    late = []
    for index in (1, 2):
        late.append(SSESubscriber(f"new-sse@{nodes[index].name}", nodes, index, selector).start())
        late.append(WSSubscriber(f"new-ws@{nodes[index].name}", nodes, index, selector).start())
    events, failures = fetch_history(nodes[0], selector, 1)
    checks.check(events is not None, f"2: {nodes[0].name} answers GET history at the first try once it publishes again",
                 failures)
    wait_caught_up(late, 15.0)
    for subscriber in late:
        checks.check(len(subscriber.connections) == 1 and not subscriber.problems,
                     f"2: {subscriber.label}, subscribing from earliest after the restart, replays on its first connection",
                     f"connections {subscriber.connections}, problems {subscriber.problems[:3]}, controls "
                     f"{subscriber.controls[:3]}")
    subscribers += late
    acked = check_publishers(pubs, "2")
    acked = {entry[0] for entry in pubs.acked}
    log_ids = check_log(nodes, pubs, selector, "2", attempts=10)
    check_deliveries(subscribers, acked, log_ids, "2")
    stayed = [(s.label, s.connections) for s in subscribers if s not in late and len(s.connections) != 1]
    checks.check(not stayed, "2: the streams open before the restart stayed open through it (one connection each)",
                 stayed)
    for node in nodes:
        lines = [line for line in node.read_log().splitlines() if "error" in line.lower() or "warn" in line.lower()]
        info(f"2: {node.name} log: {len(lines)} warning/error lines; last: {short(lines[-3:], 3)}"[:1200])
        node.close()
    PG.drop_databases()


# --------------------------------------------------------------------------------------------
# 3) transactional publish (eventlog.publish in the application's transaction)


def decoded_data(event: dict) -> Any:
    """An event's data, with a JSON text decoded (eventlog.publish's text data may hold JSON)."""
    data = event.get("data")
    if isinstance(data, str):
        try:
            return json.loads(data)
        except ValueError:
            pass
    return data


def scenario_transactions() -> None:
    assert PG is not None
    db_url = PG.fresh_database()
    nodes = start_nodes(db_url, 2)
    selector = "tx/*"
    subscribers = start_subscribers(nodes, selector, ("sse", "ws"))
    checks.check(wait_caught_up(subscribers), "3: subscribers caught up before the transactions")
    workers = 8
    per_worker = 15
    lock = threading.Lock()
    committed: list = []  # (tx, [seq...], commit start, commit end, [data...])
    rolled_back: list = []
    errors: list = []

    def worker(index: int) -> None:
        rng = random.Random(index)
        try:
            with psycopg.connect(db_url, connect_timeout=10, options="-c statement_timeout=20000") as conn:
                for number in range(per_worker):
                    tx = f"w{index}-{number}"
                    commit = rng.random() < 0.55
                    datas = []
                    seqs = []
                    for event in range(rng.randint(1, 3)):
                        data = {"tx": tx, "i": event, "commit": commit}
                        row = conn.execute("SELECT eventlog.publish(%s, %s, %s, %s)",
                                           (f"tx/w{index}", "txn", None, Jsonb(data))).fetchone()
                        seqs.append(int(row[0]))
                        datas.append(data)
                        time.sleep(rng.uniform(0, 0.004))
                    if commit:
                        before = time.monotonic()
                        conn.commit()
                        after = time.monotonic()
                        with lock:
                            committed.append((tx, seqs, before, after, datas))
                    else:
                        conn.rollback()
                        with lock:
                            rolled_back.append((tx, seqs, datas))
                    time.sleep(rng.uniform(0, 0.005))
        except Exception as error:  # noqa: BLE001
            with lock:
                errors.append(f"worker {index}: {type(error).__name__}: {error}")

    threads = [threading.Thread(target=worker, args=(index,), daemon=True) for index in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    checks.check(not any(thread.is_alive() for thread in threads) and not errors,
                 f"3: {workers} concurrent psycopg workers ran {workers * per_worker} transactions",
                 errors[:5] or "still running after 60 s")
    committed_events = sum(len(entry[4]) for entry in committed)
    info(f"3: {len(committed)} committed transactions ({committed_events} events), {len(rolled_back)} rolled back")
    checks.check(committed and rolled_back, "3: some transactions committed and some rolled back",
                 (len(committed), len(rolled_back)))

    def outbox_rows() -> int:
        with psycopg.connect(db_url, autocommit=True, connect_timeout=10) as conn:
            return int(conn.execute("SELECT count(*) FROM eventlog.outbox").fetchone()[0])

    events: list = []

    def moved() -> bool:
        nonlocal events
        events = all_history(nodes[0], selector)[0]
        return len(events) >= committed_events

    wait_until(moved, 20.0, 0.2)
    empty = wait_until(lambda: outbox_rows() == 0, 10.0, 0.2)
    checks.check(empty, "3: eventlogd emptied the outbox", f"{outbox_rows()} rows left")
    datas = [decoded_data(event) for event in events]
    got_rolled = [d for d in datas if isinstance(d, dict) and d.get("commit") is False]
    checks.check(not got_rolled, "3: no event of a rolled-back transaction is in the log",
                 f"{len(got_rolled)}: {short(got_rolled, 5)}")
    want = sorted(((d["tx"], d["i"]) for entry in committed for d in entry[4]))
    have = [(d.get("tx"), d.get("i")) for d in datas if isinstance(d, dict)]
    checks.check(sorted(have) == want, f"3: every event of every committed transaction is in the log once ({len(want)})",
                 f"missing {short(sorted(set(want) - set(have)))}, extra {short(sorted(set(have) - set(want)))}, "
                 f"{len(have)} in the log")
    seq_of = {(d["tx"], d["i"]): seq for entry in committed for d, seq in zip(entry[4], entry[1])}
    seqs = [seq_of.get(pair) for pair in have]
    bad = [(a, b) for a, b in zip(seqs, seqs[1:]) if a is None or b is None or a >= b]
    checks.check(not bad, "3: the log's order is the outbox seq order (commit order under the outbox lock)",
                 f"out of order pairs {bad[:10]}")
    position = {pair: index for index, pair in enumerate(have)}
    runs_ok = []
    for tx, tx_seqs, _before, _after, tx_datas in committed:
        places = [position.get((d["tx"], d["i"])) for d in tx_datas]
        if None in places or places != list(range(places[0], places[0] + len(places))):
            runs_ok.append((tx, places))
    checks.check(not runs_ok, "3: each committed transaction's events are adjacent and in publish order",
                 short(runs_ok, 5))
    # Commit order as observed by the clients: when one COMMIT returned before another began, its
    # events come first in the log.
    ordered = sorted(committed, key=lambda entry: entry[2])
    pairs = 0
    wrong = []
    for a_index, a in enumerate(ordered):
        for b in ordered[a_index + 1:]:
            if a[3] < b[2]:
                pairs += 1
                first_a = position.get((a[0], 0), -1)
                first_b = position.get((b[0], 0), -1)
                if not first_a < first_b:
                    wrong.append((a[0], b[0]))
    checks.check(pairs > 0 and not wrong,
                 f"3: for {pairs} pairs of commits that did not overlap in time, the earlier commit's events come first",
                 short(wrong, 10))
    second = all_history(nodes[1], selector)[0]
    checks.check(second == events, f"3: {nodes[1].name}'s history is identical to {nodes[0].name}'s",
                 f"{len(second)} vs {len(events)} events")
    log_ids = [event["id"] for event in events]
    check_deliveries(subscribers, set(log_ids), log_ids, "3")
    for node in nodes:
        node.close()
    PG.drop_databases()


# --------------------------------------------------------------------------------------------
# 4) idempotency and conditional append shared by the nodes


def post(node: Server, body: dict, headers: Optional[dict] = None) -> httpx.Response:
    return node.http.post(node.url("/v1/events"), content=json.dumps(body),
                          headers={"Content-Type": "application/json", **(headers or {})})


def scenario_idempotency() -> None:
    assert PG is not None
    nodes = start_nodes(PG.fresh_database(), 3)
    a, b, c = nodes
    body = {"topic": "idem/1", "type": "created", "data": {"order": 1}}
    first = post(a, body, {"Idempotency-Key": "k-1"})
    checks.equal(first.status_code, 201, f"4: publish with Idempotency-Key on {a.name} is 201")
    first_id = first.json().get("id")
    for node in (b, c, a):
        again = post(node, body, {"Idempotency-Key": "k-1"})
        checks.check(again.status_code == 200 and again.json().get("id") == first_id
                     and again.headers.get("idempotent-replayed") == "true",
                     f"4: the same key retried on {node.name} is 200, Idempotent-Replayed, id {first_id}",
                     f"{again.status_code} {again.headers.get('idempotent-replayed')} {again.text[:200]}")
    conflict = post(c, {**body, "data": {"order": 2}}, {"Idempotency-Key": "k-1"})
    checks.check(conflict.status_code == 409 and error_code(conflict) == "idempotency_conflict",
                 f"4: the same key with another body on {c.name} is 409 idempotency_conflict",
                 f"{conflict.status_code} {conflict.text[:200]}")
    events = all_history(b, "idem/*")[0]
    checks.equal([event["id"] for event in events], [first_id], "4: the log holds the event once")

    # Conditional append: 21 writers over 3 nodes expect the same last id.
    topic = "cond/1"
    base = post(a, {"topic": topic, "data": "base"})
    base_id = base.json()["id"]
    results: list = [None] * 21
    barrier = threading.Barrier(21, timeout=10)

    def writer(index: int) -> None:
        node = nodes[index % 3]
        client = httpx.Client(timeout=10.0, trust_env=False)
        try:
            barrier.wait()
            response = client.post(node.url("/v1/events"), content=json.dumps({"topic": topic, "data": {"w": index}}),
                                   headers={"Content-Type": "application/json", "Expected-Last-Id": str(base_id),
                                            "Idempotency-Key": f"cond-{index}"})
            results[index] = (node.name, response.status_code, response.json())
        except Exception as error:  # noqa: BLE001
            results[index] = (node.name, None, repr(error))
        finally:
            client.close()

    threads = [threading.Thread(target=writer, args=(index,), daemon=True) for index in range(21)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    winners = [(index, r) for index, r in enumerate(results) if r and r[1] == 201]
    checks.check(len(winners) == 1, "4: of 21 conditional appends with the same Expected-Last-Id on 3 nodes, one wins",
                 short(results, 21))
    if len(winners) == 1:
        win_index, (win_node, _status, win_answer) = winners[0]
        win_id = win_answer["id"]
        losers = [r for index, r in enumerate(results) if index != win_index]
        checks.check(all(r and r[1] == 409 and r[2].get("error", {}).get("code") == "expected_last_id_mismatch"
                          and r[2].get("error", {}).get("lastId", r[2].get("lastId")) == win_id for r in losers),
                     f"4: the other 20 get 409 expected_last_id_mismatch with lastId {win_id}",
                     short([r for r in losers if not (r and r[1] == 409)], 5) + " / " + short(losers[:2], 2))
        other = next(node for node in nodes if node.name != win_node)
        retry = post(other, {"topic": topic, "data": {"w": win_index}},
                     {"Expected-Last-Id": str(base_id), "Idempotency-Key": f"cond-{win_index}"})
        checks.check(retry.status_code == 200 and retry.json().get("id") == win_id,
                     f"4: the winner's conditional append retried on {other.name} (topic moved on) is 200 with id {win_id}",
                     f"{retry.status_code} {retry.text[:200]}")
        history = [event["id"] for event in all_history(c, topic)[0]]
        checks.equal(history, [base_id, win_id], "4: the conditional topic holds the base and the one winner")
    for node in nodes:
        node.close()
    PG.drop_databases()


def scenario_outage() -> None:
    """PostgreSQL down for a few seconds: publishes answer 503 storage_unavailable, /healthz 503, a stream stays
    open with its keepalives; when PostgreSQL is back the nodes carry on by themselves."""
    assert PG is not None
    if not PG.dir:
        checks.fail("5: not run", "no PostgreSQL directory to stop ($EVENTLOG_TEST_PG_DIR unset)")
        return
    nodes = start_nodes(PG.fresh_database(), 2, prefix="outage")
    a, b = nodes
    first = post(a, {"topic": "out/1", "data": "before"})
    checks.equal(first.status_code, 201, "5: a publish before the outage is 201")
    first_id = first.json()["id"]
    stream = CurlStream(b.url("/v1/events?topic=out/*"), headers=[f"Last-Event-ID: {first_id}"], max_time=60)
    stream.quiet_for(1.0)  # what the server sends when the stream opens
    stopped = run_pg_sh("stop-server", PG.dir, timeout=120)
    checks.check(stopped.returncode == 0, "5: tools/pg.sh stop-server succeeded", stopped.stderr.strip()[-500:])
    try:
        for node in nodes:
            answer = post(node, {"topic": "out/1", "data": "during"}, {"Idempotency-Key": f"during-{node.name}"})
            checks.check(answer.status_code == 503 and error_code(answer) == "storage_unavailable",
                         f"5: a publish on {node.name} during the outage is 503 storage_unavailable (JSON body)",
                         f"{answer.status_code} {answer.text[:300]}")
        health = b.http.get(b.url("/healthz"))
        checks.equal(health.status_code, 503, "5: /healthz answers 503 during the outage")
        comments, events, ended = 0, [], False
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline:
            try:
                frame = stream.next_frame(timeout=max(0.05, deadline - time.monotonic()), skip_comments=False)
            except TimeoutError:
                break
            except StreamEnded:
                ended = True
                break
            if frame.is_comment_only:
                comments += 1
            elif frame.has_id:
                events.append(frame.id)
        checks.check(not ended and comments >= 2 and not events,
                     "5: the stream stays open through 4 s of outage, with keepalives (--keepalive 1) and no event",
                     f"ended={ended} keepalives={comments} events={events}")
        checks.check(all(node.running for node in nodes), "5: both nodes keep running during the outage")
    finally:
        started = run_pg_sh("start-server", PG.dir, timeout=120)
    checks.check(started.returncode == 0, "5: tools/pg.sh start-server succeeded", started.stderr.strip()[-500:])

    def publish_after() -> Optional[httpx.Response]:
        answer = post(a, {"topic": "out/1", "data": "after"}, {"Idempotency-Key": "after-1"})
        return answer if answer.status_code in (200, 201) else None

    after = wait_until(publish_after, 30.0, 0.2)
    checks.check(after is not None, f"5: {a.name} publishes again by itself once PostgreSQL is back")
    if after is not None:
        after_id = after.json()["id"]
        delivered = None
        try:
            for _ in range(20):
                frame = stream.next_frame(timeout=10)
                if frame.has_id:
                    delivered = frame.id
                    break
        except (TimeoutError, StreamEnded) as error:
            delivered = repr(error)
        checks.equal(delivered, str(after_id),
                     f"5: the stream open through the outage delivers the next event on {b.name}")
        events, failures = fetch_history(b, "out/*", attempts=10)
        checks.check([event["id"] for event in events or []] == [first_id, after_id],
                     "5: the log holds exactly the two acknowledged events (nothing from the 503s)",
                     f"{[event['id'] for event in events or []]} != {[first_id, after_id]}; {failures}")
        health = b.http.get(b.url("/healthz"))
        checks.equal(health.status_code, 200, "5: /healthz answers 200 again")
    stream.close()
    for node in nodes:
        node.close()
    PG.drop_databases()


# --------------------------------------------------------------------------------------------


def main(argv: list) -> int:
    global BINARY, PG
    limit = int(os.environ.get("CONFORMANCE_DEADLINE", "300"))
    install_deadline(limit)
    started = time.monotonic()
    try:
        BINARY = eventlogd_path(argv[1] if len(argv) > 1 else None)
        info(f"eventlogd: {BINARY}")
        PG = Postgres()
        for name, body in (
            ("1) 3 nodes, 50 publishers, SSE + WS subscribers, one node SIGKILLed", scenario_kill),
            ("2) PostgreSQL restart mid-load", scenario_pg_restart),
            ("3) transactional publish: eventlog.publish, COMMIT and ROLLBACK", scenario_transactions),
            ("4) idempotency and conditional append across nodes", scenario_idempotency),
            ("5) PostgreSQL down for seconds: 503, keepalives, carrying on", scenario_outage),
        ):
            if time.monotonic() - started >= limit:  # the deadline fired inside an earlier scenario
                checks.fail(f"{name}: not run", f"the script deadline of {limit}s has passed")
                continue
            checks.run_scenario(name, body)
    except BaseException as error:  # noqa: BLE001 - deadline, missing binary, Ctrl-C: still summarize
        checks.fail(f"run aborted by {type(error).__name__}", str(error)[:2000])
    finally:
        signal.alarm(0)
        if PG is not None:
            try:
                PG.drop_databases()
            finally:
                PG.stop()
    info(f"cluster.py ran for {time.monotonic() - started:.1f} s")
    return checks.summary()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
