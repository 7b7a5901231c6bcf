"""The API's objects as typed values."""

from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Optional, TypedDict


class PublishItem(TypedDict, total=False):
    """One job of :meth:`Client.publish_batch` (``payload`` is required)."""

    payload: Any
    key: str
    delay_ms: int
    #: 0–9 (default 0): among lanes whose heads may start, a higher priority
    #: starts first; within a lane the order never changes.
    priority: int
    #: This job's own idempotency key (it takes precedence over the batch's).
    idempotency_key: str


class AckItem(TypedDict, total=False):
    """Completes a leased job (``id`` and ``lease`` are required)."""

    id: str
    lease: str
    result: Any


class NackItem(TypedDict, total=False):
    """Fails a leased job's attempt (``id`` and ``lease`` are required)."""

    id: str
    lease: str
    error: str
    retry_in_ms: int


@dataclass
class Job:
    """A job object. ``lease`` and ``lease_expires_at`` are set on claimed jobs."""

    id: str
    queue: str
    key: str
    seq: int
    state: str
    payload: Any
    attempts: int
    max_attempts: int
    created_at: str
    result: Any = None
    last_error: Optional[str] = None
    started_at: Optional[str] = None
    finished_at: Optional[str] = None
    available_at: Optional[str] = None
    lease: Optional[str] = None
    lease_expires_at: Optional[str] = None
    #: Set in an ack's or nack's reply: what that lease's outcome was.
    outcome: Optional[str] = None
    #: Fields this version of the client does not know, as received.
    extra: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, raw: Dict[str, Any]) -> "Job":
        known = {f.name for f in fields(cls)} - {"extra"}
        job = cls(**{k: v for k, v in raw.items() if k in known})
        job.extra = {k: v for k, v in raw.items() if k not in known}
        return job


@dataclass
class Outcome:
    """What became of one reported ack or nack: ``status`` is one of
    ``completed``, ``retrying``, ``dead``, ``blocked``, ``lease_lost``,
    ``not_found``."""

    id: str
    status: str


@dataclass
class Claimed:
    """The reply of a claim: leased jobs and, when outcomes were reported
    with it, their results in request order."""

    jobs: List[Job]
    results: List[Outcome]


def outcomes_from_json(raw: Optional[List[Dict[str, Any]]]) -> List[Outcome]:
    return [Outcome(id=r["id"], status=r["status"]) for r in raw or []]
