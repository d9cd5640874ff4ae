"""The scheduled check of objects still open (`check_objects`, every 5 minutes).

Not on the main path: ledger writers emit `Object Delivered` themselves. This is the
backstop and the stuck detector, reading only the open objects (the ledger's sparse
`open-objects` index) and the dead-letter queues' message attributes:
- complete but not sent (a writer died between completing and emitting, or PutEvents
  failed): `Object Delivered` now; `Object Landed` if ingest's was lost;
- open past its deadline: `Object Stuck` (reason "deadline") with what each hop still owes;
- records of it in a DLQ or failures queue: `Object Stuck` (reason "dead-lettered").
Each event once per object (the lease of `sluice.events`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sluice import aws
from sluice.config import get_settings
from sluice.envelope import ATTR_CORRELATION_ID
from sluice.events import (
    KIND_DELIVERED,
    KIND_LANDED,
    KIND_STUCK,
    ProgressEvents,
    delivered_events,
    landed_events,
    sent_attr,
    stuck_events,
)
from sluice.lazy import first_use
from sluice.observability import add_metric, get_logger
from sluice.progress import OPEN, OPEN_DEADLINE, OPEN_INDEX, OPEN_SHARD, Progress, iso

log = get_logger(__name__)

DLQS_ENV = "SLUICE_STUCK_DLQS"
# Queues whose messages carry the chunk's `correlation_id` attribute (names without the
# `<prefix>-<stage>-`); the function's grants name the same queues.
DEFAULT_DLQS = (
    "ingest-continue-dlq",  # a continuation: the rest of an object never read
    "raw-dlq",
    "clean-dlq",
    "consumer-warehouse-dlq",
    "consumer-index-dlq",
    "consumer-alerts-failures",
)
# Receives per queue (10 messages each, visibility 0: nothing is hidden from operators).
RECEIVES_PER_QUEUE = 5


@dataclass
class CheckResult:
    open: int = 0
    delivered: list[str] = field(default_factory=list)
    landed: list[str] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)
    dead_lettered: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, int]:
        return {
            "open": self.open,
            "delivered": len(self.delivered),
            "landed": len(self.landed),
            "stuck": len(self.stuck),
            "dead_lettered": len(self.dead_lettered),
            "failed": len(self.failed),
        }


class ObjectCheck:
    def __init__(
        self,
        events: ProgressEvents | None = None,
        *,
        sqs: Any = None,
        dlqs: tuple[str, ...] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.events = events or ProgressEvents(clock=clock)
        self._sqs = sqs
        self._dlqs = dlqs
        self._clock = clock

    sqs: first_use[Any] = first_use(lambda self: aws.sqs())

    @property
    def dlqs(self) -> tuple[str, ...]:
        if self._dlqs is None:
            raw = os.environ.get(DLQS_ENV, "")
            names = tuple(n.strip() for n in raw.split(",") if n.strip()) or DEFAULT_DLQS
            self._dlqs = tuple(get_settings().names.name(n) for n in names)
        return self._dlqs

    def run(self) -> CheckResult:
        result = CheckResult()
        now = self._clock()
        for corr, deadline in self.open_objects():
            result.open += 1
            with self._each(corr, result):
                progress = self.events.read(corr)
                if progress is not None:
                    self._check(progress, deadline < iso(now), result)
        for corr in sorted(self.dead_lettered()):
            with self._each(corr, result):
                progress = self.events.read(corr)
                if progress is None or progress.has(sent_attr(KIND_DELIVERED)):
                    continue
                if self.events.emit_once(
                    corr, KIND_STUCK, stuck_events("dead-lettered"), close=False
                ):
                    result.dead_lettered.append(corr)
        add_metric("ObjectsOpen", result.open)
        add_metric("ObjectsStuck", len(result.stuck) + len(result.dead_lettered))
        log.info("objects checked", extra=result.summary())
        return result

    @contextmanager
    def _each(self, correlation_id: str, result: CheckResult) -> Iterator[None]:
        """One object's failure (PutEvents refused, a throttle) does not stop the others;
        the next run tries it again."""
        try:
            yield
        except Exception as exc:
            result.failed.append(correlation_id)
            log.warning(
                "could not check an object; the next run tries again",
                extra={"correlation_id": correlation_id, "error": f"{type(exc).__name__}: {exc}"},
            )

    def _check(self, progress: Progress, past_deadline: bool, result: CheckResult) -> None:
        corr = progress.correlation_id
        if not progress.has(sent_attr(KIND_LANDED)) and self.events.emit_once(
            corr, KIND_LANDED, landed_events, close=False
        ):
            result.landed.append(corr)
        if progress.complete:
            if progress.has(sent_attr(KIND_DELIVERED)):
                self._close(corr)  # delivered, re-opened by a later entry, complete again
            elif self.events.emit_once(corr, KIND_DELIVERED, delivered_events):
                result.delivered.append(corr)
        elif (
            past_deadline
            and not progress.has(sent_attr(KIND_STUCK))
            and self.events.emit_once(corr, KIND_STUCK, stuck_events("deadline"), close=False)
        ):
            result.stuck.append(corr)

    def open_objects(self) -> Iterator[tuple[str, str]]:
        """(correlation id, deadline) of every object in the open index, oldest deadline
        first."""
        args: dict[str, Any] = {
            "TableName": self.events.table_name,
            "IndexName": OPEN_INDEX,
            "KeyConditionExpression": "#shard = :open",
            "ExpressionAttributeNames": {"#shard": OPEN_SHARD},
            "ExpressionAttributeValues": {":open": {"S": OPEN}},
        }
        while True:
            page = self.events.client.query(**args)
            for item in page.get("Items") or []:
                yield item["correlation_id"]["S"], str((item.get(OPEN_DEADLINE) or {}).get("S"))
            last = page.get("LastEvaluatedKey")
            if not last:
                return
            args["ExclusiveStartKey"] = last

    def dead_lettered(self) -> set[str]:
        """Correlation ids named by messages waiting in the dead-letter queues (read without
        hiding them: visibility 0)."""
        found: set[str] = set()
        for queue in self.dlqs:
            try:
                url = self.sqs.get_queue_url(QueueName=queue)["QueueUrl"]
                for _ in range(RECEIVES_PER_QUEUE):
                    got = self.sqs.receive_message(
                        QueueUrl=url,
                        MaxNumberOfMessages=10,
                        VisibilityTimeout=0,
                        MessageAttributeNames=[ATTR_CORRELATION_ID],
                    )
                    messages = got.get("Messages") or []
                    for m in messages:
                        value = (m.get("MessageAttributes") or {}).get(ATTR_CORRELATION_ID)
                        if value and value.get("StringValue"):
                            found.add(str(value["StringValue"]))
                    if len(messages) < 10:
                        break
            except aws.client_errors() as exc:
                log.warning(
                    "could not read a dead-letter queue", extra={"queue": queue, "error": str(exc)}
                )
        return found

    def _close(self, correlation_id: str) -> None:
        self.events.client.update_item(
            TableName=self.events.table_name,
            Key=self.events.key(correlation_id),
            UpdateExpression="REMOVE #shard, #deadline",
            ExpressionAttributeNames={"#shard": OPEN_SHARD, "#deadline": OPEN_DEADLINE},
        )


def check_objects() -> dict[str, int]:
    """The scheduled function's body."""
    return ObjectCheck().run().summary()
