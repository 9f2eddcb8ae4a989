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
                  if (message.code === "invalid_resume_token") this.resumeToken = null;
                  call("onError", message);
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
