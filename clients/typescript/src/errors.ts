/**
 * Typed errors for Orderly's error contract: every error answer is
 * `{"error": {"code", "message", "request_id", "fields"?}}`. Branch on
 * `code` (stable), never on the message.
 */
export class OrderlyError extends Error {
  /** HTTP status; 0 when the server could not be reached. */
  readonly status: number;
  /** The API's error code, e.g. `lease_lost`, `not_found`, `validation_failed`. */
  readonly code: string;
  readonly requestId?: string;
  /** For `422 validation_failed`: each bad field and why. */
  readonly fields: Record<string, string>;

  constructor(status: number, code: string, message: string, requestId?: string, fields?: Record<string, string>) {
    super(`${status} ${code}: ${message}`);
    this.name = new.target.name;
    this.status = status;
    this.code = code;
    this.requestId = requestId;
    this.fields = fields ?? {};
  }
}

/** 409 `lease_lost`: the lease is stale or expired; nothing changed. */
export class LeaseLostError extends OrderlyError {}

/**
 * 503 `outcome_unknown`: the publish reached Redis but its reply was lost, so
 * the job(s) may have been enqueued. Repeat it with the same idempotency
 * key(s) to get the original job(s), never a duplicate (`publish` and
 * `publishBatch` do so by themselves).
 */
export class OutcomeUnknownError extends OrderlyError {}

/** The server could not be reached (status 0, code `connection_failed`). */
export class ConnectionError extends OrderlyError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(0, "connection_failed", message);
    if (options?.cause !== undefined) (this as { cause?: unknown }).cause = options.cause;
  }
}

interface ErrorEnvelope {
  error?: { code?: string; message?: string; request_id?: string; fields?: Record<string, string> };
}

/** The typed error for a non-2xx answer with body `text`. */
export function errorFromAnswer(status: number, text: string): OrderlyError {
  let detail: ErrorEnvelope["error"];
  try {
    detail = (JSON.parse(text) as ErrorEnvelope).error;
  } catch {
    detail = undefined;
  }
  const code = detail?.code ?? `http_${status}`;
  const message = detail?.message ?? text.slice(0, 200);
  const Kind = code === "lease_lost" ? LeaseLostError : code === "outcome_unknown" ? OutcomeUnknownError : OrderlyError;
  return new Kind(status, code, message, detail?.request_id, detail?.fields);
}
