// Helpers shared by the @clerk/backend suites (sdk.test.mjs: the emulator directly;
// proxy.test.mjs: the Frontdesk proxy in front of it).
import assert from 'node:assert/strict';
import { isClerkAPIResponseError } from '@clerk/backend/errors';

/** The emulator's control API (`/__emulator…`), which the SDK never sees. */
export function emulatorControl(emulatorUrl) {
  return async function control(method, path, body) {
    const res = await fetch(`${emulatorUrl}/__emulator${path}`, {
      method,
      headers: body ? { 'content-type': 'application/json' } : {},
      body: body ? JSON.stringify(body) : undefined,
    });
    assert.ok(res.ok, `${method} ${path}: ${res.status}`);
    const ct = res.headers.get('content-type');
    return ct === 'application/json' ? res.json() : res.text();
  };
}

// The SDK types JSON by its `object` field; an untyped payload stays a plain Object.
// (The bundle names classes `_User` etc., hence the optional underscore.)
export function assertClass(value, name) {
  assert.match(value.constructor.name, new RegExp(`^_?${name}$`), `expected a ${name}`);
}

/** The promise rejects with the SDK's ClerkAPIResponseError of that status and code. */
export async function expectClerkError(promise, status, code) {
  await assert.rejects(promise, (err) => {
    assert.ok(isClerkAPIResponseError(err), `expected a ClerkAPIResponseError, got ${err}`);
    assert.equal(err.status, status, `status of ${err}`);
    assert.equal(err.errors?.[0]?.code, code);
    assert.ok(err.clerkTraceId, 'clerk_trace_id is surfaced');
    return true;
  });
}
