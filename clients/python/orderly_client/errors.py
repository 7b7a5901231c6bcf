"""Typed exceptions for Orderly's error contract.

Every error answer of the API is ``{"error": {"code", "message", "request_id",
"fields"?}}``; branch on :attr:`OrderlyError.code` (stable), never on the
message.
"""

from typing import Dict, Optional, Type


class OrderlyError(Exception):
    """An error answer of the API, or a failure to reach it."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        request_id: Optional[str] = None,
        fields: Optional[Dict[str, str]] = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id
        self.fields: Dict[str, str] = fields or {}


class BadRequestError(OrderlyError):
    """400: the request was not valid JSON."""


class ValidationError(OrderlyError):
    """422 ``validation_failed``: :attr:`fields` names each bad field and why."""


class AuthenticationError(OrderlyError):
    """401: missing, expired or invalid token or credentials."""


class PermissionDeniedError(OrderlyError):
    """403: e.g. ``insufficient_scope`` for an API key."""


class NotFoundError(OrderlyError):
    """404: no such queue, job or route (or not yours)."""


class ConflictError(OrderlyError):
    """409: e.g. ``email_taken``, ``not_cancellable``, ``not_a_pull_queue``."""


class LeaseLostError(ConflictError):
    """409 ``lease_lost``: the lease is stale or expired; nothing changed."""


class RateLimitedError(OrderlyError):
    """429: slow down; :attr:`retry_after_s` says for how long."""

    retry_after_s: Optional[int] = None


class UnavailableError(OrderlyError):
    """503: a dependency of the server is down; retry later."""


class OutcomeUnknownError(UnavailableError):
    """503 ``outcome_unknown``: the publish reached Redis but its reply was
    lost, so the job(s) may have been enqueued. Repeat it with the same
    idempotency key(s): the answer is the original job(s), never a duplicate
    (the client's publishes do so by themselves)."""


class ExpiredDuplicateError(OrderlyError):
    """A publish repeated an ``Idempotency-Key`` whose original job is gone
    (past its queue's ``retention_s``, or its queue was deleted): the API
    answers ``200 {"id", "queue", "state": "expired"}`` and enqueues
    nothing. Not a failure of the request, but there is no job to return:
    :attr:`job_id` and :attr:`queue` name the original (status ``200``, code
    ``expired``)."""

    def __init__(self, job_id: str, queue: str) -> None:
        super().__init__(
            200,
            "expired",
            f"the original job {job_id} of this idempotency key has expired; nothing was enqueued",
        )
        self.job_id = job_id
        self.queue = queue


class OrderlyConnectionError(OrderlyError):
    """The server could not be reached (status 0, code ``connection_failed``)."""


_BY_STATUS = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: ValidationError,
    429: RateLimitedError,
    503: UnavailableError,
}


_BY_CODE: Dict[str, Type[OrderlyError]] = {"lease_lost": LeaseLostError, "outcome_unknown": OutcomeUnknownError}


def error_from_response(status: int, body: object) -> OrderlyError:
    """The typed exception for an error answer with JSON ``body``."""
    detail = body.get("error") if isinstance(body, dict) else None
    if not isinstance(detail, dict):
        detail = {}
    code = str(detail.get("code") or f"http_{status}")
    message = str(detail.get("message") or "unexpected answer")
    fields = detail.get("fields") if isinstance(detail.get("fields"), dict) else None
    kind = _BY_CODE.get(code) or _BY_STATUS.get(status, OrderlyError)
    return kind(status, code, message, detail.get("request_id"), fields)
