// Runs @frontdesk/client in headless Chromium against a running `frontdesk serve --dev`.
//
// A small Node server is the page's origin: it serves the test page and the package's
// modules, and forwards /_frontdesk/* to Frontdesk's edge (so the __session cookie is
// first-party, as in an app), with two fault switches: refuse the events stream (to
// hold the browser off while events pile up) and answer the next N profile calls 503.
//
//   FRONTDESK_BIN=target/debug/frontdesk REDIS_URL=redis://… node browser.test.mjs

import { spawn } from "node:child_process";
import { createServer, request as httpRequest } from "node:http";
import { readFile, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const SRC = path.resolve(HERE, "../src");
const BIN = process.env.FRONTDESK_BIN;
const REDIS_URL = process.env.REDIS_URL;
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const PREFIX = `fdjs:${process.pid}:${Date.now()}:`;

let failures = 0;
const results = [];
function check(name, ok, detail = "") {
  results.push(`${ok ? "ok  " : "FAIL"} ${name}${detail ? ` (${detail})` : ""}`);
  if (!ok) failures += 1;
}

// ---- Frontdesk, started and restarted on one SQLite file and one Redis prefix ----

const work = await mkdtemp(path.join(tmpdir(), "frontdesk-js-"));
let frontdesk = null;

function startFrontdesk() {
  return new Promise((resolve, reject) => {
    const env = { ...process.env };
    for (const k of Object.keys(env)) {
      if (k.startsWith("CLERK_") || k.startsWith("FRONTDESK_") || k === "DATABASE_URL") delete env[k];
    }
    Object.assign(env, {
      DATABASE_URL: `sqlite://${work}/frontdesk.db`,
      REDIS_URL,
      FRONTDESK_REDIS_PREFIX: PREFIX,
      FRONTDESK_EDGE_ADDR: "127.0.0.1:0",
      FRONTDESK_API_ADDR: "127.0.0.1:0",
      FRONTDESK_LOG: "warn",
      FRONTDESK_SHUTDOWN_GRACE_MS: "500",
    });
    const child = spawn(BIN, ["serve", "--dev"], { env, cwd: work, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    const timer = setTimeout(() => reject(new Error(`frontdesk did not start:\n${out}\n${err}`)), 30000);
    child.stderr.on("data", (d) => (err += d));
    child.stdout.on("data", (d) => {
      out += d;
      const edge = out.match(/^\s+edge\s+(http:\/\/\S+)/m);
      const api = out.match(/^\s+api\s+(http:\/\/\S+)/m);
      const clerk = out.match(/^\s+clerk\s+(http:\/\/\S+)/m);
      const user = out.match(/Demo session token for (\S+) /);
      if (edge && api && clerk && user) {
        clearTimeout(timer);
        resolve({ child, edge: edge[1], api: api[1], clerk: clerk[1], user: user[1] });
      }
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`frontdesk exited (${code}):\n${out}\n${err}`));
    });
  });
}

async function stopFrontdesk() {
  if (!frontdesk) return;
  const { child } = frontdesk;
  frontdesk = null;
  child.removeAllListeners("exit");
  const exited = new Promise((r) => child.once("exit", r));
  child.kill("SIGTERM");
  await exited;
}

async function mint(fd) {
  const r = await fetch(`${fd.clerk}/__emulator/sessions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ user_id: fd.user, ttl_s: 3600 }),
  });
  if (!r.ok) throw new Error(`mint: ${r.status}`);
  return (await r.json()).jwt;
}

async function publish(fd, tenant, type, data) {
  const r = await fetch(`${fd.api}/v1/events`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ tenant, type, data }),
  });
  if (r.status !== 202) throw new Error(`POST /v1/events: ${r.status} ${await r.text()}`);
  return r.json();
}

// ---- The page's origin ----

const faults = { eventsDown: false, profile503: 0, profileCalls: 0, resumes: [] };
const PAGE = `<!doctype html><meta charset="utf-8"><title>frontdesk client</title>
<script type="module">
  import * as fd from "/client/index.js";
  window.fd = fd;
  window.ready = true;
</script>`;

const origin = createServer(async (req, res) => {
  const url = new URL(req.url, "http://x");
  if (url.pathname === "/") {
    res.writeHead(200, { "content-type": "text/html" }).end(PAGE);
    return;
  }
  if (url.pathname.startsWith("/client/")) {
    const file = path.join(SRC, path.basename(url.pathname));
    try {
      res.writeHead(200, { "content-type": "text/javascript" }).end(await readFile(file));
    } catch {
      res.writeHead(404).end();
    }
    return;
  }
  if (!url.pathname.startsWith("/_frontdesk/") || !frontdesk) {
    res.writeHead(502, { "content-type": "application/json" }).end('{"code":"down"}');
    return;
  }
  if (url.pathname === "/_frontdesk/events") {
    if (faults.eventsDown) {
      res.writeHead(503, { "content-type": "application/json" }).end('{"code":"held"}');
      return;
    }
    faults.resumes.push(req.headers["last-event-id"] || null);
  }
  if (url.pathname === "/_frontdesk/me/profile") {
    faults.profileCalls += 1;
    if (faults.profile503 > 0) {
      faults.profile503 -= 1;
      res
        .writeHead(503, { "content-type": "application/json", "retry-after": "0" })
        .end('{"code":"store_unavailable","message":"injected"}');
      return;
    }
  }
  const target = new URL(req.url, frontdesk.edge);
  const up = httpRequest(target, { method: req.method, headers: req.headers }, (ur) => {
    res.writeHead(ur.statusCode, ur.headers);
    ur.pipe(res);
    // An instance that goes away mid-stream ends the browser's stream too.
    ur.on("close", () => {
      if (!res.writableEnded) res.destroy();
    });
  });
  up.on("error", () => {
    if (!res.headersSent) res.writeHead(502).end();
    else res.destroy();
  });
  req.pipe(up);
});
await new Promise((r) => origin.listen(0, "127.0.0.1", r));
const ORIGIN = `http://127.0.0.1:${origin.address().port}`;

// ---- The browser ----

let browser = null;
try {
  frontdesk = await startFrontdesk();
  const tenant = frontdesk.user;
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ["--no-sandbox"] });
  const context = await browser.newContext();
  const setCookie = async (token) =>
    context.addCookies([{ name: "__session", value: token, url: ORIGIN }]);
  await setCookie(await mint(frontdesk));
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error("page error:", e));
  await page.goto(`${ORIGIN}/`);
  await page.waitForFunction(() => window.ready === true);

  // 1. An invalidation reaches the page soon after POST /v1/events.
  await page.evaluate(() => {
    window.events = [];
    window.statuses = [];
    window.invalidated = [];
    const queryClient = {
      invalidateQueries: (filters) => window.invalidated.push(filters ? filters.queryKey : "ALL"),
    };
    const invalidate = window.fd.invalidateQueries(queryClient, {
      "kpis.changed": [["kpis"], ["dashboard", "summary"]],
    });
    window.handle = window.fd.connectEvents({
      url: "/_frontdesk/events",
      minBackoffMs: 100,
      maxBackoffMs: 400,
      onStatus: (s) => window.statuses.push(s),
      onEvent: (e) => {
        window.events.push({ ...e, at: performance.timeOrigin + performance.now() });
        invalidate(e);
      },
    });
  });
  await page.waitForFunction(() => window.statuses.includes("open"));
  const latencies = [];
  for (let i = 0; i < 5; i++) {
    const before = Date.now();
    await publish(frontdesk, tenant, "invalidate", { resource: `invoices-${i}` });
    const at = await page.waitForFunction(
      (n) => window.events.find((e) => e.type === "invalidate" && e.data.resource === `invoices-${n}`)?.at,
      i,
      { timeout: 5000 },
    );
    latencies.push((await at.jsonValue()) - before);
  }
  latencies.sort((a, b) => a - b);
  const median = latencies[2];
  // The feature's bound is 100 ms; asserted loosely (a loaded CI machine), reported exactly.
  check("invalidation reaches the page after POST /v1/events", median < 1000, `median ${median.toFixed(1)} ms, all ${latencies.map((l) => l.toFixed(1)).join(", ")} ms`);

  await publish(frontdesk, tenant, "kpis.changed", {});
  await page.waitForFunction(() => window.events.some((e) => e.type === "kpis.changed"));
  const invalidated = await page.evaluate(() => window.invalidated);
  check(
    "invalidateQueries maps events to query keys",
    JSON.stringify(invalidated) ===
      JSON.stringify([["invoices-0"], ["invoices-1"], ["invoices-2"], ["invoices-3"], ["invoices-4"], ["kpis"], ["dashboard", "summary"]]),
    JSON.stringify(invalidated),
  );

  // 2. The instance restarts; events published meanwhile arrive through Last-Event-ID.
  faults.eventsDown = true;
  faults.resumes = [];
  await stopFrontdesk();
  frontdesk = await startFrontdesk();
  await setCookie(await mint(frontdesk)); // the new emulator signs with new keys
  const before = await page.evaluate(() => window.events.length);
  for (const n of [1, 2, 3]) await publish(frontdesk, tenant, "invalidate", { resource: `after-restart-${n}` });
  faults.eventsDown = false;
  await page
    .waitForFunction((b) => window.events.length >= b + 3, before, { timeout: 15000 })
    .catch(async (e) => {
      const seen = await page.evaluate(() => ({ statuses: window.statuses.slice(-8), events: window.events.slice(-4) }));
      throw new Error(`${e.message}\n${JSON.stringify(seen)}\nresumes: ${JSON.stringify(faults.resumes)}`);
    });
  const resumed = await page.evaluate((b) => window.events.slice(b).map((e) => e.type + ":" + (e.data?.resource ?? "")), before);
  check(
    "resumes after a restart without loss (Last-Event-ID)",
    JSON.stringify(resumed) === JSON.stringify(["invalidate:after-restart-1", "invalidate:after-restart-2", "invalidate:after-restart-3"]) &&
      faults.resumes.length > 0 &&
      faults.resumes.every((id) => typeof id === "string" && id.includes(`${tenant}:`)),
    `${JSON.stringify(resumed)}; resumed with ${JSON.stringify(faults.resumes[faults.resumes.length - 1])}`,
  );
  await page.evaluate(() => window.handle.close());

  // 3. ensureProfile succeeds after two injected 503s.
  faults.profile503 = 2;
  faults.profileCalls = 0;
  const ensured = await page.evaluate(async () => {
    try {
      const r = await window.fd.ensureProfile({ retries: 4, backoff: { baseMs: 50, maxMs: 200 } });
      return { ok: true, created: r.created, hasProfile: !!r.profile };
    } catch (e) {
      return { ok: false, name: e.name, message: e.message };
    }
  });
  check("ensureProfile succeeds after two 503s", ensured.ok && ensured.hasProfile && faults.profileCalls === 3, `${JSON.stringify(ensured)}, ${faults.profileCalls} calls`);

  // 4. Without a session: a typed 401, no retries.
  await context.clearCookies();
  faults.profileCalls = 0;
  const refused = await page.evaluate(async () => {
    try {
      await window.fd.ensureProfile({ retries: 4, backoff: { baseMs: 50, maxMs: 200 } });
      return { ok: true };
    } catch (e) {
      return { ok: false, name: e.name, status: e.status, isBase: e instanceof window.fd.FrontdeskError };
    }
  });
  check("ensureProfile: 401 is an UnauthorizedError, not retried", !refused.ok && refused.name === "UnauthorizedError" && refused.status === 401 && refused.isBase && faults.profileCalls === 1, JSON.stringify(refused));
} catch (e) {
  check("browser tests ran", false, e.stack || String(e));
} finally {
  if (browser) await browser.close();
  await stopFrontdesk();
  origin.close();
  await rm(work, { recursive: true, force: true });
}

console.log(results.join("\n"));
process.exit(failures === 0 ? 0 : 1);
