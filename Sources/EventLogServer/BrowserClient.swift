/// The browser client served at `/v1/eventlog.js`: plain modern JavaScript, no build step.
///
/// It gives WebSocket subscriptions what `EventSource` gives SSE: reconnect with backoff and
/// jitter, resume from the last token, and `gap` / `reset` / `caughtup` callbacks; plus publish
/// with acks. The README documents its API.
enum BrowserClient {
    static let script = #"""
        // eventlog.js: WebSocket client for eventlogd. Usage:
        //   const log = new EventLogSocket("ws://host:8080/v1/ws", {
        //     topics: ["orders/*"], from: "earliest",            // or resume: "<token>"
        //     // from: "latest" (default) | "earliest" | <id> | "snapshot" (the newest event of each key, then
        //     //       live) | {since: "15m" or "2026-11-28T04:00:00Z"} | {rewind: 100} (the last 100, then live)
        //     onEvent(e) {}, onCaughtUp() {}, onGap(info) {}, onReset(info) {}, onError(err) {},
        //     onStatus(s) {}                                     // "open" | "reconnecting" | "closed"
        //     token: "<jwt>" or async () => "<jwt>",             // optional: sent as an auth op at every
        //                                                        // connect and again when the server warns
        //                                                        // that it expires (token_expired)
        //     onAuthenticated(info) {}                           // {subject, expiresAt} after each auth op
        //   });
        //   Without `token`, a same-origin page authenticates with its eventlog_token cookie.
        //   const ack = await log.publish({topic: "orders/1", type: "created", data: {...}, idempotencyKey: "k1"});
        //   A conditional publish adds expectedLastId: N (append only if the topic's newest id is N, 0: none); when
        //   the topic moved on it rejects with {code: "expected_last_id_mismatch", message, lastId: <its newest id>}.
        //   log.resumeToken  // the token of the last event seen; log.close() to stop.
        //   For EventSource: new EventSource(EventLogSocket.streamURL("/v1/events", {topics, from: "snapshot"})):
        //   the same `from` forms as query parameters (Last-Event-ID takes over on a reconnect after an event).
        "use strict";
        class EventLogSocket {
          constructor(url, options = {}) {
            this.url = url;
            this.options = options;
            this.topics = options.topics || ["*"];
            this.resumeToken = options.resume || null;
            this.from = options.from === undefined ? "latest" : options.from;
            this.lastId = null;
            this.minDelay = options.minDelay || 250;
            this.maxDelay = options.maxDelay || 10000;
            this.attempt = 0;
            this.pending = new Map();
            this.nextRef = 1;
            this.closed = false;
            this.ws = null;
            this.connect();
          }
          connect() {
            if (this.closed) return;
            const ws = new WebSocket(this.url);
            this.ws = ws;
            ws.onopen = async () => {
              // The backoff starts over at "subscribed", not here: a server that takes the connection and then
              // refuses it (an expired token) must not be reconnected to in a loop.
              // The auth op goes first: the server handles a socket's messages in order.
              if (!(await this.authenticate(ws, false))) return;
              const op = { op: "subscribe", topics: this.topics };
              if (this.resumeToken) op.resume = this.resumeToken; else op.from = this.from;
              ws.send(JSON.stringify(op));
              this.status("open");
            };
            ws.onmessage = (message) => this.receive(message.data);
            ws.onclose = () => {
              this.ws = null;
              for (const [ref, waiter] of this.pending) waiter.reject(new Error("connection closed before ack"));
              this.pending.clear();
              if (this.closed) { this.status("closed"); return; }
              this.status("reconnecting");
              const base = Math.min(this.maxDelay, this.minDelay * 2 ** this.attempt++);
              setTimeout(() => this.connect(), base / 2 + Math.random() * base / 2);
            };
            ws.onerror = () => {};
          }
          // Sends {"op":"auth"} with the token from options.token (a string or a function, possibly async),
          // fetched anew each time. False when the socket went away meanwhile or the token could not be had.
          // A renewal with the token already in force is not sent: the server would only warn again.
          // The op carries a ref, so that a refusal is not taken for the expiry warning (which has none).
          async authenticate(ws, renewal) {
            const source = this.options.token;
            if (source === undefined || source === null) return true;
            let token;
            try {
              token = typeof source === "function" ? await source() : source;
            } catch (error) {
              if (this.options.onError) this.options.onError({ code: "token_unavailable", message: String(error) });
              ws.close(1000);
              return false;
            }
            if (ws.readyState !== WebSocket.OPEN) return false;
            if (renewal && token === this.token) return true;
            this.token = token;
            if (token) ws.send(JSON.stringify({ op: "auth", token, ref: "auth" }));
            return true;
          }
          receive(text) {
            let message;
            try { message = JSON.parse(text); } catch (e) { return; }
            const call = (name, arg) => { if (this.options[name]) this.options[name](arg); };
            switch (message.type) {
              case "subscribed":
                this.attempt = 0;  // a working subscription: the next reconnect starts with the shortest delay
                // Until the first event, resume from where this subscription started. Not for a snapshot: its
                // `from` is 0, where its reading starts (resuming there would replay all history); until its
                // first event or caughtup a reconnect asks for the snapshot again.
                if (!this.resumeToken && message.resume && !this.fromSnapshot()) this.resumeToken = message.resume;
                call("onSubscribed", message);
                break;
              case "event":
                if (this.lastId !== null && message.id <= this.lastId) return;  // never twice
                this.lastId = message.id;
                this.resumeToken = message.resume;
                call("onEvent", message);
                break;
              case "caughtup":
                if (message.resume) this.resumeToken = message.resume;
                call("onCaughtUp", message);
                break;
              case "authenticated": call("onAuthenticated", message); break;
              case "gap": call("onGap", message); break;
              case "reset":
                this.lastId = null;
                call("onReset", message);
                break;
              case "ack":
              case "error": {
                const waiter = message.ref !== undefined ? this.pending.get(String(message.ref)) : undefined;
                if (waiter) {
                  this.pending.delete(String(message.ref));
                  if (message.type === "ack") waiter.resolve(message); else waiter.reject(message);
                } else if (message.type === "error") {
                  if (message.code === "token_expired" && message.ref === undefined && this.ws) {
                    // The credential expires soon: renew it on this socket before the server closes it.
                    this.authenticate(this.ws, true);
                    break;
                  }
                  call("onError", message);
                  if (message.code === "invalid_resume_token") {
                    // The log no longer knows this position (reset or replaced): start over from `from`.
                    this.resumeToken = null;
                    this.lastId = null;
                    call("onReset", message);
                    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
                      this.ws.send(JSON.stringify({ op: "subscribe", topics: this.topics, from: this.from }));
                    }
                  }
                }
                break;
              }
            }
          }
          // Whether the next subscribe asks for the snapshot (it has no resume token).
          fromSnapshot() { return !this.resumeToken && this.from === "snapshot"; }
          // The SSE URL of `base` (e.g. "/v1/events") for options.topics and options.from (the forms of the
          // constructor's `from`), with envelope=1 unless options.envelope is false.
          static streamURL(base, options = {}) {
            const query = (options.topics || ["*"]).map((t) => "topic=" + encodeURIComponent(t));
            if (options.envelope !== false) query.push("envelope=1");
            const from = options.from === undefined ? "latest" : options.from;
            if (from === "snapshot") query.push("snapshot=latest");
            else if (from !== null && typeof from === "object" && from.since !== undefined) {
              query.push("since=" + encodeURIComponent(String(from.since)));
            } else if (from !== null && typeof from === "object" && from.rewind !== undefined) {
              query.push("rewind=" + encodeURIComponent(String(from.rewind)));
            } else if (from !== "latest" && from !== null) query.push("lastEventId=" + encodeURIComponent(String(from)));
            return base + (base.includes("?") ? "&" : "?") + query.join("&");
          }
          publish(event) {
            return new Promise((resolve, reject) => {
              if (!this.ws || this.ws.readyState !== WebSocket.OPEN) { reject(new Error("not connected")); return; }
              const ref = String(this.nextRef++);
              this.pending.set(ref, { resolve, reject });
              this.ws.send(JSON.stringify(Object.assign({ op: "publish", ref }, event)));
            });
          }
          status(value) { if (this.options.onStatus) this.options.onStatus(value); }
          close() {
            this.closed = true;
            if (this.ws) this.ws.close(1000);
          }
        }
        if (typeof window !== "undefined") window.EventLogSocket = EventLogSocket;
        if (typeof module !== "undefined") module.exports = { EventLogSocket };

        """#
}

extension BrowserClient {
    /// A small live view served at `/`: `/?topic=orders/*&transport=sse|ws&from=earliest|latest|snapshot|<id>`,
    /// or `&since=15m` / `&rewind=100` instead of `from`.
    ///
    /// It shows every event of the subscription (id, time, topic, key, type, data) as it arrives, and
    /// the control messages (connected, caught up, gap, reset, error) as separator lines. All event
    /// text goes into the page through `textContent`, never as markup.
    ///
    /// SSE mode reads the stream with `fetch` and parses it here rather than with `EventSource`:
    /// `EventSource` only dispatches an event named `created` to a listener registered for
    /// `created`, so it cannot receive events of types it does not know in advance. The reader
    /// follows the `EventSource` rules: `envelope=1` for the topic, type and time, reconnect after the
    /// server's `retry:` with `Last-Event-ID`, give up on a 4xx answer.
    ///
    /// Scripts find everything in `window.eventlog`: `received` (events in arrival order, as
    /// `{id, topic, type, key, time, data}`, plus `lastEventId` in SSE mode), `controls`
    /// (`{type, data}`: `eventlog.open` / `eventlog.caughtup` / ... in SSE mode, `subscribed` /
    /// `caughtup` / ... in WebSocket mode), `status` and `opens` (connections so far).
    static let page = #"""
        <!DOCTYPE html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>eventlog</title>
        <style>
          :root { color-scheme: light dark; --muted: #6b7280; --line: #8882; --type: #2563eb; --note: #b45309; }
          * { box-sizing: border-box; }
          body { font: 14px/1.45 system-ui, sans-serif; margin: 0; }
          header { position: sticky; top: 0; background: Canvas; padding: .75rem 1.25rem .5rem;
                   border-bottom: 1px solid var(--line); display: flex; flex-wrap: wrap; gap: .2rem 1.25rem; align-items: baseline; }
          h1 { font-size: 1.1rem; margin: 0; }
          header span { color: var(--muted); min-width: 0; max-width: 100%; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
          #status::before { content: "\25CF\00A0"; }
          #status.open::before { color: #16a34a; } #status.reconnecting::before { color: var(--note); } #status.closed::before { color: #dc2626; }
          ol { list-style: none; margin: 0; padding: 0 1.25rem 1rem; }
          li { border-bottom: 1px solid var(--line); padding: .3rem 0; min-width: 0; overflow-wrap: anywhere; }
          .event { display: grid; grid-template-columns: 4.5em 8em minmax(0, 13em) minmax(0, 8em) minmax(0, 1fr); gap: .75rem;
                   align-items: start; font: 12.5px/1.45 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
          .event > * { min-width: 0; }
          .id { text-align: right; color: var(--muted); } .time { color: var(--muted); }
          .key { display: block; color: var(--muted); }
          .type { color: var(--type); }
          .data { white-space: pre-wrap; }
          /* Long values show three lines and an ellipsis; a click on the row shows them in full. */
          .topic, .type, .data { display: -webkit-box; -webkit-box-orient: vertical; -webkit-line-clamp: 3; overflow: hidden; }
          .event.open > * > *, .event.open > * { -webkit-line-clamp: none; }
          .tombstone { color: var(--muted); font-style: italic; }
          .control { color: var(--note); font-size: 12.5px; } .control.error { color: #dc2626; }
          @media (max-width: 640px) {  /* id, time and type on one line; topic and data below */
            .event { grid-template-columns: auto auto minmax(0, 1fr); grid-template-areas: "id time type" "where where where" "data data data"; gap: .1rem .6rem; }
            .id { grid-area: id; } .time { grid-area: time; } .where { grid-area: where; } .type { grid-area: type; text-align: right; } .data { grid-area: data; }
          }
        </style>
        </head>
        <body>
        <header><h1>eventlog</h1><span id="selection"></span><span id="status" class="connecting">connecting</span>
        <span id="count">0 events</span><span id="position"></span></header>
        <ol id="events"></ol>
        <script src="/v1/eventlog.js"></script>
        <script>
          "use strict";
          const params = new URLSearchParams(location.search);
          const topics = params.getAll("topic").length ? params.getAll("topic") : ["*"];
          const transport = params.get("transport") === "ws" ? "ws" : "sse";
          // "earliest", "latest", "snapshot" or an id; or {since} / {rewind} from those parameters.
          const from = params.has("since") ? { since: params.get("since") }
            : params.has("rewind") ? { rewind: Number(params.get("rewind")) }
            : params.get("from") || "earliest";
          const state = window.eventlog = { received: [], controls: [], status: "connecting", opens: 0 };
          const $ = (id) => document.getElementById(id);
          const list = $("events");
          const node = (tag, cls, text) => {
            const n = document.createElement(tag);
            if (cls) n.className = cls;
            if (text !== undefined) n.textContent = text;
            return n;
          };
          $("selection").textContent = topics.join(" ") + " \u00B7 " + (transport === "ws" ? "WebSocket" : "SSE");
          // Keep the newest row in view while the reader is at the bottom; at most one scroll per frame.
          let scrollQueued = false;
          const append = (row) => {
            if (!scrollQueued) {
              const root = document.documentElement;
              const follow = root.scrollHeight - innerHeight - scrollY < 80;
              scrollQueued = true;
              requestAnimationFrame(() => { scrollQueued = false; if (follow) scrollTo(0, root.scrollHeight); });
            }
            list.appendChild(row);
            while (list.childElementCount > 5000) list.firstElementChild.remove();
          };
          list.addEventListener("click", (click) => {
            const row = click.target.closest(".event");
            if (row && !getSelection().toString()) row.classList.toggle("open");
          });
          const setStatus = (text) => {
            state.status = text;
            $("status").textContent = text;
            $("status").className = text;
          };
          const setPosition = (text) => { $("position").textContent = text; $("position").title = text; };
          const showEvent = (e) => {
            state.received.push(e);
            const row = node("li", "event");
            row.dataset.id = String(e.id);
            const time = node("time", "time", typeof e.time === "string" ? e.time.slice(11, 23) : "");
            time.dateTime = time.title = String(e.time);
            const where = node("span", "where");
            where.appendChild(node("span", "topic", e.topic));
            if (e.key !== undefined && e.key !== null) where.appendChild(node("span", "key", "key " + e.key));
            const text = e.data === null ? "tombstone" : typeof e.data === "string" ? e.data : JSON.stringify(e.data);
            const data = node("span", e.data === null ? "data tombstone" : "data", text.length > 4000 ? text.slice(0, 4000) + "\u2026" : text);
            if (text.length > 4000) data.title = text.length + " characters, shortened";
            row.append(node("span", "id", String(e.id)), time, where, node("span", "type", e.type), data);
            append(row);
            $("count").textContent = state.received.length + (state.received.length === 1 ? " event" : " events");
          };
          // Control messages are separator lines, never event rows.
          const describe = {
            open: (d) => "connected \u00B7 from " + d.from + " \u00B7 head " + d.head + " \u00B7 earliest " + d.earliest + " \u00B7 epoch " + d.epoch,
            caughtup: (d) => "caught up at " + d.head + " \u00B7 live from here",
            gap: (d) => "gap: events after " + d.requested + " before " + d.earliest + " are gone (" + d.reason + "); continuing from " + d.earliest,
            reset: (d) => "reset: position " + d.requested + " is not in this log (head " + d.head + ", epoch " + d.epoch + "); continuing live",
            error: (d) => "error " + d.code + ": " + d.message,
            restart: () => "starting over from " + (typeof from === "string" ? from : JSON.stringify(from)),
          };
          const control = (type, data, kind) => {
            state.controls.push({ type, data });
            append(node("li", "control " + kind, describe[kind] ? describe[kind](data || {}) : type + " " + JSON.stringify(data)));
          };
          if (transport === "ws") {
            const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/v1/ws";
            const socket = state.socket = new EventLogSocket(url, {
              topics, from: typeof from === "string" && /^\d+$/.test(from) ? Number(from) : from,
              onSubscribed: (m) => { state.opens++; control("subscribed", m, "open"); setPosition("resume " + socket.resumeToken); },
              onEvent: (e) => {
                showEvent({ id: e.id, topic: e.topic, type: e.event, key: e.key, time: e.time, data: e.data });
                setPosition("resume " + socket.resumeToken);
              },
              onCaughtUp: (m) => { control("caughtup", m, "caughtup"); setPosition("resume " + socket.resumeToken); },
              onGap: (m) => control("gap", m, "gap"),
              onReset: (m) => control("reset", m, m.type === "error" ? "restart" : "reset"),
              onError: (m) => control("error", m, "error"),
              onStatus: setStatus,
            });
          } else {
            // Before the first event a reconnect asks for the same start (a snapshot again); after it,
            // Last-Event-ID takes over.
            const url = EventLogSocket.streamURL("/v1/events", { topics, from });
            let lastEventId = "", retry = 2000;
            const connect = async () => {
              const headers = { Accept: "text/event-stream" };
              if (lastEventId) headers["Last-Event-ID"] = lastEventId;
              try {
                const response = await fetch(url, { headers, cache: "no-store" });
                if (!response.ok || !/^text\/event-stream/.test(response.headers.get("content-type") || "")) {
                  const body = await response.json().catch(() => null);
                  const error = body && body.error ? body.error : { code: "HTTP " + response.status, message: response.statusText };
                  control("error", error, "error");
                  if (response.status < 500) { setStatus("closed"); return; }  // a bad request does not get better
                  throw new Error(error.code);
                }
                setStatus("open");
                const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
                let buffer = "", idBuffer = lastEventId, type = "", data = [];
                const line = (text) => {
                  if (text === "") {  // dispatch, as EventSource does
                    lastEventId = idBuffer;
                    const name = type || "message", payload = data.join("\n");
                    const had = data.length > 0;
                    type = ""; data = [];
                    if (had) dispatch(name, payload);
                    return;
                  }
                  if (text[0] === ":") return;
                  const colon = text.indexOf(":");
                  const field = colon < 0 ? text : text.slice(0, colon);
                  let value = colon < 0 ? "" : text.slice(colon + 1);
                  if (value[0] === " ") value = value.slice(1);
                  if (field === "data") data.push(value);
                  else if (field === "event") type = value;
                  else if (field === "id" && !value.includes("\0")) idBuffer = value;
                  else if (field === "retry" && /^\d+$/.test(value)) retry = Number(value);
                };
                for (;;) {
                  const { value, done } = await reader.read();
                  if (done) break;
                  buffer += value;
                  const cut = buffer.endsWith("\r") ? buffer.length - 1 : buffer.length;  // maybe half a CRLF
                  const lines = buffer.slice(0, cut).split(/\r\n|\r|\n/);
                  buffer = lines.pop() + buffer.slice(cut);
                  lines.forEach(line);
                }
              } catch (error) {
                // The server went away (or is refusing for now): try again after `retry`, like EventSource.
              }
              setStatus("reconnecting");
              setTimeout(connect, retry);
            };
            const dispatch = (name, payload) => {
              let value;
              try { value = JSON.parse(payload); } catch (error) { value = payload; }
              if (name.startsWith("eventlog.")) {
                if (name === "eventlog.open") state.opens++;
                control(name, value, name.slice(9));
              } else if (value && typeof value === "object" && "id" in value) {
                showEvent({ id: value.id, lastEventId, topic: value.topic, type: value.type, key: value.key,
                            time: value.time, data: value.data === undefined ? null : value.data });
                setPosition("last id " + lastEventId);
              }
            };
            connect();
          }
        </script>
        </body>
        </html>

        """#
}
