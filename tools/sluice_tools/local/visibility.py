"""Which received SQS messages had their visibility changed by someone since (a function).

The local runtime makes a failed message visible again after a few seconds rather than the
queue's visibility timeout (`Options.failed_visibility_s`), but never over a function's own
ChangeMessageVisibility: the stage runtime defers a chunk whose claim another invocation
holds until that claim's lease ends, and a retry before then would only spend a receive.
moto runs in this process, so its `change_message_visibility` (which the batch call uses
too) notes each receipt handle it is given; the poller asks before it shortens one.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

REMEMBERED = 100_000  # handles kept: far more than messages in flight at once

_lock = threading.Lock()
_changed: OrderedDict[str, None] = OrderedDict()
_original: Any = None


def track() -> None:
    """Note every visibility change moto makes (undo: `untrack`)."""
    global _original
    from moto.sqs.models import SQSBackend

    with _lock:
        if _original is not None:
            return
        _original = SQSBackend.change_message_visibility

        def change_message_visibility(
            self: Any, queue_name: str, receipt_handle: str, visibility_timeout: int
        ) -> None:
            _original(self, queue_name, receipt_handle, visibility_timeout)
            with _lock:
                _changed[receipt_handle] = None
                while len(_changed) > REMEMBERED:
                    _changed.popitem(last=False)

        SQSBackend.change_message_visibility = change_message_visibility  # type: ignore[method-assign]


def untrack() -> None:
    global _original
    from moto.sqs.models import SQSBackend

    with _lock:
        if _original is not None:
            SQSBackend.change_message_visibility = _original  # type: ignore[method-assign]
            _original = None
        _changed.clear()


def changed(receipt_handle: str) -> bool:
    """Whether the message received with this handle had its visibility changed (forgets it)."""
    with _lock:
        return _changed.pop(receipt_handle, _ABSENT) is not _ABSENT


_ABSENT = object()
