// Cold storm through the official SDK: N concurrent `getUser` calls for distinct users
// nobody has looked up yet, sent by @clerk/backend through the Frontdesk proxy
// (`apiUrl` = <api listener>/clerk), and the number of list calls the Clerk emulator
// saw for them. A measurement for BENCHMARKS.md ("Adaptive batching"), not a test:
// it fails only when a call does not return its user.
//
//   FRONTDESK_EMULATOR_URL=http://… FRONTDESK_PROXY_URL=http://…/clerk CLERK_SECRET_KEY=sk_test_… \
//     node cold_storm.mjs            # or ../cold_storm.sh, which starts both
//
// STORM_N (300) callers per round, STORM_ROUNDS (5) rounds on fresh users,
// STORM_LATENCY_MS (50): the emulator's latency for the run. The emulator needs at
// least N × rounds users.
import assert from 'node:assert/strict';
import { createClerkClient } from '@clerk/backend';
import { emulatorControl } from './helpers.mjs';

const emulatorUrl = process.env.FRONTDESK_EMULATOR_URL;
const proxyUrl = process.env.FRONTDESK_PROXY_URL;
const secretKey = process.env.CLERK_SECRET_KEY;
assert.ok(
  emulatorUrl && proxyUrl && secretKey,
  'FRONTDESK_EMULATOR_URL, FRONTDESK_PROXY_URL and CLERK_SECRET_KEY must be set',
);
const n = Number(process.env.STORM_N ?? 300);
const rounds = Number(process.env.STORM_ROUNDS ?? 5);
const latencyMs = Number(process.env.STORM_LATENCY_MS ?? 50);

const clerk = createClerkClient({ secretKey, apiUrl: proxyUrl });
const direct = createClerkClient({ secretKey, apiUrl: emulatorUrl });
const control = emulatorControl(emulatorUrl);

// Every user the emulator has, straight from it (no latency yet).
await control('POST', '/config', { latency_ms: 0 });
const ids = [];
for (let offset = 0; ; offset += 500) {
  const page = await direct.users.getUserList({ limit: 500, offset, orderBy: '+created_at' });
  ids.push(...page.data.map((u) => u.id));
  if (page.data.length < 500) break;
}
assert.ok(ids.length >= n * rounds, `need ${n * rounds} users, the emulator has ${ids.length}`);
await control('POST', '/config', { latency_ms: latencyMs });

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

const listCalls = [];
const times = [];
for (let r = 0; r < rounds; r++) {
  const batch = ids.slice(r * n, (r + 1) * n);
  await control('POST', '/reset');
  const t0 = performance.now();
  const users = await Promise.all(batch.map((id) => clerk.users.getUser(id)));
  const ms = performance.now() - t0;
  users.forEach((u, i) => assert.equal(u.id, batch[i], 'each caller gets its own user'));
  const { calls: log } = await control('GET', '/calls');
  const lists = log.filter((c) => c.route === 'GET /v1/users').length;
  listCalls.push(lists);
  times.push(ms);
  console.log(
    `round ${r + 1}: ${n} getUser -> ${lists} list calls (${log.length} calls in all), ` +
      `${ms.toFixed(0)} ms until all answered`,
  );
}
const med = median(listCalls);
console.log(
  `median of ${rounds}: ${med} list calls, ${median(times).toFixed(0)} ms ` +
    `(Clerk latency ${latencyMs} ms; goal <= 4 list calls: ${med <= 4 ? 'met' : 'short'})`,
);
