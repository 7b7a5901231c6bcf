"""Verification of push deliveries' ``Orderly-Signature`` header.

The header is ``t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``,
keyed with the queue's ``signing_secret``.
"""

import hashlib
import hmac
import time
from typing import Optional, Union

__all__ = ["verify_signature", "sign"]


def sign(secret: str, body: Union[bytes, str], timestamp: int) -> str:
    """The header value Orderly sends for ``body`` at ``timestamp``."""
    raw = body.encode() if isinstance(body, str) else body
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + raw, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify_signature(
    secret: str,
    header: Optional[str],
    body: Union[bytes, str],
    tolerance_s: float = 300,
    now: Optional[float] = None,
) -> bool:
    """True when ``header`` signs exactly ``body`` (the raw request bytes)
    with ``secret`` and its timestamp is within ``tolerance_s`` of ``now``
    (default: the current time), so a captured delivery cannot be replayed
    later. Compares in constant time."""
    if not header:
        return False
    timestamp: Optional[int] = None
    candidates = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit():
            timestamp = int(value)
        elif name == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        return False
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    # Check every candidate so the time taken does not depend on which matched.
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(expected, candidate)
    return matched
