"""Delivering events to functions as Lambda does: SQS pollers and async (S3, SNS, schedule) ones.

A poller thread holds one unit of the function's concurrency while it receives and invokes,
so received messages never wait for a worker with their visibility timeout running.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sluice_tools.local import events
from sluice_tools.local.pool import FunctionPool, Outcome
from sluice_tools.local.topology import FunctionSpec, SqsMapping

log = logging.getLogger("sluice.local")
POLL_WAIT_S = 2
SLOT_WAIT_S = 1.0
S3_DUPLICATE_WINDOW_S = 5.0


class Activity:
    """Invocations running now, and a counter that moves whenever anything happens.

    The drain check reads both before and after it looks at the queues: if neither moved,
    nothing was in between.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.running = 0
        self.seq = 0
        self.invocations = 0
        self.failures = 0
        self.dropped = 0  # async events with nowhere to go after their retries

    def begin(self) -> None:
        with self._lock:
            self.running += 1
            self.seq += 1

    def end(self, ok: bool) -> None:
        with self._lock:
            self.running -= 1
            self.seq += 1
            self.invocations += 1
            if not ok:
                self.failures += 1

    def bump(self) -> None:
        with self._lock:
            self.seq += 1

    def snapshot(self) -> tuple[int, int]:
        with self._lock:
            return self.running, self.seq


@dataclass
class Poller:
    """Base of the pollers: N threads running `_poll_once` until stopped."""

    name: str
    pool: FunctionPool
    sqs: Any
    queue_url: str
    activity: Activity
    stop: threading.Event
    threads: int = 1
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for i in range(max(1, self.threads)):
            thread = threading.Thread(target=self._run, name=f"{self.name}#{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def join(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _run(self) -> None:
        while not self.stop.is_set():
            if not self.pool.try_slot(SLOT_WAIT_S):
                continue
            try:
                self._poll_once()
            except Exception:
                if not self.stop.is_set():
                    log.exception("poller %s failed; polling again", self.name)
                    time.sleep(1.0)
            finally:
                self.pool.release_slot()

    def _poll_once(self) -> None:
        raise NotImplementedError

    def _invoke(self, event: Any) -> Outcome:
        self.activity.begin()
        outcome = Outcome(ok=False)
        try:
            outcome = self.pool.invoke(event)
        finally:
            self.activity.end(outcome.ok)
        if not outcome.ok and not self.stop.is_set():
            error = outcome.error or {}
            log.warning(
                "%s failed: %s: %s",
                self.pool.spec.function,
                error.get("errorType"),
                error.get("errorMessage"),
            )
        return outcome

    def _delete(self, messages: Sequence[Mapping[str, Any]]) -> None:
        for start in range(0, len(messages), 10):
            batch = messages[start : start + 10]
            self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)
                ],
            )
        self.activity.bump()


@dataclass
class SqsPoller(Poller):
    """An SQS event source mapping: batches, partial failures only where reported."""

    mapping: SqsMapping | None = None
    region: str = "us-east-1"
    visibility_timeout_s: int | None = None  # tests shorten it; None: the queue's own
    failed_visibility_s: int | None = None  # a failed message returns after this (local)
    changed: Callable[[str], bool] | None = None  # receipt handle → visibility changed since

    def _poll_once(self) -> None:
        assert self.mapping is not None
        messages = self._receive(self.mapping)
        if not messages or self.stop.is_set():
            return
        self.activity.bump()
        outcome = self._invoke(events.sqs_event(messages, self.mapping.queue_arn, self.region))
        if self.stop.is_set():
            return  # shutting down: leave the messages to their visibility timeout
        done = settled(messages, outcome, self.mapping.report_batch_item_failures)
        if done:
            self._delete(done)
        if self.failed_visibility_s is not None and len(done) < len(messages):
            done_ids = {m["MessageId"] for m in done}
            failed = [m for m in messages if m["MessageId"] not in done_ids]
            if self.changed is not None:  # never over the function's own visibility
                failed = [m for m in failed if not self.changed(m["ReceiptHandle"])]
            self._return_soon(failed)

    def _return_soon(self, messages: Sequence[Mapping[str, Any]]) -> None:
        """Failed messages visible again after `failed_visibility_s`, not the queue's timeout."""
        if not messages:
            return
        for start in range(0, len(messages), 10):
            self.sqs.change_message_visibility_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {
                        "Id": str(i),
                        "ReceiptHandle": m["ReceiptHandle"],
                        "VisibilityTimeout": self.failed_visibility_s,
                    }
                    for i, m in enumerate(messages[start : start + 10])
                ],
            )

    def _receive(self, mapping: SqsMapping) -> list[dict[str, Any]]:
        want = max(1, mapping.batch_size)
        got: list[dict[str, Any]] = []
        deadline: float | None = None
        while len(got) < want and not self.stop.is_set():
            if got:
                if deadline is None:
                    deadline = time.monotonic() + mapping.batching_window_s
                wait = int(max(0.0, deadline - time.monotonic()))
                if mapping.batching_window_s <= 0 or time.monotonic() >= deadline:
                    break
            else:
                wait = POLL_WAIT_S
            kwargs: dict[str, Any] = {
                "QueueUrl": self.queue_url,
                "MaxNumberOfMessages": min(10, want - len(got)),
                "WaitTimeSeconds": wait,
                "AttributeNames": ["All"],
                "MessageAttributeNames": ["All"],
            }
            if self.visibility_timeout_s is not None:
                kwargs["VisibilityTimeout"] = self.visibility_timeout_s
            page = self.sqs.receive_message(**kwargs).get("Messages") or []
            if not page and not got:
                return []
            got.extend(page)
            if not page:
                break
        return got


def settled(
    messages: Sequence[Mapping[str, Any]], outcome: Outcome, report_failures: bool
) -> list[Mapping[str, Any]]:
    """The messages of a batch Lambda deletes after this invocation.

    An invocation that raised (or timed out, or whose worker died) deletes nothing. A
    successful one deletes the whole batch, unless the mapping has `ReportBatchItemFailures`:
    then the `batchItemFailures` listed stay, and a malformed response (an identifier empty,
    missing or not in the batch) fails the whole batch, as on AWS. Without the setting a
    returned `batchItemFailures` is ignored.
    """
    if not outcome.ok:
        return []
    if not report_failures:
        return list(messages)
    failed = failed_ids(outcome.payload, {m["MessageId"] for m in messages})
    if failed is None:
        return []
    return [m for m in messages if m["MessageId"] not in failed]


def failed_ids(payload: Any, batch_ids: set[str]) -> set[str] | None:
    """The message ids a partial batch response names; None: the whole batch failed."""
    if payload is None:
        return set()
    if not isinstance(payload, dict):
        return None
    items = payload.get("batchItemFailures")
    if items is None:
        return set()
    if not isinstance(items, list):
        return None
    ids: set[str] = set()
    for item in items:
        identifier = item.get("itemIdentifier") if isinstance(item, dict) else None
        if not isinstance(identifier, str) or not identifier or identifier not in batch_ids:
            return None
        ids.add(identifier)
    return ids


EventBuilder = Callable[[str, str], "list[Any] | None"]
"""(message body, message id) → the events to invoke with; None: nothing to deliver."""


@dataclass
class AsyncPoller(Poller):
    """Asynchronous invocations (S3, SNS, schedules) queued in an internal queue.

    The queue's receive count is the attempt number: a failed attempt makes the message
    visible again after the retry delay; after the function's retries the Lambda on-failure
    record goes to its destination and the message is deleted.
    """

    function: FunctionSpec | None = None
    build: EventBuilder | None = None  # message → events to invoke with (None: nothing)
    retry_delays_s: tuple[float, ...] = (1.0, 2.0)
    destination_url: str | None = None

    def _poll_once(self) -> None:
        assert self.function is not None
        assert self.build is not None
        page = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=1,
            WaitTimeSeconds=POLL_WAIT_S,
            AttributeNames=["All"],
        ).get("Messages")
        if not page or self.stop.is_set():
            return
        message = page[0]
        self.activity.bump()
        built = self.build(message["Body"], message["MessageId"])
        if not built:
            self._delete([message])
            return
        attempt = int((message.get("Attributes") or {}).get("ApproximateReceiveCount", "1"))
        failed: list[tuple[Any, Outcome]] = []
        for event in built:
            outcome = self._invoke(event)
            if not outcome.ok:
                failed.append((event, outcome))
        if self.stop.is_set():
            return
        if not failed:
            self._delete([message])
            return
        retries = min(self.function.maximum_retry_attempts, len(self.retry_delays_s))
        if attempt <= retries:
            delay = self.retry_delays_s[attempt - 1]
            self.sqs.change_message_visibility(
                QueueUrl=self.queue_url,
                ReceiptHandle=message["ReceiptHandle"],
                VisibilityTimeout=max(0, round(delay)),
            )
            self.activity.bump()
            return
        for event, outcome in failed:
            self._give_up(event, outcome, attempt)
        self._delete([message])

    def _give_up(self, event: Any, outcome: Outcome, attempts: int) -> None:
        assert self.function is not None
        if self.destination_url is None:
            self.activity.dropped += 1
            log.error("%s: event dropped after %d attempts", self.function.name, attempts)
            return
        record = events.on_failure_record(
            request_id=outcome.request_id,
            function_arn=self.function.arn,
            attempts=attempts,
            payload=event,
            error=outcome.error,
        )
        self.sqs.send_message(QueueUrl=self.destination_url, MessageBody=json.dumps(record))
        log.warning("%s: event sent to on-failure destination", self.function.name)


class S3Dedupe:
    """moto emits two ObjectCreated events for one multipart upload: keep the first.

    Only a second *notification* (another message) of the same object version, within the
    window, is filtered, and each one is logged. A retry of an invocation is the same message
    again (same message id): it is never taken for a duplicate. Ingest's own claim per object
    version makes any duplicate that gets through (S3 delivers at least once) harmless.
    """

    def __init__(self, window_s: float = S3_DUPLICATE_WINDOW_S) -> None:
        self._seen: dict[tuple[str, ...], tuple[str, float]] = {}
        self._lock = threading.Lock()
        self.window_s = window_s
        self.filtered = 0

    def first(self, key: tuple[str, ...], message_id: str = "") -> bool:
        """Whether this notification of `key` is to be delivered (the first, or its retry)."""
        now = time.monotonic()
        with self._lock:
            for old in [k for k, (_, t) in self._seen.items() if now - t > self.window_s]:
                del self._seen[old]
            seen = self._seen.get(key)
            if seen is None:
                self._seen[key] = (message_id, now)
                return True
            if seen[0] == message_id:
                return True
            self.filtered += 1
        log.info(
            "duplicate S3 notification of s3://%s/%s (etag %s, version %s) not delivered: "
            "message %s repeats message %s",
            *key[:4],
            message_id,
            seen[0],
        )
        return False


def s3_builder(config_ids: Mapping[str, str], dedupe: S3Dedupe) -> EventBuilder:
    """Body of an S3 → queue notification → one Lambda event per record."""

    def build(body: str, message_id: str) -> list[Any] | None:
        doc = json.loads(body)
        records = doc.get("Records") or []
        queue_config = (records[0].get("s3") or {}).get("configurationId", "") if records else ""
        found = events.s3_records(body, config_ids.get(queue_config, queue_config))
        if not found:
            return None
        kept = [r for r in found if dedupe.first(events.s3_event_key(r), message_id)]
        return [{"Records": [r]} for r in kept] or None

    return build


def sns_builder(subscription_arn: str) -> EventBuilder:
    def build(body: str, _message_id: str) -> list[Any] | None:
        return [events.sns_event(body, subscription_arn)]

    return build


def schedule_builder(body: str, _message_id: str) -> list[Any] | None:
    return [json.loads(body)]


@dataclass
class Scheduler:
    """Fires schedule rules on their period by queueing a scheduled event."""

    sqs: Any
    stop: threading.Event
    # (period in seconds, internal queue url, rule arn, region)
    entries: list[tuple[float, str, str, str]] = field(default_factory=list)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        if not self.entries:
            return
        self._thread = threading.Thread(target=self._run, name="scheduler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        due = [time.monotonic() + period for period, *_ in self.entries]
        while not self.stop.wait(0.5):
            now = time.monotonic()
            for i, (period, url, rule_arn, region) in enumerate(self.entries):
                if now >= due[i]:
                    due[i] = now + period
                    body = json.dumps(events.scheduled_event(rule_arn, region))
                    try:
                        self.sqs.send_message(QueueUrl=url, MessageBody=body)
                    except Exception:
                        log.exception("could not fire schedule %s", rule_arn)

    def join(self, timeout_s: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout_s)
