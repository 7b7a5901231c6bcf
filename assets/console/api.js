// The one way the console talks to Orderly: the public /v1 API with the
// signed-in user's bearer token. The token lives in sessionStorage (gone when
// the tab closes). A 401 on an authenticated call means the token expired or
// is not valid: the session ends and the router shows sign-in with a message.

const TOKEN_KEY = "orderly.console.token";
const EMAIL_KEY = "orderly.console.email";

/** An API error: the contract's `{"error": {"code", "message"}}`. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export const session = {
  get token() {
    return sessionStorage.getItem(TOKEN_KEY);
  },
  get email() {
    return sessionStorage.getItem(EMAIL_KEY) ?? "";
  },
  start(token, email) {
    sessionStorage.setItem(TOKEN_KEY, token);
    sessionStorage.setItem(EMAIL_KEY, email);
  },
  end() {
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(EMAIL_KEY);
  },
};

let onSessionLost = () => {};

/** Called with a message when a call answers 401 (the router shows sign-in). */
export function whenSessionLost(handler) {
  onSessionLost = handler;
}

/** `method path [body]` → the parsed JSON answer, or throws ApiError. */
export async function call(method, path, body) {
  const headers = { Accept: "application/json" };
  const token = session.token;
  if (token) headers.Authorization = `Bearer ${token}`;
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, "network", `Orderly did not answer (${e.message}).`);
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (response.ok) return data;
  const error = data?.error ?? {};
  const failure = new ApiError(
    response.status,
    error.code ?? `http_${response.status}`,
    error.message ?? `HTTP ${response.status}`,
  );
  if (response.status === 401 && token) {
    session.end();
    onSessionLost(`Your session has ended (${failure.message}). Please sign in again.`);
  }
  throw failure;
}

const q = encodeURIComponent;
// A lane key as a path segment: `~` names the default lane "", and a key
// starting with `~` takes one more in front (the server strips one).
const laneSegment = (key) => q(key === "" || key.startsWith("~") ? `~${key}` : key);

/** The API calls the console makes, by what they do. */
export const api = {
  login: (email, password) => call("POST", "/v1/auth/login", { email, password }),
  queues: () => call("GET", "/v1/queues"),
  queue: (name) => call("GET", `/v1/queues/${q(name)}`),
  pauseQueue: (name) => call("POST", `/v1/queues/${q(name)}/pause`),
  resumeQueue: (name) => call("POST", `/v1/queues/${q(name)}/resume`),
  jobs: (name, { state = "", after = 0, limit = 50 } = {}) => {
    const query = new URLSearchParams({ limit: String(limit) });
    if (state) query.set("state", state);
    if (after) query.set("after", String(after));
    return call("GET", `/v1/queues/${q(name)}/jobs?${query}`);
  },
  dead: (name, limit = 100) => call("GET", `/v1/queues/${q(name)}/dead?limit=${limit}`),
  redrive: (name) => call("POST", `/v1/queues/${q(name)}/dead/redrive`),
  // §7.4 lanes and §7.5 schedules: the queue page hides them while the API
  // answers these with 404 (not built in every server).
  lanes: (name, limit = 100) => call("GET", `/v1/queues/${q(name)}/lanes?limit=${limit}`),
  pauseLane: (name, key) => call("POST", `/v1/queues/${q(name)}/lanes/${laneSegment(key)}/pause`),
  resumeLane: (name, key) => call("POST", `/v1/queues/${q(name)}/lanes/${laneSegment(key)}/resume`),
  schedules: (name) => call("GET", `/v1/queues/${q(name)}/schedules`),
  job: (id) => call("GET", `/v1/jobs/${q(id)}`),
  retry: (id) => call("POST", `/v1/jobs/${q(id)}/retry`),
  skip: (id) => call("POST", `/v1/jobs/${q(id)}/skip`),
  cancel: (id) => call("DELETE", `/v1/jobs/${q(id)}`),
};
