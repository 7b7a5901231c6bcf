/**
 * Verification of push deliveries' `Orderly-Signature` header:
 * `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`, keyed with
 * the queue's `signing_secret`.
 */

import { createHmac, timingSafeEqual } from "node:crypto";

function digest(secret: string, body: string | Uint8Array, timestamp: number): Buffer {
  return createHmac("sha256", secret).update(`${timestamp}.`).update(body).digest();
}

/** The header value Orderly sends for `body` at unix time `timestamp`. */
export function sign(secret: string, body: string | Uint8Array, timestamp: number): string {
  return `t=${timestamp},v1=${digest(secret, body, timestamp).toString("hex")}`;
}

export interface VerifyOptions {
  /** Largest accepted age (or clock skew) of the timestamp, in seconds. Default 300. */
  toleranceS?: number;
  /** "Now" as unix seconds. Default: the current time. */
  now?: number;
}

/**
 * True when `header` signs exactly `body` (the raw request bytes) with
 * `secret` and its timestamp is within the tolerance of now, so a captured
 * delivery cannot be replayed later. Compares with `timingSafeEqual`.
 */
export function verifySignature(
  secret: string,
  header: string | null | undefined,
  body: string | Uint8Array,
  options: VerifyOptions = {},
): boolean {
  if (!header) return false;
  let timestamp: number | undefined;
  const candidates: string[] = [];
  for (const part of header.split(",")) {
    const [name, value = ""] = part.trim().split("=", 2);
    if (name === "t" && /^\d+$/.test(value)) timestamp = Number(value);
    else if (name === "v1") candidates.push(value);
  }
  if (timestamp === undefined) return false;
  const now = options.now ?? Math.floor(Date.now() / 1000);
  if (Math.abs(now - timestamp) > (options.toleranceS ?? 300)) return false;
  const expected = digest(secret, body, timestamp);
  let matched = false;
  for (const candidate of candidates) {
    const given = Buffer.from(candidate, "hex");
    if (given.length === expected.length && timingSafeEqual(given, expected)) matched = true;
  }
  return matched;
}
