#!/usr/bin/env python3
"""Browser conformance: a real headless Chromium (driven by Selenium) against a real eventlogd.

  0) Chromium and chromedriver are found and start headless; the live view at `/` loads and
     /v1/eventlog.js defines EventLogSocket. If Chromium cannot be started at all this FAILS
     (it never skips).
  1) SSE: the browser's own `new EventSource("/v1/events?topic=orders/*&envelope=1&lastEventId=earliest")`
     replays history and gets live events; eventlogd is killed with SIGKILL right after a burst of
     publishes, nothing is published while it is down, it is restarted on the same database and
     port, and more is published. The browser reconnects by itself (after the server's `retry:`)
     and sends Last-Event-ID automatically (the second `eventlog.open` says `from` = the last id it
     had). The same again with SIGTERM (graceful). In the end `window.eventlog.received` holds
     every published id exactly once, in order, with the published data, and each event's
     `lastEventId` is its own id.
  2) WebSocket: the page `/?topic=orders/*&transport=ws&from=earliest` (EventLogSocket from
     /v1/eventlog.js) does the same with resume tokens and backoff + jitter (SIGKILL and SIGTERM
     cycles, `subscribed.from` = the last id it had); publish with ack from the browser
     (`await window.eventlog.socket.publish(...)`), checked in HTTP history and in the stream.
  3) The live view `/?topic=orders/*&transport=sse|ws&from=earliest`, in both modes: events of
     several types and topics (and one outside the selector, never shown), history and live, each
     shown once, in order, with its exact id, topic, key, type, time and data; the control lines
     ("connected", "caught up") are not event rows; markup in data, type and key stays text; no
     horizontal scrolling at 1024 and 420 px with a 5000-character data value, a long topic and
     type, and the resume token in the header. SSE mode: its reader reconnects after SIGKILL with
     Last-Event-ID and nothing is lost or doubled.
  4) Auth (eventlogd with --jwt-secret-file and --jwt-leeway 0s; HS256 tokens minted here with the
     standard library; publishing with a Bearer token): on a page of eventlogd's origin,
     `new EventLogSocket(..., {token: async () => window.nextToken, onAuthenticated, ...})` with a
     first token that lives 5 s and a fresh one put in window.nextToken after the first
     `authenticated`: the server's `token_expired` warning (no ref) makes eventlog.js call the
     function again and send an auth op on the same socket; onAuthenticated twice (each token's
     exp), one WebSocket never closed, status only "open", every orders/1 id once in order while
     events are published across the first exp, no orders/2 event (a WebSocket wrapper records
     what eventlog.js sends and gets, and each close).
  5) Auth, no renewal (window.nextToken stays the expired token): the server closes with 1008 at
     exp; eventlog.js reconnects, its auth op is refused with token_expired (and 1008); onError
     reports token_expired; the reconnects back off; nothing published after exp is delivered.
     Then a fresh token in window.nextToken: the next reconnect authenticates and resumes from the
     last id it had, every event once.
  6) Auth, the live view with the httpOnly `eventlog_token` cookie: `/?topic=orders/1` in SSE and
     WebSocket mode shows exactly the orders/1 events (history and live); `/?topic=orders/*` is one
     error forbidden_topic naming orders/*; without the cookie, SSE mode is one error
     authentication_required and status "closed", WebSocket mode one error authentication_required
     naming orders/1; nothing is shown.

Chromium runs with --headless=new --no-sandbox --disable-dev-shm-usage --disable-gpu and a
private profile; every wait polls `window.eventlog` against a deadline. The browser (chromedriver
and every Chromium process of its profile) and every eventlogd are killed at exit.

Environment: CHROMIUM (the browser binary) and CHROMEDRIVER override the search for
/usr/bin/chromium and /usr/bin/chromedriver; CONFORMANCE_DEADLINE bounds the whole script (s);
CONFORMANCE_SCREENSHOTS (a folder) keeps screenshots of the live view for a person to look at.

Usage: python3 tools/conformance/browser.py [path/to/eventlogd]   (or set EVENTLOGD)
Prints `ok - ...` / `FAIL - ...` per check and ends with `N passed, M failed`; exits 1 on failure.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# chromedriver and the pages are on 127.0.0.1: never send that traffic through a proxy.
for _name in ("NO_PROXY", "no_proxy"):
    _hosts = [h for h in os.environ.get(_name, "").split(",") if h]
    os.environ[_name] = ",".join(_hosts + [h for h in ("127.0.0.1", "localhost") if h not in _hosts])

import httpx  # noqa: E402

from lib import (  # noqa: E402
    HOST,
    Checks,
    Server,
    ServerError,
    _die_with_parent,
    eventlogd_path,
    install_deadline,
    register_cleanup,
    unregister_cleanup,
)

try:  # Selenium is pinned in requirements.txt; its absence is a failure, reported in main().
    import selenium  # noqa: E402
    from selenium import webdriver  # noqa: E402
    from selenium.webdriver.chrome.service import Service as ChromeService  # noqa: E402

    SELENIUM_ERROR: Optional[str] = None
except Exception as _error:  # noqa: BLE001
    selenium = None  # type: ignore[assignment]
    SELENIUM_ERROR = f"{type(_error).__name__}: {_error}"

SELECTOR = "orders/*"
SSE_RETRY_MS = 500
BATCH = 300  # events committed in one batch right before the SIGKILL
WAIT = 20.0  # seconds for any one thing the browser must do

checks = Checks()
BINARY: Optional[str] = None


# --------------------------------------------------------------------------------------------
# Finding and running Chromium


def _find(env: str, candidates: list) -> Optional[str]:
    explicit = os.environ.get(env)
    if explicit:
        return explicit if os.path.isfile(explicit) and os.access(explicit, os.X_OK) else None
    for candidate in candidates:
        path = candidate if os.path.isabs(candidate) else shutil.which(candidate)
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def find_chromium() -> str:
    path = _find("CHROMIUM", ["/usr/bin/chromium", "/usr/lib/chromium/chromium", "chromium",
                              "chromium-browser", "google-chrome", "google-chrome-stable"])
    if not path:
        raise RuntimeError("no Chromium binary found (set CHROMIUM, or `apt-get install chromium`; "
                           "tools/conformance/run.sh installs it)")
    return path


def find_chromedriver() -> str:
    path = _find("CHROMEDRIVER", ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver", "chromedriver"])
    if not path:
        raise RuntimeError("no chromedriver found (set CHROMEDRIVER, or `apt-get install chromium-driver`; "
                           "tools/conformance/run.sh installs it)")
    return path


def _version(binary: str) -> str:
    try:
        result = subprocess.run([binary, "--version"], stdin=subprocess.DEVNULL, capture_output=True,
                                text=True, timeout=30)
        return (result.stdout.strip() or result.stderr.strip()).splitlines()[-1]
    except Exception as error:  # noqa: BLE001
        return f"? ({type(error).__name__}: {error})"


def _pids_with(marker: str) -> list:
    """Pids of processes whose command line contains `marker` (our private profile directory)."""
    found = []
    needle = marker.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                if needle in handle.read():
                    found.append(int(entry))
        except OSError:
            pass
    return found


# What the page keeps, without `socket` / `source` (not serializable) and with the browser's view
# of the EventSource / WebSocket state.
STATE_JS = """
const s = window.eventlog;
if (!s) return null;
const out = {received: s.received, controls: s.controls, status: s.status, opens: s.opens};
if (s.source) out.readyState = s.source.readyState;
if (s.socket) { out.lastId = s.socket.lastId; out.hasToken = !!s.socket.resumeToken;
                out.wsState = s.socket.ws ? s.socket.ws.readyState : null; }
return out;
"""

# Console lines that are expected while the server is down or restarting.
EXPECTED_CONSOLE = ("ERR_CONNECTION_REFUSED", "ERR_INCOMPLETE_CHUNKED_ENCODING", "ERR_CONNECTION_RESET",
                    "ERR_EMPTY_RESPONSE", "WebSocket connection to", "favicon.ico")


class Browser:
    """One headless Chromium with a private profile, driven through chromedriver."""

    def __init__(self, label: str) -> None:
        if selenium is None:
            raise RuntimeError(f"Selenium is not importable ({SELENIUM_ERROR}); "
                               "pip install -r tools/conformance/requirements.txt")
        self.label = label
        self.driver: Any = None
        self.service: Any = None
        self.profile = tempfile.mkdtemp(prefix="eventlog-conformance-chromium-")
        self.driver_log = os.path.join(self.profile, "chromedriver.log")
        register_cleanup(self)
        chromium = find_chromium()
        chromedriver = find_chromedriver()
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for argument in (
            "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
            f"--user-data-dir={self.profile}/profile", "--no-first-run", "--no-default-browser-check",
            "--disable-extensions", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--disable-default-apps", "--no-proxy-server", "--mute-audio",
            # Timers in a headless tab must not be throttled: EventLogSocket reconnects with setTimeout.
            "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
            "--disable-backgrounding-occluded-windows", "--window-size=1024,768",
        ):
            options.add_argument(argument)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        options.page_load_strategy = "normal"
        self.service = ChromeService(executable_path=chromedriver, log_output=self.driver_log,
                                     popen_kw={"preexec_fn": _die_with_parent})
        # Started from the main thread: chromedriver gets SIGKILL when the thread that started it
        # ends (PR_SET_PDEATHSIG), so not from a helper thread. chromedriver gives up on a Chromium
        # that does not come up within 60 s; the script's deadline bounds the rest.
        try:
            self.driver = webdriver.Chrome(options=options, service=self.service)
        except Exception as error:  # noqa: BLE001
            self.close()
            raise RuntimeError(f"headless Chromium did not start ({chromium}, {chromedriver}): "
                               f"{str(error).strip()[:1500]}\n--- chromedriver log ---\n{self._driver_log_tail()}"
                               ) from None
        self.driver.set_page_load_timeout(30)
        self.driver.set_script_timeout(15)

    def _driver_log_tail(self, lines: int = 25) -> str:
        try:
            with open(self.driver_log, "r", encoding="utf-8", errors="replace") as handle:
                return "\n".join(handle.read().splitlines()[-lines:])
        except OSError:
            return "(none)"

    @property
    def version(self) -> str:
        caps = self.driver.capabilities
        return f"{caps.get('browserName')} {caps.get('browserVersion')}, " \
               f"chromedriver {caps.get('chrome', {}).get('chromedriverVersion', '?').split(' ')[0]}"

    def open(self, url: str) -> None:
        if not url.startswith(f"http://{HOST}:"):
            raise ValueError(f"only {HOST} is allowed: {url}")
        self.driver.get(url)

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def js_async(self, script: str, *args: Any) -> Any:
        return self.driver.execute_async_script(script, *args)

    def state(self) -> Optional[dict]:
        return self.js(STATE_JS)

    def wait(self, predicate: Callable[[dict], bool], what: str, timeout: float = WAIT) -> dict:
        """Polls window.eventlog until predicate(state) holds; TimeoutError (with the last state) after `timeout`."""
        deadline = time.monotonic() + timeout
        state: Optional[dict] = None
        while True:
            state = self.state()
            if state is not None and predicate(state):
                return state
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{self.label}: {what}: not within {timeout}s; last state: {summarize(state)}")
            time.sleep(0.1)

    def console(self) -> list:
        """Browser console entries since the last call."""
        try:
            return self.driver.get_log("browser")
        except Exception as error:  # noqa: BLE001
            return [{"level": "INFO", "message": f"(console log unavailable: {error})"}]

    def report_console(self) -> list:
        """Prints the unexpected console entries as comments; returns them."""
        unexpected = [entry for entry in self.console()
                      if not any(marker in str(entry.get("message", "")) for marker in EXPECTED_CONSOLE)]
        for entry in unexpected:
            print(f"# {self.label} console {entry.get('level')}: {str(entry.get('message'))[:300]}", flush=True)
        return unexpected

    def close(self) -> None:
        driver, self.driver = self.driver, None
        if driver is not None:
            quitter = threading.Thread(target=lambda: _quiet(driver.quit), name="chromium-quit", daemon=True)
            quitter.start()
            quitter.join(20.0)
        service = self.service
        if service is not None and getattr(service, "process", None) is not None:
            if service.process.poll() is None:
                _quiet(service.process.kill)
                _quiet(lambda: service.process.wait(timeout=10))
        # Whatever is left of this browser (a crashed or hung quit): every process of its profile.
        for pid in _pids_with(self.profile):
            _quiet(lambda: os.kill(pid, signal.SIGKILL))
        shutil.rmtree(self.profile, ignore_errors=True)
        unregister_cleanup(self)


def _quiet(action: Callable[[], Any]) -> None:
    try:
        action()
    except Exception:  # noqa: BLE001 - cleanup goes on
        pass


def summarize(state: Optional[dict]) -> str:
    if state is None:
        return "window.eventlog is not defined"
    ids = [r.get("id") for r in state.get("received", [])]
    shown = ids if len(ids) <= 12 else ids[:5] + ["..."] + ids[-5:]
    controls = [c.get("type") for c in state.get("controls", [])]
    extra = {k: state[k] for k in ("readyState", "lastId", "wsState") if k in state}
    return (f"status={state.get('status')!r} opens={state.get('opens')} {len(ids)} received {shown} "
            f"controls={controls} {extra}")


# --------------------------------------------------------------------------------------------
# Publishing and expectations


class Published:
    """The events published to topics the page subscribes to, in id order."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.events: list = []  # {"id", "topic", "data"} and, when known, "type", "key", "time"

    def add(self, topic: str, data: Any, *, type: Optional[str] = None,  # noqa: A002 - the wire name
            key: Optional[str] = None) -> int:
        answer = self.server.publish(topic, data, type=type, key=key)
        self.events.append({"id": int(answer["id"]), "topic": topic, "type": type or "message", "key": key,
                            "time": answer["time"], "data": data})
        return int(answer["id"])

    def noise(self, data: Any) -> int:
        """An event on a topic outside `orders/*`: the page must never show it."""
        return int(self.server.publish("payments/1", data)["id"])

    def burst(self, phase: str, count: int) -> list:
        return [self.add(f"orders/{phase}/{n % 3}", {"phase": phase, "n": n}) for n in range(count)]

    @property
    def ids(self) -> list:
        return [event["id"] for event in self.events]

    def adopt_history(self) -> None:
        """Replaces the list with the server's history of `orders/*` (after a crash, what committed)."""
        events: list = []
        after = 0
        for _page in range(100):
            page = self.server.history(SELECTOR, after=after)
            events += [{"id": e["id"], "topic": e["topic"], "type": e["type"], "key": e.get("key"),
                        "time": e["time"], "data": e["data"]} for e in page["events"]]
            if not page["events"] or page["next"] >= page["head"]:
                break
            after = page["next"]
        self.events = events


def publish_until_killed(label: str, server: Server, published: Published, phase: str, *,
                         kill_after: int) -> tuple:
    """Publishes from a thread (its own HTTP client) while the main thread SIGKILLs eventlogd after
    `kill_after` acknowledgements. Returns (acknowledged ids, the error that stopped the publisher)."""
    acked: list = []
    stop = threading.Event()
    stopped: dict = {}
    enough = threading.Event()

    def publisher() -> None:
        with httpx.Client(timeout=httpx.Timeout(10.0), trust_env=False) as client:
            for n in range(1000):
                if stop.is_set():
                    stopped["why"] = "stopped"
                    return
                topic, data = f"orders/{phase}/{n % 3}", {"phase": phase, "n": n}
                try:
                    response = client.post(server.url("/v1/events"), json={"topic": topic, "data": data})
                except httpx.HTTPError as error:
                    stopped["why"] = f"{type(error).__name__}: {error}"
                    return
                if response.status_code != 201:
                    stopped["why"] = f"HTTP {response.status_code}: {response.text[:200]}"
                    return
                answer = response.json()
                published.events.append({"id": int(answer["id"]), "topic": topic, "data": data})
                acked.append(int(answer["id"]))
                if len(acked) >= kill_after:
                    enough.set()
            stopped["why"] = "ran out of events to publish"

    thread = threading.Thread(target=publisher, name="publisher", daemon=True)
    thread.start()
    enough.wait(WAIT)
    # A batch committed right before the kill: the browser is then still receiving it when the
    # server dies, and must get the rest of it after the restart.
    lines = [{"topic": f"orders/{phase}/batch", "data": {"phase": phase, "batch": n}} for n in range(BATCH)]
    response = server.http.post(server.url("/v1/events"), content="\n".join(json.dumps(line) for line in lines),
                                headers={"Content-Type": "application/x-ndjson"})
    status = server.kill()
    if response.status_code == 201:
        ids = [int(i) for i in response.json()["ids"]]
        published.events += [{"id": i, "topic": line["topic"], "data": line["data"]} for i, line in zip(ids, lines)]
        acked += ids
    checks.equal(response.status_code, 201, f"{label}: a batch of {BATCH} events committed right before the kill")
    # The publisher's next request fails against the dead server and ends it; `stop` is only the fallback
    # for a publisher that never notices (setting it at once raced with that failure).
    thread.join(WAIT)
    if thread.is_alive():
        stop.set()
        thread.join(5)
    checks.equal(status, -signal.SIGKILL, f"{label}: eventlogd died of SIGKILL")
    checks.check(not thread.is_alive() and stopped.get("why") not in (None, "stopped", "ran out of events to publish"),
                 f"{label}: the publisher saw the server die and stopped (nothing published while it is down)",
                 stopped)
    return acked, stopped.get("why")


def received_ids(state: dict) -> list:
    return [r.get("id") for r in state.get("received", [])]


def has_all(published: Published) -> Callable[[dict], bool]:
    wanted = published.ids

    def predicate(state: dict) -> bool:
        ids = received_ids(state)
        return len(ids) >= len(wanted) and (not wanted or wanted[-1] in ids)

    return predicate


def controls_of(state: dict, name: str) -> list:
    return [c.get("data") for c in state.get("controls", []) if c.get("type") == name]


def check_received(label: str, state: dict, published: Published, what: str, *, sse: bool) -> None:
    ids = received_ids(state)
    checks.equal(ids, published.ids, f"{label}: {what}: every published id exactly once, in order")
    checks.check(len(ids) == len(set(ids)), f"{label}: {what}: no duplicate ids",
                 sorted({i for i in ids if ids.count(i) > 1})[:10])
    got = [(r.get("id"), r.get("topic"), r.get("type"), r.get("data")) for r in state.get("received", [])]
    want = [(e["id"], e["topic"], e.get("type", "message"), e["data"]) for e in published.events]
    checks.check(got == want, f"{label}: {what}: topic, type and data of every event as published",
                 next(((g, w) for g, w in zip(got, want) if g != w), (len(got), len(want))))
    if sse:
        bad = [(r.get("id"), r.get("lastEventId")) for r in state.get("received", [])
               if r.get("lastEventId") != str(r.get("id"))]
        checks.check(not bad, f"{label}: {what}: each event's lastEventId is its own id", bad[:5])


# --------------------------------------------------------------------------------------------
# 0) Chromium starts; the page and eventlog.js load


def scenario_smoke() -> None:
    print(f"# chromium: {find_chromium()} ({_version(find_chromium())})", flush=True)
    print(f"# chromedriver: {find_chromedriver()} ({_version(find_chromedriver())})", flush=True)
    server = Server(BINARY, name="browser-smoke").start()
    browser = Browser("chromium")
    checks.check(True, f"headless Chromium started ({browser.version})")
    script = server.http.get(server.url("/v1/eventlog.js"))
    checks.equal(script.status_code, 200, "GET /v1/eventlog.js answers 200")
    checks.check("javascript" in script.headers.get("content-type", ""),
                 "GET /v1/eventlog.js is served as JavaScript", script.headers.get("content-type"))
    browser.open(server.url("/?topic=orders/*&transport=sse&from=earliest"))
    agent = browser.js("return navigator.userAgent")
    checks.check("HeadlessChrome" in agent, "the browser is headless Chromium", agent)
    checks.equal(browser.js("return document.title"), "eventlog", "the live view at / loads (title 'eventlog')")
    checks.equal(browser.js("return typeof EventLogSocket"), "function",
                 "/v1/eventlog.js defines EventLogSocket in the page")
    state = browser.wait(lambda s: s.get("opens", 0) >= 1, "eventlog.open")
    checks.equal(state.get("status"), "open", "the page's SSE stream is open")
    browser.report_console()
    browser.close()
    server.close()


# --------------------------------------------------------------------------------------------
# 1) SSE with a real EventSource

# The browser's own EventSource, keeping what it sees in window.eventlog as the live view does. Every
# event these scenarios publish has type `message` (EventSource only dispatches a named event to a
# listener for that name; the live view reads the stream itself to see every type).
NATIVE_EVENTSOURCE_JS = """
const state = window.eventlog = {received: [], controls: [], status: "connecting", opens: 0};
const source = state.source = new EventSource(arguments[0]);
source.onopen = () => { state.status = "open"; };
source.onerror = () => { state.status = source.readyState === EventSource.CLOSED ? "closed" : "reconnecting"; };
source.addEventListener("message", (m) => {
  const e = JSON.parse(m.data);
  state.received.push({id: e.id, lastEventId: m.lastEventId, topic: e.topic, type: e.type, data: e.data});
});
for (const name of ["eventlog.open", "eventlog.caughtup", "eventlog.gap", "eventlog.reset"]) {
  source.addEventListener(name, (m) => {
    if (name === "eventlog.open") state.opens++;
    state.controls.push({type: name, data: JSON.parse(m.data)});
  });
}
"""


def restart_cycle(label: str, server: Server, browser: Browser, published: Published, *, how: str,
                  sse: bool) -> None:
    """The server stopped while the page is subscribed, nothing published while it is down, a restart on
    the same database and port, then more publishes; the page must reconnect by itself and resume.

    SIGKILL: killed while a publisher thread is still publishing and right after a batch of BATCH
    events was acknowledged, so the browser is usually still behind (mid-stream) when it dies.
    SIGTERM: graceful stop right after a burst of acknowledged publishes."""
    before = browser.state() or {}
    opens_before = before.get("opens", 0)
    open_name = "eventlog.open" if sse else "subscribed"
    caught_name = "eventlog.caughtup" if sse else "caughtup"
    epoch = server.health()["epoch"]

    port = server.port
    if how == "SIGKILL":
        # Killed while a publisher is still publishing: the browser is mid-stream. A publish in
        # flight at the kill may or may not have committed; every acknowledged one must survive.
        acked, why = publish_until_killed(label, server, published, f"{how}-burst", kill_after=25)
        checks.check(len(acked) >= 25 + BATCH,
                     f"{label}: eventlogd died of SIGKILL while publishes were in flight ({len(acked)} acknowledged)",
                     why)
        acked_head = None
    else:
        published.burst(f"{how}-burst", 25)
        published.noise(f"{how}: not for orders/*")
        acked_head = server.health()["head"]
        status = server.terminate()
        checks.equal(status, 0, f"{label}: eventlogd exits 0 on SIGTERM right after the burst")
    down_at = time.monotonic()
    state = browser.wait(lambda s: s.get("status") == "reconnecting",
                         f"the page notices the stopped server ({how})", timeout=10)
    checks.check(True, f"{label}: the page notices the {how} and reconnects by itself (status 'reconnecting')")
    time.sleep(1.5)  # the browser retries against a closed port meanwhile; nothing is published
    state = browser.state() or {}
    had = received_ids(state)
    last_had = had[-1] if had else None
    checks.check(state.get("status") == "reconnecting",
                 f"{label}: still reconnecting while the server is down (the client did not give up)",
                 summarize(state))
    print(f"# {label}: the browser had {len(had)} of {len(published.ids)} events when the server went down "
          f"({time.monotonic() - down_at:.1f} s ago)", flush=True)

    server.restart(same_port=True)
    up_at = time.monotonic()
    checks.equal(server.port, port, f"{label}: eventlogd restarted on the same database and port after {how}")
    health = server.health()
    if acked_head is None:  # SIGKILL: history is the truth; every acknowledged event is in it
        acked_ids = published.ids
        published.adopt_history()
        lost = [i for i in acked_ids if i not in published.ids]
        checks.check(not lost, f"{label}: every acknowledged event survives SIGKILL", lost)
        extra = [i for i in published.ids if i not in acked_ids]
        print(f"# {label}: {len(extra)} event(s) committed at the kill without an answer: {extra}", flush=True)
        acked_head = health["head"]
    checks.equal((health["epoch"], health["head"]), (epoch, acked_head),
                 f"{label}: epoch and head unchanged after {how} + restart")
    state = browser.wait(lambda s: s.get("opens", 0) > opens_before and s.get("status") == "open",
                         f"reconnect after {how} + restart")
    reconnected_after = time.monotonic() - down_at
    checks.check(True, f"{label}: reconnected by itself {reconnected_after:.1f} s after the {how}, "
                       f"{time.monotonic() - up_at:.1f} s after the restart (opens {opens_before} -> {state.get('opens')})")
    if sse:
        # Chromium's own default reconnection time is 3 s; with `retry: 500` it must be back sooner.
        checks.check(time.monotonic() - up_at < 2.5,
                     f"{label}: the client honours `retry: {SSE_RETRY_MS}` (back within 2.5 s of the restart, "
                     f"not the default 2 or 3 s)", f"{time.monotonic() - up_at:.1f} s")
    published.burst(f"after-{how}", 10)
    published.noise(f"after {how}: not for orders/*")
    state = browser.wait(has_all(published), f"every event after {how} + restart")
    time.sleep(0.5)  # anything extra (a duplicate) would arrive now
    state = browser.state() or state
    check_received(label, state, published, f"after {how} + restart", sse=sse)

    opens = controls_of(state, open_name)
    newest = opens[-1] if opens else {}
    checks.equal(newest.get("from"), last_had,
                 f"{label}: the reconnect resumed from the last id the browser had "
                 f"({'Last-Event-ID sent automatically' if sse else 'resume token'})")
    checks.equal(newest.get("epoch"), epoch, f"{label}: same epoch on the new connection")
    caught = controls_of(state, caught_name)
    checks.equal(len(caught), len(opens), f"{label}: one {caught_name} per connection")


def scenario_sse() -> None:
    label = "sse"
    server = Server(BINARY, name="browser-sse", args=["--sse-retry", str(SSE_RETRY_MS)]).start()
    published = Published(server)
    published.burst("history", 8)
    published.noise("history: not for orders/*")
    browser = Browser("chromium sse")
    # A same-origin document without a stream of its own; the browser's own EventSource goes in it.
    browser.open(server.url("/healthz"))
    browser.js(NATIVE_EVENTSOURCE_JS, "/v1/events?topic=orders/*&envelope=1&lastEventId=earliest")
    state = browser.wait(has_all(published), "replay of the history")
    checks.check(True, f"{label}: new EventSource(...) replays the history ({len(published.ids)} events)")
    state = browser.wait(lambda s: controls_of(s, "eventlog.caughtup"), "eventlog.caughtup")
    check_received(label, state, published, "replay", sse=True)
    checks.equal(state.get("opens"), 1, f"{label}: one eventlog.open so far")
    checks.equal((state.get("status"), state.get("readyState")), ("open", 1), f"{label}: EventSource is OPEN")
    open_data = controls_of(state, "eventlog.open")[0]
    checks.equal(open_data.get("from"), 0, f"{label}: lastEventId=earliest starts at 0")

    published.burst("live", 6)
    state = browser.wait(has_all(published), "live events")
    check_received(label, state, published, "live", sse=True)

    restart_cycle(label, server, browser, published, how="SIGKILL", sse=True)
    restart_cycle(label, server, browser, published, how="SIGTERM", sse=True)

    state = browser.state() or {}
    checks.check(state.get("opens", 0) >= 3, f"{label}: the EventSource really reconnected (opens = "
                                             f"{state.get('opens')} >= 3)", summarize(state))
    history = server.history(SELECTOR)
    checks.equal([e["id"] for e in history["events"]], published.ids,
                 f"{label}: HTTP history of orders/* has the same ids")
    checks.check(not controls_of(state, "eventlog.gap") and not controls_of(state, "eventlog.reset"),
                 f"{label}: no gap or reset along the way", state.get("controls"))
    browser.report_console()
    browser.close()
    server.close()


# --------------------------------------------------------------------------------------------
# 2) WebSocket with EventLogSocket from /v1/eventlog.js

PUBLISH_JS = """
const done = arguments[arguments.length - 1];
const socket = window.eventlog && window.eventlog.socket;
if (!socket) { done({ok: false, error: "no window.eventlog.socket"}); return; }
socket.publish(arguments[0]).then(
  (ack) => done({ok: true, ack}),
  (err) => done({ok: false, error: err && err.message ? err.message : err}));
"""


def browser_publish(label: str, server: Server, browser: Browser, published: Published, topic: str,
                    data: Any, what: str) -> None:
    result = browser.js_async(PUBLISH_JS, {"topic": topic, "data": data})
    ack = (result or {}).get("ack") or {}
    ok = bool(result and result.get("ok")) and ack.get("type") == "ack" and isinstance(ack.get("id"), int)
    checks.check(ok, f"{label}: {what}: await socket.publish(...) resolves with an ack and an id", result)
    if not ok:
        return
    checks.equal((ack.get("topic"), ack.get("replayed")), (topic, False), f"{label}: {what}: ack names the topic")
    published.events.append({"id": ack["id"], "topic": topic, "data": data})
    history = server.history(topic)
    found = [e for e in history["events"] if e.get("id") == ack["id"]]
    checks.check(len(found) == 1 and found[0].get("data") == data,
                 f"{label}: {what}: the acked event {ack['id']} is in HTTP history with its data", history)
    state = browser.wait(has_all(published), f"{what}: the browser's own event in its stream")
    ids = received_ids(state)
    checks.equal(ids.count(ack["id"]), 1, f"{label}: {what}: the event arrives once on the subscription")


def scenario_ws() -> None:
    label = "ws"
    server = Server(BINARY, name="browser-ws").start()
    published = Published(server)
    published.burst("history", 8)
    published.noise("history: not for orders/*")
    browser = Browser("chromium ws")
    browser.open(server.url("/?topic=orders/*&transport=ws&from=earliest"))
    state = browser.wait(has_all(published), "replay of the history")
    checks.check(True, f"{label}: EventLogSocket replays the history ({len(published.ids)} events)")
    state = browser.wait(lambda s: controls_of(s, "caughtup"), "caughtup")
    check_received(label, state, published, "replay", sse=False)
    checks.equal((state.get("opens"), state.get("status"), state.get("wsState")), (1, "open", 1),
                 f"{label}: one subscription, WebSocket OPEN")
    checks.equal(controls_of(state, "subscribed")[0].get("from"), 0, f"{label}: from=earliest starts at 0")
    checks.check(state.get("hasToken"), f"{label}: the client holds a resume token", summarize(state))

    published.burst("live", 6)
    state = browser.wait(has_all(published), "live events")
    check_received(label, state, published, "live", sse=False)
    browser_publish(label, server, browser, published, "orders/b1", {"n": 1}, "publish from the browser")

    restart_cycle(label, server, browser, published, how="SIGKILL", sse=False)
    browser_publish(label, server, browser, published, "orders/b1", {"n": 2},
                    "publish from the browser after SIGKILL + restart")
    restart_cycle(label, server, browser, published, how="SIGTERM", sse=False)

    state = browser.state() or {}
    checks.check(state.get("opens", 0) >= 3, f"{label}: EventLogSocket really reconnected (opens = "
                                             f"{state.get('opens')} >= 3)", summarize(state))
    check_received(label, state, published, "in the end", sse=False)
    history = server.history(SELECTOR)
    checks.equal([e["id"] for e in history["events"]], published.ids,
                 f"{label}: HTTP history of orders/* has the same ids")
    checks.check(not [c for c in state.get("controls", []) if c.get("type") in ("gap", "reset", "error")],
                 f"{label}: no gap, reset or error along the way", state.get("controls"))
    browser.report_console()
    browser.close()
    server.close()


# --------------------------------------------------------------------------------------------
# 3) The live view at `/`: every type, in both modes, as text, without horizontal scrolling

# The rows of the view as the reader sees them: events (class "event") and control lines.
ROWS_JS = """
const text = (row, selector) => { const n = row.querySelector(selector); return n ? n.textContent : null; };
return [...document.querySelectorAll("#events > li")].map((row) => row.classList.contains("event")
  ? {kind: "event", dataId: row.dataset.id, id: text(row, ".id"), time: text(row, ".time"),
     datetime: row.querySelector(".time") ? row.querySelector(".time").getAttribute("datetime") : null,
     topic: text(row, ".topic"), key: text(row, ".key"), type: text(row, ".type"), data: text(row, ".data")}
  : {kind: row.className, text: row.textContent, cells: row.querySelectorAll("*").length});
"""

LAYOUT_JS = """
const root = document.documentElement;
return {scrollWidth: root.scrollWidth, clientWidth: root.clientWidth, innerWidth: window.innerWidth,
        position: document.getElementById("position").textContent,
        markup: document.querySelectorAll("#events img, #events script, #events i, #events b").length,
        pwned: window.__pwned === undefined ? null : window.__pwned};
"""

XSS_DATA = '<img src=x onerror="window.__pwned=1">'
XSS_TYPE = "<i>typed</i>"
XSS_KEY = "<script>window.__pwned=2</script>"
LONG_DATA = "A" * 5000  # no break opportunity in 5000 characters
LONG_TOPIC = "orders/" + "t" * 240
LONG_TYPE = "x" * 120
SHOWN_DATA_LIMIT = 4000  # the view shortens longer data to this many characters and an ellipsis


def shown_data(data: Any) -> str:
    """The text the view shows for an event's data: strings as they are, other JSON compact, null as `tombstone`."""
    if data is None:
        return "tombstone"
    # Non-string data is stored in canonical form (keys sorted, no insignificant whitespace).
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"), sort_keys=True,
                                                         ensure_ascii=False)
    return text[:SHOWN_DATA_LIMIT] + "\u2026" if len(text) > SHOWN_DATA_LIMIT else text


def view_events(published: Published) -> None:
    """Events of several types, topics and shapes; one outside the selector that must never show."""
    published.add("orders/1", {"item": "book", "qty": 2}, type="created")
    published.add("orders/2", {"total": 1250}, type="paid")
    published.noise({"outside": "payments/1 is not under orders/*"})
    published.add("orders/1", {"carrier": "ups"}, type="shipped", key="order-1")
    published.add("orders/3", "plain text\nsecond line")  # type message, text data with a line break
    published.add("orders/xss", XSS_DATA, type=XSS_TYPE, key=XSS_KEY)
    published.add("orders/3", None, type="deleted", key="order-3")  # a tombstone
    published.add(LONG_TOPIC, LONG_DATA, type=LONG_TYPE)


def check_view(label: str, browser: Browser, published: Published, outside: list, *, sse: bool,
               what: str, connections: int) -> list:
    """The rows of the page: each published event once, in order, with exactly its id, topic, key, type,
    time and data; control lines (connected, caught up) between them, never as event rows."""
    rows = browser.js(ROWS_JS) or []
    events = [r for r in rows if r["kind"] == "event"]
    got = [(r["id"], r["dataId"], r["topic"], r["key"], r["type"], r["datetime"], r["time"], r["data"]) for r in events]
    want = [(str(e["id"]), str(e["id"]), e["topic"], None if e.get("key") is None else f"key {e['key']}",
             e.get("type", "message"), e["time"], e["time"][11:23], shown_data(e["data"])) for e in published.events]
    checks.check(got == want, f"{label}: {what}: each event is one row with its exact id, topic, key, type, time and "
                              f"data, in id order ({len(want)} rows)",
                 next(((g, w) for g, w in zip(got, want) if g != w), (len(got), len(want))))
    shown_ids = [int(r["id"]) for r in events if (r["id"] or "").isdigit()]
    checks.check(not set(outside) & set(shown_ids) and not set(outside) & set(received_ids(browser.state() or {})),
                 f"{label}: {what}: events outside orders/* ({outside}) are not shown", shown_ids)
    state = browser.state() or {}
    got_state = [(r.get("id"), r.get("topic"), r.get("type"), r.get("key"), r.get("time"), r.get("data"))
                 for r in state.get("received", [])]
    want_state = [(e["id"], e["topic"], e.get("type", "message"), e.get("key"), e["time"], e["data"])
                  for e in published.events]
    checks.check(got_state == want_state, f"{label}: {what}: window.eventlog.received has every event as published",
                 next(((g, w) for g, w in zip(got_state, want_state) if g != w), (len(got_state), len(want_state))))
    controls = [r for r in rows if r["kind"] != "event"]
    kinds = [r["kind"] for r in controls]
    checks.equal(kinds, ["control open", "control caughtup"] * connections,
                 f"{label}: {what}: the control lines are 'connected' and 'caught up' once per connection")
    checks.check(all(r["cells"] == 0 for r in controls),
                 f"{label}: {what}: control lines are plain text lines, not event rows", controls)
    open_name, caught_name = ("eventlog.open", "eventlog.caughtup") if sse else ("subscribed", "caughtup")
    opens, caught = controls_of(state, open_name), controls_of(state, caught_name)
    want_text = []
    for o, c in zip(opens, caught):
        want_text += [f"connected \u00b7 from {o['from']} \u00b7 head {o['head']} \u00b7 earliest {o['earliest']} "
                      f"\u00b7 epoch {o['epoch']}", f"caught up at {c['head']} \u00b7 live from here"]
    checks.equal([r["text"] for r in controls], want_text,
                 f"{label}: {what}: the control lines say where the stream started and where it caught up")
    return rows


def check_layout(label: str, browser: Browser, what: str, *, sse: bool) -> None:
    layout = browser.js(LAYOUT_JS) or {}
    checks.check(layout.get("scrollWidth", 10**6) <= layout.get("clientWidth", -1),
                 f"{label}: {what}: no horizontal scrolling (scrollWidth {layout.get('scrollWidth')} <= "
                 f"clientWidth {layout.get('clientWidth')})", layout)
    if sse:
        last = (browser.state() or {}).get("received", [{}])[-1].get("id")
        checks.equal(layout.get("position"), f"last id {last}", f"{label}: {what}: the header shows the last id")
    else:
        token = browser.js("return window.eventlog.socket.resumeToken")
        checks.equal(layout.get("position"), f"resume {token}", f"{label}: {what}: the header shows the resume token "
                                                                f"({len(token or '')} characters)")


def check_inert(label: str, browser: Browser, what: str) -> None:
    layout = browser.js(LAYOUT_JS) or {}
    checks.equal((layout.get("markup"), layout.get("pwned")), (0, None),
                 f"{label}: {what}: markup in data, type and key is shown as text (no element made, no handler ran)")


def screenshot(browser: Browser, name: str) -> None:
    """Saves a screenshot into $CONFORMANCE_SCREENSHOTS (when set), for a person to look at."""
    folder = os.environ.get("CONFORMANCE_SCREENSHOTS")
    if folder:
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"{name}.png")
        browser.driver.save_screenshot(path)
        print(f"# screenshot: {path}", flush=True)


def check_reset_and_error(label: str, server: Server, browser: Browser, *, sse: bool) -> None:
    """A start beyond the head is a `reset` line, then live events; a bad selector is an `error` line."""
    mode = "sse" if sse else "ws"
    health = server.health()
    ahead = health["head"] + 50
    browser.open(server.url(f"/?topic=orders/*&transport={mode}&from={ahead}"))
    reset_name, caught_name = ("eventlog.reset", "eventlog.caughtup") if sse else ("reset", "caughtup")
    state = browser.wait(lambda s: controls_of(s, caught_name), f"{caught_name} after from={ahead}")
    published = Published(server)
    published.add("orders/5", {"after": "reset"}, type="created")
    state = browser.wait(has_all(published), "a live event after the reset")
    rows = browser.js(ROWS_JS) or []
    checks.equal([(r["kind"], r.get("id")) for r in rows],
                 [("control open", None), ("control reset", None), ("control caughtup", None),
                  ("event", str(published.ids[0]))],
                 f"{label}: from={ahead} (beyond the head): 'connected', 'reset', 'caught up' lines, "
                 f"then the live event")
    reset = controls_of(state, reset_name)
    checks.equal(reset, [{**({"type": "reset"} if not sse else {}), "requested": ahead, "head": health["head"],
                          "epoch": health["epoch"]}], f"{label}: the reset as the server sent it")
    checks.equal(rows[1]["text"] if len(rows) > 1 else None,
                 f"reset: position {ahead} is not in this log (head {health['head']}, epoch {health['epoch']}); "
                 f"continuing live", f"{label}: the reset line says what happened")
    screenshot(browser, f"view-{mode}-reset")
    browser.report_console()

    browser.open(server.url(f"/?topic=orders//x&transport={mode}"))
    state = browser.wait(lambda s: controls_of(s, "error"), "an error line for a bad selector")
    rows = browser.js(ROWS_JS) or []
    checks.check([r["kind"] for r in rows] == ["control error"]
                 and rows[0]["text"].startswith("error invalid_selector: "),
                 f"{label}: a bad selector is one 'error invalid_selector: ...' line", rows)
    if sse:
        time.sleep(SSE_RETRY_MS / 1000 * 3)  # a reader that retried would have added more lines by now
        state = browser.state() or {}
        checks.equal((state.get("status"), len(state.get("controls", []))), ("closed", 1),
                     f"{label}: the reader gives up on a 400 (status 'closed', no retries)")
    screenshot(browser, f"view-{mode}-error")
    browser.console()  # the browser logs the 400 itself; that is the point here


def scenario_view(sse: bool) -> None:
    label = "view sse" if sse else "view ws"
    mode = "sse" if sse else "ws"
    server = Server(BINARY, name=f"browser-view-{mode}", args=["--sse-retry", str(SSE_RETRY_MS)]).start()
    published = Published(server)
    view_events(published)
    outside = [e["id"] for e in server.history("payments/*")["events"]]
    browser = Browser(f"chromium {label}")
    browser.open(server.url(f"/?topic=orders/*&transport={mode}&from=earliest"))
    caught_name = "eventlog.caughtup" if sse else "caughtup"
    state = browser.wait(lambda s: has_all(published)(s) and controls_of(s, caught_name), "replay of the history")
    checks.check(True, f"{label}: the view replays the history ({len(published.ids)} events of "
                       f"{len({e['type'] for e in published.events})} types)")
    check_view(label, browser, published, outside, sse=sse, what="replay", connections=1)
    check_inert(label, browser, "replay")

    # Live, while the page is open.
    published.add("orders/2", {"reason": "damaged"}, type="refunded")
    outside.append(published.noise({"outside": "live"}))
    published.add("orders/4", ["a", "b"], type="created", key="order-4")
    browser.wait(has_all(published), "live events")
    check_view(label, browser, published, outside, sse=sse, what="live", connections=1)
    check_layout(label, browser, "1024 px wide", sse=sse)
    screenshot(browser, f"view-{mode}")
    browser.js("window.scrollTo(0, 0)")
    screenshot(browser, f"view-{mode}-top")
    browser.driver.set_window_size(420, 800)
    browser.wait(lambda s: browser.js("return window.innerWidth") <= 420, "the narrow window", timeout=10)
    check_layout(label, browser, "420 px wide", sse=sse)
    screenshot(browser, f"view-{mode}-narrow")
    browser.driver.set_window_size(1024, 768)

    if sse:
        # The view's own SSE reader: reconnect after the server's `retry:` with Last-Event-ID, mid-stream.
        restart_cycle(label, server, browser, published, how="SIGKILL", sse=True)
        outside = [e["id"] for e in server.history("payments/*")["events"]]
        check_view(label, browser, published, outside, sse=sse, what="after SIGKILL + restart", connections=2)
    check_inert(label, browser, "in the end")
    browser.report_console()
    check_reset_and_error(label, server, browser, sse=sse)
    browser.close()
    server.close()


# --------------------------------------------------------------------------------------------
# 4) - 6) Access control: eventlog.js with a token (renewal, expiry) and the live view with the cookie

JWT_LEEWAY = "0s"
OTHER_TOPIC = "orders/2"  # published to, never subscribed: must never reach the page
AUTH_TOPIC = "orders/1"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def mint_jwt(secret: bytes, subject: str, exp: int, *, subscribe: "list | tuple" = (),
             publish: "list | tuple" = ()) -> str:
    """An HS256 JWT as the auth spec describes it, made with the standard library only."""
    header = {"alg": "HS256", "typ": "JWT"}
    payload = {"sub": subject, "exp": int(exp), "eventlog": {"subscribe": list(subscribe), "publish": list(publish)}}
    signing_input = ".".join(_b64url(json.dumps(part, separators=(",", ":")).encode("utf-8"))
                             for part in (header, payload))
    signature = hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{_b64url(signature)}"


class AuthServer:
    """An eventlogd with HS256 auth on (`--jwt-secret-file`, `--jwt-leeway 0s`) and a publisher token."""

    def __init__(self, name: str) -> None:
        # 40 printable bytes: no trailing newline for the server to strip.
        self.secret = secrets.token_hex(20).encode("ascii")
        self.server = Server(BINARY, name=name)
        secret_file = os.path.join(self.server.tmp, "jwt-secret")  # removed with the server's temp directory
        with open(secret_file, "wb") as handle:
            handle.write(self.secret)
        self.server.args += ["--jwt-secret-file", secret_file, "--jwt-leeway", JWT_LEEWAY]
        self.server.start()
        self.publisher = self.mint("conformance-publisher", 3600, publish=["orders/*"], subscribe=["orders/*"])

    def mint(self, subject: str, ttl: float, **grants: Any) -> str:
        return mint_jwt(self.secret, subject, int(time.time() + ttl), **grants)

    def mint_at(self, subject: str, exp: int, **grants: Any) -> str:
        return mint_jwt(self.secret, subject, exp, **grants)

    def publish(self, topic: str, data: Any, *, client: Optional[httpx.Client] = None,
                token: Optional[str] = None, expect_status: int = 201) -> httpx.Response:
        """POST /v1/events with `Authorization: Bearer` (lib.Server.publish sends no credential)."""
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        response = (client or self.server.http).post(self.server.url("/v1/events"),
                                                     content=json.dumps({"topic": topic, "data": data}),
                                                     headers=headers)
        if response.status_code != expect_status:
            raise ServerError(f"publish to {topic}: expected HTTP {expect_status}, got {response.status_code}: "
                              f"{response.text[:300]}")
        return response


class AuthPublished(Published):
    """Published, through an AuthServer with its publisher token; events to OTHER_TOPIC are kept apart."""

    def __init__(self, auth: AuthServer) -> None:
        super().__init__(auth.server)
        self.auth = auth
        self.others: list = []  # ids published to OTHER_TOPIC

    def add(self, topic: str, data: Any, *, type: Optional[str] = None,  # noqa: A002
            key: Optional[str] = None, client: Optional[httpx.Client] = None) -> int:
        if type is not None or key is not None:
            raise ValueError("AuthPublished publishes data only")
        answer = self.auth.publish(topic, data, client=client, token=self.auth.publisher).json()
        self.events.append({"id": int(answer["id"]), "topic": topic, "type": "message", "key": None,
                            "time": answer["time"], "data": data})
        return int(answer["id"])

    def other(self, data: Any, client: Optional[httpx.Client] = None) -> int:
        answer = self.auth.publish(OTHER_TOPIC, data, client=client, token=self.auth.publisher).json()
        self.others.append(int(answer["id"]))
        return int(answer["id"])


def rfc3339_seconds(text: Any) -> Optional[float]:
    """An RFC 3339 time as Unix seconds (None when it is not one)."""
    if not isinstance(text, str):
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


# Loads /v1/eventlog.js into the current (eventlogd-origin) document. Async: calls back when loaded.
LOAD_CLIENT_JS = """
const done = arguments[arguments.length - 1];
if (typeof EventLogSocket === "function") { done("already"); return; }
const script = document.createElement("script");
script.src = "/v1/eventlog.js";
script.onload = () => done(typeof EventLogSocket);
script.onerror = () => done("load error");
document.head.appendChild(script);
"""

# window.eventlog as the live view keeps it (received, controls, status, opens: Browser.wait and the helpers
# above read it), for an EventLogSocket with `token:`; every callback is a control entry with the browser's
# time. `wire` sees below eventlog.js: each WebSocket it makes, the ops it sends (with the token), the
# messages it gets and each close with its code. arguments: url, topics, "async" | "sync".
AUTH_SOCKET_JS = """
const [url, topics, mode] = arguments;
const state = window.eventlog = {received: [], controls: [], status: "connecting", opens: 0};
const wire = state.wire = {sockets: 0, opened: [], sent: [], messages: [], closes: [], tokenCalls: []};
const Native = window.WebSocket;
window.WebSocket = class extends Native {
  constructor(...args) {
    super(...args);
    const n = this.socketNumber = ++wire.sockets;
    wire.opened.push(Date.now());
    this.addEventListener("message", (m) => {
      let v; try { v = JSON.parse(m.data); } catch (e) { v = {type: "unparsable"}; }
      wire.messages.push({socket: n, at: Date.now(), type: v.type, code: v.code, ref: v.ref, id: v.id,
                          subject: v.subject, expiresAt: v.expiresAt});
    });
    this.addEventListener("close", (c) => wire.closes.push({socket: n, at: Date.now(), code: c.code, reason: c.reason}));
  }
  send(data) {
    let v; try { v = JSON.parse(data); } catch (e) { v = {}; }
    wire.sent.push({socket: this.socketNumber, at: Date.now(), op: v.op, token: v.token, ref: v.ref});
    super.send(data);
  }
};
const note = (type, data) => state.controls.push({type, data, at: Date.now()});
const token = mode === "async"
  ? async () => { wire.tokenCalls.push(Date.now()); await new Promise((r) => setTimeout(r, 20)); return window.nextToken; }
  : () => { wire.tokenCalls.push(Date.now()); return window.nextToken; };
state.socket = new EventLogSocket(url, {
  topics, from: "earliest", token,
  onEvent: (e) => state.received.push({id: e.id, topic: e.topic, type: e.event, data: e.data, at: Date.now(),
                                        socket: state.socket && state.socket.ws ? state.socket.ws.socketNumber : null}),
  onSubscribed: (m) => { state.opens++; note("subscribed", m); },
  onCaughtUp: (m) => note("caughtup", m),
  onAuthenticated: (info) => note("authenticated", info),
  onError: (err) => note("error", err),
  onGap: (m) => note("gap", m),
  onReset: (m) => note("reset", m),
  onStatus: (s) => { state.status = s; note("status", s); },
});
return true;
"""


def wire_of(browser: Browser) -> dict:
    return browser.js("return window.eventlog ? window.eventlog.wire : null") or {}


def control_entries(state: dict, name: str) -> list:
    """The control entries (with their browser time `at`, ms) of one kind."""
    return [c for c in state.get("controls", []) if c.get("type") == name]


def auth_socket_page(label: str, auth: AuthServer, browser: Browser, first_token: str, mode: str) -> None:
    """A document on eventlogd's origin with /v1/eventlog.js loaded, window.nextToken set and an
    EventLogSocket on orders/1 with `token: () => window.nextToken`."""
    browser.open(auth.server.url("/healthz"))
    checks.equal(browser.js_async(LOAD_CLIENT_JS), "function",
                 f"{label}: <script src=\"/v1/eventlog.js\"> loads into a page on eventlogd's origin")
    browser.js("window.nextToken = arguments[0]", first_token)
    browser.js(AUTH_SOCKET_JS, f"ws://{HOST}:{auth.server.port}/v1/ws", [AUTH_TOPIC], mode)


def scenario_auth_renewal() -> None:
    """4) A short-lived token renewed on the open socket after the server's token_expired warning."""
    label = "auth renewal"
    auth = AuthServer("browser-auth-renewal")
    server = auth.server
    refused = auth.publish(AUTH_TOPIC, {"anonymous": True}, expect_status=401)
    checks.equal(refused.json().get("error", {}).get("code"), "authentication_required",
                 f"{label}: auth is on (a publish without a credential is 401 authentication_required)")
    published = AuthPublished(auth)
    for n in range(3):
        published.add(AUTH_TOPIC, {"phase": "history", "n": n})
        published.other({"phase": "history", "n": n})
    browser = Browser(f"chromium {label}")
    # Minted only now that the browser is up: the first token lives 5 s (4 to 5 s: exp is whole seconds).
    exp1 = int(time.time()) + 5
    token1 = auth.mint_at("browser-renew", exp1, subscribe=[AUTH_TOPIC])
    auth_socket_page(label, auth, browser, token1, "async")

    # Live events all along, across the warning and the first token's exp (each ~0.2 s, for ~8 s).
    failure: dict = {}

    def publisher() -> None:
        with httpx.Client(timeout=httpx.Timeout(10.0), trust_env=False) as client:
            try:
                for n in range(40):
                    published.add(AUTH_TOPIC, {"phase": "live", "n": n}, client=client)
                    if n % 4 == 0:
                        published.other({"phase": "live", "n": n}, client=client)
                    time.sleep(0.2)
            except Exception as error:  # noqa: BLE001 - reported below
                failure["error"] = f"{type(error).__name__}: {error}"

    thread = threading.Thread(target=publisher, name="auth-publisher", daemon=True)
    thread.start()
    state = browser.wait(lambda s: control_entries(s, "authenticated"), "the first authenticated", timeout=max(1.0, exp1 - time.time()))
    exp2 = int(time.time()) + 120
    token2 = auth.mint_at("browser-renew", exp2, subscribe=[AUTH_TOPIC])
    browser.js("window.nextToken = arguments[0]", token2)
    renewed_set_at = time.time()
    checks.check(renewed_set_at < exp1, f"{label}: window.nextToken holds a fresh token before the first one "
                                        f"expires ({exp1 - renewed_set_at:.1f} s left)")

    state = browser.wait(lambda s: len(control_entries(s, "authenticated")) >= 2, "the renewal's authenticated",
                         timeout=max(1.0, exp1 - time.time() + 5))
    thread.join(WAIT)
    checks.check(not thread.is_alive() and not failure, f"{label}: 40 events to {AUTH_TOPIC} and 10 to {OTHER_TOPIC} "
                                                       f"published over ~8 s", failure or "publisher still running")
    state = browser.wait(has_all(published), "every orders/1 event")
    time.sleep(1.0)  # a duplicate or an orders/2 event would arrive now
    state = browser.state() or state
    wire = wire_of(browser)
    browser_now = browser.js("return Date.now()") / 1000

    auths = [c["data"] for c in control_entries(state, "authenticated")]
    checks.equal([(a.get("subject"), rfc3339_seconds(a.get("expiresAt"))) for a in auths],
                 [("browser-renew", float(exp1)), ("browser-renew", float(exp2))],
                 f"{label}: onAuthenticated twice: the auth at connect (exp of the first token) and the renewal "
                 f"(exp of the second)")
    checks.equal(len(wire.get("tokenCalls", [])), 2,
                 f"{label}: the token function was called twice (at connect and at the warning)")
    warnings = [m for m in wire.get("messages", []) if m.get("type") == "error"]
    checks.check(len(warnings) == 1 and warnings[0].get("code") == "token_expired" and warnings[0].get("ref") is None
                 and warnings[0]["socket"] == 1
                 and control_entries(state, "authenticated")[0]["at"] < warnings[0]["at"] < exp1 * 1000,
                 f"{label}: the server's one warning {{type: error, code: token_expired}} (no ref) came after "
                 f"the first authenticated and before exp", warnings)
    sent = [(s.get("socket"), s.get("op"), s.get("token")) for s in wire.get("sent", [])]
    checks.equal(sent, [(1, "auth", token1), (1, "subscribe", None), (1, "auth", token2)],
                 f"{label}: on one socket: auth (first token), subscribe, then after the warning auth (fresh token)")
    renewal_sent = [s["at"] for s in wire.get("sent", []) if s.get("token") == token2]
    checks.check(renewal_sent and warnings and warnings[0]["at"] <= renewal_sent[0] < exp1 * 1000,
                 f"{label}: the renewal auth op went out after the warning and before exp",
                 (renewal_sent, warnings, exp1 * 1000))
    checks.check(not control_entries(state, "error"), f"{label}: onError was not called (the warning is handled "
                                                      f"by renewing)", control_entries(state, "error"))
    checks.equal([c["data"] for c in control_entries(state, "status")], ["open"],
                 f"{label}: onStatus said 'open' once and nothing else (never reconnecting or closed)")
    checks.equal((wire.get("sockets"), wire.get("closes"), state.get("wsState")), (1, [], 1),
                 f"{label}: one WebSocket, never closed, still OPEN {browser_now - exp1:.1f} s after the first exp")
    check_received(label, state, published, "across the renewal", sse=False)
    late = [r["id"] for r in state.get("received", []) if r.get("at", 0) > exp1 * 1000 + 500]
    checks.check(len(late) >= 5, f"{label}: {len(late)} events arrived on the same socket more than 0.5 s after "
                                 f"the first token's exp", summarize(state))
    leaked = sorted(set(published.others) & set(received_ids(state)))
    checks.check(not leaked and all(r.get("topic") == AUTH_TOPIC for r in state.get("received", [])),
                 f"{label}: none of the {len(published.others)} {OTHER_TOPIC} events arrived", leaked)
    checks.equal(len(control_entries(state, "subscribed")), 1, f"{label}: subscribed once")
    browser.report_console()
    browser.close()
    server.close()


def scenario_auth_expiry() -> None:
    """5) No renewal: closed with 1008 at exp, the reconnect's auth op is refused with token_expired,
    nothing is delivered meanwhile; a fresh token later resumes without loss."""
    label = "auth expiry"
    auth = AuthServer("browser-auth-expiry")
    server = auth.server
    published = AuthPublished(auth)
    for n in range(3):
        published.add(AUTH_TOPIC, {"phase": "history", "n": n})
    published.other({"phase": "history"})
    browser = Browser(f"chromium {label}")
    exp = int(time.time()) + 4
    token = auth.mint_at("browser-expiry", exp, subscribe=[AUTH_TOPIC])
    auth_socket_page(label, auth, browser, token, "sync")
    browser.wait(lambda s: control_entries(s, "caughtup"), "caughtup", timeout=max(1.0, exp - time.time()))
    # Live while the token is good (up to 1 s before exp), then after exp.
    n = 0
    while time.time() < exp - 1.0:
        published.add(AUTH_TOPIC, {"phase": "valid", "n": n})
        published.other({"phase": "valid", "n": n})
        n += 1
        time.sleep(0.25)
    before_exp = list(published.ids)
    checks.check(n >= 1, f"{label}: {n} live events published while the token was valid")
    state = browser.wait(has_all(published), "the live events before exp", timeout=max(1.0, exp - time.time() + 2))
    while time.time() < exp + 0.3:
        time.sleep(0.05)
    after_exp: list = []
    # Keep publishing after exp while the client reconnects with the expired token (~5 s).
    for n in range(10):
        after_exp.append(published.add(AUTH_TOPIC, {"phase": "expired", "n": n}))
        published.other({"phase": "expired", "n": n})
        time.sleep(0.5)
    state = browser.state() or {}
    wire = wire_of(browser)

    closes = wire.get("closes", [])
    first = closes[0] if closes else {}
    checks.check(first.get("socket") == 1 and first.get("code") == 1008
                 and exp * 1000 - 250 <= first.get("at", 0) <= exp * 1000 + 2000,
                 f"{label}: the first socket was closed by the server with 1008 at exp "
                 f"({(first.get('at', 0) - exp * 1000) / 1000:+.2f} s)", first)
    # PROTOCOL.md: the warning is "sent once" before exp. window.nextToken still holds the same token, so there
    # is nothing to renew with: no second warning, no second authenticated on the first socket.
    on_first = [(m.get("type"), m.get("code")) for m in wire.get("messages", [])
                if m.get("socket") == 1 and m.get("type") in ("error", "authenticated")]
    auth_ops = [s for s in wire.get("sent", []) if s.get("socket") == 1 and s.get("op") == "auth"]
    checks.check(on_first == [("authenticated", None), ("error", "token_expired")],
                 f"{label}: the first socket got one authenticated and one token_expired warning before exp",
                 f"{on_first.count(('error', 'token_expired'))} warnings and {on_first.count(('authenticated', None))} "
                 f"authenticated: eventlog.js sent the unchanged token in {len(auth_ops)} auth ops at "
                 f"{[s['at'] - exp * 1000 for s in auth_ops]} ms from exp; each restarts the server's expiry watch")
    refusals = [m for m in wire.get("messages", []) if m.get("socket", 0) >= 2 and m.get("type") == "error"]
    checks.check(wire.get("sockets", 0) >= 2 and refusals and all(m.get("code") == "token_expired" for m in refusals),
                 f"{label}: eventlog.js reconnected ({wire.get('sockets')} sockets) and the server refused its auth op "
                 f"with token_expired", (refusals[:3], wire.get("closes", [])[:3]))
    refused_sockets = sorted({m["socket"] for m in refusals})
    closed_1008 = sorted({c["socket"] for c in closes if c.get("code") == 1008})
    checks.check(refused_sockets and set(refused_sockets) <= set(closed_1008),
                 f"{label}: each refused socket was closed with 1008", (refused_sockets, closes[:5]))
    errors = [c["data"] for c in control_entries(state, "error")]
    checks.check(any(e.get("code") == "token_expired" for e in errors),
                 f"{label}: onError reported the refusal with code 'token_expired'",
                 f"onError calls: {errors}; auth ops sent on each refused socket: "
                 f"{[sum(1 for s in wire.get('sent', []) if s.get('socket') == n and s.get('op') == 'auth') for n in refused_sockets][:10]}"
                 f" (the refusal, without a ref, was taken for the expiry warning)")
    statuses = [c["data"] for c in control_entries(state, "status")]
    checks.check(statuses[:2] == ["open", "reconnecting"], f"{label}: onStatus: 'open', then 'reconnecting' at the "
                                                          f"close", statuses[:8])
    checks.equal(received_ids(state), before_exp, f"{label}: exactly the events published before exp arrived, "
                                                  f"each once, in order; none of the {len(after_exp)} published after")
    late = [r["id"] for r in state.get("received", []) if r.get("at", 0) >= exp * 1000]
    checks.equal(late, [], f"{label}: nothing was delivered after exp")
    # After the refusal the client keeps reconnecting (a fresh token may come), with backoff, not in a loop:
    # with a delay doubling from 250 ms (half of it jitter) at most 6 sockets can open in the 5 s after the close.
    close_at = first.get("at", 0)
    opened = [at for at in wire.get("opened", []) if close_at <= at <= close_at + 5000]
    checks.check(close_at and len(opened) <= 6,
                 f"{label}: the reconnects after the refused auth ops back off ({len(opened)} WebSockets opened "
                 f"in the 5 s after the close; at most 6 with a backoff doubling from 250 ms)",
                 f"gaps between reconnects (ms): {[b - a for a, b in zip(opened, opened[1:])][:15]}")

    # A fresh token: the next reconnect authenticates and resumes where the first socket stopped.
    fresh_exp = int(time.time()) + 120
    browser.js("window.nextToken = arguments[0]", auth.mint_at("browser-expiry", fresh_exp, subscribe=[AUTH_TOPIC]))
    state = browser.wait(has_all(published), "the events published after exp, once a fresh token is there",
                         timeout=WAIT)
    time.sleep(0.5)
    state = browser.state() or state
    check_received(label, state, published, "after a fresh token", sse=False)
    subscribed = [c["data"] for c in control_entries(state, "subscribed")]
    checks.equal(subscribed[-1].get("from") if subscribed else None, before_exp[-1],
                 f"{label}: with a fresh token the reconnect resumed from the last id it had ({before_exp[-1]})")
    auths = [c["data"] for c in control_entries(state, "authenticated")]
    checks.equal(rfc3339_seconds(auths[-1].get("expiresAt")) if auths else None, float(fresh_exp),
                 f"{label}: onAuthenticated with the fresh token's exp")
    checks.check(not set(published.others) & set(received_ids(state)),
                 f"{label}: none of the {OTHER_TOPIC} events arrived", received_ids(state))
    browser.js("window.eventlog.socket.close()")
    browser.console()  # the refused connections are logged by the browser; that is the point here
    browser.close()
    server.close()


def scenario_auth_view() -> None:
    """6) The live view on eventlogd's origin authenticates with the eventlog_token cookie, SSE and WebSocket;
    without the cookie it says authentication_required."""
    label = "auth view"
    auth = AuthServer("browser-auth-view")
    server = auth.server
    published = AuthPublished(auth)
    for n in range(3):
        published.add(AUTH_TOPIC, {"phase": "before", "n": n})
        published.other({"phase": "before", "n": n})
    viewer = auth.mint("browser-viewer", 600, subscribe=[AUTH_TOPIC])
    browser = Browser(f"chromium {label}")
    browser.open(server.url("/healthz"))
    browser.driver.add_cookie({"name": "eventlog_token", "value": viewer, "path": "/", "httpOnly": True})
    checks.check("eventlog_token" not in (browser.js("return document.cookie") or ""),
                 f"{label}: the eventlog_token cookie is httpOnly (not in document.cookie)")

    for mode in ("sse", "ws"):
        what = f"cookie, {mode}"
        open_name, caught_name = ("eventlog.open", "eventlog.caughtup") if mode == "sse" else ("subscribed", "caughtup")
        browser.open(server.url(f"/?topic={AUTH_TOPIC}" + ("&transport=ws" if mode == "ws" else "")))
        state = browser.wait(lambda s: has_all(published)(s) and controls_of(s, caught_name), f"{what}: the replay")
        published.add(AUTH_TOPIC, {"phase": f"live {mode}", "n": 0})
        published.other({"phase": f"live {mode}"})
        published.add(AUTH_TOPIC, {"phase": f"live {mode}", "n": 1})
        state = browser.wait(has_all(published), f"{what}: live events")
        time.sleep(0.5)  # a duplicate or an orders/2 event would arrive now
        state = browser.state() or state
        checks.equal(received_ids(state), published.ids,
                     f"{label}: {what}: window.eventlog.received is exactly the {len(published.ids)} {AUTH_TOPIC} "
                     f"events (history and live), in order")
        checks.equal(([c.get("type") for c in state.get("controls", [])], state.get("status")),
                     ([open_name, caught_name], "open"), f"{label}: {what}: connected, caught up, no error, open")
        checks.check(not set(published.others) & set(received_ids(state)),
                     f"{label}: {what}: no {OTHER_TOPIC} event", received_ids(state))
        # The cookie's grants are enforced, not only its presence: orders/* is not covered by orders/1.
        browser.open(server.url("/?topic=orders/*" + ("&transport=ws" if mode == "ws" else "")))
        state = browser.wait(lambda s: controls_of(s, "error"), f"{what}: an error for orders/*")
        errors = controls_of(state, "error")
        checks.equal([(e.get("code"), e.get("selector")) for e in errors], [("forbidden_topic", "orders/*")],
                     f"{label}: {what}: /?topic=orders/* is refused: one error forbidden_topic naming orders/*")
        checks.equal(received_ids(state), [], f"{label}: {what}: nothing shown for orders/*")
        browser.console()  # the browser logs the refused request itself

    browser.driver.delete_cookie("eventlog_token")
    checks.equal(browser.driver.get_cookie("eventlog_token"), None, f"{label}: the cookie is deleted")
    for mode in ("sse", "ws"):
        what = f"no cookie, {mode}"
        browser.open(server.url(f"/?topic={AUTH_TOPIC}" + ("&transport=ws" if mode == "ws" else "")))
        state = browser.wait(lambda s: controls_of(s, "error"), f"{what}: an error line")
        published.add(AUTH_TOPIC, {"phase": f"no cookie {mode}"})
        time.sleep(1.5)  # a retry, or an event, would show by now
        state = browser.state() or state
        rows = browser.js(ROWS_JS) or []
        errors = controls_of(state, "error")
        if mode == "sse":
            checks.equal(([c.get("type") for c in state.get("controls", [])], [e.get("code") for e in errors],
                          state.get("status")), (["error"], ["authentication_required"], "closed"),
                         f"{label}: {what}: one error control authentication_required, status 'closed' (no retries)")
        else:
            checks.equal(([c.get("type") for c in state.get("controls", [])],
                          [(e.get("code"), e.get("selector")) for e in errors]),
                         (["error"], [("authentication_required", AUTH_TOPIC)]),
                         f"{label}: {what}: the anonymous socket's subscribe is refused: one error control "
                         f"authentication_required naming {AUTH_TOPIC}")
        checks.check([r["kind"] for r in rows] == ["control error"]
                     and rows[0]["text"].startswith("error authentication_required: "),
                     f"{label}: {what}: the page shows one line 'error authentication_required: ...'", rows)
        checks.equal(received_ids(state), [], f"{label}: {what}: no event shown")
        browser.console()
    browser.close()
    server.close()


# --------------------------------------------------------------------------------------------


def main(argv: list) -> int:
    global BINARY
    install_deadline(int(os.environ.get("CONFORMANCE_DEADLINE", "300")))
    started = time.monotonic()
    try:
        BINARY = eventlogd_path(argv[1] if len(argv) > 1 else None)
        print(f"# eventlogd: {BINARY}", flush=True)
        if selenium is None:
            checks.fail("Selenium is importable", SELENIUM_ERROR)
        else:
            print(f"# selenium {selenium.__version__}, httpx {httpx.__version__}", flush=True)
        checks.run_scenario("0) headless Chromium starts; the live view and /v1/eventlog.js load", scenario_smoke)
        checks.run_scenario("1) SSE in the browser: EventSource reconnects after SIGKILL and SIGTERM, "
                            "Last-Event-ID, every id once", scenario_sse)
        checks.run_scenario("2) WebSocket in the browser: EventLogSocket resumes after SIGKILL and SIGTERM, "
                            "publish with ack", scenario_ws)
        checks.run_scenario("3) the live view, SSE: every type, text only, no horizontal scrolling, reconnects "
                            "after SIGKILL", lambda: scenario_view(sse=True))
        checks.run_scenario("3) the live view, WebSocket: every type, text only, no horizontal scrolling",
                            lambda: scenario_view(sse=False))
        checks.run_scenario("4) auth: EventLogSocket with token: () => window.nextToken renews a 5 s token on the "
                            "open socket after the token_expired warning", scenario_auth_renewal)
        checks.run_scenario("5) auth: without renewal, close 1008 at exp, the reconnect's auth op refused "
                            "(token_expired), nothing delivered; a fresh token resumes", scenario_auth_expiry)
        checks.run_scenario("6) auth: the live view with the eventlog_token cookie (SSE and WebSocket), and "
                            "without it", scenario_auth_view)
    except BaseException as error:  # noqa: BLE001 - deadline, missing binary, Ctrl-C: still summarize
        checks.fail(f"run aborted by {type(error).__name__}", str(error))
    finally:
        signal.alarm(0)
    print(f"# browser checks took {time.monotonic() - started:.1f} s", flush=True)
    return checks.summary()


if __name__ == "__main__":
    code = main(sys.argv)
    sys.exit(code)
