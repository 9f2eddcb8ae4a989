#!/usr/bin/env python3
"""Access control (issue 11) with real, independent clients against a real eventlogd.

The wire contract is the auth spec: JWTs (HS256 with --jwt-secret-file, ES256/RS256 with
--jwt-key-file, JWKS by kid), API keys, anonymous grants, `eventlog` rights claim, 401/403 JSON
errors with `WWW-Authenticate`, WebSocket auth ops, expiry and renewal. Tokens are minted here
with PyJWT (and forged by hand where PyJWT refuses to), keys and the TLS certificate made with
`cryptography`. Every server runs with --jwt-leeway 0s, --log-level debug and its log captured.

  A) httpx with a bearer token: publish allowed / refused (403 forbidden_topic + selector), an NDJSON
     batch with one refused line (403 + index, nothing appended), history and last=N allowed and
     refused, /v1/topics filtered to readable topics, /metrics needs admin, /healthz is open, no
     credential -> 401 authentication_required + WWW-Authenticate, API keys (--api-keys), ES256/RS256 tokens;
     an SSE stream ends cleanly (chunked end) at the token's exp and resumes with a fresh token;
     CORS: `*` never with credentials, a listed origin exactly, with Vary and credentials.
  B) Python websockets: anonymous upgrade + `auth` op, subscribe, live events; forbidden subscribe
     and publish (error forbidden_topic + selector, nothing published); bad and expired tokens at
     the upgrade (HTTP 401) and in an auth op (error, then close 1008); a short-lived token gets the
     `token_expired` warning before exp, is renewed, and the socket outlives it with every event
     once, in order; one that is not renewed is closed with 1008 at exp; a renewal whose grants no
     longer cover the subscription stops it.
  C) headless Chromium: the browser's own EventSource with the httpOnly `eventlog_token` cookie;
     eventlogd SIGKILLed mid-stream and restarted on the same port and database; the cookie token
     expires, the server ends the stream at its exp, the page (given a fresh cookie) reconnects
     with Last-Event-ID; every published id exactly once, in order.
  D) hostile: alg none, HS512, algorithm confusion (HS256 keyed with the RSA / EC public key PEM),
     expired, nbf, wrong aud / iss, no exp, tampered payloads, foreign keys, unknown JWKS kid,
     credentials over 8192 bytes (401) and over the 32 KiB header limit (400); a subscriber granted only
     orders/1 reaching for orders/2, orders/*, *, orders/1/*, orders/10 through SSE, WebSocket,
     history, last=N, /v1/topics, and with another user's resume token; query tokens with and
     without --allow-query-token (redacted from the debug log); a cookie from a foreign Origin; a
     connection whose WebSocket upgrade was refused (401/403) still answers its next request or closes.
     Nothing is published by a refused request, and no token text appears in any response body,
     WebSocket message or eventlogd log.
  E) nginx in front (tools/conformance/nginx_sse.conf, filled in): TLS with a self-signed
     certificate, the bearer token forwarded, an SSE event arrives within 1 s of its publish (not
     buffered), a WebSocket works through the proxy.

Usage: python3 tools/conformance/auth.py [path/to/eventlogd]   (or set EVENTLOGD)
Environment: NGINX (the nginx binary; default /usr/sbin/nginx or nginx on PATH), CHROMIUM and
CHROMEDRIVER (see browser.py), CONFORMANCE_DEADLINE bounds the whole script (s).
Prints `ok - ...` / `FAIL - ...` per check and ends with `N passed, M failed`; exits 1 on failure.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import ipaddress
import json
import os
import queue
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import httpx  # noqa: E402
import jwt  # noqa: E402 - PyJWT
import websockets  # noqa: E402
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, rsa  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402
from websockets.exceptions import ConnectionClosed, InvalidStatus  # noqa: E402
from websockets.sync.client import connect as ws_connect  # noqa: E402

import browser as chromium  # noqa: E402 - browser.py's headless Chromium (Browser, the EventSource page script)
from lib import (  # noqa: E402
    HOST,
    Checks,
    HTTPClosed,
    RawHTTP,
    SSEParser,
    Server,
    _die_with_parent,
    all_history,
    eventlogd_path,
    free_port,
    install_deadline,
    raw_exchange,
    register_cleanup,
    unregister_cleanup,
)

ISSUER = "https://shop.example"
AUDIENCE = "eventlog"
CHALLENGE = 'Bearer realm="eventlog", error="invalid_token"'
SSE_RETRY_MS = 300
MAX_CREDENTIAL = 8192
NGINX_TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nginx_sse.conf")

checks = Checks()
BINARY: Optional[str] = None
KEYS: Any = None  # Keys, made in main()

# Everything a client was sent back (HTTP bodies, WebSocket messages) and every credential this script
# presented: no credential may ever be echoed.
RECEIVED: list = []
CREDENTIALS: list = []


# --------------------------------------------------------------------------------------------
# Keys and tokens


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64u_json(value: Any) -> str:
    return b64u(json.dumps(value, separators=(",", ":")).encode("utf-8"))


class Keys:
    """The signing keys, and the public halves (and secret) eventlogd is configured with, in a temp dir."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="eventlog-conformance-auth-keys-")
        self.secret = b64u(os.urandom(48)).encode("ascii")  # 64 bytes of text; the file adds a newline
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.foreign_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.foreign_secret = b64u(os.urandom(48)).encode("ascii")
        self.rsa_public_pem = self.rsa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.ec_public_pem = self.ec.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.secret_file = self._write("hs256.secret", self.secret + b"\n")
        self.rsa_file = self._write("rsa_pub.pem", self.rsa_public_pem)
        self.ec_file = self._write("ec_pub.pem", self.ec_public_pem)
        numbers = self.rsa.public_key().public_numbers()
        jwks = {"keys": [{"kty": "RSA", "kid": "k1", "alg": "RS256", "use": "sig",
                          "n": b64u(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
                          "e": b64u(numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big"))}]}
        self.jwks_file = self._write("jwks.json", json.dumps(jwks).encode("utf-8"))
        self.api_key = b64u(os.urandom(32))
        api_keys = {"keys": [{"name": "orders-backend", "sha256": hashlib.sha256(self.api_key.encode()).hexdigest(),
                              "publish": ["orders/*"], "subscribe": ["orders/*"], "admin": False}]}
        self.api_keys_file = self._write("api-keys.json", json.dumps(api_keys).encode("utf-8"))
        register_cleanup(self)

    def _write(self, name: str, data: bytes) -> str:
        path = os.path.join(self.dir, name)
        with open(path, "wb") as handle:
            handle.write(data)
        return path

    def close(self) -> None:
        pass  # kept for every scenario; removed by remove()

    def remove(self) -> None:
        unregister_cleanup(self)
        shutil.rmtree(self.dir, ignore_errors=True)


class Token(str):
    """A credential as sent; `exp` (Unix seconds) and `sub` when it is a JWT minted here."""

    exp: Optional[float] = None
    sub: Optional[str] = None


def remember(text: str, exp: Optional[float] = None, sub: Optional[str] = None) -> Token:
    token = Token(text)
    token.exp, token.sub = exp, sub
    CREDENTIALS.append(token)
    return token


def claims(sub: str, *, publish: Any = None, subscribe: Any = None, admin: Optional[bool] = None,
           ttl: float = 600, **extra: Any) -> dict:
    """Claims for `sub`: iss, aud, iat, exp = now + ttl (whole seconds) and the `eventlog` rights.
    An `extra` value of None removes that claim."""
    now = int(time.time())
    body: dict = {"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + int(ttl)}
    rights: dict = {}
    if publish is not None:
        rights["publish"] = list(publish)
    if subscribe is not None:
        rights["subscribe"] = list(subscribe)
    if admin is not None:
        rights["admin"] = admin
    body["eventlog"] = rights
    body.update(extra)
    return {name: value for name, value in body.items() if value is not None}


def mint(sub: str, alg: str = "HS256", *, key: Any = None, headers: Optional[dict] = None, **kwargs: Any) -> Token:
    """A JWT signed with PyJWT (the configured key for `alg` unless `key` is given)."""
    payload = claims(sub, **kwargs)
    if key is None:
        key = {"HS256": KEYS.secret, "HS512": KEYS.secret, "RS256": KEYS.rsa, "ES256": KEYS.ec}[alg]
    return remember(jwt.encode(payload, key, algorithm=alg, headers=headers), payload.get("exp"), sub)


def forge_hs256(header: dict, payload: dict, key: bytes) -> Token:
    """A JWT signed by hand with HMAC-SHA256 and any key bytes (PyJWT refuses a PEM as an HMAC key)."""
    signing_input = b64u_json(header) + "." + b64u_json(payload)
    signature = hmac.new(key, signing_input.encode("ascii"), hashlib.sha256).digest()
    return remember(signing_input + "." + b64u(signature), payload.get("exp"))


def tampered(token: str, payload: dict) -> Token:
    """`token` with its payload segment replaced and its signature kept."""
    header, _, signature = token.split(".")
    return remember(header + "." + b64u_json(payload) + "." + signature)


def random_credential(size: int) -> Token:
    """A JWT-shaped credential of exactly `size` bytes (random base64url text, so a leak is recognisable)."""
    head, signature = "eyJhbGciOiJIUzI1NiJ9.", "." + b64u(os.urandom(32))
    return remember(head + b64u(os.urandom(size))[: size - len(head) - len(signature)] + signature)


def rfc3339(milliseconds: int) -> str:
    seconds, millis = divmod(int(milliseconds), 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


# --------------------------------------------------------------------------------------------
# Servers and clients


def auth_args(*extra: str, secret: bool = True, rsa_key: bool = True, ec_key: bool = True) -> list:
    args = []
    if secret:
        args += ["--jwt-secret-file", KEYS.secret_file]
    if rsa_key:
        args += ["--jwt-key-file", KEYS.rsa_file]
    if ec_key:
        args += ["--jwt-key-file", KEYS.ec_file]
    return args + ["--jwt-audience", AUDIENCE, "--jwt-issuer", ISSUER, "--jwt-leeway", "0s",
                   "--anonymous-subscribe", "public/*", "--log-level", "debug",
                   "--sse-retry", str(SSE_RETRY_MS), "--keepalive", "1", *extra]


def root_token() -> Token:
    """Sees and may do everything: what the checks publish and read the truth with."""
    return mint("root", publish=["*"], subscribe=["*"], admin=True, ttl=3600)


def start_server(name: str, *extra: str, **kwargs: Any) -> Server:
    """eventlogd with auth on; its `http` client (server.publish, server.history, ...) carries a root token."""
    return Server(BINARY, name=name, args=auth_args(*extra, **kwargs), http_headers=bearer(root_token())).start()


class Client:
    """httpx against one server; every body it gets back is kept for the leak check."""

    def __init__(self, base_url: str, verify: Any = True) -> None:
        self.base_url = base_url
        self.http = httpx.Client(timeout=httpx.Timeout(10.0), trust_env=False, verify=verify)
        register_cleanup(self)

    def request(self, method: str, path: str, *, token: Optional[str] = None, headers: Optional[dict] = None,
                **kwargs: Any) -> httpx.Response:
        sent = dict(headers or {})
        if token is not None:
            sent.update(bearer(token))
        response = self.http.request(method, self.base_url + path, headers=sent, **kwargs)
        RECEIVED.append(response.text)
        return response

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def history(self, query: str, **kwargs: Any) -> httpx.Response:
        headers = {"Accept": "application/json", **kwargs.pop("headers", {})}
        return self.request("GET", "/v1/events?" + query, headers=headers, **kwargs)

    def publish(self, topic: str, data: Any = None, **kwargs: Any) -> httpx.Response:
        headers = {"Content-Type": "application/json", **kwargs.pop("headers", {})}
        return self.request("POST", "/v1/events", content=json.dumps({"topic": topic, "data": data}),
                            headers=headers, **kwargs)

    def batch(self, lines: list, **kwargs: Any) -> httpx.Response:
        headers = {"Content-Type": "application/x-ndjson", **kwargs.pop("headers", {})}
        return self.request("POST", "/v1/events", content="\n".join(json.dumps(line) for line in lines),
                            headers=headers, **kwargs)

    def close(self) -> None:
        self.http.close()
        unregister_cleanup(self)


def error_of(body: Any) -> dict:
    return body["error"] if isinstance(body, dict) and isinstance(body.get("error"), dict) else {}


def refused(response: Any, status: int, code: str, what: str, *, selector: Optional[str] = None,
            index: Optional[int] = None) -> bool:
    """An error answer exactly as the spec says: the status, `{"error":{"code","message"[,"selector"][,"index"]}}`
    as JSON, and on every 401 `WWW-Authenticate: Bearer realm="eventlog", error="invalid_token"`.
    `response` is an httpx.Response, a lib.RawResponse or websockets' handshake response."""
    if isinstance(response, httpx.Response):
        got_status, text = response.status_code, response.text
        content_type, challenge = response.headers.get("content-type", ""), response.headers.get("www-authenticate")
    elif hasattr(response, "status_code"):  # websockets.http11.Response
        got_status, text = response.status_code, bytes(response.body or b"").decode("utf-8", "replace")
        content_type = response.headers.get("Content-Type", "")
        challenge = response.headers.get("WWW-Authenticate")
    else:  # lib.RawResponse
        got_status, text = response.status, response.body.decode("utf-8", "replace")
        content_type, challenge = response.header("content-type") or "", response.header("www-authenticate")
    RECEIVED.append(text)
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    error = error_of(body)
    # `selector` belongs to forbidden_topic (and to authentication_required, which a forbidden_topic of an
    # anonymous caller becomes); `index` only to a batch.
    allowed_keys = {"code", "message"}
    if selector is not None or code == "authentication_required":
        allowed_keys.add("selector")
    if index is not None:
        allowed_keys.add("index")
    got = {"status": got_status, "code": error.get("code"), "json": content_type.startswith("application/json"),
           "message": isinstance(error.get("message"), str) and error.get("message") != "",
           "no other fields": set(error) <= allowed_keys and ("index" in error) == (index is not None)}
    want = {"status": status, "code": code, "json": True, "message": True, "no other fields": True}
    if selector is not None:
        got["selector"], want["selector"] = error.get("selector"), selector
    if index is not None:
        got["index"], want["index"] = error.get("index"), index
    if status == 401:
        got["WWW-Authenticate"], want["WWW-Authenticate"] = challenge, CHALLENGE
    extra = f" (selector {selector!r}" + (f", index {index}" if index is not None else "") + ")" \
        if selector is not None else ""
    return checks.check(got == want, f"{what} -> {status} {code}{extra}",
                        f"expected {want}, got {got}; body {text[:300]!r}")


def head_of(server: Server) -> int:
    return int(server.health()["head"])


def ids_of(response: httpx.Response) -> Optional[list]:
    try:
        return [event["id"] for event in response.json()["events"]]
    except (ValueError, KeyError, TypeError):
        return None


def history_ids(server: Server, selector: str = "*") -> list:
    return [event["id"] for event in all_history(server, selector)[0]]


class Publisher(threading.Thread):
    """Publishes to `topics` in turn from its own HTTP client (a root token) every `interval` s until
    stopped, the count runs out, or a publish fails (the server died); keeps what was acknowledged."""

    def __init__(self, base_url: str, token: str, topics: list, *, interval: float = 0.05, limit: int = 3000,
                 tag: str = "", verify: Any = True) -> None:
        super().__init__(name=f"publisher-{tag}", daemon=True)
        self.base_url, self.token, self.topics = base_url, token, topics
        self.interval, self.limit, self.tag, self.verify = interval, limit, tag, verify
        self.acked: list = []  # (id, topic, data)
        self.why: Optional[str] = None
        self.stopping = threading.Event()
        register_cleanup(self)

    def run(self) -> None:
        with httpx.Client(timeout=httpx.Timeout(5.0), trust_env=False, verify=self.verify) as client:
            for n in range(self.limit):
                if self.stopping.is_set():
                    self.why = "stopped"
                    return
                topic, data = self.topics[n % len(self.topics)], {"tag": self.tag, "n": n}
                try:
                    response = client.post(self.base_url + "/v1/events", json={"topic": topic, "data": data},
                                           headers=bearer(self.token))
                except httpx.HTTPError as error:
                    self.why = f"{type(error).__name__}: {error}"
                    return
                if response.status_code != 201:
                    self.why = f"HTTP {response.status_code}: {response.text[:200]}"
                    return
                self.acked.append((int(response.json()["id"]), topic, data))
                self.stopping.wait(self.interval)
            self.why = "limit reached"

    def ids(self, topic: str) -> list:
        return [i for i, t, _ in self.acked if t == topic]

    def wait_for(self, count: int, timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while len(self.acked) < count and time.monotonic() < deadline and self.is_alive():
            time.sleep(0.02)
        return len(self.acked) >= count

    def close(self) -> None:
        self.stopping.set()
        if self.is_alive():
            self.join(10)
        unregister_cleanup(self)


class SSEReader(threading.Thread):
    """An SSE stream read by httpx in a thread (http or https); frames are queued with their arrival time.
    It stops at the end of the stream, on a read timeout, or at the next chunk after stop() (keepalive
    comments, --keepalive 1, keep chunks coming)."""

    def __init__(self, url: str, headers: Optional[dict] = None, verify: Any = True, read_timeout: float = 5.0) -> None:
        super().__init__(name="sse-reader", daemon=True)
        self.url, self.headers, self.verify, self.read_timeout = url, dict(headers or {}), verify, read_timeout
        self.frames: "queue.Queue" = queue.Queue()
        self.ready = threading.Event()
        self.stopping = threading.Event()
        self.status: Optional[int] = None
        self.response_headers: dict = {}
        self.body = b""
        self.error: Optional[str] = None
        register_cleanup(self)
        self.start()

    def run(self) -> None:
        try:
            timeout = httpx.Timeout(10.0, read=self.read_timeout)
            with httpx.Client(timeout=timeout, trust_env=False, verify=self.verify) as client:
                headers = {"Accept": "text/event-stream", **self.headers}
                with client.stream("GET", self.url, headers=headers) as response:
                    self.status = response.status_code
                    self.response_headers = {k.lower(): v for k, v in response.headers.items()}
                    if response.status_code != 200:
                        self.body = response.read()
                        RECEIVED.append(self.body.decode("utf-8", "replace"))
                        return
                    self.ready.set()
                    parser = SSEParser()
                    for chunk in response.iter_raw():
                        arrived = time.monotonic()
                        for frame in parser.feed(chunk):
                            self.frames.put((arrived, frame))
                        if self.stopping.is_set():
                            return
        except Exception as error:  # noqa: BLE001 - reported by the checks that wait on it
            self.error = f"{type(error).__name__}: {error}"
        finally:
            self.ready.set()
            self.frames.put(None)

    def wait_ready(self, timeout: float = 10.0) -> Optional[int]:
        self.ready.wait(timeout)
        return self.status

    def next(self, timeout: float = 5.0, skip_comments: bool = True) -> tuple:
        """(arrival time, frame); TimeoutError or EOFError."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                item = self.frames.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"no SSE frame within {timeout}s from {self.url}") from None
            if item is None:
                self.frames.put(None)
                raise EOFError(f"the stream ended ({self.error or 'end of body'})")
            if skip_comments and item[1].is_comment_only:
                continue
            return item

    def until_event(self, name: str, timeout: float = 5.0) -> tuple:
        deadline = time.monotonic() + timeout
        while True:
            arrived, frame = self.next(max(0.01, deadline - time.monotonic()))
            if frame.event == name:
                return arrived, frame

    def close(self) -> None:
        self.stopping.set()
        if self.is_alive():
            self.join(self.read_timeout + 5)
        unregister_cleanup(self)


def sse_outcome(url: str, headers: Optional[dict] = None, verify: Any = True) -> tuple:
    """Opens an SSE stream: (status, eventlog.open data or the refusal's body text)."""
    reader = SSEReader(url, headers, verify)
    try:
        status = reader.wait_ready()
        if status != 200:
            return status, reader.body.decode("utf-8", "replace")
        try:
            _, frame = reader.until_event("eventlog.open")
            return status, json.loads(frame.data or "null")
        except (TimeoutError, EOFError) as error:
            return status, f"no eventlog.open: {error}"
    finally:
        reader.close()


class WS:
    """One connection of the real `websockets` sync client; every message it gets is kept for the leak
    check. Its own keepalive pings are off; every read has a timeout."""

    def __init__(self, url: str, label: str, *, headers: Optional[dict] = None, origin: Optional[str] = None,
                 ssl_context: Optional[ssl.SSLContext] = None) -> None:
        self.label = label
        options: dict = dict(open_timeout=10, close_timeout=3, ping_interval=None, proxy=None, legacy=True,
                             max_size=16 << 20, additional_headers=headers, origin=origin)
        if ssl_context is not None:
            options["ssl"] = ssl_context
        self.conn = ws_connect(url, **options)
        register_cleanup(self)

    def send(self, value: Any) -> None:
        self.conn.send(json.dumps(value))

    def next(self, timeout: float = 5.0) -> dict:
        text = self.conn.recv(timeout=timeout)
        RECEIVED.append(text if isinstance(text, str) else repr(text))
        return json.loads(text)

    def messages_for(self, seconds: float) -> tuple:
        """Messages arriving within `seconds`: (messages, close code or None when still open)."""
        got: list = []
        deadline = time.monotonic() + seconds
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return got, None
            try:
                got.append(self.next(remaining))
            except TimeoutError:
                return got, None
            except ConnectionClosed as error:
                return got, (error.rcvd.code if error.rcvd is not None else "no close frame")

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:  # noqa: BLE001 - the server may be gone
            pass
        unregister_cleanup(self)


def ws_url(server: Server, query: str = "") -> str:
    return f"ws://{HOST}:{server.port}/v1/ws" + (f"?{query}" if query else "")


def ws_error(message: Any, code: str, what: str, *, selector: Optional[str] = None, ref: Any = None) -> bool:
    """A WebSocket `error` message: exactly type, code, a message, and selector / ref when given."""
    expected = {"type": "error", "code": code}
    if selector is not None:
        expected["selector"] = selector
    if ref is not None:
        expected["ref"] = ref
    ok = isinstance(message, dict) and {k: message.get(k) for k in expected} == expected \
        and set(message) == set(expected) | {"message"} and isinstance(message.get("message"), str)
    extra = (f" selector {selector!r}" if selector else "") + (f" ref {ref!r}" if ref is not None else "")
    return checks.check(ok, f"{what} -> error {code}{extra}", message)


def upgrade_refused(url: str, headers: Optional[dict], status: int, code: str, what: str, *,
                    origin: Optional[str] = None, ssl_context: Optional[ssl.SSLContext] = None) -> None:
    """The WebSocket upgrade is answered with an HTTP error (websockets raises InvalidStatus)."""
    try:
        ws = WS(url, what, headers=headers, origin=origin, ssl_context=ssl_context)
    except InvalidStatus as error:
        refused(error.response, status, code, f"{what}: HTTP answer to the upgrade")
        return
    except Exception as error:  # noqa: BLE001
        checks.fail(f"{what}: HTTP {status} to the upgrade", f"{type(error).__name__}: {error}")
        return
    messages, _ = ws.messages_for(0.3)
    ws.close()
    checks.fail(f"{what}: HTTP {status} to the upgrade", f"the upgrade succeeded; then {messages}")


def auth_op_refused(server_url: str, token: str, code: str, what: str, ref: Any = "bad",
                    ssl_context: Optional[ssl.SSLContext] = None) -> None:
    """An `auth` op with a bad token: error `code` with the ref, then close 1008."""
    ws = WS(server_url, what, ssl_context=ssl_context)
    try:
        ws.send({"op": "auth", "token": token, "ref": ref})
        messages, closed = ws.messages_for(5.0)
        ws_error(messages[0] if messages else None, code, f"{what}: auth op", ref=ref)
        checks.equal((len(messages), closed), (1, 1008), f"{what}: auth op: then close 1008 (nothing else)")
    finally:
        ws.close()


def no_leak(label: str, *servers: Server) -> None:
    """No credential this script sent appears in any body or message it got, nor in any server's log
    (the whole token, and its signature on its own)."""
    def needles(token: str) -> list:
        found = [token]
        signature = token.rsplit(".", 1)[-1]
        if len(signature) >= 16 and signature != token:
            found.append(signature)
        return found

    received = "\n".join(RECEIVED)
    leaked = [t[:24] + "..." for t in CREDENTIALS if any(n in received for n in needles(t))]
    checks.check(not leaked, f"{label}: no credential appears in any response body or WebSocket message "
                             f"({len(CREDENTIALS)} credentials, {len(RECEIVED)} answers)", leaked[:5])
    for server in servers:
        text = server.read_log()
        for generation in range(1, server.generation):
            try:
                with open(os.path.join(server.tmp, f"eventlogd.{generation}.log"), "rb") as old:
                    text += old.read().decode("utf-8", "replace")
            except OSError:
                pass
        leaked = [t[:24] + "..." for t in CREDENTIALS if any(n in text for n in needles(t))]
        checks.check(not leaked and text, f"{label}: no credential appears in {server.name}'s log "
                                          f"({len(text.splitlines())} lines at debug level)", leaked[:5])


# --------------------------------------------------------------------------------------------
# A) HTTP with a bearer token


def scenario_http() -> None:
    label = "http"
    server = start_server("auth-http", "--api-keys", KEYS.api_keys_file)
    client = Client(server.base_url)
    writer = mint("orders-writer", publish=["orders/*"], subscribe=["orders/1"])
    ids: dict = {}
    for topic in ["orders/1", "orders/2", "orders/1", "public/news", "payments/1", "orders/10", "orders/1/x"]:
        ids.setdefault(topic, []).append(int(server.publish(topic, {"seed": topic})["id"]))

    # /healthz is open, with or without a credential.
    response = client.get("/healthz")
    checks.equal((response.status_code, response.json().get("status")), (200, "ok"),
                 f"{label}: /healthz without a credential -> 200")
    response = client.get("/healthz", token="not-a-token")
    checks.equal(response.status_code, 200, f"{label}: /healthz with a bad credential -> 200 (always open)")

    # No credential: anonymous grants (public/*) only.
    head = head_of(server)
    refused(client.publish("orders/1", {"x": 1}), 401, "authentication_required", f"{label}: publish without a credential")
    refused(client.history("topic=orders/1"), 401, "authentication_required",
            f"{label}: history of orders/1 without a credential")
    refused(client.get("/metrics"), 401, "authentication_required", f"{label}: /metrics without a credential")
    response = client.history("topic=public/*")
    checks.equal((response.status_code, ids_of(response)), (200, ids["public/news"]),
                 f"{label}: history of public/* without a credential (anonymous grant) -> 200, exact ids")
    response = client.get("/v1/topics")
    checks.equal((response.status_code, [t["topic"] for t in response.json().get("topics", [])]),
                 (200, ["public/news"]), f"{label}: /v1/topics without a credential lists only public/news")

    # Credentials that do not authenticate.
    refused(client.publish("orders/1", token="garbage"), 401, "invalid_token",
            f"{label}: publish with an unknown credential")
    refused(client.history("topic=orders/1", token="a.b.c"), 401, "invalid_token", f"{label}: history with a malformed JWT")
    refused(client.history("topic=orders/1", headers={"Authorization": f"Basic {b64u(b'root:root')}"}), 401,
            "invalid_token", f"{label}: history with Authorization: Basic")
    checks.equal(head_of(server), head, f"{label}: nothing was published by the refused requests")

    # Publish with the writer's token.
    response = client.publish("orders/1", {"by": "writer"}, token=writer)
    checks.equal(response.status_code, 201, f"{label}: writer (publish orders/*) publishes to orders/1 -> 201")
    if response.status_code == 201:
        ids["orders/1"].append(int(response.json()["id"]))
    response = client.publish("orders/1/x", {"by": "writer"}, token=writer)
    checks.equal(response.status_code, 201, f"{label}: orders/* covers orders/1/x -> 201")
    if response.status_code == 201:
        ids["orders/1/x"].append(int(response.json()["id"]))
    head = head_of(server)
    refused(client.publish("payments/1", {"by": "writer"}, token=writer), 403, "forbidden_topic",
            f"{label}: writer publishes to payments/1", selector="payments/1")
    refused(client.publish("orders", {"by": "writer"}, token=writer), 403, "forbidden_topic",
            f"{label}: writer publishes to orders (orders/* does not match it)", selector="orders")
    checks.equal(head_of(server), head, f"{label}: the refused publishes appended nothing")

    # An NDJSON batch with one refused line: refused whole, nothing appended.
    before = all_history(server)[0]
    lines = [{"topic": "orders/3", "data": 1}, {"topic": "orders/4", "data": 2}, {"topic": "payments/9", "data": 3},
             {"topic": "orders/5", "data": 4}]
    refused(client.batch(lines, token=writer), 403, "forbidden_topic", f"{label}: batch with line 2 on payments/9",
            selector="payments/9", index=2)
    refused(client.batch([{"topic": "x/1"}, {"topic": "orders/6"}], token=writer), 403, "forbidden_topic",
            f"{label}: batch with line 0 on x/1", selector="x/1", index=0)
    after = all_history(server)[0]
    checks.equal((head_of(server), after), (head, before),
                 f"{label}: the refused batches appended nothing (head and the whole history unchanged)")
    response = client.batch([{"topic": "orders/3"}, {"topic": "orders/4"}], token=writer)
    checks.equal((response.status_code, len(response.json().get("ids", []))), (201, 2),
                 f"{label}: a batch of allowed topics -> 201 with 2 ids")
    if response.status_code == 201:
        ids["orders/3"], ids["orders/4"] = [response.json()["ids"][0]], [response.json()["ids"][1]]

    # History and last=N.
    response = client.history("topic=orders/1", token=writer)
    checks.equal((response.status_code, ids_of(response)), (200, ids["orders/1"]),
                 f"{label}: writer (subscribe orders/1) reads the history of orders/1 -> 200, exact ids")
    response = client.history("topic=orders/1&last=2", token=writer)
    checks.equal((response.status_code, ids_of(response)), (200, ids["orders/1"][-2:]),
                 f"{label}: writer reads last=2 of orders/1 -> 200, the newest 2 ids")
    response = client.history("topic=public/news", token=writer)
    checks.equal((response.status_code, ids_of(response)), (200, ids["public/news"]),
                 f"{label}: the anonymous grant public/* is added to the writer's -> 200")
    for query, selector in [("topic=orders/2", "orders/2"), ("topic=orders/*", "orders/*"), ("", "*"),
                            ("topic=orders/1&topic=orders/2", "orders/2"), ("topic=orders/2&last=1", "orders/2"),
                            ("last=3", "*"), ("topic=orders/1/*&last=1", "orders/1/*")]:
        refused(client.history(query, token=writer), 403, "forbidden_topic",
                f"{label}: writer reads history {query or '(no topic)'}", selector=selector)

    # /v1/topics lists what the caller may read.
    response = client.get("/v1/topics", token=writer)
    checks.equal((response.status_code, [t["topic"] for t in response.json().get("topics", [])]),
                 (200, ["orders/1", "public/news"]), f"{label}: /v1/topics for the writer: exactly orders/1, public/news")
    response = client.get("/v1/topics", token=root_token())
    everything = sorted(ids)
    checks.equal((response.status_code, [t["topic"] for t in response.json().get("topics", [])],
                  [t["count"] for t in response.json().get("topics", [])]),
                 (200, everything, [len(ids[t]) for t in everything]),
                 f"{label}: /v1/topics for subscribe * lists every topic with its count")

    # /metrics needs admin.
    refused(client.get("/metrics", token=writer), 403, "forbidden", f"{label}: /metrics without the admin grant")
    response = client.get("/metrics", token=root_token())
    checks.check(response.status_code == 200 and "eventlog_head" in response.text,
                 f"{label}: /metrics with the admin grant -> 200 (Prometheus text)", response.text[:200])

    # Other algorithms and API keys.
    for alg in ("RS256", "ES256"):
        token = mint(f"reader-{alg}", alg, subscribe=["orders/1"])
        response = client.history("topic=orders/1", token=token)
        checks.equal((response.status_code, ids_of(response)), (200, ids["orders/1"]),
                     f"{label}: an {alg} token (--jwt-key-file) reads orders/1 -> 200")
    api_key = remember(KEYS.api_key)
    response = client.publish("orders/9", {"by": "api key"}, token=api_key)
    checks.equal(response.status_code, 201, f"{label}: an API key (--api-keys, publish orders/*) publishes to orders/9")
    if response.status_code == 201:
        ids["orders/9"] = [int(response.json()["id"])]
    response = client.history("topic=orders/*", token=api_key)
    checks.equal((response.status_code, [e["topic"] for e in response.json().get("events", [])]),
                 (200, [e["topic"] for e in all_history(server, "orders/*")[0]]),
                 f"{label}: the API key (subscribe orders/*) reads the history of orders/* -> 200")
    refused(client.publish("payments/1", token=api_key), 403, "forbidden_topic", f"{label}: the API key publishes to "
                                                                                 f"payments/1", selector="payments/1")
    refused(client.get("/metrics", token=api_key), 403, "forbidden", f"{label}: the API key (admin false): /metrics")
    refused(client.history("topic=orders/1", token=remember(b64u(os.urandom(32)))), 401, "invalid_token",
            f"{label}: an unknown API key")
    scenario_sse_expiry(label, server, client)
    cors(label, server, client)
    no_leak(label, server)
    client.close()
    server.close()


def cors(label: str, server: Server, client: Client) -> None:
    """With `*` (the default) never credentials; a listed origin gets itself back with credentials, and its
    cookie is accepted; the preflight allows the Authorization header."""
    reader = mint("cors-user", subscribe=["orders/1"])
    response = client.history("topic=orders/1", token=reader, headers={"Origin": "https://app.example"})
    checks.equal((response.status_code, response.headers.get("access-control-allow-origin"),
                  response.headers.get("access-control-allow-credentials")), (200, "*", None),
                 f"{label}: --cors-origin * (default): Access-Control-Allow-Origin *, never credentials")
    response = client.request("OPTIONS", "/v1/events", headers={"Origin": "https://app.example",
                                                                "Access-Control-Request-Method": "GET",
                                                                "Access-Control-Request-Headers": "authorization"})
    allowed = [h.strip().lower() for h in response.headers.get("access-control-allow-headers", "").split(",")]
    checks.check(response.status_code == 204 and "authorization" in allowed,
                 f"{label}: the preflight allows the Authorization header", dict(response.headers))
    listed = start_server("auth-cors", "--cors-origin", "https://app.example")
    other = Client(listed.base_url)
    response = other.history("topic=orders/1", headers={"Cookie": f"{COOKIE}={reader}", "Origin": "https://app.example"})
    checks.equal((response.status_code, response.headers.get("access-control-allow-origin"),
                  response.headers.get("vary"), response.headers.get("access-control-allow-credentials")),
                 (200, "https://app.example", "Origin", "true"),
                 f"{label}: --cors-origin https://app.example: its cookie is accepted, the exact origin with Vary "
                 f"and credentials")
    response = other.history("topic=orders/1", headers={"Cookie": f"{COOKIE}={reader}", "Origin": "https://evil.example"})
    refused(response, 403, "forbidden", f"{label}: --cors-origin https://app.example: a cookie from another origin")
    checks.equal(response.headers.get("access-control-allow-origin"), None,
                 f"{label}: --cors-origin https://app.example: no Access-Control-Allow-Origin for another origin")
    no_leak(f"{label} (CORS)", listed)
    other.close()
    listed.close()


def scenario_sse_expiry(label: str, server: Server, client: Client) -> None:
    """An SSE stream ends cleanly (chunked end) at its token's exp; the old token is then refused and a
    fresh one resumes from Last-Event-ID with nothing lost."""
    reader = mint("short-sse", subscribe=["orders/1"], ttl=4)
    with RawHTTP(server.port) as conn:
        conn.send((f"GET /v1/events?topic=orders/1 HTTP/1.1\r\nHost: {HOST}:{server.port}\r\n"
                   f"Accept: text/event-stream\r\nAuthorization: Bearer {reader}\r\n\r\n").encode("ascii"))
        time.sleep(0.5)
        live = int(server.publish("orders/1", {"during": "the stream"})["id"])
        try:
            response = conn.read_response(timeout=reader.exp - time.time() + 3.0)
            ended_at = time.time()
        except (HTTPClosed, TimeoutError) as error:
            checks.fail(f"{label}: an SSE stream ends cleanly at its token's exp", f"{type(error).__name__}: {error}")
            return
    frames = SSEParser().feed(response.body)
    event_ids = [int(f.id) for f in frames if f.has_id]
    checks.equal((response.status, response.header("transfer-encoding"), event_ids), (200, "chunked", [live]),
                 f"{label}: SSE with a 4 s token: 200, chunked, the live event")
    checks.check(reader.exp - 0.3 <= ended_at <= reader.exp + 1.5,
                 f"{label}: the stream ends with the chunked terminator at the token's exp "
                 f"({ended_at - reader.exp:+.2f} s from exp)", ended_at - reader.exp)
    after = int(server.publish("orders/1", {"after": "the stream"})["id"])
    response = client.get("/v1/events?topic=orders/1", token=reader,
                          headers={"Accept": "text/event-stream", "Last-Event-ID": str(live)})
    refused(response, 401, "token_expired", f"{label}: reconnecting with the expired token")
    fresh = mint("short-sse", subscribe=["orders/1"], ttl=60)
    stream = SSEReader(server.url("/v1/events?topic=orders/1"), {**bearer(fresh), "Last-Event-ID": str(live)})
    try:
        _, opened = stream.until_event("eventlog.open")
        _, first = stream.next()
        checks.equal((stream.status, json.loads(opened.data).get("from"), first.id), (200, live, str(after)),
                     f"{label}: a fresh token with Last-Event-ID {live} resumes: from {live}, then event {after}")
    except (TimeoutError, EOFError) as error:
        checks.fail(f"{label}: a fresh token with Last-Event-ID resumes", f"{type(error).__name__}: {error}")
    finally:
        stream.close()


# --------------------------------------------------------------------------------------------
# B) WebSocket


def scenario_websocket() -> None:
    label = "ws"
    server = start_server("auth-ws")
    url = ws_url(server)
    for topic in ("orders/1", "orders/2", "orders/1"):
        server.publish(topic, {"seed": topic})
    seeded = history_ids(server, "orders/1")
    reader = mint("ws-reader", subscribe=["orders/1"], publish=["orders/1"])

    # Anonymous upgrade, then the auth op as the first message.
    ws = WS(url, f"{label} auth op")
    ws.send({"op": "auth", "token": reader, "ref": "a1"})
    checks.equal(ws.next(), {"type": "authenticated", "ref": "a1", "subject": "ws-reader",
                             "expiresAt": rfc3339(int(reader.exp * 1000))},
                 f"{label}: anonymous upgrade + auth op -> authenticated {{ref, subject, expiresAt = exp}}")
    ws.send({"op": "subscribe", "topics": ["orders/1"], "from": "earliest", "ref": "s1"})
    got = [ws.next() for _ in range(len(seeded) + 2)]
    checks.equal([(m.get("type"), m.get("id")) for m in got],
                 [("subscribed", None)] + [("event", i) for i in seeded] + [("caughtup", None)],
                 f"{label}: subscribe orders/1 from earliest: subscribed, exactly the orders/1 history, caughtup")
    server.publish("orders/2", {"noise": 1})
    live = int(server.publish("orders/1", {"live": 1})["id"])
    message = ws.next()
    checks.equal((message.get("type"), message.get("id"), message.get("topic")), ("event", live, "orders/1"),
                 f"{label}: a live orders/1 event arrives (orders/2 does not)")

    # Subscribe and publish outside the grants.
    ws.send({"op": "subscribe", "topics": ["orders/2"], "from": "earliest", "ref": "s2"})
    ws_error(ws.next(), "forbidden_topic", f"{label}: subscribe orders/2", selector="orders/2", ref="s2")
    ws.send({"op": "subscribe", "topics": ["orders/1", "orders/*"], "ref": "s3"})
    ws_error(ws.next(), "forbidden_topic", f"{label}: subscribe [orders/1, orders/*]", selector="orders/*", ref="s3")
    server.publish("orders/2", {"noise": 2})
    live = int(server.publish("orders/1", {"live": 2})["id"])
    message = ws.next()
    checks.equal((message.get("type"), message.get("id")), ("event", live),
                 f"{label}: a refused subscribe leaves the orders/1 subscription running (nothing of orders/2)")
    head = head_of(server)
    ws.send({"op": "publish", "ref": "p1", "topic": "orders/2", "data": {"by": "ws"}})
    ws_error(ws.next(), "forbidden_topic", f"{label}: publish to orders/2", selector="orders/2", ref="p1")
    checks.equal(head_of(server), head, f"{label}: the refused WebSocket publish appended nothing")
    ws.send({"op": "publish", "ref": "p2", "topic": "orders/1", "data": {"by": "ws"}})
    messages, _ = ws.messages_for(1.0)
    acks = [m for m in messages if m.get("type") == "ack"]
    events = [m for m in messages if m.get("type") == "event"]
    checks.check(len(acks) == 1 and acks[0].get("ref") == "p2" and [e.get("id") for e in events] == [acks[0].get("id")],
                 f"{label}: publish to orders/1 (granted) -> ack, and the event on the subscription", messages)

    # A renewal whose grants no longer cover the subscription stops it.
    other = mint("ws-reader", subscribe=["orders/2"])
    ws.send({"op": "auth", "token": other, "ref": "a2"})
    messages, closed = ws.messages_for(1.0)
    checks.check(len(messages) == 2 and messages[0].get("type") == "authenticated" and messages[0].get("ref") == "a2"
                 and closed is None, f"{label}: auth op with a token for orders/2 only -> authenticated", messages)
    ws_error(messages[1] if len(messages) > 1 else None, "forbidden_topic",
             f"{label}: the orders/1 subscription is no longer covered", selector="orders/1")
    server.publish("orders/1", {"after": "regrant"})
    messages, closed = ws.messages_for(0.7)
    checks.equal((messages, closed), ([], None),
                 f"{label}: the subscription stopped (no orders/1 event), the socket stays open")
    ws.close()

    # Anonymous: public/* only; a subscription outside it needs authentication.
    ws = WS(url, f"{label} anonymous")
    ws.send({"op": "subscribe", "topics": ["orders/1"], "ref": "n1"})
    ws_error(ws.next(), "authentication_required", f"{label}: anonymous subscribe orders/1", selector="orders/1", ref="n1")
    ws.send({"op": "subscribe", "topics": ["public/*"], "ref": "n2"})
    checks.equal([ws.next().get("type"), ws.next().get("type")], ["subscribed", "caughtup"],
                 f"{label}: anonymous subscribe public/* (anonymous grant) -> subscribed, caughtup")
    head = head_of(server)
    ws.send({"op": "publish", "ref": "n3", "topic": "public/news", "data": 1})
    message = ws.next()
    checks.equal((message.get("type"), message.get("code"), message.get("ref")), ("error", "authentication_required", "n3"),
                 f"{label}: anonymous publish -> error authentication_required")
    checks.equal(head_of(server), head, f"{label}: the anonymous publish appended nothing")
    ws.close()

    # Credentials at the upgrade.
    upgrade_refused(url, bearer(remember("garbage-credential")), 401, "invalid_token", f"{label}: bad bearer at the upgrade")
    expired = mint("ws-reader", subscribe=["orders/1"], ttl=-5)
    upgrade_refused(url, bearer(expired), 401, "token_expired", f"{label}: expired bearer at the upgrade")
    ws = WS(url, f"{label} bearer upgrade", headers=bearer(reader))
    ws.send({"op": "subscribe", "topics": ["orders/1"], "ref": "u1"})
    checks.equal([ws.next().get("type"), ws.next().get("type")], ["subscribed", "caughtup"],
                 f"{label}: a valid bearer at the upgrade: subscribe without an auth op")
    ws.close()

    # Bad tokens in an auth op: error, then close 1008.
    auth_op_refused(url, remember("garbage-credential-2"), "invalid_token", f"{label}: unknown credential")
    auth_op_refused(url, mint("ws-reader", subscribe=["orders/1"], ttl=-5), "token_expired", f"{label}: expired token")
    auth_op_refused(url, tampered(reader, claims("ws-reader", subscribe=["*"])), "invalid_token",
                    f"{label}: tampered token")

    scenario_ws_expiry(label, server)
    no_leak(label, server)
    server.close()


def scenario_ws_expiry(label: str, server: Server) -> None:
    """Two sockets with tokens that live 4-5 s: one renews after the `token_expired` warning and outlives
    the first token with every event exactly once; the other does not and is closed with 1008 at exp."""
    url = ws_url(server)
    short = mint("ws-short", subscribe=["orders/1"], ttl=5)
    short_b = mint("ws-short-b", subscribe=["orders/1"], ttl=5)
    stay = WS(url, f"{label} renewing")
    lapse = WS(url, f"{label} not renewing")
    sockets = [(stay, short, "r"), (lapse, short_b, "l")]
    authed_at = time.time()
    for ws, token, ref in sockets:
        ws.send({"op": "auth", "token": token, "ref": ref})
        message = ws.next()
        checks.equal((message.get("type"), message.get("expiresAt")), ("authenticated", rfc3339(int(token.exp * 1000))),
                     f"{ws.label}: authenticated with a token that expires in {token.exp - authed_at:.1f} s")
        ws.send({"op": "subscribe", "topics": ["orders/1"], "from": "latest"})
        message, caught = ws.next(), ws.next()
        checks.equal((message.get("type"), caught.get("type")), ("subscribed", "caughtup"), f"{ws.label}: subscribed")
    start = int(server.health()["head"])

    # The socket that does not renew: read in a thread until it closes.
    lapsed: dict = {}

    def watch_lapse() -> None:
        messages, closed = lapse.messages_for(short_b.exp - time.time() + 4.0)
        lapsed.update(messages=messages, closed=closed, at=time.time())

    watcher = threading.Thread(target=watch_lapse, name="lapse-watcher", daemon=True)
    watcher.start()

    publisher = Publisher(server.base_url, root_token(), ["orders/1", "orders/2"], interval=0.05, tag="ws-expiry")
    publisher.start()
    got: list = []
    warning_at: Optional[float] = None
    renewed: Optional[dict] = None
    fresh = mint("ws-short", subscribe=["orders/1"], ttl=120)
    deadline = short.exp + 2.0
    closed = None
    while time.time() < deadline and closed is None:
        messages, closed = stay.messages_for(min(0.2, max(0.01, deadline - time.time())))
        for message in messages:
            if message.get("type") == "error" and message.get("code") == "token_expired" and warning_at is None:
                warning_at = time.time()
                checks.check(set(message) == {"type", "code", "message"},
                             f"{label}: the token_expired warning has no ref", message)
                stay.send({"op": "auth", "token": fresh, "ref": "renew"})
            elif message.get("type") == "authenticated":
                renewed = message
            elif message.get("type") != "event":
                got.append(("unexpected", message))
            else:
                got.append(message.get("id"))
    publisher.close()
    expected_ids = [i for i in publisher.ids("orders/1") if i > start]
    if closed is None:
        tail, closed = stay.messages_for(2.0)
        got += [m.get("id") if m.get("type") == "event" else ("unexpected", m) for m in tail]
    lifetime = short.exp - authed_at
    checks.check(warning_at is not None and authed_at + lifetime / 2 - 0.5 <= warning_at < short.exp,
                 f"{label}: token_expired warning before exp, about half-way "
                 f"({(warning_at or 0) - short.exp:+.2f} s from exp)", warning_at and warning_at - short.exp)
    checks.equal(renewed, {"type": "authenticated", "ref": "renew", "subject": "ws-short",
                           "expiresAt": rfc3339(int(fresh.exp * 1000))},
                 f"{label}: the renewal auth op -> authenticated with the new expiresAt")
    checks.equal(closed, None, f"{label}: the renewed socket stays open past the first token's exp (+2 s)")
    checks.check(len(expected_ids) >= 40, f"{label}: publishes continued across the exp "
                                          f"({len(expected_ids)} orders/1 events)", len(expected_ids))
    checks.equal(got, expected_ids, f"{label}: the renewed socket got every orders/1 id exactly once, in order")
    stay.close()

    watcher.join(short_b.exp - time.time() + 6.0)
    messages = lapsed.get("messages", [])
    warnings = [m for m in messages if m.get("type") == "error"]
    checks.check(len(warnings) == 1 and warnings[0].get("code") == "token_expired" and "ref" not in warnings[0],
                 f"{label}: the socket that does not renew gets one token_expired warning", warnings)
    checks.equal(lapsed.get("closed"), 1008, f"{label}: the socket that does not renew is closed with 1008")
    at = lapsed.get("at", 0.0)
    checks.check(short_b.exp - 0.3 <= at <= short_b.exp + 1.5,
                 f"{label}: ... at the token's exp ({at - short_b.exp:+.2f} s from exp)", at - short_b.exp)
    lapse.close()


# --------------------------------------------------------------------------------------------
# C) Chromium: EventSource with the cookie, across SIGKILL + restart and the token's expiry

COOKIE = "eventlog_token"


def set_cookie(browser: Any, token: str) -> None:
    browser.driver.add_cookie({"name": COOKIE, "value": token, "httpOnly": True, "path": "/"})


def scenario_browser() -> None:
    label = "chromium"
    if chromium.selenium is None:
        checks.fail(f"{label}: Selenium is importable", chromium.SELENIUM_ERROR)
        return
    server = start_server("auth-browser")
    for topic in ("orders/1", "orders/2", "orders/1"):
        server.publish(topic, {"seed": topic})
    browser = chromium.Browser("chromium auth")
    checks.check(True, f"{label}: headless Chromium started ({browser.version})")
    browser.open(server.url("/healthz"))
    stream_url = "/v1/events?topic=orders/1&envelope=1"

    # Without the cookie the EventSource is refused (401) and gives up.
    browser.js(chromium.NATIVE_EVENTSOURCE_JS, stream_url)
    state = browser.wait(lambda s: s.get("status") == "closed", "the EventSource without a cookie gives up", timeout=10)
    checks.equal((state.get("status"), state.get("opens")), ("closed", 0),
                 f"{label}: without the cookie the EventSource is refused and closed")
    browser.js("window.eventlog.source.close()")
    browser.console()

    first = mint("browser", subscribe=["orders/1"], ttl=600)
    set_cookie(browser, first)
    checks.check(COOKIE not in (browser.js("return document.cookie") or ""),
                 f"{label}: the eventlog_token cookie is httpOnly (not in document.cookie)")
    # browser.py's EventSource page script, plus how many events the page held at each eventlog.open (the id
    # a reconnect must resume from), registered in the same script so that no eventlog.open is missed.
    browser.js(chromium.NATIVE_EVENTSOURCE_JS + "\nstate.heldAtOpen = [];\n"
               "source.addEventListener('eventlog.open', () => state.heldAtOpen.push(state.received.length));",
               stream_url)
    state = browser.wait(lambda s: chromium.controls_of(s, "eventlog.caughtup"), "the first connection with the cookie")
    start = chromium.controls_of(state, "eventlog.open")[0]["from"]
    checks.equal((state.get("opens"), state.get("status")), (1, "open"), f"{label}: EventSource open with the cookie")

    # (1) SIGKILL mid-stream, restart on the same port and database.
    publisher = Publisher(server.base_url, root_token(), ["orders/1", "orders/2"], interval=0.02, tag="kill")
    publisher.start()
    browser.wait(lambda s: len(s.get("received", [])) >= 10, "events before the kill")
    second = mint("browser", subscribe=["orders/1"], ttl=14)
    set_cookie(browser, second)  # read by the next (re)connect only
    publisher.wait_for(len(publisher.acked) + 20)
    # A batch committed right before the kill: the page is usually still receiving it when the server dies.
    batch = server.http.post(server.url("/v1/events"), headers={"Content-Type": "application/x-ndjson"},
                             content="\n".join(json.dumps({"topic": "orders/1", "data": {"batch": n}}) for n in range(200)))
    status = server.kill()
    publisher.join(10)
    checks.equal((status, batch.status_code), (-signal.SIGKILL, 201),
                 f"{label}: eventlogd SIGKILLed while publishing, right after a batch of 200 "
                 f"({len(publisher.acked)} single publishes acknowledged; publisher stopped: {publisher.why})")
    publisher.close()
    browser.wait(lambda s: s.get("status") == "reconnecting", "the page notices the kill", timeout=10)
    had = chromium.received_ids(browser.state() or {})
    print(f"# {label}: the page had {len(had)} events when the server died", flush=True)
    time.sleep(1.0)
    port = server.port
    server.restart(same_port=True)
    checks.equal(server.port, port, f"{label}: eventlogd restarted on the same port and database")
    state = browser.wait(lambda s: s.get("opens", 0) >= 2 and s.get("status") == "open", "the reconnect after the restart")
    reopened = chromium.controls_of(state, "eventlog.open")[1]
    checks.equal(reopened.get("from"), had[-1] if had else start,
                 f"{label}: the reconnect (cookie token 2) resumed from the last id the page had (Last-Event-ID)")
    publisher = Publisher(server.base_url, root_token(), ["orders/1", "orders/2"], interval=0.05, tag="expiry")
    publisher.start()

    # (2) The cookie token expires: the server ends the stream at its exp; a fresh cookie is there by then.
    left = second.exp - time.time()
    checks.check(left > 1.0, f"{label}: the second cookie token still has {left:.1f} s to live", left)
    browser.console()
    third = mint("browser", subscribe=["orders/1"], ttl=600)
    set_cookie(browser, third)
    try:
        state = browser.wait(lambda s: s.get("opens", 0) >= 3, "the reconnect at the token's exp", timeout=left + 5)
        seen_at = time.time()
        checks.check(second.exp - 0.3 <= seen_at <= second.exp + 3.0,
                     f"{label}: the stream ended at the old token's exp and the page reconnected "
                     f"({seen_at - second.exp:+.2f} s from exp)", seen_at - second.exp)
        newest = chromium.controls_of(state, "eventlog.open")[2]
        held = (browser.js("return window.eventlog.heldAtOpen") or []) + [0, 0, 0]
        ids = chromium.received_ids(state)
        checks.equal(newest.get("from"), ids[held[2] - 1] if 0 < held[2] <= len(ids) else start,
                     f"{label}: the reconnect after the expiry (cookie token 3) resumed from the last id the page "
                     f"had (Last-Event-ID)")
    except TimeoutError as error:
        checks.fail(f"{label}: the stream ended at the old token's exp and the page reconnected", str(error))
    time.sleep(1.5)
    publisher.close()
    expected = [e for e in all_history(server, "orders/1")[0] if e["id"] > start]
    try:
        state = browser.wait(lambda s: len(s.get("received", [])) >= len(expected), "every event", timeout=10)
    except TimeoutError:
        state = browser.state() or {}
    time.sleep(0.5)
    state = browser.state() or state
    received = state.get("received", [])
    checks.equal(chromium.received_ids(state), [e["id"] for e in expected],
                 f"{label}: every published orders/1 id exactly once, in order, across the kill and the expiry "
                 f"({len(expected)} events)")
    checks.check([(r.get("topic"), r.get("data")) for r in received] == [(e["topic"], e["data"]) for e in expected],
                 f"{label}: topic and data of every event as published")
    checks.check(state.get("status") == "open" and state.get("opens") == 3,
                 f"{label}: three connections in all, the last one open", chromium.summarize(state))
    console = [str(entry.get("message")) for entry in browser.console()]
    checks.check(not [line for line in console if "401" in line or "ERR_INCOMPLETE_CHUNKED_ENCODING" in line],
                 f"{label}: the expiry was a clean end and the reconnect was not refused (console)", console[:5])
    no_leak(label, server)
    browser.close()
    server.close()


# --------------------------------------------------------------------------------------------
# D) Hostile credentials and cross-topic reads


def hostile_tokens() -> list:
    """(name, credential, code) for credentials that must be refused."""
    now = int(time.time())
    good = claims("mallory", publish=["*"], subscribe=["*"], admin=True)
    reader_hs = mint("reader", subscribe=["orders/1"])
    reader_rs = mint("reader", "RS256", subscribe=["orders/1"])
    reader_es = mint("reader", "ES256", subscribe=["orders/1"])
    return [
        ("alg none", remember(b64u_json({"alg": "none", "typ": "JWT"}) + "." + b64u_json(good) + "."), "invalid_token"),
        ("alg None with a signature", remember(b64u_json({"alg": "None"}) + "." + b64u_json(good) + "."
                                               + reader_hs.split(".")[2]), "invalid_token"),
        ("HS512 (not accepted) with the right secret", mint("mallory", "HS512", subscribe=["*"]), "invalid_token"),
        ("algorithm confusion: HS256 keyed with the RSA public key PEM",
         forge_hs256({"alg": "HS256", "typ": "JWT"}, good, KEYS.rsa_public_pem), "invalid_token"),
        ("algorithm confusion: HS256 keyed with the EC public key PEM",
         forge_hs256({"alg": "HS256", "typ": "JWT"}, good, KEYS.ec_public_pem), "invalid_token"),
        ("RS256 header on an HMAC signature", forge_hs256({"alg": "RS256"}, good, KEYS.secret), "invalid_token"),
        ("expired", mint("mallory", subscribe=["*"], exp=now - 5), "token_expired"),
        ("not yet valid (nbf in 60 s)", mint("mallory", subscribe=["*"], nbf=now + 60), "invalid_token"),
        ("wrong aud", mint("mallory", subscribe=["*"], aud="someone-else"), "invalid_token"),
        ("wrong iss", mint("mallory", subscribe=["*"], iss="https://evil.example"), "invalid_token"),
        ("no exp", mint("mallory", subscribe=["*"], exp=None), "invalid_token"),
        ("tampered HS256 payload", tampered(reader_hs, good), "invalid_token"),
        ("tampered RS256 payload", tampered(reader_rs, good), "invalid_token"),
        ("tampered ES256 payload", tampered(reader_es, good), "invalid_token"),
        ("HS256 signed with another secret", mint("mallory", subscribe=["*"], key=KEYS.foreign_secret), "invalid_token"),
        ("RS256 signed with another RSA key", mint("mallory", "RS256", subscribe=["*"], key=KEYS.foreign_rsa),
         "invalid_token"),
        ("9000 bytes (over 8192)", random_credential(9000), "invalid_token"),
    ]


def scenario_hostile() -> None:
    label = "hostile"
    server = start_server("auth-hostile")
    client = Client(server.base_url)
    url = ws_url(server)
    for topic in ("orders/1", "orders/2", "orders/10", "orders/1/x", "public/news"):
        server.publish(topic, {"seed": topic})
    before = all_history(server)[0]

    # Each bad credential over every channel.
    for name, token, code in hostile_tokens():
        refused(client.history("topic=orders/1", token=token), 401, code, f"{label}: {name}: history")
        refused(client.publish("orders/1", {"by": "mallory"}, token=token), 401, code, f"{label}: {name}: publish")
        upgrade_refused(url, bearer(token), 401, code, f"{label}: {name}: WebSocket upgrade")
        auth_op_refused(url, token, code, f"{label}: {name}")

    # Sizes: over 8192 bytes in the header, over the 32 KiB header limit, in an auth op.
    token = random_credential(20 * 1024)
    response, _ = raw_exchange(server.port, (f"GET /v1/events?topic=orders/1 HTTP/1.1\r\nHost: {HOST}\r\n"
                                             f"Accept: application/json\r\nAuthorization: Bearer {token}\r\n\r\n")
                               .encode("ascii"), timeout=10)
    if hasattr(response, "status"):
        refused(response, 401, "invalid_token", f"{label}: a 20 KB bearer")
    else:
        checks.fail(f"{label}: a 20 KB bearer -> 401 invalid_token", repr(response))
    token = random_credential(40 * 1024)
    response, _ = raw_exchange(server.port, (f"GET /v1/events?topic=orders/1 HTTP/1.1\r\nHost: {HOST}\r\n"
                                             f"Authorization: Bearer {token}\r\n\r\n").encode("ascii"), timeout=10)
    # NIO's decoder refuses headers over the limit; its error handler answers 400 with no body and closes
    # (docs/PROTOCOL.md, "Errors").
    checks.check(getattr(response, "status", None) == 400,
                 f"{label}: a 40 KB bearer (over the 32 KiB header limit) -> 400",
                 response.short() + f" {response.headers}" if hasattr(response, "short") else repr(response))
    if hasattr(response, "body"):
        RECEIVED.append(response.body.decode("utf-8", "replace"))
    auth_op_refused(url, random_credential(20 * 1024), "invalid_token", f"{label}: a 20 KB token")
    checks.equal(all_history(server)[0], before, f"{label}: nothing was published by any refused credential")

    cross_topic(label, server, client)
    cookie_origin(label, server, client)
    after_refused_upgrade(label, server)
    query_tokens(label, server, client)
    other_key_setups(label)
    no_leak(label, server)
    client.close()
    server.close()


FORBIDDEN_FOR_ORDERS_1 = ["orders/2", "orders/*", "*", "orders/1/*", "orders/10"]


def cross_topic(label: str, server: Server, client: Client) -> None:
    """A subscriber granted only orders/1 reaching for other topics by every way in."""
    reader = mint("reader-1", subscribe=["orders/1"])
    other = mint("reader-2", subscribe=["orders/2"])
    head = head_of(server)
    for selector in FORBIDDEN_FOR_ORDERS_1:
        query = "topic=" + selector
        response = client.get("/v1/events?" + query, token=reader, headers={"Accept": "text/event-stream"})
        refused(response, 403, "forbidden_topic", f"{label}: orders/1 reader: SSE {selector}", selector=selector)
        refused(client.history(query, token=reader), 403, "forbidden_topic",
                f"{label}: orders/1 reader: history {selector}", selector=selector)
        refused(client.history(query + "&last=5", token=reader), 403, "forbidden_topic",
                f"{label}: orders/1 reader: last=5 of {selector}", selector=selector)
    refused(client.get("/v1/events?topic=orders/1&topic=orders/2", token=reader, headers={"Accept": "text/event-stream"}),
            403, "forbidden_topic", f"{label}: orders/1 reader: SSE orders/1 + orders/2", selector="orders/2")
    refused(client.publish("orders/1", {"by": "reader"}, token=reader), 403, "forbidden_topic",
            f"{label}: orders/1 reader (no publish grant): publish orders/1", selector="orders/1")
    status, opened = sse_outcome(server.url("/v1/events?topic=orders/1"), bearer(reader))
    checks.equal((status, isinstance(opened, dict) and "epoch" in opened), (200, True),
                 f"{label}: orders/1 reader: SSE orders/1 -> 200 and eventlog.open")
    response = client.get("/v1/topics", token=reader)
    checks.equal([t["topic"] for t in response.json().get("topics", [])], ["orders/1", "public/news"],
                 f"{label}: orders/1 reader: /v1/topics lists exactly orders/1 and public/news (no orders/2)")

    ws = WS(ws_url(server), f"{label} orders/1 reader", headers=bearer(reader))
    for n, selector in enumerate(FORBIDDEN_FOR_ORDERS_1):
        ws.send({"op": "subscribe", "topics": [selector], "from": "earliest", "ref": n})
        ws_error(ws.next(), "forbidden_topic", f"{label}: orders/1 reader: WebSocket subscribe {selector}",
                 selector=selector, ref=n)
    server.publish("orders/2", {"after": "refused subscribes"})
    messages, closed = ws.messages_for(0.5)
    checks.equal((messages, closed), ([], None), f"{label}: orders/1 reader: nothing delivered after the refused subscribes")

    # Another user's resume token (from an orders/2 stream): it carries a position, never rights.
    for topic in ("orders/1", "orders/2", "orders/1", "orders/2", "orders/1"):
        server.publish(topic, {"interleaved": topic})
    theirs = WS(ws_url(server), f"{label} orders/2 reader", headers=bearer(other))
    theirs.send({"op": "subscribe", "topics": ["orders/2"], "from": "earliest"})
    stream = [theirs.next() for _ in range(1 + len(history_ids(server, "orders/2")) + 1)]
    theirs.close()
    events = [m for m in stream if m.get("type") == "event"]
    token_of = events[1] if len(events) > 1 else {}
    position = token_of.get("id", 0)
    resume = token_of.get("resume", "")
    ws.send({"op": "subscribe", "topics": ["orders/2"], "resume": resume, "ref": "r1"})
    ws_error(ws.next(), "forbidden_topic", f"{label}: orders/1 reader: another user's orders/2 resume token with "
                                           f"topics [orders/2]", selector="orders/2", ref="r1")
    messages, _ = ws.messages_for(0.3)
    checks.equal(messages, [], f"{label}: ... and nothing of orders/2 is replayed")
    ws.send({"op": "subscribe", "topics": ["orders/1"], "resume": resume, "ref": "r2"})
    expected = [i for i in history_ids(server, "orders/1") if i > position]
    got = [ws.next() for _ in range(len(expected) + 2)]
    checks.equal([(m.get("type"), m.get("id"), m.get("topic")) for m in got],
                 [("subscribed", None, None)] + [("event", i, "orders/1") for i in expected] + [("caughtup", None, None)],
                 f"{label}: the same resume token with topics [orders/1]: only orders/1 events after {position}")
    checks.equal(got[0].get("from"), position, f"{label}: ... resumed from the token's position {position}")
    ws.close()
    checks.equal(head_of(server), head + 6, f"{label}: the cross-topic attempts published nothing")


def cookie_origin(label: str, server: Server, client: Client) -> None:
    """The cookie is ambient: a request carrying it from a foreign Origin is refused; a bearer is not ambient."""
    reader = mint("cookie-user", subscribe=["orders/1"], publish=["orders/1"])
    cookie = {"Cookie": f"{COOKIE}={reader}"}
    own = f"http://{HOST}:{server.port}"
    head = head_of(server)
    refused(client.history("topic=orders/1", headers={**cookie, "Origin": "http://evil.example"}), 403, "forbidden",
            f"{label}: cookie from Origin http://evil.example: history")
    refused(client.get("/v1/events?topic=orders/1", headers={**cookie, "Origin": "http://evil.example",
                                                              "Accept": "text/event-stream"}),
            403, "forbidden", f"{label}: cookie from a foreign Origin: SSE")
    refused(client.publish("orders/1", {"csrf": True}, headers={**cookie, "Origin": "https://evil.example"}), 403,
            "forbidden", f"{label}: cookie from a foreign Origin: publish")
    refused(client.history("topic=orders/1", headers={**cookie, "Origin": f"http://{HOST}:{server.port + 1}"}), 403,
            "forbidden", f"{label}: cookie from the same host on another port")
    upgrade_refused(ws_url(server), cookie, 403, "forbidden", f"{label}: cookie from a foreign Origin: WebSocket",
                    origin="http://evil.example")
    checks.equal(head_of(server), head, f"{label}: the foreign-origin cookie requests published nothing")
    for headers, what in [({**cookie, "Origin": own}, "cookie from its own Origin"), (cookie, "cookie without Origin"),
                          ({**bearer(reader), "Origin": "http://evil.example"}, "bearer from a foreign Origin")]:
        response = client.history("topic=orders/1", headers=headers)
        checks.equal(response.status_code, 200, f"{label}: {what}: history -> 200")
    ws = WS(ws_url(server), f"{label} cookie ws", headers=cookie, origin=own)
    ws.send({"op": "subscribe", "topics": ["orders/1"]})
    checks.equal(ws.next().get("type"), "subscribed", f"{label}: cookie from its own Origin: WebSocket subscribes")
    ws.close()


def after_refused_upgrade(label: str, server: Server) -> None:
    """A WebSocket upgrade answered as plain HTTP (401 for a bad bearer, 403 for a cookie from a foreign
    Origin) must leave its connection usable: either the answer says `Connection: close` and the server
    closes, or the next request on the connection is answered. A reverse proxy with upstream keepalive
    (nginx_sse.conf) sends later requests on such a connection."""
    cookie = mint("cookie-user", subscribe=["orders/1"])
    cases = [("401 (bad bearer)", f"Authorization: Bearer {remember('not-a-valid-credential')}\r\n"),
             ("403 (cookie from a foreign Origin)", f"Cookie: {COOKIE}={cookie}\r\nOrigin: http://evil.example\r\n")]
    for what, extra in cases:
        key = base64.b64encode(os.urandom(16)).decode("ascii")
        upgrade = (f"GET /v1/ws HTTP/1.1\r\nHost: {HOST}:{server.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n").encode("ascii")
        name = f"{label}: after an upgrade refused with {what}, the connection answers the next request or closes"
        with RawHTTP(server.port) as conn:
            conn.send(upgrade)
            try:
                first = conn.read_response(5.0)
            except (HTTPClosed, TimeoutError) as error:
                checks.fail(name, f"no answer to the upgrade: {type(error).__name__}: {error}")
                continue
            RECEIVED.append(first.body.decode("utf-8", "replace"))
            said = first.header("connection")
            if (said or "").lower() == "close":
                ok = conn.closed_within(3.0)
                outcome = "closed" if ok else "still open 3 s after Connection: close"
            else:
                conn.send(f"GET /healthz HTTP/1.1\r\nHost: {HOST}:{server.port}\r\n\r\n".encode("ascii"))
                try:
                    second = conn.read_response(5.0)
                    ok, outcome = second.status == 200, second.short()
                except (HTTPClosed, TimeoutError) as error:
                    ok, outcome = False, f"{type(error).__name__}: {error}"
            checks.check(ok, name, f"upgrade answered {first.status} with Connection: {said}; "
                                   f"then GET /healthz on the same connection: {outcome}")


def query_tokens(label: str, server: Server, client: Client) -> None:
    """access_token= works only with --allow-query-token, and is redacted from the debug log."""
    reader = mint("query-user", subscribe=["orders/1"])
    refused(client.history(f"topic=orders/1&access_token={reader}"), 401, "invalid_token",
            f"{label}: access_token= without --allow-query-token")
    refused(client.get(f"/v1/events?topic=orders/1&access_token={reader}", headers={"Accept": "text/event-stream"}),
            401, "invalid_token", f"{label}: access_token= without --allow-query-token: SSE")
    upgrade_refused(ws_url(server, f"access_token={reader}"), None, 401, "invalid_token",
                    f"{label}: access_token= without --allow-query-token: WebSocket")

    allowed = start_server("auth-query", "--allow-query-token")
    queried = Client(allowed.base_url)
    ids = [int(allowed.publish("orders/1", {"n": n})["id"]) for n in range(3)]
    response = queried.history(f"topic=orders/1&access_token={reader}")
    checks.equal((response.status_code, ids_of(response)), (200, ids),
                 f"{label}: --allow-query-token: history with access_token= -> 200, exact ids")
    status, opened = sse_outcome(allowed.url(f"/v1/events?topic=orders/1&lastEventId=0&access_token={reader}"))
    checks.equal((status, isinstance(opened, dict) and opened.get("from")), (200, 0),
                 f"{label}: --allow-query-token: SSE with access_token= -> 200")
    ws = WS(ws_url(allowed, f"access_token={reader}"), f"{label} query ws")
    ws.send({"op": "subscribe", "topics": ["orders/1"], "from": "earliest"})
    got = [ws.next() for _ in range(len(ids) + 2)]
    checks.equal([m.get("id") for m in got if m.get("type") == "event"], ids,
                 f"{label}: --allow-query-token: WebSocket with access_token= subscribes (no auth op)")
    ws.close()
    refused(queried.history("topic=orders/1&access_token=" + remember("bogus.query.token")), 401, "invalid_token",
            f"{label}: --allow-query-token: a bad access_token")
    refused(queried.history(f"topic=orders/2&access_token={reader}"), 403, "forbidden_topic",
            f"{label}: --allow-query-token: access_token= for orders/1 reading orders/2", selector="orders/2")
    log = allowed.read_log()
    redacted = [line for line in log.splitlines() if "access_token=REDACTED" in line]
    checks.check(len(redacted) >= 4, f"{label}: --allow-query-token: the debug request lines show "
                                     f"access_token=REDACTED ({len(redacted)} lines)", log[-800:])
    checks.check(reader not in log and reader.split(".")[2] not in log,
                 f"{label}: --allow-query-token: the token text is not in eventlogd's log")
    no_leak(f"{label} (query tokens)", allowed)
    queried.close()
    allowed.close()


def other_key_setups(label: str) -> None:
    """Algorithm confusion against a server that has only the RSA public key; JWKS keys picked by kid."""
    server = start_server("auth-rsa-only", secret=False, ec_key=False)
    client = Client(server.base_url)
    good = claims("mallory", subscribe=["*"], publish=["*"])
    for name, key in [("RSA public key PEM", KEYS.rsa_public_pem),
                      ("RSA public key PEM without its trailing newline", KEYS.rsa_public_pem.rstrip(b"\n"))]:
        token = forge_hs256({"alg": "HS256", "typ": "JWT"}, good, key)
        refused(client.history("topic=orders/1", token=token), 401, "invalid_token",
                f"{label}: RS256-only server: HS256 keyed with the {name}")
    response = client.history("topic=orders/1", token=mint("reader", "RS256", subscribe=["orders/1"]))
    checks.equal(response.status_code, 200, f"{label}: RS256-only server: a real RS256 token -> 200")
    refused(client.history("topic=orders/1", token=mint("reader", subscribe=["orders/1"])), 401, "invalid_token",
            f"{label}: RS256-only server: an HS256 token (no secret configured)")
    no_leak(f"{label} (RS256 only)", server)
    client.close()
    server.close()

    server = Server(BINARY, name="auth-jwks", args=["--jwks-file", KEYS.jwks_file, "--jwt-audience", AUDIENCE,
                                                     "--jwt-issuer", ISSUER, "--jwt-leeway", "0s", "--log-level", "debug"],
                    http_headers=bearer(mint("root", "RS256", headers={"kid": "k1"}, publish=["*"], subscribe=["*"])))
    server.start()
    client = Client(server.base_url)
    response = client.history("topic=orders/1", token=mint("reader", "RS256", headers={"kid": "k1"}, subscribe=["orders/1"]))
    checks.equal(response.status_code, 200, f"{label}: JWKS server: RS256 with kid k1 -> 200")
    refused(client.history("topic=orders/1", token=mint("reader", "RS256", headers={"kid": "k2"}, subscribe=["orders/1"])),
            401, "invalid_token", f"{label}: JWKS server: kid k2 (unknown)")
    refused(client.history("topic=orders/1", token=forge_hs256({"alg": "HS256", "kid": "k1"}, good, KEYS.rsa_public_pem)),
            401, "invalid_token", f"{label}: JWKS server: HS256 with kid k1 keyed with the RSA public key PEM")
    no_leak(f"{label} (JWKS)", server)
    client.close()
    server.close()


# --------------------------------------------------------------------------------------------
# E) nginx in front: TLS, SSE unbuffered, WebSocket


def find_nginx() -> Optional[str]:
    explicit = os.environ.get("NGINX")
    if explicit:
        return explicit if os.path.isfile(explicit) and os.access(explicit, os.X_OK) else None
    for candidate in ("/usr/sbin/nginx", shutil.which("nginx") or ""):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def self_signed(directory: str) -> tuple:
    """A self-signed certificate for 127.0.0.1 (and localhost): (cert path, key path)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "eventlog conformance")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST)),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    with open(cert_path, "wb") as handle:
        handle.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as handle:
        handle.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    os.chmod(key_path, 0o600)
    return cert_path, key_path


class Nginx:
    """nginx from the filled-in nginx_sse.conf, in the foreground, in its own temp dir."""

    def __init__(self, binary: str, upstream_port: int) -> None:
        self.prefix = tempfile.mkdtemp(prefix="eventlog-conformance-nginx-")
        self.proc: Optional[subprocess.Popen] = None
        register_cleanup(self)
        self.cert, self.key = self_signed(self.prefix)
        self.port = free_port()
        with open(NGINX_TEMPLATE, encoding="utf-8") as handle:
            template = handle.read()
        values = {"PREFIX": self.prefix, "UPSTREAM": f"{HOST}:{upstream_port}", "LISTEN": f"{HOST}:{self.port}",
                  "SERVER_NAME": HOST, "CERT": self.cert, "KEY": self.key}
        text = template
        for name, value in values.items():
            text = text.replace("{{" + name + "}}", value)
        if "{{" in text:
            raise RuntimeError(f"unfilled placeholder in {NGINX_TEMPLATE}: {text[text.index('{{'):][:40]}")
        self.conf = os.path.join(self.prefix, "nginx.conf")
        with open(self.conf, "w", encoding="utf-8") as handle:
            handle.write(text)
        self.log = os.path.join(self.prefix, "error.log")
        self.proc = subprocess.Popen([binary, "-p", self.prefix, "-e", self.log, "-c", self.conf],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     preexec_fn=_die_with_parent)
        self.ssl = ssl.create_default_context(cafile=self.cert)
        self.base_url = f"https://{HOST}:{self.port}"
        deadline = time.monotonic() + 15
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.proc.returncode}: {self.stderr()} {self.error_log()}")
            try:
                if httpx.get(self.base_url + "/healthz", verify=self.ssl, trust_env=False, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError as error:
                last = repr(error)
            time.sleep(0.1)
        raise RuntimeError(f"nginx did not answer https /healthz within 15 s ({last}): {self.error_log()}")

    def stderr(self) -> str:
        if self.proc is None or self.proc.poll() is None or self.proc.stderr is None:
            return ""
        return self.proc.stderr.read().decode("utf-8", "replace")[-1000:]

    def error_log(self) -> str:
        try:
            with open(self.log, encoding="utf-8", errors="replace") as handle:
                return handle.read()[-1500:]
        except OSError:
            return "(no error.log)"

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        shutil.rmtree(self.prefix, ignore_errors=True)
        unregister_cleanup(self)


def scenario_nginx() -> None:
    label = "nginx"
    binary = find_nginx()
    if binary is None:
        checks.fail(f"{label}: nginx is installed", "no nginx binary (/usr/sbin/nginx, nginx on PATH or $NGINX); "
                                                    "tools/conformance/run.sh installs Debian's nginx package")
        return
    version = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
    print(f"# {(version.stderr or version.stdout).strip()}", flush=True)
    server = start_server("auth-nginx")
    try:
        proxy = Nginx(binary, server.port)
    except Exception as error:  # noqa: BLE001
        checks.fail(f"{label}: nginx starts with tools/conformance/nginx_sse.conf", f"{type(error).__name__}: {error}")
        server.close()
        return
    checks.check(True, f"{label}: nginx serves https://{HOST}:{proxy.port} with nginx_sse.conf and a self-signed "
                       f"certificate")
    client = Client(proxy.base_url, verify=proxy.ssl)
    reader = mint("proxied", subscribe=["orders/1"], publish=["orders/1"])
    seeded = [int(server.publish("orders/1", {"seed": n})["id"]) for n in range(2)]

    refused(client.history("topic=orders/1"), 401, "authentication_required",
            f"{label}: history without a credential through nginx (WWW-Authenticate passed on)")
    response = client.history("topic=orders/1", token=reader)
    checks.equal((response.status_code, ids_of(response)), (200, seeded),
                 f"{label}: history with a bearer through nginx -> 200 (Authorization forwarded)")
    response = client.publish("orders/1", {"via": "nginx"}, token=reader)
    checks.equal(response.status_code, 201, f"{label}: publish with a bearer through nginx -> 201")
    status, _ = sse_outcome(proxy.base_url + "/v1/events?topic=orders/1", None, proxy.ssl)
    checks.equal(status, 401, f"{label}: SSE without a credential through nginx -> 401")

    # SSE through nginx: each live event within 1 s of its publish's answer.
    stream = SSEReader(proxy.base_url + "/v1/events?topic=orders/1", bearer(reader), proxy.ssl)
    try:
        checks.equal((stream.wait_ready(), stream.response_headers.get("content-type")),
                     (200, "text/event-stream; charset=utf-8"), f"{label}: SSE with a bearer through nginx -> 200")
        stream.until_event("eventlog.caughtup")
        delays, got, want = [], [], []
        for n in range(5):
            time.sleep(0.2)
            answer = server.publish("orders/1", {"live": n})
            published = time.monotonic()
            want.append(int(answer["id"]))
            try:
                arrived, frame = stream.next(3.0)
            except (TimeoutError, EOFError) as error:
                got.append(f"{type(error).__name__}: {error}")
                continue
            got.append(int(frame.id) if frame.has_id else frame.lines)
            delays.append(arrived - published)
        checks.equal(got, want, f"{label}: SSE through nginx: every live event, in order")
        checks.check(len(delays) == 5 and max(delays) < 1.0,
                     f"{label}: SSE through nginx is not buffered: each event within 1 s of its publish "
                     f"(slowest {max(delays or [0]) * 1000:.0f} ms)", [round(d, 3) for d in delays])
    finally:
        stream.close()

    # WebSocket through nginx.
    wss = f"wss://{HOST}:{proxy.port}/v1/ws"
    upgrade_refused(wss, bearer(remember("garbage-through-nginx")), 401, "invalid_token",
                    f"{label}: WebSocket upgrade with a bad bearer through nginx", ssl_context=proxy.ssl)
    try:
        ws = WS(wss, f"{label} wss", headers=bearer(reader), ssl_context=proxy.ssl)
    except Exception as error:  # noqa: BLE001
        detail = f"status {error.response.status_code} {bytes(error.response.body or b'')[:200]!r}" \
            if isinstance(error, InvalidStatus) else f"{type(error).__name__}: {error}"
        checks.fail(f"{label}: WebSocket upgrade with a bearer through nginx -> 101", detail)
        print(f"# nginx error.log: {proxy.error_log()[-600:]}", flush=True)
        no_leak(label, server)
        client.close()
        proxy.close()
        server.close()
        return
    checks.check(True, f"{label}: WebSocket upgrade with a bearer through nginx -> 101")
    ws.send({"op": "subscribe", "topics": ["orders/1"], "ref": "s"})
    checks.equal([ws.next().get("type"), ws.next().get("type")], ["subscribed", "caughtup"],
                 f"{label}: WebSocket through nginx with a bearer: subscribed, caughtup")
    answer = server.publish("orders/1", {"ws": 1})
    published = time.monotonic()
    message = ws.next(3.0)
    checks.check(message.get("id") == int(answer["id"]) and time.monotonic() - published < 1.0,
                 f"{label}: WebSocket through nginx: a live event within 1 s", message)
    ws.send({"op": "publish", "ref": "p", "topic": "orders/1", "data": {"ws": 2}})
    messages, _ = ws.messages_for(1.0)
    checks.check([m.get("type") for m in messages] in (["ack", "event"], ["event", "ack"]),
                 f"{label}: WebSocket through nginx: publish -> ack and the event", messages)
    renewal = mint("proxied", subscribe=["orders/1"], ttl=120)
    ws.send({"op": "auth", "token": renewal, "ref": "a"})
    message = ws.next()
    checks.equal((message.get("type"), message.get("ref")), ("authenticated", "a"),
                 f"{label}: WebSocket through nginx: auth op -> authenticated")
    ws.close()
    no_leak(label, server)
    client.close()
    proxy.close()
    server.close()


# --------------------------------------------------------------------------------------------


def main(argv: list) -> int:
    global BINARY, KEYS
    install_deadline(int(os.environ.get("CONFORMANCE_DEADLINE", "420")))
    started = time.monotonic()
    try:
        BINARY = eventlogd_path(argv[1] if len(argv) > 1 else None)
        print(f"# eventlogd: {BINARY}", flush=True)
        print(f"# PyJWT {jwt.__version__}, websockets {websockets.__version__}, httpx {httpx.__version__}", flush=True)
        KEYS = Keys()
        checks.run_scenario("A) HTTP with bearer tokens: publish, batch, history, last, topics, metrics, healthz, "
                            "401/403 bodies; SSE ends at the token's exp", scenario_http)
        checks.run_scenario("B) WebSocket: auth op, forbidden subscribe/publish, bad tokens, expiry warning, "
                            "renewal, close 1008", scenario_websocket)
        checks.run_scenario("C) Chromium EventSource with the eventlog_token cookie across SIGKILL and token "
                            "expiry", scenario_browser)
        checks.run_scenario("D) hostile credentials, cross-topic reads, query tokens, foreign Origin",
                            scenario_hostile)
        checks.run_scenario("E) nginx in front: TLS, unbuffered SSE, WebSocket", scenario_nginx)
    except BaseException as error:  # noqa: BLE001 - deadline, missing binary, Ctrl-C: still summarize
        checks.fail(f"run aborted by {type(error).__name__}", str(error))
    finally:
        signal.alarm(0)
        if KEYS is not None:
            KEYS.remove()
    print(f"# auth checks took {time.monotonic() - started:.1f} s", flush=True)
    return checks.summary()


if __name__ == "__main__":
    code = main(sys.argv)
    sys.exit(code)
