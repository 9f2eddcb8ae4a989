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
        //     onEvent(e) {}, onCaughtUp() {}, onGap(info) {}, onReset(info) {}, onError(err) {},
        //     onStatus(s) {}                                     // "open" | "reconnecting" | "closed"
        //   });
        //   const ack = await log.publish({topic: "orders/1", type: "created", data: {...}, idempotencyKey: "k1"});
        //   log.resumeToken  // the token of the last event seen; log.close() to stop.
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
            ws.onopen = () => {
              this.attempt = 0;
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
          receive(text) {
            let message;
            try { message = JSON.parse(text); } catch (e) { return; }
            const call = (name, arg) => { if (this.options[name]) this.options[name](arg); };
            switch (message.type) {
              case "subscribed":
                // Until the first event, resume from where this subscription started.
                if (!this.resumeToken && message.resume) this.resumeToken = message.resume;
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
    /// A small live view served at `/`: `/?topic=orders/*&transport=sse|ws&from=earliest&type=created`. It shows the
    /// events of a subscription as they arrive, and keeps them in `window.eventlog` for scripts
    /// (`received`: events in arrival order, `controls`: control events, `status`).
    static let page = #"""
        <!DOCTYPE html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <title>eventlog</title>
        <style>
          body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; }
          #status { color: #666; } li { font-family: ui-monospace, monospace; white-space: pre-wrap; }
          .control { color: #a60; }
        </style>
        </head>
        <body>
        <h1>eventlog</h1>
        <p id="status">connecting</p>
        <ol id="events"></ol>
        <script src="/v1/eventlog.js"></script>
        <script>
          "use strict";
          const params = new URLSearchParams(location.search);
          const topics = params.getAll("topic").length ? params.getAll("topic") : ["*"];
          const transport = params.get("transport") || "sse";
          const from = params.get("from") || "earliest";
          const state = window.eventlog = { received: [], controls: [], status: "connecting", opens: 0 };
          const list = document.getElementById("events");
          const show = (text, cls) => {
            const item = document.createElement("li");
            item.textContent = text;
            if (cls) item.className = cls;
            list.appendChild(item);
          };
          const setStatus = (text) => {
            state.status = text;
            document.getElementById("status").textContent = text;
          };
          const control = (type, data) => {
            state.controls.push({ type, data });
            show(type + " " + JSON.stringify(data), "control");
          };
          if (transport === "ws") {
            const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/v1/ws";
            state.socket = new EventLogSocket(url, {
              topics, from,
              onSubscribed: (m) => { state.opens++; control("subscribed", m); },
              onEvent: (e) => { state.received.push({ id: e.id, topic: e.topic, type: e.event, data: e.data }); show(e.id + " " + e.topic + " " + JSON.stringify(e.data)); },
              onCaughtUp: (m) => control("caughtup", m),
              onGap: (m) => control("gap", m),
              onReset: (m) => control("reset", m),
              onError: (m) => control("error", m),
              onStatus: setStatus,
            });
          } else {
            const query = topics.map((t) => "topic=" + encodeURIComponent(t)).join("&");
            const source = state.source = new EventSource("/v1/events?" + query + "&envelope=1&lastEventId=" + encodeURIComponent(from));
            source.onopen = () => setStatus("open");
            source.onerror = () => setStatus(source.readyState === EventSource.CLOSED ? "closed" : "reconnecting");
            // EventSource dispatches by event type: listen to "message" and every ?type= given.
            const onEvent = (m) => {
              const e = JSON.parse(m.data);
              state.received.push({ id: e.id, lastEventId: m.lastEventId, topic: e.topic, type: e.type, data: e.data });
              show(e.id + " " + e.topic + " " + JSON.stringify(e.data));
            };
            for (const type of new Set(["message", ...params.getAll("type")])) source.addEventListener(type, onEvent);
            for (const name of ["eventlog.open", "eventlog.caughtup", "eventlog.gap", "eventlog.reset"]) {
              source.addEventListener(name, (m) => {
                if (name === "eventlog.open") state.opens++;
                control(name, JSON.parse(m.data));
              });
            }
          }
        </script>
        </body>
        </html>

        """#
}
