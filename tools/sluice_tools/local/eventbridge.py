"""EventBridge's deliveries to Lambda and SNS targets, in the local runtime.

moto matches a PutEvents event against each rule of the bus and delivers it to queue,
log-group and bus targets itself; for Lambda and SNS targets (which moto refuses) its patched
`send_to_targets` (`motocompat.server`) hands the event to `TargetRouter`. A Lambda target's
event is queued on the runtime's internal queue of that function (kind `events`): an async
poller invokes the function from there as Lambda invokes an EventBridge target, retries then
on-failure destination included. An SNS target's event is published to its topic.

Pure shaping (`aws_event`, `target_input`) is apart from the two deliveries, to test alone.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger("sluice.local")
KIND = "events"  # the internal queues' kind: <function>-rt-events
EVENT_KEYS = ("version", "id", "detail-type", "source", "account", "time", "region")


def aws_event(event: Mapping[str, Any]) -> dict[str, Any]:
    """The event as EventBridge hands it to a target: ISO time, no moto-only keys."""
    shaped: dict[str, Any] = {key: event.get(key) for key in EVENT_KEYS}
    shaped["version"] = str(event.get("version") or "0")
    shaped["time"] = iso_time(event.get("time"))
    shaped["resources"] = list(event.get("resources") or [])
    shaped["detail"] = event.get("detail") if event.get("detail") is not None else {}
    return shaped


def iso_time(value: Any) -> str:
    """moto keeps an event's time as epoch seconds; EventBridge sends `2026-12-04T23:59:01Z`."""
    if isinstance(value, int | float):
        return datetime.fromtimestamp(float(value), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if value:
        return str(value)
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def target_input(event: Mapping[str, Any], target: Mapping[str, Any]) -> Any:
    """What `target` receives for `event`: its constant `Input`, the part its `InputPath`
    selects, its `InputTransformer`'s output (moto's template parser, as for queue targets),
    or else the whole event."""
    shaped = aws_event(event)
    if target.get("Input") is not None:
        return json.loads(target["Input"])
    if target.get("InputPath"):
        from jsonpath_ng.ext.parser import parse

        found = parse(target["InputPath"]).find(shaped)
        return found[0].value if found else None
    transformer = target.get("InputTransformer")
    if transformer:
        from moto.events.utils import EventTemplateParser

        with_ingestion = {**shaped, "ingestion-time": event.get("ingestion-time", 0)}
        return EventTemplateParser.parse(
            input_template=transformer.get("InputTemplate"),
            input_paths_map=transformer.get("InputPathsMap") or {},
            event=with_ingestion,  # type: ignore[arg-type]
        )
    return shaped


def body_of(payload: Any) -> str:
    """A target input as the text a queue or topic carries (a string stays as it is)."""
    return payload if isinstance(payload, str) else json.dumps(payload)


class TargetRouter:
    """The handler `motocompat.server.route_event_targets` calls for Lambda and SNS targets.

    Runs inside moto's PutEvents (in the emulator's process), so it talks to moto's backends
    directly, as moto's own queue targets do.
    """

    def __init__(self, queue_name: Callable[[str], str]) -> None:
        self.queue_name = queue_name  # function name → its internal `events` queue
        self.delivered = 0
        self.dropped = 0

    def __call__(self, rule: Any, target: dict[str, Any], event: dict[str, Any]) -> None:
        arn = str(target["Arn"])
        payload = target_input(event, target)
        try:
            if arn.split(":")[2] == "lambda":
                self._to_function(rule, arn, payload)
            else:
                self._to_topic(rule, arn, payload)
        except Exception as exc:  # EventBridge would retry, then drop (no target DLQ here)
            self.dropped += 1
            log.warning(
                "rule %s: event %s not delivered to %s: %s: %s",
                rule.name,
                event.get("id"),
                arn,
                type(exc).__name__,
                exc,
            )
            return
        self.delivered += 1

    def _to_function(self, rule: Any, arn: str, payload: Any) -> None:
        from moto.sqs.models import sqs_backends

        from sluice_tools.local.topology import function_name_of

        queue = self.queue_name(function_name_of(arn))
        backend = sqs_backends[rule.account_id][rule.region_name]
        backend.send_message(queue_name=queue, message_body=body_of(payload))

    def _to_topic(self, rule: Any, arn: str, payload: Any) -> None:
        from moto.sns.models import sns_backends

        parts = arn.split(":")
        backend = sns_backends[parts[4]][parts[3]]
        backend.publish(message=body_of(payload), arn=arn)
