// The console's entry point: a hash router over four pages (sign in, queues,
// one queue, one job), the header, and the notice bar for errors and results.
// Each page gets a fresh root element and a context whose timers stop when the
// user navigates away, so a late answer never paints over another page.

import { session, whenSessionLost } from "./api.js";
import { button, fill, h, link } from "./dom.js";
import * as jobPage from "./job.js";
import * as queuePage from "./queue.js";
import * as queuesPage from "./queues.js";
import * as signinPage from "./signin.js";

const ROUTES = [
  { pattern: /^#\/signin$/, page: signinPage, signedIn: false },
  { pattern: /^#\/queues$/, page: queuesPage, signedIn: true },
  { pattern: /^#\/queues\/([^/]+)$/, page: queuePage, signedIn: true },
  { pattern: /^#\/jobs\/([^/]+)$/, page: jobPage, signedIn: true },
];

const header = document.getElementById("header");
const noticeBar = document.getElementById("notice");
const main = document.getElementById("main");

let current = null; // { dispose: [fn] } of the page on screen
let signInMessage = "";

/** Shows a message above the page; returns a handle for clearing it. */
function notify(text, kind = "error") {
  const note = h("div", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status" }, text);
  fill(noticeBar, note);
  return note;
}

function clearNotice(note) {
  if (!note || note.parentNode === noticeBar) noticeBar.replaceChildren();
}

whenSessionLost((message) => {
  signInMessage = message;
  if (location.hash === "#/signin") render();
  else location.hash = "#/signin";
});

function renderHeader(signedIn) {
  const brand = h("a", { class: "brand", href: "#/queues" }, "Orderly");
  if (!signedIn) {
    fill(header, brand);
    return;
  }
  fill(
    header,
    brand,
    h("nav", {}, link("Queues", "queues")),
    h("span", { class: "who" }, session.email),
    button(
      "Sign out",
      async () => {
        session.end();
        signInMessage = "Signed out.";
        location.hash = "#/signin";
      },
      { class: "secondary" },
    ),
  );
}

/** The context a page renders with. */
function context(root, params) {
  const dispose = [];
  return {
    root,
    params,
    dispose,
    notify,
    clearNotice,
    /** Runs `fn` now and then every `ms` after it settles, until navigation. */
    every(ms, fn) {
      let stopped = false;
      let timer = null;
      let failure = null;
      const tick = async () => {
        try {
          await fn();
          clearNotice(failure);
          failure = null;
        } catch (e) {
          if (!stopped && e.status !== 401) failure = notify(e.message);
        }
        if (!stopped) timer = setTimeout(tick, ms);
      };
      dispose.push(() => {
        stopped = true;
        clearTimeout(timer);
      });
      tick();
    },
    /** Runs an action (button click): its error shows as a notice. */
    async act(fn, success) {
      try {
        const result = await fn();
        if (success) notify(typeof success === "function" ? success(result) : success, "ok");
        return result;
      } catch (e) {
        if (e.status !== 401) notify(e.message);
        return undefined;
      }
    },
  };
}

function render() {
  if (current) current.dispose.forEach((stop) => stop());
  current = null;
  const hash = location.hash || "#/queues";
  const match = ROUTES.map((r) => ({ r, m: r.pattern.exec(hash) })).find(({ m }) => m);
  if (!match) {
    location.hash = session.token ? "#/queues" : "#/signin";
    return;
  }
  if (match.r.signedIn && !session.token) {
    location.hash = "#/signin";
    return;
  }
  if (!match.r.signedIn && session.token && !signInMessage) {
    location.hash = "#/queues";
    return;
  }
  noticeBar.replaceChildren();
  renderHeader(match.r.signedIn);
  const root = h("div", { class: "page" });
  fill(main, root);
  const params = match.m.slice(1).map(decodeURIComponent);
  current = context(root, params);
  if (!match.r.signedIn) {
    current.message = signInMessage;
    signInMessage = "";
  }
  match.r.page.render(current);
}

window.addEventListener("hashchange", render);
render();
