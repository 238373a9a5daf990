// The official @clerk/backend SDK against the Frontdesk Backend API proxy
// (`<api listener>/clerk/v1/…`), which runs in front of the Frontdesk Clerk emulator.
// The drop-in promise: the app changes `apiUrl` and nothing else. Every answer is
// compared with the emulator's own (a second client pointed at it directly), and the
// emulator's call counters show what the proxy spared it.
// Run by ../run.sh with FRONTDESK_EMULATOR_URL, FRONTDESK_PROXY_URL
// (http://<api listener>/clerk) and CLERK_SECRET_KEY set.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createClerkClient, verifyToken } from '@clerk/backend';
import { assertClass, emulatorControl, expectClerkError } from './helpers.mjs';

const emulatorUrl = process.env.FRONTDESK_EMULATOR_URL;
const proxyUrl = process.env.FRONTDESK_PROXY_URL;
const secretKey = process.env.CLERK_SECRET_KEY;
assert.ok(
  emulatorUrl && proxyUrl && secretKey,
  'FRONTDESK_EMULATOR_URL, FRONTDESK_PROXY_URL and CLERK_SECRET_KEY must be set',
);

/** The app: only `apiUrl` differs from a plain Clerk set-up. */
const clerk = createClerkClient({ secretKey, apiUrl: proxyUrl });
/** The ground truth: the same SDK talking to the emulator itself. */
const direct = createClerkClient({ secretKey, apiUrl: emulatorUrl });
const control = emulatorControl(emulatorUrl);

async function upstreamCalls() {
  return control('GET', '/stats');
}

// Users no other check touches (the emulator suites use the sample users; each check
// below takes its own, so the proxy has cached none of them beforehand).
const info = await control('GET', '');
const touched = new Set(info.sample_user_ids);
const all = await direct.users.getUserList({ limit: 100, orderBy: '+created_at' });
const fresh = all.data.map((u) => u.id).filter((id) => !touched.has(id));
assert.ok(fresh.length >= 8, `need 8 untouched users, have ${fresh.length}`);
const [uGet, uList1, uList2, uUpdate, uMeta, uCache, uCoalesce, uAuth] = fresh;

test('proxy: getUser parses a User identical to Clerk\'s', async () => {
  const user = await clerk.users.getUser(uGet);
  const truth = await direct.users.getUser(uGet);
  assertClass(user, 'User');
  assert.equal(user.id, uGet);
  assert.equal(user.firstName, truth.firstName);
  assert.equal(user.lastName, truth.lastName);
  assert.equal(user.fullName, truth.fullName);
  assert.equal(user.primaryEmailAddress.emailAddress, truth.primaryEmailAddress.emailAddress);
  assert.deepEqual(user.publicMetadata, truth.publicMetadata);
  assert.deepEqual(user.raw, truth.raw, 'the same JSON as Clerk sent');
  // A second read (a cache hit) is the same User.
  const again = await clerk.users.getUser(uGet);
  assert.deepEqual(again.raw, truth.raw);
});

test('proxy: getUser of an unknown id throws 404 ClerkAPIResponseError', async () => {
  await expectClerkError(clerk.users.getUser('user_doesnotexist'), 404, 'resource_not_found');
});

test('proxy: getUserList by userId (also calls /v1/users/count)', async () => {
  const ids = [uList1, uList2];
  const res = await clerk.users.getUserList({ userId: [...ids, 'user_unknown'] });
  const truth = await direct.users.getUserList({ userId: [...ids, 'user_unknown'] });
  assert.equal(res.totalCount, 2);
  assert.equal(res.totalCount, truth.totalCount);
  res.data.forEach((u) => assertClass(u, 'User'));
  assert.deepEqual(res.data.map((u) => u.id).sort(), ids.slice().sort());
  assert.deepEqual(
    res.data.map((u) => u.raw),
    truth.data.map((u) => u.raw),
    'same users, same order, same JSON',
  );
  // The single look-up shares the list's entries.
  await control('POST', '/reset');
  const one = await clerk.users.getUser(uList1);
  assert.equal(one.id, uList1);
  assert.equal((await upstreamCalls()).total, 0, 'getUser after the list is a cache hit');
});

test('proxy: getCount', async () => {
  assert.equal(await clerk.users.getCount(), await direct.users.getCount());
  assert.equal(await clerk.users.getCount({ userId: [uGet] }), 1);
  assert.equal(await clerk.users.getCount({ userId: [uGet, uList1, 'user_unknown'] }), 2);
});

test('proxy: updateUser; the next getUser returns the new data', async () => {
  const before = await clerk.users.getUser(uUpdate); // now cached
  const updated = await clerk.users.updateUser(uUpdate, { firstName: 'Proxied', lastName: 'Through' });
  assertClass(updated, 'User');
  assert.equal(updated.id, uUpdate);
  assert.equal(updated.firstName, 'Proxied');
  assert.equal(updated.lastName, 'Through');
  assert.ok(updated.updatedAt > before.updatedAt);
  const after = await clerk.users.getUser(uUpdate);
  assert.equal(after.firstName, 'Proxied');
  assert.equal(after.lastName, 'Through');
  assert.equal(after.fullName, 'Proxied Through');
  assert.deepEqual(after.raw, (await direct.users.getUser(uUpdate)).raw);
  const listed = await clerk.users.getUserList({ userId: [uUpdate] });
  assert.equal(listed.data[0].firstName, 'Proxied', 'lists see the write too');
});

test('proxy: updateUserMetadata deep-merges; the next getUser sees it', async () => {
  await clerk.users.getUser(uMeta); // now cached
  await clerk.users.updateUserMetadata(uMeta, { publicMetadata: { prefs: { theme: 'dark', lang: 'en' } } });
  const user = await clerk.users.updateUserMetadata(uMeta, {
    publicMetadata: { prefs: { lang: null, tz: 'UTC' } },
    privateMetadata: { note: 'via proxy' },
  });
  assertClass(user, 'User');
  assert.deepEqual(user.publicMetadata.prefs, { theme: 'dark', tz: 'UTC' });
  assert.equal(user.privateMetadata.note, 'via proxy');
  const after = await clerk.users.getUser(uMeta);
  assert.deepEqual(after.publicMetadata.prefs, { theme: 'dark', tz: 'UTC' });
  assert.equal(after.privateMetadata.note, 'via proxy');
  assert.deepEqual(after.raw, (await direct.users.getUser(uMeta)).raw);
});

test('proxy: deleteUser returns a DeletedObject; getUser then throws 404', async () => {
  const countBefore = await clerk.users.getCount();
  const created = await clerk.users.createUser({
    emailAddress: [`proxy.gone.${Date.now()}@example.com`],
    firstName: 'Short',
    lastName: 'Lived',
  });
  assertClass(created, 'User');
  assert.equal(await clerk.users.getCount(), countBefore + 1, 'the create voided the cached count');
  const seen = await clerk.users.getUser(created.id); // now cached
  assert.equal(seen.fullName, 'Short Lived');
  const deleted = await clerk.users.deleteUser(created.id);
  assertClass(deleted, 'DeletedObject');
  assert.equal(deleted.id, created.id);
  assert.equal(deleted.deleted, true);
  await expectClerkError(clerk.users.getUser(created.id), 404, 'resource_not_found');
  await expectClerkError(direct.users.getUser(created.id), 404, 'resource_not_found');
  assert.equal(await clerk.users.getCount(), countBefore);
});

test('proxy: organizations.getOrganizationList and getOrganization', async () => {
  const list = await clerk.organizations.getOrganizationList({ limit: 10 });
  const truth = await direct.organizations.getOrganizationList({ limit: 10 });
  assert.ok(list.data.length >= 1);
  assert.equal(list.totalCount, truth.totalCount);
  list.data.forEach((o) => assertClass(o, 'Organization'));
  assert.deepEqual(list.data.map((o) => o.id), truth.data.map((o) => o.id));
  assert.deepEqual(list.data.map((o) => o.name), truth.data.map((o) => o.name));
  for (const id of info.organization_ids) {
    assert.ok(list.data.some((o) => o.id === id), `${id} is listed`);
  }
  const org = truth.data[0];
  const byId = await clerk.organizations.getOrganization({ organizationId: org.id });
  assertClass(byId, 'Organization');
  assert.equal(byId.id, org.id);
  assert.equal(byId.name, org.name);
  assert.equal(byId.slug, org.slug);
  assert.deepEqual(byId.raw, (await direct.organizations.getOrganization({ organizationId: org.id })).raw);
  const bySlug = await clerk.organizations.getOrganization({ slug: org.slug });
  assert.equal(bySlug.id, org.id);
  await expectClerkError(
    clerk.organizations.getOrganization({ organizationId: 'org_doesnotexist' }),
    404,
    'resource_not_found',
  );
});

test('proxy: verifyToken with the JWKS fetched through the proxy (and cached there)', async () => {
  const { jwt, sid } = await control('POST', '/sessions', { user_id: uGet });
  await control('POST', '/reset');
  const payload = await verifyToken(jwt, { secretKey, apiUrl: proxyUrl });
  assert.equal(payload.sub, uGet);
  assert.equal(payload.sid, sid);
  assert.equal((await upstreamCalls()).calls['GET /v1/jwks'], 1, 'the SDK fetched the JWKS via the proxy');
  // The SDK caches keys in process; skipping that cache, the proxy's answers them.
  for (let i = 0; i < 3; i++) {
    const again = await verifyToken(jwt, { secretKey, apiUrl: proxyUrl, skipJwksCache: true });
    assert.equal(again.sub, uGet);
  }
  const stats = await upstreamCalls();
  assert.equal(stats.total, 1, `one upstream call in all: ${JSON.stringify(stats)}`);
});

test('proxy caching: 5 × getUser(sameId) make exactly 1 upstream call', async () => {
  await control('POST', '/reset');
  const users = [];
  for (let i = 0; i < 5; i++) users.push(await clerk.users.getUser(uCache));
  const stats = await upstreamCalls();
  assert.equal(stats.total, 1, `upstream calls: ${JSON.stringify(stats)}`);
  users.forEach((u) => assert.equal(u.id, uCache));
  assert.deepEqual(users[4].raw, users[0].raw);
});

test('proxy coalescing: 5 concurrent getUser(sameId) make exactly 1 upstream call', async () => {
  await control('POST', '/reset');
  const users = await Promise.all(Array.from({ length: 5 }, () => clerk.users.getUser(uCoalesce)));
  const stats = await upstreamCalls();
  assert.equal(stats.total, 1, `upstream calls: ${JSON.stringify(stats)}`);
  users.forEach((u) => assert.equal(u.id, uCoalesce));
});

test('proxy: a wrong secret key is a 401 ClerkAPIResponseError; Clerk never sees it', async () => {
  const bad = createClerkClient({ secretKey: 'sk_test_wrong', apiUrl: proxyUrl });
  await clerk.users.getUser(uAuth); // cached: a wrong key must not read the cache either
  await control('POST', '/reset');
  await expectClerkError(bad.users.getUser(uAuth), 401, 'authentication_invalid');
  await expectClerkError(bad.users.getUser(uCache), 401, 'authentication_invalid');
  await expectClerkError(bad.users.getUserList({ userId: [uAuth] }), 401, 'authentication_invalid');
  await expectClerkError(bad.users.updateUser(uAuth, { firstName: 'Nope' }), 401, 'authentication_invalid');
  await assert.rejects(verifyToken((await control('POST', '/sessions', { user_id: uAuth })).jwt, {
    secretKey: 'sk_test_wrong',
    apiUrl: proxyUrl,
    skipJwksCache: true,
  }));
  const stats = await upstreamCalls();
  assert.equal(stats.total, 0, `upstream calls: ${JSON.stringify(stats)}`);
  assert.notEqual((await direct.users.getUser(uAuth)).firstName, 'Nope');
});
