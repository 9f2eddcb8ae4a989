#!/usr/bin/env python3
"""Crash durability against a real eventlogd process (`--durability full`).

  1) SIGKILL under load, repeated: 50 concurrent httpx publishers (threads, one client each)
     publish single events with unique data and record every 2xx (id, topic, data). At a random
     moment 0.3-1.5 s after the load starts the server gets SIGKILL; it is restarted on the same
     database. Then:
       - `eventlog-maint verify` passes on the crashed file (before the restart) and again after;
       - every acknowledged event is in the log (HTTP history) with the same id, topic and data;
       - ids are unique and strictly increasing, each publisher's acknowledged ids increase, the
         log holds nothing that was never sent, and no data is stored twice;
       - the head after the restart covers every acknowledged id, and a new publish gets an id
         above everything before the crash.
     At least 10 rounds, bounded in time.
  2) Disk full (`--max-db-pages 300`): 4 KB events until 503 storage_unavailable (bounded), also
     over WebSocket; the log stays valid (verify), every acknowledged event is present and the
     refused ones are absent; concurrent publishers into a full store get 201 or 503 and nothing
     half-written; `eventlog-maint retain --max-events 10` beside the running server frees space
     and publishes succeed again (201) without a restart; SIGKILL + restart on the full log keeps
     every acknowledged event.

Usage: python3 tools/conformance/crash.py [path/to/eventlogd]   (or set EVENTLOGD; eventlog-maint
from $EVENTLOG_MAINT or next to eventlogd)
Prints `ok - ...` / `FAIL - ...` per check and ends with `N passed, M failed`; exits 1 on failure.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import httpx  # noqa: E402

from lib import (  # noqa: E402
    Checks,
    RawWebSocket,
    Server,
    WSClosed,
    all_history,
    eventlog_maint_path,
    eventlogd_path,
    install_deadline,
    run_maint,
)

PUBLISHERS = 50
MIN_ROUNDS = 10
MAX_ROUNDS = 12
ROUNDS_BUDGET = 110.0  # seconds: no new round starts after this (the first MIN_ROUNDS always run)
MAX_PER_PUBLISHER = 5000  # publishes per publisher per round (the kill comes long before)
LOAD_LIMIT = 8.0  # seconds: a publisher stops by itself after this, kill or not

checks = Checks()
BINARY: Optional[str] = None
MAINT: Optional[str] = None


def verify(db: str, what: str) -> bool:
    """`eventlog-maint verify --db DB` exits 0."""
    result = run_maint(MAINT, "verify", "--db", db, "--quiet", timeout=60)
    report = (result.stdout + result.stderr).strip().replace("\n", " | ")
    return checks.check(result.returncode == 0, f"{what}: eventlog-maint verify passes",
                        f"exit {result.returncode}: {report[:1500]}")


def post_event(client: httpx.Client, server: Server, topic: str, data: Any) -> httpx.Response:
    return client.post(server.url("/v1/events"), content=json.dumps({"topic": topic, "data": data}),
                       headers={"Content-Type": "application/json"})


# --------------------------------------------------------------------------------------------
# 1) SIGKILL under load


class Publisher(threading.Thread):
    """Publishes single events with unique data until `stop` is set (or a bound is reached)."""

    def __init__(self, index: int, round_no: int, base_url: str, stop: threading.Event,
                 ready: threading.Barrier) -> None:
        super().__init__(name=f"publisher-{index}", daemon=True)
        self.ready = ready
        self.index = index
        self.round_no = round_no
        self.base_url = base_url
        self.stop = stop
        self.acked: list = []  # (id, topic, data) in the order the answers came
        self.attempted: set = set()  # every data value sent (answered or not)
        self.errors: list = []  # anything but a 2xx before the kill

    def run(self) -> None:
        client = httpx.Client(timeout=httpx.Timeout(10.0), trust_env=False)
        try:
            self.ready.wait(timeout=30)  # all publishers start together
        except threading.BrokenBarrierError:
            pass
        started = time.monotonic()
        try:
            for seq in range(MAX_PER_PUBLISHER):
                if self.stop.is_set() or time.monotonic() - started > LOAD_LIMIT:
                    break
                topic = f"crash/p{self.index % 10}/r{self.round_no}"
                data = f"r{self.round_no}-p{self.index}-s{seq}-{os.urandom(6).hex()}"
                self.attempted.add(data)
                try:
                    response = client.post(
                        self.base_url + "/v1/events",
                        content=json.dumps({"topic": topic, "data": data}),
                        headers={"Content-Type": "application/json"},
                    )
                except httpx.HTTPError as error:
                    if not self.stop.is_set():
                        self.errors.append(f"{type(error).__name__}: {error}")
                    break
                if response.status_code in (200, 201):
                    try:
                        body = response.json()
                        self.acked.append((int(body["id"]), body["topic"], data, topic))
                    except (ValueError, KeyError, TypeError) as error:
                        self.errors.append(f"bad 2xx body {response.text[:200]!r}: {error}")
                elif not self.stop.is_set():
                    self.errors.append(f"HTTP {response.status_code}: {response.text[:200]}")
        finally:
            client.close()


def scenario_sigkill_rounds() -> None:
    server = Server(BINARY, name="crash-kill", args=["--durability", "full"]).start()
    acked: dict = {}  # id -> (topic, data) for every acknowledged publish, all rounds
    attempted: set = set()  # every data value ever sent
    highest_seen = 0  # the largest id the log or an answer ever showed
    began = time.monotonic()
    rounds = 0
    rng = random.Random()
    for round_no in range(1, MAX_ROUNDS + 1):
        if round_no > MIN_ROUNDS and time.monotonic() - began > ROUNDS_BUDGET:
            break
        rounds = round_no
        label = f"round {round_no}"
        stop = threading.Event()
        ready = threading.Barrier(PUBLISHERS + 1)
        publishers = [Publisher(i, round_no, server.base_url, stop, ready) for i in range(PUBLISHERS)]
        delay = rng.uniform(0.3, 1.5)
        for publisher in publishers:
            publisher.start()
        try:
            ready.wait(timeout=30)  # the load starts when every publisher is ready
        except threading.BrokenBarrierError:
            checks.fail(f"{label}: the {PUBLISHERS} publishers did not get ready within 30 s")
        time.sleep(delay)
        stop.set()
        status = server.kill()
        for publisher in publishers:
            publisher.join(timeout=15)
        stuck = [p.name for p in publishers if p.is_alive()]
        checks.check(not stuck, f"{label}: every publisher thread ended after the kill", stuck)

        round_acked = [item for p in publishers for item in p.acked]
        errors = [f"{p.name}: {e}" for p in publishers for e in p.errors]
        for p in publishers:
            attempted |= p.attempted
        sent = sum(len(p.attempted) for p in publishers)
        print(f"# {label}: SIGKILL (status {status}) {delay:.2f} s after the load started; "
              f"{len(round_acked)} of {sent} publishes acknowledged", flush=True)
        checks.check(len(round_acked) > 0, f"{label}: publishes were acknowledged before the kill", sent)
        checks.check(not errors, f"{label}: no publish failed before the kill", errors[:5])
        wrong_topic = [item for item in round_acked if item[1] != item[3]]
        checks.check(not wrong_topic, f"{label}: every 201 names the topic that was published", wrong_topic[:3])
        not_increasing = [p.name for p in publishers
                          if any(a[0] >= b[0] for a, b in zip(p.acked, p.acked[1:]))]
        checks.check(not not_increasing, f"{label}: each publisher's acknowledged ids strictly increase",
                     not_increasing[:5])
        duplicates = {}
        for event_id, topic, data, _ in round_acked:
            if event_id in acked and acked[event_id] != (topic, data):
                duplicates[event_id] = (acked[event_id], (topic, data))
            acked[event_id] = (topic, data)
        same_round = len({item[0] for item in round_acked}) != len(round_acked)
        checks.check(not duplicates and not same_round, f"{label}: no id was acknowledged twice",
                     list(duplicates.items())[:3])
        highest_acked = max(acked) if acked else 0

        verify(server.db, f"{label}: the crashed database (before the restart)")

        server.restart(same_port=True)
        health = server.health()
        checks.check(health["head"] >= highest_acked,
                     f"{label}: head after the restart ({health['head']}) covers every acknowledged id "
                     f"({highest_acked})", health)
        events, page = all_history(server)
        ids = [event["id"] for event in events]
        checks.check(all(a < b for a, b in zip(ids, ids[1:])),
                     f"{label}: history ids are unique and strictly increasing ({len(ids)} events)",
                     [(a, b) for a, b in zip(ids, ids[1:]) if a >= b][:5])
        stored = {event["id"]: (event["topic"], event["data"]) for event in events}
        missing = [(i, acked[i]) for i in sorted(acked) if i not in stored]
        changed = [(i, acked[i], stored[i]) for i in sorted(acked) if i in stored and stored[i] != acked[i]]
        checks.check(not missing and not changed,
                     f"{label}: all {len(acked)} acknowledged events (all rounds) are in the log with the same id, "
                     f"topic and data", {"missing": missing[:5], "changed": changed[:5]})
        phantom = [event for event in events if event["data"] not in attempted]
        checks.check(not phantom, f"{label}: the log holds only data that a publisher sent", phantom[:3])
        datas = [event["data"] for event in events]
        twice = len(datas) - len(set(datas))
        checks.check(twice == 0, f"{label}: no event is stored twice", twice)
        unacked = len(ids) - len(acked)
        print(f"# {label}: {len(ids)} events in the log, {len(acked)} acknowledged, "
              f"{unacked} committed whose answer the kill cut off", flush=True)
        max_before = max([highest_seen, highest_acked, page["head"], *ids[-1:]])

        fresh = server.publish("crash/after-restart", f"after round {round_no}")
        checks.check(fresh["id"] > max_before,
                     f"{label}: a publish after the restart gets id {fresh['id']} > every earlier id ({max_before})",
                     fresh)
        acked[fresh["id"]] = ("crash/after-restart", f"after round {round_no}")
        attempted.add(f"after round {round_no}")
        highest_seen = fresh["id"]
        verify(server.db, f"{label}: the restarted log (server running)")
    checks.check(rounds >= MIN_ROUNDS, f"{rounds} SIGKILL rounds ran (at least {MIN_ROUNDS}) in "
                                       f"{time.monotonic() - began:.1f} s")
    server.close()


# --------------------------------------------------------------------------------------------
# 2) Disk full


BIG = "x" * 4000


def fill_until_full(server: Server, client: httpx.Client, prefix: str, acked: dict, refused: set,
                    limit: int = 1500) -> Optional[httpx.Response]:
    """Publishes ~4 KB events one by one until the first 503; returns that answer (None if none came)."""
    for n in range(limit):
        data = f"{prefix}-{n}-{BIG}"
        response = post_event(client, server, "full/seq", data)
        if response.status_code == 201:
            acked[response.json()["id"]] = ("full/seq", data)
            continue
        refused.add(data)
        return response
    return None


def check_log(server: Server, acked: dict, refused: set, what: str) -> list:
    """Every acknowledged event present (same id, topic, data), no refused one, ids increasing."""
    events, _ = all_history(server)
    ids = [event["id"] for event in events]
    stored = {event["id"]: (event["topic"], event["data"]) for event in events}
    checks.check(all(a < b for a, b in zip(ids, ids[1:])), f"{what}: history ids strictly increase")
    missing = [i for i in acked if stored.get(i) != acked[i]]
    checks.check(not missing, f"{what}: all {len(acked)} acknowledged events are present and unchanged",
                 missing[:5])
    present = [event["id"] for event in events if event["data"] in refused]
    checks.check(not present, f"{what}: none of the {len(refused)} refused events is stored", present[:5])
    return events


def is_storage_unavailable(response: httpx.Response) -> bool:
    try:
        body = response.json()
    except ValueError:
        return False
    return (response.status_code == 503
            and response.headers.get("content-type", "").startswith("application/json")
            and isinstance(body, dict) and isinstance(body.get("error"), dict)
            and body["error"].get("code") == "storage_unavailable")


def db_earliest(db: str) -> Optional[int]:
    """The smallest retained id as the file says (sqlite3 CLI, read-only), or None."""
    try:
        result = subprocess.run(["sqlite3", "-readonly", db, "SELECT min(id) FROM events"],
                                capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
        return int(result.stdout.strip())
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


def retain_and_recover(server: Server, client: httpx.Client, acked: dict, what: str) -> None:
    earliest_before = all_history(server)[1]["earliest"]
    result = run_maint(MAINT, "retain", "--db", server.db, "--max-events", "10", "--quiet", timeout=60)
    checks.check(result.returncode == 0, f"{what}: eventlog-maint retain --max-events 10 beside the running server",
                 f"exit {result.returncode}: {(result.stdout + result.stderr).strip()[:800]}")
    # The running server notices the new earliest shortly after (it caches it); wait for that, bounded.
    started = time.monotonic()
    events, page = all_history(server)
    while not (len(events) <= 10 and page["earliest"] > earliest_before) and time.monotonic() - started < 3.0:
        time.sleep(0.05)
        events, page = all_history(server)
    lag = time.monotonic() - started
    checks.check(len(events) <= 10 and page["earliest"] > earliest_before,
                 f"{what}: GET /v1/events on the running server reflects the retention within 3 s "
                 "(<= 10 events, earliest moved)",
                 f"after {lag:.2f} s: {len(events)} events (ids {events[0]['id'] if events else None}.."
                 f"{events[-1]['id'] if events else None}), earliest {page['earliest']} (was {earliest_before})")
    # The retained acknowledged events are still there; the deleted ones are gone by retention
    # (the file says which: its smallest retained id, read with the sqlite3 CLI).
    on_disk = db_earliest(server.db)
    checks.check(on_disk is not None and on_disk > earliest_before,
                 f"{what}: the smallest id in the file moved from {earliest_before} to {on_disk}")
    for event_id in [i for i in acked if i < max(page["earliest"], on_disk or 0)]:
        del acked[event_id]
    head_before = page["head"]
    statuses = []
    for n in range(5):
        data = f"{what}-after-retain-{n}-{BIG}"
        response = post_event(client, server, "full/after-retain", data)
        statuses.append(response.status_code)
        if response.status_code == 201:
            acked[response.json()["id"]] = ("full/after-retain", data)
    checks.equal(statuses, [201] * 5, f"{what}: 4 KB publishes succeed again (201) without a restart")
    new_ids = sorted(i for i in acked if i > head_before)
    checks.check(new_ids and new_ids[0] > head_before,
                 f"{what}: the new ids continue above the old head {head_before}", new_ids[:5])
    verify(server.db, f"{what}: after retain and new publishes")


def scenario_disk_full() -> None:
    server = Server(BINARY, name="crash-full", args=["--durability", "full", "--max-db-pages", "300"]).start()
    client = httpx.Client(timeout=httpx.Timeout(15.0), trust_env=False)
    acked: dict = {}
    refused: set = set()
    try:
        first = fill_until_full(server, client, "seq", acked, refused)
        checks.check(first is not None, f"sequential: a 503 came after {len(acked)} acknowledged 4 KB events")
        if first is None:
            return
        checks.check(is_storage_unavailable(first),
                     "sequential: the refusal is 503 application/json with code storage_unavailable",
                     f"HTTP {first.status_code} {first.headers.get('content-type')} {first.text[:300]}")
        more = []
        for n in range(5):
            data = f"seq-more-{n}-{BIG}"
            response = post_event(client, server, "full/seq", data)
            more.append(response.status_code)
            if response.status_code == 201:
                acked[response.json()["id"]] = ("full/seq", data)
            else:
                refused.add(data)
        checks.check(all(status == 503 for status in more), "sequential: further 4 KB publishes into the full "
                     "store are refused with 503 too", more)

        # Over WebSocket: an error message with the same code, the connection stays open.
        with RawWebSocket(server.port) as raw:
            data = f"ws-full-{BIG}"
            raw.send_json({"op": "publish", "ref": "full-1", "topic": "full/ws", "data": data})
            try:
                answer = raw.recv_json(15.0)
            except (TimeoutError, WSClosed) as error:
                answer = repr(error)
            if isinstance(answer, dict) and answer.get("type") == "ack":
                acked[answer["id"]] = ("full/ws", data)
            else:
                refused.add(data)
            checks.check(isinstance(answer, dict) and answer.get("type") == "error"
                         and answer.get("code") == "storage_unavailable" and answer.get("ref") == "full-1",
                         "websocket: a publish into the full store gets error storage_unavailable", answer)

        checks.check(server.running, "the server is still running with a full store")
        health = client.get(server.url("/healthz"))
        print(f"# /healthz with a full store: HTTP {health.status_code} {health.text[:200]}", flush=True)
        checks.check(health.status_code in (200, 503) and "application/json" in health.headers.get("content-type", ""),
                     "/healthz answers (200 or 503, JSON) with a full store", health.status_code)
        verify(server.db, "sequential: the full log")
        check_log(server, acked, refused, "sequential: the full log")

        retain_and_recover(server, client, acked, "retain #1")

        # Concurrent publishers into a store that fills up: each answer is 201 (and stored) or 503
        # storage_unavailable (and not stored, nothing half-written), whatever group it shared.
        lock = threading.Lock()
        outcomes = {"201": 0, "503": 0, "other": []}

        def concurrent(index: int) -> None:
            local = httpx.Client(timeout=httpx.Timeout(15.0), trust_env=False)
            refusals = 0
            try:
                for n in range(300):
                    data = f"conc-{index}-{n}-{BIG}"
                    try:
                        response = post_event(local, server, f"full/conc/{index}", data)
                    except httpx.HTTPError as error:
                        with lock:
                            outcomes["other"].append(repr(error))
                        return
                    with lock:
                        if response.status_code == 201:
                            acked[response.json()["id"]] = (f"full/conc/{index}", data)
                            outcomes["201"] += 1
                        elif is_storage_unavailable(response):
                            refused.add(data)
                            outcomes["503"] += 1
                        else:
                            refused.add(data)
                            outcomes["other"].append(f"HTTP {response.status_code} {response.text[:200]}")
                    if response.status_code != 201:
                        refusals += 1
                        if refusals >= 3:
                            return
            finally:
                local.close()

        threads = [threading.Thread(target=concurrent, args=(i,), daemon=True) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        checks.check(not any(t.is_alive() for t in threads), "concurrent: every publisher ended")
        checks.check(outcomes["201"] > 0 and outcomes["503"] > 0 and not outcomes["other"],
                     f"concurrent: 8 publishers got only 201 ({outcomes['201']}) or 503 storage_unavailable "
                     f"({outcomes['503']})", outcomes["other"][:5])
        verify(server.db, "concurrent: the full log")
        check_log(server, acked, refused, "concurrent: the full log")

        retain_and_recover(server, client, acked, "retain #2")

        # Fill it once more, then crash and restart on the full file.
        fill_until_full(server, client, "final", acked, refused)
        server.kill()
        verify(server.db, "SIGKILL with a full store: the crashed database")
        server.restart(same_port=True)
        check_log(server, acked, refused, "SIGKILL with a full store, after the restart")
        retain_and_recover(server, client, acked, "retain #3 after the restart")
    finally:
        client.close()
        server.close()


# --------------------------------------------------------------------------------------------


def main(argv: list) -> int:
    global BINARY, MAINT
    install_deadline(int(os.environ.get("CONFORMANCE_DEADLINE", "200")))
    started = time.monotonic()
    try:
        BINARY = eventlogd_path(argv[1] if len(argv) > 1 else None)
        MAINT = eventlog_maint_path(near=BINARY)
        print(f"# eventlogd: {BINARY}", flush=True)
        print(f"# eventlog-maint: {MAINT}", flush=True)
        checks.run_scenario(f"1) SIGKILL under load: {PUBLISHERS} publishers, at least {MIN_ROUNDS} rounds",
                            scenario_sigkill_rounds)
        checks.run_scenario("2) disk full (--max-db-pages 300): 503 storage_unavailable, retain, recover",
                            scenario_disk_full)
    except BaseException as error:  # noqa: BLE001 - deadline, missing binary, Ctrl-C: still summarize
        checks.fail(f"run aborted by {type(error).__name__}", str(error))
    finally:
        signal.alarm(0)
    print(f"# crash.py ran for {time.monotonic() - started:.1f} s", flush=True)
    return checks.summary()


if __name__ == "__main__":
    code = main(sys.argv)
    sys.exit(code)
