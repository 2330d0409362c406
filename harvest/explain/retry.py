"""Retry a chat request on rate limits, server errors, timeouts and broken replies, with exponential backoff.

A 429 or 503 that says Retry-After is waited out as asked; otherwise the wait doubles from `base_delay`, with
jitter so that concurrent workers do not retry in lockstep. Client errors (400, 401, 404...) fail at once.
"""

from __future__ import annotations

import email.utils
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import httpx2
from huggingface_hub.errors import HfHubHTTPError, InferenceTimeoutError

RETRIED_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER = 600.0
T = TypeVar("T")


class MalformedReply(ValueError):
    """The server answered 200 with something that is not a chat completion."""


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6
    base_delay: float = 1.0
    max_delay: float = 60.0  # the longest backoff
    max_retry_after: float = MAX_RETRY_AFTER  # the longest Retry-After waited out (a live request cannot wait long)


def status_of(error: BaseException) -> int | None:
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None) if isinstance(error, HfHubHTTPError) else None


def retry_after(error: BaseException) -> float | None:
    """The server's Retry-After, in seconds (a number or an HTTP date), capped at MAX_RETRY_AFTER."""
    response = getattr(error, "response", None)
    value = response.headers.get("Retry-After") if response is not None else None
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if email.utils.parsedate_tz(value) else None
        if parsed is None:
            return None
        seconds = parsed.timestamp() - time.time()
    return min(MAX_RETRY_AFTER, max(0.0, seconds))


def is_retried(error: BaseException) -> bool:
    if isinstance(error, HfHubHTTPError):
        return status_of(error) in RETRIED_STATUSES
    return isinstance(error, (InferenceTimeoutError, httpx2.TransportError, MalformedReply, json.JSONDecodeError))


def call_with_retries(call: Callable[[], T], policy: RetryPolicy, sleep: Callable[[float], None] = time.sleep) -> T:
    """call(), retried on retriable errors up to policy.attempts tries in all; the last error propagates."""
    for attempt in range(policy.attempts):
        try:
            return call()
        except Exception as error:
            if not is_retried(error) or attempt == policy.attempts - 1:
                raise
            asked = retry_after(error)
            backoff = min(policy.max_delay, policy.base_delay * 2**attempt) * random.uniform(0.5, 1.0)
            sleep(backoff if asked is None else min(asked, policy.max_retry_after))
    raise AssertionError("unreachable: the last attempt returns or raises")
