// Maps Frontdesk events to TanStack Query invalidations.

/**
 * Returns an onEvent handler for connectEvents that invalidates queries.
 *
 * `map[type]` is an array of query keys, or a function of the event returning one
 * (or null to skip). Without an entry:
 * - `invalidate` with `data.resource` invalidates `[resource]`, without it everything;
 * - `reset` invalidates everything (events were missed).
 * @param {{ invalidateQueries(filters?: { queryKey?: unknown[] }): unknown }} queryClient
 * @param {import("./index").InvalidationMap} map
 */
export function invalidateQueries(queryClient, map = {}) {
  return (event) => {
    const rule = Object.prototype.hasOwnProperty.call(map, event.type)
      ? map[event.type]
      : defaultRule(event.type);
    if (rule === undefined || rule === null) return [];
    const keys = typeof rule === "function" ? rule(event) : rule;
    if (keys === ALL) {
      return [queryClient.invalidateQueries()];
    }
    if (!Array.isArray(keys)) return [];
    return keys.map((queryKey) => queryClient.invalidateQueries({ queryKey }));
  };
}

/** Returned by a rule to invalidate every query. */
export const ALL = Symbol.for("frontdesk.invalidate.all");

function defaultRule(type) {
  if (type === "reset") return () => ALL;
  if (type === "invalidate") {
    return (event) => {
      const resource = event.data && typeof event.data === "object" ? event.data.resource : null;
      return resource ? [[resource]] : ALL;
    };
  }
  return undefined;
}
