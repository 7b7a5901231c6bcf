"""A pull consumer loop: long-poll claim, run the handlers while a heartbeat
keeps every held lease alive, report outcomes in batches.

The outcomes of one claim's jobs ride on the next claim (``acks`` /
``nacks``), so a busy consumer makes one request per batch; whatever is left
when the loop ends is sent with ``POST /v1/queues/{queue}/ack``.
"""

import datetime
import json
import logging
import threading
import time
from typing import Any, Callable, Dict, List, Optional

from .client import MAX_WAIT_MS, Client, new_claim_id
from .errors import LeaseLostError, NotFoundError, OrderlyConnectionError, UnavailableError
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


#: The shortest lease the API allows (``lease_ms`` >= 1000): the length
#: assumed for a lease whose length the consumer cannot tell.
MIN_LEASE_S = 1.0


def lease_length_s(job: Job, now: Optional[float] = None) -> float:
    """How long the job's lease runs. On a first attempt this comes from the
    server's own timestamps (``lease_expires_at - started_at``, no clock skew
    between consumer and server matters). On a later attempt ``started_at``
    is still the *first* attempt's start, so that difference also counts the
    time since then: the length is estimated from ``lease_expires_at`` and
    the local clock (``now``, epoch seconds) instead, at least
    :data:`MIN_LEASE_S`, and at most that upper bound."""
    if not job.lease_expires_at:
        return 30.0
    expires = _instant(job.lease_expires_at)
    bound: Optional[float] = None
    if job.started_at:
        length = (expires - _instant(job.started_at)).total_seconds()
        if length > 0:
            if job.attempts <= 1:
                return length
            bound = length
    remaining = expires.timestamp() - (time.time() if now is None else now)
    estimate = max(MIN_LEASE_S, remaining)
    return estimate if bound is None else min(bound, estimate)


def _exact_lease_s(job: Job) -> Optional[float]:
    """A first attempt's lease length, exact from the server's timestamps."""
    if job.attempts <= 1 and job.started_at and job.lease_expires_at:
        length = (_instant(job.lease_expires_at) - _instant(job.started_at)).total_seconds()
        if length > 0:
            return length
    return None


class _Held:
    """One lease the consumer holds until its outcome is reported."""

    __slots__ = ("job_id", "lease", "renew_s", "due", "reporting", "lost")

    def __init__(self, job_id: str, lease: str, renew_s: float, due: float) -> None:
        self.job_id, self.lease, self.renew_s, self.due = job_id, lease, renew_s, due
        #: Its outcome is on its way (a claim or report in flight): not extended.
        self.reporting = False
        #: An extend answered ``lease_lost`` (or ``not_found``): the lease is gone.
        self.lost = False


class _LeaseKeeper:
    """Keeps alive every lease the consumer holds — claimed and waiting for
    its turn, running, or finished with its outcome not yet reported — by
    extending each one when a third of its length has passed since it was
    taken or last renewed. One thread for all of them.

    An extend answered ``409 lease_lost`` (or ``404``) marks the lease lost:
    it is not extended again, a job not yet run is then skipped (it was
    settled elsewhere, or goes back to its lane to be claimed again), and an
    outcome already produced is still reported (it comes back
    ``lease_lost``). Any other failure is retried soon, well before the
    lease runs out."""

    def __init__(self, client: Client, lease_ms: Optional[int]) -> None:
        self._client, self._lease_ms = client, lease_ms
        self._held: Dict[str, _Held] = {}  # by lease
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: Optional[threading.Thread] = None
        #: The queue's lease length, as learned from a first attempt's lease.
        self._known_s: Optional[float] = None

    def start(self) -> None:
        with self._cond:
            self._stopping = False
        self._thread = threading.Thread(target=self._run, name="orderly-lease-keeper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._held.clear()
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def hold(self, jobs: List[Job], *, extend_now: bool = False) -> None:
        """Starts keeping the leases of just-claimed ``jobs``: first extended
        a third of their length from now, or at once with ``extend_now`` (a
        claim repeated after a lost reply, whose leases are older)."""
        now, wall = time.monotonic(), time.time()
        with self._cond:
            # One queue, one lease_ms: a first attempt tells it for all. A
            # later attempt's started_at is the first attempt's, so its lease
            # length is only estimated (see lease_length_s).
            exact = [s for s in map(_exact_lease_s, jobs) if s is not None]
            if exact:
                self._known_s = min(exact)
            for job in jobs:
                assert job.lease is not None, "claimed jobs carry a lease"
                # The queue's lease_ms, as the claim took it.
                first_s = lease_length_s(job, wall)
                if job.attempts > 1 and self._known_s is not None:
                    first_s = min(first_s, self._known_s)
                renew_s = self._lease_ms / 1000 if self._lease_ms else first_s
                due = now if extend_now else now + min(first_s, renew_s) / 3
                self._held[job.lease] = _Held(job.id, job.lease, renew_s, due)
            self._cond.notify_all()

    def is_lost(self, lease: str) -> bool:
        with self._cond:
            held = self._held.get(lease)
            return held is not None and held.lost

    def reporting(self, leases: List[str], on: bool) -> None:
        """Marks leases whose outcomes are being sent (``on``), or back to
        kept after that request failed (it may not have reached the server)."""
        with self._cond:
            for lease in leases:
                held = self._held.get(lease)
                if held is not None:
                    held.reporting = on
            self._cond.notify_all()

    def release(self, leases: List[str]) -> None:
        """Stops keeping leases whose outcomes were reported."""
        with self._cond:
            for lease in leases:
                self._held.pop(lease, None)

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stopping:
                        return
                    now = time.monotonic()
                    kept = [h for h in self._held.values() if not h.reporting and not h.lost]
                    due = [h for h in kept if h.due <= now]
                    if due:
                        break
                    next_due = min((h.due for h in kept), default=None)
                    self._cond.wait(None if next_due is None else next_due - now)
            for held in sorted(due, key=lambda h: h.due):
                if self._stopping:
                    return
                self._extend(held)

    def _extend(self, held: _Held) -> None:
        with self._cond:  # reported or released since it was found due
            if self._held.get(held.lease) is not held or held.reporting:
                return
        sent = time.monotonic()
        try:
            self._client.extend(held.job_id, held.lease, self._lease_ms)
        except (LeaseLostError, NotFoundError) as err:
            with self._cond:
                if self._held.get(held.lease) is held and not held.reporting:
                    held.lost = True
                    log.warning("job %s: lease lost (%s)", held.job_id, err.code)
            return
        except Exception as err:  # transient (503, connection, ...): retry soon
            log.warning("job %s: extend failed: %s", held.job_id, err)
            with self._cond:
                held.due = time.monotonic() + max(0.05, min(1.0, held.renew_s / 6))
            return
        with self._cond:
            held.due = sent + held.renew_s / 3


class Consumer:
    """Runs ``handler`` for each job of a pull queue.

    The handler's return value (JSON-serialisable) becomes the job's
    ``result``; an exception fails the attempt with ``str(exception)`` as
    ``last_error`` (raise :class:`Retry` to choose the delay). Jobs of one
    lane are never leased concurrently, so lane order holds. A claim takes up
    to ``max_jobs`` jobs (of different lanes), run one after another; a
    heartbeat thread extends the lease of every job the consumer holds —
    waiting for its turn, running, or done with its outcome not yet reported
    — every third of its length (by ``lease_ms``, or the queue's
    ``lease_ms`` when ``None``), so neither long jobs nor long batches lose
    their leases. Outcomes ride on the next claim. Delivery is at-least-once:
    make handlers idempotent. A claim that fails with a ``503`` or a
    connection failure (or timeout) is retried unchanged under its
    ``claim_id``, so a lost reply strands no lane and loses no outcome.
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
        self._leases = _LeaseKeeper(client, lease_ms)

    def stop(self) -> None:
        """Ends :meth:`run` after the current claim and jobs."""
        self._stopped.set()

    def run(self, *, exit_when_idle: bool = False) -> None:
        """Claims and processes until :meth:`stop` (or, with
        ``exit_when_idle``, until a claim returns no job)."""
        self._leases.start()
        try:
            failures = 0
            claim_id: Optional[str] = None
            while not self._stopped.is_set():
                # One claim id per claim, kept across its retries: a claim
                # whose reply was lost (503, connection failure, timeout) is
                # repeated as it was — same claim_id, same acks and nacks —
                # and answers the jobs and leases it already took.
                claim_id = claim_id or new_claim_id()
                sent = self._outcome_leases()
                self._leases.reporting(sent, True)
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
                    # Perhaps never applied: keep those leases alive meanwhile.
                    self._leases.reporting(sent, False)
                    failures += 1
                    log.warning("claim failed (%s); retrying it", err)
                    self._stopped.wait(min(30.0, 0.2 * 2**failures))
                    continue
                except BaseException:
                    self._leases.reporting(sent, False)
                    raise
                # A repeated claim may answer leases taken by an earlier try.
                self._leases.hold(claimed.jobs, extend_now=failures > 0)
                failures, claim_id = 0, None
                self._reported(claimed.results, sent)
                if not claimed.jobs and exit_when_idle:
                    return
                for job in claimed.jobs:
                    self._process(job)
        finally:
            try:
                self.flush()
            finally:
                self._leases.stop()

    def flush(self) -> None:
        """Reports outcomes not yet sent."""
        if self._acks or self._nacks:
            sent = self._outcome_leases()
            self._leases.reporting(sent, True)
            try:
                results = self.client.report(self.queue, self._acks, self._nacks)
            except BaseException:
                self._leases.reporting(sent, False)
                raise
            self._reported(results, sent)

    def _outcome_leases(self) -> List[str]:
        return [item["lease"] for item in self._acks] + [item["lease"] for item in self._nacks]

    def _reported(self, results: List[Outcome], leases: List[str]) -> None:
        self._acks, self._nacks = [], []
        self._leases.release(leases)
        for outcome in results:
            if outcome.status in ("lease_lost", "not_found"):
                log.warning("job %s: outcome not applied (%s)", outcome.id, outcome.status)
        if self.on_results and results:
            self.on_results(results)

    def _process(self, job: Job) -> None:
        assert job.lease is not None, "claimed jobs carry a lease"
        if self._leases.is_lost(job.lease):
            # Lost while it waited for its turn: it goes back to its lane and
            # is delivered again, so running it now would only run it twice.
            log.warning("job %s: lease lost before it ran; skipped", job.id)
            self._leases.release([job.lease])
            return
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
        # Its lease stays kept until the outcome is reported.
        log.debug("job %s handled in %.3fs", job.id, time.monotonic() - started)


def _nack(job: Job, error: str, retry_in_ms: Optional[int]) -> NackItem:
    item: NackItem = {"id": job.id, "lease": job.lease or "", "error": error[:1000]}
    if retry_in_ms is not None:
        item["retry_in_ms"] = retry_in_ms
    return item
