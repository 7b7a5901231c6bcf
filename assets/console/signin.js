// Sign in: POST /v1/auth/login, keep the token for this tab, go to the queues.

import { api, session } from "./api.js";
import { h } from "./dom.js";

export function render(ctx) {
  const email = h("input", { id: "email", name: "email", type: "email", autocomplete: "username", required: true });
  const password = h("input", {
    id: "password",
    name: "password",
    type: "password",
    autocomplete: "current-password",
    required: true,
  });
  const submit = h("button", { type: "submit", id: "signin" }, "Sign in");
  const form = h(
    "form",
    { class: "signin card" },
    h("h1", {}, "Sign in to Orderly"),
    h("label", { for: "email" }, "Email"),
    email,
    h("label", { for: "password" }, "Password"),
    password,
    submit,
  );
  if (ctx.message) ctx.notify(ctx.message, "info");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    submit.disabled = true;
    try {
      const answer = await api.login(email.value.trim(), password.value);
      session.start(answer.access_token, email.value.trim().toLowerCase());
      location.hash = "#/queues";
    } catch (e) {
      ctx.notify(e.message);
    } finally {
      submit.disabled = false;
    }
  });
  ctx.root.append(form);
  email.focus();
}
