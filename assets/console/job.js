// One job: payload, result and last error (as text), attempts, timestamps,
// lease state, and the actions its state allows; refreshed every two seconds.

import { api } from "./api.js";
import { badge, button, count, fields, fill, h, json, link, time } from "./dom.js";
import { REFRESH_MS } from "./queues.js";

const none = () => h("p", { class: "muted" }, "None.");

/** What the job's lease looks like from outside. */
function lease(job) {
  if (job.state !== "active") return "not leased";
  if (job.lease_expires_at) return h("span", {}, "leased until ", time(job.lease_expires_at));
  return "leased by a consumer (or being pushed)";
}

/** The actions the API allows in this state. */
function actions(job, ctx, reload) {
  const act = (label, call, done, props) =>
    button(label, () => ctx.act(() => call(job.id), done).then(reload), props);
  return [
    ["dead", "blocked"].includes(job.state) && act("Retry", api.retry, "Queued again in its seq place.", { id: "retry" }),
    job.state === "blocked" && act("Skip", api.skip, "Skipped: the lane moves on.", { id: "skip", class: "secondary" }),
    ["queued", "delayed", "retrying"].includes(job.state) &&
      act("Cancel", api.cancel, "Cancelled.", { id: "cancel", class: "danger" }),
  ];
}

export function render(ctx) {
  const [id] = ctx.params;
  const crumbs = h("p", { class: "crumbs" }, link("Queues", "queues"), " / ");
  const head = h("div", { class: "title" });
  const body = h("div", { class: "cards" });
  ctx.root.append(crumbs, head, body);
  let shown;

  async function refresh() {
    const job = await api.job(id);
    const fingerprint = JSON.stringify(job);
    if (fingerprint === shown) return;
    shown = fingerprint;
    fill(crumbs, link("Queues", "queues"), " / ", link(job.queue, "queues", job.queue), " / ");
    fill(
      head,
      h("h1", { class: "mono job-id" }, job.id),
      badge(job.state),
      h("div", { class: "actions" }, actions(job, ctx, reload)),
    );
    fill(
      body,
      h(
        "section",
        { class: "card", id: "job-fields" },
        fields([
          ["Queue", link(job.queue, "queues", job.queue)],
          ["Lane (key)", job.key === "" ? h("span", { class: "muted" }, "(none)") : h("span", { class: "mono" }, job.key)],
          ["Seq", count(job.seq)],
          ["State", job.state],
          ["Attempts", `${job.attempts} of ${job.max_attempts}`],
          ["Lease", lease(job)],
          ["Created", time(job.created_at)],
          ["Available at", time(job.available_at)],
          ["Started", time(job.started_at)],
          ["Finished", time(job.finished_at)],
        ]),
      ),
      h("section", { class: "card", id: "job-payload" }, h("h2", {}, "Payload"), json(job.payload)),
      h("section", { class: "card", id: "job-result" }, h("h2", {}, "Result"), job.result === null ? none() : json(job.result)),
      h(
        "section",
        { class: "card", id: "job-error" },
        h("h2", {}, "Last error"),
        job.last_error === null ? none() : h("pre", { class: "error-text" }, job.last_error),
      ),
    );
  }
  function reload() {
    return refresh().catch((e) => e.status === 401 || ctx.notify(e.message));
  }
  ctx.every(REFRESH_MS, refresh);
}
