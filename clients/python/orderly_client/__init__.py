"""Client for Orderly, a strictly ordered job queue service.

    from orderly_client import Client, Consumer

    client = Client("http://127.0.0.1:8080", token)  # a JWT or an API key
    job = client.publish("emails", {"to": "ann@example.com"}, key="ann")

Standard library only; Python >= 3.9.
"""

from .client import Client, login, new_claim_id, register
from .consumer import Consumer, Retry
from .errors import (
    AuthenticationError,
    BadRequestError,
    ConflictError,
    ExpiredDuplicateError,
    LeaseLostError,
    NotFoundError,
    OrderlyConnectionError,
    OrderlyError,
    OutcomeUnknownError,
    PermissionDeniedError,
    RateLimitedError,
    UnavailableError,
    ValidationError,
)
from .signature import sign, verify_signature
from .types import AckItem, Claimed, Job, NackItem, Outcome, PublishItem

__all__ = [
    "AckItem",
    "AuthenticationError",
    "BadRequestError",
    "Claimed",
    "Client",
    "ConflictError",
    "Consumer",
    "ExpiredDuplicateError",
    "Job",
    "LeaseLostError",
    "NackItem",
    "NotFoundError",
    "OrderlyConnectionError",
    "OrderlyError",
    "Outcome",
    "OutcomeUnknownError",
    "PermissionDeniedError",
    "PublishItem",
    "RateLimitedError",
    "Retry",
    "UnavailableError",
    "ValidationError",
    "login",
    "new_claim_id",
    "register",
    "sign",
    "verify_signature",
]
