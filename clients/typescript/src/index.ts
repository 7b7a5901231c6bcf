/**
 * Client for Orderly, a strictly ordered job queue service. No runtime
 * dependencies; Node >= 18 (global `fetch`).
 *
 * ```ts
 * import { Client } from "orderly-client";
 * const client = new Client("http://127.0.0.1:8080", token); // a JWT or an API key
 * const job = await client.publish("emails", { to: "ann@example.com" }, { key: "ann" });
 * ```
 */

export { Client, MAX_WAIT_MS, isExpired, type ClientOptions } from "./client.js";
export { Consumer, Retry, leaseLengthMs, type ConsumerOptions, type Handler } from "./consumer.js";
export { ConnectionError, LeaseLostError, OrderlyError, OutcomeUnknownError } from "./errors.js";
export { sign, verifySignature, type VerifyOptions } from "./signature.js";
export type * from "./types.js";
