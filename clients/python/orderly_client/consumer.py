"""A pull consumer loop: long-poll claim, run the handler with lease
heartbeats, report outcomes in batches.

The outcomes of one claim's jobs ride on the next claim (``acks`` /
``nacks``), so a busy consumer makes one request per batch; whatever is left
when the loop ends is sent with ``POST /v1/queues/{queue}/ack``.
"""

import datetime
import json
import logging
import threading
import time
from typing import Any, Callable, List, Optional

from .client import MAX_WAIT_MS, Client, new_claim_id
from .errors import LeaseLostError, OrderlyConnectionError, OrderlyError, UnavailableError
from .types import AckItem, Job, NackItem, Outcome

__all__ = ["Consumer", "Retry"]

log = logging.getLogger("orderly_client")

Handler = Callable[[Job], Any]


class Retry(Exception):
    """Raise from a handler to fail the attempt and retry after ``retry_in_ms``
    (instead of the queue's backoff)."""

    def __init__(self, message: str = "retry requested", retry_in_ms: Optional[int] = None) -> None:
        super().__init__(message)
        self.retry_in_ms = retry_in_ms


def _instant(rfc3339: str) -> datetime.datetime:
    # Python < 3.11 does not accept the "Z" suffix.
    return datetime.datetime.fromisoformat(rfc3339.replace("Z", "+00:00"))


def lease_length_s(job: Job) -> float:
    """How long the job's lease runs, from the server's own timestamps (no
    clock skew between consumer and server matters)."""
    if job.lease_expires_at and job.started_at:
        length = (_instant(job.lease_expires_at) - _instant(job.started_at)).total_seconds()
        if length > 0:
            return length
    return 30.0


class _Heartbeat:
    """Extends one job's lease every third of its length until stopped."""

    def __init__(self, client: Client, job: Job, lease_ms: Optional[int]) -> None:
        self.lost = False
        self._client, self._job, self._lease_ms = client, job, lease_ms
        self._stop = threading.Event()
        self._interval = lease_length_s(job) / 3
        self._thread = threading.Thread(target=self._run, name=f"orderly-heartbeat-{job.id}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        assert self._job.lease is not None
        while not self._stop.wait(self._interval):
            try:
                self._client.extend(self._job.id, self._job.lease, self._lease_ms)
                if self._lease_ms:
                    self._interval = self._lease_ms / 3000
            except LeaseLostError:
                self.lost = True
                log.warning("job %s: lease lost while running", self._job.id)
                return
            except OrderlyError as err:  # transient: the next beat may still make it
                log.warning("job %s: extend failed: %s", self._job.id, err)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class Consumer:
    """Runs ``handler`` for each job of a pull queue.

    The handler's return value (JSON-serialisable) becomes the job's
    ``result``; an exception fails the attempt with ``str(exception)`` as
    ``last_error`` (raise :class:`Retry` to choose the delay). Jobs of one
    lane are never leased concurrently, so lane order holds. While the
    handler runs, a heartbeat thread extends the lease (by ``lease_ms``, or
    the queue's ``lease_ms`` when ``None``). Delivery is at-least-once: make
    handlers idempotent. A claim that fails with a ``503`` or a connection
    failure (or timeout) is retried unchanged under its ``claim_id``, so a
    lost reply strands no lane and loses no outcome.
    """

    def __init__(
        self,
        client: Client,
        queue: str,
        handler: Handler,
        *,
        max_jobs: int = 10,
        wait_ms: int = 20_000,
        lease_ms: Optional[int] = None,
        on_results: Optional[Callable[[List[Outcome]], None]] = None,
    ) -> None:
        if not 0 <= wait_ms <= MAX_WAIT_MS:
            raise ValueError(f"wait_ms must be between 0 and {MAX_WAIT_MS}")
        self.client, self.queue, self.handler = client, queue, handler
        self.max_jobs, self.wait_ms, self.lease_ms = max_jobs, wait_ms, lease_ms
        self.on_results = on_results
        self._stopped = threading.Event()
        self._acks: List[AckItem] = []
        self._nacks: List[NackItem] = []

    def stop(self) -> None:
        """Ends :meth:`run` after the current claim and jobs."""
        self._stopped.set()

    def run(self, *, exit_when_idle: bool = False) -> None:
        """Claims and processes until :meth:`stop` (or, with
        ``exit_when_idle``, until a claim returns no job)."""
        try:
            failures = 0
            claim_id: Optional[str] = None
            while not self._stopped.is_set():
                # One claim id per claim, kept across its retries: a claim
                # whose reply was lost (503, connection failure, timeout) is
                # repeated as it was — same claim_id, same acks and nacks —
                # and answers the jobs and leases it already took.
                claim_id = claim_id or new_claim_id()
                try:
                    claimed = self.client.claim(
                        self.queue,
                        wait_ms=self.wait_ms,
                        max_jobs=self.max_jobs,
                        acks=self._acks,
                        nacks=self._nacks,
                        claim_id=claim_id,
                    )
                except (UnavailableError, OrderlyConnectionError) as err:
                    failures += 1
                    log.warning("claim failed (%s); retrying it", err)
                    self._stopped.wait(min(30.0, 0.2 * 2**failures))
                    continue
                failures, claim_id = 0, None
                self._reported(claimed.results)
                if not claimed.jobs and exit_when_idle:
                    return
                for job in claimed.jobs:
                    self._process(job)
        finally:
            self.flush()

    def flush(self) -> None:
        """Reports outcomes not yet sent."""
        if self._acks or self._nacks:
            self._reported(self.client.report(self.queue, self._acks, self._nacks))

    def _reported(self, results: List[Outcome]) -> None:
        self._acks, self._nacks = [], []
        for outcome in results:
            if outcome.status in ("lease_lost", "not_found"):
                log.warning("job %s: outcome not applied (%s)", outcome.id, outcome.status)
        if self.on_results and results:
            self.on_results(results)

    def _process(self, job: Job) -> None:
        assert job.lease is not None, "claimed jobs carry a lease"
        heartbeat = _Heartbeat(self.client, job, self.lease_ms)
        started = time.monotonic()
        try:
            result = self.handler(job)
            json.dumps(result)  # fail this job, not the next claim, on a result that is not JSON
        except Retry as err:
            self._nacks.append(_nack(job, str(err), err.retry_in_ms))
        except Exception as err:  # any failure of the handler fails the attempt
            log.info("job %s failed: %s", job.id, err)
            self._nacks.append(_nack(job, str(err) or type(err).__name__, None))
        else:
            self._acks.append({"id": job.id, "lease": job.lease, "result": result})
        finally:
            heartbeat.stop()
        log.debug("job %s handled in %.3fs", job.id, time.monotonic() - started)


def _nack(job: Job, error: str, retry_in_ms: Optional[int]) -> NackItem:
    item: NackItem = {"id": job.id, "lease": job.lease or "", "error": error[:1000]}
    if retry_in_ms is not None:
        item["retry_in_ms"] = retry_in_ms
    return item
