"""How long to wait before retrying a call to a model server or an HTTP agent: exponential steps
with jitter, never shorter than the server's Retry-After."""

from __future__ import annotations

import random

BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 8.0


def backoff_delay(
    attempt: int,
    rng: random.Random,
    retry_after: float | None = None,
    base_s: float = BACKOFF_BASE_S,
    max_s: float = BACKOFF_MAX_S,
) -> float:
    """Seconds to wait before retry `attempt` + 1 (0 = the first retry)."""
    # Equal jitter: at least half the exponential step, so retries of many concurrent calls spread out.
    step = min(max_s, base_s * 2**attempt)
    delay = step * (0.5 + 0.5 * rng.random())
    if retry_after is not None:
        delay = max(delay, min(retry_after, max_s))
    return delay


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header in seconds (None when absent or not a number)."""
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
