// Frontdesk console: live figures from /console/stream (SSE), charts drawn as SVG from
// the last 15 minutes kept here, and actions through /console/api/* (the api listener's
// own routes). No dependencies; served from the binary.
"use strict";

const WINDOW = 900; // samples: 15 minutes at one per second
const API = "/console/api";

const num = (v) => (typeof v === "number" && isFinite(v) ? v : null);
const pct = (v) => (v === null ? "–" : (v * 100).toFixed(1) + " %");
const fixed = (d) => (v) => (v === null ? "–" : v.toFixed(d));
const int = (v) => (v === null ? "–" : String(Math.round(v)));
const get = (o, path) => path.split(".").reduce((a, k) => (a == null ? undefined : a[k]), o);

// One figure: a label, how to read it from a snapshot (given the history), a format.
const FIGURES = [
  { id: "edge-rps", label: "Edge requests/s", read: (s) => num(get(s, "requests.edge.per_s")), fmt: fixed(1) },
  { id: "api-rps", label: "API requests/s", read: (s) => num(get(s, "requests.api.per_s")), fmt: fixed(1) },
  { id: "edge-latency", label: "Edge mean latency (ms)", read: (s) => num(get(s, "requests.edge.mean_latency_ms")), fmt: fixed(2) },
  { id: "api-latency", label: "API mean latency (ms)", read: (s) => num(get(s, "requests.api.mean_latency_ms")), fmt: fixed(2) },
  { id: "requests-total", label: "Requests served (edge + api)", read: (s) => num((get(s, "requests.edge.requests") || 0) + (get(s, "requests.api.requests") || 0)), fmt: int },
  { id: "l1-ratio", label: "User cache L1 hit ratio", read: (s) => num(get(s, "stats.users.l1.hit_ratio")), fmt: pct },
  { id: "l2-ratio", label: "User cache L2 hit ratio", read: (s) => num(get(s, "stats.users.l2.hit_ratio")), fmt: pct },
  { id: "clerk-10s", label: "Clerk calls per 10 s", read: (s, h) => delta(h, "stats.upstream.calls", 10), fmt: int },
  { id: "clerk-paused", label: "Clerk calls refused while paused", read: (s) => num(get(s, "stats.upstream.refused_while_paused")), fmt: int },
  { id: "inbox-pending", label: "Webhook inbox pending", read: (s) => num(get(s, "inbox.pending")), fmt: int },
  { id: "inbox-age", label: "Oldest pending webhook (s)", read: (s) => { const v = num(get(s, "inbox.oldest_pending_age_ms")); return v === null ? 0 : v / 1000; }, fmt: fixed(1) },
  { id: "inbox-dead", label: "Dead letters", read: (s) => num(get(s, "inbox.dead")), fmt: int },
  { id: "rl-fallbacks", label: "Rate-limit memory fallbacks", read: (s) => num(get(s, "stats.rate_limits.memory_fallbacks")), fmt: int },
  { id: "sse-subscribers", label: "Live (SSE) subscribers", read: (s) => num(get(s, "live.subscribers")), fmt: int },
  { id: "respcache-hits", label: "Response cache hits (process)", read: (s) => sumOf(s, "frontdesk_respcache_requests_total", 'outcome="hit"'), fmt: int },
  { id: "ratelimited", label: "Requests rate-limited (process)", read: (s) => sumOf(s, "frontdesk_ratelimit_decisions_total", 'outcome="limited"'), fmt: int },
  { id: "clerk-429", label: "Clerk 429s (process)", read: (s) => sumOf(s, "frontdesk_upstream_requests_total", 'status="429"'), fmt: int },
  { id: "provisioned", label: "Provisioning runs (process)", read: (s) => sumOf(s, "frontdesk_provisioning_total", ""), fmt: int },
  { id: "upstream-loads", label: "User loads from Clerk", read: (s) => num(get(s, "stats.users.upstream_loads")), fmt: int },
];

// Sum of the process counters named `name` whose labels contain `label`.
function sumOf(s, name, label) {
  if (!s.process) return null;
  let total = 0;
  for (const [k, v] of Object.entries(s.process)) {
    if (k.split("{")[0] === name && k.includes(label)) total += v;
  }
  return total;
}

const history = []; // snapshots, oldest first
const series = new Map(FIGURES.map((f) => [f.id, []]));

function delta(h, path, n) {
  if (h.length === 0) return null;
  const now = num(get(h[h.length - 1], path));
  const then = num(get(h[Math.max(0, h.length - 1 - n)], path));
  return now === null || then === null ? null : now - then;
}

function el(tag, attrs = {}, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function buildCards() {
  const grid = document.getElementById("figures");
  const svgNS = "http://www.w3.org/2000/svg";
  for (const f of FIGURES) {
    const card = el("article", { class: "card", "aria-labelledby": f.id + "-h" });
    card.append(el("h3", { id: f.id + "-h" }, f.label));
    card.append(el("div", { class: "value", id: f.id, "data-figure": f.id }, "–"));
    const svg = document.createElementNS(svgNS, "svg");
    svg.setAttribute("viewBox", "0 0 " + WINDOW + " 100");
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", f.label + ", last 15 minutes");
    const line = document.createElementNS(svgNS, "polyline");
    line.setAttribute("id", f.id + "-line");
    svg.append(line);
    card.append(svg);
    grid.append(card);
  }
}

function draw(f) {
  const values = series.get(f.id);
  const line = document.getElementById(f.id + "-line");
  const present = values.filter((v) => v !== null);
  if (present.length === 0) { line.setAttribute("points", ""); return; }
  let lo = Math.min(...present), hi = Math.max(...present);
  if (hi === lo) hi = lo + 1;
  // The x axis spans what is kept (at least a minute), so a young page's chart is
  // readable; after 15 minutes it spans the whole window.
  const span = Math.min(WINDOW, Math.max(60, values.length));
  const offset = span - values.length;
  const pts = [];
  values.forEach((v, i) => {
    if (v === null) return;
    const y = 95 - ((v - lo) / (hi - lo)) * 90;
    pts.push(((offset + i) * WINDOW / span).toFixed(1) + "," + y.toFixed(1));
  });
  line.setAttribute("points", pts.join(" "));
}

function onSnapshot(s) {
  history.push(s);
  if (history.length > WINDOW + 1) history.shift();
  for (const f of FIGURES) {
    const v = f.read(s, history);
    const vs = series.get(f.id);
    vs.push(v);
    if (vs.length > WINDOW) vs.shift();
    document.getElementById(f.id).textContent = f.fmt(v);
    draw(f);
  }
}

function renderFleet(s) {
  const tbody = document.querySelector("#fleet-table tbody");
  const note = document.getElementById("fleet-note");
  if (!Array.isArray(s.fleet)) {
    note.textContent = "No fleet figures: this instance has no Redis, or Redis does not answer.";
    tbody.replaceChildren();
    return;
  }
  const rows = s.fleet.map((e) => {
    const tr = el("tr", { "data-instance": e.instance_id });
    const mine = e.instance_id === s.stats.instance_id;
    tr.append(
      el("td", {}, e.instance_id + (mine ? " (this one)" : "")),
      el("td", {}, fixed(1)(num(get(e, "requests.edge.per_s")))),
      el("td", {}, fixed(1)(num(get(e, "requests.api.per_s")))),
      el("td", {}, pct(num(get(e, "users.l1_hit_ratio")))),
      el("td", {}, pct(num(get(e, "users.l2_hit_ratio")))),
      el("td", {}, int(num(e.upstream_calls))),
      el("td", {}, int(num(e.live_subscribers))),
      el("td", {}, fixed(1)(Math.max(0, (s.at_ms - e.at_ms) / 1000))),
    );
    return tr;
  });
  tbody.replaceChildren(...rows);
  note.textContent = s.fleet.length + " instance(s) seen in the last 5 s.";
}

function connect() {
  const status = document.getElementById("stream-status");
  const source = new EventSource("/console/stream");
  source.addEventListener("open", () => { status.textContent = "live"; });
  source.addEventListener("snapshot", (e) => {
    try {
      const s = JSON.parse(e.data);
      onSnapshot(s);
      renderFleet(s);
    } catch (err) { status.textContent = "bad snapshot"; }
  });
  source.addEventListener("error", () => { status.textContent = "reconnecting…"; });
}

// --- actions -------------------------------------------------------------------------

async function call(method, path) {
  const r = await fetch(API + path, {
    method,
    credentials: "same-origin",
    headers: { "Accept": "application/json" },
  });
  let body = null;
  try { body = await r.json(); } catch (_) { body = null; }
  return { ok: r.ok, status: r.status, body, cache: r.headers.get("x-cache") };
}

function say(id, text, ok) {
  const p = document.getElementById(id);
  p.textContent = text;
  p.className = "result " + (ok ? "ok" : "err");
}

function failure(r) {
  const code = r.body && r.body.code ? r.body.code : "error";
  const msg = r.body && r.body.message ? ": " + r.body.message : "";
  return r.status + " " + code + msg;
}

async function loadDead() {
  const tbody = document.querySelector("#dead-table tbody");
  const r = await call("GET", "/v1/webhooks?state=dead&limit=100");
  if (!r.ok) { say("dead-result", "Cannot list dead letters: " + failure(r), false); return; }
  tbody.replaceChildren();
  const items = (r.body && r.body.items) || [];
  if (items.length === 0) {
    const tr = el("tr");
    tr.append(el("td", { colspan: "5" }, "No dead letters."));
    tbody.append(tr);
  }
  for (const m of items) {
    const tr = el("tr", { "data-id": m.id });
    tr.append(el("td", {}, m.id), el("td", {}, m.type), el("td", {}, String(m.attempts)), el("td", {}, m.last_error || ""));
    const td = el("td");
    const b = el("button", { type: "button", class: "replay", "aria-label": "Replay " + m.id }, "Replay");
    b.addEventListener("click", () => replay(m.id, b));
    td.append(b);
    tr.append(td);
    tbody.append(tr);
  }
}

async function replay(id, button) {
  if (!window.confirm("Replay webhook " + id + "? It goes back to pending and runs again.")) {
    say("dead-result", "Replay of " + id + " cancelled.", true);
    return;
  }
  button.disabled = true;
  const r = await call("POST", "/v1/webhooks/" + encodeURIComponent(id) + "/replay");
  if (r.ok) {
    say("dead-result", "Replayed " + id + ".", true);
    await loadDead();
  } else {
    button.disabled = false;
    say("dead-result", "Replay of " + id + " failed: " + failure(r), false);
  }
}

let shownUser = null;

async function lookUp(ev) {
  ev.preventDefault();
  const kind = document.getElementById("user-kind").value;
  const q = document.getElementById("user-q").value.trim();
  const entry = document.getElementById("user-entry");
  const evict = document.getElementById("user-evict");
  const path = kind === "id" ? "/v1/users/" : kind === "email" ? "/v1/users/by-email/" : "/v1/users/by-username/";
  const r = await call("GET", path + encodeURIComponent(q));
  entry.replaceChildren();
  if (!r.ok || !r.body) {
    shownUser = null;
    entry.hidden = true;
    evict.hidden = true;
    say("user-result", "Not found: " + failure(r), false);
    return;
  }
  shownUser = r.body.id;
  const rows = [["id", r.body.id], ["email", r.body.email], ["username", r.body.username],
    ["name", [r.body.first_name, r.body.last_name].filter(Boolean).join(" ")],
    ["served from", r.cache || "unknown"]];
  for (const [k, v] of rows) entry.append(el("dt", {}, k), el("dd", { "data-field": k }, v == null || v === "" ? "–" : String(v)));
  entry.hidden = false;
  evict.hidden = false;
  say("user-result", "Found " + r.body.id + " (" + (r.cache || "unknown") + ").", true);
}

async function evictUser() {
  if (!shownUser) return;
  const id = shownUser;
  if (!window.confirm("Evict " + id + " from the user cache (L1 and L2, on every instance)?")) {
    say("user-result", "Eviction of " + id + " cancelled.", true);
    return;
  }
  const r = await call("DELETE", "/v1/cache/users/" + encodeURIComponent(id));
  if (r.ok) {
    const served = document.querySelector('dd[data-field="served from"]');
    if (served) served.textContent = "evicted (the next look-up loads it again)";
  }
  say("user-result", r.ok ? "Evicted " + id + "." : "Eviction of " + id + " failed: " + failure(r), r.ok);
}

async function showJob(ev) {
  ev.preventDefault();
  const id = document.getElementById("job-id").value.trim();
  const r = await call("GET", "/v1/jobs/" + encodeURIComponent(id) + "?results=false");
  const bar = document.getElementById("job-progress");
  const pre = document.getElementById("job-body");
  if (!r.ok) {
    bar.hidden = true; pre.hidden = true;
    say("job-result", "Cannot show job: " + failure(r), false);
    return;
  }
  const b = r.body;
  bar.max = Math.max(1, b.total || 0);
  bar.value = b.done || 0;
  bar.hidden = false;
  pre.textContent = JSON.stringify(b, null, 2);
  pre.hidden = false;
  say("job-result", "Job " + b.job_id + ": " + b.state + ", " + b.done + " of " + b.total + " done (" + b.failed + " failed).", true);
}

document.addEventListener("DOMContentLoaded", () => {
  buildCards();
  connect();
  document.getElementById("dead-refresh").addEventListener("click", loadDead);
  document.getElementById("user-form").addEventListener("submit", lookUp);
  document.getElementById("user-evict").addEventListener("click", evictUser);
  document.getElementById("job-form").addEventListener("submit", showJob);
  loadDead();
});
