// Drives the operator console in headless Chromium against `frontdesk serve --dev`.
//
//   FRONTDESK_BIN=target/debug/frontdesk REDIS_URL=redis://… OUT_DIR=… node console.test.mjs

import { spawn } from "node:child_process";
import { createHmac, randomBytes } from "node:crypto";
import { mkdtemp, mkdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";

const BIN = process.env.FRONTDESK_BIN;
const REDIS_URL = process.env.REDIS_URL;
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const OUT_DIR = process.env.OUT_DIR;
const PREFIX = `fdconsole:${process.pid}:${Date.now()}:`;
const KEY = randomBytes(24);
const SIGNING_SECRET = "whsec_" + KEY.toString("base64");

let failures = 0;
const results = [];
function check(name, ok, detail = "") {
  results.push(`${ok ? "ok  " : "FAIL"} ${name}${detail ? ` (${detail})` : ""}`);
  if (!ok) failures += 1;
}

const work = await mkdtemp(path.join(tmpdir(), "frontdesk-console-"));
let logs = "";

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
      FRONTDESK_LOG: "info",
      FRONTDESK_SHUTDOWN_GRACE_MS: "500",
      // One failed attempt makes a dead letter.
      FRONTDESK_WEBHOOKS__MAX_ATTEMPTS: "1",
      CLERK_WEBHOOK_SIGNING_SECRET: SIGNING_SECRET,
    });
    const child = spawn(BIN, ["serve", "--dev"], { env, cwd: work, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    const timer = setTimeout(() => reject(new Error(`frontdesk did not start:\n${out}\n${logs}`)), 30000);
    child.stderr.on("data", (d) => (logs += d));
    child.stdout.on("data", (d) => {
      out += d;
      logs += d;
      const edge = out.match(/^\s+edge\s+(http:\/\/\S+)/m);
      const api = out.match(/^\s+api\s+(http:\/\/\S+)/m);
      const user = out.match(/Demo session token for (\S+) /);
      if (edge && api && user) {
        clearTimeout(timer);
        resolve({ child, edge: edge[1], api: api[1], user: user[1] });
      }
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`frontdesk exited (${code}):\n${out}\n${logs}`));
    });
  });
}

async function until(what, fn, ms = 15000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

// Svix's scheme, as Clerk signs: HMAC-SHA256 over "id.timestamp.body".
async function sendWebhook(edge, id, body) {
  const ts = Math.floor(Date.now() / 1000);
  const sig = createHmac("sha256", KEY).update(`${id}.${ts}.${body}`).digest("base64");
  const r = await fetch(`${edge}/_frontdesk/webhooks/clerk`, {
    method: "POST",
    headers: { "content-type": "application/json", "svix-id": id, "svix-timestamp": String(ts), "svix-signature": `v1,${sig}` },
    body,
  });
  return r.status;
}

const fd = await startFrontdesk();
let browser = null;
try {
  // A dead letter: a user.updated whose data is not a user fails its one attempt.
  const msgId = `msg_console_${Date.now()}`;
  const body = JSON.stringify({ data: { object: "user", first_name: 7 }, object: "event", type: "user.updated", timestamp: Date.now() });
  check("webhook accepted", (await sendWebhook(fd.edge, msgId, body)) === 200);
  await until("the dead letter", async () => {
    const r = await (await fetch(`${fd.api}/v1/webhooks?state=dead`)).json();
    return r.items.some((m) => m.id === msgId);
  });

  browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const errors = [];
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  page.on("pageerror", (e) => errors.push(String(e)));
  const dialogs = [];
  page.on("dialog", (d) => { dialogs.push(d.message()); d.accept(); });

  const resp = await page.goto(`${fd.api}/console`);
  check("page loads", resp.status() === 200, String(resp.status()));
  check("page has its heading", (await page.locator("h1").textContent()) === "Frontdesk console");
  await page.waitForFunction(() => document.getElementById("stream-status").textContent === "live");
  // The first snapshot fills the figures.
  await page.waitForFunction(() => document.getElementById("requests-total").textContent !== "–");

  // The fleet table lists this instance (dev mode has Redis).
  await page.waitForSelector("#fleet-table tbody tr[data-instance]", { timeout: 10000 });
  check("fleet lists this instance", (await page.locator("#fleet-table tbody tr[data-instance]").first().textContent()).includes("(this one)"));

  // Keyboard: the first Tab lands on the skip link.
  await page.keyboard.press("Tab");
  check("first Tab reaches the skip link", await page.evaluate(() => document.activeElement && document.activeElement.classList.contains("skip")));

  // A figure changes after traffic.
  const before = Number(await page.locator("#requests-total").textContent());
  for (let i = 0; i < 20; i++) await fetch(`${fd.edge}/_frontdesk/healthz`);
  await page.waitForFunction((b) => Number(document.getElementById("requests-total").textContent) >= b + 20, before, { timeout: 10000 });
  const after = Number(await page.locator("#requests-total").textContent());
  check("requests figure moves after traffic", after >= before + 20, `${before} -> ${after}`);
  const points = await page.locator("#requests-total-line").getAttribute("points");
  check("chart drawn", typeof points === "string" && points.split(" ").length >= 2, points ? `${points.split(" ").length} points` : "none");
  check("process counters shown", /^\d+$/.test(await page.locator("#respcache-hits").textContent()), await page.locator("#respcache-hits").textContent());
  check("dead-letter figure", (await page.locator("#inbox-dead").textContent()) === "1");

  // Dead letter replayed from its button.
  const row = page.locator(`tr[data-id="${msgId}"]`);
  await row.waitFor();
  await row.getByRole("button", { name: `Replay ${msgId}` }).click();
  await page.waitForFunction((id) => document.getElementById("dead-result").textContent === `Replayed ${id}.`, msgId);
  check("replay asked for confirmation", dialogs.some((d) => d.includes(msgId)));
  await until("the replay in the log", async () => logs.includes("webhook message replayed") && logs.includes(msgId), 5000)
    .then(() => check("replay reached the inbox", true))
    .catch(() => check("replay reached the inbox", false));

  // A user found by email and evicted.
  const user = await (await fetch(`${fd.api}/v1/users/${fd.user}`)).json();
  await page.selectOption("#user-kind", "email");
  await page.fill("#user-q", user.email);
  await page.getByRole("button", { name: "Look up" }).click();
  await page.waitForFunction((id) => { const e = document.querySelector('dd[data-field="id"]'); return e && e.textContent === id; }, fd.user);
  check("user found by email", true);
  const cachedBefore = (await fetch(`${fd.api}/v1/users/${fd.user}`)).headers.get("x-cache");
  check("user cached before evict", cachedBefore === "HIT", cachedBefore);
  await page.getByRole("button", { name: "Evict from cache" }).click();
  await page.waitForFunction((id) => document.getElementById("user-result").textContent === `Evicted ${id}.`, fd.user);
  check("evict asked for confirmation", dialogs.some((d) => d.startsWith(`Evict ${fd.user}`)));
  const cachedAfter = (await fetch(`${fd.api}/v1/users/${fd.user}`)).headers.get("x-cache");
  check("user evicted", cachedAfter === "MISS", cachedAfter);

  // A bulk job's progress by id.
  const job = await (await fetch(`${fd.api}/v1/users/bulk/metadata`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ updates: [{ user_id: fd.user, public_metadata: { console: true } }] }),
  })).json();
  await page.fill("#job-id", job.job_id);
  await page.getByRole("button", { name: "Show" }).click();
  await page.waitForFunction((id) => document.getElementById("job-result").textContent.startsWith(`Job ${id}: `), job.job_id);
  check("bulk job shown", (await page.locator("#job-progress").getAttribute("max")) === "1", await page.locator("#job-result").textContent());

  // Screenshots: laptop and phone.
  await mkdir(OUT_DIR, { recursive: true });
  await page.screenshot({ path: path.join(OUT_DIR, "console.png"), fullPage: true });
  await page.setViewportSize({ width: 390, height: 844 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check("no horizontal scroll on a phone", overflow <= 0, `${overflow}px`);
  await page.screenshot({ path: path.join(OUT_DIR, "console-phone.png"), fullPage: true });
  check("screenshots written", true, OUT_DIR);

  check("no console errors", errors.length === 0, errors.join(" | "));
} catch (e) {
  check("run", false, e.stack || String(e));
} finally {
  if (browser) await browser.close();
  fd.child.removeAllListeners("exit");
  const exited = new Promise((r) => fd.child.once("exit", r));
  fd.child.kill("SIGTERM");
  await exited;
  await rm(work, { recursive: true, force: true });
}

console.log(results.join("\n"));
if (failures > 0) {
  console.log(`\n${failures} console check(s) failed`);
  process.exit(1);
}
console.log("\nconsole checks passed");
