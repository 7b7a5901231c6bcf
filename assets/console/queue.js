// One queue: its counts, settings, stopped jobs (blocked lane heads with
// retry/skip, dead letters with retry and redrive), and its jobs, refreshed
// every two seconds.
//
// The page is a list of SECTIONS, each loading its own data from the API and
// rendering it; a section whose load returns null is hidden. A new part of the
// API (lanes, schedules) becomes a new entry in SECTIONS, nothing else.
// A section is redrawn only when its data changed, so buttons stay put.

import { api } from "./api.js";
import { append, badge, button, count, duration, fields, fill, h, link, table, time } from "./dom.js";
import { REFRESH_MS, attention, queueState } from "./queues.js";

const JOB_STATES = ["", "queued", "delayed", "active", "retrying", "blocked", "completed", "dead", "cancelled"];
const PAGE = 50;

/** A job's id as a link to its page (its last 8 hex digits; the full id is the tooltip). */
function jobLink(job) {
  const a = link(`…${job.id.split(".")[0].slice(-8)}`, "jobs", job.id);
  a.title = job.id;
  a.classList.add("mono");
  return a;
}

/** Retry a dead or blocked job: fresh attempts, in its seq place. */
const retryButton = (job, ctx, reload) =>
  button("Retry", () => ctx.act(() => api.retry(job.id), "Queued again in its seq place.").then(reload));

/** Skip a blocked lane head: it is dead-lettered and the lane moves on. */
const skipButton = (job, ctx, reload) =>
  button("Skip", () => ctx.act(() => api.skip(job.id), "Skipped: dead-lettered, the lane moves on.").then(reload), {
    class: "secondary",
  });

/** The list in a listing answer (`{"<field>": [...]}`, or a bare array). */
const listed = (answer, field) => (Array.isArray(answer) ? answer : (answer?.[field] ?? []));

const key = (job) => (job.key === "" ? h("span", { class: "muted" }, "(none)") : h("span", { class: "mono" }, job.key));
const lastError = (job) => (job.last_error ? h("span", { class: "error-text" }, job.last_error) : "—");

const summary = {
  id: "summary",
  title: "Now",
  load: (ctx, name, queue) => queue.stats,
  render: (stats) =>
    h(
      "div",
      { class: "stats" },
      [
        ["Waiting", count(stats.waiting)],
        ["Delayed", count(stats.delayed)],
        ["Active", count(stats.active)],
        ["Blocked", attention(stats.blocked)],
        ["Dead", attention(stats.dead)],
        ["Completed", count(stats.completed)],
        ["Cancelled", count(stats.cancelled)],
        ["Retried", count(stats.retried)],
        ["Published/min", count(stats.published_last_minute)],
        ["Completed/min", count(stats.completed_last_minute)],
        ["Oldest waiting", duration(stats.oldest_waiting_age_ms)],
        ["Drains in", stats.drain_eta_s === null ? "not draining" : duration(stats.drain_eta_s * 1000)],
      ].map(([label, value]) => h("div", { class: "stat" }, h("span", { class: "label" }, label), h("strong", {}, value))),
    ),
};

const settings = {
  id: "settings",
  title: "Settings",
  load: (ctx, name, queue) => {
    const { stats, ...definition } = queue;
    return definition;
  },
  render: (q) =>
    fields([
      ["Delivery", q.delivery.mode],
      ...(q.delivery.mode === "push"
        ? [
            ["Push URL", h("span", { class: "mono" }, q.delivery.url)],
            ["Push timeout", duration(q.delivery.timeout_ms)],
          ]
        : []),
      ["Max attempts", count(q.max_attempts)],
      ["Backoff", `${duration(q.backoff.initial_ms)} → ${duration(q.backoff.max_ms)}`],
      ["When attempts run out", q.on_exhausted === "block" ? "block the lane" : "dead-letter, lane moves on"],
      ["Lease", duration(q.lease_ms)],
      ["Retention", duration(q.retention_s * 1000)],
      ["Created", time(q.created_at)],
      ["Updated", time(q.updated_at)],
    ]),
};

/** Loads an optional part of the API; null (section hidden) while the server has no such route. */
function optional(fetch) {
  let missing = false;
  return async (...args) => {
    if (missing) return null;
    try {
      return await fetch(...args);
    } catch (e) {
      if (e.status !== 404 && e.status !== 405) throw e;
      missing = true;
      return null;
    }
  };
}

const lanes = {
  id: "lanes",
  title: "Lanes (stuck first)",
  load: optional(async (ctx, name) => listed(await api.lanes(name), "lanes")),
  render: (list, ctx, reload) =>
    table(
      [
        ["Lane", key],
        ["State", (l) => badge(l.state)],
        ["Length", (l) => count(l.length)],
        ["Head", (l) => (l.head ? jobLink(l.head) : "—")],
        ["Attempts", (l) => (l.head ? count(l.head.attempts) : "—")],
        ["Last error", (l) => (l.head ? lastError(l.head) : "—")],
        ["Head age", (l) => duration(l.head_age_ms)],
        [
          "",
          (l) =>
            h(
              "div",
              { class: "actions" },
              l.state === "paused"
                ? button("Resume", () => ctx.act(() => api.resumeLane(ctx.params[0], l.key), "Lane resumed.").then(reload))
                : button("Pause", () => ctx.act(() => api.pauseLane(ctx.params[0], l.key), "Lane paused.").then(reload), {
                    class: "secondary",
                  }),
              l.state === "blocked" &&
                l.head && [retryButton(l.head, ctx, reload), skipButton(l.head, ctx, reload)],
            ),
        ],
      ],
      list,
      "No lane has unfinished jobs.",
    ),
};

const schedules = {
  id: "schedules",
  title: "Schedules",
  load: optional(async (ctx, name) => listed(await api.schedules(name), "schedules")),
  render: (list) =>
    table(
      [
        ["Name", (s) => s.name],
        ["Cron", (s) => h("span", { class: "mono" }, s.cron)],
        ["Timezone", (s) => s.timezone ?? "UTC"],
        ["Lane", (s) => (s.key ? h("span", { class: "mono" }, s.key) : h("span", { class: "muted" }, "(none)"))],
        ["Status", (s) => badge(s.paused ? "paused" : "running")],
        ["Next run", (s) => time(s.next_run_at)],
        ["Last run", (s) => time(s.last_run_at)],
        ["Last job", (s) => (s.last_job_id ? jobLink({ id: s.last_job_id }) : "—")],
      ],
      list,
      "No schedules.",
    ),
};

const blocked = {
  id: "blocked",
  title: "Blocked lanes",
  load: async (ctx, name, queue) => (queue.stats.blocked > 0 ? (await api.jobs(name, { state: "blocked", limit: 100 })).jobs : null),
  render: (jobs, ctx, reload) =>
    table(
      [
        ["Lane", key],
        ["Job", jobLink],
        ["Seq", (j) => j.seq],
        ["Attempts", (j) => `${j.attempts}/${j.max_attempts}`],
        ["Last error", lastError],
        [
          "",
          (j) =>
            h(
              "div",
              { class: "actions" },
              retryButton(j, ctx, reload),
              skipButton(j, ctx, reload),
            ),
        ],
      ],
      jobs,
    ),
};

const dead = {
  id: "dead",
  title: "Dead letters",
  controls: (ctx, name, reload) =>
    button(
      "Redrive all",
      () =>
        ctx
          .act(
            () => api.redrive(name),
            (r) => `Redrove ${r.redriven} job${r.redriven === 1 ? "" : "s"} back to the heads of their lanes.`,
          )
          .then(reload),
      { id: "redrive" },
    ),
  load: async (ctx, name) => (await api.dead(name)).jobs,
  render: (jobs, ctx, reload) =>
    table(
      [
        ["Job", jobLink],
        ["Seq", (j) => j.seq],
        ["Lane", key],
        ["Attempts", (j) => `${j.attempts}/${j.max_attempts}`],
        ["Last error", lastError],
        ["Died", (j) => time(j.finished_at)],
        ["", (j) => retryButton(j, ctx, reload)],
      ],
      jobs,
      "No dead jobs.",
    ),
};

const jobs = {
  id: "jobs",
  title: "Jobs",
  state: { filter: "", after: 0, pages: [] },
  controls: (ctx, name, reload, state) => {
    const select = h(
      "select",
      { id: "job-state", "aria-label": "Job state" },
      JOB_STATES.map((s) => h("option", { value: s }, s || "all states")),
    );
    select.addEventListener("change", () => {
      Object.assign(state, { filter: select.value, after: 0, pages: [] });
      reload();
    });
    return select;
  },
  load: (ctx, name, queue, state) => api.jobs(name, { state: state.filter, after: state.after, limit: PAGE }),
  render: (page, ctx, reload, state) => [
    table(
      [
        ["Seq", (j) => j.seq],
        ["Job", jobLink],
        ["Lane", key],
        ["State", (j) => badge(j.state)],
        ["Attempts", (j) => `${j.attempts}/${j.max_attempts}`],
        ["Created", (j) => time(j.created_at)],
      ],
      page.jobs,
      "No jobs.",
    ),
    h(
      "div",
      { class: "pager" },
      state.pages.length > 0 &&
        button("← Previous", async () => {
          state.after = state.pages.pop();
          await reload();
        }),
      page.next &&
        button("Next →", async () => {
          state.pages.push(state.after);
          state.after = page.next;
          await reload();
        }),
    ),
  ],
};

/** The page, top to bottom: what needs an operator first. */
const SECTIONS = [summary, lanes, blocked, dead, jobs, schedules, settings];

export function render(ctx) {
  const [name] = ctx.params;
  const title = h("h1", {}, name);
  const status = h("span");
  const toggle = h("span");
  let paused = null;
  const parts = SECTIONS.map((section) => {
    const state = section.state ? structuredClone(section.state) : {};
    const body = h("div", { class: "section-body" });
    const el = h(
      "section",
      { id: `section-${section.id}`, class: "card", hidden: true },
      h("div", { class: "title" }, h("h2", {}, section.title), section.controls?.(ctx, name, reload, state)),
      body,
    );
    return { section, state, body, el, shown: undefined };
  });
  append(ctx.root, [
    h("p", { class: "crumbs" }, link("Queues", "queues"), " / "),
    h("div", { class: "title" }, title, status, toggle),
    parts.map((p) => p.el),
  ]);

  let latest = 0;
  // After an action: redraw now rather than at the next tick.
  function reload() {
    return refresh().catch((e) => e.status === 401 || ctx.notify(e.message));
  }
  async function refresh() {
    const mine = ++latest;
    const queue = await api.queue(name);
    const loaded = await Promise.all(parts.map((p) => p.section.load(ctx, name, queue, p.state)));
    if (mine !== latest) return;
    if (paused !== queue.paused) {
      paused = queue.paused;
      fill(status, queueState(queue));
      fill(
        toggle,
        paused
          ? button("Resume", () => ctx.act(() => api.resumeQueue(name), "Resumed.").then(reload), { id: "resume" })
          : button("Pause", () => ctx.act(() => api.pauseQueue(name), "Paused: no new job starts.").then(reload), {
              id: "pause",
              class: "secondary",
            }),
      );
    }
    parts.forEach((p, i) => {
      const data = loaded[i];
      const fingerprint = JSON.stringify([data, p.state]);
      if (fingerprint === p.shown) return;
      p.shown = fingerprint;
      p.el.hidden = data === null || data === undefined;
      if (!p.el.hidden) fill(p.body, p.section.render(data, ctx, reload, p.state));
    });
  }
  ctx.every(REFRESH_MS, refresh);
}
