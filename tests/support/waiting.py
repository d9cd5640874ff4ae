"""Waiting for something that happens in another thread or process: poll the condition itself.

The deadline only bounds a hang (a test that would otherwise wait forever fails instead);
it is generous, so a busy machine makes a test slower, never wrong. Never assert that
something happened "within N seconds", or that nothing came "for N seconds".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
HANG_S = 120.0


def wait_until(
    condition: Callable[[], T], *, what: str, timeout_s: float = HANG_S, every_s: float = 0.05
) -> T:
    """`condition()`'s first truthy value; fails the test (naming `what`) if none comes."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting after {timeout_s:.0f} s for {what}")
        time.sleep(every_s)
