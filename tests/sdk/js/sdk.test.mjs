// The official @clerk/backend SDK against the Frontdesk Clerk emulator.
// Run by ../run.sh with FRONTDESK_EMULATOR_URL and CLERK_SECRET_KEY set.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createClerkClient, verifyToken } from '@clerk/backend';
import { assertClass, emulatorControl, expectClerkError } from './helpers.mjs';

const apiUrl = process.env.FRONTDESK_EMULATOR_URL;
const secretKey = process.env.CLERK_SECRET_KEY;
assert.ok(apiUrl && secretKey, 'FRONTDESK_EMULATOR_URL and CLERK_SECRET_KEY must be set');

const clerk = createClerkClient({ secretKey, apiUrl });

const control = emulatorControl(apiUrl);

const info = await control('GET', '');
const [u0, u1, u2] = info.sample_user_ids;

test('getUser parses a full User', async () => {
  const user = await clerk.users.getUser(u0);
  assertClass(user, 'User');
  assert.equal(user.id, u0);
  assert.match(user.primaryEmailAddress.emailAddress, /@example\.com$/);
  assert.equal(user.emailAddresses[0].verification.status, 'verified');
  assert.equal(typeof user.publicMetadata.role, 'string');
  assert.ok(user.createdAt > 1_600_000_000_000, 'timestamps in ms');
  assert.ok(user.fullName);
});

test('getUser of an unknown id throws 404 resource_not_found', async () => {
  await expectClerkError(clerk.users.getUser('user_doesnotexist'), 404, 'resource_not_found');
});

test('getUserList by userId (also calls /v1/users/count)', async () => {
  await control('POST', '/reset');
  const res = await clerk.users.getUserList({ userId: [u1, u2, 'user_unknown'] });
  assert.equal(res.totalCount, 2);
  assert.deepEqual(res.data.map((u) => u.id).sort(), [u1, u2].sort());
  const stats = await control('GET', '/stats');
  assert.equal(stats.calls['GET /v1/users'], 1);
  assert.equal(stats.calls['GET /v1/users/count'], 1);
});

test('getUserList paginates and orders', async () => {
  const page = await clerk.users.getUserList({ limit: 5, offset: 0, orderBy: '-created_at' });
  assert.equal(page.data.length, 5);
  assert.equal(page.totalCount, 50);
  for (let i = 1; i < page.data.length; i++) {
    assert.ok(page.data[i - 1].createdAt >= page.data[i].createdAt);
  }
});

test('getCount', async () => {
  assert.equal(await clerk.users.getCount(), 50);
  assert.equal(await clerk.users.getCount({ userId: [u0] }), 1);
});

test('createUser, duplicate is 422 form_identifier_exists', async () => {
  const email = `sdk.${Date.now()}@example.com`;
  const user = await clerk.users.createUser({ emailAddress: [email], firstName: 'Sdk', lastName: 'Made' });
  assert.match(user.id, /^user_/);
  assert.equal(user.primaryEmailAddress.emailAddress, email);
  await expectClerkError(clerk.users.createUser({ emailAddress: [email] }), 422, 'form_identifier_exists');
});

test('updateUser changes fields and bumps updatedAt', async () => {
  const before = await clerk.users.getUser(u1);
  const after = await clerk.users.updateUser(u1, { firstName: 'Changed' });
  assert.equal(after.firstName, 'Changed');
  assert.equal(after.lastName, before.lastName);
  assert.ok(after.updatedAt > before.updatedAt);
});

test('updateUserMetadata deep-merges; null deletes', async () => {
  await clerk.users.updateUserMetadata(u2, { publicMetadata: { prefs: { theme: 'dark', lang: 'en' } } });
  const user = await clerk.users.updateUserMetadata(u2, {
    publicMetadata: { prefs: { lang: null, tz: 'UTC' } },
    privateMetadata: { note: 'x' },
  });
  assert.deepEqual(user.publicMetadata.prefs, { theme: 'dark', tz: 'UTC' });
  assert.equal(user.privateMetadata.note, 'x');
});

test('updateUser with metadata replaces it (PUT …/metadata)', async () => {
  const user = await clerk.users.updateUser(u2, { publicMetadata: { only: true } });
  assert.deepEqual(user.publicMetadata, { only: true });
});

test('deleteUser returns a DeletedObject; the user is gone', async () => {
  const created = await clerk.users.createUser({ emailAddress: [`gone.${Date.now()}@example.com`] });
  const deleted = await clerk.users.deleteUser(created.id);
  assertClass(deleted, 'DeletedObject');
  assert.equal(deleted.id, created.id);
  assert.equal(deleted.deleted, true);
  await expectClerkError(clerk.users.getUser(created.id), 404, 'resource_not_found');
});

test('organizations: list, get by id and slug, memberships', async () => {
  const list = await clerk.organizations.getOrganizationList({ limit: 2 });
  assert.equal(list.data.length, 2);
  assert.ok(list.totalCount >= 2);
  const org = list.data[0];
  assertClass(org, 'Organization');
  assert.match(org.id, /^org_/);
  const byId = await clerk.organizations.getOrganization({ organizationId: org.id });
  const bySlug = await clerk.organizations.getOrganization({ slug: org.slug });
  assert.equal(byId.id, org.id);
  assert.equal(bySlug.id, org.id);
  const members = await clerk.organizations.getOrganizationMembershipList({ organizationId: org.id, limit: 100 });
  assert.ok(members.totalCount > 0);
  const m = members.data[0];
  assertClass(m, 'OrganizationMembership');
  assert.equal(m.organization.id, org.id);
  assert.match(m.role, /^org:(admin|member)$/);
  assert.match(m.publicUserData.userId, /^user_/);
  const mine = await clerk.users.getOrganizationMembershipList({ userId: m.publicUserData.userId });
  assert.ok(mine.data.some((x) => x.organization.id === org.id));
});

test('verifyToken with the JWKS fetched from the emulator', async () => {
  const { jwt, sid } = await control('POST', '/sessions', { user_id: u0 });
  const payload = await verifyToken(jwt, { secretKey, apiUrl });
  assert.equal(payload.sub, u0);
  assert.equal(payload.sid, sid);
  assert.equal(payload.v, 2);
  const ok = await verifyToken(jwt, { secretKey, apiUrl, authorizedParties: ['http://localhost:3000'] });
  assert.equal(ok.sub, u0);
  await assert.rejects(verifyToken(jwt, { secretKey, apiUrl, authorizedParties: ['https://evil.example'] }));
});

test('verifyToken with the PEM (CLERK_JWT_KEY)', async () => {
  const pem = await control('GET', '/jwt_key');
  const org = (await clerk.organizations.getOrganizationList({ limit: 100, orderBy: '+created_at' })).data[0];
  const members = await clerk.organizations.getOrganizationMembershipList({ organizationId: org.id, limit: 100 });
  const userId = members.data[0].publicUserData.userId;
  const { jwt } = await control('POST', '/sessions', { user_id: userId, org_id: org.id });
  const payload = await verifyToken(jwt, { jwtKey: pem });
  assert.equal(payload.sub, userId);
  assert.equal(payload.o.id, org.id);
  // A tampered token fails.
  const [h, p] = jwt.split('.');
  const forged = `${h}.${p}.${'A'.repeat(342)}`;
  await assert.rejects(verifyToken(forged, { jwtKey: pem }));
});

test('a wrong secret key is 401 authentication_invalid', async () => {
  const bad = createClerkClient({ secretKey: 'sk_test_wrong', apiUrl });
  await expectClerkError(bad.users.getUser(u0), 401, 'authentication_invalid');
});

test('rate limit: 429 with retryAfter surfaced by the SDK', async () => {
  await control('POST', '/config', { rate_limit: { requests: 1, window_ms: 60000 } });
  try {
    await clerk.users.getUser(u0);
    await assert.rejects(clerk.users.getUser(u0), (err) => {
      assert.equal(err.status, 429);
      assert.equal(err.errors[0].code, 'too_many_requests');
      assert.ok(err.retryAfter >= 1, `retryAfter ${err.retryAfter}`);
      return true;
    });
  } finally {
    await control('POST', '/config', { rate_limit: null });
  }
});
