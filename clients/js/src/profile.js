// First login in the browser: create (or find) the user's profile, retrying while
// Frontdesk or its store is briefly unavailable.

export class FrontdeskError extends Error {
  constructor(message, { status = 0, code = "unknown", cause } = {}) {
    super(message, cause ? { cause } : undefined);
    this.name = "FrontdeskError";
    this.status = status;
    this.code = code;
  }
}
/** 401: no session, or an expired or revoked one. Sign in again. */
export class UnauthorizedError extends FrontdeskError {
  constructor(message, opts) {
    super(message, opts);
    this.name = "UnauthorizedError";
  }
}
/** Another 4xx: the request itself is wrong; retrying will not help. */
export class RequestError extends FrontdeskError {
  constructor(message, opts) {
    super(message, opts);
    this.name = "RequestError";
  }
}
/** 5xx or the network, still failing after every retry. */
export class UnavailableError extends FrontdeskError {
  constructor(message, opts) {
    super(message, opts);
    this.name = "UnavailableError";
  }
}

const sleep = (ms, signal) =>
  new Promise((resolve, reject) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(t);
      reject(signal.reason);
    });
  });

/** Retry-After in ms (seconds or an HTTP date), or null. */
export function retryAfterMs(value, now = Date.now()) {
  if (!value) return null;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? null : Math.max(0, at - now);
}

async function body(res) {
  try {
    return await res.json();
  } catch {
    return null;
  }
}

/**
 * POST /_frontdesk/me/profile: the caller's profile, created when missing.
 * @param {import("./index").EnsureProfileOptions} [options]
 * @returns {Promise<{ profile: unknown, created: boolean }>}
 */
export async function ensureProfile(options = {}) {
  const {
    baseUrl = "",
    retries = 3,
    backoff = {},
    getToken,
    signal,
    fetch: fetchImpl = globalThis.fetch.bind(globalThis),
  } = options;
  const baseMs = backoff.baseMs ?? 500;
  const maxMs = backoff.maxMs ?? 8000;
  let last = null;
  for (let attempt = 0; attempt <= retries; attempt++) {
    if (attempt > 0) {
      const step = Math.min(maxMs, baseMs * 2 ** (attempt - 1));
      const jittered = step / 2 + Math.random() * (step / 2);
      const hinted = last?.retryAfter;
      await sleep(hinted !== null && hinted !== undefined ? Math.min(hinted, maxMs) : jittered, signal);
    }
    const headers = { Accept: "application/json" };
    if (getToken) {
      const token = await getToken();
      if (token) headers.Authorization = `Bearer ${token}`;
    }
    let res;
    try {
      res = await fetchImpl(`${baseUrl}/_frontdesk/me/profile`, {
        method: "POST",
        headers,
        credentials: "same-origin",
        signal,
      });
    } catch (e) {
      if (signal?.aborted) throw e;
      last = { error: new UnavailableError("network error", { cause: e }), retryAfter: null };
      continue;
    }
    if (res.ok) return await res.json();
    const err = await body(res);
    const message = err?.message ?? `HTTP ${res.status}`;
    const code = err?.code ?? "unknown";
    if (res.status === 401) throw new UnauthorizedError(message, { status: 401, code });
    if (res.status < 500) throw new RequestError(message, { status: res.status, code });
    last = {
      error: new UnavailableError(message, { status: res.status, code }),
      retryAfter: retryAfterMs(res.headers.get("Retry-After")),
    };
  }
  throw last.error;
}
