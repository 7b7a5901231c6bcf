"""The HTTP client: one :class:`Client` per base URL and bearer token.

Standard library only (``http.client`` through ``urllib.request``). A client
is safe to share between threads: every call opens its own request.
"""

import json
import random
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any, Dict, Iterable, List, Optional, Sequence

from .errors import (
    ExpiredDuplicateError,
    OrderlyConnectionError,
    OrderlyError,
    RateLimitedError,
    UnavailableError,
    error_from_response,
)
from .types import AckItem, Claimed, Job, NackItem, Outcome, PublishItem, outcomes_from_json

__all__ = ["Client", "register", "login", "new_claim_id"]

#: Longest long-poll the server accepts (ms).
MAX_WAIT_MS = 30_000


def _request(
    base_url: str,
    method: str,
    path: str,
    token: Optional[str],
    body: Any = None,
    headers: Optional[Dict[str, str]] = None,
    timeout: float = 10.0,
) -> Any:
    """One HTTP exchange; the decoded JSON answer, or a typed exception."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base_url.rstrip("/") + path, data=data, method=method)
    request.add_header("Accept", "application/json")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            return json.loads(raw) if raw else None
    except urllib.error.HTTPError as err:
        raw = err.read()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        error = error_from_response(err.code, parsed)
        retry_after = err.headers.get("Retry-After") if err.headers else None
        if isinstance(error, RateLimitedError) and retry_after and retry_after.isdigit():
            error.retry_after_s = int(retry_after)
        raise error from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise OrderlyConnectionError(0, "connection_failed", str(reason)) from err


def _object(answer: Any) -> Dict[str, Any]:
    """``answer`` if it is a JSON object, as every answer of these routes is."""
    if not isinstance(answer, dict):
        raise OrderlyError(200, "unexpected_answer", f"expected a JSON object, got {answer!r:.200}")
    return answer


def _job(answer: Any) -> Job:
    """``answer`` as a :class:`Job`; a typed error (not a ``TypeError``) when
    it is not a job object."""
    raw = _object(answer)
    try:
        return Job.from_json(raw)
    except TypeError:
        raise OrderlyError(200, "unexpected_answer", f"expected a job object, got {raw!r:.200}") from None


def register(base_url: str, email: str, password: str) -> Dict[str, Any]:
    """Creates an account; returns ``{"id", "email", "created_at"}``."""
    return _object(_request(base_url, "POST", "/v1/auth/register", None, {"email": email, "password": password}))


def login(base_url: str, email: str, password: str, **options: Any) -> "Client":
    """Logs in and returns a :class:`Client` holding the access token."""
    answer = _request(base_url, "POST", "/v1/auth/login", None, {"email": email, "password": password})
    return Client(base_url, answer["access_token"], **options)


def new_claim_id() -> str:
    """A fresh ``claim_id`` for :meth:`Client.claim` (32 hex characters)."""
    return uuid.uuid4().hex


def _quote(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


class Client:
    """Talks to one Orderly with one bearer token: a JWT from :func:`login`
    or an API key (``ok_…``).

    ``retries`` bounds how often a publish (single or batch) is retried after
    a ``503`` (``unavailable`` or ``outcome_unknown``) or a connection
    failure (with exponential backoff from ``retry_backoff_s``).
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 10.0,
        retries: int = 4,
        retry_backoff_s: float = 0.2,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.retries = retries
        self.retry_backoff_s = retry_backoff_s

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: Optional[Dict[str, str]] = None,
        timeout: Optional[float] = None,
    ) -> Any:
        """Any API call; the decoded JSON answer or a typed :class:`OrderlyError`."""
        return _request(self.base_url, method, path, self.token, body, headers, timeout or self.timeout)

    def _retrying(self, attempt_call: Any, retry_on_connection_error: bool) -> Any:
        """Runs ``attempt_call`` until it succeeds, retrying 503s (and
        connection failures when the request is safe to repeat)."""
        for attempt in range(self.retries + 1):
            try:
                return attempt_call()
            except (UnavailableError, OrderlyConnectionError) as err:
                retryable = isinstance(err, UnavailableError) or retry_on_connection_error
                if not retryable or attempt == self.retries:
                    raise
                delay = self.retry_backoff_s * (2**attempt)
                time.sleep(delay * (0.5 + random.random() / 2))
        raise AssertionError("unreachable")

    # Queues ---------------------------------------------------------------

    def put_queue(self, queue: str, **settings: Any) -> Dict[str, Any]:
        """Creates or updates a queue (settings as in the API, e.g.
        ``lease_ms=30000``, ``delivery={"mode": "pull"}``)."""
        return _object(self.request("PUT", f"/v1/queues/{_quote(queue)}", settings))

    def get_queue(self, queue: str) -> Dict[str, Any]:
        return _object(self.request("GET", f"/v1/queues/{_quote(queue)}"))

    # Jobs -----------------------------------------------------------------

    def publish(
        self,
        queue: str,
        payload: Any,
        *,
        key: Optional[str] = None,
        delay_ms: Optional[int] = None,
        idempotency_key: Optional[str] = None,
        priority: Optional[int] = None,
    ) -> Job:
        """Publishes one job. Retried after a ``503`` or a connection failure
        under one ``Idempotency-Key`` (generated once here when not given),
        so a retry never enqueues the job twice. A repeated key answers the
        original job; :class:`ExpiredDuplicateError` when that job is gone
        (past its retention) — nothing is enqueued either way.

        ``priority`` (0–9, default 0): among lanes whose heads may start, a
        higher priority starts first; within a lane the order never changes."""
        body: Dict[str, Any] = {"payload": payload}
        if key is not None:
            body["key"] = key
        if delay_ms is not None:
            body["delay_ms"] = delay_ms
        if priority is not None:
            body["priority"] = priority
        headers = {"Idempotency-Key": idempotency_key or uuid.uuid4().hex}
        path = f"/v1/queues/{_quote(queue)}/jobs"
        answer = _object(self._retrying(lambda: self.request("POST", path, body, headers=headers), True))
        if answer.get("state") == "expired":  # the documented stub {"id", "queue", "state"}
            raise ExpiredDuplicateError(str(answer.get("id", "")), str(answer.get("queue", queue)))
        return _job(answer)

    def publish_batch(
        self, queue: str, jobs: Sequence[PublishItem], *, idempotency_key: Optional[str] = None
    ) -> List[Job]:
        """Publishes up to 1000 jobs atomically, in order. Retried after a
        ``503`` or a connection failure under one ``Idempotency-Key`` for the
        whole batch (generated once here when not given; job *i* is published
        under ``<key>#<i>`` unless it carries its own ``idempotency_key``), so
        a retry never enqueues a job twice: a repeat answers the original
        jobs (an original past its retention is left out of the list). Each
        item may carry ``key``, ``delay_ms``, ``priority`` (0–9) and its own
        ``idempotency_key``."""
        path = f"/v1/queues/{_quote(queue)}/jobs/batch"
        body = {"jobs": list(jobs)}
        headers = {"Idempotency-Key": idempotency_key or uuid.uuid4().hex}
        answer = self._retrying(lambda: self.request("POST", path, body, headers=headers), True)
        return [_job(job) for job in _object(answer)["jobs"]]

    def get_job(self, job_id: str, wait_ms: Optional[int] = None) -> Job:
        """Reads a job; with ``wait_ms`` (≤ 30000), waits until it is terminal
        or the wait ends."""
        path = f"/v1/jobs/{_quote(job_id)}"
        timeout = None
        if wait_ms is not None:
            path += f"?wait_ms={int(wait_ms)}"
            timeout = self.timeout + wait_ms / 1000
        return _job(self.request("GET", path, timeout=timeout))

    def cancel(self, job_id: str) -> Job:
        return _job(self.request("DELETE", f"/v1/jobs/{_quote(job_id)}"))

    # Pull consumers ---------------------------------------------------------

    def claim(
        self,
        queue: str,
        *,
        wait_ms: int = 0,
        max_jobs: int = 1,
        acks: Iterable[AckItem] = (),
        nacks: Iterable[NackItem] = (),
        claim_id: Optional[str] = None,
    ) -> Claimed:
        """Reports ``acks`` / ``nacks`` (if any), then leases up to
        ``max_jobs`` jobs, long-polling up to ``wait_ms``.

        ``claim_id`` (1–64 visible ASCII characters, e.g. :func:`new_claim_id`)
        makes the whole request safe to repeat: while the leases it took
        live, the same claim answers the same jobs and leases, and its acks /
        nacks answer the outcomes they already produced. Repeat it after a
        ``503`` or a connection failure so a lost reply strands no lane."""
        body: Dict[str, Any] = {"wait_ms": wait_ms, "max_jobs": max_jobs}
        if claim_id is not None:
            body["claim_id"] = claim_id
        acks, nacks = list(acks), list(nacks)
        if acks:
            body["acks"] = acks
        if nacks:
            body["nacks"] = nacks
        timeout = self.timeout + wait_ms / 1000
        answer = self.request("POST", f"/v1/queues/{_quote(queue)}/claim", body, timeout=timeout)
        return Claimed(
            jobs=[_job(job) for job in answer["jobs"]],
            results=outcomes_from_json(answer.get("results")),
        )

    def report(
        self, queue: str, acks: Iterable[AckItem] = (), nacks: Iterable[NackItem] = ()
    ) -> List[Outcome]:
        """Batch ack/nack (≤ 1000 items): one :class:`Outcome` per item, acks
        first, in order. A stale lease is an outcome (``lease_lost``), not an
        exception."""
        body = {"acks": list(acks), "nacks": list(nacks)}
        answer = self.request("POST", f"/v1/queues/{_quote(queue)}/ack", body)
        return outcomes_from_json(answer["results"])

    def ack(self, job_id: str, lease: str, result: Any = None) -> Job:
        body = {"lease": lease, "result": result}
        return _job(self.request("POST", f"/v1/jobs/{_quote(job_id)}/ack", body))

    def nack(
        self, job_id: str, lease: str, error: Optional[str] = None, retry_in_ms: Optional[int] = None
    ) -> Job:
        body: Dict[str, Any] = {"lease": lease}
        if error is not None:
            body["error"] = error
        if retry_in_ms is not None:
            body["retry_in_ms"] = retry_in_ms
        return _job(self.request("POST", f"/v1/jobs/{_quote(job_id)}/nack", body))

    def extend(self, job_id: str, lease: str, lease_ms: Optional[int] = None) -> Job:
        """Renews a lease for ``lease_ms`` (default: the queue's ``lease_ms``)
        from now; :class:`LeaseLostError` when it is already lost."""
        body: Dict[str, Any] = {"lease": lease}
        if lease_ms is not None:
            body["lease_ms"] = lease_ms
        return _job(self.request("POST", f"/v1/jobs/{_quote(job_id)}/extend", body))
