"""The Python client against a live Orderly."""

import http.server
import json
import socket
import threading
import time
import uuid
from collections import Counter
from typing import Any, List, Optional

import pytest

from orderly_client import (
    AckItem,
    Client,
    Consumer,
    ExpiredDuplicateError,
    Job,
    LeaseLostError,
    NotFoundError,
    OrderlyConnectionError,
    OrderlyError,
    OutcomeUnknownError,
    Retry,
    UnavailableError,
    ValidationError,
    new_claim_id,
    sign,
    verify_signature,
)
from orderly_client.errors import error_from_response


def queue_name() -> str:
    return f"q-{uuid.uuid4().hex[:12]}"


def test_publish_returns_the_job_and_get_reads_it(client: Client) -> None:
    queue = queue_name()
    job = client.publish(queue, {"n": 1}, key="ann")
    assert (job.queue, job.key, job.state, job.payload) == (queue, "ann", "queued", {"n": 1})
    assert client.get_job(job.id).seq == job.seq
    delayed = client.publish(queue, 2, key="bob", delay_ms=60_000)
    assert delayed.state == "delayed"


def test_the_same_idempotency_key_enqueues_once(client: Client) -> None:
    queue = queue_name()
    first = client.publish(queue, "x", idempotency_key="order-17")
    again = client.publish(queue, "x", idempotency_key="order-17")
    assert again.id == first.id


def test_a_repeat_of_an_expired_idempotency_key_is_a_typed_error(client: Client) -> None:
    queue = queue_name()
    client.put_queue(queue, retention_s=1)  # the shortest retention the API takes
    job = client.publish(queue, "x", idempotency_key="order-18")
    (claimed,) = client.claim(queue).jobs
    client.ack(claimed.id, claimed.lease or "", "done")
    # Completed jobs are dropped in batches a little after retention_s.
    deadline = time.monotonic() + 30
    expired: Optional[ExpiredDuplicateError] = None
    while expired is None:
        try:
            again = client.publish(queue, "x", idempotency_key="order-18")
        except ExpiredDuplicateError as err:
            expired = err
        else:
            assert again.id == job.id  # the original, while it is kept
            assert time.monotonic() < deadline, "the original job never expired"
            time.sleep(0.2)
    assert isinstance(expired, OrderlyError)
    assert (expired.status, expired.code, expired.job_id, expired.queue) == (200, "expired", job.id, queue)
    assert queued_jobs(client, queue) == []  # nothing was enqueued


def test_publish_takes_a_priority(client: Client) -> None:
    queue = queue_name()
    client.put_queue(queue)
    client.publish(queue, "low", key="a")
    client.publish(queue, "high", key="b", priority=9)
    client.publish_batch(queue, [{"payload": "low-2", "key": "c"}, {"payload": "mid", "key": "d", "priority": 5}])
    # One claim per lane: higher priorities first, equal ones oldest first.
    order = [client.claim(queue).jobs[0].payload for _ in range(4)]
    assert order == ["high", "mid", "low", "low-2"]
    with pytest.raises(ValidationError) as invalid:
        client.publish(queue, "x", priority=10)
    assert "priority" in invalid.value.fields


class DropFirstResponse:
    """A loopback TCP proxy that forwards every request to Orderly but
    closes the first connection without answering: the publish happened,
    the client never heard about it."""

    def __init__(self, target: str) -> None:
        host, port = target.split("://", 1)[1].rstrip("/").split(":")
        self.target = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            with conn, socket.create_connection(self.target) as upstream:
                request = self._read_request(conn)
                upstream.sendall(request)
                upstream.shutdown(socket.SHUT_WR)
                response = b"".join(iter(lambda: upstream.recv(65536), b""))
                if self.connections > 1:
                    conn.sendall(response)

    @staticmethod
    def _read_request(conn: socket.socket) -> bytes:
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(body) < length:
            body += conn.recv(65536)
        return head + b"\r\n\r\n" + body

    def close(self) -> None:
        self.listener.close()


def test_a_publish_retried_after_a_lost_answer_enqueues_once(client: Client) -> None:
    queue = queue_name()
    proxy = DropFirstResponse(client.base_url)
    try:
        flaky = Client(proxy.url, client.token, retry_backoff_s=0.01)
        job = flaky.publish(queue, {"once": True})
    finally:
        proxy.close()
    assert proxy.connections == 2
    claimed = client.claim(queue, max_jobs=10)
    assert [j.id for j in claimed.jobs] == [job.id]
    assert client.claim(queue, max_jobs=10).jobs == []


def test_outcome_unknown_is_its_own_unavailable_error() -> None:
    body = {"error": {"code": "outcome_unknown", "message": "may have been enqueued"}}
    error = error_from_response(503, body)
    assert isinstance(error, OutcomeUnknownError) and isinstance(error, UnavailableError)
    assert type(error_from_response(503, {"error": {"code": "unavailable", "message": "down"}})) is UnavailableError


def test_an_unreachable_server_is_a_typed_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as spare:
        port = spare.getsockname()[1]
    client = Client(f"http://127.0.0.1:{port}", "token", retries=1, retry_backoff_s=0.01)
    with pytest.raises(OrderlyConnectionError) as caught:
        client.publish("q", 1)
    assert caught.value.code == "connection_failed"


def test_publish_batch_keeps_order(client: Client) -> None:
    queue = queue_name()
    jobs = client.publish_batch(queue, [{"payload": n, "key": "lane"} for n in range(5)])
    assert [j.payload for j in jobs] == list(range(5))
    seqs = [j.seq for j in jobs]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5


def queued_jobs(client: Client, queue: str) -> list:
    """Every job of ``queue`` (one page of up to 1000)."""
    return list(client.request("GET", f"/v1/queues/{queue}/jobs?limit=1000")["jobs"])


def test_a_batch_repeated_with_its_key_answers_the_original_jobs(client: Client) -> None:
    queue = queue_name()
    items: list = [{"payload": n, "key": f"k{n}"} for n in range(3)]
    items.append({"payload": "own", "idempotency_key": "own-key"})
    first = client.publish_batch(queue, items, idempotency_key="batch-1")
    again = client.publish_batch(queue, items, idempotency_key="batch-1")
    assert [j.id for j in again] == [j.id for j in first]
    # The job with its own key is that key's job for a single publish too.
    assert client.publish(queue, "own", idempotency_key="own-key").id == first[3].id
    assert len(queued_jobs(client, queue)) == 4


def test_a_batch_retried_after_a_lost_answer_enqueues_once(client: Client) -> None:
    queue = queue_name()
    proxy = DropFirstResponse(client.base_url)
    try:
        flaky = Client(proxy.url, client.token, retry_backoff_s=0.01)
        jobs = flaky.publish_batch(queue, [{"payload": n, "key": "lane"} for n in range(3)])
    finally:
        proxy.close()
    assert proxy.connections == 2
    assert [j.payload for j in jobs] == [0, 1, 2]
    assert [j["id"] for j in queued_jobs(client, queue)] == [j.id for j in jobs]


def test_a_claim_repeated_with_its_claim_id_returns_the_same_lease(client: Client) -> None:
    queue = queue_name()
    client.put_queue(queue, lease_ms=60_000)
    job = client.publish(queue, "x", key="lane")
    claim_id = new_claim_id()
    first = client.claim(queue, max_jobs=5, claim_id=claim_id)
    again = client.claim(queue, max_jobs=5, claim_id=claim_id)
    assert [(j.id, j.lease) for j in first.jobs] == [(job.id, first.jobs[0].lease)]
    assert [(j.id, j.lease) for j in again.jobs] == [(j.id, j.lease) for j in first.jobs]
    assert client.claim(queue, max_jobs=5, claim_id=new_claim_id()).jobs == []
    # The whole request repeats: its ack answers the outcome it produced.
    ack: AckItem = {"id": job.id, "lease": first.jobs[0].lease or ""}
    done = client.claim(queue, acks=[ack], claim_id="after-ack")
    repeat = client.claim(queue, acks=[ack], claim_id="after-ack")
    assert [(r.id, r.status) for r in done.results] == [(job.id, "completed")]
    assert repeat.results == done.results


def test_the_consumer_retries_a_lost_claim_with_its_claim_id(client: Client) -> None:
    queue = queue_name()
    # Leases far longer than the test: a claim whose lease had to expire
    # would not finish in time.
    client.put_queue(queue, lease_ms=60_000)
    job = client.publish(queue, {"n": 1}, key="lane")
    proxy = DropFirstResponse(client.base_url)
    seen = []
    try:
        flaky = Client(proxy.url, client.token)
        Consumer(flaky, queue, lambda j: seen.append(j.id) or "ok", wait_ms=0).run(exit_when_idle=True)
    finally:
        proxy.close()
    # The first claim leased the job but its reply was lost; its retry under
    # the same claim_id answered that lease rather than finding the lane busy.
    assert proxy.connections >= 2
    assert seen == [job.id]
    done = client.get_job(job.id)
    assert (done.state, done.attempts, done.result) == ("completed", 1, "ok")


def test_errors_carry_the_api_code(client: Client) -> None:
    with pytest.raises(NotFoundError) as missing:
        client.get_job("nope")
    assert missing.value.code == "not_found" and missing.value.request_id
    with pytest.raises(ValidationError) as invalid:
        client.publish_batch(queue_name(), [])
    assert invalid.value.code == "validation_failed" and "jobs" in invalid.value.fields


def test_the_consumer_keeps_a_long_job_alive_with_extend(client: Client) -> None:
    queue = queue_name()
    client.put_queue(queue, lease_ms=1000, max_attempts=3)
    job = client.publish(queue, {"work": "slow"})
    seen = []

    def slow(claimed):
        seen.append(claimed.attempts)
        # Real work that outlives the 1 s lease three times over.
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            time.sleep(0.05)
        return {"done": claimed.payload["work"]}

    Consumer(client, queue, slow, wait_ms=0).run(exit_when_idle=True)
    finished = client.get_job(job.id, wait_ms=5000)
    assert finished.state == "completed"
    assert finished.attempts == 1 and seen == [1]
    assert finished.result == {"done": "slow"}


def test_the_consumer_keeps_the_leases_of_a_whole_batch_alive(client: Client) -> None:
    queue = queue_name()
    client.put_queue(queue, lease_ms=1000, max_attempts=3)
    jobs = [client.publish(queue, n, key=f"lane-{n}") for n in range(4)]
    calls: Counter = Counter()
    reported: list = []

    def work(job: Job) -> int:
        calls[job.id] += 1
        time.sleep(0.5)  # the work: the batch takes twice the lease
        return int(job.payload) * 10

    # One claim takes all four (different lanes); they run one after another.
    Consumer(client, queue, work, wait_ms=0, on_results=reported.extend).run(exit_when_idle=True)
    assert calls == {job.id: 1 for job in jobs}
    for job in jobs:
        done = client.get_job(job.id)
        assert (done.state, done.attempts, done.result) == ("completed", 1, job.payload * 10)
    assert sorted((o.id, o.status) for o in reported) == sorted((j.id, "completed") for j in jobs)


def test_the_consumer_keeps_the_lease_of_a_retried_job_alive(client: Client) -> None:
    queue = queue_name()
    client.put_queue(queue, lease_ms=1000, max_attempts=3)
    job = client.publish(queue, "twice")
    attempts: List[int] = []
    reported: list = []

    def handler(claimed: Job) -> Any:
        attempts.append(claimed.attempts)
        if claimed.attempts == 1:
            raise Retry("not yet", retry_in_ms=3000)
        # The second attempt's started_at is still the first attempt's start,
        # 3 s before its lease began: it tells nothing of the lease's length.
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            time.sleep(0.05)
        return {"attempt": claimed.attempts}

    Consumer(client, queue, handler, wait_ms=5000, on_results=reported.extend).run(exit_when_idle=True)
    assert [o.status for o in reported] == ["retrying", "completed"]
    assert attempts == [1, 2]
    done = client.get_job(job.id)
    assert (done.state, done.attempts, done.result) == ("completed", 2, {"attempt": 2})


class Watching(Client):
    """A client that remembers the jobs it claimed and the leases an
    extend found lost."""

    def __init__(self, base_url: str, token: str) -> None:
        super().__init__(base_url, token)
        self.claimed: List[Job] = []
        self.lost_ids: List[str] = []
        self.lease_lost = threading.Event()
        self.extended_after_loss = threading.Event()

    def claim(self, queue: str, **options: Any) -> Any:
        claimed = super().claim(queue, **options)
        self.claimed.extend(claimed.jobs)
        return claimed

    def extend(self, job_id: str, lease: str, lease_ms: Optional[int] = None) -> Job:
        if self.lease_lost.is_set():
            # The heartbeat extends one lease at a time: it has dealt with
            # the lost one by the time it extends another.
            self.extended_after_loss.set()
        try:
            return super().extend(job_id, lease, lease_ms)
        except LeaseLostError:
            self.lost_ids.append(job_id)
            self.lease_lost.set()
            raise


def test_the_consumer_skips_a_waiting_job_whose_lease_was_lost(client: Client) -> None:
    queue = queue_name()
    client.put_queue(queue, lease_ms=1000)
    first, second = (client.publish(queue, n, key=f"lane-{n}") for n in range(2))
    watching = Watching(client.base_url, client.token)
    calls: List[str] = []

    def work(job: Job) -> str:
        calls.append(job.id)
        if len(calls) == 1:
            # Someone else settles the job still waiting in this batch, so
            # its lease is gone when the consumer next extends it.
            (other,) = [j for j in watching.claimed if j.id != job.id]
            client.ack(other.id, other.lease or "", "by hand")
            assert watching.lease_lost.wait(10), "no extend of the waiting job's lease"
            assert watching.extended_after_loss.wait(10), "the heartbeat stopped"
        return "ok"

    Consumer(watching, queue, work, wait_ms=0).run(exit_when_idle=True)
    ran, skipped = (first, second) if calls[0] == first.id else (second, first)
    assert calls == [ran.id]
    # (An extend racing the ack that reports ran's outcome may find that
    # lease gone too; the consumer ignores that.)
    assert watching.lost_ids[0] == skipped.id
    done, settled = client.get_job(ran.id), client.get_job(skipped.id)
    assert (done.state, done.attempts, done.result) == ("completed", 1, "ok")
    assert (settled.state, settled.attempts, settled.result) == ("completed", 1, "by hand")


def test_the_consumer_acks_and_nacks_in_batches(client: Client) -> None:
    queue = queue_name()
    client.put_queue(queue, max_attempts=2, backoff={"initial_ms": 10, "max_ms": 10})
    ok = [client.publish(queue, n, key=f"k{n}") for n in range(3)]
    bad = client.publish(queue, "fail", key="bad")
    reported = []

    def handler(job):
        if job.payload == "fail":
            raise RuntimeError("cannot do it")
        return job.payload * 10

    Consumer(client, queue, handler, wait_ms=200, on_results=reported.extend).run(exit_when_idle=True)
    for job in ok:
        done = client.get_job(job.id)
        assert (done.state, done.result) == ("completed", done.payload * 10)
    failed = client.get_job(bad.id)
    assert (failed.state, failed.last_error, failed.attempts) == ("dead", "cannot do it", 2)
    statuses = {(o.id, o.status) for o in reported}
    assert {(j.id, "completed") for j in ok} <= statuses
    assert {(bad.id, "retrying"), (bad.id, "dead")} <= statuses


def test_batch_ack_reports_each_item_in_order(client: Client) -> None:
    queue = queue_name()
    client.put_queue(queue)
    for key in "abc":
        client.publish(queue, key, key=key)
    a, b, c = client.claim(queue, max_jobs=3).jobs
    assert a.lease and b.lease and c.lease
    results = client.report(
        queue,
        acks=[{"id": a.id, "lease": a.lease, "result": "A"}, {"id": c.id, "lease": b.lease}],
        nacks=[{"id": b.id, "lease": b.lease, "error": "later", "retry_in_ms": 60_000}],
    )
    assert [(r.id, r.status) for r in results] == [
        (a.id, "completed"),
        (c.id, "lease_lost"),
        (b.id, "retrying"),
    ]
    with pytest.raises(LeaseLostError):
        client.extend(a.id, a.lease)
    # The claim reports c's outcome first, then leases nothing new (b waits).
    claimed = client.claim(queue, max_jobs=3, acks=[{"id": c.id, "lease": c.lease}])
    assert [(r.id, r.status) for r in claimed.results] == [(c.id, "completed")]
    assert claimed.jobs == []


SECRET = "whsec-test"
BODY = b'{"n":1}'


def test_a_valid_signature_verifies() -> None:
    now = int(time.time())
    assert verify_signature(SECRET, sign(SECRET, BODY, now), BODY)


def test_a_tampered_body_fails() -> None:
    header = sign(SECRET, BODY, int(time.time()))
    assert not verify_signature(SECRET, header, b'{"n":2}')


def test_a_wrong_secret_fails() -> None:
    header = sign("other-secret", BODY, int(time.time()))
    assert not verify_signature(SECRET, header, BODY)


def test_an_old_timestamp_fails() -> None:
    header = sign(SECRET, BODY, int(time.time()) - 3600)
    assert not verify_signature(SECRET, header, BODY, tolerance_s=300)
    assert not verify_signature(SECRET, "garbage", BODY)
    assert not verify_signature(SECRET, None, BODY)


def test_a_real_push_delivery_verifies(client: Client) -> None:
    received = []
    arrived = threading.Event()

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.headers["Orderly-Signature"], body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
            arrived.set()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        queue = queue_name()
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        created = client.put_queue(queue, delivery={"mode": "push", "url": url})
        client.publish(queue, {"hello": "world"})
        assert arrived.wait(15), "no delivery arrived"
    finally:
        server.shutdown()
    header, body = received[0]
    assert json.loads(body) == {"hello": "world"}
    assert verify_signature(created["signing_secret"], header, body)
    assert not verify_signature(created["signing_secret"], header, body + b" ")
