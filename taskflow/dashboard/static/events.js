// The one live stream of this tab: `GET /events`, read with fetch() and a streaming
// reader (EventSource cannot send an Authorization header), parsed as Server-Sent
// Events, resumed with `Last-Event-ID` after a disconnect.

import { askForToken, authHeaders, token } from "./api.js";

const MAX_BACKOFF_MS = 10_000;

/** Follow `/events` until the page closes; `onEvent(change)` per status change,
 * `onState(state, detail)` on "connecting", "reconnecting", "live" and "disconnected",
 * `onResume(replayed)` after a reconnection (`replayed`: resumed from a cursor). */
export class LiveEvents {
  constructor({ onEvent, onState, onResume }) {
    this.onEvent = onEvent;
    this.onState = onState;
    this.onResume = onResume || (() => {});
    this.lastEventId = null;
    this.retryMs = 1000;
    this.connectedOnce = false;
  }

  start() {
    this.loop();
  }

  async loop() {
    let backoff = 0;
    for (;;) {
      this.onState(this.connectedOnce ? "reconnecting" : "connecting");
      let reason;
      try {
        reason = await this.follow();
        backoff = 0;
      } catch (error) {
        reason = error.message || String(error);
      }
      this.onState("disconnected", reason);
      backoff = Math.min(Math.max(backoff * 2, this.retryMs), MAX_BACKOFF_MS);
      await new Promise((resolve) => setTimeout(resolve, backoff));
    }
  }

  /** One connection: resolves (with why) when it ends. */
  async follow() {
    const headers = authHeaders({ Accept: "text/event-stream" });
    const sentCursor = this.lastEventId !== null;
    if (sentCursor) headers["Last-Event-ID"] = this.lastEventId;
    const sent = token();
    const response = await fetch("/events", { headers, cache: "no-store" });
    if (response.status === 401) {
      await askForToken(sent !== null);
      return "a token is needed";
    }
    if (!response.ok || !response.body) {
      return `the event stream answered ${response.status}`;
    }
    const resumed = this.connectedOnce;
    this.connectedOnce = true;
    this.onState("live");
    // Without a cursor (nothing arrived before the break) the stream restarts at the
    // present: what changed meanwhile must be read again.
    if (resumed) this.onResume(sentCursor);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let message = { data: [], event: "message", id: null };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return "the stream ended";
      buffer += value;
      let newline;
      while ((newline = buffer.search(/\r\n|\r|\n/)) >= 0) {
        // A "\r" that ends the chunk may be the first half of a "\r\n": wait for more.
        if (buffer[newline] === "\r" && newline === buffer.length - 1) break;
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + (buffer.startsWith("\r\n", newline) ? 2 : 1));
        if (line === "") {
          this.dispatch(message);
          message = { data: [], event: "message", id: null };
          continue;
        }
        if (line.startsWith(":")) continue; // a keep-alive comment
        const colon = line.indexOf(":");
        const field = colon >= 0 ? line.slice(0, colon) : line;
        let content = colon >= 0 ? line.slice(colon + 1) : "";
        if (content.startsWith(" ")) content = content.slice(1);
        if (field === "data") message.data.push(content);
        else if (field === "event") message.event = content;
        else if (field === "id") message.id = content;
        else if (field === "retry" && /^\d+$/.test(content)) this.retryMs = Number(content);
      }
    }
  }

  dispatch(message) {
    if (message.id !== null) this.lastEventId = message.id;
    if (message.event !== "status" || message.data.length === 0) return;
    let change;
    try {
      change = JSON.parse(message.data.join("\n"));
    } catch {
      return;
    }
    this.onEvent(change);
  }
}
