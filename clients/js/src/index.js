// Frontdesk's browser helpers. ES modules, no runtime dependency.
//
// - connectEvents: follows GET /_frontdesk/events (server-sent events), reconnects with
//   exponential backoff (1 s … 30 s, jittered) and resumes after the last id it saw.
// - invalidateQueries: turns those events into TanStack Query invalidations.
// - ensureProfile: POST /_frontdesk/me/profile with retries on 5xx (Retry-After
//   honoured) and typed errors for 401 and other 4xx.

export { connectEvents } from "./events.js";
export { invalidateQueries, ALL } from "./queries.js";
export {
  ensureProfile,
  FrontdeskError,
  UnauthorizedError,
  RequestError,
  UnavailableError,
} from "./profile.js";
