// The queues: every queue of the user with its live counts and the last
// minute's throughput, refreshed every two seconds.

import { api } from "./api.js";
import { badge, count, duration, fill, h, link, table } from "./dom.js";

export const REFRESH_MS = 2000;

/** Running or paused, as a badge. */
export function queueState(queue) {
  return badge(queue.paused ? "paused" : "running");
}

/** A count that needs an operator when it is not zero (blocked, dead). */
export function attention(n) {
  return n > 0 ? h("strong", { class: "error-text" }, count(n)) : count(n);
}

const COLUMNS = [
  ["Queue", (q) => link(q.name, "queues", q.name)],
  ["Delivery", (q) => q.delivery?.mode ?? "—"],
  ["Status", queueState],
  ["Waiting", (q) => count(q.stats?.waiting)],
  ["Delayed", (q) => count(q.stats?.delayed)],
  ["Active", (q) => count(q.stats?.active)],
  ["Blocked", (q) => attention(q.stats?.blocked)],
  ["Dead", (q) => attention(q.stats?.dead)],
  ["Completed", (q) => count(q.stats?.completed)],
  ["Published/min", (q) => count(q.stats?.published_last_minute)],
  ["Completed/min", (q) => count(q.stats?.completed_last_minute)],
  ["Oldest waiting", (q) => (q.stats ? duration(q.stats.oldest_waiting_age_ms) : "—")],
];

export function render(ctx) {
  const updated = h("span", { class: "updated" });
  const list = h("div", { id: "queues", class: "table-wrap" }, h("p", { class: "empty" }, "Loading…"));
  ctx.root.append(h("div", { class: "title" }, h("h1", {}, "Queues"), updated), list);
  let shown;
  ctx.every(REFRESH_MS, async () => {
    const { queues } = await api.queues();
    // One GET per queue for its stats; a queue deleted meanwhile shows without them.
    const withStats = await Promise.all(
      queues.map((queue) => api.queue(queue.name).catch((e) => (e.status === 404 ? queue : Promise.reject(e)))),
    );
    fill(updated, `${queues.length} queue${queues.length === 1 ? "" : "s"} · updated ${new Date().toLocaleTimeString()}`);
    // Redrawn only on change, so a click never lands on a row being replaced.
    const fingerprint = JSON.stringify(withStats);
    if (fingerprint === shown) return;
    shown = fingerprint;
    fill(list, table(COLUMNS, withStats, "No queues yet. Publish a job or PUT /v1/queues/{name} to create one."));
  });
}
