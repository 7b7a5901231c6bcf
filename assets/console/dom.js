// Building the page. Everything the console shows goes through h(), which
// turns every non-Node child into a text node: user data (payloads, keys,
// queue names, error messages) can never become markup. No console script
// parses an HTML string (tests/api/console.rs checks it).

/** An element with attributes, listeners (`onclick`, …) and children. */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") el.className = value;
    else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

/** Appends children (nested arrays allowed); strings and numbers as text. */
export function append(el, children) {
  for (const child of [children].flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Replaces everything inside `el`. */
export function fill(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** A link to a console route (`#/…`); the parts are URL-encoded. */
export function link(text, ...parts) {
  return h("a", { href: route(...parts) }, text);
}

export function route(...parts) {
  return "#/" + parts.map(encodeURIComponent).join("/");
}

/** A button that disables itself while `action` runs. */
export function button(text, action, props = {}) {
  const b = h("button", { type: "button", ...props }, text);
  b.addEventListener("click", async () => {
    b.disabled = true;
    try {
      await action();
    } finally {
      b.disabled = false;
    }
  });
  return b;
}

/** A table; `columns` are [label, row => cell content]. On phones each row is a card. */
export function table(columns, rows, empty = "Nothing here.") {
  if (rows.length === 0) return h("p", { class: "empty" }, empty);
  return h(
    "table",
    {},
    h("thead", {}, h("tr", {}, columns.map(([label]) => h("th", { scope: "col" }, label)))),
    h(
      "tbody",
      {},
      rows.map((row) =>
        h(
          "tr",
          {},
          columns.map(([label, cell]) => h("td", { "data-label": label }, cell(row))),
        ),
      ),
    ),
  );
}

/** A definition list of [term, value] pairs. */
export function fields(pairs) {
  return h(
    "dl",
    { class: "fields" },
    pairs.map(([term, value]) => [h("dt", {}, term), h("dd", {}, value ?? "—")]),
  );
}

/** A job state or queue state as a coloured badge. */
export function badge(state) {
  return h("span", { class: `badge state-${String(state).replace(/[^a-z_]/g, "")}` }, state);
}

/** JSON, pretty-printed, as text in a <pre>. */
export function json(value) {
  return h("pre", { class: "json" }, value === undefined ? "—" : JSON.stringify(value, null, 2));
}

/** A number with thousands separators. */
export function count(n) {
  return typeof n === "number" ? n.toLocaleString("en-US") : "—";
}

/** An RFC 3339 time as local time, with the raw value as the tooltip. */
export function time(rfc3339) {
  if (!rfc3339) return "—";
  const d = new Date(rfc3339);
  if (Number.isNaN(d.getTime())) return rfc3339;
  return h("time", { datetime: rfc3339, title: rfc3339 }, d.toLocaleString());
}

/** Milliseconds as a short duration ("1.5 s", "3 min"). */
export function duration(ms) {
  if (typeof ms !== "number") return "—";
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)} s`;
  if (ms < 3_600_000) return `${Math.round(ms / 60_000)} min`;
  if (ms < 86_400_000) return `${(ms / 3_600_000).toFixed(1)} h`;
  return `${(ms / 86_400_000).toFixed(1)} d`;
}
