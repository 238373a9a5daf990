// Types of @frontdesk/client.

export interface FrontdeskEvent<T = unknown> {
  /** The resume cursor (`tenant:streamid,…`); send it back as Last-Event-ID. */
  id: string | null;
  /** `invalidate`, `job`, `profile`, `reset`, Frontdesk's own (`user.updated`, …) or app-defined. */
  type: string;
  /** The event's `data:` line, parsed as JSON (the raw string when it is not JSON). */
  data: T;
}

export type EventStatus =
  | "connecting"
  | "open"
  | "reconnecting"
  | "unauthorized"
  | "error"
  | "closed";

export interface ConnectEventsOptions {
  /** Default `/_frontdesk/events` (same origin: the `__session` cookie authenticates). */
  url?: string;
  onEvent?: (event: FrontdeskEvent) => void;
  onStatus?: (status: EventStatus, detail?: Record<string, unknown>) => void;
  /** A session token for `Authorization: Bearer` (e.g. Clerk's `session.getToken()`). */
  getToken?: () => Promise<string | null | undefined> | string | null | undefined;
  /** Resume after this id on the first connection. */
  lastEventId?: string | null;
  /** First reconnect delay ceiling (default 1000 ms); doubles per attempt. */
  minBackoffMs?: number;
  /** Largest reconnect delay (default 30000 ms). */
  maxBackoffMs?: number;
  fetch?: typeof fetch;
}

export interface EventsHandle {
  close(): void;
  readonly lastEventId: string | null;
}

export function connectEvents(options: ConnectEventsOptions): EventsHandle;

/** What one event type invalidates: query keys, or a function of the event returning them. */
export type InvalidationRule =
  | ReadonlyArray<ReadonlyArray<unknown>>
  | ((event: FrontdeskEvent<any>) => ReadonlyArray<ReadonlyArray<unknown>> | typeof ALL | null | undefined);

export type InvalidationMap = Record<string, InvalidationRule | null | undefined>;

/** Returned by a rule: invalidate every query. */
export declare const ALL: unique symbol;

export interface QueryClientLike {
  invalidateQueries(filters?: { queryKey?: ReadonlyArray<unknown> }): unknown;
}

/**
 * An `onEvent` handler that invalidates queries. Defaults: `invalidate` invalidates
 * `[data.resource]` (everything without a resource), `reset` invalidates everything.
 */
export function invalidateQueries(
  queryClient: QueryClientLike,
  map?: InvalidationMap,
): (event: FrontdeskEvent) => unknown[];

export interface EnsureProfileOptions {
  /** Frontdesk's edge origin; default same origin. */
  baseUrl?: string;
  /** Retries after the first attempt on 5xx or network errors (default 3). */
  retries?: number;
  /** Exponential backoff, jittered; `Retry-After` wins when present (capped by maxMs). */
  backoff?: { baseMs?: number; maxMs?: number };
  getToken?: () => Promise<string | null | undefined> | string | null | undefined;
  signal?: AbortSignal;
  fetch?: typeof fetch;
}

export interface EnsuredProfile<P = Record<string, unknown>> {
  profile: P;
  created: boolean;
}

export function ensureProfile<P = Record<string, unknown>>(
  options?: EnsureProfileOptions,
): Promise<EnsuredProfile<P>>;

export class FrontdeskError extends Error {
  readonly status: number;
  readonly code: string;
}
/** 401: sign in again. */
export class UnauthorizedError extends FrontdeskError {}
/** Another 4xx: retrying will not help. */
export class RequestError extends FrontdeskError {}
/** 5xx or network, after every retry. */
export class UnavailableError extends FrontdeskError {}
