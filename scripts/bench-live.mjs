#!/usr/bin/env node
// Live-events benchmark (issue 13): idle subscribers held by one instance and memory
// per subscriber, fan-out latency from POST /v1/events to the last of N subscribers of
// one tenant, and the cost of a replay of 1,000 missed events.
//
//   FRONTDESK_BIN=target/release/frontdesk REDIS_URL=redis://127.0.0.1:56379 \
//     node scripts/bench-live.mjs [--idle 15000] [--fanout 10000] [--rounds 20]
//
// One `frontdesk serve --dev` (SQLite in a temp dir, Redis under a fresh prefix); the
// subscribers are raw sockets in this Node process (so the client shares the machine:
// the figures are upper bounds). Mind `ulimit -n`: the server and this process each hold
// one descriptor per subscriber.

import { spawn } from "node:child_process";
import { connect } from "node:net";
import { readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";

const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const IDLE = arg("idle", 15000);
const FANOUT = arg("fanout", 10000);
const ROUNDS = arg("rounds", 20);
const REPLAY = 1000;
const BIN = path.resolve(process.env.FRONTDESK_BIN || "target/release/frontdesk");
const REDIS_URL = process.env.REDIS_URL || "redis://127.0.0.1:56379";

const work = await mkdtemp(path.join(tmpdir(), "frontdesk-bench-live-"));
const env = { ...process.env };
for (const k of Object.keys(env)) if (k.startsWith("CLERK_") || k.startsWith("FRONTDESK_") || k === "DATABASE_URL") delete env[k];
Object.assign(env, {
  DATABASE_URL: `sqlite://${work}/fd.db`,
  REDIS_URL,
  FRONTDESK_REDIS_PREFIX: `fdbench:${process.pid}:${Date.now()}:`,
  FRONTDESK_EDGE_ADDR: "127.0.0.1:0",
  FRONTDESK_API_ADDR: "127.0.0.1:0",
  FRONTDESK_LOG: "warn",
  FRONTDESK_ACCESS_LOG: "false",
  FRONTDESK_HTTP__MAX_CONNECTIONS: "100000",
  FRONTDESK_LIVE__MAX_SUBSCRIBERS: "100000",
  FRONTDESK_LIVE__HISTORY: String(REPLAY * 2),
  FRONTDESK_SHUTDOWN_GRACE_MS: "500",
});
const child = spawn(BIN, ["serve", "--dev"], { env, cwd: work, stdio: ["ignore", "pipe", "inherit"] });
const fd = await new Promise((resolve, reject) => {
  let out = "";
  child.stdout.on("data", (d) => {
    out += d;
    const edge = out.match(/^\s+edge\s+http:\/\/(\S+)/m);
    const api = out.match(/^\s+api\s+(http:\/\/\S+)/m);
    const clerk = out.match(/^\s+clerk\s+(http:\/\/\S+)/m);
    const user = out.match(/Demo session token for (\S+) /);
    if (edge && api && clerk && user) resolve({ edge: edge[1], api: api[1], clerk: clerk[1], user: user[1] });
  });
  child.on("exit", (c) => reject(new Error(`frontdesk exited ${c}`)));
});
const [host, port] = fd.edge.split(":");
const token = (
  await (
    await fetch(`${fd.clerk}/__emulator/sessions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ user_id: fd.user, ttl_s: 3600 }),
    })
  ).json()
).jwt;

const rssKiB = () => Number(readFileSync(`/proc/${child.pid}/status`, "utf8").match(/VmRSS:\s+(\d+)/)[1]);
const publish = async (data) => {
  const r = await fetch(`${fd.api}/v1/events`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ tenant: fd.user, type: "invalidate", data }),
  });
  if (r.status !== 202) throw new Error(`publish ${r.status}`);
  return (await r.json()).id;
};

/** Opens one subscriber; resolves once the response head arrived. */
function subscribe(onData, lastEventId) {
  return new Promise((resolve, reject) => {
    const s = connect({ host, port: Number(port) });
    let head = true;
    s.setNoDelay(true);
    s.on("error", reject);
    s.on("connect", () => {
      s.write(
        `GET /_frontdesk/events HTTP/1.1\r\nHost: ${fd.edge}\r\nAuthorization: Bearer ${token}\r\n` +
          (lastEventId ? `Last-Event-ID: ${lastEventId}\r\n` : "") +
          "\r\n",
      );
    });
    s.on("data", (b) => {
      if (head) {
        const text = b.toString("latin1");
        if (!text.startsWith("HTTP/1.1 200")) return reject(new Error(text.split("\r\n")[0]));
        head = false;
        resolve(s);
      }
      onData?.(b);
    });
  });
}

async function openMany(n, onData) {
  const socks = [];
  for (let i = 0; i < n; i += 500) {
    const batch = [];
    for (let j = i; j < Math.min(n, i + 500); j++) batch.push(subscribe(onData ? (b) => onData(j, b) : null));
    socks.push(...(await Promise.all(batch)));
  }
  return socks;
}

const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};
const report = {};
const log = (...a) => console.error(new Date().toISOString(), ...a);

log("frontdesk up", fd.edge);
// 1. Idle subscribers and memory.
await new Promise((r) => setTimeout(r, 500));
const rss0 = rssKiB();
let t = performance.now();
let idle = await openMany(IDLE);
const openS = (performance.now() - t) / 1000;
await new Promise((r) => setTimeout(r, 1000));
const rss1 = rssKiB();
report.idle = {
  subscribers: idle.length,
  open_seconds: +openS.toFixed(2),
  rss_before_mib: +(rss0 / 1024).toFixed(1),
  rss_after_mib: +(rss1 / 1024).toFixed(1),
  kib_per_subscriber: +((rss1 - rss0) / idle.length).toFixed(2),
};
for (const s of idle) s.destroy();
idle = null;
await new Promise((r) => setTimeout(r, 1500));

log("idle", report.idle);
// 2. Fan-out to FANOUT subscribers of one tenant.
let round = 0;
let got = 0;
let arrivals = [];
let doneRound = null;
const socks = await openMany(FANOUT, (_i, b) => {
  if (b.includes(`"round":${round}}`)) {
    arrivals.push(performance.now());
    got += 1;
    if (got === FANOUT) doneRound?.();
  }
});
log("fan-out subscribers open");
const lasts = [];
const medians = [];
for (round = 1; round <= ROUNDS; round++) {
  got = 0;
  arrivals = [];
  const done = new Promise((r) => (doneRound = r));
  const t0 = performance.now();
  await publish({ round });
  await done;
  lasts.push(Math.max(...arrivals) - t0);
  medians.push(pct(arrivals, 50) - t0);
  await new Promise((r) => setTimeout(r, 100));
}
report.fanout = {
  subscribers: FANOUT,
  rounds: ROUNDS,
  last_subscriber_ms_p50: +pct(lasts, 50).toFixed(1),
  last_subscriber_ms_p99: +pct(lasts, 99).toFixed(1),
  median_subscriber_ms_p50: +pct(medians, 50).toFixed(1),
};
for (const s of socks) s.destroy();

log("fanout", report.fanout);
// 3. Replay of 1,000 missed events.
const replays = [];
for (let r = 0; r < 5; r++) {
  const first = await publish({ replay: r, n: 0 });
  const cursor = `${fd.user}:${first}`;
  for (let n = 1; n <= REPLAY; n++) await publish({ replay: r, n });
  let text = "";
  let sock = null;
  const t0 = performance.now();
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`replay incomplete`)), 10000);
    subscribe((b) => {
      text += b.toString("latin1");
      if (text.includes(`"n":${REPLAY},`)) {
        clearTimeout(timer);
        resolve();
      }
    }, cursor)
      .then((s) => (sock = s))
      .catch(reject);
  });
  sock?.destroy();
  replays.push(performance.now() - t0);
}
report.replay = { missed: REPLAY, ms_median: +pct(replays, 50).toFixed(1), ms_all: replays.map((x) => +x.toFixed(1)) };

console.log(JSON.stringify(report, null, 2));
child.kill("SIGTERM");
await new Promise((r) => child.once("exit", r));
await rm(work, { recursive: true, force: true });
process.exit(0);
