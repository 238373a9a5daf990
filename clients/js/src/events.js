// Server-sent events over fetch rather than EventSource: every event type reaches
// onEvent (EventSource hands named events only to listeners registered by name), the
// backoff is ours (EventSource gives up on any non-200), and a Bearer token can be
// sent where the __session cookie is not available.

const DEFAULTS = { minBackoffMs: 1000, maxBackoffMs: 30000 };

/** Parses a text/event-stream into events, per the WHATWG rules we need. */
export function createParser(onFrame) {
  let buffer = "";
  let id = null;
  let type = "";
  let data = [];
  let retry = null;
  const dispatch = () => {
    if (data.length > 0 || type) {
      onFrame({ id, type: type || "message", data: data.join("\n"), retry });
    } else if (retry !== null) {
      onFrame({ id, type: null, data: "", retry });
    }
    type = "";
    data = [];
    retry = null;
  };
  return (chunk) => {
    buffer += chunk;
    let at;
    while ((at = buffer.search(/\r\n|\r|\n/)) >= 0) {
      const line = buffer.slice(0, at);
      const sep = buffer[at] === "\r" && buffer[at + 1] === "\n" ? 2 : 1;
      buffer = buffer.slice(at + sep);
      if (line === "") {
        dispatch();
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "data") data.push(value);
      else if (field === "event") type = value;
      else if (field === "id" && !value.includes("\0")) id = value;
      else if (field === "retry" && /^\d+$/.test(value)) retry = Number(value);
    }
  };
}

function parseData(raw) {
  try {
    return JSON.parse(raw);
  } catch {
    return raw;
  }
}

/** The delay before reconnect attempt `attempt` (0-based): exponential, jittered. */
export function backoffDelay(attempt, minMs, maxMs, random = Math.random) {
  const ceiling = Math.min(maxMs, minMs * 2 ** Math.min(attempt, 30));
  // Half fixed, half random: never sooner than half the step, spread over the rest.
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}

/**
 * Follows Frontdesk's live events. Returns a handle with close() and the last id.
 * @param {import("./index").ConnectEventsOptions} options
 */
export function connectEvents(options) {
  const {
    url = "/_frontdesk/events",
    onEvent = () => {},
    onStatus = () => {},
    getToken,
    lastEventId: initialId,
    minBackoffMs = DEFAULTS.minBackoffMs,
    maxBackoffMs = DEFAULTS.maxBackoffMs,
    fetch: fetchImpl = globalThis.fetch.bind(globalThis),
  } = options || {};
  let lastEventId = initialId ?? null;
  let attempt = 0;
  let closed = false;
  let controller = null;
  let timer = null;

  const status = (s, detail) => {
    try {
      onStatus(s, detail);
    } catch (e) {
      console.error("onStatus threw", e);
    }
  };

  const schedule = (why) => {
    if (closed) return;
    const delay = backoffDelay(attempt, minBackoffMs, maxBackoffMs);
    attempt += 1;
    status("reconnecting", { delayMs: delay, attempt, reason: why });
    timer = setTimeout(connect, delay);
  };

  async function connect() {
    if (closed) return;
    controller = new AbortController();
    status("connecting", { attempt });
    const headers = { Accept: "text/event-stream" };
    if (lastEventId) headers["Last-Event-ID"] = lastEventId;
    try {
      if (getToken) {
        const token = await getToken();
        if (token) headers.Authorization = `Bearer ${token}`;
      }
      const res = await fetchImpl(url, {
        headers,
        credentials: "same-origin",
        cache: "no-store",
        signal: controller.signal,
      });
      if (!res.ok || !res.body) {
        status(res.status === 401 || res.status === 403 ? "unauthorized" : "error", {
          httpStatus: res.status,
        });
        try {
          await res.body?.cancel();
        } catch {}
        schedule(`http ${res.status}`);
        return;
      }
      attempt = 0;
      status("open", { lastEventId });
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      const feed = createParser((frame) => {
        if (frame.id !== null && frame.id !== undefined) lastEventId = frame.id;
        if (!frame.type) return;
        const event = { id: frame.id, type: frame.type, data: parseData(frame.data) };
        try {
          onEvent(event);
        } catch (e) {
          console.error("onEvent threw", e);
        }
      });
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        feed(value);
      }
      schedule("stream ended");
    } catch (e) {
      if (closed) return;
      status("error", { error: String(e) });
      schedule("network");
    }
  }

  connect();
  return {
    close() {
      closed = true;
      clearTimeout(timer);
      controller?.abort();
      status("closed");
    },
    get lastEventId() {
      return lastEventId;
    },
  };
}
