"""Helpers for the eventlog conformance checks.

Everything here talks to a real `eventlogd` process on 127.0.0.1 only:

- `Server` starts the binary on an ephemeral port with a database in a fresh temp directory,
  waits for /healthz, publishes events with httpx, and can SIGKILL / SIGTERM / restart it on the
  same database. Every server (and every curl started by `CurlStream`) is killed at exit, even
  when a check fails or the script is interrupted; the children also get SIGKILL from the kernel
  if this Python process dies (PR_SET_PDEATHSIG).
- `SSEParser` is a small, independent Server-Sent Events parser that keeps the raw fields of each
  block, so a check can see exactly which lines the server wrote (for example that a control
  event has no `id:` line), which a spec-following client hides.
- `CurlStream` runs `curl -sN` and feeds its stdout through `SSEParser` incrementally.
- `RawWebSocket` is a deliberately small WebSocket client on a plain socket (handshake by hand,
  masked frames written byte by byte), for what a well-behaved library refuses to send: binary
  or invalid UTF-8 frames, oversized or hand-fragmented messages, unknown opcodes, unmasked
  frames, and a client that never answers pings.
- `Checks` prints one `ok - ...` / `FAIL - ...` line per check and the closing
  `N passed, M failed` line.

Every wait is bounded in time, and every retry loop in count.
"""

from __future__ import annotations

import atexit
import base64
import ctypes
import hashlib
import json
import os
import queue
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"

# --------------------------------------------------------------------------------------------
# Process hygiene: nothing we start may outlive us.

_children_lock = threading.Lock()
_children: "set[Any]" = set()


def _register(obj: Any) -> None:
    with _children_lock:
        _children.add(obj)


def _unregister(obj: Any) -> None:
    with _children_lock:
        _children.discard(obj)


def register_cleanup(obj: Any) -> None:
    """Have `obj.close()` called by `cleanup_all` (at exit and after every scenario)."""
    _register(obj)


def unregister_cleanup(obj: Any) -> None:
    _unregister(obj)


def cleanup_all() -> None:
    """Kills every server and curl this process started. Safe to call more than once."""
    with _children_lock:
        items = list(_children)
    for item in items:
        try:
            item.close()
        except Exception:  # noqa: BLE001 - cleanup must go on
            pass


atexit.register(cleanup_all)


def _exit_on_signal(signum: int, _frame: Any) -> None:
    # `timeout` sends SIGTERM: turn it into SystemExit so atexit handlers run.
    raise SystemExit(128 + signum)


for _sig in (signal.SIGTERM, signal.SIGHUP):
    try:
        signal.signal(_sig, _exit_on_signal)
    except (ValueError, OSError):  # not the main thread, or not supported
        pass

_PR_SET_PDEATHSIG = 1
try:
    _libc = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover - non-glibc platform
    _libc = None


def _die_with_parent() -> None:
    """preexec_fn: the child gets SIGKILL when this Python process exits (Linux only)."""
    if _libc is not None:
        try:
            _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except Exception:  # noqa: BLE001
            pass


# --------------------------------------------------------------------------------------------
# Locating and running eventlogd


def eventlogd_path(explicit: Optional[str] = None) -> str:
    """The binary: the argument, else $EVENTLOGD, else <repo>/.build/debug/eventlogd."""
    candidate = explicit or os.environ.get("EVENTLOGD") or str(REPO_ROOT / ".build" / "debug" / "eventlogd")
    path = Path(candidate)
    if not path.is_absolute():
        path = (Path.cwd() / path) if (Path.cwd() / path).exists() else (REPO_ROOT / path)
    if not path.is_file() or not os.access(path, os.X_OK):
        raise FileNotFoundError(
            f"eventlogd binary not found or not executable: {path} "
            "(build it with `swift build --product eventlogd`, or set EVENTLOGD)"
        )
    return str(path)


def free_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class ServerError(RuntimeError):
    pass


_LISTENING = re.compile(r"\bport=(\d+)\b.*\blistening\b")
_MISSING = object()


class Server:
    """One eventlogd process (and its restarts) on one database in a private temp directory, or on a
    PostgreSQL database given as `db=` (then several Servers may be nodes of one log)."""

    def __init__(
        self,
        binary: Optional[str] = None,
        *,
        args: Iterable[str] = (),
        name: str = "eventlogd",
        keep_tmp: Optional[bool] = None,
        env: Optional[dict] = None,
        http_headers: Optional[dict] = None,
        db: Optional[str] = None,
    ) -> None:
        self.binary = eventlogd_path(binary)
        self.args = list(args)
        self.env = dict(env or {})  # added to this script's environment for the process
        self.name = name
        self.tmp = tempfile.mkdtemp(prefix=f"eventlog-conformance-{name}-")
        # `db`: a PostgreSQL URL (postgres://user@host:port/dbname) shared with other nodes instead of
        # a SQLite file in the temp directory. The temp directory then only holds this node's logs, and
        # nothing in the database is ever deleted here.
        self.db = db if db is not None else os.path.join(self.tmp, "eventlog.db")
        self.port: Optional[int] = None
        self.proc: Optional[subprocess.Popen] = None
        self.generation = 0
        self.log_path: Optional[str] = None
        self.keep_tmp = keep_tmp if keep_tmp is not None else bool(os.environ.get("CONFORMANCE_KEEP_TMP"))
        # Sent with every request of `http` (publish, history, health): e.g. an Authorization header.
        self.http_headers = dict(http_headers or {})
        self.http = httpx.Client(timeout=httpx.Timeout(10.0), trust_env=False, headers=self.http_headers)
        _register(self)

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise ServerError(f"{self.name} is not started")
        return f"http://{HOST}:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, port: int = 0, timeout: float = 30.0) -> "Server":
        """Starts the process (port 0: any free port, read back from its log) and waits for /healthz."""
        if self.running:
            raise ServerError(f"{self.name} is already running")
        self.generation += 1
        self.log_path = os.path.join(self.tmp, f"eventlogd.{self.generation}.log")
        command = [self.binary, "--host", HOST, "--port", str(port), "--db", self.db, *self.args]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
                cwd=self.tmp,
                env={**os.environ, **self.env} if self.env else None,
            )
        deadline = time.monotonic() + timeout
        found: Optional[int] = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(
                    f"{self.name} exited with {self.proc.returncode} while starting:\n{self.log_tail()}"
                )
            match = _LISTENING.search(self.read_log())
            if match:
                found = int(match.group(1))
                break
            time.sleep(0.05)
        if found is None:
            self._kill_now()
            raise ServerError(f"{self.name} did not log 'listening' within {timeout}s:\n{self.log_tail()}")
        if port and found != port:
            self._kill_now()
            raise ServerError(f"{self.name} asked for port {port} but listens on {found}")
        self.port = found
        self.wait_healthy(max(1.0, deadline - time.monotonic()))
        return self

    def wait_healthy(self, timeout: float = 15.0) -> dict:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            if not self.running:
                raise ServerError(f"{self.name} exited while waiting for /healthz:\n{self.log_tail()}")
            try:
                response = self.http.get(self.url("/healthz"), timeout=2.0)
                if response.status_code == 200:
                    return response.json()
                last = f"HTTP {response.status_code}: {response.text[:200]}"
            except httpx.HTTPError as error:
                last = repr(error)
            time.sleep(0.05)
        raise ServerError(f"{self.name} /healthz did not answer 200 within {timeout}s (last: {last})")

    def health(self) -> dict:
        response = self.http.get(self.url("/healthz"))
        response.raise_for_status()
        return response.json()

    def kill(self, timeout: float = 10.0) -> int:
        """SIGKILL: a crash. Returns the exit status (negative signal number)."""
        if self.proc is None:
            raise ServerError(f"{self.name} was never started")
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        return self.proc.wait(timeout=timeout)

    def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM: graceful shutdown. Returns the exit status; SIGKILLs if it does not stop in time."""
        if self.proc is None:
            raise ServerError(f"{self.name} was never started")
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._kill_now()
            raise ServerError(f"{self.name} did not exit within {timeout}s of SIGTERM (killed)")

    def restart(self, same_port: bool = True, timeout: float = 30.0) -> "Server":
        """Starts a new process on the same database, on the same port when it can be had again."""
        if self.running:
            raise ServerError(f"{self.name} is still running; kill() or terminate() it first")
        if same_port and self.port:
            wanted = self.port
            for _attempt in range(5):
                try:
                    return self.start(port=wanted, timeout=timeout)
                except ServerError as error:
                    if "cannot bind" not in self.read_log() and "listens on" not in str(error):
                        raise
                    time.sleep(0.5)
        return self.start(port=0, timeout=timeout)

    def _kill_now(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGKILL)
                self.proc.wait(timeout=10)
            except Exception:  # noqa: BLE001
                pass

    def drop_client_connections(self) -> None:
        """Closes the keep-alive connections `http` holds (a fresh client takes its place), so the
        server's open connections are only those a check opens itself."""
        self.http.close()
        self.http = httpx.Client(timeout=httpx.Timeout(10.0), trust_env=False, headers=self.http_headers)

    def close(self) -> None:
        self._kill_now()
        try:
            self.http.close()
        except Exception:  # noqa: BLE001
            pass
        if not self.keep_tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
        _unregister(self)

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- logs ---------------------------------------------------------------------------------

    def read_log(self) -> str:
        if not self.log_path:
            return ""
        try:
            with open(self.log_path, "rb") as log:
                return log.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.read_log().splitlines()[-lines:])

    # -- HTTP ---------------------------------------------------------------------------------

    def publish(
        self,
        topic: str,
        data: Any = _MISSING,
        *,
        type: Optional[str] = None,  # noqa: A002 - the wire name
        key: Optional[str] = None,
        idempotency_key: Optional[str] = None,
        expect_status: int = 201,
    ) -> dict:
        """POST /v1/events; returns the answer ({"id","topic","time"}). Raises unless the status matches."""
        body: dict = {"topic": topic}
        if type is not None:
            body["type"] = type
        if key is not None:
            body["key"] = key
        if data is not _MISSING:
            body["data"] = data
        headers = {"Content-Type": "application/json"}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        response = self.http.post(self.url("/v1/events"), content=json.dumps(body), headers=headers)
        if response.status_code != expect_status:
            raise ServerError(
                f"publish {body!r}: expected HTTP {expect_status}, got {response.status_code}: {response.text[:300]}"
            )
        return response.json()


    def history(self, topic: Optional[str] = None, after: int = 0, limit: int = 1000) -> dict:
        """GET /v1/events as JSON: {"events":[...],"next":N,"head":H,"earliest":E}."""
        params: list = [("after", str(after)), ("limit", str(limit))]
        if topic is not None:
            params.append(("topic", topic))
        response = self.http.get(self.url("/v1/events"), params=params, headers={"Accept": "application/json"})
        if response.status_code != 200:
            raise ServerError(f"history {params!r}: HTTP {response.status_code}: {response.text[:300]}")
        return response.json()


# --------------------------------------------------------------------------------------------
# An independent SSE parser (WHATWG "event stream interpretation"), keeping raw fields.


@dataclass
class Frame:
    """One block of an event stream, up to the blank line that ends it."""

    fields: list = field(default_factory=list)  # [(name, value)] in order, comments excluded
    comments: list = field(default_factory=list)  # text after ':' of comment lines
    lines: list = field(default_factory=list)  # the raw lines, without line ends

    def values(self, name: str) -> list:
        return [value for field_name, value in self.fields if field_name == name]

    @property
    def id(self) -> Optional[str]:
        ids = self.values("id")
        return ids[-1] if ids else None

    @property
    def has_id(self) -> bool:
        return bool(self.values("id"))

    @property
    def event(self) -> Optional[str]:
        events = self.values("event")
        return events[-1] if events else None

    @property
    def data(self) -> Optional[str]:
        """The data lines joined with LF, as a browser rebuilds it; None when there is no data line."""
        lines = self.values("data")
        return "\n".join(lines) if lines else None

    @property
    def retry(self) -> Optional[str]:
        values = self.values("retry")
        return values[-1] if values else None

    @property
    def is_comment_only(self) -> bool:
        return not self.fields and bool(self.comments)

    def __repr__(self) -> str:
        return f"Frame({self.lines!r})"


class SSEParser:
    """Feed bytes; get complete frames. Lines end with CRLF, LF or CR (a CR at the end of a chunk
    waits for the next chunk to see whether an LF follows)."""

    def __init__(self) -> None:
        self._pending = b""
        self._current = Frame()
        self.raw = bytearray()
        self.first_line: Optional[str] = None

    def feed(self, chunk: bytes) -> list:
        self.raw.extend(chunk)
        data = self._pending + chunk
        frames = []
        start = 0
        index = 0
        length = len(data)
        while index < length:
            byte = data[index]
            if byte == 0x0A or byte == 0x0D:
                if byte == 0x0D and index + 1 == length:
                    break  # maybe CRLF split across chunks
                line = data[start:index]
                index += 2 if (byte == 0x0D and data[index + 1] == 0x0A) else 1
                start = index
                frame = self._line(line.decode("utf-8", "replace"))
                if frame is not None:
                    frames.append(frame)
            else:
                index += 1
        self._pending = data[start:]
        return frames

    def _line(self, line: str) -> Optional[Frame]:
        if self.first_line is None:
            self.first_line = line
        if line == "":
            frame = self._current
            self._current = Frame()
            return frame if frame.lines else None
        self._current.lines.append(line)
        if line.startswith(":"):
            self._current.comments.append(line[1:].lstrip(" "))
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        self._current.fields.append((name, value))
        return None


class StreamEnded(Exception):
    """The stream's connection ended (curl exited)."""


class CurlStream:
    """`curl -sN` reading an SSE stream; frames are parsed incrementally from its stdout."""

    def __init__(self, url: str, headers: Iterable[str] = (), max_time: float = 120.0) -> None:
        if not url.startswith(f"http://{HOST}:"):
            raise ValueError(f"only {HOST} is allowed: {url}")
        self.url = url
        fd, self.header_path = tempfile.mkstemp(prefix="eventlog-curl-headers-")
        os.close(fd)
        command = ["curl", "-sN", "--max-time", str(int(max_time)), "-D", self.header_path,
                   "-H", "Accept: text/event-stream"]
        for header in headers:
            command += ["-H", header]
        command.append(url)
        self.command = command
        self.parser = SSEParser()
        self.frames: "queue.Queue" = queue.Queue()
        self.proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        _register(self)
        self._reader = threading.Thread(target=self._read, name="curl-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        try:
            while True:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                for frame in self.parser.feed(chunk):
                    self.frames.put(frame)
        except OSError:
            pass
        finally:
            self.frames.put(None)  # end of stream

    def next_frame(self, timeout: float = 5.0, skip_comments: bool = True) -> Frame:
        """The next frame; raises TimeoutError after `timeout` seconds, StreamEnded at EOF."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no SSE frame within {timeout}s from curl {self.url}")
            try:
                frame = self.frames.get(timeout=remaining)
            except queue.Empty:
                raise TimeoutError(f"no SSE frame within {timeout}s from curl {self.url}") from None
            if frame is None:
                self.frames.put(None)  # stay ended
                raise StreamEnded(f"curl ended (exit {self.proc.poll()})")
            if skip_comments and frame.is_comment_only:
                continue
            return frame

    def collect(self, count: int, timeout: float = 10.0) -> list:
        """`count` non-comment frames, all within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        frames = []
        for _ in range(count):
            frames.append(self.next_frame(max(0.01, deadline - time.monotonic())))
        return frames

    def quiet_for(self, seconds: float) -> list:
        """Non-comment frames that arrive within `seconds` (normally none)."""
        extra = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                extra.append(self.next_frame(max(0.01, deadline - time.monotonic())))
            except TimeoutError:
                break
            except StreamEnded:
                break
        return extra

    def headers(self) -> dict:
        """The response headers curl dumped (-D), lower-cased names; the status line under ':status'."""
        result: dict = {}
        try:
            text = Path(self.header_path).read_text("latin-1")
        except OSError:
            return result
        for line in text.splitlines():
            if line.startswith("HTTP/"):
                result = {":status": line.split()[1] if len(line.split()) > 1 else ""}
            elif ":" in line:
                name, _, value = line.partition(":")
                result[name.strip().lower()] = value.strip()
        return result

    def close(self) -> Optional[int]:
        """Kills curl (the client disconnects) and waits for it."""
        code = None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        try:
            code = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self._reader.join(timeout=5)
        try:
            if self.proc.stdout:
                self.proc.stdout.close()
        except OSError:
            pass
        try:
            os.unlink(self.header_path)
        except OSError:
            pass
        _unregister(self)
        return code

    def __enter__(self) -> "CurlStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# --------------------------------------------------------------------------------------------
# A raw WebSocket client (RFC 6455) on a plain socket, for frames a library will not send.

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class WSOpcode:
    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


@dataclass
class WSFrame:
    fin: bool
    opcode: int
    payload: bytes

    @property
    def close_code(self) -> Optional[int]:
        if self.opcode != WSOpcode.CLOSE or len(self.payload) < 2:
            return None
        return struct.unpack("!H", self.payload[:2])[0]

    @property
    def close_reason(self) -> str:
        return self.payload[2:].decode("utf-8", "replace") if self.opcode == WSOpcode.CLOSE else ""

    def text(self) -> str:
        return self.payload.decode("utf-8", "replace")

    def __repr__(self) -> str:
        body = self.payload[:120]
        return f"WSFrame(fin={self.fin}, opcode={self.opcode:#x}, {len(self.payload)} bytes: {body!r})"


class WSClosed(Exception):
    """The TCP connection ended (EOF or reset) before the expected frame arrived."""


class RawWebSocket:
    """A hand-written WebSocket client: the upgrade request, masked frames and a frame reader.

    It answers nothing by itself (no pong, no close reply) unless asked, so a check sees exactly
    what the server sends and when. Every read is bounded by a timeout."""

    def __init__(self, port: int, path: str = "/v1/ws", timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""
        self.closed = False
        register_cleanup(self)
        key = base64.b64encode(os.urandom(16)).decode("ascii")
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.sock.sendall(request.encode("ascii"))
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buffer:
            self._fill(deadline, "the upgrade response")
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status_line = lines[0]
        self.headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        expected_accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode("ascii")).digest()).decode("ascii")
        if not self.status_line.startswith("HTTP/1.1 101") or self.headers.get("sec-websocket-accept") != expected_accept:
            self.close()
            raise ServerError(f"WebSocket upgrade refused: {self.status_line!r} {self.headers!r}")

    # -- writing ------------------------------------------------------------------------------

    @staticmethod
    def encode_frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True,
                     length: Optional[int] = None) -> bytes:
        """One frame. `length` overrides the length field (to announce more than is sent)."""
        size = len(payload) if length is None else length
        first = (0x80 if fin else 0) | (opcode & 0x0F)
        mask_bit = 0x80 if mask else 0
        if size < 126:
            header = struct.pack("!BB", first, mask_bit | size)
        elif size < 1 << 16:
            header = struct.pack("!BBH", first, mask_bit | 126, size)
        else:
            header = struct.pack("!BBQ", first, mask_bit | 127, size)
        if not mask:
            return header + payload
        key = os.urandom(4)
        repeated = (key * (len(payload) // 4 + 1))[: len(payload)]
        masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(len(payload), "big") \
            if payload else b""
        return header + key + masked

    def send_raw(self, data: bytes) -> None:
        self.sock.settimeout(10.0)
        self.sock.sendall(data)

    def send_frame(self, opcode: int, payload: bytes = b"", **kwargs: Any) -> None:
        self.send_raw(self.encode_frame(opcode, payload, **kwargs))

    def send_text(self, text: str) -> None:
        self.send_frame(WSOpcode.TEXT, text.encode("utf-8"))

    def send_json(self, value: Any) -> None:
        self.send_text(json.dumps(value))

    # -- reading ------------------------------------------------------------------------------

    def _fill(self, deadline: float, what: str) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no {what} within the time allowed")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError(f"no {what} within the time allowed") from None
        except (ConnectionResetError, BrokenPipeError) as error:
            raise WSClosed(f"connection reset while waiting for {what}: {error}") from None
        if not chunk:
            raise WSClosed(f"connection closed (EOF) while waiting for {what}")
        self.buffer += chunk

    def _need(self, count: int, deadline: float) -> bytes:
        while len(self.buffer) < count:
            self._fill(deadline, "frame")
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def recv_frame(self, timeout: float = 5.0) -> WSFrame:
        """The next frame from the server (which must be unmasked)."""
        deadline = time.monotonic() + timeout
        first, second = self._need(2, deadline)
        size = second & 0x7F
        if size == 126:
            size = struct.unpack("!H", self._need(2, deadline))[0]
        elif size == 127:
            size = struct.unpack("!Q", self._need(8, deadline))[0]
        if second & 0x80:
            key = self._need(4, deadline)
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(self._need(size, deadline)))
        else:
            payload = self._need(size, deadline)
        return WSFrame(bool(first & 0x80), first & 0x0F, payload)

    def recv_json(self, timeout: float = 5.0, answer_pings: bool = True) -> Any:
        """The next text message as JSON (pings answered or skipped; a close frame is an error)."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self.recv_frame(max(0.01, deadline - time.monotonic()))
            if frame.opcode == WSOpcode.PING:
                if answer_pings:
                    self.send_frame(WSOpcode.PONG, frame.payload)
                continue
            if frame.opcode == WSOpcode.PONG:
                continue
            if frame.opcode == WSOpcode.TEXT and frame.fin:
                return json.loads(frame.payload.decode("utf-8"))
            raise WSClosed(f"expected a text message, got {frame!r}")

    def wait_close(self, timeout: float = 5.0, answer_pings: bool = False) -> tuple:
        """Reads until the server's close frame: (close frame or None at EOF, [frames before it]).
        Answers the close (and pings only when asked). On timeout the TimeoutError carries
        `.frames`, the frames that did arrive."""
        deadline = time.monotonic() + timeout
        before: list = []
        while True:
            try:
                frame = self.recv_frame(max(0.01, deadline - time.monotonic()))
            except WSClosed:
                return None, before
            except TimeoutError as error:
                error.frames = before  # type: ignore[attr-defined] - what did arrive, for the report
                raise
            if frame.opcode == WSOpcode.CLOSE:
                try:
                    self.send_frame(WSOpcode.CLOSE, frame.payload[:2])
                except OSError:
                    pass
                return frame, before
            if frame.opcode == WSOpcode.PING and answer_pings:
                self.send_frame(WSOpcode.PONG, frame.payload)
            before.append(frame)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self.sock.close()
            except OSError:
                pass
        unregister_cleanup(self)

    def __enter__(self) -> "RawWebSocket":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# --------------------------------------------------------------------------------------------
# Reporting


class Checks:
    """One line per check, and the closing `N passed, M failed` line."""

    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def check(self, condition: Any, name: str, detail: Any = None) -> bool:
        if condition:
            self.passed += 1
            print(f"ok - {name}", flush=True)
            return True
        self.failed += 1
        suffix = f": {detail}" if detail is not None else ""
        print(f"FAIL - {name}{suffix}", flush=True)
        return False

    def equal(self, actual: Any, expected: Any, name: str) -> bool:
        return self.check(actual == expected, name, f"expected {expected!r}, got {actual!r}")

    def fail(self, name: str, detail: Any = None) -> None:
        self.check(False, name, detail)

    def run_scenario(self, name: str, body: Callable[[], None]) -> None:
        """Runs one scenario; an exception is one failed check (with its traceback), not the end."""
        print(f"# {name}", flush=True)
        try:
            body()
        except Exception as error:  # noqa: BLE001
            self.fail(f"{name}: aborted by {type(error).__name__}", str(error).strip().replace("\n", " | ")[:2000])
            traceback.print_exc(file=sys.stdout)
            sys.stdout.flush()
        finally:
            cleanup_all()

    def summary(self) -> int:
        print(f"{self.passed} passed, {self.failed} failed", flush=True)
        return 0 if self.failed == 0 and self.passed > 0 else 1


class Deadline(Exception):
    pass


def install_deadline(seconds: int) -> None:
    """Raises Deadline in the main thread after `seconds` (a bound on the whole script)."""

    def _fire(_signum: int, _frame: Any) -> None:
        raise Deadline(f"script deadline of {seconds}s reached")

    signal.signal(signal.SIGALRM, _fire)
    signal.alarm(seconds)


# --------------------------------------------------------------------------------------------
# eventlog-maint, process memory, whole-log reads and a raw HTTP client (crash.py, hostile.py).


def eventlog_maint_path(explicit: Optional[str] = None, near: Optional[str] = None) -> str:
    """The eventlog-maint binary: the argument, else $EVENTLOG_MAINT, else next to the eventlogd
    binary `near` or $EVENTLOGD, else <repo>/.build/debug/eventlog-maint."""
    chosen = explicit or os.environ.get("EVENTLOG_MAINT")
    if chosen:
        if not (Path(chosen).is_file() and os.access(chosen, os.X_OK)):
            raise FileNotFoundError(f"eventlog-maint binary not found or not executable: {chosen}")
        return str(Path(chosen).resolve())
    candidates = []
    if near:
        candidates.append(str(Path(near).resolve().parent / "eventlog-maint"))
    if os.environ.get("EVENTLOGD"):
        candidates.append(str(Path(os.environ["EVENTLOGD"]).resolve().parent / "eventlog-maint"))
    candidates.append(str(REPO_ROOT / ".build" / "debug" / "eventlog-maint"))
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return str(Path(candidate).resolve())
    raise FileNotFoundError(
        "eventlog-maint binary not found (build it with `swift build --product eventlog-maint`, "
        f"or set EVENTLOG_MAINT); tried {[c for c in candidates if c]}"
    )


def run_maint(binary: str, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Runs `eventlog-maint ARGS...` to completion (killed after `timeout` s); output captured as text."""
    proc = subprocess.Popen(
        [binary, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        preexec_fn=_die_with_parent, text=True, errors="replace",
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=10)
        err = (err or "") + f"\n(killed after {timeout}s)"
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def rss_bytes(pid: int) -> Optional[int]:
    """The resident set size of a process (VmRSS in /proc/PID/status), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def all_history(server: "Server", topic: Optional[str] = None, max_pages: int = 10_000) -> tuple:
    """Every retained event (GET /v1/events as JSON, 1000 per page): (events, last page's answer)."""
    events: list = []
    after = 0
    page: dict = {}
    for _ in range(max_pages):
        page = server.history(topic, after=after, limit=1000)
        events.extend(page["events"])
        if len(page["events"]) < 1000:
            return events, page
        after = page["events"][-1]["id"]
    raise ServerError(f"history did not end within {max_pages} pages")


class HTTPClosed(Exception):
    """The server closed (or reset) the connection before a whole response arrived."""


@dataclass
class RawResponse:
    version: str
    status: int
    reason: str
    headers: list  # [(name, value)] in order, names as sent
    body: bytes
    complete: bool = True  # False: a close-delimited body that had not ended when reading stopped

    def header(self, name: str) -> Optional[str]:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def json(self) -> Any:
        try:
            return json.loads(self.body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            return None

    @property
    def error_code(self) -> Optional[str]:
        body = self.json()
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            return body["error"].get("code")
        return None

    @property
    def is_json_error(self) -> bool:
        """A JSON error body as the contract describes it: {"error":{"code":..,"message":..}}."""
        body = self.json()
        return (
            (self.header("content-type") or "").startswith("application/json")
            and isinstance(body, dict)
            and isinstance(body.get("error"), dict)
            and isinstance(body["error"].get("code"), str)
            and isinstance(body["error"].get("message"), str)
        )

    def short(self) -> str:
        return f"{self.version} {self.status} {self.reason} {self.body[:200]!r}"


class RawHTTP:
    """HTTP/1.x on a plain socket: sends exactly the bytes given, parses what comes back.
    Every read is bounded by a timeout."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""
        self.eof = False
        self.closed = False
        register_cleanup(self)

    def send(self, data: bytes) -> bool:
        """Sends `data`; False when the server has already closed or reset the connection."""
        try:
            self.sock.settimeout(10.0)
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def _fill(self, deadline: float) -> bool:
        """Reads more; False at EOF or reset. Raises TimeoutError at the deadline."""
        if self.eof:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no data within the time allowed")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("no data within the time allowed") from None
        except OSError:
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.buffer += chunk
        return True

    def _line(self, deadline: float) -> bytes:
        while b"\r\n" not in self.buffer:
            if not self._fill(deadline):
                raise HTTPClosed(f"connection closed inside a chunked body ({self.buffer[:100]!r})")
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def _exactly(self, count: int, deadline: float) -> bytes:
        while len(self.buffer) < count:
            if not self._fill(deadline):
                raise HTTPClosed(f"connection closed after {len(self.buffer)} of {count} body bytes")
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def read_response(self, timeout: float = 5.0, method: str = "GET", body_timeout: Optional[float] = None) -> RawResponse:
        """The next response. A body without Content-Length or chunked encoding is read until EOF,
        or for `body_timeout` seconds (then `complete` is False)."""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buffer:
            if not self._fill(deadline):
                raise HTTPClosed(f"connection closed before a response head ({self.buffer[:200]!r})")
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        status_text, _, reason = rest.partition(" ")
        try:
            status = int(status_text)
        except ValueError:
            raise HTTPClosed(f"not an HTTP status line: {lines[0]!r}") from None
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
        response = RawResponse(version, status, reason, headers, b"")
        if method == "HEAD" or status < 200 or status in (204, 304):
            return response
        length = response.header("content-length")
        if (response.header("transfer-encoding") or "").lower() == "chunked":
            body = b""
            while True:
                size = int(self._line(deadline).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self._line(deadline) != b"":
                        pass
                    break
                body += self._exactly(size, deadline)
                self._line(deadline)
            response.body = body
        elif length is not None:
            response.body = self._exactly(int(length), deadline)
        else:
            until = time.monotonic() + (body_timeout if body_timeout is not None else timeout)
            try:
                while self._fill(until):
                    pass
            except TimeoutError:
                response.complete = False
            response.body, self.buffer = self.buffer, b""
        return response

    def closed_within(self, seconds: float) -> bool:
        """Whether the server closes the connection within `seconds` (data that arrives meanwhile
        is kept in the buffer)."""
        deadline = time.monotonic() + seconds
        try:
            while self._fill(deadline):
                pass
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self.sock.close()
            except OSError:
                pass
        unregister_cleanup(self)

    def __enter__(self) -> "RawHTTP":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def raw_exchange(port: int, data: bytes, *, timeout: float = 5.0, method: str = "GET",
                 close_within: float = 0.0) -> tuple:
    """Sends `data` on a new connection and reads one response: (RawResponse or the HTTPClosed /
    TimeoutError raised instead, closed?) where closed? says whether the server closed the
    connection within `close_within` seconds after the response (None when not asked)."""
    with RawHTTP(port) as conn:
        conn.send(data)
        try:
            response: Any = conn.read_response(timeout, method=method)
        except (HTTPClosed, TimeoutError) as error:
            return error, conn.eof or None
        closed = conn.closed_within(close_within) if close_within > 0 else None
        return response, closed
